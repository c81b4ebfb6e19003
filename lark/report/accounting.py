"""Accounting from job history: totals per user, group, site, traffic class and job, and charges.

:class:`HistoryAccumulator` consumes :class:`JobRecord` values one at a time (so a history of any size
streams through) and keeps only per-key totals, a top-N heap of jobs, hourly per-site sums, and three
numbers per job for the distributions. No I/O; everything is unit-tested with hand-computed values.

Charging: every byte a job moved is priced by its traffic class. A job's class counters
``LarkBytesIn<Class>``/``LarkBytesOut<Class>`` are priced at that class's rate, and the rest of
``LarkBytesIn``/``LarkBytesOut`` (bytes in no class) at the ``default`` rate:

    charge = sum over classes c and directions d of bytes(c, d) / 1e9 * rate(c, d)

GB is 10^9 bytes, like the MB of HTCondor's NetworkInputMb (10^6).
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

from lark.report.history import JobRecord
from lark.report.settings import UNCLASSIFIED, ReportConfig, class_key
from lark.report.stats import summarize

GB = 1e9
HOUR = 3600
GROUPINGS = ("user", "group", "execute_site", "source_site", "network_type")


def class_breakdown(job: JobRecord) -> tuple[list[tuple[str, int, int]], bool]:
    """(class, bytes in, bytes out) including the unclassified remainder; flag if classes exceed totals.

    When the class counters add up to more than the total (a counter reset, clock skew between
    pushes), the remainder is taken as 0 rather than negative, and the job is flagged.
    """
    if job.bytes_total is None:
        return [], False
    rows = list(job.classes)
    cin = sum(c[1] for c in rows)
    cout = sum(c[2] for c in rows)
    rest_in = (job.bytes_in or 0) - cin
    rest_out = (job.bytes_out or 0) - cout
    inconsistent = rest_in < 0 or rest_out < 0
    rest_in, rest_out = max(rest_in, 0), max(rest_out, 0)
    if rest_in or rest_out or not rows:
        rows.append((UNCLASSIFIED, rest_in, rest_out))
    return rows, inconsistent


def job_charge(job: JobRecord, config: ReportConfig,
               breakdown: list[tuple[str, int, int]] | None = None) -> tuple[float, list[tuple[str, int, int, float]]]:
    """Total charge of one job and its (class, in, out, charge) parts."""
    parts = []
    total = 0.0
    if breakdown is None:
        breakdown = class_breakdown(job)[0]
    for cls, b_in, b_out in breakdown:
        charge = b_in / GB * config.rate(cls, "in") + b_out / GB * config.rate(cls, "out")
        parts.append((cls, b_in, b_out, charge))
        total += charge
    return total, parts


# Per-key totals are plain lists (one add per field, no attribute look-ups): a million jobs times six
# groupings makes this the hot loop of the history report.
J, WITH, B_IN, B_OUT, S_IN, S_OUT, INPUT_MB, WALL, CHARGE = range(9)


def new_totals() -> list[float]:
    return [0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0]


def totals_row(key_name: str, key: str, t: list[float]) -> dict[str, object]:
    return {key_name: key, "jobs": t[J], "jobs_with_counters": t[WITH], "bytes_in": t[B_IN], "bytes_out": t[B_OUT],
            "bytes_total": t[B_IN] + t[B_OUT], "sandbox_in": t[S_IN], "sandbox_out": t[S_OUT],
            "input_mb": t[INPUT_MB], "wall_seconds": t[WALL], "charge": t[CHARGE]}


@dataclass
class ClassTotals:
    name: str
    jobs: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    charge: float = 0.0


def sorted_rows(rows: Iterable[dict[str, object]], key_name: str) -> list[dict[str, object]]:
    """Largest traffic first; ties by name so output is stable."""
    return sorted(rows, key=lambda r: (-int(r["bytes_total"]), str(r[key_name])))  # type: ignore[call-overload]


class HistoryAccumulator:
    """Streaming aggregation of job records (see the module docstring).

    Totals are kept per grouping (user, group, execute site, source site, network type) so memory is
    bounded by each grouping's number of distinct values. (Keeping one cell per combination and rolling
    up later would be faster, but the combinations can approach the number of jobs.)
    """

    def __init__(self, config: ReportConfig) -> None:
        self.config = config
        self.all = new_totals()
        self.groups: list[dict[str, list[float]]] = [{} for _ in GROUPINGS]
        self.classes: dict[str, ClassTotals] = {}
        self.top: list[tuple[int, int, dict[str, object]]] = []  # min-heap of (bytes, -seq, row)
        self._seq = itertools.count()
        self.series: dict[tuple[str, int], int] = {}
        self.job_bytes = array("d")
        self.job_durations = array("d")
        self.job_rates = array("d")
        self.inconsistent_classes = 0
        self._rates: dict[str, tuple[float, float, str]] = {}

    def _class_rates(self, cls: str) -> tuple[float, float, str]:
        """(rate in per byte, rate out per byte, class key), cached per class name."""
        r = self._rates.get(cls)
        if r is None:
            key = cls if cls == UNCLASSIFIED else class_key(cls)
            r = self._rates[cls] = (self.config.rate(cls, "in") / GB, self.config.rate(cls, "out") / GB, key)
        return r

    def add(self, job: JobRecord) -> None:
        bi, bo = job.bytes_in, job.bytes_out
        counted = bi is not None or bo is not None
        bi, bo = bi or 0, bo or 0
        charge = 0.0
        if counted:
            rest_in, rest_out = bi, bo
            for cls, c_in, c_out in job.classes:
                rest_in -= c_in
                rest_out -= c_out
                charge += self._add_class(cls, c_in, c_out)
            if rest_in < 0 or rest_out < 0:
                self.inconsistent_classes += 1  # see class_breakdown
                rest_in, rest_out = max(rest_in, 0), max(rest_out, 0)
            if rest_in or rest_out or not job.classes:
                charge += self._add_class(UNCLASSIFIED, rest_in, rest_out)
        start, end = job.start, job.end
        duration = end - start if start is not None and end is not None and end >= start else None
        wc = 1 if counted else 0
        si, so, imb, wall = job.sandbox_in, job.sandbox_out, job.input_mb, duration or 0.0
        targets = [self.all]
        # job[1:6] is (user, group, execute_site, source_site, network_type), the order of GROUPINGS
        for d, key in zip(self.groups, job[1:6], strict=True):
            t = d.get(key)
            if t is None:
                t = d[key] = new_totals()
            targets.append(t)
        for t in targets:
            t[0] += 1
            t[1] += wc
            t[2] += bi
            t[3] += bo
            t[4] += si
            t[5] += so
            t[6] += imb
            t[7] += wall
            t[8] += charge
        if not counted:
            return
        total = bi + bo
        self.job_bytes.append(total)
        if duration is not None:
            self.job_durations.append(duration)
            if duration > 0:
                self.job_rates.append(total / duration)
        if end is not None:
            hk = (job.execute_site, int(end // HOUR) * HOUR)
            self.series[hk] = self.series.get(hk, 0) + total
        top = self.top
        if len(top) < self.config.top:
            heapq.heappush(top, (total, -next(self._seq), {"job": job}))
        elif top and total > top[0][0]:  # ties keep the earlier job
            heapq.heapreplace(top, (total, -next(self._seq), {"job": job}))

    def _add_class(self, cls: str, b_in: int, b_out: int) -> float:
        rates = self._rates.get(cls)
        r_in, r_out, key = rates if rates is not None else self._class_rates(cls)
        charge = b_in * r_in + b_out * r_out
        ct = self.classes.get(key)
        if ct is None:
            ct = self.classes[key] = ClassTotals(cls)
        ct.jobs += 1
        ct.bytes_in += b_in
        ct.bytes_out += b_out
        ct.charge += charge
        return charge

    def result(self) -> dict[str, object]:
        """The accounting section of the report (plain data, JSON-ready)."""
        cfg = self.config
        out: dict[str, object] = {"totals": totals_row("key", "all", self.all)}
        for i, grouping in enumerate(GROUPINGS):
            out[f"by_{grouping}"] = sorted_rows((totals_row(grouping, k, t) for k, t in self.groups[i].items()),
                                                grouping)
        classes = []
        for ct in self.classes.values():
            classes.append({"class": ct.name, "jobs": ct.jobs, "bytes_in": ct.bytes_in, "bytes_out": ct.bytes_out,
                            "bytes_total": ct.bytes_in + ct.bytes_out, "rate_in": cfg.rate(ct.name, "in"),
                            "rate_out": cfg.rate(ct.name, "out"), "charge": ct.charge})
        out["by_class"] = sorted_rows(classes, "class")
        top = []
        for total, _, holder in sorted(self.top, key=lambda e: (-e[0], -e[1])):
            job: JobRecord = holder["job"]  # type: ignore[assignment]
            top.append({"job": job.job, "user": job.user, "group": job.group, "execute_site": job.execute_site,
                        "source_site": job.source_site, "network_type": job.network_type, "bytes_in": job.bytes_in,
                        "bytes_out": job.bytes_out, "bytes_total": total,
                        "charge": job_charge(job, cfg)[0], "start": job.start, "end": job.end})
        out["top_jobs"] = top
        out["distributions"] = {"bytes": summarize(self.job_bytes).as_dict(),
                                "duration_seconds": summarize(self.job_durations).as_dict(),
                                "bytes_per_second": summarize(self.job_rates).as_dict()}
        out["series"] = [{"site": s, "hour": h, "bytes": b} for (s, h), b in sorted(self.series.items())]
        out["inconsistent_class_counters"] = self.inconsistent_classes
        return out
