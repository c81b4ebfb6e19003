"""A mode defined in this file alone, registered at run time, through the real Engine and kernel.

``toyveth`` is a routed veth: the host end and the job get the two addresses of a /30 cut from a
pool of this test's own, the job's default route points at the host end, nothing is masqueraded.
It also owns a knob (``LARK_TOYVETH_MTU``) that the configuration accepts only because the mode
declares it. Nothing outside this file knows the mode: if the engine, the configuration or the
request policy still listed modes, this test would fail.

Topology (all inside namespaces this test creates): job ns --veth--> sandbox "host" ns.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lark import attach, names, netns
from lark.attach.base import AttachContext, Mode, check_job_side, configure_job_interface
from lark.config import LarkConfig, load_config
from lark.engine import Engine
from lark.errors import ConfigError
from lark.ipam import SubnetPool, all_allocations
from lark.knobs import Knob, parse_setting
from lark.netlink import add_address, add_veth_into, delete_link, link_index, set_up
from lark.policy import request_from_attributes
from lark.state import JobRecord
from lark.values import parse_int
from tests.kernel import jobtools
from tests.support import links_left, same_bytes, wire_count

pytestmark = pytest.mark.kernel
TOY_POOL = ipaddress.ip_network("10.254.0.0/24")
MTU = Knob("LARK_TOYVETH_MTU", "1400", lambda t: parse_int(t, 1280, 9000), "MTU of toy jobs' veth.", "mode toyveth")


def allocate(config: LarkConfig, record: JobRecord) -> None:
    subnet, alloc = SubnetPool(config.state_dir, TOY_POOL, 30).allocate(record.token)
    record.allocations.append(alloc)
    host, job = list(subnet.hosts())
    record.host_ipv4, record.ipv4 = f"{host}/30", f"{job}/30"


def up(ctx: AttachContext, record: JobRecord) -> None:
    assert record.host_ifname and record.job_ifname and ctx.job_netns_fd is not None and ctx.job is not None
    mtu = parse_setting(MTU, ctx.config.settings, None)
    index = add_veth_into(ctx.host, record.host_ifname, record.job_ifname, ctx.job_netns_fd)
    assert record.host_ipv4
    add_address(ctx.host, index, ipaddress.ip_interface(record.host_ipv4), record.host_ifname)
    ctx.host.link("set", index=index, mtu=mtu)
    set_up(ctx.host, index, record.host_ifname)
    job_index = link_index(ctx.job, record.job_ifname)
    assert job_index is not None
    ctx.job.link("set", index=job_index, mtu=mtu)
    configure_job_interface(ctx, record)


def down(ctx: AttachContext, record: JobRecord) -> None:
    if record.host_ifname:
        delete_link(ctx.host, record.host_ifname)


def check(ctx: AttachContext, record: JobRecord) -> list[str]:
    missing = record.host_ifname and link_index(ctx.host, record.host_ifname) is None
    return ([f"host interface {record.host_ifname} is missing"] if missing else []) + check_job_side(ctx, record)


TOY = Mode(name="toyveth", summary="routed veth (test only)", allocate=allocate, up=up, down=down, check=check,
           host_interface=True, routed=True, extra_knobs=(MTU,))


@pytest.fixture
def toy_engine(sandbox_ns: str, run_prefix: str, tmp_path: Path) -> Iterator[Engine]:
    attach.register(TOY)
    engine = None
    try:
        config = load_config([], {"LARK_NAME_PREFIX": run_prefix, "LARK_STATE_DIR": str(tmp_path / "state"),
                                  "LARK_NETWORK_TYPES": "nat, toyveth", "LARK_DEFAULT_NETWORK_TYPE": "toyveth",
                                  "LARK_TOYVETH_MTU": "1300"})
        engine = Engine(config, host_netns=sandbox_ns)
        yield engine
    finally:
        if engine is not None:
            for record in engine.records():
                engine.down(record.token)
            for name in netns.list_named(run_prefix + "-"):
                if names.token_of_netns(run_prefix, name):
                    netns.delete_named(name)
            engine.destroy_base()
            engine.close()
        attach.unregister(TOY.name)


def leftovers(engine: Engine) -> list[str]:
    found = [f"link {n}" for n in links_left(engine)]
    found += [f"netns {n}" for n in netns.list_named(engine.prefix + "-") if names.token_of_netns(engine.prefix, n)]
    found += [f"firewall {t}" for t in engine.firewall.job_tokens()]
    found += [f"allocation {a.pool}/{a.slot}" for a, _ in all_allocations(engine.config.state_dir)]
    return found + [f"record {r.token}" for r in engine.records()]


def test_a_mode_registered_in_a_test_is_set_up_counted_and_torn_down(toy_engine: Engine, sandbox_ns: str) -> None:
    # the request policy takes the mode from the registry too: the node's default is the toy
    request = request_from_attributes({}, toy_engine.config, "7.0")
    assert request.network_type == "toyveth"
    record = toy_engine.up(request)
    assert record.host_ifname and record.host_ipv4_address == "10.254.0.1" and record.ipv4_address == "10.254.0.2"
    assert record.firewall_job_side and record.status == "up"
    assert toy_engine.check() == []
    shown = subprocess.run(["ip", "-n", os.path.basename(sandbox_ns), "-j", "link", "show", record.host_ifname],
                           capture_output=True, text=True, check=True).stdout
    assert json.loads(shown)[0]["mtu"] == 1300  # the mode's own knob, read from the configuration

    # counted: what the host sends to the job is the job's bytes in, as the wire at the job saw it
    with wire_count(record.netns, f"{toy_engine.prefix}-wire9100", "tcp dport 9100") as wire, \
            jobtools.sink(record.netns, "10.254.0.2", 9100) as server:
        out = jobtools.send(sandbox_ns, "10.254.0.2", 9100, 200_000)
        assert out.returncode == 0, out.stderr
        got = jobtools.result(server)
        arrived = wire()
    assert got["bytes"] == 200_000 and got["peer"] == "10.254.0.1"  # routed, not translated
    counted = toy_engine.counters(record.token)
    assert same_bytes(counted.bytes_in, arrived), (counted.bytes_in, arrived)

    assert toy_engine.down(record.token)
    assert leftovers(toy_engine) == []


def test_the_mode_and_its_knob_are_unknown_once_unregistered(toy_engine: Engine) -> None:
    attach.unregister(TOY.name)
    try:
        with pytest.raises(ConfigError, match="unknown network type 'toyveth'"):
            load_config([], {"LARK_NETWORK_TYPES": "nat, toyveth"})
        with pytest.raises(ConfigError, match="unknown Lark knob"):
            load_config([], {"LARK_TOYVETH_MTU": "1300"})
    finally:
        attach.register(TOY)
