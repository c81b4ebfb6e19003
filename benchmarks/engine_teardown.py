"""Teardown time of ``Engine.down`` over many up/down cycles, and what is left behind afterwards.

Each cycle is ``Engine.up`` (nat, IPv4+IPv6, accounting, namespace created by Lark) immediately
followed by ``Engine.down``; there is no pause between cycles, so the kernel's asynchronous removal
of dead namespaces competes with the next setups (the churn case). After the last cycle the script
waits until the kernel has removed every host-side veth, then counts Lark objects still present:

* links with Lark's prefix in the host namespace, Lark namespaces under /run/netns,
* nft job chains and map/set elements in Lark's table (read from the kernel listing),
* IPAM allocation files and job records in Lark's state directory,
* ``Engine.check()`` problems, and file descriptors / threads of this process (vs before).

    .venv/bin/python -m benchmarks.engine_teardown [--cycles 1000] [--firewall nftables|iptables]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import threading
import time

from benchmarks import _sandbox as sb
from benchmarks._sandbox import Sandbox, median, percentile, table
from lark import names, netns
from lark.engine import Engine
from lark.firewall import libnft
from lark.ipam import all_allocations
from lark.netlink import link_names
from lark.policy import JobRequest
from tests.support import wait_until

JOB_OBJECT = re.compile(r"^job-")  # per-job chains and named counters: job-<token>-...
JOB_ELEMENT_SETS = ("jobs_in", "jobs_out", "nat4", "nat6", "fwd4", "fwd6")  # per-job elements live here
SHARED_SET = re.compile(r"^net[46]_")  # network lists shared by jobs; removed with their last user


def nft_leftovers(engine: Engine) -> tuple[int, int, int]:
    """(job chains + named counters, per-job set/map elements, shared sets) in Lark's nft table.

    Read from the kernel with one full ``list table`` (independent of the backend's own bookkeeping);
    the base table's fixed content (hook chains, the ND type set) is not counted.
    """
    try:
        objects = libnft.list_one(f"list table inet {engine.prefix}", engine.host_netns)
    except libnft.NftError as err:
        if err.missing:
            return 0, 0, 0
        raise
    chains = sum(1 for o in objects for kind in ("chain", "counter")
                 if kind in o and JOB_OBJECT.match(o[kind]["name"]))
    elements = shared = 0
    for o in objects:
        body = o.get("set") or o.get("map")
        if body is None:
            continue
        if body["name"] in JOB_ELEMENT_SETS:
            elements += len(body.get("elem", []))
        elif SHARED_SET.match(body["name"]):
            shared += 1
    return chains, elements, shared


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--firewall", choices=("nftables", "iptables"), default="nftables")
    parser.add_argument("--settle", type=float, default=120.0, help="max seconds to wait for async removal")
    args = parser.parse_args()
    sb.require_root()
    sb.install_signal_handlers()
    sb.header(f"engine_teardown: {args.cycles} x (Engine.up nat v4+v6 + Engine.down), firewall {args.firewall}",
              ["no pause between cycles; leak count after the kernel's async veth removal"])
    sandbox = Sandbox()
    try:
        topo = sandbox.uplinked()
        engine = sandbox.engine(topo.host, firewall=args.firewall)
        request = JobRequest("bench.0", "nat")
        # warm up (tables, sockets, imports), then take the process baseline
        record = engine.up(request)
        engine.down(record.token)
        fds0, threads0 = fd_count(), threading.active_count()
        # time spent inside the firewall backend's remove_job, per down (a wrapper costs ~1 us)
        fw_remove: list[float] = []
        backend = engine.firewall
        original_remove = backend.remove_job

        def timed_remove(job: object) -> None:
            t = time.perf_counter()
            try:
                original_remove(job)  # type: ignore[arg-type]
            finally:
                fw_remove.append(time.perf_counter() - t)

        backend.remove_job = timed_remove  # type: ignore[method-assign]

        ups: list[float] = []
        downs: list[float] = []
        t_start = time.perf_counter()
        for i in range(args.cycles):
            t0 = time.perf_counter()
            record = engine.up(request)
            t1 = time.perf_counter()
            engine.down(record.token)
            downs.append(time.perf_counter() - t1)
            ups.append(t1 - t0)
            if (i + 1) % 200 == 0:
                print(f"   {i + 1} cycles, {time.perf_counter() - t_start:.1f} s", flush=True)
        loop_s = time.perf_counter() - t_start
        del backend.remove_job

        t0 = time.monotonic()
        host = netns.iproute_in(topo.host)  # our own socket: the engine's belongs to its kernel thread
        try:
            def links_of_prefix() -> list[str]:
                return [n for n in link_names(host) if names.token_of_ifname(engine.prefix, n)]

            with contextlib.suppress(TimeoutError):  # what is left after --settle is reported below
                wait_until("the kernel to free the host links", lambda: not links_of_prefix(), args.settle, 0.05)
            settle_s = time.monotonic() - t0
            left_links = links_of_prefix()
        finally:
            host.close()
        left_netns = [n for n in netns.list_named(engine.prefix + "-") if names.token_of_netns(engine.prefix, n)]
        if args.firewall == "nftables":
            chains, elements, shared = nft_leftovers(engine)
        else:
            chains, elements, shared = len(engine.firewall.job_tokens()), 0, 0
        allocations = list(all_allocations(engine.config.state_dir))
        records = engine.records()
        problems = engine.check()
        fds1, threads1 = fd_count(), threading.active_count()

        ms = 1000.0
        k = min(100, len(downs))
        print()
        print(table(["", "median ms", "p95 ms", "max ms", f"first {k} med", f"last {k} med"], [
            ["Engine.down", median(downs) * ms, percentile(downs, 95) * ms, max(downs) * ms,
             median(downs[:k]) * ms, median(downs[-k:]) * ms],
            ["  of which firewall remove_job", median(fw_remove) * ms, percentile(fw_remove, 95) * ms,
             max(fw_remove) * ms, median(fw_remove[:k]) * ms, median(fw_remove[-k:]) * ms],
            ["Engine.up (same cycles)", median(ups) * ms, percentile(ups, 95) * ms, max(ups) * ms,
             median(ups[:k]) * ms, median(ups[-k:]) * ms],
        ]))
        print(f"\n{args.cycles} cycles in {loop_s:.1f} s; async veth removal finished {settle_s:.2f} s after the "
              "last down")
        leaks = [
            ["host links (prefix)", len(left_links)],
            ["namespaces /run/netns/<prefix>-*", len(left_netns)],
            ["nft job chains + counters" if args.firewall == "nftables" else "iptables job tokens", chains],
            ["nft per-job map/set elements", elements],
            ["nft shared sets", shared],
            ["IPAM allocations", len(allocations)],
            ["job records", len(records)],
            ["Engine.check() problems", len(problems)],
            ["file descriptors (vs before)", fds1 - fds0],
            ["threads (vs before)", threads1 - threads0],
        ]
        print()
        print(table(["leftover after all cycles", "count"], leaks))
        for p in problems[:5]:
            print(f"   check: {p}")
        total = sum(int(row[1]) for row in leaks)
        print()
        sb.summary("engine_teardown", "teardown median ms", median(downs) * ms,
                   "docs/baselines.md §1 async floor 0.4 ms (delete batch + netns unlink)", None)
        sb.summary("engine_teardown", "teardown p95 ms", percentile(downs, 95) * ms, "-", None)
        sb.summary("engine_teardown", "leaked objects", total, "0", total == 0)
    finally:
        sandbox.close()


if __name__ == "__main__":
    main()
