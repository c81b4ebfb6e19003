"""Per-user shares of a shaped uplink: fairness between users, weights, lending, and job caps.

Three users run 1, 2 and 4 bulk TCP uploads (iperf3 in Lark nat jobs, one stream each, to one
server per job in the sandbox "wan") through an uplink shaped at ``--uplink-mbit``:

* **equal**: equal weights. Per-user throughput Jain's index (goal >= 0.98).
* **weighted**: weights 3 : 2 : 1. Each user's part of the total against its weighted share
  (goal: within 5 %).
* **stop**: equal weights; the 4-job user stops half-way. The time until the two others carry
  the full uplink again (goal <= 2 s), from iperf3's 0.25 s interval reports.
* **caps**: equal weights; the 4-job user's jobs are capped (``--cap-mbit`` each, below their
  share). Each capped job's rate against its cap, signed (goal: within 5 %, payload-corrected); the rest
  is lent to the others.
* **cost**: the engine's ``up`` and ``down`` per job with ``--cost-jobs`` jobs of 10 users present,
  with shares (upload and download trees) against without (no goal; a ratio to watch).

Each scenario runs twice in the same sandbox: with Lark's shares (HTB tree per user and job on
the uplink) and without (the same uplink shaped by one TBF at the same rate, jobs' caps as today),
printed side by side. "Full uplink" is the uplink's payload rate: TCP payload per Ethernet frame is
1448/1514 of the wire rate.

    .venv/bin/python -m benchmarks.user_shares [--uplink-mbit 200] [--seconds 6] [--runs 3] [--short]

``--short`` (3 s per scenario, 1 run) checks the machinery on a busy machine; its figures are
noisier than a full run's.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from benchmarks import _sandbox as sb
from benchmarks._sandbox import Sandbox, median, table
from lark import netns, shaping
from lark.engine import Engine
from lark.policy import JobRequest
from lark.state import JobRecord
from tests.support import iperf3_json, wait_listening

USERS = ((61001, "u1", 1), (61002, "u2", 2), (61003, "u4", 4))  # uid, label, jobs
PAYLOAD_SHARE = 1448 / 1514
FIRST_PORT = 5301
INTERVAL = 0.25
OMIT = 1  # seconds of TCP slow start left out of each flow's figures (iperf3 -O)


@dataclass
class Flow:
    uid: int
    record: JobRecord
    port: int
    client: subprocess.Popen[str] | None = None
    report: dict[str, object] | None = None

    def mbit(self) -> float:
        assert self.report is not None
        return float(self.report["end"]["sum_received"]["bits_per_second"]) / 1e6  # type: ignore[index]

    def intervals(self) -> list[tuple[float, float]]:
        """(absolute start time, Mbit/s) of each interval the client reported."""
        assert self.report is not None
        start = float(self.report["start"]["timestamp"]["timesecs"])  # type: ignore[index]
        return [(start + float(i["sum"]["start"]), float(i["sum"]["bits_per_second"]) / 1e6)
                for i in self.report["intervals"]]  # type: ignore[union-attr]


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: (sum x)^2 / (n sum x^2); 1 when all are equal, 1/n when one takes all."""
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if any(values) else 0.0


@contextmanager
def jobs(engine: Engine, cap_mbit: dict[int, int]) -> Iterator[list[Flow]]:
    flows: list[Flow] = []
    try:
        port = FIRST_PORT
        for uid, label, count in USERS:
            for i in range(count):
                cap = cap_mbit.get(uid, 0)
                record = engine.up(JobRequest(f"{label}.{i}", "nat", bandwidth_out_mbit=cap), owner_uid=uid)
                flows.append(Flow(uid, record, port))
                port += 1
        yield flows
    finally:
        for flow in flows:
            engine.down(flow.record.token)


def run_flows(sandbox: Sandbox, wan: str, flows: list[Flow], seconds: float,
              stop_uid: int | None = None) -> float | None:
    """All flows at once for ``seconds``; ``stop_uid``'s clients are killed half-way (returns when)."""
    servers = [sandbox.popen(sb.in_ns(wan, ["iperf3", "-s", "-1", "-B", sb.UPLINK_WAN4, "-p", str(f.port)]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for f in flows]
    stopped_at = None
    try:
        for flow in flows:
            wait_listening(wan, flow.port)
        for flow in flows:
            flow.report = None
            flow.client = sandbox.popen(sb.in_ns(flow.record.netns, [
                "iperf3", "-c", sb.UPLINK_WAN4, "-p", str(flow.port), "-t", str(seconds), "-i", str(INTERVAL),
                "-O", str(OMIT), "-J"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if stop_uid is not None:
            time.sleep(OMIT + seconds / 2)
            stopped_at = time.time()
            for flow in flows:
                if flow.uid == stop_uid and flow.client is not None:
                    sandbox.reap(flow.client)  # by its PID
                    flow.client = None
        for flow in flows:
            if flow.client is None:
                continue
            out, err = flow.client.communicate(timeout=seconds + 30)
            flow.report = iperf3_json(out, err)
            sandbox.reap(flow.client)
    finally:
        for server in servers:
            sandbox.reap(server)
    return stopped_at


def per_user(flows: list[Flow]) -> dict[int, float]:
    return {uid: sum(f.mbit() for f in flows if f.uid == uid and f.report) for uid, _, _ in USERS}


def recovery_seconds(flows: list[Flow], stopped_at: float, full_mbit: float) -> float:
    """Seconds from the stop until the remaining flows together carry >= 95 % of the full uplink:
    the end of the first 0.25 s slot after the stop whose intervals add up to that (so the
    figure's resolution is one interval)."""
    slots: dict[int, list[tuple[float, float]]] = {}
    for flow in flows:
        if flow.report is None:
            continue
        for start, mbit in flow.intervals():
            if start >= stopped_at:
                slots.setdefault(int((start - stopped_at) / INTERVAL), []).append((start + INTERVAL, mbit))
    for slot in sorted(slots):
        if len(slots[slot]) == len(flows) and sum(m for _, m in slots[slot]) >= 0.95 * full_mbit:
            return max(end for end, _ in slots[slot]) - stopped_at
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uplink-mbit", type=int, default=200)
    parser.add_argument("--cap-mbit", type=int, default=10, help="per-job cap of the 4-job user in 'caps'")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cost-jobs", type=int, default=100, help="jobs present for the set-up cost figure")
    parser.add_argument("--short", action="store_true", help="3 s per scenario, 1 run")
    args = parser.parse_args()
    if args.short:
        args.seconds, args.runs = 3.0, 1
    sb.require_root()
    sb.install_signal_handlers()
    sb.header("user_shares: per-user shares of a shaped uplink (HTB per user and job) vs one TBF on the uplink",
              [f"uplink {args.uplink_mbit} Mbit/s; users with 1, 2 and 4 iperf3 uploads; {args.runs} runs x "
               f"{args.seconds:g} s per scenario (first {OMIT} s of slow start omitted); medians; receiver-side "
               "payload rates; stop: resolution 0.25 s"])
    full = args.uplink_mbit * PAYLOAD_SHARE
    sandbox = Sandbox()
    try:
        topo = sandbox.uplinked()
        share_knobs = {"LARK_SHARES_UPLINK": sb.UPLINK_HOST_IF, "LARK_SHARES_UPLINK_MBIT": str(args.uplink_mbit)}
        weighted = {**share_knobs, "LARK_SHARES_WEIGHTS": "61001=3, 61002=2, 61003=1"}
        engines = {"shares": sandbox.engine(topo.host, **share_knobs),
                   "weighted": sandbox.engine(topo.host, **weighted),
                   "no shares": sandbox.engine(topo.host)}
        results: dict[tuple[str, str], list[float]] = {}

        def record(key: tuple[str, str], value: float) -> None:
            results.setdefault(key, []).append(value)

        for run in range(args.runs):
            for variant in ("shares", "no shares"):
                with uplink_shaped(topo.host, args.uplink_mbit, variant == "no shares"):
                    # equal weights: Jain's index over the users' totals
                    with jobs(engines[variant], {}) as flows:
                        run_flows(sandbox, topo.wan, flows, args.seconds)
                        users = per_user(flows)
                        record((variant, "equal: Jain index"), jain(list(users.values())))
                        record((variant, "equal: total / full uplink"), sum(users.values()) / full)
                    # weights 3:2:1 (without shares there is nothing to weigh: same jobs, same link)
                    engine = engines["weighted" if variant == "shares" else variant]
                    with jobs(engine, {}) as flows:
                        run_flows(sandbox, topo.wan, flows, args.seconds)
                        users = per_user(flows)
                        total = sum(users.values())
                        worst = max(abs(users[uid] / total / (w / 6) - 1) for (uid, _, _), w in zip(USERS, (3, 2, 1),
                                                                                                     strict=True))
                        record((variant, "weighted 3:2:1: worst user vs share %"), worst * 100)
                    # the 4-job user stops half-way
                    with jobs(engines[variant], {}) as flows:
                        stopped = run_flows(sandbox, topo.wan, flows, max(args.seconds, 6.0), stop_uid=USERS[2][0])
                        assert stopped is not None
                        rest = [f for f in flows if f.uid != USERS[2][0]]
                        record((variant, "stop: seconds to full uplink"), recovery_seconds(rest, stopped, full))
                    # the 4-job user's jobs capped below their share
                    with jobs(engines[variant], {USERS[2][0]: args.cap_mbit}) as flows:
                        run_flows(sandbox, topo.wan, flows, args.seconds)
                        capped = [f.mbit() for f in flows if f.uid == USERS[2][0]]
                        # signed: above 0 the cap was exceeded, below it the job fell short of it
                        worst = max((r / (args.cap_mbit * PAYLOAD_SHARE) - 1 for r in capped), key=abs)
                        record((variant, "caps: worst capped job vs cap %"), worst * 100)
                        record((variant, "caps: total / full uplink"), sum(per_user(flows).values()) / full)
            print(f"   run {run + 1}: " + "; ".join(f"{k[0]} {k[1]} {v[-1]:.3f}" for k, v in results.items()),
                  flush=True)
        for variant in ("shares", "no shares"):
            engine = sandbox.engine(topo.host, LARK_SHARES_DOWNLINK_MBIT=str(args.uplink_mbit), **share_knobs) \
                if variant == "shares" else engines[variant]
            ups, downs = setup_cost(engine, args.cost_jobs)
            record((variant, f"cost: up ms (median, {args.cost_jobs} jobs)"), ups)
            record((variant, f"cost: down ms (median, {args.cost_jobs} jobs)"), downs)
        figures = sorted({k[1] for k in results}, key=list(dict.fromkeys(k[1] for k in results)).index)
        rows = [[f, median(results[("shares", f)]), median(results[("no shares", f)]),
                 f"{min(results[('shares', f)]):.3f}-{max(results[('shares', f)]):.3f}"] for f in figures]
        print()
        print(table(["figure (median over runs)", "shares", "no shares (one TBF)", "shares min-max"], rows))
        print()
        get = {f: median(results[("shares", f)]) for f in figures}
        sb.summary("user_shares", "Jain index, equal weights", get["equal: Jain index"], ">= 0.98",
                   get["equal: Jain index"] >= 0.98)
        sb.summary("user_shares", "worst user vs weighted share %", get["weighted 3:2:1: worst user vs share %"],
                   "<= 5 %", get["weighted 3:2:1: worst user vs share %"] <= 5)
        sb.summary("user_shares", "seconds until the others carry the uplink", get["stop: seconds to full uplink"],
                   "<= 2 s", get["stop: seconds to full uplink"] <= 2)
        sb.summary("user_shares", "worst capped job vs its cap %", get["caps: worst capped job vs cap %"],
                   "within 5 %", abs(get["caps: worst capped job vs cap %"]) <= 5)
    finally:
        sandbox.close()


def setup_cost(engine: Engine, count: int) -> tuple[float, float]:
    """Median ms of ``up`` and of ``down`` over ``count`` nat jobs of 10 users (all present at once)."""
    ups, downs, records = [], [], []
    try:
        for i in range(count):
            began = time.perf_counter()
            records.append(engine.up(JobRequest(f"cost.{i}", "nat"), owner_uid=62000 + i % 10))
            ups.append((time.perf_counter() - began) * 1000)
    finally:
        for record in records:
            began = time.perf_counter()
            engine.down(record.token)
            downs.append((time.perf_counter() - began) * 1000)
    return median(ups), median(downs)


@contextmanager
def uplink_shaped(host: str, mbit: int, shaped: bool) -> Iterator[None]:
    """The baseline: the uplink limited by one TBF (what a node without shares would have)."""
    if not shaped:
        yield
        return
    with netns.iproute_in(host) as ipr:
        index = ipr.link_lookup(ifname=sb.UPLINK_HOST_IF)[0]
        shaping.limit_egress(ipr, index, mbit)
        try:
            yield
        finally:
            shaping.clear(ipr, index)


if __name__ == "__main__":
    main()
