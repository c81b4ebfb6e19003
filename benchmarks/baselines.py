"""Re-measure the two cheapest floors of docs/baselines.md §1 on this machine, without Lark's engine.

* **Setup floor** (``pr2fastpeer+libnft``): a fork-free named namespace (``lark.netns.create_named``)
  and a netlink socket inside it, a veth pair whose peer is created directly in the job namespace,
  v4 /30 + v6 /64 (nodad) addresses on both ends, links and lo up, v4 + v6 default routes, then ONE
  in-process libnftables JSON batch: a per-job chain with 2 counters, its verdict-map element, and
  the v4 + v6 NAT set elements.
* **Async teardown floor** (``pr2async+libnft``): the matching delete batch on a libnftables
  context that stays open (closing a context after deletes blocks 11-14 ms, docs/baselines.md §1),
  then unmount + unlink of the namespace, without waiting for the kernel to destroy the veth pair.

After each teardown, outside the timers, the script waits until the kernel has removed the host end
of the veth (printed as well), so every setup starts from a quiet state. Everything lives in the
run's own sandbox namespaces (``larkb<xy>-*``); the nftables table is in the sandbox "host"
namespace. No process is started and no traffic is sent. All is removed in ``finally``.

    .venv/bin/python -m benchmarks.baselines [--runs 30] [--warmup 3]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks import _sandbox as sb
from benchmarks._sandbox import Sandbox, median, percentile, table
from lark import netns
from lark.firewall import libnft

TABLE = f"{sb.SB}floor"
# (median, p95) in ms, docs/baselines.md §1 and its table of single netlink operations
DOC_SETUP = (6.4, 7.5)
DOC_TEARDOWN = (0.4, 0.7)
DOC_ASYNC_REMOVAL = (18.4, 20.3)


class Floors:
    """One job's kernel objects, made and removed the cheapest known way."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.ipr = netns.iproute_in(host)
        self.live: set[str] = set()  # job namespaces not yet deleted (for cleanup after errors)
        self.n = 0
        self.apply(sb.floor_table_batch(TABLE))

    def apply(self, batch: list[dict[str, Any]]) -> None:
        # one libnftables context for the host namespace, kept open across calls
        libnft.with_session(self.host, lambda s: s.apply(batch), persistent=True)

    def up(self) -> sb.FloorJob:
        self.n += 1
        i = self.n
        name, vh, chain = f"{sb.SB}-j{i}", f"{sb.SB}f{i:05d}", f"j{i}"
        path = str(netns.create_named(name))
        self.live.add(name)
        j4, j6 = sb.floor_job_links(self.ipr, path, i, vh, "fd6c:6172:6b02")
        job = (name, vh, chain, j4, j6)
        self.apply(sb.floor_job_batch(TABLE, job))
        return job

    def down_async(self, job: sb.FloorJob) -> None:
        self.apply(sb.floor_job_removal_batch(TABLE, job))
        netns.delete_named(job[0])
        self.live.discard(job[0])

    def wait_gone(self, ifname: str, timeout: float = 5.0) -> float:
        """Seconds until the kernel has removed ``ifname`` (asynchronous namespace cleanup)."""
        t0 = time.perf_counter()
        while self.ipr.link_lookup(ifname=ifname) and time.perf_counter() - t0 < timeout:
            time.sleep(0.0005)
        return time.perf_counter() - t0

    def close(self) -> None:
        for name in list(self.live):
            netns.delete_named(name)
        self.live.clear()
        libnft.forget_session(self.host)
        self.ipr.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="setup/teardown cycles (default 30, as documented)")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    sb.require_root()
    sb.install_signal_handlers()
    sb.header("baselines: setup floor (pr2fastpeer+libnft) and async teardown floor (pr2async+libnft)",
              [f"{args.runs} cycles after {args.warmup} warm-ups; wait for the kernel's veth removal between cycles",
               "documented figures: docs/baselines.md §1 (2026-11-21, 2 vCPUs, kernel 6.18.44, Debian 12)"])
    sandbox = Sandbox()
    floors: Floors | None = None
    try:
        host = sandbox.ns("host", forwarding=True)
        floors = Floors(host)
        ups: list[float] = []
        downs: list[float] = []
        gone: list[float] = []
        for i in range(args.warmup + args.runs):
            t0 = time.perf_counter()
            job = floors.up()
            t1 = time.perf_counter()
            floors.down_async(job)
            t2 = time.perf_counter()
            removal = floors.wait_gone(job[1])
            if i >= args.warmup:
                ups.append(t1 - t0)
                downs.append(t2 - t1)
                gone.append(removal)
        ms = 1000.0
        rows = [
            ["setup floor (pr2fastpeer+libnft)", median(ups) * ms, percentile(ups, 95) * ms, *DOC_SETUP],
            ["async teardown floor (pr2async+libnft)", median(downs) * ms, percentile(downs, 95) * ms,
             *DOC_TEARDOWN],
            ["kernel's removal of the host veth after it", median(gone) * ms, percentile(gone, 95) * ms,
             *DOC_ASYNC_REMOVAL],
        ]
        print()
        print(table(["ms", "median here", "p95 here", "median documented", "p95 documented"], rows))
        print()
        sb.summary("baselines", "setup floor median ms", median(ups) * ms,
                   f"none; docs/baselines.md §1: {DOC_SETUP[0]} ms", None)
        sb.summary("baselines", "async teardown floor median ms", median(downs) * ms,
                   f"none; docs/baselines.md §1: {DOC_TEARDOWN[0]} ms", None)
    finally:
        if floors is not None:
            floors.close()
        sandbox.close()


if __name__ == "__main__":
    main()
