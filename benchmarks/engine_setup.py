"""Setup latency of ``Engine.up`` (nat, IPv4+IPv6, accounting, Lark-created namespace) against a raw baseline.

The baseline does the same kernel work with the cheapest in-process method of docs/baselines.md
(§1, ``pr2fastpeer+libnft``): a fork-free namespace (``lark.netns.create_named``), the veth
peer created directly inside it, v4 + v6 (nodad) addresses on both ends, links and lo up, v4 + v6
default routes, then ONE libnftables JSON batch: a per-job chain with 2 counters, its verdict-map
element, and the v4 + v6 NAT set elements. No records, no IPAM files, no listing before the write.

Lark and baseline runs alternate (same conditions for both); after each teardown the script waits
until the kernel has removed the host end of the veth, so every setup starts from a quiet state.
A second, instrumented pass (wrappers around Lark's steps) gives the split of Lark's time.

The job path: the broker sets up a job in a namespace that already exists (the wrapper's), which
Lark pins under /run/netns for the job's life instead of creating one. A third series measures
that path (the namespace is made before the timer starts and removed after the teardown); its
median is compared with the 30 ms budget of a job start.

Lark's nat job counts inside the job's namespace (one batch there: base table and the job's
chains) and puts only its masquerade elements into the host's table; the baseline keeps the
older, cheaper-looking layout of one host batch with the per-job chain, so the ratio charges
Lark for the extra namespace switch. The job side's batch runs on a second thread while the
interfaces are made, so in the split "firewall" overlaps "links" and "other" can come out
negative.

    .venv/bin/python -m benchmarks.engine_setup [--runs 100] [--split-runs 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from benchmarks import _sandbox as sb
from benchmarks._sandbox import Sandbox, median, percentile, table
from lark import netns
from lark.engine import Engine
from lark.firewall import libnft
from lark.policy import JobRequest

GOAL = 1.5
JOB_PATH_BUDGET_MS = 30.0
BASE_TABLE = f"{sb.SB}base"


# ---------------------------------------------------------------- baseline


class Baseline:
    """The same kernel objects as a Lark nat job, built the cheapest way (no bookkeeping)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.ipr = netns.iproute_in(host)
        self.n = 0
        self.live: set[str] = set()  # namespaces created and not yet deleted (for cleanup after errors)
        libnft.run_batch(sb.floor_table_batch(BASE_TABLE), host)

    def close(self) -> None:
        for name in list(self.live):
            netns.delete_named(name)
        self.live.clear()
        self.ipr.close()

    def up(self, times: dict[str, float] | None = None) -> sb.FloorJob:
        self.n += 1
        i = self.n
        name, vh, chain = f"{sb.SB}-b{i}", f"{sb.SB}b{i:05d}", f"b{i}"
        t0 = time.perf_counter()
        path = str(netns.create_named(name))
        self.live.add(name)
        t1 = time.perf_counter()
        j4, j6 = sb.floor_job_links(self.ipr, path, i, vh, "fd6c:6172:6b01")
        t2 = time.perf_counter()
        job = (name, vh, chain, j4, j6)
        libnft.run_batch(sb.floor_job_batch(BASE_TABLE, job), self.host)
        t3 = time.perf_counter()
        if times is not None:
            times["netns"] += t1 - t0
            times["links"] += t2 - t1
            times["firewall"] += t3 - t2
        return job

    def down(self, job: sb.FloorJob) -> None:
        libnft.run_batch(sb.floor_job_removal_batch(BASE_TABLE, job), self.host)
        netns.delete_named(job[0])
        self.live.discard(job[0])


# ---------------------------------------------------------------- helpers


def wait_gone(ipr: Any, ifname: str, timeout: float = 5.0) -> float:
    """Wait until the kernel has removed ``ifname`` (async namespace cleanup); returns seconds waited."""
    t0 = time.monotonic()
    while ipr.link_lookup(ifname=ifname) and time.monotonic() - t0 < timeout:
        time.sleep(0.002)
    return time.monotonic() - t0


def instrument(engine: Engine, times: dict[str, float]) -> Callable[[], None]:
    """Wrap Lark's steps with timers; returns the function that undoes it."""
    import dataclasses

    import lark.attach as attach
    from lark.firewall.nftables import NftablesBackend

    patched: list[tuple[object, str, object]] = []

    def timer(original: Callable[..., Any], bucket: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                times[bucket] += time.perf_counter() - t0

        return timed

    def wrap(owner: object, attr: str, bucket: str) -> None:
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        patched.append((owner, attr, original))
        setattr(owner, attr, timer(original, bucket))

    wrap(netns, "create_named", "netns")
    if hasattr(netns, "pin"):  # the same script times code from before pinning (a side-by-side run)
        wrap(netns, "pin", "netns")
    wrap(netns, "inode", "netns")
    wrap(netns, "iproute_in", "netns")
    nat = None
    if hasattr(attach, "register"):  # the engine asks the registered mode object
        nat = attach.mode("nat")
        attach.register(dataclasses.replace(nat, allocate=timer(nat.allocate, "ipam"), up=timer(nat.up, "links")),
                        replace=True)
    else:  # a checkout from before the mode registry (a side-by-side run): the engine calls the module
        import lark.attach.nat as nat_module

        wrap(nat_module, "allocate", "ipam")
        wrap(nat_module, "up", "links")
    wrap(NftablesBackend, "add_job", "firewall")  # the job side and the host side alike
    wrap(engine.store, "save", "state")

    def undo() -> None:
        if nat is not None:
            attach.register(nat, replace=True)
        for owner, attr, original in reversed(patched):
            if isinstance(owner, (type, type(netns))):
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)  # instance attribute shadowing the class method

    return undo


def poll_cost(engine: Engine, request: JobRequest, n: int, reads: int = 20) -> float:
    """Median seconds of one ``all_counters`` (one read in each job's namespace) with ``n`` jobs up."""
    records = [engine.up(request) for _ in range(n)]
    try:
        times = []
        for _ in range(reads):
            t0 = time.perf_counter()
            counted = engine.all_counters()
            times.append(time.perf_counter() - t0)
            assert len(counted) == n, len(counted)
        return median(times)
    finally:
        for record in records:
            engine.down(record.token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="Lark and baseline setups each (default 100)")
    parser.add_argument("--split-runs", type=int, default=50, help="instrumented runs for the split (default 50)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--poll-jobs", type=int, default=100,
                        help="jobs up while Engine.all_counters (the broker's periodic read) is timed (default 100)")
    parser.add_argument("--state-base", default=None,
                        help="directory for Lark's state dir (default: the system temp dir; e.g. /dev/shm for tmpfs)")
    args = parser.parse_args()
    sb.require_root()
    sb.install_signal_handlers()
    state_base = args.state_base or tempfile.gettempdir()
    sb.header("engine_setup: Engine.up (nat, v4+v6, accounting, own netns) vs raw pyroute2 + libnftables",
              [f"{args.runs} interleaved runs each, teardown + wait for async veth removal between runs",
               f"Lark state dir under {state_base} ({sb.fs_type(state_base)})"])

    sandbox = Sandbox(args.state_base)
    baseline: Baseline | None = None
    try:
        topo = sandbox.uplinked()
        engine = sandbox.engine(topo.host)
        baseline = Baseline(topo.host)
        host = baseline.ipr  # the engine's own socket belongs to its kernel thread: never use it from here
        request = JobRequest("bench.0", "nat")
        lark_up: list[float] = []
        lark_down: list[float] = []
        lark_cpu: list[float] = []
        base_up: list[float] = []
        base_down: list[float] = []
        base_cpu: list[float] = []

        def lark_once(record_times: bool) -> None:
            c0, t0 = time.process_time(), time.perf_counter()
            record = engine.up(request)
            t1, c1 = time.perf_counter(), time.process_time()
            engine.down(record.token)
            t2 = time.perf_counter()
            if record_times:
                lark_up.append(t1 - t0)
                lark_down.append(t2 - t1)
                lark_cpu.append(c1 - c0)
            assert record.host_ifname
            wait_gone(host, record.host_ifname)

        job_up: list[float] = []
        job_down: list[float] = []

        def job_path_once(record_times: bool) -> None:
            # the wrapper's namespace exists before the broker is asked (made outside the timer)
            name = f"{sb.SB}-w{len(job_up)}"
            path = str(netns.create_named(name))
            try:
                t0 = time.perf_counter()
                record = engine.up(request, netns_path=path)
                t1 = time.perf_counter()
                engine.down(record.token)
                t2 = time.perf_counter()
            finally:
                netns.delete_named(name)
            if record_times:
                job_up.append(t1 - t0)
                job_down.append(t2 - t1)
            assert record.host_ifname
            wait_gone(host, record.host_ifname)

        def base_once(record_times: bool) -> None:
            c0, t0 = time.process_time(), time.perf_counter()
            job = baseline.up()
            t1, c1 = time.perf_counter(), time.process_time()
            baseline.down(job)
            t2 = time.perf_counter()
            if record_times:
                base_up.append(t1 - t0)
                base_down.append(t2 - t1)
                base_cpu.append(c1 - c0)
            wait_gone(host, job[1])

        for _ in range(args.warmup):
            lark_once(False)
            base_once(False)
            job_path_once(False)
        for i in range(args.runs):
            # alternate which one goes first, so neither always follows the other's async cleanup
            if i % 2:
                lark_once(True)
                base_once(True)
            else:
                base_once(True)
                lark_once(True)
            job_path_once(True)

        # split: instrumented Lark runs and timed baseline steps
        lark_split: dict[str, float] = defaultdict(float)
        base_split: dict[str, float] = defaultdict(float)
        undo = instrument(engine, lark_split)
        lark_total = 0.0
        try:
            for _ in range(args.split_runs):
                t0 = time.perf_counter()
                record = engine.up(request)
                lark_total += time.perf_counter() - t0
                engine.down(record.token)
                assert record.host_ifname
                wait_gone(host, record.host_ifname)
        finally:
            undo()
        base_total = 0.0
        for _ in range(args.split_runs):
            t0 = time.perf_counter()
            job = baseline.up(base_split)
            base_total += time.perf_counter() - t0
            baseline.down(job)
            wait_gone(host, job[1])
        lark_split["other"] = lark_total - sum(lark_split.values())
        base_split["other"] = base_total - sum(base_split.values())

        ms = 1000.0
        rows = [
            ["Lark Engine.up / down", median(lark_up) * ms, percentile(lark_up, 95) * ms, median(lark_cpu) * ms,
             median(lark_down) * ms, percentile(lark_down, 95) * ms],
            ["Lark job path (pinned netns) up / down", median(job_up) * ms, percentile(job_up, 95) * ms, float("nan"),
             median(job_down) * ms, percentile(job_down, 95) * ms],
            ["baseline (pyroute2 + 1 libnft batch)", median(base_up) * ms, percentile(base_up, 95) * ms,
             median(base_cpu) * ms, median(base_down) * ms, percentile(base_down, 95) * ms],
            ["ratio Lark / baseline", median(lark_up) / median(base_up),
             percentile(lark_up, 95) / percentile(base_up, 95), median(lark_cpu) / median(base_cpu),
             median(lark_down) / median(base_down), percentile(lark_down, 95) / percentile(base_down, 95)],
        ]
        print()
        print(table(["", "setup med ms", "setup p95 ms", "setup CPU med ms", "teardown med ms", "teardown p95 ms"],
                    rows))
        print("   (setup CPU = process CPU time of all threads during the call: robust to other load on the machine)")
        print()
        n = args.split_runs
        parts = ["netns", "ipam", "links", "firewall", "state", "other"]
        print(f"split of setup, mean ms over {n} instrumented runs (netns = create + job socket; state = records)")
        print(table(["", *parts, "total"], [
            ["Lark", *(lark_split[p] / n * ms for p in parts), lark_total / n * ms],
            ["baseline", *(base_split[p] / n * ms for p in parts), base_total / n * ms],
        ]))
        print()
        ratio_med = median(lark_up) / median(base_up)
        ratio_p95 = percentile(lark_up, 95) / percentile(base_up, 95)
        sb.summary("engine_setup", "setup median ratio Lark/baseline", ratio_med, f"<= {GOAL}", ratio_med <= GOAL)
        sb.summary("engine_setup", "setup p95 ratio Lark/baseline", ratio_p95, f"<= {GOAL}", ratio_p95 <= GOAL)
        ratio_cpu = median(lark_cpu) / median(base_cpu)
        sb.summary("engine_setup", "setup CPU-time median ratio Lark/baseline", ratio_cpu, f"<= {GOAL}",
                   ratio_cpu <= GOAL)
        sb.summary("engine_setup", "Lark setup median ms", median(lark_up) * ms, "docs/baselines.md §1 floor 6.4 ms",
                   None)
        sb.summary("engine_setup", "Lark job path (pinned netns) setup median ms", median(job_up) * ms,
                   f"< {JOB_PATH_BUDGET_MS:g} ms", median(job_up) * ms < JOB_PATH_BUDGET_MS)
        if args.poll_jobs:
            poll = poll_cost(engine, request, args.poll_jobs)
            sb.summary("engine_setup", f"Engine.all_counters with {args.poll_jobs} jobs up, median ms", poll * ms,
                       "none; every LARK_ACCOUNTING_INTERVAL (10 s)", None)
    finally:
        if baseline is not None:
            baseline.close()
        sandbox.close()


if __name__ == "__main__":
    main()
