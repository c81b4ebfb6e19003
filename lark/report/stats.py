"""Pure statistics used by the report: quartiles, five-number summaries, correlation (numpy-backed).

Quantiles use linear interpolation between closest ranks (Hyndman & Fan type 7, the default of numpy
and of spreadsheet ``QUARTILE.INC``): the p-quantile of n sorted values sits at position (n-1)*p.
This is documented in docs/report.md so an admin can check any figure by hand. Inputs may be lists,
``array.array`` columns (viewed without copying) or numpy arrays.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def as_array(values: Iterable[float] | np.ndarray | array) -> np.ndarray:
    """A float64 numpy view or copy of ``values`` (zero-copy for array('d') and float64 arrays)."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    if isinstance(values, array) and values.typecode == "d":
        return np.frombuffer(values, dtype=np.float64) if len(values) else np.empty(0)
    if not isinstance(values, Sequence):
        values = list(values)
    return np.asarray(values, dtype=np.float64)


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


def quantile_sorted(values: Sequence[float] | np.ndarray, p: float) -> float | None:
    """The p-quantile (0 <= p <= 1) of already sorted values, type-7 interpolation; None when empty."""
    n = len(values)
    if n == 0:
        return None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"quantile level must be within 0..1, got {p}")
    pos = (n - 1) * p
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    a, b = float(values[lo]), float(values[hi])
    return a + (pos - lo) * (b - a)


def quantile(values: Iterable[float], p: float) -> float | None:
    return quantile_sorted(np.sort(as_array(values)), p)


def summarize(values: Iterable[float] | np.ndarray | array) -> Distribution:
    """Five-number summary plus mean. Sorting is the O(n log n) part. numpy's pairwise summation keeps
    the mean accurate to a few ulps; integer-valued inputs (bytes) sum exactly below 2**53."""
    data = np.sort(as_array(values))
    n = len(data)
    if n == 0:
        return Distribution(0, None, None, None, None, None, None)
    return Distribution(n, float(data[0]), quantile_sorted(data, 0.25), quantile_sorted(data, 0.5),
                        quantile_sorted(data, 0.75), float(data.sum()) / n, float(data[-1]))


def pearson(xs: Any, ys: Any) -> float | None:
    """Pearson correlation; None with fewer than two points or when either side is constant."""
    x, y = as_array(xs), as_array(ys)
    if len(x) != len(y):
        raise ValueError("pearson: sequences differ in length")
    if len(x) < 2:
        return None
    dx = x - x.mean()
    dy = y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx == 0.0 or syy == 0.0:
        return None
    return max(-1.0, min(1.0, float(dx @ dy) / math.sqrt(sxx * syy)))


def ranks(values: Any) -> np.ndarray:
    """1-based ranks, ties get the average of the ranks they span (as Spearman's rho requires).

    Written to keep few n-sized temporaries alive at once: it runs on millions of transfers.
    """
    a = as_array(values)
    n = len(a)
    out = np.empty(n)
    if n == 0:
        return out
    order = np.argsort(a, kind="stable")
    sa = a[order]
    first = np.empty(n, dtype=bool)  # True where a run of equal values begins
    first[0] = True
    np.not_equal(sa[1:], sa[:-1], out=first[1:])
    del sa
    run_start = np.flatnonzero(first)
    run_end = np.empty_like(run_start)  # one past the end of each run
    run_end[:-1] = run_start[1:]
    run_end[-1] = n
    avg = (run_start + run_end + 1) / 2.0  # mean of the 1-based ranks run_start+1 .. run_end
    del run_start, run_end
    group = np.cumsum(first, dtype=np.int64)
    del first
    group -= 1
    out[order] = avg[group]
    return out


def spearman(xs: Any, ys: Any) -> float | None:
    """Spearman's rank correlation: robust to the heavy tails throughput always has."""
    x, y = as_array(xs), as_array(ys)
    if len(x) != len(y):
        raise ValueError("spearman: sequences differ in length")
    if len(x) < 2:
        return None
    rx = ranks(x)
    return pearson(rx, ranks(y))
