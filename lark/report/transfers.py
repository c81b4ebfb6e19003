"""Transfers, sessions, circuit suitability and concurrency: the network engineer's half of the report.

Everything here is pure: functions take columns and return columns or small result objects. Transfers
are stored column-wise (``array('d')`` / ``array('i')`` while reading, about 32 bytes a transfer, viewed
as numpy arrays without copying for the analyses) rather than as one Python object each: a month of
GridFTP logs is millions of lines and an object per line would cost ten times the memory. Every step
is a sort or a vectorised pass, O(n log n) overall.

Definitions (docs/report.md explains how to read them):

* A **session** is a run of transfers of the same user between the same two endpoints (server HOST
  and remote DEST, whichever way the data flowed) where each transfer *starts* at most ``gap`` seconds
  after the **latest completion so far** in the session. Overlapping transfers therefore always join,
  and a transfer starting exactly ``gap`` seconds after that completion still joins (``<=``). This is
  the rule of the UVA GridFTP study (default gap 60 s).
* **Effective session throughput** = session bytes / (last completion - first start): idle gaps count.
* **Circuit suitability**: of the sessions carrying at least ``min_bytes``, the share that would last
  longer than ``min_seconds`` (strictly) if moved at a reference rate, the 3rd quartile of observed
  throughput (of transfers by default, or of sessions).
* **Concurrency** of a transfer: the time-weighted mean number of *other* transfers in progress on the
  same server during its lifetime, i.e. (integral of the server's active-transfer count over
  [start, end)) / (end - start) - 1. Computed from one sort of all start/end events: O(n log n).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from lark.report.stats import as_array, pearson, quantile_sorted, spearman, summarize


class Transfer(NamedTuple):
    """One completed transfer (a GridFTP transfer-log line). Times are UTC epoch seconds.

    A NamedTuple: a log has millions of lines and tuples are the cheapest record to build.
    """

    start: float
    end: float
    nbytes: int
    user: str
    server: str
    remote: str
    kind: str = "RETR"
    file: str = ""
    streams: int | None = None
    stripes: int | None = None
    taskid: str | None = None
    line: int = 0

    @property
    def duration(self) -> float:
        return self.end - self.start


class Interner:
    """Maps repeated strings (users, hosts) to small integer ids so columns stay numeric."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._ids: dict[str, int] = {}

    def id(self, name: str) -> int:
        i = self._ids.get(name)
        if i is None:
            i = self._ids[name] = len(self.names)
            self.names.append(name)
        return i

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class TransferTable:
    """Column store of transfers: start, end, bytes, type and ``pairs[i]``, the id of (user, server,
    remote) -- the session key -- about 32 bytes a transfer."""

    starts: array = field(default_factory=lambda: array("d"))
    ends: array = field(default_factory=lambda: array("d"))
    sizes: array = field(default_factory=lambda: array("d"))
    kinds: array = field(default_factory=lambda: array("i"))
    pairs: array = field(default_factory=lambda: array("i"))
    names: Interner = field(default_factory=Interner)
    pair_keys: list[tuple[int, int, int]] = field(default_factory=list)
    _pair_ids: dict[tuple[int, int, int], int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start: float, end: float, nbytes: float, user: str, server: str, remote: str,
            kind: str = "RETR") -> None:
        intern = self.names.id
        u, s, r = intern(user), intern(server), intern(remote)
        key = (u, s, r)
        p = self._pair_ids.get(key)
        if p is None:
            p = self._pair_ids[key] = len(self.pair_keys)
            self.pair_keys.append(key)
        self.starts.append(start)
        self.ends.append(end)
        self.sizes.append(nbytes)
        self.kinds.append(intern(kind))
        self.pairs.append(p)

    def add_transfer(self, t: Transfer) -> None:
        self.add(t.start, t.end, t.nbytes, t.user, t.server, t.remote, t.kind)

    @classmethod
    def from_transfers(cls, transfers: Iterable[Transfer]) -> TransferTable:
        table = cls()
        for t in transfers:
            table.add_transfer(t)
        return table

    def pair_names(self, pair: int) -> tuple[str, str, str]:
        u, s, r = self.pair_keys[int(pair)]
        return self.names.names[u], self.names.names[s], self.names.names[r]

    def column(self, name: str) -> np.ndarray:
        """Zero-copy numpy view of a column (float64 for times and sizes, int32 for ids).

        ``users``, ``servers`` and ``remotes`` are not stored per transfer (the pair id determines
        them); they are computed on request, which saves 12 bytes a transfer.
        """
        if name in ("users", "servers", "remotes"):
            which = ("users", "servers", "remotes").index(name)
            by_pair = np.array([k[which] for k in self.pair_keys], dtype=np.int32)
            return by_pair[self.column("pairs")] if len(self) else np.empty(0, dtype=np.int32)
        col: array = getattr(self, name)
        dtype = np.float64 if col.typecode == "d" else np.int32
        return np.frombuffer(col, dtype=dtype) if len(col) else np.empty(0, dtype=dtype)


@dataclass
class SessionTable:
    """Column store of sessions, ordered by (pair, start)."""

    pairs: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    sizes: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def rows(self) -> list[tuple[int, float, float, float, int]]:
        """(pair, start, end, bytes, transfers) sorted by pair then start: convenient for tests."""
        return [(int(p), float(s), float(e), float(b), int(c)) for p, s, e, b, c in
                zip(self.pairs, self.starts, self.ends, self.sizes, self.counts, strict=True)]


def merge_sessions(table: TransferTable, gap: float) -> SessionTable:
    """Merge transfers into sessions (see the module docstring for the rule). O(n log n), exact.

    Transfers are sorted by (pair, start) -- logs are written in completion order, so sorting by
    start first is essential. A transfer opens a new session when it is the first of its pair or
    starts more than ``gap`` after the latest completion so far in its pair. That running maximum is
    computed without a Python loop and without rounding: each end is replaced by its rank among all
    ends (an integer), offset by pair-group number times n so that one cumulative maximum over the
    whole array restarts in every group.
    """
    if gap < 0:
        raise ValueError(f"session gap must be >= 0 seconds, got {gap}")
    n = len(table)
    if n == 0:
        empty = np.empty(0)
        return SessionTable(np.empty(0, dtype=np.int64), empty, empty, empty, np.empty(0, dtype=np.int64))
    # Memory matters here (a month of logs is millions of transfers): intermediates are freed as soon
    # as they are used, and the big ones are updated in place.
    starts, ends, sizes, pairs = (table.column(c) for c in ("starts", "ends", "sizes", "pairs"))
    order = np.lexsort((starts, pairs))
    s = starts[order]
    e = ends[order]
    p = pairs[order]
    new_pair = np.empty(n, dtype=bool)
    new_pair[0] = True
    np.not_equal(p[1:], p[:-1], out=new_pair[1:])
    base = np.cumsum(new_pair, dtype=np.int64)
    base -= 1
    base *= n  # group number * n
    by_end = np.argsort(e, kind="stable")
    key = np.empty(n, dtype=np.int64)
    key[by_end] = np.arange(n, dtype=np.int64)  # rank of each end among all ends
    key += base
    np.maximum.accumulate(key, out=key)
    key -= base  # rank of the latest end so far in the group
    del base
    latest = e[by_end[key]]
    del key, by_end
    breaks = new_pair
    breaks[1:] |= (s[1:] - latest[:-1]) > gap
    del latest
    first = np.flatnonzero(breaks)
    del breaks
    return SessionTable(pairs=p[first].astype(np.int64), starts=s[first], ends=np.maximum.reduceat(e, first),
                        sizes=np.add.reduceat(sizes[order], first),
                        counts=np.diff(np.append(first, n)).astype(np.int64))


def throughputs(starts: Any, ends: Any, sizes: Any) -> np.ndarray:
    """bytes/s per item; NaN where the duration is zero (a rate is undefined, not infinite)."""
    s, e, b = as_array(starts), as_array(ends), as_array(sizes)
    d = e - s
    out = np.full(len(d), np.nan)
    np.divide(b, d, out=out, where=d > 0)
    return out


def durations(starts: Any, ends: Any) -> np.ndarray:
    return as_array(ends) - as_array(starts)


def finite(values: Any) -> np.ndarray:
    a = as_array(values)
    return a[~np.isnan(a)]


@dataclass(frozen=True)
class CircuitResult:
    min_bytes: float
    min_seconds: float
    rate_basis: str
    rate: float | None  # bytes/s used for the what-if durations
    eligible: int  # sessions with at least min_bytes
    suitable: int  # of those, lasting longer than min_seconds at `rate`
    eligible_bytes: float
    suitable_bytes: float

    @property
    def share(self) -> float | None:
        return self.suitable / self.eligible if self.eligible and self.rate else None

    @property
    def bytes_share(self) -> float | None:
        return self.suitable_bytes / self.eligible_bytes if self.eligible_bytes and self.rate else None

    def as_dict(self) -> dict[str, object]:
        return {"min_bytes": self.min_bytes, "min_seconds": self.min_seconds, "rate_basis": self.rate_basis,
                "rate_bytes_per_second": self.rate, "eligible_sessions": self.eligible,
                "suitable_sessions": self.suitable, "share": self.share, "eligible_bytes": self.eligible_bytes,
                "suitable_bytes": self.suitable_bytes, "bytes_share": self.bytes_share}


def circuit_suitability(session_sizes: Iterable[float], rate: float | None, min_bytes: float = 100e6,
                        min_seconds: float = 600.0, rate_basis: str = "transfers") -> CircuitResult:
    """Share of sessions >= min_bytes whose size / rate exceeds min_seconds (strictly longer)."""
    eligible = suitable = 0
    eligible_bytes = suitable_bytes = 0.0
    for size in session_sizes:
        if size < min_bytes:
            continue
        eligible += 1
        eligible_bytes += size
        if rate and size / rate > min_seconds:
            suitable += 1
            suitable_bytes += size
    return CircuitResult(min_bytes, min_seconds, rate_basis, rate, eligible, suitable, eligible_bytes,
                         suitable_bytes)


def third_quartile_rate(rates: Any) -> float | None:
    """Q3 of the finite, positive rates (zero-byte transfers would drag a circuit's what-if rate to 0)."""
    a = as_array(rates)
    a = a[a > 0]  # NaN compares False, so it goes too
    return quantile_sorted(np.sort(a), 0.75)


def transfer_concurrency(table: TransferTable) -> np.ndarray:
    """Per transfer, the time-weighted mean number of other transfers active on the same server.

    See :func:`server_timelines`, which computes it together with each server's utilisation.
    """
    return server_timelines(table)[0]


UTILISATION_BUCKET = 3600  # seconds: server utilisation is given per hour


def server_timelines(table: TransferTable, bucket: int = UTILISATION_BUCKET,
                     rates: np.ndarray | None = None) -> tuple[np.ndarray, list[dict[str, object]]]:
    """(concurrency per transfer, utilisation rows per server and bucket), from one sort of events.

    All start (+1) and end (-1) events are sorted by (server, time, ends before starts). The running
    count C after each event is one cumulative sum -- it returns to 0 after a server's last event, so
    it restarts by itself from one server to the next -- and the running integral F of C is another
    (C * dt is 0 across a server boundary because C is 0 there). A transfer's integral is
    F(its end event) - F(its start event), which includes its own (end - start); F only grows by the
    busy time, so the difference loses no precision to the size of epoch timestamps. Concurrency is
    NaN for zero-duration transfers.

    Utilisation: each transfer is taken to move its bytes at a constant rate over [start, end). The
    server's total rate R after each event is the cumulative sum of +rate at starts and -rate at ends,
    and the bytes moved up to an event time, G, its integral; G is piecewise linear between events, so
    the bytes in a bucket [b, b + bucket) are G(b + bucket) - G(b), read by linear interpolation (the
    rounding left in R between servers is never read: each server's G starts at 0 on its own events). A
    zero-duration transfer's bytes go to the bucket of its end. Rows: ``{server, start, bytes,
    bits_per_second}`` (the bucket's mean rate) for every bucket with bytes, by server then time.
    """
    n = len(table)
    out = np.full(n, np.nan)
    if n == 0:
        return out, []
    starts, ends, sizes, servers = (table.column(c) for c in ("starts", "ends", "sizes", "servers"))
    if rates is None:
        rates = throughputs(starts, ends, sizes)
    # Memory matters (2n events of a month of logs): every temporary is freed as soon as it is used.
    # events 0..n-1 are the ends, n..2n-1 the starts
    times = np.concatenate((ends, starts))
    is_start = np.zeros(2 * n, dtype=np.int8)
    is_start[n:] = 1
    order = np.lexsort((is_start, times, np.concatenate((servers, servers))))
    t = times[order]
    del times
    count = is_start[order].astype(np.int32)
    del is_start
    count *= 2
    count -= 1  # +1 for a start, -1 for an end
    np.cumsum(count, out=count)
    dt = np.diff(t)
    del t
    dt *= count[:-1]
    del count
    integral = np.empty(2 * n)
    integral[0] = 0.0
    np.cumsum(dt, out=integral[1:])
    del dt
    f = np.empty(2 * n)
    f[order] = integral
    del integral
    d = ends - starts
    ok = d > 0
    out[ok] = np.maximum((f[:n][ok] - f[n:][ok]) / d[ok] - 1.0, 0.0)
    del f, d

    # utilisation: the same sorted events, weighted by each transfer's rate
    t = np.concatenate((ends, starts))[order]
    r = np.nan_to_num(np.where(ok, rates, 0.0), nan=0.0)
    rate = np.concatenate((-r, r))[order]
    del r, order
    np.cumsum(rate, out=rate)  # the server's total rate after each event
    dt = np.diff(t)
    moved = rate[:-1]
    moved *= dt  # bytes moved between consecutive events
    del dt
    np.cumsum(moved, out=moved)  # moved[k]: bytes moved up to event k + 1
    # events are grouped by server id in ascending order, two per transfer
    per_server = np.bincount(servers) * 2
    bounds = np.concatenate(([0], np.cumsum(per_server)))
    names = table.names.names
    instant = np.flatnonzero(~ok)  # zero-duration transfers: few
    instant_servers = servers[instant]
    rows: list[dict[str, object]] = []
    for server in np.flatnonzero(per_server).tolist():
        a, b = int(bounds[server]), int(bounds[server + 1])
        ts = t[a:b]
        g = np.empty(b - a)  # bytes moved on this server up to each of its events
        g[0] = 0.0
        g[1:] = moved[a:b - 1]
        g[1:] -= moved[a - 1] if a else 0.0
        first = int(ts[0] // bucket) * bucket
        last = int(ts[-1] // bucket) * bucket + bucket  # the end of the bucket of the last event
        edges = np.arange(first, last + 1, bucket, dtype=np.float64)
        per_bucket = np.diff(np.interp(edges, ts, g))
        mine = instant[instant_servers == server]
        if len(mine):
            idx = ((ends[mine] - first) // bucket).astype(np.int64)
            per_bucket += np.bincount(idx, weights=sizes[mine], minlength=len(per_bucket))
        for k in np.flatnonzero(per_bucket > 0):
            moved_bytes = float(per_bucket[k])
            rows.append({"server": names[server], "start": int(edges[k]), "bytes": moved_bytes,
                         "bits_per_second": moved_bytes * 8 / bucket})
    rows.sort(key=lambda row: (str(row["server"]), int(row["start"])))  # type: ignore[call-overload]
    return out, rows


CONCURRENCY_BUCKETS: tuple[tuple[float, float], ...] = ((0, 0.5), (0.5, 1.5), (1.5, 3.5), (3.5, 7.5),
                                                        (7.5, 15.5), (15.5, math.inf))
BUCKET_LABELS = ("~0", "~1", "2-3", "4-7", "8-15", "16+")


def concurrency_buckets(concurrency: Any, rates: Any) -> list[dict[str, object]]:
    """Quartiles of throughput per band of mean concurrency (bands by rounding)."""
    c, r = as_array(concurrency), as_array(rates)
    ok = ~(np.isnan(c) | np.isnan(r))
    c, r = c[ok], r[ok]
    out: list[dict[str, object]] = []
    for label, (lo, hi) in zip(BUCKET_LABELS, CONCURRENCY_BUCKETS, strict=True):
        d = summarize(r[(c >= lo) & (c < hi)])
        out.append({"concurrency": label, "transfers": d.count, "q1": d.q1, "median": d.median, "q3": d.q3})
    return out


def top_sessions(sessions: SessionTable, n: int) -> list[int]:
    """Indices of the n largest sessions by bytes (ties: earlier start first)."""
    if n <= 0 or len(sessions) == 0:
        return []
    order = np.lexsort((sessions.starts, -sessions.sizes))
    return [int(i) for i in order[:n]]


def _totals(keys: np.ndarray, sizes: np.ndarray, names: Sequence[str], label: str) -> list[dict[str, object]]:
    count = np.bincount(keys, minlength=len(names))
    total = np.bincount(keys, weights=sizes, minlength=len(names))
    rows = [{label: names[k], "transfers": int(count[k]), "bytes": float(total[k])} for k in np.flatnonzero(count)]
    return sorted(rows, key=lambda r: (-float(r["bytes"]), str(r[label])))  # type: ignore[arg-type]


@dataclass
class TransferAnalysis:
    """The report section (plain, JSON-ready data) plus the per-item columns the plots need."""

    summary: dict[str, object]
    transfer_rates: np.ndarray
    session_rates: np.ndarray
    session_durations: np.ndarray
    session_sizes: np.ndarray
    concurrency: np.ndarray


def analyze_transfers(table: TransferTable, gap: float = 60.0, circuit_min_bytes: float = 100e6,
                      circuit_min_seconds: float = 600.0, rate_basis: str = "transfers",
                      top: int = 10) -> TransferAnalysis:
    """Totals, distributions, sessions, circuit suitability and concurrency of a set of transfers.

    Pure; O(n log n) in the number of transfers."""
    if rate_basis not in ("transfers", "sessions"):
        raise ValueError(f"rate basis must be transfers or sessions, got {rate_basis!r}")
    # Steps run one after the other so that each one's temporaries are gone before the next starts.
    names = table.names.names
    starts, ends, sizes = table.column("starts"), table.column("ends"), table.column("sizes")
    sessions = merge_sessions(table, gap)
    s_rates = throughputs(sessions.starts, sessions.ends, sessions.sizes)
    s_durations = durations(sessions.starts, sessions.ends)
    t_rates = throughputs(starts, ends, sizes)
    conc, utilisation = server_timelines(table, rates=t_rates)
    rate = third_quartile_rate(t_rates if rate_basis == "transfers" else s_rates)
    circuit = circuit_suitability(sessions.sizes.tolist(), rate, circuit_min_bytes, circuit_min_seconds, rate_basis)

    ok = ~(np.isnan(conc) | np.isnan(t_rates))
    xs, ys = conc[ok], t_rates[ok]
    del ok
    concurrency = {"scope": "other transfers on the same server, time-weighted over each transfer",
                   "transfers": len(xs), "mean": float(xs.mean()) if len(xs) else None,
                   "pearson": pearson(xs, ys), "spearman": spearman(xs, ys),
                   "buckets": []}
    del xs, ys
    concurrency["buckets"] = concurrency_buckets(conc, t_rates)

    users = np.array([k[0] for k in table.pair_keys], dtype=np.int64)
    sessions_per_user = np.bincount(users[sessions.pairs], minlength=len(names)) if len(sessions) else \
        np.zeros(len(names), dtype=np.int64)
    by_user = _totals(table.column("users"), sizes, names, "user")
    ids = {name: i for i, name in enumerate(names)}
    for row in by_user:
        row["sessions"] = int(sessions_per_user[ids[str(row["user"])]])

    series: list[dict[str, object]] = []
    if len(table):
        hours = (ends // 3600).astype(np.int64)
        h0 = int(hours.min())
        span = int(hours.max()) - h0 + 1
        key = table.column("servers").astype(np.int64) * span + (hours - h0)
        uniq, inverse = np.unique(key, return_inverse=True)
        total = np.bincount(inverse, weights=sizes)
        series = [{"server": names[int(k // span)], "hour": (h0 + int(k % span)) * 3600, "bytes": float(b)}
                  for k, b in zip(uniq, total, strict=True)]
        series.sort(key=lambda r: (str(r["server"]), int(r["hour"])))  # type: ignore[call-overload]

    top_rows = []
    for i in top_sessions(sessions, top):
        user, server, remote = table.pair_names(sessions.pairs[i])
        st, en, b = float(sessions.starts[i]), float(sessions.ends[i]), float(sessions.sizes[i])
        d = en - st
        top_rows.append({"user": user, "server": server, "remote": remote, "start": st, "end": en,
                         "duration_seconds": d, "bytes": b, "transfers": int(sessions.counts[i]),
                         "bytes_per_second": b / d if d > 0 else None})

    summary = {
        "transfers": len(table), "bytes": float(sizes.sum()),
        "by_user": by_user,
        "by_server": _totals(table.column("servers"), sizes, names, "server"),
        "by_remote": _totals(table.column("remotes"), sizes, names, "remote"),
        "by_type": _totals(table.column("kinds"), sizes, names, "type"),
        "distributions": {
            "transfers": {"bytes": summarize(sizes).as_dict(),
                          "duration_seconds": summarize(durations(starts, ends)).as_dict(),
                          "bytes_per_second": summarize(finite(t_rates)).as_dict()},
            "sessions": {"bytes": summarize(sessions.sizes).as_dict(),
                         "duration_seconds": summarize(s_durations).as_dict(),
                         "bytes_per_second": summarize(finite(s_rates)).as_dict(),
                         "transfers_per_session": summarize(sessions.counts).as_dict()},
        },
        "sessions": {"count": len(sessions), "gap_seconds": gap, "top": top_rows},
        "circuit": circuit.as_dict(),
        "concurrency": concurrency,
        "series": series,
        "utilisation": {"bucket_seconds": UTILISATION_BUCKET, "rows": utilisation},
    }
    return TransferAnalysis(summary, t_rates, s_rates, s_durations, sessions.sizes, conc)
