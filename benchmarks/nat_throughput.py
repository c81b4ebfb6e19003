"""TCP throughput job -> wan through a Lark nat job (NAT + conntrack + accounting) vs a plain routed veth path.

Two independent sandboxes, measured in alternation::

    Lark:   job ns (Engine.up nat) --veth-- host ns [Lark nft table, masquerade] --uplink-- wan ns (iperf3 -s)
    plain:  job ns (hand-built)    --veth-- host ns [no firewall at all, routed]  --uplink-- wan ns (iperf3 -s)

The plain path has the same addresses and routes, built with ``ip`` (the wan routes the job subnet
back to the host instead of seeing it masqueraded). iperf3: one TCP stream, server pinned to CPU 1,
client to CPU 0 (as in docs/baselines.md §3); the rate is the receiver's. The goal applies to
job -> wan (upload); wan -> job (``-R``) is printed as well.

A single TCP stream is limited by the sending CPU (its softirq does the forwarding, NAT and
accounting too), and on a machine shared with other work that CPU is only partly ours. So besides
the wall-clock rate the script prints the rate per CPU-second of the sender (iperf3's own
utime+stime, which includes the softirq work done in its context): the throughput the path would
reach with the sending core to itself, a ratio that other load cannot skew.

    .venv/bin/python -m benchmarks.nat_throughput [--seconds 5] [--runs 3] [--no-reverse]
"""

from __future__ import annotations

import argparse

from benchmarks import _sandbox as sb
from benchmarks._sandbox import Sandbox, median, table
from lark.policy import JobRequest
from tests.support import received_mbit

GOAL = 0.95
PLAIN_HOST4, PLAIN_JOB4 = "10.250.0.1", "10.250.0.2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-reverse", action="store_true", help="skip the wan -> job direction")
    args = parser.parse_args()
    sb.require_root()
    sb.install_signal_handlers()
    sb.header("nat_throughput: iperf3 TCP job -> wan, Lark nat job vs plain routed veth path",
              [f"{args.runs} runs x {args.seconds:g} s per direction and path, alternating; medians"])
    sandbox = Sandbox()
    try:
        lark = sandbox.uplinked("L")
        engine = sandbox.engine(lark.host)
        record = engine.up(JobRequest("bench.0", "nat"))
        plain = sandbox.uplinked("P")
        job = sandbox.ns("jobP")
        sandbox.veth(plain.host, f"{sb.SB}p0", job, "eth0")
        sb.ip(plain.host, "addr", "add", f"{PLAIN_HOST4}/30", "dev", f"{sb.SB}p0")
        sb.ip(plain.host, "link", "set", f"{sb.SB}p0", "up")
        sb.ip(job, "addr", "add", f"{PLAIN_JOB4}/30", "dev", "eth0")
        sb.ip(job, "link", "set", "eth0", "up")
        sb.ip(job, "route", "add", "default", "via", PLAIN_HOST4)
        sb.ip(plain.wan, "route", "add", "10.250.0.0/30", "via", sb.UPLINK_HOST4)

        paths = {"Lark nat": (lark.wan, record.netns), "plain routed": (plain.wan, job)}
        directions = [False] if args.no_reverse else [False, True]
        results: dict[tuple[str, bool], list[float]] = {(p, r): [] for p in paths for r in directions}
        cpu: dict[tuple[str, bool], list[float]] = {(p, r): [] for p in paths for r in directions}
        per_cpu: dict[tuple[str, bool], list[float]] = {(p, r): [] for p in paths for r in directions}
        for run in range(args.runs):
            for reverse in directions:
                order = list(paths) if run % 2 == 0 else list(reversed(paths))
                for name in order:
                    wan, client = paths[name]
                    data = sb.iperf3(sandbox, wan, sb.UPLINK_WAN4, client, args.seconds, reverse=reverse)
                    rate = received_mbit(data)
                    results[(name, reverse)].append(rate)
                    util = data["end"].get("cpu_utilization_percent", {})  # type: ignore[union-attr]
                    sender_cpu = float(util.get("remote_total" if reverse else "host_total", float("nan")))
                    cpu[(name, reverse)].append(sender_cpu)
                    per_cpu[(name, reverse)].append(rate / (sender_cpu / 100) if sender_cpu > 0 else float("nan"))
            print(f"   run {run + 1}/{args.runs}: " + ", ".join(
                f"{p} {'wan->job' if r else 'job->wan'} {results[(p, r)][-1] / 1000:.2f}"
                for p in paths for r in directions) + " Gbit/s", flush=True)

        rows = []
        for reverse in directions:
            ref = median(results[("plain routed", reverse)])
            ref_cpu = median(per_cpu[("plain routed", reverse)])
            for name in paths:
                values = results[(name, reverse)]
                rows.append([f"{name}, {'wan -> job' if reverse else 'job -> wan'}", median(values) / 1000,
                             min(values) / 1000, max(values) / 1000, median(cpu[(name, reverse)]),
                             median(per_cpu[(name, reverse)]) / 1000, median(values) / ref,
                             median(per_cpu[(name, reverse)]) / ref_cpu])
        print()
        print(table(["path", "Gbit/s median", "min", "max", "sender CPU %", "Gbit/s per sender CPU",
                     "wall ratio to plain", "per-CPU ratio to plain"], rows))
        print()
        for reverse in directions:
            what = "wan->job" if reverse else "job->wan"
            goal = "none (printed)" if reverse else f">= {GOAL}"
            wall = median(results[("Lark nat", reverse)]) / median(results[("plain routed", reverse)])
            norm = median(per_cpu[("Lark nat", reverse)]) / median(per_cpu[("plain routed", reverse)])
            sb.summary("nat_throughput", f"TCP {what} Lark nat / plain routed (wall)", wall, goal,
                       None if reverse else wall >= GOAL)
            sb.summary("nat_throughput", f"TCP {what} Lark nat / plain routed (per sender CPU)", norm, goal,
                       None if reverse else norm >= GOAL)
        sb.summary("nat_throughput", "docs/baselines.md §3 (d)/(d0) TCP", 16.0 / 16.8, "reference: nft vmap + masq",
                   None)
    finally:
        sandbox.close()


if __name__ == "__main__":
    main()
