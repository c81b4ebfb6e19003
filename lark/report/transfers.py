"""Transfers, sessions, circuit suitability and concurrency: the network engineer's half of the report.

Everything here is pure: functions take columns and return columns or small result objects. Transfers
are stored column-wise (``array('d')`` / ``array('l')``, about 40 bytes a transfer) rather than as one
Python object each, because a month of GridFTP logs is millions of lines and an object per line would
cost ten times the memory.

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
  [start, end)) / (end - start) - 1. Computed with one sorted sweep per direction: O(n log n).
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lark.report.stats import quantile_sorted, summarize

NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Transfer:
    """One completed transfer (a GridFTP transfer-log line). Times are UTC epoch seconds."""

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
    """Column store of transfers. ``pairs[i]`` identifies (user, server, remote), the session key."""

    starts: array = field(default_factory=lambda: array("d"))
    ends: array = field(default_factory=lambda: array("d"))
    sizes: array = field(default_factory=lambda: array("d"))
    users: array = field(default_factory=lambda: array("l"))
    servers: array = field(default_factory=lambda: array("l"))
    remotes: array = field(default_factory=lambda: array("l"))
    kinds: array = field(default_factory=lambda: array("l"))
    pairs: array = field(default_factory=lambda: array("l"))
    names: Interner = field(default_factory=Interner)
    pair_keys: list[tuple[int, int, int]] = field(default_factory=list)
    _pair_ids: dict[tuple[int, int, int], int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start: float, end: float, nbytes: float, user: str, server: str, remote: str,
            kind: str = "RETR") -> None:
        names = self.names
        u, s, r = names.id(user), names.id(server), names.id(remote)
        key = (u, s, r)
        p = self._pair_ids.get(key)
        if p is None:
            p = self._pair_ids[key] = len(self.pair_keys)
            self.pair_keys.append(key)
        self.starts.append(start)
        self.ends.append(end)
        self.sizes.append(nbytes)
        self.users.append(u)
        self.servers.append(s)
        self.remotes.append(r)
        self.kinds.append(names.id(kind))
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
        u, s, r = self.pair_keys[pair]
        return self.names.names[u], self.names.names[s], self.names.names[r]


@dataclass
class SessionTable:
    """Column store of sessions, in the order they closed."""

    pairs: array = field(default_factory=lambda: array("l"))
    starts: array = field(default_factory=lambda: array("d"))
    ends: array = field(default_factory=lambda: array("d"))
    sizes: array = field(default_factory=lambda: array("d"))
    counts: array = field(default_factory=lambda: array("l"))

    def __len__(self) -> int:
        return len(self.starts)

    def append(self, pair: int, start: float, end: float, size: float, count: int) -> None:
        self.pairs.append(pair)
        self.starts.append(start)
        self.ends.append(end)
        self.sizes.append(size)
        self.counts.append(count)

    def rows(self) -> list[tuple[int, float, float, float, int]]:
        """(pair, start, end, bytes, transfers) sorted by pair then start: convenient for tests."""
        out = list(zip(self.pairs, self.starts, self.ends, self.sizes, self.counts, strict=True))
        return sorted(out, key=lambda r: (r[0], r[1]))


def start_order(table: TransferTable) -> list[int]:
    """Indices of the transfers sorted by start (stable: ties keep input order)."""
    return sorted(range(len(table)), key=table.starts.__getitem__)


def merge_sessions(table: TransferTable, gap: float, order: Sequence[int] | None = None) -> SessionTable:
    """Merge transfers into sessions (see the module docstring for the rule). O(n log n).

    One pass over all transfers in start order keeps, per (user, server, remote), the open session's
    first start, latest completion so far, bytes and count; a transfer that starts later than
    latest-completion + gap closes it. Logs are written in completion order, so sorting by start first
    is essential.
    """
    if gap < 0:
        raise ValueError(f"session gap must be >= 0 seconds, got {gap}")
    if order is None:
        order = start_order(table)
    starts, ends, sizes, pairs = table.starts, table.ends, table.sizes, table.pairs
    open_: dict[int, list[float]] = {}  # pair -> [first start, latest end, bytes, count]
    out = SessionTable()
    for i in order:
        p = pairs[i]
        s = starts[i]
        cur = open_.get(p)
        if cur is not None and s - cur[1] <= gap:
            e = ends[i]
            if e > cur[1]:
                cur[1] = e
            cur[2] += sizes[i]
            cur[3] += 1
            continue
        if cur is not None:
            out.append(p, cur[0], cur[1], cur[2], int(cur[3]))
        open_[p] = [s, ends[i], sizes[i], 1]
    for p, cur in open_.items():
        out.append(p, cur[0], cur[1], cur[2], int(cur[3]))
    return out


def throughputs(starts: Sequence[float], ends: Sequence[float], sizes: Sequence[float]) -> array:
    """bytes/s per item; NaN where the duration is zero (a rate is undefined, not infinite)."""
    out = array("d")
    for s, e, b in zip(starts, ends, sizes, strict=True):
        d = e - s
        out.append(b / d if d > 0 else NAN)
    return out


def durations(starts: Sequence[float], ends: Sequence[float]) -> array:
    return array("d", (e - s for s, e in zip(starts, ends, strict=True)))


def finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


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


def third_quartile_rate(rates: Iterable[float]) -> float | None:
    """Q3 of the finite, positive rates (zero-byte transfers would drag a circuit's what-if rate to 0)."""
    data = sorted(r for r in rates if r > 0 and not math.isnan(r))
    return quantile_sorted(data, 0.75)


def transfer_concurrency(table: TransferTable, order: Sequence[int] | None = None) -> array:
    """Per transfer, the time-weighted mean number of other transfers active on the same server.

    Let C_h(t) be the number of transfers in progress on server h at time t (intervals [start, end))
    and F_h(t) its running integral. Walking the start events and end events in time order (two sorted
    lists merged) gives F_h at every start and end, so a transfer's integral is F(end) - F(start),
    which includes its own (end - start). Times are taken relative to the earliest start so the
    running sums stay small and exact enough. NaN for zero-duration transfers.
    """
    n = len(table)
    out = array("d", [NAN]) * n
    if n == 0:
        return out
    starts, ends, servers = table.starts, table.ends, table.servers
    if order is None:
        order = start_order(table)
    by_end = sorted(range(n), key=ends.__getitem__)
    t0 = starts[order[0]]
    nserv = max(servers) + 1
    active = [0] * nserv
    integral = [0.0] * nserv
    last_t = [t0] * nserv
    f_start = array("d", bytes(8 * n))
    i_s = i_e = 0
    while i_s < n or i_e < n:
        # ends first on ties: the order does not change any integral (zero width), only counts at t
        if i_e < n and (i_s >= n or ends[by_end[i_e]] <= starts[order[i_s]]):
            k = by_end[i_e]
            i_e += 1
            t = ends[k]
            h = servers[k]
            integral[h] += active[h] * (t - last_t[h])
            last_t[h] = t
            active[h] -= 1
            d = t - starts[k]
            if d > 0:
                out[k] = max(0.0, (integral[h] - f_start[k]) / d - 1.0)
        else:
            k = order[i_s]
            i_s += 1
            t = starts[k]
            h = servers[k]
            integral[h] += active[h] * (t - last_t[h])
            last_t[h] = t
            active[h] += 1
            f_start[k] = integral[h]
    return out


CONCURRENCY_BUCKETS: tuple[tuple[float, float], ...] = ((0, 0.5), (0.5, 1.5), (1.5, 3.5), (3.5, 7.5),
                                                        (7.5, 15.5), (15.5, math.inf))
BUCKET_LABELS = ("~0", "~1", "2-3", "4-7", "8-15", "16+")


def concurrency_buckets(concurrency: Sequence[float], rates: Sequence[float]) -> list[dict[str, object]]:
    """Median and quartiles of throughput per band of mean concurrency (bands by rounding)."""
    groups: list[list[float]] = [[] for _ in CONCURRENCY_BUCKETS]
    for c, r in zip(concurrency, rates, strict=True):
        if math.isnan(c) or math.isnan(r):
            continue
        for b, (lo, hi) in enumerate(CONCURRENCY_BUCKETS):
            if lo <= c < hi:
                groups[b].append(r)
                break
    out: list[dict[str, object]] = []
    for label, values in zip(BUCKET_LABELS, groups, strict=True):
        d = summarize(values)
        out.append({"concurrency": label, "transfers": d.count, "q1": d.q1, "median": d.median, "q3": d.q3})
    return out


def top_sessions(sessions: SessionTable, n: int) -> list[int]:
    """Indices of the n largest sessions by bytes (ties: earlier start first)."""
    return heapq.nlargest(n, range(len(sessions)), key=lambda i: (sessions.sizes[i], -sessions.starts[i]))


def _totals(keys: Sequence[int], sizes: Sequence[float], names: Sequence[str], label: str) -> list[dict[str, object]]:
    count: dict[int, int] = {}
    total: dict[int, float] = {}
    for k, b in zip(keys, sizes, strict=True):
        count[k] = count.get(k, 0) + 1
        total[k] = total.get(k, 0.0) + b
    rows = [{label: names[k], "transfers": count[k], "bytes": total[k]} for k in count]
    return sorted(rows, key=lambda r: (-float(r["bytes"]), str(r[label])))  # type: ignore[arg-type]


@dataclass
class TransferAnalysis:
    """The report section (plain, JSON-ready data) plus the per-item columns the plots need."""

    summary: dict[str, object]
    transfer_rates: array
    session_rates: array
    session_durations: array
    session_sizes: array
    concurrency: array


def analyze_transfers(table: TransferTable, gap: float = 60.0, circuit_min_bytes: float = 100e6,
                      circuit_min_seconds: float = 600.0, rate_basis: str = "transfers",
                      top: int = 10) -> TransferAnalysis:
    """Totals, distributions, sessions, circuit suitability and concurrency of a set of transfers.

    Pure; O(n log n) in the number of transfers."""
    names = table.names.names
    order = start_order(table)
    sessions = merge_sessions(table, gap, order)
    t_rates = throughputs(table.starts, table.ends, table.sizes)
    s_rates = throughputs(sessions.starts, sessions.ends, sessions.sizes)
    if rate_basis not in ("transfers", "sessions"):
        raise ValueError(f"rate basis must be transfers or sessions, got {rate_basis!r}")
    rate = third_quartile_rate(t_rates if rate_basis == "transfers" else s_rates)
    circuit = circuit_suitability(sessions.sizes, rate, circuit_min_bytes, circuit_min_seconds, rate_basis)

    conc = transfer_concurrency(table, order)
    del order
    xs: list[float] = []
    ys: list[float] = []
    for c, r in zip(conc, t_rates, strict=True):
        if not (math.isnan(c) or math.isnan(r)):
            xs.append(c)
            ys.append(r)
    from lark.report.stats import pearson, spearman

    concurrency = {"scope": "other transfers on the same server, time-weighted over each transfer",
                   "transfers": len(xs), "mean": summarize(xs).mean if xs else None,
                   "pearson": pearson(xs, ys), "spearman": spearman(xs, ys),
                   "buckets": concurrency_buckets(conc, t_rates)}
    del xs, ys

    users_sessions: dict[int, int] = {}
    for p in sessions.pairs:
        u = table.pair_keys[p][0]
        users_sessions[u] = users_sessions.get(u, 0) + 1
    by_user = _totals(table.users, table.sizes, names, "user")
    for row in by_user:
        row["sessions"] = users_sessions.get(table.names.id(str(row["user"])), 0)

    series: dict[tuple[int, int], float] = {}
    for h, e, b in zip(table.servers, table.ends, table.sizes, strict=True):
        key = (h, int(e // 3600) * 3600)
        series[key] = series.get(key, 0.0) + b

    top_rows = []
    for i in top_sessions(sessions, top):
        user, server, remote = table.pair_names(sessions.pairs[i])
        d = sessions.ends[i] - sessions.starts[i]
        top_rows.append({"user": user, "server": server, "remote": remote, "start": sessions.starts[i],
                         "end": sessions.ends[i], "duration_seconds": d, "bytes": sessions.sizes[i],
                         "transfers": sessions.counts[i], "bytes_per_second": sessions.sizes[i] / d if d > 0 else None})

    summary = {
        "transfers": len(table), "bytes": math.fsum(table.sizes),
        "by_user": by_user,
        "by_server": _totals(table.servers, table.sizes, names, "server"),
        "by_remote": _totals(table.remotes, table.sizes, names, "remote"),
        "by_type": _totals(table.kinds, table.sizes, names, "type"),
        "distributions": {
            "transfers": {"bytes": summarize(table.sizes).as_dict(),
                          "duration_seconds": summarize(durations(table.starts, table.ends)).as_dict(),
                          "bytes_per_second": summarize(finite(t_rates)).as_dict()},
            "sessions": {"bytes": summarize(sessions.sizes).as_dict(),
                         "duration_seconds": summarize(durations(sessions.starts, sessions.ends)).as_dict(),
                         "bytes_per_second": summarize(finite(s_rates)).as_dict(),
                         "transfers_per_session": summarize(sessions.counts).as_dict()},
        },
        "sessions": {"count": len(sessions), "gap_seconds": gap, "top": top_rows},
        "circuit": circuit.as_dict(),
        "concurrency": concurrency,
        "series": [{"server": names[h], "hour": t, "bytes": b} for (h, t), b in sorted(series.items())],
    }
    return TransferAnalysis(summary, t_rates, s_rates, durations(sessions.starts, sessions.ends), sessions.sizes, conc)
