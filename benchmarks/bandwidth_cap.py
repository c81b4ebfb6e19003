"""How closely a Lark bandwidth cap holds: measured TCP rate / cap - 1, both directions.

For each cap a Lark nat job is brought up with ``bandwidth_in_mbit = bandwidth_out_mbit = cap``
(two TBF qdiscs, see lark/shaping.py: the job end's egress shapes what the job sends, the host
end's egress what it receives). iperf3 (one TCP stream, receiver-side rate, payload bits) runs
job -> wan ("out", upload) and wan -> job ("in", download, ``-R``). Overshoot is rate/cap - 1;
the goal is <= 5 %. The payload rate of a flow that fully uses the cap is about 1448/1514 = 0.956
of it (TBF counts Ethernet + IP + TCP headers), so about -4 % means "cap reached, not exceeded".

    .venv/bin/python -m benchmarks.bandwidth_cap [--caps 50,200,1000] [--seconds 4] [--runs 3]
"""

from __future__ import annotations

import argparse

from benchmarks import _sandbox as sb
from benchmarks._sandbox import Sandbox, median, table
from lark import shaping
from lark.policy import JobRequest
from tests.support import received_mbit

GOAL = 0.05
PAYLOAD_SHARE = 1448 / 1514  # TCP payload per Ethernet frame at MTU 1500 (timestamps on)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--caps", default="50,200,1000", help="Mbit/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    caps = [int(c) for c in args.caps.split(",") if c.strip()]
    sb.require_root()
    sb.install_signal_handlers()
    sb.header("bandwidth_cap: iperf3 TCP rate vs Lark's per-job cap (TBF both ways)",
              [f"{args.runs} runs x {args.seconds:g} s per cap and direction; medians; receiver-side payload rate"])
    sandbox = Sandbox()
    try:
        topo = sandbox.uplinked()
        engine = sandbox.engine(topo.host)
        rows = []
        worst = -1.0
        for cap in caps:
            record = engine.up(JobRequest(f"cap.{cap}", "nat", bandwidth_in_mbit=cap, bandwidth_out_mbit=cap))
            params = shaping.tbf_parameters(cap)
            try:
                for reverse in (False, True):
                    rates = []
                    retrans = []
                    for _ in range(args.runs):
                        data = sb.iperf3(sandbox, topo.wan, sb.UPLINK_WAN4, record.netns, args.seconds,
                                         reverse=reverse)
                        rates.append(received_mbit(data))
                        retrans.append(data["end"]["sum_sent"].get("retransmits", 0))  # type: ignore[index]
                    rate = median(rates)
                    over = rate / cap - 1
                    worst = max(worst, max(r / cap - 1 for r in rates))
                    rows.append([cap, "in (wan->job)" if reverse else "out (job->wan)", rate, min(rates), max(rates),
                                 over * 100, (rate / (cap * PAYLOAD_SHARE) - 1) * 100, median(retrans),
                                 params.burst, params.limit])
                    print(f"   {cap} Mbit/s {'in' if reverse else 'out'}: " +
                          ", ".join(f"{r:.1f}" for r in rates), flush=True)
            finally:
                engine.down(record.token)
        print()
        print(table(["cap Mbit/s", "direction", "median Mbit/s", "min", "max", "overshoot %",
                     "vs payload share %", "retransmits", "TBF burst B", "TBF limit B"], rows))
        print()
        worst_median = max(r[5] for r in rows) / 100
        sb.summary("bandwidth_cap", "largest median overshoot (rate/cap - 1)", worst_median * 100,
                   f"<= {GOAL * 100:.0f} %", worst_median <= GOAL)
        sb.summary("bandwidth_cap", "largest single-run overshoot %", worst * 100, f"<= {GOAL * 100:.0f} %",
                   worst <= GOAL)
    finally:
        sandbox.close()


if __name__ == "__main__":
    main()
