"""Lark on a real HTCondor execute node: jobs get their own accounted networks (issue: execute-node).

The pool runs in its own network namespace (the "execute host"); a ``wan`` namespace behind an
uplink plays the outside world, and a bridge in the pool namespace plays the site LAN. Jobs are
submitted by ``larkuser`` with condor_submit, exactly as users do.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lark import netns
from tests.pool.harness import RUNNING, JobHeld, Pool

pytestmark = pytest.mark.pool
REPO = Path(__file__).resolve().parents[2]
WAN_ADDR = "203.0.113.2"
CAMPUS_ADDR = "203.0.113.2"  # LARK_TRAFFIC_CLASS_CAMPUS = 203.0.113.0/25
OFFCAMPUS_ADDR = "203.0.113.200"

JOB = r"""#!/usr/bin/python3
# Reports what the job sees of its network, then sends a payload to a server and reads the reply.
import json, os, socket, sys, time
dst, port, nbytes, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
info = {"netns": os.readlink("/proc/self/ns/net"),
        "ifaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]),
        "env": {k: v for k, v in os.environ.items() if k.startswith("LARK_")}}
try:
    import subprocess
    info["ip_link_down"] = subprocess.run(["ip", "link", "set", "lark0", "down"], capture_output=True,
                                          text=True).returncode
except Exception as err:
    info["ip_link_down"] = str(err)
if dst != "-":
    try:
        t0 = time.monotonic()
        s = socket.create_connection((dst, port), timeout=10)
        block = b"x" * 65536
        left = nbytes
        while left:
            left -= s.send(block[:min(left, len(block))])
        s.shutdown(socket.SHUT_WR)
        info["reply"] = s.recv(100).decode()
        info["seconds"] = time.monotonic() - t0
    except OSError as err:
        info["error"] = str(err)
time.sleep(hold)
print(json.dumps(info))
"""


@dataclass
class Sink:
    """A TCP server in a namespace of the test's own; records (peer, bytes) per connection."""

    netns_path: str
    address: str
    port: int = 0
    received: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.address, self.port))
            s.listen(64)
            return s

        self.sock = netns.call_in(self.netns_path, make)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn, peer[0]), daemon=True).start()

    def _one(self, conn: socket.socket, peer: str) -> None:
        total = 0
        with conn:
            conn.settimeout(60)
            try:
                while chunk := conn.recv(1 << 16):
                    total += len(chunk)
                conn.sendall(b"ok")
            except OSError:
                pass
        self.received.append((peer, total))

    def close(self) -> None:
        self.sock.close()


@dataclass
class LarkPool:
    pool: Pool
    prefix: str
    wan: str
    sinks: list[Sink]

    def sink(self, address: str = WAN_ADDR) -> Sink:
        sink = Sink(self.wan, address)
        self.sinks.append(sink)
        return sink

    def submit_job(self, args: str, extra: str = "", transfer: bool = False, count: int = 1) -> int:
        files = {"job.py": JOB}
        transfer_lines = ("should_transfer_files = YES\nwhen_to_transfer_output = ON_EXIT\n" if transfer
                          else "should_transfer_files = NO\n")
        submit = (f"executable = job.py\narguments = \"{args}\"\noutput = out.$(Process).json\n"
                  f"error = err.$(Process).txt\nlog = job.log\n{transfer_lines}{extra}\nqueue {count}\n")
        return self.pool.submit(submit, files=files)

    def output(self, cluster: int, proc: int = 0) -> dict[str, object]:
        ad = self.pool.history(cluster, ["Iwd"])[0]
        iwd = self.pool.root / ad["Iwd"].lstrip("/")
        text = (iwd / f"out.{proc}.json").read_text()
        if not text.strip():
            err = (iwd / f"err.{proc}.txt").read_text()
            raise AssertionError(f"job {cluster}.{proc} printed nothing; stderr:\n{err}\n"
                                 f"LarkNetdLog:\n{_netd_log(self.pool)}")
        return json.loads(text)

    def kernel_objects(self) -> list[str]:
        """Lark's objects in the execute host's namespace: job interfaces and firewall job chains."""
        out = subprocess.run(["ip", "-n", self.pool.netns_name, "-o", "link"], capture_output=True, text=True,
                             check=True).stdout
        found = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
                 if line.split(":")[1].strip().startswith(self.prefix + "h")]
        rules = subprocess.run(["nsenter", f"--net={self.pool.netns_path}", "nft", "list", "table", "inet",
                                self.prefix], capture_output=True, text=True).stdout
        found += [line.strip() for line in rules.splitlines() if line.strip().startswith("chain job-")]
        state = self.pool.root / "var/lib/lark/jobs"
        found += [p.name for p in state.glob("*.json")] if state.is_dir() else []
        return found

    def wait_no_objects(self, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := self.kernel_objects()) and time.monotonic() < deadline:
            time.sleep(0.3)
        return left

    def broker_pid(self) -> int:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if any(b"lark-netd" in part for part in cmd[:2]) and self.pool._belongs(int(entry)):
                    return int(entry)
            except OSError:
                continue
        raise AssertionError("lark-netd is not running")


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


@pytest.fixture(scope="module")
def lark_pool(pool: Pool, run_prefix: str) -> Iterator[LarkPool]:
    ns = pool.netns_name
    wan_name = f"{run_prefix}-pwan"
    wan = str(netns.create_named(wan_name))
    try:
        subprocess.run(["ip", "link", "add", "uplink0", "netns", ns, "type", "veth", "peer", "name", "up1",
                        "netns", wan_name], check=True)
        _ip(ns, "addr", "add", "203.0.113.1/24", "dev", "uplink0")
        _ip(ns, "link", "set", "uplink0", "up")
        _ip(ns, "route", "add", "default", "via", WAN_ADDR)
        for addr in (f"{WAN_ADDR}/24", f"{OFFCAMPUS_ADDR}/24"):
            _ip(wan_name, "addr", "add", addr, "dev", "up1")
        _ip(wan_name, "link", "set", "up1", "up")
        _ip(wan_name, "link", "set", "lo", "up")
        _ip(ns, "link", "add", "br-lark", "type", "bridge")
        _ip(ns, "addr", "add", "198.51.100.1/24", "dev", "br-lark")
        _ip(ns, "link", "set", "br-lark", "up")

        for name in ("50-lark-execute.conf", "60-lark-submit.conf"):
            pool.add_config(name, (REPO / "condor_config.d" / name).read_text())
        pool.add_config("70-lark-test.conf", f"""
LARK_BIN = /usr/local/bin
LARK_NAME_PREFIX = {run_prefix}
LARK_NETWORK_TYPES = nat, bridge, none
LARK_BRIDGE = br-lark
LARK_BRIDGE_IPV4_POOL = 198.51.100.0/24 198.51.100.10-198.51.100.50
LARK_BRIDGE_IPV4_GATEWAY = 198.51.100.1
LARK_TRAFFIC_CLASSES = campus, offcampus
LARK_TRAFFIC_CLASS_CAMPUS = 203.0.113.0/25
LARK_TRAFFIC_CLASS_OFFCAMPUS = 0.0.0.0/0, ::/0
LARK_MAX_BANDWIDTH_MBIT = 1000
LARK_INBOUND_PORT_RANGE = 40000-40003
LARK_MAX_INBOUND_PORTS = 10
LARK_SWEEP_INTERVAL = 2
LARK_ACCOUNTING_INTERVAL = 2
MASTER_BACKOFF_CONSTANT = 1
NUM_CPUS = 8
MASTER_NEW_BINARY_RESTART = NEVER
""")
        pool.reconfig()  # the master starts LARK_NETD from DAEMON_LIST
        pool.restart_daemon("startd")  # NO_JOB_NETWORKING is only fully applied at startd start
        lp = LarkPool(pool, run_prefix, wan, [])
        deadline = time.monotonic() + 30
        while not (pool.root / "run/lark/netd.sock").exists():
            assert time.monotonic() < deadline, "lark-netd did not start:\n" + _netd_log(pool)
            time.sleep(0.2)
        yield lp
    finally:
        for name in ("70-lark-test.conf", "60-lark-submit.conf", "50-lark-execute.conf"):
            pool.remove_config(name)
        try:
            pool.reconfig()
        except Exception as err:  # the pool's own teardown follows anyway
            print(f"reconfig after Lark tests failed: {err}")
        netns.delete_named(wan_name)


def _netd_log(pool: Pool) -> str:
    path = pool.root / "var/log/condor/LarkNetdLog"
    return path.read_text()[-3000:] if path.exists() else "(no LarkNetdLog)"


def history_attr(lp: LarkPool, cluster: int, *names: str) -> dict[str, object]:
    return lp.pool.history(cluster, names)[0]


# ------------------------------------------------------------------ accounting end to end


@pytest.mark.parametrize("transfer", [False, True], ids=["vanilla", "file-transfer"])
def test_job_has_its_own_network_and_its_bytes_reach_history(lark_pool: LarkPool, transfer: bool) -> None:
    sink = lark_pool.sink(OFFCAMPUS_ADDR)
    payload = 2_000_000
    cluster = lark_pool.submit_job(f"{OFFCAMPUS_ADDR} {sink.port} {payload} 0", transfer=transfer)
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    pool_ns = f"net:[{os.stat(lark_pool.pool.netns_path).st_ino}]"
    assert out["netns"] != pool_ns
    assert out.get("reply") == "ok", out
    assert out["ifaces"] == ["lark0", "lo"]
    assert out["env"]["LARK_NETWORK_TYPE"] == "nat"
    assert sink.received == [("203.0.113.1", payload)]  # masqueraded behind the execute host
    ad = history_attr(lark_pool, cluster, "LarkBytesIn", "LarkBytesOut", "LarkBytesOutOffcampus",
                      "LarkBytesOutCampus", "LarkNetworkType", "LarkIPv4Address", "ExitCode")
    assert ad["ExitCode"] == 0
    assert ad["LarkNetworkType"] == "nat"
    assert payload <= ad["LarkBytesOut"] <= payload * 1.07 + 4000
    assert payload <= ad["LarkBytesOutOffcampus"] <= payload * 1.07 + 4000
    assert ad["LarkBytesOutCampus"] == 0
    assert 0 < ad["LarkBytesIn"] < 200_000
    assert lark_pool.wait_no_objects() == []


def test_none_type_has_only_loopback(lark_pool: LarkPool) -> None:
    cluster = lark_pool.submit_job(f"{WAN_ADDR} 9 10 0", extra='+LarkNetworkType = "none"')
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    assert out["ifaces"] == ["lo"]
    assert "error" in out
    assert lark_pool.pool.history(cluster, ["LarkNetworkType"])[0]["LarkNetworkType"] == "none"


def test_bridge_type_is_on_the_site_lan(lark_pool: LarkPool) -> None:
    sink = Sink(lark_pool.pool.netns_path, "198.51.100.1")
    lark_pool.sinks.append(sink)
    cluster = lark_pool.submit_job(f"198.51.100.1 {sink.port} 100000 0", extra='+LarkNetworkType = "bridge"')
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    assert out.get("reply") == "ok", out
    address = out["env"]["LARK_IPV4_ADDRESS"]
    assert address.startswith("198.51.100.")
    assert sink.received == [(address, 100000)]
    ad = history_attr(lark_pool, cluster, "LarkBytesOut", "LarkIPv4Address")
    assert ad["LarkIPv4Address"] == address
    assert 100000 <= ad["LarkBytesOut"] <= 110000


def test_bandwidth_limited_job_stays_under_its_cap(lark_pool: LarkPool) -> None:
    sink = lark_pool.sink()
    cap = 20
    cluster = lark_pool.submit_job(f"{WAN_ADDR} {sink.port} 5000000 0", extra=f"+LarkBandwidthMbit = {cap}")
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    assert out.get("reply") == "ok", out
    mbit = 5_000_000 * 8 / float(out["seconds"]) / 1e6
    assert 0 < mbit <= cap * 1.15, mbit  # generous: the overshoot figure is the benchmark's


# ------------------------------------------------------------------ bad requests


def test_invalid_attribute_is_held_by_the_prepare_hook(lark_pool: LarkPool) -> None:
    cluster = lark_pool.submit_job(f"{WAN_ADDR} 9 10 0", extra='+LarkNetworkType = "wifi"')
    with pytest.raises(JobHeld) as info:
        lark_pool.pool.wait(cluster, timeout=120)
    reason = info.value.ads[0]["HoldReason"]
    assert "LarkNetworkType" in reason and "unknown network type" in reason, reason
    lark_pool.pool.run(["condor_rm", str(cluster)])
    assert lark_pool.wait_no_objects() == []


def test_setup_failure_in_the_broker_holds_the_job_with_its_reason(lark_pool: LarkPool) -> None:
    # 8 ports pass the hook (LARK_MAX_INBOUND_PORTS = 10) but the node's range has only 4
    cluster = lark_pool.submit_job(f"{WAN_ADDR} 9 10 0", extra="+LarkInboundPorts = 8")
    with pytest.raises(JobHeld) as info:
        lark_pool.pool.wait(cluster, timeout=120)
    ad = info.value.ads[0]
    assert "Lark could not set up the job's network" in ad["HoldReason"], ad
    assert "cannot reserve 8 ports in inbound port range 40000-40003" in ad["HoldReason"], ad
    lark_pool.pool.run(["condor_rm", str(cluster)])
    assert lark_pool.wait_no_objects() == []


# ------------------------------------------------------------------ robustness and isolation


def test_broker_killed_while_jobs_run_then_restarted(lark_pool: LarkPool) -> None:
    sink = lark_pool.sink()
    payload = 300_000
    cluster = lark_pool.submit_job(f"{WAN_ADDR} {sink.port} {payload} 12", count=4)
    lark_pool.pool.wait_status(cluster, RUNNING, timeout=120)
    time.sleep(1.5)  # every job has sent its payload and now sleeps
    os.kill(lark_pool.broker_pid(), signal.SIGKILL)
    ads = lark_pool.pool.wait(cluster, timeout=180)
    assert len(ads) == 4
    assert sorted(b for _, b in sink.received) == [payload] * 4
    for ad in lark_pool.pool.history(cluster, ["ProcId", "LarkBytesOut", "ExitCode"]):
        assert ad["ExitCode"] == 0
        assert payload <= ad["LarkBytesOut"] <= payload * 1.07 + 4000, ad
    assert lark_pool.broker_pid()  # the master restarted it
    assert lark_pool.wait_no_objects() == []


def test_condor_rm_of_a_running_job_leaves_nothing(lark_pool: LarkPool) -> None:
    cluster = lark_pool.submit_job("- 0 0 300")
    lark_pool.pool.wait_status(cluster, RUNNING, timeout=120)
    assert lark_pool.wait_no_objects(timeout=0) != []
    lark_pool.pool.run(["condor_rm", str(cluster)])
    assert lark_pool.wait_no_objects(timeout=10) == []  # within a few sweep intervals (2 s here)


def test_a_job_cannot_change_its_network_and_outsiders_are_refused(lark_pool: LarkPool) -> None:
    cluster = lark_pool.submit_job("- 0 0 0")
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    assert out["ip_link_down"] != 0  # no CAP_NET_ADMIN over its own namespace
    probe = ("import json, socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/lark/netd.sock'); "
             "s.sendall(b'{\"op\": \"setup\"}\\n'); print(s.recv(4096).decode())")
    reply = json.loads(lark_pool.pool.run(["python3", "-c", probe], user="larkuser").stdout)
    assert reply["ok"] is False and "not a job wrapper" in reply["error"]
    garbage = lark_pool.pool.run(["python3", "-c", probe.replace('{\\"op\\": \\"setup\\"}', "garbage")],
                                 user="larkuser").stdout
    assert json.loads(garbage)["ok"] is False
    assert lark_pool.broker_pid()


def test_slots_advertise_what_the_node_offers(lark_pool: LarkPool) -> None:
    slots = lark_pool.pool.status('MyType == "Machine"', ["HasLark", "LarkNetworkTypes", "LarkMaxBandwidthMbit"])
    assert slots and all(s["HasLark"] is True for s in slots)
    assert all(s["LarkNetworkTypes"].replace(" ", "") == "nat,bridge,none" for s in slots)
    assert all(s["LarkMaxBandwidthMbit"] == 1000 for s in slots)
