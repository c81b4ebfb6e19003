"""Pure summary statistics and quality grades per directed site pair, IP family and metric.

A grade answers "can the matchmaker trust this figure now?":

* ``good``     — fresh enough for the test's cadence, enough samples, runs mostly succeed, within limits;
* ``degraded`` — fresh data that shows a problem (loss, low throughput, failing runs, too noisy);
* ``stale``    — the newest sample is too old for the test's cadence, or the values were carried
                 over from an earlier crawl because this crawl could not refresh them;
* ``unknown``  — not enough data to say anything.

Every grade comes with a one-line reason a human can act on. Nothing here does I/O; the clock is a
parameter.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from lark.values import human_duration
from perfsonar.model import (
    DEGRADED,
    GOOD,
    LATENCY,
    M_LOSS,
    M_OWDELAY,
    M_RETRANSMITS,
    M_RTT,
    M_RTT_LOSS,
    M_THROUGHPUT,
    M_TP_LOSS,
    MEAN_METRICS,
    RTT,
    STALE,
    TEST_KINDS,
    THROUGHPUT,
    UNKNOWN,
    HostSeries,
    LinkKey,
    LinkSummary,
    MetricSummary,
)
from perfsonar.normalise import percentile

# Cadences used when neither the data nor the mesh says how often a test runs:
# throughput every few hours, powstream reports every minute, ping tests every few minutes.
DEFAULT_INTERVALS: dict[str, float] = {THROUGHPUT: 21600.0, LATENCY: 60.0, RTT: 600.0}

# Worst first: the link grade is the worst grade among its metrics that have data.
_SEVERITY = {DEGRADED: 3, STALE: 2, GOOD: 1, UNKNOWN: 0}

METRIC_LABEL = {M_THROUGHPUT: "throughput", M_TP_LOSS: "throughput-test loss", M_RETRANSMITS: "retransmits",
                M_LOSS: "loss", M_OWDELAY: "one-way delay", M_RTT: "RTT", M_RTT_LOSS: "RTT loss"}


@dataclass(frozen=True)
class QualityPolicy:
    """Thresholds of the grades; each is a config key under ``quality:``."""

    stale_after_intervals: float = 3.0
    min_stale_seconds: float = 900.0
    min_samples: int = 1
    min_success_ratio: float = 0.5
    max_loss: float = 0.02  # AAS treats < 2 % one-way loss as benign
    max_rtt_loss: float = 0.02
    min_throughput_mbps: float = 0.0
    max_relative_spread: float | None = None  # (p75 - p25) / median; None disables the check
    max_retransmits: float | None = None  # retransmits per segment sent; None: reported, not graded
    default_intervals: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_INTERVALS))

    def stale_after(self, interval: float) -> float:
        return max(self.stale_after_intervals * interval, self.min_stale_seconds)


def _format_value(metric: str, value: float) -> str:
    if metric == M_THROUGHPUT:
        return f"{value / 1e6:.0f} Mbps"
    if metric in MEAN_METRICS:
        return f"{value * 100:.2f} %"
    return f"{value:.2f} ms"


def headline(summary: MetricSummary) -> float | None:
    """The figure a consumer should use: mean for loss (rare events), median for everything else."""
    return summary.mean if summary.metric in MEAN_METRICS else summary.median


def grade_metric(metric: str, values: list[float], latest_ts: float | None, successes: int, failures: int,
                 last_error: str | None, interval: float, now: float, policy: QualityPolicy
                 ) -> tuple[str, str]:
    """Grade one metric of one link; ``values`` are the window's samples in fixed units.

    With no values and no failures but a ``latest_ts``, the archive still lists the test and its
    newest run is older than the window: ``stale``, with that run's age.
    """
    n = len(values)
    total = successes + failures
    if n == 0 and failures == 0 and latest_ts is not None:
        return STALE, (f"no run in the window; newest run {human_duration(now - latest_ts)} old, test runs every "
                       f"{human_duration(interval)}")
    if n == 0 and failures == 0:
        return UNKNOWN, "no measurements in the window"
    if n == 0:
        detail = f" (last error: {last_error})" if last_error else ""
        return DEGRADED, f"all {failures} runs in the window failed{detail}"
    assert latest_ts is not None
    age = now - latest_ts
    limit = policy.stale_after(interval)
    if age > limit:
        return STALE, (f"latest sample {human_duration(age)} old; test runs every {human_duration(interval)}, "
                       f"stale after {human_duration(limit)}")
    if n < policy.min_samples:
        return UNKNOWN, f"only {n} sample(s) in the window, need {policy.min_samples}"
    if total and successes / total < policy.min_success_ratio:
        detail = f" (last error: {last_error})" if last_error else ""
        return DEGRADED, (f"{failures} of {total} runs failed, success ratio {successes / total:.2f} < "
                          f"{policy.min_success_ratio:.2f}{detail}")
    ordered = sorted(values)
    med = percentile(ordered, 50)
    mean = math.fsum(values) / n
    if metric == M_LOSS and mean > policy.max_loss:
        return DEGRADED, f"packet loss {mean * 100:.2f} % > {policy.max_loss * 100:.2f} %"
    if metric == M_TP_LOSS and mean > policy.max_loss:
        return DEGRADED, f"throughput-test packet loss {mean * 100:.2f} % > {policy.max_loss * 100:.2f} %"
    if metric == M_RETRANSMITS and policy.max_retransmits is not None and mean > policy.max_retransmits:
        return DEGRADED, (f"TCP retransmits {mean * 100:.3f} % of segments > "
                          f"{policy.max_retransmits * 100:.3f} %")
    if metric == M_RTT_LOSS and mean > policy.max_rtt_loss:
        return DEGRADED, f"round-trip loss {mean * 100:.2f} % > {policy.max_rtt_loss * 100:.2f} %"
    if metric == M_THROUGHPUT and med < policy.min_throughput_mbps * 1e6:
        return DEGRADED, f"median throughput {med / 1e6:.0f} Mbps < {policy.min_throughput_mbps:.0f} Mbps"
    if policy.max_relative_spread is not None and n >= 4 and med > 0:
        spread = (percentile(ordered, 75) - percentile(ordered, 25)) / med
        if spread > policy.max_relative_spread:
            return DEGRADED, f"noisy: interquartile range is {spread:.2f} x the median (> {policy.max_relative_spread})"
    return GOOD, (f"{n} sample{'' if n == 1 else 's'}, latest {human_duration(age)} old, "
                  f"median {_format_value(metric, med)}")


def summarise_metric(metric: str, samples: list[tuple[float, float]], successes: int,
                     failures: list[tuple[float, str]], interval: float, now: float, policy: QualityPolicy,
                     failure_count: int | None = None, last_seen: float | None = None) -> MetricSummary:
    """Statistics and grade of one metric from ``(ts, value)`` samples and ``(ts, error)`` failures.

    ``failure_count`` (default: ``len(failures)``) may be larger when the archive counted more failed
    runs than it listed. ``last_seen`` is the newest run of a test the archive lists without any run
    in the window (used only when there are no samples).
    """
    values = [v for _, v in samples]
    latest_ts, latest = (max(samples) if samples else (None, None))
    if latest_ts is None and not failures and not failure_count and last_seen is not None:
        latest_ts = last_seen
    last_error = max(failures)[1] if failures else None
    n_failed = max(len(failures), failure_count or 0)
    quality, reason = grade_metric(metric, values, latest_ts, successes, n_failed, last_error, interval,
                                   now, policy)
    if values:
        ordered = sorted(values)
        med, p25, p75 = percentile(ordered, 50), percentile(ordered, 25), percentile(ordered, 75)
        mean = math.fsum(values) / len(values)
    else:
        med = p25 = p75 = mean = None
    return MetricSummary(metric=metric, n=len(values), median=med, p25=p25, p75=p75, mean=mean, latest=latest,
                         latest_ts=latest_ts, expected_interval=interval, successes=successes,
                         failures=n_failed, last_error=last_error, quality=quality, reason=reason)


def link_grade(metrics: Mapping[str, MetricSummary]) -> tuple[str, str]:
    """The worst grade among the link's metrics, with those metrics' reasons.

    ``unknown`` metrics are ignored when another metric has data: a site pair with only throughput
    tests is judged on throughput, not marked unknown for lacking a latency test. Likewise a metric
    that is ``stale`` only because the archive lists its test with no run in the window (no samples,
    not carried over) is ignored when another metric has samples: a latency test listed but not run
    must not turn a link with fresh throughput into a stale one (its own grade still says stale).
    """
    if any(s.n for s in metrics.values()):
        metrics = {m: s for m, s in metrics.items()
                   if s.n or s.carried or s.failures or s.quality != STALE}
    known = {m: s for m, s in metrics.items() if s.quality != UNKNOWN}
    if not known:
        reasons = [f"{METRIC_LABEL[m]}: {s.reason}" for m, s in sorted(metrics.items())]
        return UNKNOWN, "; ".join(reasons) or "no measurements"
    worst = max(known.values(), key=lambda s: _SEVERITY[s.quality]).quality
    reasons = [f"{METRIC_LABEL[m]}: {s.reason}" for m, s in sorted(known.items()) if s.quality == worst]
    return worst, "; ".join(reasons)


SiteLookup = Callable[[str | None, str | None], str | None]
# (test, src name, src ip, dst name, dst ip) -> the mesh's cadence for that pair, if any
IntervalLookup = Callable[[str, str | None, str | None, str | None, str | None], float | None]


@dataclass
class SummaryReport:
    """What :func:`summarise_links` could not place, for the crawl's log line and ``--dry-run``."""

    unmapped: set[str] = field(default_factory=set)
    same_site: int = 0
    duplicates: int = 0


def _endpoint_label(name: str | None, ip: str | None) -> str:
    if name and ip and name != ip:
        return f"{name} ({ip})"
    return name or ip or "?"


TEST_METRICS: dict[str, tuple[str, ...]] = {THROUGHPUT: (M_THROUGHPUT, M_TP_LOSS, M_RETRANSMITS),
                                             LATENCY: (M_LOSS, M_OWDELAY), RTT: (M_RTT, M_RTT_LOSS)}


class _TestAcc:
    """One test kind of one link: samples as flat ``array('d')`` [ts, v, ts, v, ...] per metric.

    Arrays and slots instead of lists of tuples and dicts: at OSG scale (10^5 links) the boxed
    floats and per-object dicts would cost several times the memory of the numbers themselves.
    Only the first metric's array always exists; the others are made when a value arrives.
    """

    __slots__ = ("a", "b", "c", "na", "nb", "nc", "failures", "successes", "unlisted", "interval")

    def __init__(self) -> None:
        self.a = array("d")
        self.b: array[float] | None = None
        self.c: array[float] | None = None
        self.na = self.nb = self.nc = 0  # series that contributed to each metric (1: no de-duplication needed)
        self.failures: list[tuple[float, str]] | None = None
        self.successes = 0
        self.unlisted = 0
        self.interval: float | None = None

    def buffer(self, i: int, create: bool) -> array[float] | None:
        if i == 0:
            return self.a
        name = "b" if i == 1 else "c"
        buf = getattr(self, name)
        if buf is None and create:
            buf = array("d")
            setattr(self, name, buf)
        return buf


_COUNT = ("na", "nb", "nc")
_METRIC_INDEX = {test: {m: i for i, m in enumerate(metrics)} for test, metrics in TEST_METRICS.items()}


class _LinkAcc:
    __slots__ = ("throughput", "latency", "rtt", "src_hosts", "dst_hosts", "archives")

    def __init__(self) -> None:
        self.throughput: _TestAcc | None = None
        self.latency: _TestAcc | None = None
        self.rtt: _TestAcc | None = None
        # A single host/archive is stored as a plain string (the common case), several as a tuple.
        self.src_hosts: str | tuple[str, ...] = ()
        self.dst_hosts: str | tuple[str, ...] = ()
        self.archives: str | tuple[str, ...] = ()


def _remember(current: str | tuple[str, ...], value: str) -> str | tuple[str, ...]:
    if current == value or (isinstance(current, tuple) and value in current):
        return current
    if current == ():
        return value
    return (*((current,) if isinstance(current, str) else current), value)


def _as_tuple(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(sorted(value))


class LinkAccumulator:
    """Folds host-level series into directed site-pair links as they arrive (then :meth:`finish`).

    Streaming keeps the crawl's memory at one copy of the numbers: each :class:`HostSeries` can be
    dropped as soon as it is added. Series whose ends map to no site are reported in
    ``report.unmapped``, never guessed; series inside one site are not links and are skipped. The
    expected cadence of each series is resolved here (the data's own schedule, else the mesh's);
    ``mesh_interval`` is asked about every series (it also notes which mesh pairs have data).
    """

    def __init__(self, site_of: SiteLookup, mesh_interval: IntervalLookup | None = None,
                 report: SummaryReport | None = None) -> None:
        self.site_of = site_of
        self.mesh_interval = mesh_interval
        self.report = report if report is not None else SummaryReport()
        self.links: dict[LinkKey, _LinkAcc] = {}
        # (link, test) -> newest run of tests the archives list with no run in the window (rare)
        self.last_seen: dict[tuple[LinkKey, str], float] = {}

    def add(self, s: HostSeries) -> None:
        mesh_interval = (self.mesh_interval(s.test, s.src_name, s.src_ip, s.dst_name, s.dst_ip)
                         if self.mesh_interval is not None else None)
        src = self.site_of(s.src_name, s.src_ip)
        dst = self.site_of(s.dst_name, s.dst_ip)
        if src is None:
            self.report.unmapped.add(_endpoint_label(s.src_name, s.src_ip))
        if dst is None:
            self.report.unmapped.add(_endpoint_label(s.dst_name, s.dst_ip))
        if src is None or dst is None:
            return
        if src == dst:
            self.report.same_site += 1
            return
        key = LinkKey(src, dst, s.family)
        acc = self.links.get(key)
        if acc is None:
            acc = self.links[key] = _LinkAcc()
        t = getattr(acc, s.test)
        if t is None:
            t = _TestAcc()
            setattr(acc, s.test, t)
        index = _METRIC_INDEX[s.test]
        for metric, pts in s.samples.items():
            i = index.get(metric)
            if i is None or not pts:
                continue
            if i == 0:
                buf = t.a
                t.na += 1
            else:
                buf = t.buffer(i, True)
                if i == 1:
                    t.nb += 1
                else:
                    t.nc += 1
            assert buf is not None
            for ts, value in pts:
                buf.append(ts)
                buf.append(value)
        if s.failures:
            if t.failures is None:
                t.failures = []
            t.failures.extend(s.failures)
        t.successes += s.successes
        t.unlisted += s.unlisted_failures
        if s.last_seen is not None and s.last_seen > self.last_seen.get((key, s.test), 0.0):
            self.last_seen[(key, s.test)] = s.last_seen
        interval = s.interval if s.interval is not None else mesh_interval
        if interval is not None and interval > 0 and (t.interval is None or interval < t.interval):
            t.interval = interval
        acc.src_hosts = _remember(acc.src_hosts, _endpoint_label(s.src_name, None if s.src_name else s.src_ip))
        acc.dst_hosts = _remember(acc.dst_hosts, _endpoint_label(s.dst_name, None if s.dst_name else s.dst_ip))
        acc.archives = _remember(acc.archives, s.archive)

    def finish(self, now: float, policy: QualityPolicy) -> dict[LinkKey, LinkSummary]:
        """Grade every link; the accumulated samples are released as each link is summarised.

        A run stored in two archives (a host's own archive and a central one) is counted once:
        samples are de-duplicated on (start time, value), failures on start time. A test the
        archives list with no run in the window becomes its primary metric graded ``stale``, with
        the age of its newest run and no figures.
        """
        out: dict[LinkKey, LinkSummary] = {}
        while self.links:
            key, acc = self.links.popitem()
            metrics: dict[str, MetricSummary] = {}
            for test in TEST_KINDS:
                t = getattr(acc, test)
                if t is None:
                    continue
                interval = t.interval or float(policy.default_intervals.get(test, DEFAULT_INTERVALS[test]))
                failures: list[tuple[float, str]] = []
                seen_fail: set[int] = set()
                for ts, error in t.failures or ():
                    if int(ts) not in seen_fail:
                        seen_fail.add(int(ts))
                        failures.append((ts, error))
                failure_count = len(failures) + t.unlisted
                last_seen = self.last_seen.pop((key, test), None) if self.last_seen else None
                for i, metric in enumerate(TEST_METRICS[test]):
                    buf = t.a if i == 0 else t.buffer(i, False)
                    if buf is None and test == THROUGHPUT:
                        continue  # a throughput test's loss and retransmits only when measured
                    samples = list(zip(buf[0::2], buf[1::2], strict=True)) if buf is not None else []
                    raw = len(samples)
                    if getattr(t, _COUNT[i]) > 1:
                        seen: set[tuple[int, float]] = set()
                        unique = []
                        for ts, value in samples:
                            ident = (int(ts), round(value, 9))
                            if ident not in seen:
                                seen.add(ident)
                                unique.append((ts, value))
                        self.report.duplicates += raw - len(unique)
                        samples = unique
                    if not samples:
                        if test == THROUGHPUT and i > 0:
                            continue  # a throughput test's loss and retransmits only when measured
                        if not failure_count and (last_seen is None or i > 0):
                            continue
                    # Successful runs: what the archives counted, minus the copies removed above,
                    # and never fewer than the samples actually kept.
                    successes = max(len(samples), t.successes - (raw - len(samples)))
                    metrics[metric] = summarise_metric(metric, samples, successes, failures, interval, now, policy,
                                                       failure_count, last_seen)
            if not metrics:
                continue
            quality, reason = link_grade(metrics)
            out[key] = LinkSummary(key=key, metrics=metrics, quality=quality, reason=reason,
                                   src_hosts=_as_tuple(acc.src_hosts), dst_hosts=_as_tuple(acc.dst_hosts),
                                   archives=_as_tuple(acc.archives))
        return out


def summarise_links(series: Iterable[HostSeries], site_of: SiteLookup, now: float, policy: QualityPolicy,
                    mesh_interval: IntervalLookup | None = None, report: SummaryReport | None = None
                    ) -> dict[LinkKey, LinkSummary]:
    """Group host-level series into directed site pairs per family and grade every metric.

    The one-call form of :class:`LinkAccumulator` (see there for the rules).
    """
    acc = LinkAccumulator(site_of, mesh_interval, report)
    for s in series:
        acc.add(s)
    return acc.finish(now, policy)


def carry_forward(current: Mapping[LinkKey, LinkSummary], previous: Iterable[LinkSummary], now: float,
                  max_age: float, failed_archives: Mapping[str, str] | None = None) -> dict[LinkKey, LinkSummary]:
    """Keep the last good values of links or metrics this crawl could not refresh, graded ``stale``.

    ``previous`` is what the state file holds from earlier crawls (any iterable, so it can be
    streamed from disk). A metric is carried when the current crawl has nothing for it (archive
    down, test stopped, data aged out of the window) and its newest sample is at most ``max_age``
    old; the reason names the failed archive when there is one. Fresh data always wins, including
    fresh failures.
    """
    failed_archives = failed_archives or {}
    out = dict(current)
    for old in previous:
        key = old.key
        fresh = current.get(key)
        fresh_metrics = dict(fresh.metrics) if fresh else {}
        changed = False
        for metric, summary in old.metrics.items():
            if metric in fresh_metrics:
                continue
            if summary.latest_ts is None or now - summary.latest_ts > max_age:
                continue
            causes = [f"archive {a} failed: {failed_archives[a]}" for a in old.archives if a in failed_archives]
            cause = "; ".join(causes) if causes else "no data in this crawl's window"
            reason = f"not refreshed ({cause}); last sample {human_duration(now - summary.latest_ts)} old"
            fresh_metrics[metric] = replace(summary, quality=STALE, reason=reason, carried=True)
            changed = True
        if not changed:
            continue
        quality, reason = link_grade(fresh_metrics)
        base = fresh or old
        out[key] = LinkSummary(key=key, metrics=fresh_metrics, quality=quality, reason=reason,
                               src_hosts=base.src_hosts, dst_hosts=base.dst_hosts,
                               archives=tuple(sorted(set(base.archives) | set(old.archives))))
    return out
