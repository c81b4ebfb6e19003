"""Node metrics of ``lark-netd`` in the Prometheus exposition format.

What an operator watches on an execute node, beside what lands in job ads:

* per running job: bytes and packets by direction, and bytes per traffic class
  (``lark_job_*``, labels ``job``, ``user``, ``mode`` and ``direction``/``class``); a job's series
  disappear when it ends, so labels stay bounded by the jobs running now;
* per user: bytes by direction and class, ended jobs included (``lark_user_*``), counters that
  only grow while the broker runs (a restart resets them, which Prometheus' ``rate()`` handles);
* per user holding a share of the uplink (``LARK_SHARES_UPLINK``): its guaranteed upload rate
  and how many jobs share it (``lark_user_share_*``), from the job records;
* the broker's own life: jobs set up (by mode), set-ups that failed (the job was held),
  requests refused, set-up latency, firewall rules restored after a flush, final counters that
  reached only the journal, and how often the broker has started on this node.

Scrapes never touch the kernel: traffic comes from the snapshot the broker's periodic accounting
push already reads (``LARK_ACCOUNTING_INTERVAL``), so a scrape cannot delay a job's set-up.
``prometheus-client`` is imported only when metrics are switched on (``LARK_METRICS_ADDRESS``,
``LARK_METRICS_TEXTFILE``); the job's start path pays a counter increment and a histogram
observation.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lark.journal import user_name as account_name

if TYPE_CHECKING:
    from lark.firewall.base import JobCounters
    from lark.shares import ShareSettings
    from lark.state import JobRecord

# Set-up latency buckets (seconds): the broker's set-up is ~10-20 ms; the tail shows contention.
SETUP_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DIRECTIONS = ("in", "out")


@dataclass(frozen=True)
class RunningJob:
    job: str  # "Cluster.Proc"
    user: str
    mode: str
    counters: JobCounters


def user_name(uid: int | None, cache: dict[int, str] | None = None) -> str:
    """A label for ``uid``: its account name, else the number (labels must never be empty)."""
    if uid is None:
        return "unknown"
    if cache is not None and uid in cache:
        return cache[uid]
    name = account_name(uid) or str(uid)
    if cache is not None:
        cache[uid] = name
    return name


class Exposed:
    """A registry of metrics and the two ways out: HTTP for Prometheus, a file for node_exporter."""

    registry: Any

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        """For node_exporter's textfile collector: written whole, then renamed into place."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(self.exposition())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def serve(self, host: str, port: int) -> Any:
        """The HTTP endpoint, on a daemon thread of prometheus-client's own."""
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)


class NodeMetrics(Exposed):
    """The broker's metrics. Thread-safe: request workers and the periodic thread update it."""

    def __init__(self, state_dir: Path | None = None, shares: ShareSettings | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.setups = Counter("lark_job_setups", "Job networks set up, by attachment mode.", ["mode"], registry=r)
        self.setup_failures = Counter("lark_job_setup_failures",
                                      "Set-ups that failed; the job was held with the broker's reason.", registry=r)
        self.refused = Counter("lark_broker_refused_requests",
                               "Requests refused (not a job wrapper, not the job's owner, a second set-up, ...).",
                               ["op"], registry=r)
        self.setup_seconds = Histogram("lark_job_setup_seconds", "Time the broker took to set a job's network up.",
                                       buckets=SETUP_BUCKETS, registry=r)
        self.firewall_restores = Counter("lark_firewall_restores",
                                         "Jobs whose host firewall rules had gone (a flushed ruleset) and were "
                                         "restored.", registry=r)
        self.journal_only = Counter("lark_final_accounting_journal_only",
                                    "Jobs whose final counters reached only the accounting journal, not the job ad.",
                                    registry=r)
        self.starts = Gauge("lark_broker_starts", "How many times lark-netd has started on this node.", registry=r)
        self._lock = threading.Lock()
        self._running: dict[str, RunningJob] = {}  # token -> job
        self._ended: dict[tuple[str, str, str], int] = {}  # (user, direction, class or "") -> bytes
        self._users: dict[int, str] = {}
        self._share_settings = shares
        self._shares: dict[str, tuple[float, int]] = {}  # user -> (guaranteed upload Mbit/s, jobs)
        # jobs already folded into their user's totals: a periodic snapshot read just before a
        # job ended must not bring it back (it would count twice until the next snapshot)
        self._gone: dict[str, float] = {}
        self.registry.register(_TrafficCollector(self))
        if state_dir is not None:
            self.starts.set(count_start(state_dir))

    # -- updates from the broker

    def update_running(self, records: Iterable[JobRecord], counters: Mapping[str, JobCounters]) -> None:
        """Replace the running jobs' figures (after a periodic read of every job's counters)."""
        records = list(records)
        running = {r.token: RunningJob(r.job_id, user_name(r.owner_uid, self._users), r.mode, counters[r.token])
                   for r in records if r.token in counters}
        shares = user_shares(self._share_settings, records) if self._share_settings else {}
        with self._lock:
            self._shares = shares
            now = time.monotonic()
            self._gone = {t: when for t, when in self._gone.items() if now - when < 3600}
            self._running = {t: job for t, job in running.items() if t not in self._gone}

    def job_ended(self, record: JobRecord, counters: JobCounters | None) -> None:
        """Fold a job's final counters into its user's totals and drop its own series."""
        with self._lock:
            self._running.pop(record.token, None)
            self._gone[record.token] = time.monotonic()
            if counters is None:
                return
            user = user_name(record.owner_uid, self._users)
            for direction in DIRECTIONS:
                key = (user, direction, "")
                self._ended[key] = self._ended.get(key, 0) + getattr(counters, f"bytes_{direction}")
                for name, cls in counters.classes.items():
                    key = (user, direction, name)
                    self._ended[key] = self._ended.get(key, 0) + getattr(cls, f"bytes_{direction}")

    # -- reading

    def snapshot(self) -> tuple[list[RunningJob], dict[tuple[str, str, str], int]]:
        with self._lock:
            return list(self._running.values()), dict(self._ended)

    def share_snapshot(self) -> dict[str, tuple[float, int]]:
        with self._lock:
            return dict(self._shares)


def user_shares(settings: ShareSettings, records: Iterable[JobRecord]) -> dict[str, tuple[float, int]]:
    """user -> (guaranteed upload Mbit/s of the user's class, jobs in it) (pure)."""
    from lark.shares import share_rows

    out: dict[str, tuple[float, int]] = {}
    for row in share_rows(settings, records).values():
        user = str(row["user"])
        out[user] = (float(row["user_rate_mbit"]), out.get(user, (0.0, 0))[1] + 1)  # type: ignore[arg-type]
    return out

class _TrafficCollector:
    """Builds the traffic families at scrape time from the last snapshot (no kernel access)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # unchecked collector: its families depend on the jobs running

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        running, ended = self.metrics.snapshot()
        job_bytes = CounterMetricFamily("lark_job_bytes", "Bytes a running job received (in) and sent (out), as "
                                        "seen at the job's boundary.", labels=["job", "user", "mode", "direction"])
        job_packets = CounterMetricFamily("lark_job_packets", "Packets of a running job by direction.",
                                          labels=["job", "user", "mode", "direction"])
        job_class = CounterMetricFamily("lark_job_class_bytes", "Bytes of a running job per traffic class.",
                                        labels=["job", "user", "direction", "class"])
        user_bytes = CounterMetricFamily("lark_user_bytes", "Bytes of a user's jobs on this node, ended jobs "
                                         "included, by direction.", labels=["user", "direction"])
        user_class = CounterMetricFamily("lark_user_class_bytes", "Bytes of a user's jobs per traffic class.",
                                         labels=["user", "direction", "class"])
        jobs = GaugeMetricFamily("lark_jobs_running", "Jobs with a Lark network on this node, by mode.",
                                 labels=["mode"])
        totals = dict(ended)
        per_mode: dict[str, int] = {}
        for job in running:
            per_mode[job.mode] = per_mode.get(job.mode, 0) + 1
            c = job.counters
            for direction in DIRECTIONS:
                nbytes = getattr(c, f"bytes_{direction}")
                job_bytes.add_metric([job.job, job.user, job.mode, direction], nbytes)
                job_packets.add_metric([job.job, job.user, job.mode, direction], getattr(c, f"packets_{direction}"))
                totals[(job.user, direction, "")] = totals.get((job.user, direction, ""), 0) + nbytes
                for name, cls in sorted(c.classes.items()):
                    value = getattr(cls, f"bytes_{direction}")
                    job_class.add_metric([job.job, job.user, direction, name], value)
                    totals[(job.user, direction, name)] = totals.get((job.user, direction, name), 0) + value
        for (user, direction, name), value in sorted(totals.items()):
            if name:
                user_class.add_metric([user, direction, name], value)
            else:
                user_bytes.add_metric([user, direction], value)
        for mode, count in sorted(per_mode.items()):
            jobs.add_metric([mode], count)
        share_rate = GaugeMetricFamily("lark_user_share_mbit", "Upload rate guaranteed to a user's class on the "
                                       "shared uplink (its weighted part; idle parts are lent on).", labels=["user"])
        share_jobs = GaugeMetricFamily("lark_user_share_jobs", "Jobs sharing a user's class on the uplink.",
                                       labels=["user"])
        for user, (rate, count) in sorted(self.metrics.share_snapshot().items()):
            share_rate.add_metric([user], rate)
            share_jobs.add_metric([user], count)
        yield from (job_bytes, job_packets, job_class, user_bytes, user_class, jobs, share_rate, share_jobs)


def count_start(state_dir: Path) -> int:
    """Count this start of the broker in the state directory; returns the count so far."""
    path = state_dir / "broker-starts"
    try:
        count = int(path.read_text().strip() or 0) + 1
    except (FileNotFoundError, ValueError):
        count = 1
    tmp = path.with_name(f".broker-starts.{os.getpid()}")
    tmp.write_text(f"{count}\n")
    os.replace(tmp, path)
    return count
