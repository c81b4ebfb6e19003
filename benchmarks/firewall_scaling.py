"""Small-packet forwarding rate with 1 vs N jobs' rules installed, per firewall backend.

Topology per measured point (all sandbox namespaces; one set per point so that the points can be
measured in alternation without reinstalling rules)::

    job ns  eth0 10.251.0.2 --veth-- <prefix>h<token> 10.251.0.1   host ns (backend)   uplink0 --- up1  wan ns
                                                                    forwarding on                    drops UDP :9999
                                                                                                     at netdev ingress

The backend is the one Lark uses (``make_backend``), split as Lark splits it: the host side with
the default isolation rules, N-1 fake jobs installed with its ``add_job`` (v4 + v6 masquerade
elements; their interfaces need not exist), then the real job last; the real job's job side
(accounting, anti-spoofing) in its own namespace, as for every Lark nat job. The sender is a small C ``sendmmsg``
UDP blaster (64-byte payload, compiled at run time; iperf3 ``-u -l 64 -b 0`` when there is no
compiler), pinned to CPU 0. The rate is the increase of ``rx_packets`` on the wan interface over
the measuring window. With veth the whole path runs in the sender's softirq context, so 1/rate is
the per-packet cost of the path (docs/baselines.md §2).

Since counting and policy live in each job's namespace, the host holds per job only NAT (nftables:
set elements; iptables: a MASQUERADE rule per address, which only a connection's first packet
walks), so a flow's per-packet cost is flat with N for both backends; this benchmark's single
UDP flow shows exactly that. Installing jobs through the iptables backend's ``add_job`` grows
quadratically (each add re-reads and re-commits whole tables), so its default N is 200 and the
1000-job ratio is extrapolated linearly from the measured per-job cost; ``--iptables-jobs 1000``
measures it.

    .venv/bin/python -m benchmarks.firewall_scaling [--jobs 1000] [--iptables-jobs 200] [--reps 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import _sandbox as sb
from benchmarks._sandbox import Sandbox, median, table
from lark import names, netns
from lark.firewall import make_backend
from lark.firewall.base import FirewallBackend, FirewallJob
from lark.firewall.isolation import Isolation
from tests.support import wait_listening

GOAL = 0.9
FLAT_NOTE = ("none; flat: per-job filter rules live in the jobs' namespaces, and only a connection's first "
             "packet walks the per-job nat rules")
PORT = 9999
IPERF_PORT = 5201
JOB4, HOST4 = "10.251.0.2", "10.251.0.1"
JOB6, HOST6 = "fd6c:6172:6b01::2", "fd6c:6172:6b01::1"


@dataclass
class Point:
    label: str
    backend: str  # "none", "nftables", "iptables"
    jobs: int
    job: str = ""
    host: str = ""
    wan: str = ""
    install_s: float = 0.0
    rates: list[float] = field(default_factory=list)  # delivered packets per wall-clock second
    cpu_rates: list[float] = field(default_factory=list)  # delivered packets per CPU-second of the path


def fake_job(i: int) -> FirewallJob:
    token = names.new_token()
    a4 = ipaddress.ip_address(int(ipaddress.ip_address("10.250.0.2")) + 4 * i)
    a6 = ipaddress.ip_address(f"fd6c:6172:6b00:{i:x}::2")
    return FirewallJob(token, names.host_ifname(sb.LARK_PREFIX, token), (a4, a6), masquerade_ipv4=True,
                       masquerade_ipv6=True)


def build(sandbox: Sandbox, point: Point, tag: str, drop_port: int | None) -> None:
    topo = sandbox.uplinked(tag)
    point.host, point.wan = topo.host, topo.wan
    point.job = sandbox.ns(f"job{tag}")
    token = names.new_token()
    vh = names.host_ifname(sb.LARK_PREFIX, token)
    sandbox.veth(point.host, vh, point.job, "eth0")
    sb.ip(point.host, "addr", "add", f"{HOST4}/30", "dev", vh)
    sb.ip(point.host, "addr", "add", f"{HOST6}/64", "dev", vh, "nodad")
    sb.ip(point.host, "link", "set", vh, "up")
    sb.ip(point.job, "addr", "add", f"{JOB4}/30", "dev", "eth0")
    sb.ip(point.job, "addr", "add", f"{JOB6}/64", "dev", "eth0", "nodad")
    sb.ip(point.job, "link", "set", "eth0", "up")
    sb.ip(point.job, "route", "add", "default", "via", HOST4)
    sb.ip(point.job, "-6", "route", "add", "default", "via", HOST6)
    if drop_port is not None:
        sb.nft(point.wan, f"table netdev {sb.SB}drop {{\n chain in {{\n  type filter hook ingress device "
                          f"\"{sb.UPLINK_WAN_IF}\" priority 0;\n  udp dport {drop_port} drop\n }}\n}}\n")
    if point.backend == "none":
        return
    backend: FirewallBackend = make_backend(point.backend, sb.LARK_PREFIX, point.host, isolation=Isolation())
    backend.ensure_base()
    t0 = time.perf_counter()
    for i in range(point.jobs - 1):
        backend.add_job(fake_job(i))
        if point.jobs > 200 and (i + 1) % 200 == 0:
            print(f"   {point.label}: {i + 1} fake jobs installed ({time.perf_counter() - t0:.1f} s)", flush=True)
    real = FirewallJob(token, "eth0", (ipaddress.ip_address(JOB4), ipaddress.ip_address(JOB6)),
                       masquerade_ipv4=True, masquerade_ipv6=True)
    make_backend(point.backend, sb.LARK_PREFIX, point.job, job_side=True).add_job(real)
    backend.add_job(real)
    point.install_s = time.perf_counter() - t0


def measure(sandbox: Sandbox, point: Point, blaster: Path | None, seconds: float,
            warm: float = 0.5) -> tuple[float, float]:
    """Delivered packets per wall-clock second at the wan interface while the job blasts UDP, and
    per CPU-second spent by the sender and ksoftirqd/0 (the whole path runs in their context on
    CPU 0), which other load on the machine does not distort."""
    total = warm + seconds + 0.3
    if blaster is not None:
        argv = [str(blaster), sb.UPLINK_WAN4, str(PORT), str(total), "64", "64"]
        server = None
    else:
        server = sandbox.popen(sb.in_ns(point.wan, ["iperf3", "-s", "-1", "-B", sb.UPLINK_WAN4, "-p",
                                                    str(IPERF_PORT)], cpu=1),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(point.wan, IPERF_PORT)
        argv = ["iperf3", "-u", "-l", "64", "-b", "0", "-c", sb.UPLINK_WAN4, "-p", str(IPERF_PORT), "-t",
                str(total)]
    ipr = netns.iproute_in(point.wan)
    sender = sandbox.popen(sb.in_ns(point.job, argv, cpu=0), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    softirqd = sb.ksoftirqd_pid(0)

    def cpu() -> int:
        return sb.task_cpu_ns(sender.pid) + (sb.task_cpu_ns(softirqd) if softirqd else 0)

    try:
        time.sleep(warm)
        c0, t0, u0 = sb.rx_packets(ipr, sb.UPLINK_WAN_IF), time.perf_counter(), cpu()
        time.sleep(seconds)
        c1, t1, u1 = sb.rx_packets(ipr, sb.UPLINK_WAN_IF), time.perf_counter(), cpu()
        sender.wait(timeout=total + 30)
        if sender.returncode != 0:
            err = sender.stderr.read() if sender.stderr else ""
            raise RuntimeError(f"sender failed in {point.label}: {err.strip()[:300]}")
        return (c1 - c0) / (t1 - t0), (c1 - c0) / max(u1 - u0, 1) * 1e9
    finally:
        ipr.close()
        sandbox.reap(sender)
        if server is not None:
            sandbox.reap(server)


def _ratio(points: list[Point], point: Point, backend: str, wall: bool) -> float:
    """Median rate of ``point`` over that of the 1-job point of ``backend`` ("none": no firewall)."""
    ref = next((p for p in points if p.backend == backend and p.jobs == (0 if backend == "none" else 1)), None)
    if ref is None:
        return float("nan")
    key = (lambda p: median(p.rates)) if wall else (lambda p: median(p.cpu_rates))
    return key(point) / key(ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="N for nftables (default 1000)")
    parser.add_argument("--iptables-jobs", type=int, default=200, help="N for iptables (default 200; 1000 is slow)")
    parser.add_argument("--backends", default="nftables,iptables")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sender", choices=("auto", "blaster", "iperf3"), default="auto")
    args = parser.parse_args()
    sb.require_root()
    sb.install_signal_handlers()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sandbox = Sandbox()
    try:
        blaster = None if args.sender == "iperf3" else sb.build_blaster(sandbox)
        if args.sender == "blaster" and blaster is None:
            raise SystemExit("no C compiler for the UDP blaster")
        sender_name = "udpblast (C sendmmsg, 64 B payload, batch 64)" if blaster else "iperf3 -u -l 64 -b 0"
        sb.header("firewall_scaling: UDP 64-byte forwarding rate job -> host -> wan, 1 vs N jobs' rules",
                  [f"sender {sender_name}, pinned to CPU 0; {args.reps} x {args.seconds:g} s per point, medians; "
                   "points measured in alternation"])
        points = [Point("no firewall", "none", 0)]
        for backend in backends:
            n = args.jobs if backend == "nftables" else args.iptables_jobs
            points += [Point(f"{backend} 1 job", backend, 1), Point(f"{backend} {n} jobs", backend, n)]
        for i, point in enumerate(points):
            build(sandbox, point, str(i), PORT if blaster else None)
            if point.jobs:
                print(f"   {point.label}: rules installed in {point.install_s:.1f} s", flush=True)
        for rep in range(args.reps):
            for point in points:
                rate, cpu_rate = measure(sandbox, point, blaster, args.seconds)
                point.rates.append(rate)
                point.cpu_rates.append(cpu_rate)
            print(f"   round {rep + 1}/{args.reps} kpps (per CPU-s): " + ", ".join(
                f"{p.label} {p.rates[-1] / 1e3:.0f} ({p.cpu_rates[-1] / 1e3:.0f})" for p in points), flush=True)

        rows = []
        for p in points:
            rows.append([p.label, p.jobs, median(p.rates) / 1e3, median(p.cpu_rates) / 1e3, 1e6 / median(p.cpu_rates),
                         _ratio(points, p, "none", wall=True), _ratio(points, p, p.backend, wall=True),
                         _ratio(points, p, p.backend, wall=False), p.install_s])
        print()
        print(table(["point", "jobs", "kpps wall", "kpps per CPU-s", "us CPU/pkt", "wall vs no fw",
                     "wall vs 1 job", "CPU vs 1 job", "install s"], rows))
        print("   (per CPU-s: delivered packets / CPU time of sender + ksoftirqd/0; the ratio other load cannot skew)")
        print()
        for backend in backends:
            big = next(p for p in points if p.backend == backend and p.jobs > 1)
            wall, cpu = _ratio(points, big, backend, wall=True), _ratio(points, big, backend, wall=False)
            if backend == "nftables":
                sb.summary("firewall_scaling", f"nftables rate {big.jobs} jobs / 1 job (wall)", wall, f">= {GOAL}",
                           wall >= GOAL)
                sb.summary("firewall_scaling", f"nftables rate {big.jobs} jobs / 1 job (per CPU)", cpu, f">= {GOAL}",
                           cpu >= GOAL)
            else:
                sb.summary("firewall_scaling", f"iptables rate {big.jobs} jobs / 1 job (wall)", wall,
                           FLAT_NOTE, None)
                sb.summary("firewall_scaling", f"iptables rate {big.jobs} jobs / 1 job (per CPU)", cpu,
                           FLAT_NOTE, None)
                if big.jobs != 1000:
                    # per-packet cost grows linearly with N: 1/r(N) = 1/r(1) + (N-1) * c
                    one = next(p for p in points if p.backend == backend and p.jobs == 1)
                    r1, rn = median(one.cpu_rates), median(big.cpu_rates)
                    per_job = (1 / rn - 1 / r1) / (big.jobs - 1)
                    est = 1 / (1 / r1 + 999 * per_job)
                    sb.summary("firewall_scaling", "iptables rate 1000 jobs / 1 job (per CPU, linear extrapolation, "
                               "optimistic)", est / r1, f"{per_job * 1e9:.1f} ns CPU per packet per job; "
                               "--iptables-jobs 1000 measures it", None)
        for backend in backends:
            one = next(p for p in points if p.backend == backend and p.jobs == 1)
            sb.summary("firewall_scaling", f"{backend} 1 job / no firewall (per CPU)",
                       _ratio(points, one, "none", False), "docs/baselines.md §3: conntrack+masq+accounting 0.69-0.76",
                       None)
    finally:
        sandbox.close()


if __name__ == "__main__":
    main()
