"""Pure statistics used by the report: quartiles, five-number summaries, correlation.

Quantiles use linear interpolation between closest ranks (Hyndman & Fan type 7, the default of numpy
and of spreadsheet ``QUARTILE.INC``): the p-quantile of n sorted values sits at position (n-1)*p.
This is documented in docs/report.md so an admin can check any figure by hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Distribution:
    """min, quartiles, median, mean, max of a set of values (all None when it is empty)."""

    count: int
    min: float | None
    q1: float | None
    median: float | None
    q3: float | None
    mean: float | None
    max: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"count": self.count, "min": self.min, "q1": self.q1, "median": self.median, "q3": self.q3,
                "mean": self.mean, "max": self.max}


def quantile_sorted(values: Sequence[float], p: float) -> float | None:
    """The p-quantile (0 <= p <= 1) of already sorted values, type-7 interpolation; None when empty."""
    n = len(values)
    if n == 0:
        return None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"quantile level must be within 0..1, got {p}")
    pos = (n - 1) * p
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return values[lo] + (pos - lo) * (values[hi] - values[lo])


def quantile(values: Iterable[float], p: float) -> float | None:
    return quantile_sorted(sorted(values), p)


def summarize(values: Iterable[float]) -> Distribution:
    """Five-number summary plus mean. Sorting is the O(n log n) part; the mean uses fsum for exactness."""
    data = sorted(values)
    n = len(data)
    if n == 0:
        return Distribution(0, None, None, None, None, None, None)
    return Distribution(n, data[0], quantile_sorted(data, 0.25), quantile_sorted(data, 0.5),
                        quantile_sorted(data, 0.75), math.fsum(data) / n, data[-1])


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than two points or when either side is constant."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("pearson: sequences differ in length")
    if n < 2:
        return None
    mx = math.fsum(xs) / n
    my = math.fsum(ys) / n
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx == 0.0 or syy == 0.0:
        return None
    return sxy / math.sqrt(sxx * syy)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties get the average of the ranks they span (as Spearman's rho requires)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            out[order[k]] = avg
        i = j + 1
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation: robust to the heavy tails throughput always has."""
    if len(xs) != len(ys):
        raise ValueError("spearman: sequences differ in length")
    if len(xs) < 2:
        return None
    return pearson(ranks(xs), ranks(ys))
