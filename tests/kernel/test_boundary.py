"""Accounting at the job's boundary, isolation of jobs, flush recovery and counters after the wrapper.

Topology (all in namespaces this test creates; the real host is never touched)::

    job ns (lark0) --veth--> host ns (sandbox; uplink0 203.0.113.1, 2001:db8:ff::1, + 192.0.2.77)
                                  --uplink veth--> wan ns (203.0.113.2, 2001:db8:ff::2)

The wan has no route to the jobs' NAT pool, so a job reaches it only through masquerade, and the
wan reaches a job only through a forwarded port on 203.0.113.1. Every byte count a job reports
is compared with a wire count (``jobtools.wire_count``) taken by a table of the test's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lark import names, netns
from lark.config import load_config
from lark.engine import Engine
from lark.errors import NotFound
from lark.firewall.base import JobCounters
from lark.ipam import all_allocations
from lark.policy import JobRequest
from lark.state import JobRecord
from tests.kernel import jobtools

pytestmark = pytest.mark.kernel
HOST4, WAN4, OTHER4 = "203.0.113.1", "203.0.113.2", "192.0.2.77"  # OTHER4: another address of the host


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", os.path.basename(ns), *args], check=True)


@dataclass
class Lab:
    host: str
    wan: str
    prefix: str
    state: Path
    engines: list[Engine] = field(default_factory=list)

    def engine(self, **knobs: str) -> Engine:
        """An engine over this lab's host; knobs (e.g. LARK_JOB_HOST_ALLOW) set its isolation."""
        overrides = {"LARK_NAME_PREFIX": self.prefix, "LARK_STATE_DIR": str(self.state),
                     "LARK_NETWORK_TYPES": "nat, none", "LARK_INBOUND_PORT_RANGE": "41100-41199", **knobs}
        engine = Engine(load_config([], overrides), host_netns=self.host)
        self.engines.append(engine)
        return engine

    def leftovers(self, engine: Engine) -> list[str]:
        """Every object of this lab's prefix that Lark could have left (pins included)."""
        found = [f"link {n}" for n in jobtools.wait_links_gone(engine)]
        found += [f"netns {n}" for n in netns.list_named(self.prefix + "-") if names.token_of_netns(self.prefix, n)]
        found += [f"firewall {t}" for t in engine.firewall.job_tokens()]
        found += [f"allocation {a.pool}/{a.slot}" for a, _ in all_allocations(self.state)]
        found += [f"record {r.token}" for r in engine.records()]
        return found


@pytest.fixture
def lab(make_ns, sandbox_ns: str, run_prefix: str, tmp_path: Path) -> Iterator[Lab]:
    host, wan = sandbox_ns, make_ns("wan")
    subprocess.run(["ip", "link", "add", "uplink0", "netns", os.path.basename(host), "type", "veth", "peer",
                    "name", "up1", "netns", os.path.basename(wan)], check=True)
    for args in (("addr", "add", f"{HOST4}/24", "dev", "uplink0"), ("addr", "add", f"{OTHER4}/32", "dev", "uplink0"),
                 ("addr", "add", "2001:db8:ff::1/64", "dev", "uplink0", "nodad"), ("link", "set", "uplink0", "up"),
                 ("route", "add", "default", "via", WAN4), ("-6", "route", "add", "default", "via", "2001:db8:ff::2")):
        ip(host, *args)
    for args in (("addr", "add", f"{WAN4}/24", "dev", "up1"),
                 ("addr", "add", "2001:db8:ff::2/64", "dev", "up1", "nodad"), ("link", "set", "up1", "up")):
        ip(wan, *args)
    lab = Lab(host, wan, run_prefix, tmp_path / "state")
    try:
        yield lab
    finally:
        for engine in lab.engines:
            for record in engine.records():
                try:
                    engine.down(record.token)
                except Exception as err:  # keep cleaning; the namespaces go below anyway
                    print(f"cleanup: {err}")
        for name in netns.list_named(run_prefix + "-"):
            if names.token_of_netns(run_prefix, name):
                netns.delete_named(name)
        for engine in lab.engines:
            engine.destroy_base()
            engine.close()


def addr(text: str | None) -> str:
    assert text
    return text.split("/")[0]


def assert_counted(counted: int, wire: int, payload: int, what: str) -> None:
    assert wire >= payload, f"{what}: the wire count saw {wire} bytes of a {payload}-byte payload"
    assert jobtools.same_bytes(counted, wire), f"{what}: counted {counted}, wire {wire}"


BLOCKED = 1.5  # seconds a connection that must fail is given (a SYN retransmit included)


def connects(src_ns: str, dst_ns: str, bind: str, port: int, connect_to: str | None = None,
             timeout: float = 6.0) -> bool:
    """Whether a TCP connection with 100 bytes gets from ``src_ns`` to a listener in ``dst_ns``.

    The generous default is for the successes (they return at once): right after set-up the
    first IPv6 packets forwarded into a fresh veth may wait for neighbour discovery (seen with
    the code before this change too); a connection expected to fail passes ``timeout=BLOCKED``.
    """
    with jobtools.sink(dst_ns, bind, port) as server:
        out = jobtools.send(src_ns, connect_to or bind, port, 100, timeout=timeout)
        if out.returncode != 0:
            return False
        return jobtools.result(server)["bytes"] == 100


# ------------------------------------------------------------------ every path is counted once


@pytest.mark.parametrize("firewall", ["nftables", "iptables"])
def test_inbound_opened_by_the_host_itself_through_the_forwarded_range(lab: Lab, firewall: str) -> None:
    """The old hole: nat_output DNAT keeps oifname "lo" in the host's output hook."""
    engine = lab.engine(LARK_FIREWALL=firewall)
    record = engine.up(JobRequest("1.0", "nat", inbound_ports=2))
    assert record.ports and record.public_ipv4 == HOST4
    port = record.ports[0]
    with jobtools.wire_count(record.netns, f"{lab.prefix}-in", f"tcp dport {port}") as wire_in, \
            jobtools.wire_count(lab.host, f"{lab.prefix}-out", f"tcp sport {port}") as wire_out, \
            jobtools.sink(record.netns, "0.0.0.0", port) as server:
        out = jobtools.send(lab.host, HOST4, port, 2_000_000)  # the host opens it, to its own address
        assert out.returncode == 0, out.stderr
        assert jobtools.result(server)["bytes"] == 2_000_000
        arrived, left = wire_in(), wire_out()
    c = engine.counters(record.token)
    assert_counted(c.bytes_in, arrived, 2_000_000, "host-opened in")
    assert_counted(c.bytes_out, left, 0, "host-opened out (the job's acknowledgements)")


def test_inbound_from_another_namespace_through_the_host(lab: Lab) -> None:
    engine = lab.engine()
    record = engine.up(JobRequest("2.0", "nat", inbound_ports=2))
    assert record.ports
    port = record.ports[1]
    with jobtools.wire_count(record.netns, f"{lab.prefix}-in", f"tcp dport {port}") as wire_in, \
            jobtools.wire_count(lab.wan, f"{lab.prefix}-out", f"tcp sport {port}") as wire_out, \
            jobtools.sink(record.netns, "0.0.0.0", port) as server:
        out = jobtools.send(lab.wan, HOST4, port, 1_500_000)
        assert out.returncode == 0, out.stderr
        assert jobtools.result(server)["bytes"] == 1_500_000
        arrived, left = wire_in(), wire_out()
    c = engine.counters(record.token)
    assert_counted(c.bytes_in, arrived, 1_500_000, "wan-opened in")
    assert_counted(c.bytes_out, left, 0, "wan-opened out")


def test_outbound_to_the_host_itself_where_allowed(lab: Lab) -> None:
    engine = lab.engine(LARK_JOB_HOST_ALLOW="tcp/9100")
    record = engine.up(JobRequest("3.0", "nat"))
    gateway = addr(record.host_ipv4)
    with jobtools.wire_count(lab.host, f"{lab.prefix}-out", "tcp dport 9100") as wire_out, \
            jobtools.wire_count(record.netns, f"{lab.prefix}-in", "tcp sport 9100") as wire_in, \
            jobtools.sink(lab.host, gateway, 9100) as server:
        out = jobtools.send(record.netns, gateway, 9100, 1_200_000)
        assert out.returncode == 0, out.stderr
        assert jobtools.result(server)["bytes"] == 1_200_000
        left, arrived = wire_out(), wire_in()
    c = engine.counters(record.token)
    assert_counted(c.bytes_out, left, 1_200_000, "to the host, out")
    assert_counted(c.bytes_in, arrived, 0, "to the host, in")


@pytest.mark.parametrize("family", [4, 6])
def test_outbound_beyond_the_host(lab: Lab, family: int) -> None:
    engine = lab.engine()
    record = engine.up(JobRequest("4.0", "nat"))
    dst = WAN4 if family == 4 else "2001:db8:ff::2"
    with jobtools.wire_count(lab.wan, f"{lab.prefix}-out", "tcp dport 9200") as wire_out, \
            jobtools.wire_count(record.netns, f"{lab.prefix}-in", "tcp sport 9200") as wire_in, \
            jobtools.sink(lab.wan, dst, 9200) as server:
        out = jobtools.send(record.netns, dst, 9200, 1_000_000)
        assert out.returncode == 0, out.stderr
        got = jobtools.result(server)
        left, arrived = wire_out(), wire_in()
    assert got["bytes"] == 1_000_000 and got["peer"] == (HOST4 if family == 4 else "2001:db8:ff::1")
    c = engine.counters(record.token)
    assert_counted(c.bytes_out, left, 1_000_000, "beyond, out")
    assert_counted(c.bytes_in, arrived, 0, "beyond, in")


# ------------------------------------------------------------------ isolation


def test_by_default_a_job_reaches_neither_the_host_nor_another_job(lab: Lab) -> None:
    engine = lab.engine()
    job, other = engine.up(JobRequest("5.0", "nat")), engine.up(JobRequest("5.1", "nat", inbound_ports=1))
    assert other.ports
    # controls: each listener is reachable, from the wan or from the host itself
    assert connects(lab.wan, lab.host, HOST4, 9301)
    assert connects(lab.host, lab.host, OTHER4, 9302)
    assert connects(lab.host, other.netns, addr(other.ipv4), 9303)
    # the host's services, on the job's own gateway, another job's gateway, any other host address
    for i, target in enumerate((addr(job.host_ipv4), addr(job.host_ipv6), addr(other.host_ipv4), HOST4, OTHER4)):
        assert not connects(job.netns, lab.host, target, 9310 + i, timeout=BLOCKED), target
    # another job, directly (both families) and through its forwarded port on the host's address
    assert not connects(job.netns, other.netns, addr(other.ipv4), 9320, timeout=BLOCKED)
    assert not connects(job.netns, other.netns, addr(other.ipv6), 9321, timeout=BLOCKED)
    assert not connects(job.netns, other.netns, "0.0.0.0", other.ports[0], connect_to=HOST4, timeout=BLOCKED)
    # what the host opens to a job still works (replies pass as established), forwarded or direct
    assert connects(lab.host, other.netns, "0.0.0.0", other.ports[0], connect_to=HOST4)
    assert connects(lab.host, job.netns, addr(job.ipv6), 9322)
    # and the job still reaches the world beyond the host
    assert connects(job.netns, lab.wan, WAN4, 9323)


def test_host_allow_opens_exactly_the_listed_port(lab: Lab) -> None:
    engine = lab.engine(LARK_JOB_HOST_ALLOW="tcp/9400, udp/9401, 192.0.2.77/32 tcp/9402-9403")
    job = engine.up(JobRequest("6.0", "nat"))
    gateway = addr(job.host_ipv4)
    assert connects(job.netns, lab.host, gateway, 9400)
    assert connects(job.netns, lab.host, HOST4, 9400)
    assert connects(job.netns, lab.host, addr(job.host_ipv6), 9400)
    assert not connects(job.netns, lab.host, gateway, 9404, timeout=BLOCKED)  # the next port stays closed
    assert connects(job.netns, lab.host, OTHER4, 9403)  # CIDR + port range: that address only
    assert not connects(job.netns, lab.host, HOST4, 9403, timeout=BLOCKED)


def test_job_to_job_allow(lab: Lab) -> None:
    engine = lab.engine(LARK_JOB_TO_JOB_ALLOW="True")
    a, b = engine.up(JobRequest("7.0", "nat")), engine.up(JobRequest("7.1", "nat", inbound_ports=1))
    assert b.ports
    assert connects(a.netns, b.netns, addr(b.ipv4), 9500)
    assert connects(b.netns, a.netns, addr(a.ipv6), 9501)
    assert connects(a.netns, b.netns, "0.0.0.0", b.ports[0], connect_to=HOST4)  # via its forwarded port
    assert not connects(a.netns, lab.host, addr(a.host_ipv4), 9502, timeout=BLOCKED)  # the host stays closed
    # a CIDR list opens only the jobs inside it
    narrow = lab.engine(LARK_JOB_TO_JOB_ALLOW=f"{addr(b.ipv4)}/32")
    assert narrow.restore_host_rules() == []  # the table is intact: nothing to do
    assert len(narrow.restore_host_rules(force=True)) == 2  # as a broker's start: its knobs rule now
    assert connects(a.netns, b.netns, addr(b.ipv4), 9503)
    assert not connects(b.netns, a.netns, addr(a.ipv4), 9504, timeout=BLOCKED)


def test_a_later_engine_keeps_the_node_isolation(lab: Lab) -> None:
    """The broker's knobs rule the node: ``lark run -D LARK_ISOLATE_JOBS=False`` (another engine)
    must not open the node's jobs to the host as a side effect."""
    broker = lab.engine()
    broker.up(JobRequest("12.0", "nat"))
    admin = lab.engine(LARK_ISOLATE_JOBS="False")
    job = admin.up(JobRequest("12.1", "nat"))
    assert not connects(job.netns, lab.host, addr(job.host_ipv4), 9900, timeout=BLOCKED)
    admin.restore_host_rules(force=True)  # what a broker started with these knobs does
    assert connects(job.netns, lab.host, addr(job.host_ipv4), 9901)


# ------------------------------------------------------------------ a flushed host ruleset


FEEDER = r"""
import socket, sys
n, per_job = int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9600))
s.listen(64)
print('ready', flush=True)
conns = [s.accept()[0] for _ in range(n)]
half = b'y' * (per_job // 2)
for c in conns:
    c.sendall(half)
print('half', flush=True)
sys.stdin.readline()  # the test flushes and restores meanwhile
for c in conns:
    c.sendall(b'y' * (per_job - len(half)))
    c.close()
print('done', flush=True)
"""

READER = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 9600), timeout=30)
total = 0
while chunk := s.recv(1 << 16):
    total += len(chunk)
print(total, flush=True)
"""


def test_a_flushed_host_ruleset_is_restored_and_counting_continues(lab: Lab) -> None:
    engine = lab.engine()
    jobs = [engine.up(JobRequest(f"8.{i}", "nat")) for i in range(10)]
    per_job = 1_000_000
    feeder = subprocess.Popen(jobtools.in_ns(lab.wan, [sys.executable, "-c", FEEDER, WAN4, "10", str(per_job)]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    readers: list[subprocess.Popen[str]] = []
    try:
        with ExitStack() as stack:
            wires = [stack.enter_context(jobtools.wire_count(r.netns, f"{lab.prefix}-in", "tcp sport 9600"))
                     for r in jobs]
            assert feeder.stdin is not None and feeder.stdout is not None
            assert feeder.stdout.readline().strip() == "ready"
            readers = [subprocess.Popen(jobtools.in_ns(r.netns, [sys.executable, "-c", READER, WAN4]),
                                        stdout=subprocess.PIPE, text=True) for r in jobs]
            assert feeder.stdout.readline().strip() == "half"  # every job is mid-transfer
            subprocess.run(jobtools.in_ns(lab.host, ["nft", "flush", "ruleset"]), check=True)  # the sandbox's only
            assert engine.firewall.job_tokens() == set()
            # control: without the restored masquerade a new connection cannot get out
            assert not connects(jobs[0].netns, lab.wan, WAN4, 9601, timeout=BLOCKED)
            # a broker that started after the flush (its engine never built the table) notices too
            assert sorted(lab.engine().restore_host_rules()) == sorted(r.token for r in jobs)
            assert engine.restore_host_rules() == []  # cheap and idle once everything is back
            assert len(engine.restore_host_rules(force=True)) == len(jobs)  # what a broker start may do
            feeder.stdin.write("go\n")
            feeder.stdin.flush()
            assert feeder.stdout.readline().strip() == "done"
            for reader in readers:
                out, _ = reader.communicate(timeout=30)
                assert int(out.strip()) == per_job
            arrived = [wire() for wire in wires]
        counted = engine.all_counters()
        for record, wire in zip(jobs, arrived, strict=True):
            assert_counted(counted[record.token].bytes_in, wire, per_job, f"job {record.job_id} in")
        for record in jobs[:3]:  # new connections work again: NAT is back
            assert connects(record.netns, lab.wan, WAN4, 9602)
    finally:
        for proc in (feeder, *readers):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


# ------------------------------------------------------------------ a killed wrapper


def wait_unshared(source: str) -> None:
    """Until the holder runs in its own namespace (``unshare`` switches before it execs)."""
    own = netns.inode("/proc/self/ns/net")
    for _ in range(100_000):
        try:
            if netns.inode(source) != own:
                return
        except NotFound:
            pass
    raise AssertionError(f"{source} never left the test's namespace")


def test_counters_of_a_killed_wrapper_reach_the_sweep(lab: Lab) -> None:
    engine = lab.engine()
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])  # plays the wrapper in its namespace
    try:
        source = f"/proc/{holder.pid}/ns/net"
        wait_unshared(source)
        record = engine.up(JobRequest("9.0", "nat"), netns_path=source, holder_pid=holder.pid)
        assert record.netns == str(netns.NETNS_RUN_DIR / names.netns_name(lab.prefix, record.token))
        with jobtools.wire_count(lab.wan, f"{lab.prefix}-out", "tcp dport 9700") as wire_out, \
                jobtools.sink(lab.wan, WAN4, 9700) as server:
            out = jobtools.send(record.netns, WAN4, 9700, 800_000)
            assert out.returncode == 0, out.stderr
            assert jobtools.result(server)["bytes"] == 800_000
            left = wire_out()
        assert engine.sweep().empty()  # alive: nothing to do
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # The namespace has no process left; the pin keeps it, with the job's counters.
    assert os.path.exists(record.netns)
    finals: list[tuple[JobRecord, JobCounters | None]] = []

    def boom(rec: JobRecord, counters: JobCounters | None) -> None:
        finals.append((rec, counters))
        raise RuntimeError("a failing callback must not stop the sweep")

    report = engine.sweep(on_final=boom)
    assert report.removed_jobs == [record.token]
    assert [r.token for r, _ in finals] == [record.token]
    counters = finals[0][1]
    assert counters is not None
    assert_counted(counters.bytes_out, left, 800_000, "final out")
    assert lab.leftovers(engine) == []


def test_final_counters_before_down_and_liveness_without_the_holder(lab: Lab) -> None:
    engine = lab.engine()
    holder = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    try:
        source = f"/proc/{holder.pid}/ns/net"
        wait_unshared(source)
        record = engine.up(JobRequest("10.0", "nat"), netns_path=source, holder_pid=holder.pid)
        assert engine.is_alive(engine.find(record.token))
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # the pin alone does not keep the job alive
    assert not engine.is_alive(engine.find(record.token))
    final = engine.final_counters(record.token)
    assert final is not None and final.bytes_in < 2000  # nothing but the link's own chatter
    assert engine.down(record.token)
    assert engine.final_counters(record.token) is None
    assert lab.leftovers(engine) == []


# ------------------------------------------------------------------ repairs and leftovers


def test_rules_lost_inside_a_job_namespace_come_back_counting_on(lab: Lab) -> None:
    engine = lab.engine()
    record = engine.up(JobRequest("11.0", "nat"))
    with jobtools.sink(lab.wan, WAN4, 9800) as server:
        assert jobtools.send(record.netns, WAN4, 9800, 300_000).returncode == 0
        assert jobtools.result(server)["bytes"] == 300_000
    last = engine.all_counters()[record.token]  # the periodic read the repair counts on from
    assert last.bytes_out >= 300_000
    assert engine.check() == []
    subprocess.run(jobtools.in_ns(record.netns, ["nft", "flush", "ruleset"]), check=True)
    assert any("inside the job's namespace are missing" in p for p in engine.check())
    restored = engine.all_counters()[record.token]
    assert restored.bytes_out == last.bytes_out
    assert engine.check() == []
    with jobtools.wire_count(lab.wan, f"{lab.prefix}-out", "tcp dport 9801") as wire_out, \
            jobtools.sink(lab.wan, WAN4, 9801) as server:
        assert jobtools.send(record.netns, WAN4, 9801, 200_000).returncode == 0
        assert jobtools.result(server)["bytes"] == 200_000
        left = wire_out()
    assert_counted(engine.counters(record.token).bytes_out - last.bytes_out, left, 200_000, "after the repair")


def test_sweep_removes_an_orphan_pin(lab: Lab, make_ns) -> None:
    engine = lab.engine()
    victim = make_ns("pinned")
    name = names.netns_name(lab.prefix, "zz9orp")  # a token no record has: a crashed broker's pin
    netns.pin(victim, name)
    assert name in netns.list_named(lab.prefix + "-")
    assert f"orphan namespace {name} (no record)" in engine.check()
    assert name in engine.sweep().removed_netns
    assert name not in netns.list_named(lab.prefix + "-")
    assert os.path.exists(victim)  # only the pin went, not the namespace it pinned
