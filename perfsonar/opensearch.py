"""Read perfSONAR 5 OpenSearch archives (``https://HOST/opensearch``, anonymous read by default).

One ``_search`` per test kind and page returns many host pairs at once, which is what makes
OSG-scale crawls cheap: a ``composite`` aggregation over (``meta.source.ip``,
``meta.destination.ip``, ``meta.ip_version``) pages through every pair, and per pair a ``filter``
aggregation counts successful runs, a ``min`` aggregation reads the schedule's ``repeat`` (the
test's cadence, already in seconds), and ``top_hits`` returns the newest runs (successful and
failed) with only the fields the spider needs. Time filtering uses ``pscheduler.start_time`` — the
measurement time — never ``@timestamp``, which is when Logstash ingested the result.

Pairs whose runs are all older than the window are found by a second, light query over
``[now - lookback, now - window)`` that returns per pair only the newest start time (and the names):
they are reported as stale with that age instead of vanishing. That query is made at most every
``measurements.stale_refresh`` per archive and test kind (:mod:`perfsonar.lookback`); in between, the
pairs it found are reused.

Throughput documents carry the test's own loss (UDP: flat ``result.packets_lost`` /
``result.packets_sent``) and TCP ``result.retransmits``, turned into a rate per segment sent with the
run's volume (throughput x ``test.spec.duration``) and ``result.mss``.

Units: ``result.throughput`` is bit/s; ``result.latency.*`` is in units of
``test.spec.bucket-width`` (ms for the default 0.001 s, rescaled otherwise); ``result.rtt.*`` is in
**seconds**; ``result.packets.loss`` is a 0..1 fraction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from lark.values import human_duration
from perfsonar.discovery import ArchiveRef
from perfsonar.errors import ResponseError, SpiderError
from perfsonar.esmond import ReadSettings, retransmit_rate
from perfsonar.http import HttpClient
from perfsonar.lookback import Listing, LookbackCache, due_at, usable
from perfsonar.model import (
    LATENCY,
    M_LOSS,
    M_OWDELAY,
    M_RETRANSMITS,
    M_RTT,
    M_RTT_LOSS,
    M_THROUGHPUT,
    M_TP_LOSS,
    RTT,
    THROUGHPUT,
    HostSeries,
)
from perfsonar.normalise import (
    canonical_ip,
    owd_scale,
    parse_archive_time,
    parse_seconds,
    plausible,
    plausible_time,
    to_float,
)

log = logging.getLogger("lark.spider")

INDICES = {THROUGHPUT: ("pscheduler_throughput",), LATENCY: ("pscheduler_latencybg", "pscheduler_latency"),
           RTT: ("pscheduler_rtt",)}

# Per run only what the numbers need; the host names once per pair (the "names" top hit), which
# keeps responses ~3x smaller at OSG scale, where decoding JSON is most of the crawl's CPU.
RUN_FIELDS = ["pscheduler.start_time", "result.succeeded", "result.error"]
NAME_FIELDS = ["meta.source.hostname", "meta.destination.hostname", "test.spec.source", "test.spec.dest",
               "meta.ip_version", "test.spec.duration", "result.mss"]
TEST_FIELDS = {
    THROUGHPUT: ["result.throughput", "result.retransmits", "result.packets_lost", "result.packets_sent"],
    LATENCY: ["result.latency.median", "result.latency.min", "result.packets.loss", "test.spec.bucket-width"],
    RTT: ["result.rtt.mean", "result.rtt.min", "result.packets.loss"],
}

# The stale-pair query needs only the names (the family is in the key).
STALE_NAME_FIELDS = ["meta.source.hostname", "meta.destination.hostname", "test.spec.source", "test.spec.dest"]

# A pair with no run in the window, as a look-back listing keeps it: (src IP, dst IP, family, newest
# run, cadence, src name, dst name).
StaleEntry = tuple[str | None, str | None, int, float, float | None, str | None, str | None]

# Keep one response well below the size cap: pairs per page x documents per pair ~ 20,000 documents.
DOCS_PER_PAGE = 20000

# OpenSearch's response filtering: drop _index, _id, _score, sort values and totals of every hit.
FILTER_PATH = ",".join([
    "timed_out", "error",
    "aggregations.pairs.after_key",
    "aggregations.pairs.buckets.key",
    "aggregations.pairs.buckets.doc_count",
    "aggregations.pairs.buckets.ok.doc_count",
    "aggregations.pairs.buckets.repeat.value",
    "aggregations.pairs.buckets.last.value",
    "aggregations.pairs.buckets.names.hits.hits._source",
    "aggregations.pairs.buckets.recent.hits.hits._source",
])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_query(test: str, now: float, window: float, docs_per_pair: int, after: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """The ``_search`` body for one page of host pairs of one test kind."""
    composite: dict[str, Any] = {
        "size": max(10, min(1000, DOCS_PER_PAGE // max(1, docs_per_pair))),
        "sources": [
            {"src": {"terms": {"field": "meta.source.ip", "missing_bucket": True}}},
            {"dst": {"terms": {"field": "meta.destination.ip", "missing_bucket": True}}},
            {"ipv": {"terms": {"field": "meta.ip_version", "missing_bucket": True}}},
        ],
    }
    if after:
        composite["after"] = dict(after)
    return {
        "size": 0,
        "track_total_hits": False,
        "query": {"bool": {"filter": [
            {"range": {"pscheduler.start_time": {"gte": _iso(now - window), "lte": _iso(now + 600),
                                                 "format": "strict_date_optional_time"}}},
        ]}},
        "aggs": {"pairs": {
            "composite": composite,
            "aggs": {
                "ok": {"filter": {"term": {"result.succeeded": True}}},
                "repeat": {"min": {"field": "schedule.repeat"}},
                "names": {"top_hits": {
                    "size": 1,
                    "sort": [{"pscheduler.start_time": {"order": "desc"}}],
                    "_source": {"includes": NAME_FIELDS},
                }},
                "recent": {"top_hits": {
                    "size": docs_per_pair,
                    "sort": [{"pscheduler.start_time": {"order": "desc"}}],
                    "_source": {"includes": RUN_FIELDS + TEST_FIELDS[test]},
                }},
            },
        }},
    }


def build_stale_query(now: float, window: float, lookback: float, after: Mapping[str, Any] | None = None
                      ) -> dict[str, Any]:
    """The ``_search`` body listing pairs with runs in ``[now - lookback, now - window)``: newest run only.

    Every active pair has runs before the window too, so this lists (nearly) every pair again: it asks
    only for the keys, the newest start time, the schedule and the host names of the newest run (one
    ``names`` hit with :data:`STALE_NAME_FIELDS`), so a pair with no run in the window keeps the names
    the mesh and the site mapping know it by.
    """
    composite: dict[str, Any] = {"size": 1000, "sources": build_query(THROUGHPUT, now, window, 1)["aggs"]["pairs"]
                                 ["composite"]["sources"]}
    if after:
        composite["after"] = dict(after)
    return {
        "size": 0,
        "track_total_hits": False,
        "query": {"bool": {"filter": [
            {"range": {"pscheduler.start_time": {"gte": _iso(now - lookback), "lt": _iso(now - window),
                                                 "format": "strict_date_optional_time"}}},
        ]}},
        "aggs": {"pairs": {
            "composite": composite,
            "aggs": {
                "last": {"max": {"field": "pscheduler.start_time"}},
                "repeat": {"min": {"field": "schedule.repeat"}},
                "names": {"top_hits": {
                    "size": 1,
                    "sort": [{"pscheduler.start_time": {"order": "desc"}}],
                    "_source": {"includes": STALE_NAME_FIELDS},
                }},
            },
        }},
    }


def last_page(buckets: list[Any], after: Any, body: Mapping[str, Any]) -> bool:
    """Whether a composite aggregation's page is its last: no buckets, no ``after_key``, or fewer
    buckets than asked for. A composite aggregation without a pipeline aggregation filtering its
    buckets fills every page but the last one (Elasticsearch's own SQL layer pages on that rule), so
    the empty page that would confirm the end — as costly to the archive as a full one — is not asked for."""
    size = body["aggs"]["pairs"]["composite"]["size"]
    return not buckets or not isinstance(after, Mapping) or len(buckets) < size


def _get(doc: Any, dotted: str) -> Any:
    """``a.b.c`` from a nested ``_source`` (also accepts flattened ``"a.b.c"`` keys)."""
    if isinstance(doc, Mapping) and dotted in doc:
        return doc[dotted]
    cur = doc
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def series_from_bucket(bucket: Any, test: str, archive: str, now: float, oldest: float, stale: bool = False
                       ) -> HostSeries | None:
    """One composite bucket (a host pair in one family) -> a :class:`HostSeries` in fixed units.

    ``stale``: a bucket of :func:`build_stale_query`, which yields a series with no samples and the
    newest run's time as ``last_seen``.
    """
    if not isinstance(bucket, Mapping) or not isinstance(bucket.get("key"), Mapping):
        return None
    key = bucket["key"]
    src_ip, dst_ip = canonical_ip(key.get("src")), canonical_ip(key.get("dst"))
    docs = _sources(bucket, "recent")
    named = _sources(bucket, "names") or docs
    family = to_float(key.get("ipv"))
    if family not in (4.0, 6.0):
        family = next((to_float(_get(d, "meta.ip_version")) for d in named
                       if to_float(_get(d, "meta.ip_version")) in (4.0, 6.0)), None)
    if family is None and src_ip:
        family = 6.0 if ":" in src_ip else 4.0
    if family not in (4.0, 6.0):
        return None
    for ip in (src_ip, dst_ip):
        if ip is not None and (6.0 if ":" in ip else 4.0) != family:
            return None  # an address of the other family: the document is inconsistent
    names = _names(named)
    series = HostSeries(archive=archive, test=test, family=int(family), src_name=names[0], src_ip=src_ip,
                        dst_name=names[1], dst_ip=dst_ip)
    if series.src_name is None and src_ip is None or series.dst_name is None and dst_ip is None:
        return None
    repeat = parse_seconds(_get(bucket, "repeat.value"))
    series.interval = repeat if repeat and repeat > 0 else None
    if stale:
        last = parse_archive_time(_get(bucket, "last.value_as_string") or _get(bucket, "last.value"))
        if last is None or not now - 10 * 365 * 86400 < last <= now + 600:
            return None
        series.last_seen = last
        return series
    volume = _volume(named[0]) if named and test == THROUGHPUT else (None, None)
    doc_count = int(to_float(bucket.get("doc_count")) or 0)
    ok_count = int(to_float(_get(bucket, "ok.doc_count")) or 0)
    listed_ok = listed_failed = listed_ok_docs = 0
    for doc in docs:
        ts = plausible_time(parse_archive_time(_get(doc, "pscheduler.start_time")), now, oldest)
        if ts is None:
            series.rejected += 1
            continue
        if _get(doc, "result.succeeded") is False:
            error = _get(doc, "result.error")
            series.failures.append((ts, str(error)[:300] if error else "run failed"))
            listed_failed += 1
            continue
        listed_ok_docs += 1
        if _add_values(series, doc, test, ts, volume):
            listed_ok += 1
    failed_total = max(0, doc_count - ok_count)
    series.unlisted_failures = max(0, failed_total - listed_failed)
    # Successful runs beyond the listed documents count too, but a listed run whose values were
    # all rejected as implausible does not.
    series.successes = max(listed_ok, ok_count - (listed_ok_docs - listed_ok))
    return series


def _sources(bucket: Mapping[str, Any], agg: str) -> list[Mapping[str, Any]]:
    hits = _get(bucket, f"{agg}.hits.hits")
    if not isinstance(hits, list):
        return []
    return [h["_source"] for h in hits if isinstance(h, Mapping) and isinstance(h.get("_source"), Mapping)]


def _names(docs: list[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    """Host names from the newest document: ``test.spec`` (the mesh's name) before the names Logstash
    looked up in DNS at ingest, which may differ."""
    for doc in docs:
        src = _get(doc, "test.spec.source") or _get(doc, "meta.source.hostname")
        dst = _get(doc, "test.spec.dest") or _get(doc, "meta.destination.hostname")
        src_name = src.strip().lower() if isinstance(src, str) and canonical_ip(src) is None else None
        dst_name = dst.strip().lower() if isinstance(dst, str) and canonical_ip(dst) is None else None
        if src_name or dst_name:
            return src_name, dst_name
    return None, None


def _volume(doc: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(seconds per run, MSS in bytes) of a throughput test, from its newest document."""
    duration = to_float(_get(doc, "test.spec.duration"))
    if duration is None:
        duration = parse_seconds(_get(doc, "test.spec.duration"))  # an ISO-8601 duration Logstash left as is
    return duration, to_float(_get(doc, "result.mss"))


def _add_values(series: HostSeries, doc: Mapping[str, Any], test: str, ts: float,
                volume: tuple[float | None, float | None] = (None, None)) -> bool:
    added = False

    def put(metric: str, value: float | None) -> None:
        nonlocal added
        checked = plausible(metric, value)
        if checked is None:
            if value is not None:
                series.rejected += 1
            return
        series.add(metric, ts, checked)
        added = True

    if test == THROUGHPUT:
        result = doc.get("result")
        if not isinstance(result, Mapping):  # flattened keys
            result = {k: _get(doc, f"result.{k}") for k in ("throughput", "packets_lost", "packets_sent",
                                                              "retransmits")}
        bps = to_float(result.get("throughput"))
        put(M_THROUGHPUT, bps)
        lost = result.get("packets_lost")
        if lost is not None:
            sent = to_float(result.get("packets_sent"))
            if sent and to_float(lost) is not None:
                put(M_TP_LOSS, float(lost) / sent)
        if volume[0] is not None and added:
            retransmits = to_float(result.get("retransmits"))
            if retransmits is not None:
                put(M_RETRANSMITS, retransmit_rate(retransmits, bps, volume[0], volume[1]))
    elif test == LATENCY:
        scale = owd_scale(None, _get(doc, "test.spec.bucket-width"))
        median, minimum = to_float(_get(doc, "result.latency.median")), to_float(_get(doc, "result.latency.min"))
        if minimum is not None and minimum < 0:
            series.rejected += 1  # unsynchronised clocks: drop the delay, keep the loss
        else:
            put(M_OWDELAY, None if median is None else median * scale)
        put(M_LOSS, to_float(_get(doc, "result.packets.loss")))
    elif test == RTT:
        mean = to_float(_get(doc, "result.rtt.mean"))
        if mean is None:
            mean = parse_seconds(_get(doc, "result.rtt.mean"))  # an ISO-8601 duration that Logstash missed
        put(M_RTT, None if mean is None else mean * 1000.0)
        put(M_RTT_LOSS, to_float(_get(doc, "result.packets.loss")))
    return added


class OpenSearchReader:
    """Reads one OpenSearch archive, one test kind at a time."""

    def __init__(self, client: HttpClient, archive: ArchiveRef, settings: ReadSettings, now: float,
                 cache: LookbackCache | None = None) -> None:
        self.client = client
        self.archive = archive
        self.settings = settings
        self.now = now
        self.cache = cache  # look-back listings kept between crawls (None: a new one every time)

    def search_url(self, test: str) -> str:
        return f"{self.archive.url.rstrip('/')}/{','.join(INDICES[test])}/_search"

    def read_test(self, test: str) -> list[HostSeries]:
        """Every host pair of one test kind. Raises on any failed page (the archive is then skipped)."""
        window = float(self.settings.windows[test])
        oldest = self.now - window
        url = self.search_url(test)
        params = {"ignore_unavailable": "true", "allow_no_indices": "true", "filter_path": FILTER_PATH}
        out: list[HostSeries] = []
        after: Mapping[str, Any] | None = None
        for _page in range(self.settings.max_metadata_pages):
            body = build_query(test, self.now, window, self.settings.max_docs_per_pair, after)
            answer = self.client.post_json(url, body, params, verify=self.archive.verify_tls,
                                           ca_bundle=self.archive.ca_bundle)
            if not isinstance(answer, Mapping):
                raise ResponseError(url, "search response is not a JSON object")
            if answer.get("timed_out") is True:
                raise ResponseError(url, "search timed out on the server (partial results refused)")
            if "error" in answer:
                raise ResponseError(url, f"search error: {str(answer['error'])[:200]}")
            pairs = _get(answer, "aggregations.pairs")
            if pairs is None and "timed_out" not in answer:
                # (filter_path drops empty sections, but timed_out is always there in a real answer)
                raise ResponseError(url, "not an OpenSearch search response")
            buckets = pairs.get("buckets", []) if isinstance(pairs, Mapping) else []
            if not isinstance(buckets, list):
                raise ResponseError(url, "aggregations.pairs.buckets is not a list")
            for bucket in buckets:
                series = series_from_bucket(bucket, test, self.archive.url, self.now, oldest)
                if series is not None:
                    out.append(series)
            after = pairs.get("after_key") if isinstance(pairs, Mapping) else None
            done = last_page(buckets, after, body)
            del answer, pairs, buckets, body  # one page at a time, none kept during the look-back
            if done:
                break
        if self.settings.lookback > window:
            out.extend(self._stale_pairs(test, window, url, params, out))
        return out

    def _stale_pairs(self, test: str, window: float, url: str, params: Mapping[str, str],
                     fresh: list[HostSeries]) -> list[HostSeries]:
        """The pairs with no run in the window but runs within ``lookback``, as stale series.

        From the cached listing when it is younger than ``stale_refresh``, else from a new look-back
        query (a failed one keeps the last listing). Entries that have runs in this crawl's window
        (``fresh``) or whose newest run is now older than ``lookback`` are left out.
        """
        s, cache = self.settings, self.cache
        listing = cache.get(self.archive.url, test) if cache is not None else None
        if not usable(listing, self.now, window, s.lookback):
            fresh_keys = {(x.src_ip, x.dst_ip, x.family) for x in fresh}
            try:
                entries = self._stale(test, window, url, params, fresh_keys)
            except SpiderError as err:
                # The fresh pairs are good data: a failed look-back only loses the stale ones, or
                # takes them from the last listing; it is tried again at the next crawl.
                if listing is None or listing.window != window or listing.lookback != s.lookback:
                    log.warning("archive %s: stale-pair search for %s failed, only pairs with runs in the "
                                "window are reported: %s", self.archive.url, test, err)
                    return []
                log.warning("archive %s: stale-pair search for %s failed, using the listing from %s ago: %s",
                            self.archive.url, test, human_duration(self.now - listing.made_at), err)
            else:
                listing = Listing(self.now, window, s.lookback, tuple(entries),
                                  due_at(self.archive.url, test, self.now, s.stale_refresh, listing is None))
                del entries
                if cache is not None:
                    cache.put(self.archive.url, test, listing)
            del fresh_keys
        assert listing is not None
        if not listing.entries:
            return []
        wanted = {(e[0], e[1], e[2]): e for e in listing.entries if e[3] >= self.now - s.lookback}
        for x in fresh:
            if wanted and (x.src_ip, x.dst_ip, x.family) in wanted:
                del wanted[(x.src_ip, x.dst_ip, x.family)]
        if not wanted:
            return []
        names: dict[str, str] = {}
        if any(e[5] is None or e[6] is None for e in wanted.values()):
            for x in fresh:  # the names this archive gives the same hosts in the window
                if x.src_ip and x.src_name:
                    names[x.src_ip] = x.src_name
                if x.dst_ip and x.dst_name:
                    names[x.dst_ip] = x.dst_name
        out = []
        for src_ip, dst_ip, family, last, interval, src_name, dst_name in wanted.values():
            out.append(HostSeries(archive=self.archive.url, test=test, family=family,
                                  src_name=src_name or names.get(src_ip or ""), src_ip=src_ip,
                                  dst_name=dst_name or names.get(dst_ip or ""), dst_ip=dst_ip,
                                  interval=interval, last_seen=last))
        return out

    def _stale(self, test: str, window: float, url: str, params: Mapping[str, str],
               fresh: set[tuple[str | None, str | None, int]]) -> list[StaleEntry]:
        """Pairs whose newest run is older than the window but within ``lookback``: (src IP, dst IP,
        family, newest run, cadence, src name, dst name), the names from that run. The answer lists
        every pair with older runs, nearly all of which also have runs in the window (``fresh``: their
        keys); those are skipped before any parsing, and each page is dropped once read."""
        out: list[StaleEntry] = []
        after: Mapping[str, Any] | None = None
        for _page in range(self.settings.max_metadata_pages):
            body = build_stale_query(self.now, window, self.settings.lookback, after)
            answer = self.client.post_json(url, body, params, verify=self.archive.verify_tls,
                                           ca_bundle=self.archive.ca_bundle)
            if not isinstance(answer, Mapping) or "error" in answer or answer.get("timed_out") is True:
                raise ResponseError(url, "stale-pair search failed")
            pairs = _get(answer, "aggregations.pairs")
            buckets = pairs.get("buckets", []) if isinstance(pairs, Mapping) else []
            if not isinstance(buckets, list):
                raise ResponseError(url, "aggregations.pairs.buckets is not a list")
            for bucket in buckets:
                key = bucket.get("key") if isinstance(bucket, Mapping) else None
                if isinstance(key, Mapping):
                    ipv = to_float(key.get("ipv"))
                    if (canonical_ip(key.get("src")), canonical_ip(key.get("dst")),
                            int(ipv) if ipv in (4.0, 6.0) else None) in fresh:
                        continue
                series = series_from_bucket(bucket, test, self.archive.url, self.now, 0.0, stale=True)
                if series is not None and series.last_seen is not None:
                    out.append((series.src_ip, series.dst_ip, series.family, series.last_seen, series.interval,
                                series.src_name, series.dst_name))
            after = pairs.get("after_key") if isinstance(pairs, Mapping) else None
            done = last_page(buckets, after, body)
            del answer, pairs, buckets, body
            if done:
                break
        return out

    def read(self) -> list[HostSeries]:
        out: list[HostSeries] = []
        for test in self.settings.tests:
            out.extend(self.read_test(test))
        return out
