"""Accounting from job history: totals per user, group, site, traffic class and job, and charges.

:class:`HistoryAccumulator` consumes :class:`HistoryJob` values one at a time (so a history of any size
streams through) and keeps only per-key totals, a top-N heap of jobs, and three numbers per job for the
distributions. No I/O; everything is unit-tested with hand-computed values.

Time series: the bytes in and out of each traffic class are also kept per user, accounting group and
execute site and per time bucket of completion (``CompletionDate``), for the per-user, per-group,
per-site and per-class charts; a class's charge is its bytes times its rates. Buckets are hours while
the completions seen span at most 3 days, and days once they span more (the hourly cells are then
merged into days): a month of history is at most keys x 31 x classes cells per grouping. Each job's
class parts are appended to a flat buffer and summed into the cells with numpy every CHUNK_PARTS
parts, which keeps the per-job cost to one append per class (adding them to three dictionaries of
cells one by one costs about 2 us a job, a tenth of the whole report).

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
from typing import Any

import numpy as np

from lark.report.history import HistoryJob
from lark.report.settings import UNCLASSIFIED, ReportConfig, class_key
from lark.report.stats import summarize

GB = 1e9
HOUR = 3600
DAY = 86400
HOURLY_SPAN = 3 * DAY  # completions spanning more than this are bucketed per day
CHUNK_PARTS = 1 << 14  # class parts buffered before they are summed into the series cells (0.9 MB)
PART_FIELDS = 7  # user id, group id, site id, hour (-1: no CompletionDate), class, bytes in, bytes out
GROUPINGS = ("user", "group", "execute_site", "source_site", "network_type")


def class_breakdown(job: HistoryJob) -> tuple[list[tuple[str, int, int]], bool]:
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


def job_charge(job: HistoryJob, config: ReportConfig,
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


# Per-key totals are plain lists (one add per field, no attribute look-ups): a million jobs times five
# groupings makes this the hot loop of the history report.
J, WITH, B_IN, B_OUT, S_IN, S_OUT, INPUT_MB, WALL, CHARGE = range(9)
N_TOTALS = 9
SERIES_GROUPINGS = GROUPINGS[:3]  # kept per time bucket and class: user, group, execute_site


def new_totals() -> list[float]:
    return [0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0]


def totals_row(key_name: str, key: str, t: list[float]) -> dict[str, object]:
    return {key_name: key, "jobs": t[J], "jobs_with_counters": t[WITH], "bytes_in": t[B_IN], "bytes_out": t[B_OUT],
            "bytes_total": t[B_IN] + t[B_OUT], "sandbox_in": t[S_IN], "sandbox_out": t[S_OUT],
            "input_mb": t[INPUT_MB], "wall_seconds": t[WALL], "charge": t[CHARGE]}


def sorted_rows(rows: Iterable[dict[str, object]], key_name: str) -> list[dict[str, object]]:
    """Largest traffic first; ties by name so output is stable."""
    return sorted(rows, key=lambda r: (-int(r["bytes_total"]), str(r[key_name])))  # type: ignore[call-overload]


def _slices(*columns: np.ndarray, size: int = 4096) -> Iterable[tuple[Any, ...]]:
    """Rows of numpy columns as Python numbers, converted a slice at a time (few objects alive at once)."""
    for lo in range(0, len(columns[0]), size):
        yield from zip(*(c[lo:lo + size].tolist() for c in columns), strict=True)


def _whole(x: float) -> int | float:
    """Byte sums are whole numbers kept in floats (exact below 2**53 = 9 PB): print them as integers."""
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


class HistoryAccumulator:
    """Streaming aggregation of job records (see the module docstring).

    Totals are kept per grouping (user, group, execute site, source site, network type) so memory is
    bounded by each grouping's number of distinct values. (Keeping one cell per combination and rolling
    up later would be faster, but the combinations can approach the number of jobs.) The pool's totals
    are the sums of the users' (every job has exactly one user), computed once in :meth:`result`.
    """

    def __init__(self, config: ReportConfig) -> None:
        self.config = config
        self.groups: list[dict[str, list[float]]] = [{} for _ in GROUPINGS]
        # series: per series grouping, name -> id (as appended to the buffer) and back, and
        # (name, bucket start) -> [bytes in, bytes out] per class index, flattened
        self.ids: list[dict[str, int]] = [{} for _ in SERIES_GROUPINGS]
        self.id_names: list[list[str]] = [[] for _ in SERIES_GROUPINGS]
        self.cells: list[dict[tuple[str, int], list[float]]] = [{} for _ in SERIES_GROUPINGS]
        self.parts = array("d")  # PART_FIELDS per class part, not yet summed into the cells
        self.class_keys: list[str] = []
        self.class_names: list[str] = []  # as first spelt
        self.class_jobs: list[int] = []
        self.class_bytes: list[list[float]] = []  # [in, out] per class index, all jobs
        self.bucket = HOUR
        self._lo = 2**62  # first and last hour seen (none yet: lo > hi)
        self._hi = -1
        self.top: list[tuple[int, int, dict[str, object]]] = []  # min-heap of (bytes, -seq, row)
        self._seq = itertools.count()
        self.job_bytes = array("d")
        self.job_durations = array("d")
        self.job_rates = array("d")
        self.inconsistent_classes = 0
        self._rates: dict[str, tuple[float, float, int]] = {}

    def _class_rates(self, cls: str) -> tuple[float, float, int]:
        """(rate in per byte, rate out per byte, class index), cached per class name."""
        r = self._rates.get(cls)
        if r is None:
            key = cls if cls == UNCLASSIFIED else class_key(cls)
            if key not in self.class_keys:
                self.class_keys.append(key)
                self.class_names.append(cls)
                self.class_jobs.append(0)
                self.class_bytes.append([0.0, 0.0])
            r = self._rates[cls] = (self.config.rate(cls, "in") / GB, self.config.rate(cls, "out") / GB,
                                    self.class_keys.index(key))
        return r

    def _id(self, g: int, name: str) -> int:
        i = self.ids[g][name] = len(self.id_names[g])
        self.id_names[g].append(name)
        return i

    def add(self, job: HistoryJob) -> None:
        bi, bo = job.bytes_in, job.bytes_out
        counted = bi is not None or bo is not None
        bi, bo = bi or 0, bo or 0
        start, end = job.start, job.end
        charge = 0.0
        if counted:
            ids = self.ids
            user, group, site = job[1:4]
            u = ids[0].get(user)
            if u is None:
                u = self._id(0, user)
            g = ids[1].get(group)
            if g is None:
                g = self._id(1, group)
            s = ids[2].get(site)
            if s is None:
                s = self._id(2, site)
            if end is None:
                hour = -1
            else:
                hour = int(end // HOUR)
                if not self._lo <= hour <= self._hi:
                    self._lo, self._hi = min(self._lo, hour), max(self._hi, hour)
            rates = self._rates
            class_jobs = self.class_jobs
            extend = self.parts.extend
            rest_in, rest_out = bi, bo
            for cls, c_in, c_out in job.classes:
                rest_in -= c_in
                rest_out -= c_out
                r = rates.get(cls) or self._class_rates(cls)
                charge += c_in * r[0] + c_out * r[1]
                class_jobs[r[2]] += 1
                extend((u, g, s, hour, r[2], c_in, c_out))
            if rest_in < 0 or rest_out < 0:
                self.inconsistent_classes += 1  # see class_breakdown
                rest_in, rest_out = max(rest_in, 0), max(rest_out, 0)
            if rest_in or rest_out or not job.classes:
                r = rates.get(UNCLASSIFIED) or self._class_rates(UNCLASSIFIED)
                charge += rest_in * r[0] + rest_out * r[1]
                class_jobs[r[2]] += 1
                extend((u, g, s, hour, r[2], rest_in, rest_out))
            if len(self.parts) >= CHUNK_PARTS * PART_FIELDS:
                self._flush()
        duration = end - start if start is not None and end is not None and end >= start else None
        wc = 1 if counted else 0
        si, so, imb, wall = job.sandbox_in, job.sandbox_out, job.input_mb, duration or 0.0
        # job[1:6] is (user, group, execute_site, source_site, network_type), the order of GROUPINGS
        for d, key in zip(self.groups, job[1:6], strict=True):
            t = d.get(key)
            if t is None:
                t = d[key] = new_totals()
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
        top = self.top
        if len(top) < self.config.top:
            heapq.heappush(top, (total, -next(self._seq), {"job": job}))
        elif top and total > top[0][0]:  # ties keep the earlier job
            heapq.heapreplace(top, (total, -next(self._seq), {"job": job}))

    def _flush(self) -> None:
        """Sum the buffered class parts into the class totals and the series cells (numpy, per chunk)."""
        if not self.parts:
            return
        if self.bucket == HOUR and (self._hi - self._lo) * HOUR > HOURLY_SPAN:
            self._to_days()
        a = np.frombuffer(self.parts, dtype=np.float64).reshape(-1, PART_FIELDS)
        nc = len(self.class_keys)
        cls = a[:, 4].astype(np.int64)
        b_in, b_out = a[:, 5], a[:, 6]
        for c, (x, y) in enumerate(zip(np.bincount(cls, weights=b_in, minlength=nc).tolist(),
                                       np.bincount(cls, weights=b_out, minlength=nc).tolist(), strict=True)):
            self.class_bytes[c][0] += x
            self.class_bytes[c][1] += y
        dated = a[:, 3] >= 0
        if dated.any():
            step = self.bucket
            slot = a[dated, 3].astype(np.int64)
            slot *= HOUR
            slot //= step  # the bucket number
            first = int(slot.min())
            slot -= first
            first *= step
            nb = int(slot.max()) + 1
            cls, b_in, b_out = cls[dated], b_in[dated], b_out[dated]
            for g in range(len(SERIES_GROUPINGS)):
                key = a[dated, g].astype(np.int64)  # (id * buckets + bucket) * classes + class, in place
                key *= nb
                key += slot
                key *= nc
                key += cls
                uniq, inverse = np.unique(key, return_inverse=True)
                del key
                sums_in = np.bincount(inverse, weights=b_in)
                sums_out = np.bincount(inverse, weights=b_out)
                del inverse
                names, cells = self.id_names[g], self.cells[g]
                for k, x, y in _slices(uniq, sums_in, sums_out):
                    rest, c = divmod(k, nc)
                    i, b = divmod(rest, nb)
                    ck = (names[i], first + b * step)
                    cell = cells.get(ck)
                    if cell is None:
                        cell = cells[ck] = [0.0] * (2 * nc)
                    elif len(cell) < 2 * nc:
                        cell.extend([0.0] * (2 * nc - len(cell)))
                    cell[2 * c] += x
                    cell[2 * c + 1] += y
        del a
        self.parts = array("d")

    def _to_days(self) -> None:
        """Merge the hourly cells into daily ones (once, when the hours seen first span over HOURLY_SPAN)."""
        self.bucket = DAY
        for cells in self.cells:
            merged: dict[tuple[str, int], list[float]] = {}
            for (key, hour), cell in cells.items():
                k = (key, hour // DAY * DAY)
                m = merged.get(k)
                if m is None:
                    merged[k] = cell
                else:
                    if len(m) < len(cell):
                        m.extend([0.0] * (len(cell) - len(m)))
                    for j, v in enumerate(cell):
                        m[j] += v
            cells.clear()
            cells.update(merged)

    def _class_charges(self, cell: list[float]) -> list[float]:
        """Charge of each class in a cell ([in, out] per class index): its bytes times the class's rates."""
        out = []
        for c in range(len(self.class_keys)):
            if 2 * c < len(cell):
                r = self._rates[self.class_names[c]]
                out.append(cell[2 * c] * r[0] + cell[2 * c + 1] * r[1])
            else:
                out.append(0.0)
        return out

    def series(self, order: dict[str, list[str]]) -> dict[str, object]:
        """Per series grouping and per class: one row per (key, bucket, class) with bytes in, out and charge.

        ``order`` gives each grouping's keys in table order (largest first); rows follow it, then time,
        then class. Jobs without a CompletionDate, and all-zero (key, bucket, class) parts, are left out.
        """
        self._flush()
        names = self.class_names
        # classes in the order first seen, bytes in no class last
        shown = [c for c, k in enumerate(self.class_keys) if k != UNCLASSIFIED] + \
            [c for c, k in enumerate(self.class_keys) if k == UNCLASSIFIED]
        out: dict[str, object] = {"bucket_seconds": self.bucket, "classes": [names[c] for c in shown]}
        per_class: dict[tuple[int, int], list[float]] = {}
        for g, grouping in enumerate(SERIES_GROUPINGS):
            rank = {k: n for n, k in enumerate(order[grouping])}
            rows = []
            for (key, b), cell in sorted(self.cells[g].items(), key=lambda kc: (rank.get(kc[0][0], len(rank)),
                                                                                  kc[0][1])):
                charges = self._class_charges(cell)
                for c in shown:
                    if 2 * c >= len(cell):
                        continue
                    b_in, b_out, charge = cell[2 * c], cell[2 * c + 1], charges[c]
                    if b_in or b_out or charge:
                        rows.append({grouping: key, "start": b, "class": names[c], "bytes_in": _whole(b_in),
                                     "bytes_out": _whole(b_out), "charge": charge})
                        if g == 0:  # every job has one user: the users' cells add up to the classes'
                            pc = per_class.setdefault((c, b), [0.0, 0.0, 0.0])
                            pc[0] += b_in
                            pc[1] += b_out
                            pc[2] += charge
            out[f"by_{grouping}"] = rows
        position = {c: n for n, c in enumerate(shown)}
        out["by_class"] = [{"class": names[c], "start": b, "bytes_in": _whole(v[0]), "bytes_out": _whole(v[1]),
                            "charge": v[2]}
                           for (c, b), v in sorted(per_class.items(), key=lambda kv: (kv[0][1], position[kv[0][0]]))]
        return out

    def result(self) -> dict[str, object]:
        """The accounting section of the report (plain data, JSON-ready)."""
        self._flush()
        cfg = self.config
        everything = new_totals()
        for t in self.groups[0].values():
            for j in range(N_TOTALS):
                everything[j] += t[j]
        out: dict[str, object] = {"totals": totals_row("key", "all", everything)}
        for i, grouping in enumerate(GROUPINGS):
            out[f"by_{grouping}"] = sorted_rows((totals_row(grouping, k, t) for k, t in self.groups[i].items()),
                                                grouping)
        classes = []
        for name, jobs, (b_in, b_out), charge in zip(self.class_names, self.class_jobs, self.class_bytes,
                                                     self._class_charges([x for io in self.class_bytes for x in io]),
                                                     strict=True):
            classes.append({"class": name, "jobs": jobs, "bytes_in": _whole(b_in), "bytes_out": _whole(b_out),
                            "bytes_total": _whole(b_in + b_out), "rate_in": cfg.rate(name, "in"),
                            "rate_out": cfg.rate(name, "out"), "charge": charge})
        out["by_class"] = sorted_rows(classes, "class")
        top = []
        for total, _, holder in sorted(self.top, key=lambda e: (-e[0], -e[1])):
            job: HistoryJob = holder["job"]  # type: ignore[assignment]
            top.append({"job": job.job, "user": job.user, "group": job.group, "execute_site": job.execute_site,
                        "source_site": job.source_site, "network_type": job.network_type, "bytes_in": job.bytes_in,
                        "bytes_out": job.bytes_out, "bytes_total": total,
                        "charge": job_charge(job, cfg)[0], "start": job.start, "end": job.end})
        out["top_jobs"] = top
        out["distributions"] = {"bytes": summarize(self.job_bytes).as_dict(),
                                "duration_seconds": summarize(self.job_durations).as_dict(),
                                "bytes_per_second": summarize(self.job_rates).as_dict()}
        out["series"] = self.series({g: [str(r[g]) for r in out[f"by_{g}"]]  # type: ignore[attr-defined]
                                     for g in SERIES_GROUPINGS})
        out["inconsistent_class_counters"] = self.inconsistent_classes
        return out
