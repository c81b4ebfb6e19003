"""Job records: typed fields, address properties, and records written by the previous format still load."""

from __future__ import annotations

import json
from pathlib import Path

from lark.ipam import Allocation
from lark.jobenv import job_environment, wrapper_environment
from lark.state import JobRecord, StateStore

# A record as the previous version wrote it (status, mode and the broker's facts in "extra"),
# with a field that version had and this one does not (it must be ignored, not fail the load).
PREVIOUS_FORMAT = {
    "token": "ab12cd", "job_id": "17.0", "mode": "nat", "status": "up",
    "netns": "/run/netns/lark-ab12cd", "netns_owned": False, "netns_source": "/proc/4242/ns/net",
    "netns_inode": 4026532000, "holder_pid": 4242, "holder_start": 777, "host_ifname": "larkhab12cd",
    "job_ifname": "lark0", "parent": None, "ipv4": "10.250.0.6/30", "ipv6": "fd6c:6172:6b00:1::2/64",
    "host_ipv4": "10.250.0.5/30", "host_ipv6": "fd6c:6172:6b00:1::1/64", "public_ipv4": "192.0.2.7",
    "ports": [40000, 40003], "bandwidth_in_mbit": 0, "bandwidth_out_mbit": 0, "firewall": "nftables",
    "firewall_job_side": True, "firewall_spec": {"token": "ab12cd"}, "allocations": [["10.250.0.0_16-s30", 1]],
    "created": 1765000000.0, "owner_uid": 1000, "retired_field": "from an older Lark",
    "extra": {"creator_pid": 99, "creator_start": 11, "starter_pid": 4200, "starter_start": 700,
              "chirp": {"host": "127.0.0.1", "port": 9618, "cookie": "c"}, "global_job_id": "schedd#17.0#1",
              "carried": {"LarkBytesIn": 1000}, "profile_env": {"GLOBUS_TCP_PORT_RANGE": "40000,40003"}},
}


def test_a_record_of_the_previous_format_loads_with_typed_fields(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.path("ab12cd").write_text(json.dumps(PREVIOUS_FORMAT))
    record = store.load("ab12cd")
    assert record is not None and store.all() == [record]
    assert (record.creator_pid, record.creator_start, record.starter_pid, record.starter_start) == (99, 11, 4200, 700)
    assert record.chirp == {"host": "127.0.0.1", "port": 9618, "cookie": "c"}
    assert record.global_job_id == "schedd#17.0#1"
    assert record.carried == {"LarkBytesIn": 1000}
    assert record.profile_env == {"GLOBUS_TCP_PORT_RANGE": "40000,40003"}
    assert record.ports == (40000, 40003) and record.allocations == [Allocation("10.250.0.0_16-s30", 1)]
    # saved again in this format: no "extra", and the same record comes back
    store.save(record)
    saved = json.loads(store.path("ab12cd").read_text())
    assert "extra" not in saved and saved["starter_pid"] == 4200
    assert store.load("ab12cd") == record


def test_address_properties_drop_the_prefix_length() -> None:
    record = JobRecord.from_json(json.dumps(PREVIOUS_FORMAT))
    assert (record.ipv4_address, record.ipv6_address) == ("10.250.0.6", "fd6c:6172:6b00:1::2")
    assert (record.host_ipv4_address, record.host_ipv6_address) == ("10.250.0.5", "fd6c:6172:6b00:1::1")
    bridged = JobRecord("ef34gh", "1.0", "bridge", "setting-up", "/run/netns/x", True, ipv4="198.51.100.10/24",
                        host_ipv4="198.51.100.1")  # a site gateway is recorded without a length
    assert (bridged.host_ipv4_address, bridged.ipv6_address) == ("198.51.100.1", None)


def test_job_environment_is_built_from_the_record() -> None:
    record = JobRecord.from_json(json.dumps(PREVIOUS_FORMAT))
    assert job_environment(record) == {
        "LARK_NETWORK_TYPE": "nat", "LARK_JOB_TOKEN": "ab12cd", "LARK_IPV4_ADDRESS": "10.250.0.6",
        "LARK_IPV6_ADDRESS": "fd6c:6172:6b00:1::2", "LARK_HOST_IPV4_ADDRESS": "10.250.0.5",
        "LARK_HOST_IPV6_ADDRESS": "fd6c:6172:6b00:1::1", "LARK_PORT_RANGE": "40000-40003",
        "LARK_PUBLIC_ADDRESS": "192.0.2.7"}
    assert wrapper_environment(record) == {**job_environment(record), "GLOBUS_TCP_PORT_RANGE": "40000,40003"}
