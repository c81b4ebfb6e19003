"""Addressing by the site network (lark.addressing): the choice, the client's identity, lease events,
and how the node's knobs and profiles validate it. The DHCP/SLAAC exchanges themselves are
tests/kernel/test_dhcp.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lark.addressing import (
    LeaseEvent,
    client_id,
    dhcp_hostname,
    follow_lease,
    latest_lease,
    parse_addressing,
    parse_events,
    parse_fallback,
    wants_dhcp,
    wants_slaac,
)
from lark.config import load_config
from lark.errors import ConfigError
from lark.profiles.parsing import parse_profiles


@pytest.mark.parametrize(("text", "expected", "dhcp", "slaac"), [
    ("static", "static", False, False), (" DHCP ", "dhcp", True, False), ("slaac", "slaac", False, True),
    ("dhcp+slaac", "dhcp+slaac", True, True), ("slaac + dhcp", "dhcp+slaac", True, True),
])
def test_addressing_choices(text: str, expected: str, dhcp: bool, slaac: bool) -> None:
    choice = parse_addressing(text)
    assert (choice, wants_dhcp(choice), wants_slaac(choice)) == (expected, dhcp, slaac)


@pytest.mark.parametrize("text", ["", "dhcpv6", "bootp", "static+dhcp"])
def test_unknown_addressing_names_the_choices(text: str) -> None:
    with pytest.raises(ValueError, match="expected one of static, dhcp, slaac, dhcp\\+slaac"):
        parse_addressing(text)


def test_fallback_choices() -> None:
    assert (parse_fallback("Hold"), parse_fallback("static")) == ("hold", "static")
    with pytest.raises(ValueError, match="expected one of hold, static, got 'retry'"):
        parse_fallback("retry")


def test_client_id_is_type_0_job_and_interface() -> None:
    ident = client_id("submit.example.org#12.0#1700000000", "lark0")
    assert ident == b"\x00submit.example.org#12.0#1700000000/lark0"
    # the same job asks again with the same identity; another job, or interface, differs
    assert ident == client_id("submit.example.org#12.0#1700000000", "lark0")
    assert ident != client_id("submit.example.org#12.1#1700000000", "lark0")
    assert ident != client_id("submit.example.org#12.0#1700000000", "lark1")


def test_long_client_id_fits_the_option_and_stays_distinct() -> None:
    a = client_id("s" * 300 + "#1.0#1", "lark0")
    b = client_id("s" * 300 + "#1.1#1", "lark0")  # differs only past the cut: the hash keeps them apart
    assert len(a) == len(b) == 255 and a[0] == 0
    assert a != b and a[:200] == b[:200]


@pytest.mark.parametrize(("job_id", "token", "expected"), [
    ("12.0", "ab12cd", "job-12-0"), ("1234.56", "ab12cd", "job-1234-56"), ("?.?", "Ab12cd", "job-ab12cd"),
])
def test_hostname_is_a_dns_label_from_the_job(job_id: str, token: str, expected: str) -> None:
    assert dhcp_hostname(job_id, token) == expected


LOG = """1700000000 deconfig ip= mask= router= server= lease=
1700000001 bound ip=192.0.2.50 mask=24 router=192.0.2.1 server=192.0.2.1 lease=120
torn line
1700000061 renew ip=192.0.2.50 mask=24 router=192.0.2.1 server=192.0.2.1 lease=120
"""


def test_events_read_back_with_their_lease() -> None:
    events = parse_events(LOG)
    assert [e.event for e in events] == ["deconfig", "bound", "renew"]
    lease = latest_lease(events)
    assert lease is not None and lease.address == "192.0.2.50/24" and lease.router == "192.0.2.1"
    assert lease.expires == 1700000061 + 120
    assert latest_lease(events[:1]) is None


def test_follow_lease_counts_renewals_expiries_and_a_changed_address() -> None:
    held = "192.0.2.50/24"
    grant = LeaseEvent(10.0, "renew", held, "192.0.2.1", "192.0.2.1", 120)
    news = follow_lease([grant, LeaseEvent(200.0, "deconfig"), LeaseEvent(201.0, "leasefail"),
                         LeaseEvent(300.0, "bound", held, None, "192.0.2.1", 120)], held)
    assert (news.renewals, news.expiries, news.failures, news.changed_address) == (2, 1, 1, None)
    assert news.latest is not None and news.latest.expires == 420.0
    moved = follow_lease([LeaseEvent(5.0, "bound", "192.0.2.77/24", None, "192.0.2.1", 120)], held)
    assert (moved.renewals, moved.changed_address) == (0, "192.0.2.77/24")
    assert follow_lease([], held).latest is None


def test_node_knobs(tmp_path: Path) -> None:
    base = {"LARK_NETWORK_TYPES": "nat, bridge, macvlan", "LARK_BRIDGE": "br0", "LARK_MACVLAN_PARENT": "eth1"}
    # a mode addressed by the network needs no pool
    config = load_config([], {**base, "LARK_BRIDGE_ADDRESSING": "dhcp+slaac", "LARK_MACVLAN_ADDRESSING": "dhcp",
                              "LARK_ADDRESSING_TIMEOUT": "2.5", "LARK_ADDRESSING_FALLBACK": "static"})
    assert config.site_attachments["bridge"].addressing == "dhcp+slaac"
    assert config.site_attachments["macvlan"].addressing == "dhcp"
    assert (config.addressing_timeout, config.addressing_fallback) == (2.5, "static")
    assert load_config([], {}).site_attachments["bridge"].addressing == "static"
    with pytest.raises(ConfigError, match="LARK_BRIDGE_IPV4_POOL: network type 'bridge' is offered but has no "
                                          "address pool \\(or set its addressing to dhcp"):
        load_config([], {**base, "LARK_MACVLAN_ADDRESSING": "dhcp"})
    for knob, value, fragment in (("LARK_BRIDGE_ADDRESSING", "dhcpv6", "expected one of static, dhcp"),
                                  ("LARK_ADDRESSING_FALLBACK", "wait", "expected one of hold, static"),
                                  ("LARK_ADDRESSING_TIMEOUT", "0", "expected a number from 0.5 to 600"),
                                  ("LARK_IPVLAN_ADDRESSING", "dhcp", "unknown Lark knob")):
        path = tmp_path / "lark.conf"
        path.write_text(f"{knob} = {value}\n")
        with pytest.raises(ConfigError) as info:
            load_config([path])
        assert info.value.knob == knob and fragment in str(info.value)
        assert str(info.value).startswith(f"{path}:1: {knob}: ")


def test_profile_addressing_reaches_the_site() -> None:
    text = "profiles:\n  lab:\n    attach: bridge\n    parent: br-lab\n    addressing: dhcp+slaac\n" \
           "  plain:\n    attach: bridge\n    parent: br-lab\n    ipv4_pool: 198.51.100.0/24\n"
    profiles, errors = parse_profiles(text, "site.yaml")
    assert errors == []
    by_name = {p.name: p for p in profiles}
    lab, plain = by_name["lab"].site, by_name["plain"].site
    assert lab is not None and plain is not None
    assert (lab.addressing, lab.ipv4, plain.addressing) == ("dhcp+slaac", None, "static")
    assert by_name["lab"].as_dict()["addressing"] == "dhcp+slaac"


def test_lark_list_lease_column() -> None:
    from lark.cli.commands import lease_text, record_summary
    from lark.state import JobRecord

    record = JobRecord("ab12cd", "7.0", "bridge", "up", "/run/netns/lark-ab12cd", True)
    assert lease_text(record_summary(record)) == "-"
    record.addressing = "slaac"
    assert lease_text(record_summary(record)) == "slaac"  # no lease to show, but not static either
    record.addressing, record.lease_expires, record.lease_server = "dhcp", 1700000000.0, "192.0.2.1"
    row = record_summary(record)
    assert lease_text(row) == "until " + time.strftime("%H:%M:%S", time.localtime(1700000000))
    assert (row["lease_server"], row["lease_renewals"]) == ("192.0.2.1", 0)


def test_old_records_load_as_static() -> None:
    from lark.state import JobRecord

    record = JobRecord("ab12cd", "7.0", "bridge", "up", "/run/netns/lark-ab12cd", True)
    data = json.loads(record.to_json())
    for name in ("addressing", "dhcp_client_id", "lease_server", "lease_expires", "lease_renewals",
                 "lease_expiries", "lease_events_seen"):
        del data[name]  # a record written before these fields existed
    old = JobRecord.from_json(json.dumps(data))
    assert (old.addressing, old.dhcp_client_id, old.lease_renewals) == ("static", None, 0)


def test_job_ad_attributes_of_a_dhcp_job() -> None:
    from lark.classads import network_attributes
    from lark.state import JobRecord

    record = JobRecord("ab12cd", "7.0", "bridge", "up", "/run/netns/lark-ab12cd", True, ipv4="192.0.2.50/24")
    assert "LarkAddressing" not in network_attributes(record)  # static: as before
    record.addressing, record.dhcp_client_id = "dhcp", "00aa"
    record.lease_expires, record.lease_server, record.lease_renewals = 1700000123.9, "192.0.2.1", 2
    attrs = network_attributes(record)
    assert attrs["LarkIPv4Address"] == "192.0.2.50" and attrs["LarkAddressing"] == "dhcp"
    assert (attrs["LarkLeaseExpires"], attrs["LarkLeaseServer"], attrs["LarkLeaseRenewals"]) == \
        (1700000123, "192.0.2.1", 2)
