"""Reading iperf3's ``-J`` report, for the tests and the benchmarks alike."""

from __future__ import annotations

import json
from typing import Any


def iperf3_json(stdout: str, stderr: str) -> dict[str, Any]:
    """An iperf3 client's ``-J`` report; RuntimeError with iperf3's own words when it failed."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"iperf3 printed no JSON: {stdout[-500:]!r} {stderr[-500:]!r}") from None
    if not isinstance(data, dict):
        raise RuntimeError(f"iperf3 printed JSON that is not a report: {stdout[-500:]!r}")
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    return data


def received_mbit(report: dict[str, Any]) -> float:
    """The receiver-side TCP rate of a report, in Mbit/s (payload bits, as iperf3 counts them)."""
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e6
