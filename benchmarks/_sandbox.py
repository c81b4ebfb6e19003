"""Shared plumbing for the benchmark scripts: sandbox namespaces, Lark engines, traffic tools, stats.

Every kernel object a benchmark creates lives in network namespaces it created itself:

* sandbox namespaces are ``larkb<xy>-<role>`` (``<xy>``: 2 random characters per run);
* Lark's own objects use ``LARK_NAME_PREFIX = lb<xy>`` (the knob allows at most 6 characters, and
  ``lb..`` can never match a test run's ``lark..`` prefix, so a concurrent test sweep leaves them
  alone): job namespaces ``/run/netns/lb<xy>-<token>``, tables and links inside the sandbox host.

The real host's namespace is never entered or changed. :class:`Sandbox` removes everything in
reverse order in ``close()`` (processes by PID, Lark jobs, Lark namespaces, sandbox namespaces,
temporary files), which the scripts call from ``finally``; SIGTERM is turned into SystemExit so
that ``finally`` runs, and a second Ctrl-C during cleanup is ignored.
"""

from __future__ import annotations

import ipaddress
import math
import os
import random
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lark import names, netns
from lark.config import load_config
from lark.engine import Engine
from tests.support import iperf3_json, wait_listening

ROOT = Path(__file__).resolve().parent.parent
RUN = "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(2))
SB = f"larkb{RUN}"  # sandbox namespaces and links
LARK_PREFIX = f"lb{RUN}"  # LARK_NAME_PREFIX of the engines under test

# The sandbox "wan": TEST-NET-3 and the documentation IPv6 prefix (never 192.0.2.0/24).
UPLINK_HOST4, UPLINK_WAN4, UPLINK_LEN4 = "203.0.113.1", "203.0.113.2", 24
UPLINK_HOST6, UPLINK_WAN6, UPLINK_LEN6 = "2001:db8:ff::1", "2001:db8:ff::2", 64
UPLINK_HOST_IF, UPLINK_WAN_IF = "uplink0", "up1"


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (they create network namespaces)")


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP -> SystemExit in the main thread, so every ``finally`` cleanup runs."""

    def bye(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGHUP, bye)


def ns_name(path: str) -> str:
    return os.path.basename(path)


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "-n", ns_name(ns), *args], check=check, capture_output=True, text=True)


def nft(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns_name(ns), "nft", "-f", "-"], input=script, text=True, check=True,
                   capture_output=True)


def in_ns(ns: str, argv: Sequence[str], cpu: int | None = None) -> list[str]:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []
    return ["nsenter", f"--net={ns}", *pin, *argv]


@dataclass
class Uplinked:
    """A sandbox "host" namespace with an uplink veth to a "wan" namespace."""

    host: str
    wan: str


class Sandbox:
    def __init__(self, tmp_base: str | None = None) -> None:
        """``tmp_base``: where the temporary directory (Lark state dirs, compiled tools) goes."""
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.engines: list[Engine] = []
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{SB}-", dir=tmp_base))
        self.closers: list[Callable[[], None]] = []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ building

    def ns(self, role: str, forwarding: bool = False) -> str:
        """A new namespace ``larkb<xy>-<role>`` with lo up; returns its path."""
        name = f"{SB}-{role}"
        path = str(netns.create_named(name))
        self.namespaces.append(name)
        ip(path, "link", "set", "lo", "up")
        if forwarding:
            self.sysctl(path, "net.ipv4.ip_forward", "1")
            self.sysctl(path, "net.ipv6.conf.all.forwarding", "1")
        return path

    @staticmethod
    def sysctl(ns: str, knob: str, value: str) -> None:
        from lark.netlink import write_sysctl

        netns.call_in(ns, lambda: write_sysctl(knob, value))

    @staticmethod
    def veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        subprocess.run(["ip", "link", "add", name_a, "netns", ns_name(ns_a), "type", "veth", "peer", "name", name_b,
                        "netns", ns_name(ns_b)], check=True, capture_output=True, text=True)

    def uplinked(self, tag: str = "") -> Uplinked:
        """host <-> wan over ``uplink0``/``up1``: 203.0.113.1/.2 and 2001:db8:ff::1/::2, forwarding on."""
        host = self.ns(f"host{tag}", forwarding=True)
        wan = self.ns(f"wan{tag}")
        self.veth(host, UPLINK_HOST_IF, wan, UPLINK_WAN_IF)
        ip(host, "addr", "add", f"{UPLINK_HOST4}/{UPLINK_LEN4}", "dev", UPLINK_HOST_IF)
        ip(host, "addr", "add", f"{UPLINK_HOST6}/{UPLINK_LEN6}", "dev", UPLINK_HOST_IF, "nodad")
        ip(host, "link", "set", UPLINK_HOST_IF, "up")
        ip(host, "route", "add", "default", "via", UPLINK_WAN4)
        ip(host, "-6", "route", "add", "default", "via", UPLINK_WAN6)
        ip(wan, "addr", "add", f"{UPLINK_WAN4}/{UPLINK_LEN4}", "dev", UPLINK_WAN_IF)
        ip(wan, "addr", "add", f"{UPLINK_WAN6}/{UPLINK_LEN6}", "dev", UPLINK_WAN_IF, "nodad")
        ip(wan, "link", "set", UPLINK_WAN_IF, "up")
        return Uplinked(host, wan)

    def engine(self, host: str, firewall: str = "nftables", **knobs: str) -> Engine:
        """A Lark engine on ``host`` with its own state directory and the run's prefix."""
        overrides = {
            "LARK_NAME_PREFIX": LARK_PREFIX,
            "LARK_STATE_DIR": str(self.tmp / f"state{len(self.engines)}"),
            "LARK_NETWORK_TYPES": "nat, none",
            "LARK_FIREWALL": firewall,
            **knobs,
        }
        engine = Engine(load_config([], overrides), host_netns=host)
        self.engines.append(engine)
        return engine

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(list(argv), text=True, **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def reap(self, proc: subprocess.Popen[str]) -> None:
        """End a process this sandbox started (by its PID) and forget it."""
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.procs:
            self.procs.remove(proc)

    # ------------------------------------------------------------ cleanup

    def close(self) -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop cleanup
        try:
            for proc in list(self.procs):
                self.reap(proc)
            for closer in reversed(self.closers):
                _quiet(closer)
            for engine in self.engines:
                for record in engine.records():
                    _quiet(lambda e=engine, r=record: e.down(r.token))
                _quiet(engine.destroy_base)
                _quiet(engine.close)
            for name in netns.list_named(LARK_PREFIX + "-"):
                if names.token_of_netns(LARK_PREFIX, name):
                    _quiet(lambda n=name: netns.delete_named(n))
            for name in reversed(self.namespaces):
                _quiet(lambda n=name: netns.delete_named(n))
            self.namespaces.clear()
            shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)


def _quiet(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - cleanup goes on whatever fails
        print(f"cleanup: {err}", file=sys.stderr)


# ---------------------------------------------------------------- traffic


def iperf3(sandbox: Sandbox, server_ns: str, server_addr: str, client_ns: str, seconds: float,
           reverse: bool = False, extra: Sequence[str] = (), port: int = 5201) -> dict[str, object]:
    """One iperf3 run (server CPU1, client CPU0, as in docs/baselines.md §0); returns the client's JSON."""
    server = sandbox.popen(in_ns(server_ns, ["iperf3", "-s", "-1", "-B", server_addr, "-p", str(port)], cpu=1),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(server_ns, port)
        argv = ["iperf3", "-c", server_addr, "-p", str(port), "-t", str(seconds), "-J", *extra]
        if reverse:
            argv.append("-R")
        out = subprocess.run(in_ns(client_ns, argv, cpu=0), capture_output=True, text=True, timeout=seconds + 30)
        return iperf3_json(out.stdout, out.stderr)
    finally:
        sandbox.reap(server)


BLASTER_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* udpblast DST PORT SECONDS [PAYLOAD] [BATCH]: connected UDP socket, sendmmsg in batches. */
int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s DST PORT SECONDS [PAYLOAD] [BATCH]\n", argv[0]); return 2; }
    double secs = atof(argv[3]);
    int len = argc > 4 ? atoi(argv[4]) : 64, batch = argc > 5 ? atoi(argv[5]) : 64;
    if (batch > 1024) batch = 1024;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa; memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET; sa.sin_port = htons(atoi(argv[2]));
    if (fd < 0 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 || connect(fd, (void *)&sa, sizeof sa)) {
        perror("socket"); return 1;
    }
    int sndbuf = 4 << 20; setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    static char buf[9000]; memset(buf, 'x', sizeof buf);
    static struct mmsghdr msgs[1024]; static struct iovec iov[1024];
    for (int i = 0; i < batch; i++) {
        iov[i].iov_base = buf; iov[i].iov_len = len;
        msgs[i].msg_hdr.msg_iov = &iov[i]; msgs[i].msg_hdr.msg_iovlen = 1;
    }
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long long sent = 0, calls = 0, errs = 0;
    for (;;) {
        int n = sendmmsg(fd, msgs, batch, 0);
        if (n > 0) sent += n;
        else if (errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED) errs++;
        else { perror("sendmmsg"); return 1; }
        if ((++calls & 31) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 >= secs) break;
        }
    }
    printf("%llu %llu\n", sent, errs);
    return 0;
}
"""


def build_blaster(sandbox: Sandbox) -> Path | None:
    """Compile the sendmmsg UDP sender into the sandbox's temp dir; None if there is no C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    src = sandbox.tmp / "udpblast.c"
    exe = sandbox.tmp / "udpblast"
    src.write_text(BLASTER_C)
    proc = subprocess.run([cc, "-O2", "-o", str(exe), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"note: cannot compile the UDP sender ({proc.stderr.strip()[:200]}); using iperf3", file=sys.stderr)
        return None
    return exe


def task_cpu_ns(pid: int) -> int:
    """CPU time a task has run, in ns (/proc/<pid>/schedstat). This kernel has no IRQ time
    accounting, so softirq work done in the task's context (veth forwarding) is included."""
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            return int(fh.read().split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return 0


def ksoftirqd_pid(cpu: int) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == f"ksoftirqd/{cpu}":
                        return int(entry)
            except OSError:
                continue
    return None


def rx_packets(ipr: object, ifname: str) -> int:
    index = ipr.link_lookup(ifname=ifname)[0]  # type: ignore[attr-defined]
    link = ipr.get_links(index)[0]  # type: ignore[attr-defined]
    return int(link.get_attr("IFLA_STATS64")["rx_packets"])


def fs_type(path: str) -> str:
    """File system type of the mount that holds ``path`` (from /proc/self/mounts)."""
    real = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            mnt = fields[1]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, fields[2]
    return kind


# ---------------------------------------------------------------- statistics and output


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        return math.nan
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p95 of 100 values is the 95th smallest)."""
    s = sorted(values)
    if not s:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(s)))
    return s[rank - 1]


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def summary(name: str, figure: str, value: float, goal: str, met: bool | None) -> None:
    verdict = "" if met is None else (" -> goal met" if met else " -> goal NOT met")
    print(f"SUMMARY {name}: {figure} = {_fmt(value)} (goal {goal}){verdict}")


def header(title: str, notes: Iterable[str] = ()) -> None:
    print(f"== {title} ==  ({time.strftime('%Y-%m-%d %H:%M')}, kernel {os.uname().release}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, sandbox {SB}, Lark prefix {LARK_PREFIX})")
    for note in notes:
        print(f"   {note}")


def floor_table_batch(table: str) -> list[dict[str, Any]]:
    """The shared part of a NAT job's firewall, built the cheapest way: one table, a verdict map keyed
    on interfaces, masqueraded source sets (the baseline of engine_setup and baselines)."""
    t = {"family": "inet", "table": table}
    vmap = [{"vmap": {"key": {"meta": {"key": k}}, "data": "@jobs"}} for k in ("iifname", "oifname")]

    def masq(proto: str, setname: str) -> list[dict[str, Any]]:
        return [{"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "saddr"}},
                           "right": f"@{setname}"}}, {"masquerade": None}]

    return [
        {"add": {"table": {"family": "inet", "name": table}}},
        {"add": {"map": {**t, "name": "jobs", "type": "ifname", "map": "verdict"}}},
        {"add": {"set": {**t, "name": "nat4", "type": "ipv4_addr"}}},
        {"add": {"set": {**t, "name": "nat6", "type": "ipv6_addr"}}},
        {"add": {"chain": {**t, "name": "fwd", "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}},
        {"add": {"chain": {**t, "name": "post", "type": "nat", "hook": "postrouting", "prio": 100,
                           "policy": "accept"}}},
        {"add": {"rule": {**t, "chain": "fwd", "expr": [vmap[0]]}}},
        {"add": {"rule": {**t, "chain": "fwd", "expr": [vmap[1]]}}},
        {"add": {"rule": {**t, "chain": "post", "expr": masq("ip", "nat4")}}},
        {"add": {"rule": {**t, "chain": "post", "expr": masq("ip6", "nat6")}}},
    ]


FloorJob = tuple[str, str, str, str, str]  # namespace name, host veth, chain, job IPv4, job IPv6


def floor_job_links(ipr: Any, path: str, i: int, vh: str, v6_base: str) -> tuple[str, str]:
    """One NAT job's interfaces the cheapest way (the baseline of engine_setup and baselines): the veth
    peer made directly in the job's namespace at ``path``, v4 + v6 (nodad) addresses on both ends, links
    and lo up, v4 + v6 default routes. Returns the job's IPv4 and IPv6 addresses."""
    net4 = ipaddress.ip_network((int(ipaddress.ip_address("10.251.0.0")) + 4 * (i % 16000), 30))
    h4, j4 = str(net4.network_address + 1), str(net4.network_address + 2)
    h6, j6 = f"{v6_base}:{i:x}::1", f"{v6_base}:{i:x}::2"
    job = netns.iproute_in(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr.link("add", ifname=vh, kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
        finally:
            os.close(fd)
        hidx = ipr.link_lookup(ifname=vh)[0]
        ipr.addr("add", index=hidx, address=h4, prefixlen=30)
        ipr.addr("add", index=hidx, address=h6, prefixlen=64, flags=0x02)  # IFA_F_NODAD
        ipr.link("set", index=hidx, state="up")
        jidx = job.link_lookup(ifname="eth0")[0]
        job.addr("add", index=jidx, address=j4, prefixlen=30)
        job.addr("add", index=jidx, address=j6, prefixlen=64, flags=0x02)
        job.link("set", index=jidx, state="up")
        job.link("set", index=job.link_lookup(ifname="lo")[0], state="up")
        job.route("add", dst="default", gateway=h4, oif=jidx, family=2)
        job.route("add", dst="default", gateway=h6, oif=jidx, family=10)
    finally:
        job.close()
    return j4, j6


def floor_job_batch(table: str, job: FloorJob) -> list[dict[str, Any]]:
    """One job's rules in ONE batch: its chain with 2 counters, its verdict-map element, its NAT elements."""
    _, vh, chain, j4, j6 = job
    t = {"family": "inet", "table": table}
    return [
        {"add": {"chain": {**t, "name": chain}}},
        {"add": {"rule": {**t, "chain": chain, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": vh}}, {"counter": None}]}}},
        {"add": {"rule": {**t, "chain": chain, "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": vh}}, {"counter": None}]}}},
        {"add": {"element": {**t, "name": "jobs", "elem": [[vh, {"jump": {"target": chain}}]]}}},
        {"add": {"element": {**t, "name": "nat4", "elem": [j4]}}},
        {"add": {"element": {**t, "name": "nat6", "elem": [j6]}}},
    ]


def floor_job_removal_batch(table: str, job: FloorJob) -> list[dict[str, Any]]:
    _, vh, chain, j4, j6 = job
    t = {"family": "inet", "table": table}
    return [
        {"delete": {"element": {**t, "name": "jobs", "elem": [vh]}}},
        {"delete": {"element": {**t, "name": "nat4", "elem": [j4]}}},
        {"delete": {"element": {**t, "name": "nat6", "elem": [j6]}}},
        {"flush": {"chain": {**t, "name": chain}}},
        {"delete": {"chain": {**t, "name": chain}}},
    ]
