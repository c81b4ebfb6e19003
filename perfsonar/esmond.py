"""Read the esmond REST protocol: legacy esmond (perfSONAR <= 4) and elmond (perfSONAR 5).

One code path serves both dialects (elmond answers esmond's REST API): metadata search filtered by event type and time
range, paged through ``metadata-next-page`` (or ``limit``/``offset`` when a server omits it), then the
data of each wanted event type by following the ``base-uri`` / summary ``uri`` the metadata
advertises — esmond says ``…/base``, elmond ``…/base/0``, and only following what the server says is
right on both. Dialect differences handled here:

* metadata keys: 32-hex (esmond) or 64-hex ``test_checksum`` (elmond) — the one reliable sign of the
  dialect (perfSONAR 4.x esmond also says ``pscheduler/<tool>``);
* parameter values: strings in esmond (``"0.001"``), native numbers in elmond;
* ``tool-name``: ``pscheduler/<tool>`` for pScheduler data, whose latency histograms are in units of
  ``sample-bucket-width`` and get rescaled to ms (pre-pScheduler data advertises 0.0001 but its buckets are ms);
* data paging by ``time-start = last ts + 1`` (works on esmond's 1500 and elmond's 1000 defaults);
* ``time-updated``: trustworthy in esmond (a series whose newest datum is older than the window is
  not fetched, only reported with that age), the *scheduling* time of the newest run in elmond (set
  when pScheduler schedules the run, not when its result arrives),
  so elmond series are always fetched; a null ``time-updated`` means the event type never received
  data (nothing to fetch).

Throughput tests list their own loss and TCP retransmits next to ``throughput``: ``packet-loss-rate``
(UDP tests; a 0..1 fraction) and ``packet-retransmits`` (a count per run), turned into a rate per
segment sent with the run's volume (throughput x ``time-duration``) and an MSS of
:data:`ASSUMED_MSS` bytes, since esmond does not archive the MSS.

Parsing is done by pure functions (``series_spec``, ``convert_points``) so it is testable without a
server; :class:`EsmondReader` only adds the HTTP calls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from perfsonar.discovery import ArchiveRef
from perfsonar.errors import ResponseError, SpiderError
from perfsonar.http import HttpClient, same_origin
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
    histogram_median,
    owd_scale,
    parse_archive_time,
    plausible,
    plausible_time,
    to_float,
)

log = logging.getLogger("lark.spider")

# The event type whose metadata identifies a test kind, used as the metadata search filter.
PRIMARY_EVENT = {THROUGHPUT: "throughput", LATENCY: "histogram-owdelay", RTT: "histogram-rtt"}

# Event types read per test kind: (event type, metric, how to read the value).
# The first one is the test's primary event; the others are read only when the archive has data for them.
WANTED: dict[str, tuple[tuple[str, str, str], ...]] = {
    THROUGHPUT: (("throughput", M_THROUGHPUT, "number"), ("packet-loss-rate", M_TP_LOSS, "fraction"),
                 ("packet-retransmits", M_RETRANSMITS, "count")),
    LATENCY: (("histogram-owdelay", M_OWDELAY, "histogram"), ("packet-loss-rate", M_LOSS, "fraction")),
    RTT: (("histogram-rtt", M_RTT, "histogram"), ("packet-loss-rate-bidir", M_RTT_LOSS, "fraction")),
}
# Ping tests archived by old tools may store round-trip loss under the one-way name.
FALLBACK_EVENT = {"packet-loss-rate-bidir": "packet-loss-rate"}
# Bytes per TCP segment for turning a retransmit count into a rate where the archive does not say
# (esmond keeps no MSS): a 1500-byte Ethernet MTU less 52 bytes of IPv4 + TCP headers with
# timestamps. On jumbo-frame paths the real segments are larger and fewer, so the rate is a lower bound.
ASSUMED_MSS = 1448.0


def retransmit_rate(retransmits: float | None, bits_per_second: float | None, duration: float | None,
                    mss: float | None = None) -> float | None:
    """Retransmitted segments per segment sent, from one run's count, throughput and duration (s)."""
    if retransmits is None or bits_per_second is None or duration is None or retransmits < 0:
        return None
    segments = bits_per_second * duration / 8.0 / (mss if mss and mss > 0 else ASSUMED_MSS)
    return retransmits / segments if segments >= 1 else None


@dataclass(frozen=True)
class ReadSettings:
    """Per-crawl read knobs (config ``archives:`` and ``measurements:``)."""

    windows: Mapping[str, float]
    tests: tuple[str, ...] = (THROUGHPUT, LATENCY, RTT)
    page_size: int = 1000
    max_metadata_pages: int = 200
    max_data_pages: int = 20
    max_docs_per_pair: int = 100
    lookback: float = 0.0  # how far back to look for tests with no run in the window (0: not at all)
    stale_refresh: float = 0.0  # reuse a look-back listing for this long (0: a new one every crawl)


@dataclass(frozen=True)
class DataRef:
    """One event type of one metadata record to fetch."""

    event_type: str
    metric: str
    kind: str  # number | fraction | count | histogram | statistics | failures
    uri: str


@dataclass(frozen=True)
class SeriesSpec:
    """A metadata record reduced to what the spider needs to fetch and label its data."""

    test: str
    family: int
    src_name: str | None
    src_ip: str
    dst_name: str | None
    dst_ip: str
    scale: float
    refs: tuple[DataRef, ...]
    key: str
    duration: float | None = None  # seconds per run (``time-duration``), for the retransmit rate
    last_seen: float | None = None  # newest datum when it is older than the window (nothing to fetch)
    updated: float | None = None  # the primary event's time-updated (elmond: when the newest run was scheduled)


def _name(value: Any) -> str | None:
    """A host name from ``input-source``/``input-destination``; IP literals are not names."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    return None if canonical_ip(text) else text


def series_spec(md: Any, test: str, window_start: float) -> SeriesSpec | None:
    """What to fetch for one metadata record, or None when it does not describe a usable test.

    Skipped: non point-to-point subjects, ends that are not IP literals, mixed families, and event
    types whose ``time-updated`` says they have no data in the window (legacy esmond only: elmond's
    ``time-updated`` is when the newest run was *scheduled*, P17, so it is not trusted there).
    """
    if not isinstance(md, Mapping):
        return None
    if md.get("subject-type", "point-to-point") != "point-to-point":
        return None
    src_ip, dst_ip = canonical_ip(md.get("source")), canonical_ip(md.get("destination"))
    if src_ip is None or dst_ip is None:
        return None
    fam_src = 6 if ":" in src_ip else 4
    fam_dst = 6 if ":" in dst_ip else 4
    if fam_src != fam_dst:
        return None
    tool = md.get("tool-name") if isinstance(md.get("tool-name"), str) else None
    key = str(md.get("metadata-key", ""))
    # The key tells the dialect (a 64-hex test_checksum is elmond); the tool does not: perfSONAR 4.x
    # esmond archives pScheduler runs as "pscheduler/iperf3" too, with a trustworthy time-updated.
    elmond_like = len(key) == 64
    events: dict[str, Mapping[str, Any]] = {}
    for et in md.get("event-types", []) if isinstance(md.get("event-types"), list) else []:
        if isinstance(et, Mapping) and isinstance(et.get("event-type"), str):
            events[et["event-type"]] = et
    refs: list[DataRef] = []
    listed: list[float] = []  # time-updated of the wanted events that have (had) data
    for i, (event_type, metric, kind) in enumerate(WANTED[test]):
        et = events.get(event_type) or events.get(FALLBACK_EVENT.get(event_type, ""))
        if et is None:
            continue
        updated = to_float(et.get("time-updated"))
        if i > 0 and "time-updated" in et and updated is None:
            continue  # a secondary event type that never received data: nothing to fetch
        if updated is not None:
            listed.append(updated)
        if not elmond_like and _stale_event(et, window_start):
            continue
        if kind == "histogram":
            stats = _summary_uri(et, "statistics", 0)
            if stats:
                refs.append(DataRef(event_type, metric, "statistics", stats))
                continue
        base = et.get("base-uri")
        if isinstance(base, str) and base:
            refs.append(DataRef(event_type, metric, kind, base))
    primary = events.get(WANTED[test][0][0]) or {}
    primary_updated = to_float(primary.get("time-updated"))
    last_seen = None
    if not any(r.metric == WANTED[test][0][1] for r in refs):
        if elmond_like or not listed:
            return None
        # Legacy esmond lists the test, but its newest datum is older than the window: report its age.
        refs = []
        last_seen = max(listed)
    failures = events.get("failures")
    if failures is not None and isinstance(failures.get("base-uri"), str):
        updated = to_float(failures.get("time-updated"))
        # A null time-updated means the event type never received data; esmond's value is reliable.
        if updated is not None and (elmond_like or updated >= window_start):
            refs.append(DataRef("failures", "", "failures", failures["base-uri"]))
    scale = owd_scale(tool, md.get("sample-bucket-width")) if test == LATENCY else 1.0
    duration = to_float(md.get("time-duration")) if test == THROUGHPUT else None
    return SeriesSpec(test, fam_src, _name(md.get("input-source")), src_ip, _name(md.get("input-destination")),
                      dst_ip, scale, tuple(refs), key, duration, last_seen, primary_updated)


def _newest(spec: SeriesSpec) -> float | None:
    """When the test last ran, as far as its metadata says: esmond's age of a test with no datum in the
    window, else the primary event's ``time-updated`` (elmond: when its newest run was scheduled)."""
    return spec.last_seen if spec.last_seen is not None else spec.updated


def _stale_event(et: Mapping[str, Any], window_start: float) -> bool:
    updated = to_float(et.get("time-updated"))
    return updated is not None and updated < window_start


def _summary_uri(et: Mapping[str, Any], summary_type: str, window: int) -> str | None:
    for summary in et.get("summaries", []) if isinstance(et.get("summaries"), list) else []:
        if not isinstance(summary, Mapping) or summary.get("summary-type") != summary_type:
            continue
        if to_float(summary.get("summary-window")) == window and isinstance(summary.get("uri"), str):
            return summary["uri"]
    return None


def convert_points(points: Any, ref: DataRef, scale: float, series: HostSeries, now: float, oldest: float) -> int:
    """Add one data response's points to ``series`` in fixed units; returns how many were valid.

    Points with a bad timestamp, a non-numeric value or a value outside the plausible bounds are
    counted in ``series.rejected`` and dropped.
    """
    if not isinstance(points, list):
        raise ResponseError(ref.uri, "data response is not a JSON array")
    good = 0
    for point in points:
        if not isinstance(point, Mapping):
            series.rejected += 1
            continue
        ts = plausible_time(parse_archive_time(point.get("ts")), now, oldest)
        if ts is None:
            series.rejected += 1
            continue
        val = point.get("val")
        if ref.kind == "failures":
            error = val.get("error") if isinstance(val, Mapping) else val
            series.failures.append((ts, str(error)[:300] if error is not None else "unknown error"))
            good += 1
            continue
        value = _value(ref, val, scale)
        if ref.kind == "count":
            if value is None or value < 0:
                series.rejected += 1
                continue
            series.add(RAW_COUNT, ts, value)  # turned into a rate once the run's throughput is known
            good += 1
            continue
        checked = plausible(ref.metric, value)
        if checked is None:
            series.rejected += 1
            continue
        series.add(ref.metric, ts, checked)
        good += 1
    return good


def _value(ref: DataRef, val: Any, scale: float) -> float | None:
    if ref.kind in ("number", "count"):
        return to_float(val)
    if ref.kind == "fraction":
        if isinstance(val, Mapping):  # the stored {numerator, denominator} form
            num, den = to_float(val.get("numerator")), to_float(val.get("denominator"))
            return num / den if num is not None and den else None
        return to_float(val)
    if ref.kind == "statistics":
        median = to_float(val.get("median")) if isinstance(val, Mapping) else None
        minimum = to_float(val.get("minimum")) if isinstance(val, Mapping) else None
        if minimum is not None and minimum < 0:
            return None  # a negative one-way delay means unsynchronised clocks
        return None if median is None else median * scale
    if ref.kind == "histogram":
        if isinstance(val, Mapping) and any((to_float(k) or 0.0) < 0 for k in val):
            return None
        return histogram_median(val, scale)
    return None


RAW_COUNT = "_retransmit_count"


def finish_retransmits(series: HostSeries, duration: float | None, mss: float | None = None) -> None:
    """Replace the raw retransmit counts of a throughput series by rates per segment sent."""
    counts = series.samples.pop(RAW_COUNT, None)
    if not counts:
        return
    throughput = dict(series.samples.get(M_THROUGHPUT, ()))
    for ts, count in counts:
        rate = plausible(M_RETRANSMITS, retransmit_rate(count, throughput.get(ts), duration, mss))
        if rate is None:
            series.rejected += 1
        else:
            series.add(M_RETRANSMITS, ts, rate)


class EsmondReader:
    """Reads one esmond/elmond archive: :meth:`list_series` then :meth:`read` per series."""

    def __init__(self, client: HttpClient, archive: ArchiveRef, settings: ReadSettings, now: float,
                 cache: LookbackCache | None = None) -> None:
        self.client = client
        self.archive = archive
        self.settings = settings
        self.now = now
        self.cache = cache  # look-back listings kept between crawls (None: a wide listing every time)

    def _get(self, url: str, params: Mapping[str, object] | None = None) -> Any:
        return self.client.get_json(url, params, verify=self.archive.verify_tls, ca_bundle=self.archive.ca_bundle)

    def list_series(self) -> list[SeriesSpec]:
        """All usable metadata for the configured tests. Raises if the archive cannot be listed.

        The metadata search reaches back ``lookback`` (when longer than the window), so tests whose
        newest run is older than the window are listed too and reported as stale. That wide listing
        is made at most every ``stale_refresh`` (with a :class:`LookbackCache`): in between, the
        search covers the window only, and the tests the last wide listing found with no run in the
        window are added from the cache unless the window listing has them.
        """
        s, cache = self.settings, self.cache
        out: list[SeriesSpec] = []
        for test in s.tests:
            window = float(s.windows[test])
            start = self.now - window
            if s.lookback <= window:
                out.extend(self._specs(self._metadata(test, window), test, start))
                continue
            listing = cache.get(self.archive.url, test) if cache is not None else None
            if usable(listing, self.now, window, s.lookback):
                assert listing is not None
                specs = self._specs(self._metadata(test, window), test, start)
                listed = {(spec.key, spec.src_ip, spec.dst_ip) for spec in specs}
                oldest = self.now - s.lookback
                specs.extend(spec for spec in listing.entries if (spec.key, spec.src_ip, spec.dst_ip) not in listed
                             and (_newest(spec) or 0.0) >= oldest)
                del listed
            else:
                specs = self._specs(self._metadata(test, s.lookback), test, start)
                if cache is not None:
                    # Only what a crawl needs between refreshes: the tests with no (trusted) run in the window.
                    cache.put(self.archive.url, test, Listing(
                        self.now, window, s.lookback, tuple(spec for spec in specs if (_newest(spec) or start) < start),
                        due_at(self.archive.url, test, self.now, s.stale_refresh, listing is None)))
            out.extend(specs)
        return out

    @staticmethod
    def _specs(records: list[Any], test: str, start: float) -> list[SeriesSpec]:
        out = []
        for md in records:
            spec = series_spec(md, test, start)
            if spec is not None:
                out.append(spec)
        return out

    def _metadata(self, test: str, window: float) -> list[Any]:
        base = self.archive.url
        limit = self.settings.page_size
        params: dict[str, object] | None = {"event-type": PRIMARY_EVENT[test], "time-range": int(window),
                                            "limit": limit, "format": "json"}
        url = base
        records: list[Any] = []
        offset = 0
        for _page in range(self.settings.max_metadata_pages):
            page = self._get(url, params)
            if not isinstance(page, list):
                raise ResponseError(url, "metadata response is not a JSON array")
            records.extend(page)
            nxt = page[0].get("metadata-next-page") if page and isinstance(page[0], Mapping) else None
            if isinstance(nxt, str) and nxt:
                url, params = same_origin(base, nxt), None
            elif len(page) >= limit and not (page and isinstance(page[0], Mapping)
                                              and "metadata-next-page" in page[0]):
                # No paging hints at all: fall back to limit/offset.
                offset += limit
                url, params = base, {"event-type": PRIMARY_EVENT[test], "time-range": int(window),
                                     "limit": limit, "offset": offset, "format": "json"}
            else:
                break
        else:
            log.warning("%s: stopped after %d metadata pages", base, self.settings.max_metadata_pages)
        return records

    def read(self, spec: SeriesSpec) -> HostSeries:
        """Fetch every event type of one series. Raises :class:`SpiderError` if any fetch fails."""
        window = float(self.settings.windows[spec.test])
        start = self.now - window
        series = HostSeries(archive=self.archive.url, test=spec.test, family=spec.family, src_name=spec.src_name,
                            src_ip=spec.src_ip, dst_name=spec.dst_name, dst_ip=spec.dst_ip, last_seen=spec.last_seen)
        primary = WANTED[spec.test][0][1]
        for ref in spec.refs:
            url = same_origin(self.archive.url, ref.uri)
            time_start = int(start)
            for _page in range(self.settings.max_data_pages):
                points = self._get(url, {"time-start": time_start, "limit": self.settings.page_size,
                                         "format": "json"})
                convert_points(points, ref, spec.scale, series, self.now, start)
                if not isinstance(points, list) or len(points) < self.settings.page_size:
                    break
                last = max((parse_archive_time(p.get("ts")) or 0.0 for p in points if isinstance(p, Mapping)),
                           default=0.0)
                if last < time_start:
                    break  # a server ignoring time-start would loop forever
                time_start = int(last) + 1
        if spec.test == THROUGHPUT:
            finish_retransmits(series, spec.duration)
        series.successes = len(series.samples.get(primary, ()))
        if (not series.samples.get(primary) and not series.failures and spec.updated is not None
                and spec.updated < start and series.last_seen is None):
            series.last_seen = spec.updated  # elmond: when the newest run (before the window) was scheduled
        return series


def read_all(reader: EsmondReader, specs: Sequence[SeriesSpec]) -> list[HostSeries]:
    """Sequential helper for tests and small archives; the crawler parallelises instead."""
    out = []
    for spec in specs:
        try:
            out.append(reader.read(spec))
        except SpiderError as err:
            log.warning("%s", err)
    return out
