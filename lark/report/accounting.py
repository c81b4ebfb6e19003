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


def job_charge(job: JobRecord, config: ReportConfig) -> tuple[float, list[tuple[str, int, int, float]]]:
    """Total charge of one job and its (class, in, out, charge) parts."""
    parts = []
    total = 0.0
    breakdown, _ = class_breakdown(job)
    for cls, b_in, b_out in breakdown:
        charge = b_in / GB * config.rate(cls, "in") + b_out / GB * config.rate(cls, "out")
        parts.append((cls, b_in, b_out, charge))
        total += charge
    return total, parts


@dataclass
class Totals:
    jobs: int = 0
    with_counters: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    sandbox_in: int = 0
    sandbox_out: int = 0
    input_mb: float = 0.0
    wall_seconds: float = 0.0
    charge: float = 0.0

    def row(self, key_name: str, key: str) -> dict[str, object]:
        return {key_name: key, "jobs": self.jobs, "jobs_with_counters": self.with_counters,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "bytes_total": self.bytes_in + self.bytes_out,
                "sandbox_in": self.sandbox_in, "sandbox_out": self.sandbox_out, "input_mb": self.input_mb,
                "wall_seconds": self.wall_seconds, "charge": self.charge}


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
    """Streaming aggregation of job records (see the module docstring)."""

    def __init__(self, config: ReportConfig) -> None:
        self.config = config
        self.all = Totals()
        self.groups: dict[str, dict[str, Totals]] = {g: {} for g in GROUPINGS}
        self.classes: dict[str, ClassTotals] = {}
        self.top: list[tuple[int, int, dict[str, object]]] = []  # min-heap of (bytes, -seq, row)
        self._seq = itertools.count()
        self.series: dict[tuple[str, int], int] = {}
        self.job_bytes = array("d")
        self.job_durations = array("d")
        self.job_rates = array("d")
        self.inconsistent_classes = 0

    def add(self, job: JobRecord) -> None:
        total = job.bytes_total
        charge, parts = job_charge(job, self.config) if total is not None else (0.0, [])
        if total is not None and class_breakdown(job)[1]:
            self.inconsistent_classes += 1
        duration = job.duration
        for grouping in GROUPINGS:
            key = getattr(job, grouping)
            t = self.groups[grouping].get(key)
            if t is None:
                t = self.groups[grouping][key] = Totals()
            self._add_totals(t, job, charge, duration)
        self._add_totals(self.all, job, charge, duration)
        for cls, b_in, b_out, c in parts:
            k = cls if cls == UNCLASSIFIED else class_key(cls)
            ct = self.classes.get(k)
            if ct is None:
                ct = self.classes[k] = ClassTotals(cls)
            ct.jobs += 1
            ct.bytes_in += b_in
            ct.bytes_out += b_out
            ct.charge += c
        if total is None:
            return
        self.job_bytes.append(total)
        if duration is not None:
            self.job_durations.append(duration)
            if duration > 0:
                self.job_rates.append(total / duration)
        if job.end is not None:
            hk = (job.execute_site, int(job.end // HOUR) * HOUR)
            self.series[hk] = self.series.get(hk, 0) + total
        top_n = self.config.top
        if top_n > 0:
            entry = (total, -next(self._seq), {"job": job})
            if len(self.top) < top_n:
                heapq.heappush(self.top, entry)  # type: ignore[misc]
            elif entry[:2] > self.top[0][:2]:
                heapq.heapreplace(self.top, entry)  # type: ignore[misc]

    @staticmethod
    def _add_totals(t: Totals, job: JobRecord, charge: float, duration: float | None) -> None:
        t.jobs += 1
        if job.bytes_total is not None:
            t.with_counters += 1
            t.bytes_in += job.bytes_in or 0
            t.bytes_out += job.bytes_out or 0
        t.sandbox_in += job.sandbox_in
        t.sandbox_out += job.sandbox_out
        t.input_mb += job.input_mb
        if duration is not None:
            t.wall_seconds += duration
        t.charge += charge

    def result(self) -> dict[str, object]:
        """The accounting section of the report (plain data, JSON-ready)."""
        cfg = self.config
        out: dict[str, object] = {"totals": self.all.row("key", "all")}
        for grouping in GROUPINGS:
            out[f"by_{grouping}"] = sorted_rows((t.row(grouping, k) for k, t in self.groups[grouping].items()),
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
