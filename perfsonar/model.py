"""The spider's internal records, in fixed units.

Every archive dialect is normalised into :class:`HostSeries` (one measured test between two hosts, as
one archive stores it); quality grading turns site-level groups of those into :class:`MetricSummary`
and :class:`LinkSummary`. Units never vary inside these records:

* throughput in **bits per second** (ads show Mbps),
* packet loss as a **fraction 0..1**,
* one-way delay and round-trip time in **milliseconds**,
* timestamps in **UNIX seconds, UTC**.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Test kinds. perfSONAR's "latency" and "latencybg" (OWAMP/powstream) are one kind here: both
# produce one-way delay and one-way loss.
THROUGHPUT = "throughput"
LATENCY = "latency"
RTT = "rtt"
TEST_KINDS = (THROUGHPUT, LATENCY, RTT)

# Metrics and the test kind that produces each. One-way loss (OWAMP) and round-trip loss (ping) are
# kept apart on purpose: they measure different things and mixing them hides problems. A throughput
# test reports its own loss (``packet-loss-rate`` of UDP tests, and of some TCP tools) and TCP
# retransmits, kept apart from OWAMP loss too: they are loss *under load*.
M_THROUGHPUT = "throughput"
M_TP_LOSS = "throughput_loss"  # packets lost / sent by the throughput test (UDP), fraction
M_RETRANSMITS = "retransmits"  # TCP retransmits per segment sent by the throughput test, fraction
M_LOSS = "loss"
M_OWDELAY = "owdelay"
M_RTT = "rtt"
M_RTT_LOSS = "rtt_loss"
METRICS = (M_THROUGHPUT, M_TP_LOSS, M_RETRANSMITS, M_LOSS, M_OWDELAY, M_RTT, M_RTT_LOSS)
METRIC_UNIT = {M_THROUGHPUT: "bit/s", M_TP_LOSS: "fraction", M_RETRANSMITS: "fraction", M_LOSS: "fraction",
               M_OWDELAY: "ms", M_RTT: "ms", M_RTT_LOSS: "fraction"}
# Metrics whose headline is the mean (rare events), not the median.
MEAN_METRICS = frozenset({M_TP_LOSS, M_RETRANSMITS, M_LOSS, M_RTT_LOSS})
# The test kind that measures each metric (named in the ads: where a loss figure came from).
METRIC_TEST = {M_THROUGHPUT: THROUGHPUT, M_TP_LOSS: THROUGHPUT, M_RETRANSMITS: THROUGHPUT, M_LOSS: LATENCY,
               M_OWDELAY: LATENCY, M_RTT: RTT, M_RTT_LOSS: RTT}

# Quality grades, from the consumer's point of view.
GOOD = "good"
DEGRADED = "degraded"
STALE = "stale"
UNKNOWN = "unknown"
GRADES = (GOOD, DEGRADED, STALE, UNKNOWN)

ESMOND = "esmond"
OPENSEARCH = "opensearch"
ARCHIVE_APIS = (ESMOND, OPENSEARCH)


@dataclass(slots=True)
class HostSeries:
    """One test between two hosts as one archive reports it, already in fixed units.

    ``samples`` maps a metric to ``(ts, value)`` pairs (one per successful run); ``failures`` holds
    ``(ts, error)`` for runs that produced no result; ``successes`` counts successful runs in the
    window (it can exceed the number of samples kept, e.g. when OpenSearch returns only the newest
    documents of a long series); likewise ``unlisted_failures`` counts failed runs beyond those in
    ``failures``. ``rejected`` counts values dropped by the plausibility checks.
    """

    archive: str
    test: str
    family: int
    src_name: str | None
    src_ip: str | None
    dst_name: str | None
    dst_ip: str | None
    interval: float | None = None
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    failures: list[tuple[float, str]] = field(default_factory=list)
    successes: int = 0
    unlisted_failures: int = 0  # failed runs the archive counted but did not return one by one
    rejected: int = 0
    # When the archive lists the test but has no run in the window: its newest run (UNIX s), from
    # esmond's ``time-updated`` or the newest OpenSearch ``pscheduler.start_time`` before the window.
    last_seen: float | None = None

    def add(self, metric: str, ts: float, value: float) -> None:
        self.samples.setdefault(metric, []).append((ts, value))


@dataclass(frozen=True, slots=True)
class LinkKey:
    """A directed site pair in one IP family: the identity of a link ad."""

    src_site: str
    dst_site: str
    family: int

    def name(self) -> str:
        return f"{self.src_site}->{self.dst_site}/IPv{self.family}"


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """Statistics and grade of one metric over one link's window (values in the metric's unit)."""

    metric: str
    n: int
    median: float | None
    p25: float | None
    p75: float | None
    mean: float | None
    latest: float | None
    latest_ts: float | None
    expected_interval: float
    successes: int
    failures: int
    last_error: str | None
    quality: str
    reason: str
    carried: bool = False  # True when copied from the state file because this crawl had no data

    @property
    def success_ratio(self) -> float | None:
        total = self.successes + self.failures
        return self.successes / total if total else None

    def age(self, now: float) -> float | None:
        return None if self.latest_ts is None else max(0.0, now - self.latest_ts)


@dataclass(frozen=True, slots=True)
class LinkSummary:
    """Everything the spider knows about one directed site pair in one family."""

    key: LinkKey
    metrics: dict[str, MetricSummary]
    quality: str
    reason: str
    src_hosts: tuple[str, ...] = ()
    dst_hosts: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()

    @property
    def measured_at(self) -> float | None:
        stamps = [m.latest_ts for m in self.metrics.values() if m.latest_ts is not None]
        return max(stamps) if stamps else None


@dataclass(frozen=True, slots=True)
class SiteClaim:
    """A source's statement that ``host`` (a name or an IP literal) belongs to ``site``.

    ``kind`` is the kind of source (``pool``, ``registry``, ``meshconfig``, ``psconfig``), which sets its
    precedence; ``source`` says who said so, for ``--explain-sites`` (e.g.
    ``mesh <url>: addresses.<name>._meta.display-name``).
    """

    site: str
    host: str
    source: str
    kind: str = ""
