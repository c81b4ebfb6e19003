"""Per-user shares of the uplink (lark.shares, lark.sharetree) against the real kernel.

Topology (namespaces this test creates; the real host is never touched)::

    nat job ns  --veth--> host ns --uplink0 (veth)--> wan ns 203.0.113.2
    bridge job  --veth--> host bridge <prefix>br --port <prefix>bp (veth)--> lan ns 198.51.100.2
    macvlan job <macvlan on <prefix>mv (veth)> ~~~~~~~~~~~~~~~~~~~~~~~~~~~> lan ns 198.51.101.1

The uplink whose bandwidth users share is the device the mode's traffic leaves through: uplink0
for nat, the bridge port for bridge, the macvlan parent for macvlan. Users are job owner uids.
The assertions read the kernel: the classes and their parameters (what the policy planned), and
the byte counters of a job's class, which grow only when its packets land there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lark import netns
from lark.config import load_config
from lark.engine import Engine
from lark.firewall import libnft
from lark.firewall.shares import FAMILIES, host_elements, table_name
from lark.policy import JobRequest
from lark.shares import HtbClass, classid_text
from lark.sharetree import class_stats, ifb_name
from tests.kernel import jobtools

pytestmark = pytest.mark.kernel
LARK = str(Path(sys.executable).parent / "lark")
ALICE, BOB = 61001, 61002  # uids without a login: their user names are the uids
UPLINK_MBIT, DOWNLINK_MBIT = 400, 300
# An idle job still sends a few control packets of its own (IPv6 neighbour discovery, MLD) that
# rightly land in its class: far below the megabytes the busy job sends.
CONTROL_BYTES = 10_000


@dataclass
class Lab:
    host: str
    wan: str
    lan: str
    prefix: str
    engine: Engine
    uplinks: dict[str, str]  # mode -> the device its jobs' uploads leave through
    overrides: dict[str, str]

    def cli(self, *args: str) -> list[str]:
        argv = [LARK, "--host-netns", self.host]
        for knob, value in self.overrides.items():
            argv += ["-D", f"{knob}={value}"]
        return [*argv, *args]


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", os.path.basename(ns), *args], check=True)


def make_lab(make_ns, host: str, prefix: str, state: Path, uplink_mode: str, extra: dict[str, str]) -> Lab:  # noqa: ANN001
    wan, lan = make_ns("wan"), make_ns("lan")
    h, w, la = (os.path.basename(p) for p in (host, wan, lan))
    subprocess.run(["ip", "link", "add", "uplink0", "netns", h, "type", "veth", "peer", "name", "up1",
                    "netns", w], check=True)
    ip(host, "addr", "add", "203.0.113.1/24", "dev", "uplink0")
    ip(host, "link", "set", "uplink0", "up")
    ip(host, "route", "add", "default", "via", "203.0.113.2")
    ip(wan, "addr", "add", "203.0.113.2/24", "dev", "up1")
    ip(wan, "link", "set", "up1", "up")
    ip(host, "link", "add", f"{prefix}br", "type", "bridge")
    ip(host, "link", "set", f"{prefix}br", "up")
    subprocess.run(["ip", "link", "add", f"{prefix}bp", "netns", h, "type", "veth", "peer", "name", "lanb",
                    "netns", la], check=True)
    ip(host, "link", "set", f"{prefix}bp", "master", f"{prefix}br")
    ip(host, "link", "set", f"{prefix}bp", "up")
    ip(lan, "addr", "add", "198.51.100.2/24", "dev", "lanb")
    ip(lan, "link", "set", "lanb", "up")
    subprocess.run(["ip", "link", "add", f"{prefix}mv", "netns", h, "type", "veth", "peer", "name", "lanm",
                    "netns", la], check=True)
    ip(host, "link", "set", f"{prefix}mv", "up")
    ip(lan, "addr", "add", "198.51.101.1/24", "dev", "lanm")
    ip(lan, "link", "set", "lanm", "up")
    uplinks = {"nat": "uplink0", "bridge": f"{prefix}bp", "macvlan": f"{prefix}mv"}
    overrides = {
        "LARK_NAME_PREFIX": prefix,
        "LARK_STATE_DIR": str(state),
        "LARK_NETWORK_TYPES": "nat, bridge, macvlan, none",
        "LARK_BRIDGE": f"{prefix}br",
        "LARK_BRIDGE_IPV4_POOL": "198.51.100.0/24 198.51.100.10-198.51.100.99",
        "LARK_MACVLAN_PARENT": f"{prefix}mv",
        "LARK_MACVLAN_IPV4_POOL": "198.51.101.0/24 198.51.101.10-198.51.101.99",
        "LARK_NAT_IPV6_POOL": "",
        "LARK_SHARES_UPLINK": uplinks[uplink_mode],
        "LARK_SHARES_UPLINK_MBIT": str(UPLINK_MBIT),
        **extra,
    }
    return Lab(host, wan, lan, prefix, Engine(load_config([], overrides), host_netns=host), uplinks, overrides)


@pytest.fixture
def lab_for(make_ns, sandbox_ns: str, run_prefix: str, tmp_path: Path) -> Iterator:  # noqa: ANN001
    made: list[Lab] = []

    def build(uplink_mode: str = "nat", **extra: str) -> Lab:
        lab = make_lab(make_ns, sandbox_ns, run_prefix, tmp_path / "state", uplink_mode, extra)
        made.append(lab)
        return lab

    yield build
    for lab in made:
        for record in lab.engine.records():
            try:
                lab.engine.down(record.token)
            except Exception as err:  # keep cleaning; the namespaces go anyway
                print(f"cleanup: {err}")
        lab.engine.destroy_base()
        lab.engine.close()


def index_of(lab: Lab, ifname: str) -> int:
    with netns.iproute_in(lab.host) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        assert found, f"{ifname} is missing"
        return int(found[0])


def stats(lab: Lab, ifname: str) -> dict[int, dict[str, int]]:
    with netns.iproute_in(lab.host) as ipr:
        return class_stats(ipr, index_of(lab, ifname))


def root_kind(lab: Lab, ifname: str) -> str | None:
    with netns.iproute_in(lab.host) as ipr:
        for msg in ipr.get_qdiscs(index=index_of(lab, ifname)):
            if msg["parent"] == 0xFFFFFFFF:
                return str(msg.get_attr("TCA_KIND"))
    return None


def byte_rate(mbit: float) -> int:
    return int(mbit * 1_000_000 / 8)


def minors(record) -> tuple[int, int]:  # noqa: ANN001
    return int(record.share["user_class"]), int(record.share["job_class"])


def assert_nothing_left(lab: Lab, uplink: str) -> None:
    assert root_kind(lab, uplink) != "htb", f"the HTB tree stayed on {uplink}"
    with netns.iproute_in(lab.host) as ipr:
        assert not ipr.link_lookup(ifname=ifb_name(lab.prefix)), "the download IFB stayed"
    for family in FAMILIES:
        assert not libnft.table_exists(table_name(lab.prefix), family, lab.host), f"{family} share table stayed"
    assert not (lab.engine.config.state_dir / "shares.json").exists()


# ------------------------------------------------------------------ classes per user, with their rates


def test_each_user_gets_a_class_and_each_job_a_leaf_with_the_planned_rates(lab_for) -> None:  # noqa: ANN001
    lab = lab_for("nat", LARK_SHARES_WEIGHTS=f"{ALICE}=3", LARK_SHARES_USER_CEILING_MBIT="300")
    alice = lab.engine.up(JobRequest("1.0", "nat"), owner_uid=ALICE)
    bob1 = lab.engine.up(JobRequest("2.0", "nat", bandwidth_out_mbit=50), owner_uid=BOB)
    bob2 = lab.engine.up(JobRequest("2.1", "nat"), owner_uid=BOB)
    assert minors(bob1)[0] == minors(bob2)[0] != minors(alice)[0]  # one class per user
    assert bob1.share["user"] == str(BOB)
    found = stats(lab, "uplink0")
    # 400 Mbit, alice weight 3 and bob 1: alice 300, bob 100; bob's two jobs 50 each
    assert found[1]["rate"] == found[1]["ceil"] == byte_rate(UPLINK_MBIT)
    assert found[minors(alice)[0]]["rate"] == byte_rate(300)
    assert found[minors(bob1)[0]]["rate"] == byte_rate(100)
    assert found[minors(bob1)[0]]["ceil"] == byte_rate(300)  # the user ceiling
    assert found[minors(bob1)[1]]["rate"] == found[minors(bob2)[1]]["rate"] == byte_rate(50)
    assert found[minors(bob1)[1]]["ceil"] == byte_rate(50)  # its own cap
    assert found[minors(bob2)[1]]["ceil"] == byte_rate(300)
    # quantum follows the rate, so lending is weighted too
    assert found[minors(alice)[0]]["quantum"] > found[minors(bob1)[0]]["quantum"]
    elements = host_elements(lab.prefix, lab.host)["up"]
    assert elements[alice.host_ifname] == classid_text(minors(alice)[1])

    # alice leaves: her class goes, bob's two jobs now share the whole link
    lab.engine.down(alice.token)
    found = stats(lab, "uplink0")
    assert minors(alice)[0] not in found and minors(alice)[1] not in found
    assert found[minors(bob1)[0]]["rate"] == byte_rate(300)  # the whole link (400), within his ceiling (300)
    assert alice.host_ifname not in host_elements(lab.prefix, lab.host)["up"]


def test_a_jobs_uploads_land_in_its_class_and_teardown_leaves_nothing(lab_for) -> None:  # noqa: ANN001
    lab = lab_for("nat", LARK_SHARES_DOWNLINK_MBIT=str(DOWNLINK_MBIT))
    busy = lab.engine.up(JobRequest("1.0", "nat"), owner_uid=ALICE)
    idle = lab.engine.up(JobRequest("2.0", "nat"), owner_uid=BOB)
    before = stats(lab, "uplink0")
    with jobtools.sink(lab.wan, "203.0.113.2", 9100) as server:
        out = jobtools.send(busy.netns, "203.0.113.2", 9100, 2_000_000)
        assert out.returncode == 0, out.stderr
        assert jobtools.result(server)["bytes"] == 2_000_000
    after = stats(lab, "uplink0")
    busy_user, busy_leaf = minors(busy)
    assert after[busy_leaf]["bytes"] - before[busy_leaf]["bytes"] >= 2_000_000
    assert after[busy_user]["bytes"] - before[busy_user]["bytes"] >= 2_000_000
    assert after[minors(idle)[1]]["bytes"] - before[minors(idle)[1]]["bytes"] < CONTROL_BYTES

    # downloads (the job receives: iperf3 -R from the wan) go through the IFB's tree
    down_before = stats(lab, ifb_name(lab.prefix))
    assert down_before[1]["rate"] == byte_rate(DOWNLINK_MBIT)
    jobtools.iperf_mbit(lab.wan, "203.0.113.2", busy.netns, seconds=1, reverse=True, port=9101)
    down_after = stats(lab, ifb_name(lab.prefix))
    assert down_after[busy_leaf]["bytes"] - down_before[busy_leaf]["bytes"] > 1_000_000
    assert down_after[minors(idle)[1]]["bytes"] - down_before[minors(idle)[1]]["bytes"] < CONTROL_BYTES

    lab.engine.down(busy.token)
    assert root_kind(lab, "uplink0") == "htb"  # bob is still there
    lab.engine.down(idle.token)
    assert_nothing_left(lab, "uplink0")


@pytest.mark.parametrize("mode", ["bridge", "macvlan"])
def test_bridge_and_macvlan_jobs_are_classified_on_their_uplink(lab_for, mode: str) -> None:  # noqa: ANN001
    lab = lab_for(mode)
    uplink = lab.uplinks[mode]
    job = lab.engine.up(JobRequest("1.0", mode), owner_uid=ALICE)
    other = lab.engine.up(JobRequest("2.0", mode), owner_uid=BOB)
    peer = "198.51.100.2" if mode == "bridge" else "198.51.101.1"
    before = stats(lab, uplink)
    with jobtools.sink(lab.lan, peer, 9102) as server:
        out = jobtools.send(job.netns, peer, 9102, 1_000_000)
        assert out.returncode == 0, out.stderr
        assert jobtools.result(server)["bytes"] == 1_000_000
    after = stats(lab, uplink)
    assert after[minors(job)[1]]["bytes"] - before[minors(job)[1]]["bytes"] >= 1_000_000
    assert after[minors(other)[1]]["bytes"] - before[minors(other)[1]]["bytes"] < CONTROL_BYTES
    lab.engine.down(job.token)
    lab.engine.down(other.token)
    assert_nothing_left(lab, uplink)


def test_sweep_removes_the_classes_of_a_vanished_job_and_then_the_tree(lab_for) -> None:  # noqa: ANN001
    lab = lab_for("nat")
    keep = lab.engine.up(JobRequest("1.0", "nat"), owner_uid=ALICE)
    gone = lab.engine.up(JobRequest("2.0", "nat"), owner_uid=BOB)
    # a crash: the record vanished without a teardown (its namespace too)
    lab.engine.store.delete(gone.token)
    netns.delete_named(gone.netns)
    lab.engine.sweep()
    found = stats(lab, "uplink0")
    assert minors(gone)[0] not in found and minors(gone)[1] not in found
    assert found[minors(keep)[0]]["rate"] == byte_rate(UPLINK_MBIT)  # alone now: the whole link
    assert lab.engine.check() == []
    lab.engine.store.delete(keep.token)
    netns.delete_named(keep.netns)
    lab.engine.sweep()
    assert_nothing_left(lab, "uplink0")


def test_planned_classes_match_the_kernels(lab_for) -> None:  # noqa: ANN001
    """The plan (what `lark list` shows) and the kernel agree on every class."""
    from lark.shares import members_of, plan_tree, share_rows

    lab = lab_for("nat")
    for i, uid in enumerate((ALICE, BOB, BOB)):
        lab.engine.up(JobRequest(f"{i}.0", "nat"), owner_uid=uid)
    plan: list[HtbClass] = plan_tree(UPLINK_MBIT, lab.engine.config.shares, members_of(lab.engine.records()), "up")
    found = stats(lab, "uplink0")
    assert {c.minor: (c.rate, c.ceil) for c in plan} == {m: (s["rate"], s["ceil"]) for m, s in found.items()}
    # what `lark list` shows for each job is what the kernel has
    rows = share_rows(lab.engine.config.shares, lab.engine.records())
    for record in lab.engine.records():
        leaf = found[minors(record)[1]]
        assert rows[record.token]["rate_mbit"] == round(leaf["rate"] * 8 / 1e6, 1)
        assert rows[record.token]["class"] == classid_text(minors(record)[0])


def test_lark_list_shows_each_jobs_share_and_the_node_ad_the_policy(lab_for) -> None:  # noqa: ANN001
    lab = lab_for("nat", LARK_SHARES_WEIGHTS=f"{ALICE}=3")
    alice = lab.engine.up(JobRequest("1.0", "nat"), owner_uid=ALICE)
    bob = lab.engine.up(JobRequest("2.0", "nat"), owner_uid=BOB)
    out = subprocess.run(lab.cli("list", "--json"), capture_output=True, text=True, check=True).stdout
    shares = {row["token"]: row["share"] for row in json.loads(out)}
    assert shares[alice.token]["user"] == str(ALICE) and shares[alice.token]["rate_mbit"] == 300.0
    assert shares[bob.token]["class"] == classid_text(minors(bob)[0]) and shares[bob.token]["rate_mbit"] == 100.0
    text = subprocess.run(lab.cli("list"), capture_output=True, text=True, check=True).stdout
    assert f"{BOB} {classid_text(minors(bob)[0])} 100/400" in text
    ad = subprocess.run(lab.cli("node-ad"), capture_output=True, text=True, check=True).stdout
    assert f'LarkSharePolicy = "uplink0 up {UPLINK_MBIT}/down unshared Mbit; weights {ALICE}=3"' in ad
    assert f"LarkShareUplinkMbit = {UPLINK_MBIT}" in ad


def test_a_changed_configuration_replaces_the_tree_under_running_jobs(lab_for) -> None:  # noqa: ANN001
    lab = lab_for("nat", LARK_SHARES_DOWNLINK_MBIT=str(DOWNLINK_MBIT))
    job = lab.engine.up(JobRequest("1.0", "nat"), owner_uid=ALICE)
    with netns.iproute_in(lab.host) as ipr:
        kinds = {m.get_attr("TCA_KIND") for m in ipr.get_qdiscs(index=index_of(lab, job.host_ifname))}
    assert "clsact" in kinds  # its downloads go to the IFB
    # the broker restarts with downloads no longer shared: the IFB and the veth's redirect go
    # (a redirect to a missing IFB would drop the job's downloads), the upload tree stays
    overrides = {k: v for k, v in lab.overrides.items() if k != "LARK_SHARES_DOWNLINK_MBIT"}
    with Engine(load_config([], overrides), host_netns=lab.host) as engine:
        engine.sweep()
        with netns.iproute_in(lab.host) as ipr:
            assert not ipr.link_lookup(ifname=ifb_name(lab.prefix))
            kinds = {m.get_attr("TCA_KIND") for m in ipr.get_qdiscs(index=index_of(lab, job.host_ifname))}
        assert "clsact" not in kinds
        assert stats(lab, "uplink0")[minors(job)[1]]["rate"] == byte_rate(UPLINK_MBIT)
        assert jobtools.iperf_mbit(lab.wan, "203.0.113.2", job.netns, seconds=1, reverse=True, port=9103) > 1
        engine.down(job.token)
    assert_nothing_left(lab, "uplink0")
