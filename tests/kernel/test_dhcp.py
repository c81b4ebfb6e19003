"""Bridge and macvlan jobs addressed by the site network: a real dnsmasq serves DHCPv4 and router
advertisements on the site segment, and Lark's engine sets jobs up against it.

Topology (all in namespaces this test creates):

    job ns --veth--> host ns (sandbox): bridge <prefix>br --veth--> site ns: srv0 10.77.0.1/24, fd77::1/64
                                                                     dnsmasq (DHCP 10.77.0.50-..., RAs)

dnsmasq's shortest lease is two minutes, so a renewal by the client's own timer (T1, half the
lease) takes a minute: one test waits for it; the others ask the client to renew now (SIGUSR1),
which is the same exchange with the server.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lark import names, netns
from lark.addressing import dhcp
from lark.attach.base import AddressingTimeout
from lark.config import load_config
from lark.engine import Engine
from lark.ipam import all_allocations
from lark.policy import JobRequest
from lark.state import JobRecord
from tests.kernel import jobtools
from tests.kernel.brokerkit import BrokerLab
from tests.kernel.jobtools import KILL_AT_STEP
from tests.support import in_ns, links_left, wait_until, wire_count
from tests.support.dnsmasq import Dnsmasq

pytestmark = pytest.mark.kernel
SERVER4, SERVER6 = "10.77.0.1", "fd77::1"


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", os.path.basename(ns), *args], check=True)


@dataclass
class Site:
    host: str
    site: str
    prefix: str
    state_dir: Path
    dnsmasq: Dnsmasq
    make_engine: Callable[..., Engine]

    def lark_objects(self, engine: Engine) -> list[str]:
        found = [f"link {n}" for n in links_left(engine)]
        found += [f"netns {n}" for n in netns.list_named(self.prefix + "-") if names.token_of_netns(self.prefix, n)]
        found += [f"allocation {a.pool}/{a.slot}" for a, _ in all_allocations(self.state_dir)]
        found += [f"record {r.token}" for r in engine.records()]
        # kept on purpose: the hook, and each client id's last address (for the job's next run)
        found += [f"dhcp file {p.name}" for p in (self.state_dir / "dhcp").glob("*")
                  if p.name != "udhcpc-hook" and not p.name.startswith("last-")]
        found += [f"udhcpc {pid}" for pid in udhcpc_pids(self.state_dir)]
        return found


def lark_cli(site: Site, **knobs: str) -> list[str]:
    """``lark --host-netns <host> -D ...`` with the knobs of the site's engines."""
    argv = [str(Path(sys.executable).parent / "lark"), "--host-netns", site.host]
    for knob, value in {"LARK_NAME_PREFIX": site.prefix, "LARK_STATE_DIR": str(site.state_dir),
                        "LARK_NETWORK_TYPES": "bridge", "LARK_DEFAULT_NETWORK_TYPE": "bridge",
                        "LARK_BRIDGE": f"{site.prefix}br", "LARK_BRIDGE_ADDRESSING": "dhcp+slaac", **knobs}.items():
        argv += ["-D", f"{knob}={value}"]
    return argv


def udhcpc_pids(state_dir: Path) -> list[int]:
    """Every running udhcpc whose command line names this test's state directory."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"udhcpc" in cmdline and str(state_dir).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def site(make_ns, sandbox_ns: str, run_prefix: str, tmp_path: Path) -> Iterator[Site]:
    host, site_ns = sandbox_ns, make_ns("site")
    bridge = f"{run_prefix}br"
    ip(host, "link", "add", bridge, "type", "bridge")
    ip(host, "link", "set", bridge, "up")
    subprocess.run(["ip", "link", "add", f"{run_prefix}sv", "netns", os.path.basename(host), "type", "veth",
                    "peer", "name", "srv0", "netns", os.path.basename(site_ns)], check=True)
    ip(host, "link", "set", f"{run_prefix}sv", "master", bridge, "up")
    ip(site_ns, "addr", "add", f"{SERVER4}/24", "dev", "srv0")
    ip(site_ns, "addr", "add", f"{SERVER6}/64", "dev", "srv0", "nodad")
    ip(site_ns, "link", "set", "srv0", "up")
    state_dir = tmp_path / "state"
    engines: list[Engine] = []

    def make_engine(**knobs: str) -> Engine:
        overrides = {"LARK_NAME_PREFIX": run_prefix, "LARK_STATE_DIR": str(state_dir),
                     "LARK_NETWORK_TYPES": "bridge", "LARK_DEFAULT_NETWORK_TYPE": "bridge", "LARK_BRIDGE": bridge,
                     "LARK_BRIDGE_ADDRESSING": "dhcp+slaac", **knobs}
        engine = Engine(load_config([], overrides), host_netns=host)
        engines.append(engine)
        return engine

    server = Dnsmasq(site_ns, tmp_path / "dnsmasq", "srv0", "10.77.0.50", "10.77.0.59")
    lab = Site(host, site_ns, run_prefix, state_dir, server, make_engine)
    try:
        yield lab
    finally:
        for engine in engines:
            for record in engine.records():
                try:
                    engine.down(record.token)
                except Exception as err:  # keep cleaning; the namespaces go below anyway
                    print(f"cleanup: {err}")
        for pid in udhcpc_pids(state_dir):  # only clients of this test's own state directory
            os.kill(pid, signal.SIGKILL)
        server.stop()
        for name in netns.list_named(run_prefix + "-"):
            if names.token_of_netns(run_prefix, name):
                netns.delete_named(name)
        for engine in engines:
            engine.destroy_base()
            engine.close()


def in_net(address: str | None, net: str) -> bool:
    return address is not None and ipaddress.ip_interface(address).ip in ipaddress.ip_network(net)


def renew_now(site: Site, record: JobRecord) -> None:
    pid = dhcp.client_pid(site.state_dir, record.token)
    assert pid is not None, "the job's DHCP client is not running"
    os.kill(pid, signal.SIGUSR1)


def sysctl(ns: str, name: str) -> str:
    return Path(f"/proc/sys/{name.replace('.', '/')}").read_text().strip() if ns == "" else \
        subprocess.run(in_ns(ns, ["sysctl", "-n", name]), capture_output=True, text=True, check=True).stdout.strip()


def test_a_job_gets_a_lease_and_a_slaac_address_used_counted_and_released(site: Site) -> None:
    site.dnsmasq.start()
    engine = site.make_engine()
    record = engine.up(JobRequest("7.0", "bridge"), global_job_id="submit.example.org#7.0#1700000000")
    assert record.addressing == "dhcp+slaac"
    assert in_net(record.ipv4, "10.77.0.0/24") and record.host_ipv4 == SERVER4
    assert in_net(record.ipv6, "fd77::/64")
    assert record.lease_server == SERVER4 and record.lease_expires is not None
    assert 0 < record.lease_expires - time.time() <= 120
    # dnsmasq's own record: the job's address under the job's client id and host name
    [lease] = site.dnsmasq.lease_lines()
    assert lease[2] == record.ipv4_address and lease[3] == "job-7-0"
    assert lease[4].replace(":", "") == record.dhcp_client_id
    assert bytes.fromhex(record.dhcp_client_id or "") == b"\x00submit.example.org#7.0#1700000000/lark0"
    # RAs are accepted on the job's interface only (the job asked for SLAAC)
    assert sysctl(record.netns, "net.ipv6.conf.lark0.accept_ra") == "1"
    # anti-spoofing names the addresses the network gave
    spec_addresses = set(record.firewall_spec["addresses"])  # type: ignore[arg-type]
    assert spec_addresses == {record.ipv4_address, record.ipv6_address}

    for dst, port in ((SERVER4, 9101), (SERVER6, 9102)):
        with wire_count(site.site, f"{site.prefix}-w{port}", f"tcp dport {port}") as wire, \
                jobtools.sink(site.site, dst, port) as sink:
            out = jobtools.send(record.netns, dst, port, 150_000)
            assert out.returncode == 0, out.stderr
            got = jobtools.result(sink)
            arrived = wire()
        assert got["peer"] == (record.ipv4_address if ":" not in dst else record.ipv6_address)
        assert arrived >= 150_000
    counted = engine.counters(record.token).bytes_out
    assert counted >= 2 * 150_000
    # a source the network did not give the job is dropped inside its namespace
    ip(record.netns, "addr", "add", "10.77.0.200/24", "dev", "lark0")
    with jobtools.sink(site.site, SERVER4, 9103, "udp") as sink:
        spoofed = jobtools.send(record.netns, SERVER4, 9103, 100, "udp", src="10.77.0.200", timeout=1)
        assert spoofed.returncode != 0
        sink.kill()

    # a renewal: the server extends the lease, the address stays
    before = len(dhcp.read_events(site.state_dir, record.token))
    renew_now(site, record)
    wait_until("a renewal", lambda: [e.event for e in dhcp.read_events(site.state_dir, record.token)[before:]]
               == ["renew"], 10)
    assert f"inet {record.ipv4}" in subprocess.run(in_ns(record.netns, ["ip", "-4", "addr", "show", "lark0"]),
                                                   capture_output=True, text=True).stdout
    # `lark list` shows the lease (the engine's record: the broker keeps it current for its jobs)
    listed = subprocess.run([*lark_cli(site), "list", "--json"], capture_output=True, text=True, check=True)
    [row] = json.loads(listed.stdout)
    assert (row["addressing"], row["lease_server"], row["lease_expires"]) == \
        ("dhcp+slaac", SERVER4, record.lease_expires)
    table = subprocess.run([*lark_cli(site), "list"], capture_output=True, text=True, check=True).stdout
    assert "LEASE" in table.splitlines()[0] and "until " in table.splitlines()[1]

    engine.down(record.token)
    wait_until("the release at the server", lambda: site.dnsmasq.said(f"DHCPRELEASE(srv0) {record.ipv4_address}"), 5)
    wait_until("the lease released", lambda: site.dnsmasq.lease_lines() == [], 5)
    assert site.lark_objects(engine) == []


def test_two_jobs_have_their_own_client_ids_and_a_rerun_gets_its_lease_back(site: Site) -> None:
    site.dnsmasq.start()
    engine = site.make_engine(LARK_BRIDGE_ADDRESSING="dhcp")
    a = engine.up(JobRequest("8.0", "bridge"), global_job_id="submit#8.0#1")
    b = engine.up(JobRequest("8.1", "bridge"), global_job_id="submit#8.1#1")
    assert a.ipv4 != b.ipv4 and a.dhcp_client_id != b.dhcp_client_id
    assert a.ipv6 is None and b.ipv6 is None  # dhcp only, and no IPv6 pool: no IPv6
    assert sysctl(a.netns, "net.ipv6.conf.lark0.accept_ra") == "0"  # RAs refused unless asked
    ids = {line[4].replace(":", ""): line[2] for line in site.dnsmasq.lease_lines()}
    assert ids == {a.dhcp_client_id: a.ipv4_address, b.dhcp_client_id: b.ipv4_address}
    first = a.ipv4
    engine.down(a.token)
    again = engine.up(JobRequest("8.0", "bridge"), global_job_id="submit#8.0#1")  # a new MAC, the same job
    assert again.ipv4 == first
    engine.down(again.token)
    engine.down(b.token)
    assert site.lark_objects(engine) == []


def test_exhausted_pool_holds_the_job_or_falls_back_to_static(site: Site) -> None:
    # one address; dnsmasq pings an address before it first offers it (~3 s): the wait covers that
    site.dnsmasq.start(last="10.77.0.50")
    engine = site.make_engine(LARK_BRIDGE_ADDRESSING="dhcp", LARK_ADDRESSING_TIMEOUT="6")
    first = engine.up(JobRequest("9.0", "bridge"), global_job_id="submit#9.0#1")
    assert first.ipv4_address == "10.77.0.50"
    with pytest.raises(AddressingTimeout, match=f"no DHCPv4 lease on {site.prefix}br within 6 s "
                                                "\\(LARK_ADDRESSING_TIMEOUT\\) \\(DHCP client id 00.*\\); "
                                                "LARK_ADDRESSING_FALLBACK = hold"):
        engine.up(JobRequest("9.1", "bridge"), global_job_id="submit#9.1#1")
    assert [r.token for r in engine.records()] == [first.token]  # the held job left nothing
    assert udhcpc_pids(site.state_dir) == [dhcp.client_pid(site.state_dir, first.token)]

    fallback = site.make_engine(LARK_BRIDGE_ADDRESSING="dhcp", LARK_ADDRESSING_TIMEOUT="6",
                                LARK_ADDRESSING_FALLBACK="static",
                                LARK_BRIDGE_IPV4_POOL="10.77.0.0/24 10.77.0.100-10.77.0.109",
                                LARK_BRIDGE_IPV4_GATEWAY=SERVER4)
    second = fallback.up(JobRequest("9.1", "bridge"), global_job_id="submit#9.1#1")
    assert in_net(second.ipv4, "10.77.0.96/28") and second.dhcp_client_id is None
    assert second.lease_expires is None
    with jobtools.sink(site.site, SERVER4, 9104, "udp") as sink:
        out = jobtools.send(second.netns, SERVER4, 9104, 100, "udp")
        assert out.returncode == 0, out.stderr
        assert jobtools.result(sink)["peer"] == second.ipv4_address
    fallback.down(second.token)
    engine.down(first.token)
    assert site.lark_objects(engine) == []


def test_server_loss_keeps_the_address_until_the_lease_runs_out(site: Site) -> None:
    site.dnsmasq.start()
    engine = site.make_engine(LARK_BRIDGE_ADDRESSING="dhcp")
    record = engine.up(JobRequest("10.0", "bridge"), global_job_id="submit#10.0#1")
    site.dnsmasq.stop()
    before = len(dhcp.read_events(site.state_dir, record.token))
    renew_now(site, record)  # unanswered: the client stays in RENEWING, the lease as it was
    log = site.state_dir / "dhcp" / f"{record.token}.log"
    wait_until("the client's renewal attempt", lambda: log.read_text().count("sending renew") >= 1, 10)
    assert dhcp.read_events(site.state_dir, record.token)[before:] == []
    # the address is the kernel's until the lease's own end: valid_lft counts down from the lease
    shown = subprocess.run(in_ns(record.netns, ["ip", "-4", "-o", "addr", "show", "lark0"]),
                           capture_output=True, text=True).stdout
    assert record.ipv4 in shown and "valid_lft forever" not in shown
    lifetime = int(shown.split("valid_lft ")[1].split("sec")[0])
    assert 0 < lifetime <= 120
    # the job still reaches the segment with it (a neighbour that stayed)
    with jobtools.sink(site.site, SERVER4, 9105, "udp"):
        out = jobtools.send(record.netns, SERVER4, 9105, 100, "udp")
        assert out.returncode == 0, out.stderr
    engine.down(record.token)  # no server to hear the release: teardown still completes
    assert site.lark_objects(engine) == []


def test_a_dead_client_is_seen_and_restarted_with_the_same_identity(site: Site) -> None:
    site.dnsmasq.start()
    engine = site.make_engine(LARK_BRIDGE_ADDRESSING="dhcp")
    record = engine.up(JobRequest("11.0", "bridge"), global_job_id="submit#11.0#1")
    pid = dhcp.client_pid(site.state_dir, record.token)
    assert pid is not None and not dhcp.restart_needed(site.state_dir, record.token)
    os.kill(pid, signal.SIGKILL)
    wait_until("the client gone", lambda: dhcp.restart_needed(site.state_dir, record.token), 5)
    dhcp.start_client(site.state_dir, record.token, record.netns, "lark0", bytes.fromhex(record.dhcp_client_id or ""),
                      "job-11-0")
    before = len(dhcp.read_events(site.state_dir, record.token))
    wait_until("a new lease", lambda: dhcp.read_events(site.state_dir, record.token)[before:] != [] and
               dhcp.read_events(site.state_dir, record.token)[-1].event == "bound", 10)
    assert dhcp.read_events(site.state_dir, record.token)[-1].address == record.ipv4
    engine.down(record.token)
    assert site.lark_objects(engine) == []


def test_slaac_only_job_and_a_static_job_that_refuses_advertisements(site: Site) -> None:
    site.dnsmasq.start()
    engine = site.make_engine(LARK_BRIDGE_ADDRESSING="slaac", LARK_BRIDGE_IPV4_GATEWAY=SERVER4,
                              LARK_BRIDGE_IPV4_POOL="10.77.0.0/24 10.77.0.120-10.77.0.129")
    record = engine.up(JobRequest("12.0", "bridge"))
    assert in_net(record.ipv4, "10.77.0.112/28") and record.dhcp_client_id is None
    assert in_net(record.ipv6, "fd77::/64")
    assert udhcpc_pids(site.state_dir) == []
    with jobtools.sink(site.site, SERVER6, 9106, "udp") as sink:
        out = jobtools.send(record.netns, SERVER6, 9106, 100, "udp")
        assert out.returncode == 0, out.stderr
        assert jobtools.result(sink)["peer"] == record.ipv6_address
    static = site.make_engine(LARK_BRIDGE_ADDRESSING="static",
                              LARK_BRIDGE_IPV4_POOL="10.77.0.0/24 10.77.0.130-10.77.0.139")
    plain = static.up(JobRequest("12.1", "bridge"))
    assert sysctl(plain.netns, "net.ipv6.conf.lark0.accept_ra") == "0"
    assert sysctl(plain.netns, "net.ipv6.conf.lark0.autoconf") == "0"
    static.down(plain.token)
    engine.down(record.token)
    assert site.lark_objects(engine) == []


def test_the_client_renews_by_itself_before_the_lease_runs_out(site: Site) -> None:
    """T1 is half of dnsmasq's shortest lease (2 min): this waits about a minute."""
    site.dnsmasq.start()
    engine = site.make_engine(LARK_BRIDGE_ADDRESSING="dhcp")
    record = engine.up(JobRequest("13.0", "bridge"), global_job_id="submit#13.0#1")
    first = record.lease_expires
    assert first is not None
    wait_until("the client's own renewal", lambda: any(
        e.event == "renew" for e in dhcp.read_events(site.state_dir, record.token)), 100, interval=1)
    renewed = [e for e in dhcp.read_events(site.state_dir, record.token) if e.event == "renew"][0]
    assert renewed.address == record.ipv4 and renewed.expires is not None and renewed.expires > first
    assert site.dnsmasq.said(f"DHCPACK(srv0) {record.ipv4_address}")
    engine.down(record.token)
    assert site.lark_objects(engine) == []


def test_the_broker_serves_a_dhcp_job_follows_its_renewals_and_releases_it(site: Site, lab: BrokerLab) -> None:
    site.dnsmasq.start()
    lab.start_broker(LARK_NETWORK_TYPES="bridge", LARK_DEFAULT_NETWORK_TYPE="bridge", LARK_BRIDGE=f"{site.prefix}br",
                     LARK_BRIDGE_ADDRESSING="dhcp", LARK_ACCOUNTING_INTERVAL="1")
    try:
        starter = lab.fake_starter()
        lab.write_job_ad(starter.pid, cluster=21, extra={"GlobalJobId": "submit.lark.test#21.0#1700000000"})
        wrapper = starter.spawn(uid=lab.uid, gid=lab.gid, newnet=True)
        setup = starter.ask(wrapper, "setup")
        assert setup.get("ok") is True, f"setup: {setup}\n{lab.broker_log()}"
        record = lab.record_of(wrapper)
        assert record is not None and in_net(record["ipv4"], "10.77.0.0/24")
        assert bytes.fromhex(record["dhcp_client_id"]) == b"\x00submit.lark.test#21.0#1700000000/lark0"
        [lease] = site.dnsmasq.lease_lines()
        assert lease[2] == record["ipv4"].split("/")[0] and lease[3] == "job-21-0"
        pid = dhcp.client_pid(lab.state, record["token"])
        assert pid is not None
        os.kill(pid, signal.SIGUSR1)  # a renewal; the broker notices it on its next round
        renewed = wait_until("the broker counting the renewal", lambda: (lab.record_of(wrapper) or {}).get(
            "lease_renewals") == 1 and lab.record_of(wrapper), 15)
        assert renewed["lease_expires"] >= record["lease_expires"]
        assert "DHCP lease of " + record["ipv4"].split("/")[0] + " renewed" in lab.broker_log()
        # a client that dies is started again by the broker, and gets the job's address again
        os.kill(pid, signal.SIGKILL)
        wait_until("the broker restarting the client", lambda: dhcp.client_pid(lab.state, record["token"]) not in
                   (None, pid), 15)
        assert "its DHCP client died; starting it again" in lab.broker_log()
        wait_until("the restarted client's lease", lambda: (dhcp.read_events(lab.state, record["token"]) or [None])[-1]
                   is not None and dhcp.read_events(lab.state, record["token"])[-1].event == "bound", 15)
        assert dhcp.read_events(lab.state, record["token"])[-1].address == record["ipv4"]
        final = starter.ask(wrapper, "finalize")
        assert final.get("ok") is True, f"finalize: {final}"
        wait_until("the teardown", lambda: lab.records() == [], 15)
        released = f"DHCPRELEASE(srv0) {record['ipv4'].split('/')[0]}"
        wait_until("the release at the server", lambda: site.dnsmasq.said(released), 5)
        assert udhcpc_pids(lab.state) == []
    finally:
        for pid in udhcpc_pids(lab.state):
            os.kill(pid, signal.SIGKILL)




@pytest.mark.parametrize("step", ["attached", "waiting", "addressed"])
def test_a_set_up_killed_around_its_wait_leaves_nothing_after_the_sweep(site: Site, step: str) -> None:
    """Killed with its link up and no client yet (attached), with its client asking (waiting), or
    with its lease in hand and no rules yet (addressed). The client outlives the process that
    started it (it is detached): the sweep must stop it, from the record and the client's pidfile."""
    site.dnsmasq.start()
    engine = site.make_engine(LARK_BRIDGE_ADDRESSING="dhcp")
    argv = lark_cli(site, LARK_BRIDGE_ADDRESSING="dhcp")
    killed = subprocess.run([sys.executable, "-c", KILL_AT_STEP, step, *argv[1:], "up", f"k-{step}"],
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    [record] = engine.records()
    assert record.status == "setting-up"
    if step == "attached":  # the record of the first save, before the client: nothing says DHCP yet
        assert record.addressing == "static" and udhcpc_pids(site.state_dir) == []
    else:  # saved again before the wait: what a teardown needs to find the client and the lease
        assert record.addressing == "dhcp" and record.dhcp_client_id is not None
        assert len(udhcpc_pids(site.state_dir)) == 1  # the client lives on (holding the lease once it came)
    if step == "addressed":
        assert [line[2] for line in site.dnsmasq.lease_lines()] != []
    report = engine.sweep()
    assert report.removed_jobs == [record.token]
    assert site.lark_objects(engine) == []
    wait_until("the lease released", lambda: site.dnsmasq.lease_lines() == [], 5)


def test_a_macvlan_job_gets_a_lease_and_a_slaac_address(site: Site) -> None:
    """The bridge serves as the macvlan parent here: the child's frames leave through it to the server."""
    site.dnsmasq.start()
    engine = site.make_engine(LARK_NETWORK_TYPES="macvlan", LARK_DEFAULT_NETWORK_TYPE="macvlan",
                              LARK_MACVLAN_PARENT=f"{site.prefix}br", LARK_MACVLAN_ADDRESSING="dhcp+slaac")
    record = engine.up(JobRequest("14.0", "macvlan"), global_job_id="submit#14.0#1")
    assert record.host_ifname is None
    assert in_net(record.ipv4, "10.77.0.0/24") and in_net(record.ipv6, "fd77::/64")
    assert bytes.fromhex(record.dhcp_client_id or "") == b"\x00submit#14.0#1/lark0"
    with jobtools.sink(site.site, SERVER4, 9107, "udp") as sink:
        out = jobtools.send(record.netns, SERVER4, 9107, 100, "udp")
        assert out.returncode == 0, out.stderr
        assert jobtools.result(sink)["peer"] == record.ipv4_address
    assert engine.counters(record.token).bytes_out >= 100
    engine.down(record.token)
    wait_until("the release at the server", lambda: site.dnsmasq.said(f"DHCPRELEASE(srv0) {record.ipv4_address}"), 5)
    assert site.lark_objects(engine) == []
