"""One crawl: discover, read every archive, map hosts to sites, grade, merge with the last state.

This is the only module that wires the side effects together; the deciding is done by the pure
functions it calls (:mod:`perfsonar.quality`, :mod:`perfsonar.sites`, :mod:`perfsonar.ads`).

Concurrency is one bounded thread pool (``spider.concurrency``) plus a bounded, blocking connection
pool per archive host (``http.per_host_connections``), so a slow archive ties up at most that many
workers' requests while the rest of the crawl goes on. Work is interleaved across archives for the
same reason. Nothing that a remote server sends can stop a crawl: every failure is caught at the
archive (or series, or mesh) that caused it, logged, and the archive's links keep their last good
values from the state file, marked stale.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import classad2

from perfsonar.ads import build_link_ad, build_spider_ad
from perfsonar.config import SpiderConfig
from perfsonar.discovery import ArchiveRef, Inventory, MeshContent, discover
from perfsonar.errors import SpiderError
from perfsonar.esmond import EsmondReader, SeriesSpec
from perfsonar.http import HttpClient
from perfsonar.lookback import LookbackCache
from perfsonar.meshindex import MeshIndex
from perfsonar.model import ESMOND, GRADES, OPENSEARCH, STALE, UNKNOWN, HostSeries, LinkKey, LinkSummary, SiteClaim
from perfsonar.normalise import canonical_ip
from perfsonar.opensearch import OpenSearchReader
from perfsonar.pool import PoolSource, collector_source, pool_knowledge
from perfsonar.quality import LinkAccumulator, SummaryReport, carry_forward
from perfsonar.registries import RegistryEntry, load_registry, parse_registry
from perfsonar.sites import (
    DomainRule,
    Resolver,
    ReverseResolver,
    SiteMap,
    registry_claims,
    static_resolver,
    system_resolver,
    system_reverse_resolver,
)
from perfsonar.state import save_state, stream_state

log = logging.getLogger("lark.spider")

T = TypeVar("T")
R = TypeVar("R")

MAX_LOGGED_ERRORS = 40
MAX_LISTED_UNMAPPED = 20


def bounded_map(executor: Executor, fn: Callable[[T], R], items: Iterable[T], in_flight: int) -> Iterator[R]:
    """``executor.map`` that keeps at most ``in_flight`` tasks queued (results in input order).

    ``Executor.map`` submits everything at once; with ~10^5 series that alone would cost more memory
    than the data.
    """
    pending: deque[Future[R]] = deque()
    it = iter(items)
    for item in itertools.islice(it, in_flight):
        pending.append(executor.submit(fn, item))
    while pending:
        result = pending.popleft().result()
        for item in itertools.islice(it, 1):
            pending.append(executor.submit(fn, item))
        yield result


def interleave(groups: list[deque[T]]) -> Iterator[T]:
    """Round-robin over groups, so consecutive work items hit different archives.

    Items are popped as they are handed out, so finished work is not kept alive by the queues.
    """
    active = [g for g in groups if g]
    while active:
        for g in active:
            yield g.popleft()
        active = [g for g in active if g]


@dataclass
class CrawlStats:
    number: int = 0
    started: float = 0.0
    duration: float = 0.0
    meshes: int = 0
    mesh_tests: int = 0
    archives: int = 0
    archives_failed: int = 0
    archives_partial: int = 0
    series: int = 0
    series_failed: int = 0
    samples: int = 0
    rejected: int = 0
    links: int = 0
    carried: int = 0
    grades: Counter[str] = field(default_factory=Counter)
    unmapped: int = 0
    mesh_missing: int = 0
    requests: int = 0
    retried: int = 0
    errors: int = 0
    phases: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        grades = ", ".join(f"{self.grades.get(g, 0)} {g}" for g in GRADES)
        return (f"crawl {self.number} done in {self.duration:.1f} s: {self.meshes} meshes, {self.mesh_tests} mesh "
                f"tests; {self.archives} archives ({self.archives_failed} failed, {self.archives_partial} partial); "
                f"{self.series} series ({self.series_failed} failed), {self.samples} samples, {self.rejected} "
                f"values rejected; {self.links} links ({grades}; {self.carried} carried over); {self.unmapped} "
                f"unmapped hosts; {self.mesh_missing} mesh pairs without data; {self.requests} HTTP requests "
                f"({self.retried} retries); {self.errors} errors; "
                + ", ".join(f"{k} {v:.1f} s" for k, v in self.phases.items()))

    def as_ad_stats(self) -> dict[str, int | float | str]:
        out: dict[str, int | float | str] = {
            "LarkCrawlNumber": self.number, "LarkCrawlSeconds": round(self.duration, 3),
            "LarkCrawlStarted": int(self.started), "LarkArchives": self.archives,
            "LarkArchivesFailed": self.archives_failed, "LarkSeries": self.series, "LarkSamples": self.samples,
            "LarkLinks": self.links, "LarkUnmappedHosts": self.unmapped, "LarkErrors": self.errors,
            "LarkMeshPairsWithoutData": self.mesh_missing,
        }
        for grade in GRADES:
            out[f"LarkLinks{grade.capitalize()}"] = self.grades.get(grade, 0)
        return out


@dataclass
class CrawlResult:
    links: dict[LinkKey, LinkSummary]
    stats: CrawlStats
    unmapped: set[str]
    errors: list[str]
    failed_archives: dict[str, str]
    now: float
    site_map: SiteMap | None = None  # for --explain-sites
    hosts: list[tuple[str | None, str | None]] = field(default_factory=list)  # every mesh and measured endpoint
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (test, src, dst) mesh pairs without data
    discovered: int = 0  # hosts discovered in meshes and measurements


class Spider:
    """Holds what survives between crawls: HTTP pools, mesh cache, resolved names, last links."""

    def __init__(self, config: SpiderConfig, resolver: Resolver | None = None, clock: Callable[[], float] = time.time,
                 client: HttpClient | None = None, pool_source: PoolSource | None = None,
                 reverse: ReverseResolver | None = None) -> None:
        self.config = config
        self.clock = clock
        self.client = client or HttpClient(config.http)
        self.resolver = resolver or self._default_resolver()
        if reverse is None and config.resolve_dns and resolver is None:
            reverse = system_reverse_resolver
        self.reverse = reverse
        if pool_source is None and config.pool.enabled:
            pool_source = collector_source(config.pool)
        self.pool_source = pool_source
        self.mesh_cache: dict[str, MeshContent] = {}
        self._resolved: dict[str, tuple[float, list[str]]] = {}
        self._reversed: dict[str, tuple[float, str | None]] = {}
        self._registry: dict[str, tuple[float, list[RegistryEntry]]] = {}  # where -> (read at, entries)
        self._pool: tuple[float, list[SiteClaim], list[DomainRule]] | None = None
        self._previous: dict[LinkKey, LinkSummary] | None = None
        self._ad_pool: list[classad2.ClassAd] = []
        self.lookback = LookbackCache()  # stale-pair listings, refreshed every measurements.stale_refresh
        self.crawls = 0

    def _default_resolver(self) -> Resolver:
        table = static_resolver(self.config.static_hosts)
        use_dns = self.config.resolve_dns

        def resolve(name: str) -> list[str]:
            found = list(table(name))
            if found or not use_dns:
                return found
            return system_resolver(name)

        return resolve

    def close(self) -> None:
        self.client.close()

    # ----------------------------------------------------------------------------------------

    def crawl(self, persist: bool = True) -> CrawlResult:
        """Run one crawl and (with ``persist``) save its result. Never raises for remote failures.

        ``persist=False`` (dry runs) reads the state file but never writes it, so a dry run changes
        nothing that a later crawl would see.
        """
        cfg = self.config
        self.crawls += 1
        now = self.clock()
        stats = CrawlStats(number=self.crawls, started=now)
        t0 = time.monotonic()
        req0, retry0 = self.client.requests, self.client.retried
        errors: list[str] = []
        endpoints: set[tuple[str | None, str | None]] = set()
        with _gc_paused(), ThreadPoolExecutor(max_workers=cfg.concurrency,
                                              thread_name_prefix="lark-spider") as pool:
            inv = discover(self.client, cfg.publishers, cfg.meshes, cfg.archives, cfg.lookup, pool, now,
                           cfg.derive_opensearch, self.mesh_cache)
            errors.extend(inv.errors)
            stats.meshes, stats.mesh_tests = len(inv.meshes), inv.test_count()
            site_map = self.site_map(inv, pool, now, errors)
            mesh_hosts = inv.hosts()
            mesh = MeshIndex(inv.groups, {h: self._resolved[h][1] for h in mesh_hosts if h in self._resolved})
            stats.phases["discovery"] = time.monotonic() - t0
            report = SummaryReport()
            acc = LinkAccumulator(site_map.site_of, mesh.interval, report)
            in_mesh = mesh.has_pair if cfg.restrict_to_mesh and inv.groups else None

            def sink(series: HostSeries) -> None:
                # Called on the crawl's own thread as each series arrives; the series is dropped
                # right after, so memory holds one copy of the numbers (in the accumulator).
                stats.series += 1
                stats.samples += sum(len(v) for v in series.samples.values())
                stats.rejected += series.rejected
                endpoints.add((series.src_name, series.src_ip))
                endpoints.add((series.dst_name, series.dst_ip))
                if in_mesh is not None and not in_mesh(series.src_name, series.src_ip, series.dst_name,
                                                       series.dst_ip):
                    return
                acc.add(series)

            failed = self.read_archives(inv, pool, now, stats, errors, sink)
            stats.phases["reading"] = time.monotonic() - t0 - stats.phases["discovery"]
            del inv
            t1 = time.monotonic()
            missing = mesh.missing(cfg.read.tests)  # a test kind this spider does not read is not missing
            del mesh
            fresh = acc.finish(now, cfg.quality)
            previous = self._previous.values() if self._previous is not None else stream_state(cfg.state_file)
            links = carry_forward(fresh, previous, now, cfg.keep_state_for, failed)
            del fresh, previous
            # With a state file that was written, the file is the memory; else the links stay in memory.
            self._previous = None if persist and save_state(cfg.state_file, links, now) else links
            stats.phases["grading"] = time.monotonic() - t1

        hosts = sorted({(n, None) for n in mesh_hosts} | endpoints, key=lambda e: (e[0] or "", e[1] or ""))
        identities: set[str] = set()
        for name, ip in hosts:
            identities.add(name or ip or "")
        stats.mesh_missing = len(missing)
        stats.links = len(links)
        stats.carried = sum(1 for link in links.values() if any(m.carried for m in link.metrics.values()))
        stats.grades = Counter(link.quality for link in links.values())
        stats.unmapped = len(report.unmapped)
        stats.requests = self.client.requests - req0
        stats.retried = self.client.retried - retry0
        stats.errors = len(errors)
        stats.duration = time.monotonic() - t0
        for err in errors[:MAX_LOGGED_ERRORS]:
            log.warning("%s", err)
        if len(errors) > MAX_LOGGED_ERRORS:
            log.warning("... and %d more errors", len(errors) - MAX_LOGGED_ERRORS)
        if report.unmapped:
            shown = sorted(report.unmapped)[:MAX_LISTED_UNMAPPED]
            more = f" and {len(report.unmapped) - len(shown)} more" if len(report.unmapped) > len(shown) else ""
            log.warning("hosts mapped to no site (add a sites.rules entry or a registry): %s%s",
                        ", ".join(shown), more)
        for conflict in site_map.conflicts[:MAX_LOGGED_ERRORS]:
            log.warning("site mapping conflict: %s", conflict)
        if missing:
            shown_pairs = ", ".join(f"{src} -> {dst} ({test})" for test, src, dst in missing[:MAX_LISTED_UNMAPPED])
            more = f" and {len(missing) - MAX_LISTED_UNMAPPED} more" if len(missing) > MAX_LISTED_UNMAPPED else ""
            log.warning("%d mesh pairs have no data in any archive (lark-spider --explain-links lists them): %s%s",
                        len(missing), shown_pairs, more)
        log.info("%s", stats.line())
        return CrawlResult(links, stats, report.unmapped, errors, failed, now, site_map, hosts, missing,
                           len(identities - {""}))

    def iter_ads(self, result: CrawlResult) -> Iterator[classad2.ClassAd]:
        """The crawl's ads one at a time, so 10^5 links never need 10^5 ClassAds in memory at once."""
        cfg = self.config
        for link in self.published_links(result):
            yield build_link_ad(link, result.now, cfg.ad_lifetime)
        if cfg.collector.status_ad:
            yield build_spider_ad(cfg.name, result.now, cfg.ad_lifetime, result.stats.as_ad_stats())

    def published_links(self, result: CrawlResult) -> Iterator[LinkSummary]:
        """The links to advertise, in a stable order (unknown ones only if the admin asked, stale ones
        unless the admin said not to)."""
        publish_unknown = self.config.collector.publish_unknown
        publish_stale = self.config.collector.publish_stale
        for key in sorted(result.links, key=lambda k: (k.src_site, k.dst_site, k.family)):
            link = result.links[key]
            if (publish_unknown or link.quality != UNKNOWN) and (publish_stale or link.quality != STALE):
                yield link

    def ads(self, result: CrawlResult) -> list[classad2.ClassAd]:
        return list(self.iter_ads(result))

    def ad_batches(self, result: CrawlResult, size: int = 1000) -> Iterator[list[classad2.ClassAd]]:
        """The crawl's ads in batches built into a recycled pool of ClassAd objects.

        For publishing: each batch is only valid until the next one is requested (its ads are then
        refilled). Recycling works around the ``classad2`` bindings never freeing ClassAds, which
        would otherwise grow the daemon by ~13 MB per crawl of 90,000 links.
        """
        cfg = self.config
        while len(self._ad_pool) < size:
            self._ad_pool.append(classad2.ClassAd())
        batch: list[classad2.ClassAd] = []
        for link in self.published_links(result):
            batch.append(build_link_ad(link, result.now, cfg.ad_lifetime, into=self._ad_pool[len(batch)]))
            if len(batch) == size:
                yield batch
                batch = []
        if cfg.collector.status_ad:
            batch.append(build_spider_ad(cfg.name, result.now, cfg.ad_lifetime, result.stats.as_ad_stats()))
        if batch:
            yield batch

    # ----------------------------------------------------------------------------------------

    def site_map(self, inv: Inventory, pool: Executor, now: float, errors: list[str]) -> SiteMap:
        """Every source of site knowledge, in precedence order, with the addresses of every host
        they name (registries, the pool and DNS are refreshed every ``sites.refresh_interval``)."""
        cfg = self.config
        for reg in cfg.registries:
            # Each registry is refreshed on its own: one that fails keeps its last good entries and is
            # tried again at the next crawl, instead of losing its mappings until the next refresh.
            last = self._registry.get(reg.where)
            if last is not None and now - last[0] <= cfg.sites_refresh:
                continue
            try:
                if reg.url:
                    entries = parse_registry(reg.kind, self.client.get_text(reg.url), reg.url, reg.site_key)
                else:
                    assert reg.path is not None
                    entries = load_registry(reg.kind, reg.path, reg.site_key)
            except SpiderError as err:
                kept = f" (keeping its {len(last[1])} entries from the last good read)" if last else ""
                errors.append(f"site registry {reg.where}: {err}{kept}")
                continue
            self._registry[reg.where] = (now, list(entries))
        if self.pool_source is not None and (self._pool is None or now - self._pool[0] > cfg.sites_refresh):
            try:
                self._pool = (now, *pool_knowledge(self.pool_source()))
            except SpiderError as err:
                errors.append(f"site mapping from the pool: {err}")
        pool_claims, pool_domains = (self._pool[1], self._pool[2]) if self._pool else ([], [])
        registry_entries = [e for reg in cfg.registries if reg.where in self._registry
                            for e in self._registry[reg.where][1]]
        claims = [*pool_claims, *registry_claims(registry_entries), *inv.sites]
        names = {c.host for c in claims} | inv.hosts() | set(cfg.static_hosts)
        todo = [n for n in names if canonical_ip(n) is None
                and (n not in self._resolved or now - self._resolved[n][0] > cfg.sites_refresh)]
        for name, ips in zip(todo, pool.map(self.resolver, todo), strict=True):
            self._resolved[name] = (now, [ip for ip in (canonical_ip(a) for a in ips) if ip])
        addresses = {name: ips for name, (_, ips) in self._resolved.items()}
        domains = [*cfg.site_domains, *pool_domains]
        reverse = self._cached_reverse(now) if domains and self.reverse is not None else None
        return SiteMap(rules=cfg.site_rules, claims=claims, domains=domains, addresses=addresses, reverse=reverse)

    def _cached_reverse(self, now: float) -> ReverseResolver:
        assert self.reverse is not None
        reverse = self.reverse

        def lookup(ip: str) -> str | None:
            hit = self._reversed.get(ip)
            if hit is None or now - hit[0] > self.config.sites_refresh:
                hit = self._reversed[ip] = (now, reverse(ip))
            return hit[1]

        return lookup

    def read_archives(self, inv: Inventory, pool: Executor, now: float, stats: CrawlStats, errors: list[str],
                      sink: Callable[[HostSeries], None]) -> dict[str, str]:
        """Read every archive group with the preferred API (falling back to the next one on failure),
        handing each series to ``sink`` as it arrives. Returns the failed archives with the reason."""
        cfg = self.config
        groups: dict[str, list[ArchiveRef]] = {}
        for ref in inv.archives.values():
            groups.setdefault(ref.group, []).append(ref)
        order = {api: i for i, api in enumerate(cfg.archive_preference)}
        for refs in groups.values():
            refs.sort(key=lambda r: order.get(r.api, len(order)))
        stats.archives = len(groups)
        self.lookback.keep_only(ref.url for ref in inv.archives.values())
        failed: dict[str, str] = {}

        def open_group(refs: list[ArchiveRef]) -> tuple[list[HostSeries], EsmondReader | None, list[SeriesSpec],
                                                        dict[str, str]]:
            problems: dict[str, str] = {}
            for ref in refs:
                try:
                    if ref.api == OPENSEARCH:
                        got = OpenSearchReader(self.client, ref, cfg.read, now, self.lookback).read()
                        return got, None, [], problems
                    if ref.api == ESMOND:
                        reader = EsmondReader(self.client, ref, cfg.read, now, self.lookback)
                        return [], reader, reader.list_series(), problems
                except SpiderError as err:
                    problems[ref.url] = str(err)
                except Exception as err:  # noqa: BLE001 - a bug triggered by one archive's data must not end the crawl
                    log.exception("unexpected error reading %s", ref.url)
                    problems[ref.url] = f"internal error: {err!r}"
            return [], None, [], problems

        esmond_work: list[deque[tuple[EsmondReader, SeriesSpec]]] = []
        for got, reader, specs, problems in bounded_map(pool, open_group, list(groups.values()), cfg.concurrency):
            for series in got:
                sink(series)
            del got
            if problems and reader is None:
                stats.archives_failed += 1
                failed.update(problems)
                errors.extend(f"archive {url}: {why}" for url, why in problems.items())
            elif problems:
                errors.extend(f"archive {url} (used a fallback): {why}" for url, why in problems.items())
            if reader is not None and specs:
                esmond_work.append(deque((reader, spec) for spec in specs))

        per_archive: dict[str, list[int]] = {}  # url -> [failed, total]
        last_error: dict[str, str] = {}

        def read_one(item: tuple[EsmondReader, SeriesSpec]) -> tuple[str, HostSeries | None]:
            reader, spec = item
            url = reader.archive.url
            try:
                return url, reader.read(spec)
            except SpiderError as err:
                last_error[url] = str(err)
            except Exception as err:  # noqa: BLE001 - see open_group
                log.exception("unexpected error reading a series from %s", url)
                last_error[url] = f"internal error: {err!r}"
            return url, None

        for url, got in bounded_map(pool, read_one, interleave(esmond_work), cfg.concurrency * 4):
            counts = per_archive.setdefault(url, [0, 0])
            counts[1] += 1
            if got is None:
                counts[0] += 1
                stats.series_failed += 1
            else:
                sink(got)
        for url, (bad, total) in per_archive.items():
            if not bad:
                continue
            why = f"{bad} of {total} series failed (last: {last_error.get(url, '?')})"
            failed[url] = why
            errors.append(f"archive {url}: {why}")
            if bad == total:
                stats.archives_failed += 1
            else:
                stats.archives_partial += 1
        return failed


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Suspend the cyclic garbage collector for one crawl, then freeze what the crawl produced.

    A crawl allocates ~10^6 small containers that live until it ends; the collector's repeated
    full passes over them cost ~9 s of a 60 s OSG-scale crawl (measured) while finding almost
    nothing, since the spider's data has no reference cycles. One collection at the end frees
    whatever cyclic garbage (e.g. exception tracebacks) accumulated, and ``gc.freeze`` keeps the
    crawl's result out of later passes (ad building allocates enough to trigger them); the next
    crawl unfreezes first, so nothing stays exempt for longer than one crawl.
    """
    gc.unfreeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()
        gc.freeze()
