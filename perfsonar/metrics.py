"""The spider's crawl counters in the Prometheus exposition format, like ``lark-netd``'s.

After every crawl the spider folds its :class:`~perfsonar.crawl.CrawlStats` in here: counters that
only grow (crawls, HTTP requests and retries, errors, samples, values rejected) and gauges that
describe the last crawl (its duration and time, links by grade, links carried over, archives and
series that failed, unmapped hosts, mesh pairs without data). Served over HTTP
(``LARK_SPIDER_METRICS_ADDRESS``) and/or written for node_exporter's textfile collector
(``LARK_SPIDER_METRICS_TEXTFILE``). ``prometheus-client`` is imported only when one is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lark.metrics import Exposed
from perfsonar.model import GRADES

if TYPE_CHECKING:
    from perfsonar.crawl import CrawlStats


class SpiderMetrics(Exposed):
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = r = CollectorRegistry()
        self.crawls = Counter("lark_spider_crawls", "Crawls finished.", registry=r)
        self.requests = Counter("lark_spider_http_requests", "HTTP requests to publishers and archives.",
                                registry=r)
        self.retries = Counter("lark_spider_http_retries", "HTTP requests retried.", registry=r)
        self.errors = Counter("lark_spider_errors", "Errors logged by crawls.", registry=r)
        self.samples = Counter("lark_spider_samples", "Measurement values read.", registry=r)
        self.rejected = Counter("lark_spider_values_rejected", "Values rejected as implausible.", registry=r)
        self.duration = Gauge("lark_spider_last_crawl_seconds", "How long the last crawl took.", registry=r)
        self.finished = Gauge("lark_spider_last_crawl_timestamp_seconds", "When the last crawl ended (Unix time).",
                              registry=r)
        self.links = Gauge("lark_spider_links", "Links published by the last crawl, by grade.", ["grade"],
                           registry=r)
        self.carried = Gauge("lark_spider_links_carried", "Links of the last crawl carried over from earlier data.",
                             registry=r)
        self.archives = Gauge("lark_spider_archives", "Archives read by the last crawl, by outcome.", ["outcome"],
                              registry=r)
        self.series_failed = Gauge("lark_spider_series_failed", "Series the last crawl could not read.", registry=r)
        self.unmapped = Gauge("lark_spider_unmapped_hosts", "Hosts the last crawl could not map to a site.",
                              registry=r)
        self.missing = Gauge("lark_spider_mesh_pairs_without_data", "Mesh pairs the archives hold no data for.",
                             registry=r)

    def observe(self, stats: CrawlStats, finished: float) -> None:
        self.crawls.inc()
        self.requests.inc(stats.requests)
        self.retries.inc(stats.retried)
        self.errors.inc(stats.errors)
        self.samples.inc(stats.samples)
        self.rejected.inc(stats.rejected)
        self.duration.set(stats.duration)
        self.finished.set(finished)
        for grade in sorted({*GRADES, *stats.grades}):
            self.links.labels(grade).set(stats.grades.get(grade, 0))
        self.carried.set(stats.carried)
        ok = stats.archives - stats.archives_failed - stats.archives_partial
        for outcome, count in (("ok", ok), ("partial", stats.archives_partial), ("failed", stats.archives_failed)):
            self.archives.labels(outcome).set(count)
        self.series_failed.set(stats.series_failed)
        self.unmapped.set(stats.unmapped)
        self.missing.set(stats.mesh_missing)
