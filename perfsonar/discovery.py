"""Discover test pairs, their cadence and their archives from pSConfig/MeshConfig and the Lookup Service.

Meshes are what OSG/WLCG actually use as their inventory (reference §2, §11): a publisher's
``pub/config`` list names the meshes; each mesh is native pSConfig JSON, or legacy MeshConfig when
requested with ``?format=meshconfig``. From a mesh the spider learns the directed host pairs per test
type, the expected cadence (``schedules[].repeat``; powstream reports every 60 s) and where results
are archived: esmond/elmond read URLs (``_meta.esmond_url``, esmond archiver ``data.url``, MeshConfig
``measurement_archives[].read_url``) and, optionally, the OpenSearch endpoint of an HTTP archiver's
Logstash host.

The simple Lookup Service is only an optional extra source of archives (P1: a single bootstrap
locator, broken operators, GET refusals). It is queried per locator with a short timeout, and the
spider refuses a configuration where it would be the only source.

Parsers are pure functions of the decoded JSON; :func:`discover` does the fetching.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from perfsonar.errors import SpiderError
from perfsonar.http import HttpClient, origin
from perfsonar.model import ESMOND, LATENCY, OPENSEARCH, RTT, THROUGHPUT
from perfsonar.normalise import canonical_ip, parse_seconds, parse_timestamp

log = logging.getLogger("lark.spider")

# pSConfig test type -> spider test kind (trace, dns, http, ... carry no link figures we publish)
PSCONFIG_TESTS = {"throughput": THROUGHPUT, "latencybg": LATENCY, "latency": LATENCY, "rtt": RTT}
# MeshConfig (perfSONAR <= 4.0) test parameter types
MESHCONFIG_TESTS = {"perfsonarbuoy/bwctl": THROUGHPUT, "perfsonarbuoy/owamp": LATENCY, "pinger": RTT}
# powstream sends 600 packets at 10 Hz and reports once a minute (reference §2)
LATENCYBG_INTERVAL = 60.0
MAX_INCLUDE_DEPTH = 3


@dataclass(frozen=True)
class ArchiveRef:
    """A measurement archive read endpoint.

    ``url`` is the esmond/elmond base (``…/esmond/perfsonar/archive/``) or the OpenSearch base
    (``…/opensearch``). ``group`` ties together endpoints of one archive host so the crawler reads
    one of them (by preference) and falls back to the other when it fails.
    """

    url: str
    api: str
    source: str
    verify_tls: bool | None = None
    ca_bundle: str | None = None

    @property
    def group(self) -> str:
        """Host (and path root, if the archive is not at the server root) of the archive."""
        parts = urlsplit(self.url)
        root = parts.path.rstrip("/")
        for suffix in ("/esmond/perfsonar/archive", "/opensearch"):
            if root.endswith(suffix):
                root = root[: -len(suffix)]
                break
        return (parts.netloc.lower() + root) or self.url


@dataclass(frozen=True, slots=True)
class MeshTest:
    """One directed test between two hosts as a mesh defines it (expanded from a :class:`MeshGroup`)."""

    test: str
    src: str
    dst: str
    interval: float | None
    archives: tuple[str, ...] = ()


@dataclass(frozen=True)
class MeshGroup:
    """One task of a mesh: a test kind and cadence over a group of hosts.

    Kept as the group, not as its pairs: a 300-site full mesh is 90,000 directed pairs, and
    holding each as an object would cost tens of MB that nothing needs at once. Host names are
    lower case. ``host_archives`` are archives a host's own ``hosts`` entry adds to its tests.
    """

    test: str
    interval: float | None
    kind: str  # "mesh" (every ordered pair of a) or "disjoint" (a x b, and b x a unless unidirectional)
    a: tuple[str, ...]
    b: tuple[str, ...] = ()
    unidirectional: bool = False
    archives: tuple[str, ...] = ()
    host_archives: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @functools.cached_property
    def _a(self) -> frozenset[str]:
        return frozenset(self.a)

    @functools.cached_property
    def _b(self) -> frozenset[str]:
        return frozenset(self.b)

    def pairs(self) -> Iterator[tuple[str, str]]:
        if self.kind == "mesh":
            for src in self.a:
                for dst in self.a:
                    if src != dst:
                        yield src, dst
            return
        for src in self.a:
            for dst in self.b:
                if src != dst:
                    yield src, dst
                    if not self.unidirectional:
                        yield dst, src

    def count(self) -> int:
        if self.kind == "mesh":
            n = len(self._a)
            return n * (n - 1)
        n = sum(1 for x in self.a for y in self.b if x != y)
        return n if self.unidirectional else 2 * n

    def has(self, src: str, dst: str) -> bool:
        if src == dst:
            return False
        if self.kind == "mesh":
            return src in self._a and dst in self._a
        if src in self._a and dst in self._b:
            return True
        return not self.unidirectional and src in self._b and dst in self._a

    def sources(self) -> frozenset[str]:
        if self.kind == "mesh" or not self.unidirectional:
            return self._a | self._b
        return self._a

    def tests(self) -> Iterator[MeshTest]:
        for src, dst in self.pairs():
            extra = self.host_archives.get(src, ()) + self.host_archives.get(dst, ())
            urls = tuple(dict.fromkeys(self.archives + extra)) if extra else self.archives
            yield MeshTest(self.test, src, dst, self.interval, urls)


@dataclass
class MeshContent:
    """What one mesh document yields."""

    groups: list[MeshGroup] = field(default_factory=list)
    archives: list[ArchiveRef] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def tests(self) -> list[MeshTest]:
        """Every directed test, expanded (for inspection; the crawl works on the groups)."""
        return [t for g in self.groups for t in g.tests()]


@dataclass
class Inventory:
    """Everything discovery found, merged over all sources."""

    groups: list[MeshGroup] = field(default_factory=list)
    archives: dict[str, ArchiveRef] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    meshes: list[str] = field(default_factory=list)

    def add_archive(self, ref: ArchiveRef) -> None:
        self.archives.setdefault(ref.url, ref)

    @property
    def tests(self) -> list[MeshTest]:
        return [t for g in self.groups for t in g.tests()]

    def test_count(self) -> int:
        return sum(g.count() for g in self.groups)

    def hosts(self) -> set[str]:
        out: set[str] = set()
        for g in self.groups:
            out.update(g.a)
            out.update(g.b)
        return out

    def _by_source(self) -> dict[str, list[MeshGroup]]:
        """The groups in which each host is a source, so a pair is checked against a few groups."""
        index: dict[str, list[MeshGroup]] = {}
        for g in self.groups:
            for host in g.sources():
                index.setdefault(host, []).append(g)
        return index

    def interval_lookup(self) -> Callable[[str, str | None, str | None], float | None]:
        """A function (test, src name, dst name) -> cadence from the meshes, for quality grading.

        With a pair in several tasks the most frequent one sets the expectation.
        """
        by_source = self._by_source()

        def lookup(test: str, src: str | None, dst: str | None) -> float | None:
            if not src or not dst:
                return None
            s, d = src.lower(), dst.lower()
            found = [g.interval for g in by_source.get(s, ())
                     if g.test == test and g.interval is not None and g.has(s, d)]
            return min(found) if found else None

        return lookup

    def has_pair(self) -> Callable[[str | None, str | None], bool]:
        """A function (src name, dst name) -> whether any mesh tests that directed pair."""
        by_source = self._by_source()

        def check(src: str | None, dst: str | None) -> bool:
            if not src or not dst:
                return False
            s, d = src.lower(), dst.lower()
            return any(g.has(s, d) for g in by_source.get(s, ()))

        return check


# --------------------------------------------------------------------------------------------
# Publisher list


def parse_config_list(doc: Any, base_url: str) -> list[str]:
    """Mesh URLs from a publisher's ``pub/config`` list (``[{"include": ["<url>", …]}, …]``)."""
    items: list[Any]
    if isinstance(doc, Mapping):
        items = [doc]
    elif isinstance(doc, list):
        items = doc
    else:
        raise SpiderError(f"{base_url}: expected a list of {{'include': [...]}} objects")
    urls: list[str] = []
    for item in items:
        candidates: list[str] = []
        if isinstance(item, str):
            candidates = [item]
        elif isinstance(item, Mapping):
            inc = item.get("include", [])
            if isinstance(inc, str):
                candidates = [inc]
            elif isinstance(inc, list):
                candidates = [c for c in inc if isinstance(c, str)]
        for c in candidates:
            url = urljoin(base_url, c.strip())
            if url not in urls:
                urls.append(url)
    return urls


# --------------------------------------------------------------------------------------------
# Archive definitions


def archives_from_psconfig_archive(spec: Any, source: str, derive_opensearch: bool) -> list[ArchiveRef]:
    """Read endpoints of one pSConfig archive definition (esmond archiver or HTTP archiver)."""
    if not isinstance(spec, Mapping):
        return []
    archiver = spec.get("archiver", spec.get("archive"))
    data = spec.get("data") if isinstance(spec.get("data"), Mapping) else {}
    out: list[ArchiveRef] = []
    metas = [m for m in (spec.get("_meta"), data.get("_meta")) if isinstance(m, Mapping)]
    for meta in metas:
        url = meta.get("esmond_url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            out.append(ArchiveRef(_slash(url), ESMOND, source))
    if archiver == "esmond":
        url = data.get("url", data.get("_url"))
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            out.append(ArchiveRef(_slash(url), ESMOND, source))
    if archiver == "http" and derive_opensearch:
        url = data.get("_url", data.get("url"))
        path = urlsplit(url).path.rstrip("/") if isinstance(url, str) else ""
        if isinstance(url, str) and path.endswith("/logstash"):
            # perfSONAR 5 archives serve OpenSearch read-only at /opensearch next to /logstash.
            out.append(ArchiveRef(origin(url) + path[: -len("/logstash")] + "/opensearch", OPENSEARCH, source))
    return out


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


# --------------------------------------------------------------------------------------------
# pSConfig


def parse_psconfig(doc: Any, source: str, derive_opensearch: bool = False) -> MeshContent:
    """Directed host pairs, cadences and archives of a native pSConfig document."""
    if not isinstance(doc, Mapping):
        raise SpiderError(f"{source}: pSConfig document is not a JSON object")
    content = MeshContent(name=_display_name(doc) or source)
    addresses = doc.get("addresses") if isinstance(doc.get("addresses"), Mapping) else {}
    groups = doc.get("groups") if isinstance(doc.get("groups"), Mapping) else {}
    tests = doc.get("tests") if isinstance(doc.get("tests"), Mapping) else {}
    schedules = doc.get("schedules") if isinstance(doc.get("schedules"), Mapping) else {}
    archives = doc.get("archives") if isinstance(doc.get("archives"), Mapping) else {}
    tasks = doc.get("tasks") if isinstance(doc.get("tasks"), Mapping) else {}
    hosts = doc.get("hosts") if isinstance(doc.get("hosts"), Mapping) else {}

    archive_refs: dict[str, list[ArchiveRef]] = {
        name: archives_from_psconfig_archive(spec, source, derive_opensearch) for name, spec in archives.items()
    }
    for refs in archive_refs.values():
        content.archives.extend(refs)

    def host_of(ref: Any) -> str | None:
        name = ref.get("name") if isinstance(ref, Mapping) else ref
        if not isinstance(name, str):
            return None
        addr = addresses.get(name)
        if isinstance(addr, Mapping):
            if addr.get("disabled") is True:
                return None
            value = addr.get("address")
            return value.strip().lower() if isinstance(value, str) and value.strip() else name.lower()
        return name.strip().lower()

    def host_archive_urls(address_name: str) -> list[str]:
        host = hosts.get(address_name)
        if not isinstance(host, Mapping):
            return []
        names = host.get("archives", [])
        return [r.url for n in names if isinstance(n, str) for r in archive_refs.get(n, [])]

    for task_name, task in tasks.items():
        if not isinstance(task, Mapping) or task.get("disabled") is True:
            continue
        test = tests.get(task.get("test"))
        if not isinstance(test, Mapping):
            continue
        kind = PSCONFIG_TESTS.get(str(test.get("type", "")))
        if kind is None:
            continue
        schedule = schedules.get(task.get("schedule")) if isinstance(task.get("schedule"), str) else None
        interval = parse_seconds(schedule.get("repeat")) if isinstance(schedule, Mapping) else None
        if interval is None and test.get("type") == "latencybg":
            interval = LATENCYBG_INTERVAL
        task_archives = [r.url for n in task.get("archives", []) if isinstance(n, str)
                         for r in archive_refs.get(n, [])]
        group = groups.get(task.get("group"))
        if not isinstance(group, Mapping):
            log.debug("%s: task %s names no known group", source, task_name)
            continue
        gtype = group.get("type")
        if gtype == "mesh":
            a_side, b_side = _members(group.get("addresses"), host_of), ()
        elif gtype == "disjoint":
            a_side, b_side = _members(group.get("a-addresses"), host_of), _members(group.get("b-addresses"), host_of)
        else:
            continue  # "list" groups are single-ended: no pairs
        names = {host_of(r): (r.get("name") if isinstance(r, Mapping) else r)
                 for key in ("addresses", "a-addresses", "b-addresses")
                 for r in (group.get(key) if isinstance(group.get(key), list) else [])}
        host_archives = {h: tuple(urls) for h, n in names.items() if h and isinstance(n, str)
                         and (urls := host_archive_urls(n))}
        content.groups.append(MeshGroup(kind, interval, str(gtype), a_side, b_side,
                                        bool(group.get("unidirectional", False)), tuple(dict.fromkeys(task_archives)),
                                        host_archives))
    includes = doc.get("includes", [])
    if isinstance(includes, list):
        content.includes = [urljoin(source, i) for i in includes if isinstance(i, str)]
    return content


def _members(refs: Any, host_of: Callable[[Any], str | None]) -> tuple[str, ...]:
    """Host names of a group's address references, lower case, interned, in order, without repeats."""
    out: dict[str, None] = {}
    for ref in refs if isinstance(refs, list) else []:
        host = host_of(ref)
        if host:
            out[sys.intern(host)] = None
    return tuple(out)


def _display_name(doc: Mapping[str, Any]) -> str | None:
    meta = doc.get("_meta")
    if isinstance(meta, Mapping) and isinstance(meta.get("display-name"), str):
        return meta["display-name"]
    desc = doc.get("description")
    return desc if isinstance(desc, str) else None


# --------------------------------------------------------------------------------------------
# MeshConfig (legacy)


def parse_meshconfig(doc: Any, source: str) -> MeshContent:
    """Directed host pairs, cadences and read URLs of a legacy MeshConfig document."""
    if not isinstance(doc, Mapping):
        raise SpiderError(f"{source}: MeshConfig document is not a JSON object")
    content = MeshContent(name=_display_name(doc) or source)
    host_mas: dict[str, list[str]] = {}

    def read_urls(mas: Any) -> list[str]:
        out = []
        for ma in mas if isinstance(mas, list) else []:
            if isinstance(ma, Mapping) and isinstance(ma.get("read_url"), str):
                url = ma["read_url"].strip()
                if url.startswith(("http://", "https://")):
                    out.append(_slash(url))
        return out

    def visit_hosts(hosts: Any, inherited: list[str]) -> None:
        for host in hosts if isinstance(hosts, list) else []:
            if not isinstance(host, Mapping):
                continue
            urls = read_urls(host.get("measurement_archives")) or inherited
            for addr in host.get("addresses", []):
                value = addr.get("address") if isinstance(addr, Mapping) else addr
                if isinstance(value, str) and value.strip():
                    host_mas.setdefault(value.strip().lower(), []).extend(urls)

    top = read_urls(doc.get("measurement_archives"))
    visit_hosts(doc.get("hosts"), top)
    for org in doc.get("organizations", []) if isinstance(doc.get("organizations"), list) else []:
        if not isinstance(org, Mapping):
            continue
        org_urls = read_urls(org.get("measurement_archives")) or top
        visit_hosts(org.get("hosts"), org_urls)
        for site in org.get("sites", []) if isinstance(org.get("sites"), list) else []:
            if isinstance(site, Mapping):
                visit_hosts(site.get("hosts"), read_urls(site.get("measurement_archives")) or org_urls)
    for urls in host_mas.values():
        for url in urls:
            content.archives.append(ArchiveRef(url, ESMOND, source))

    for test in doc.get("tests", []) if isinstance(doc.get("tests"), list) else []:
        if not isinstance(test, Mapping):
            continue
        params = test.get("parameters") if isinstance(test.get("parameters"), Mapping) else {}
        kind = MESHCONFIG_TESTS.get(str(params.get("type", "")))
        if kind is None:
            continue
        interval = parse_seconds(params.get("interval", params.get("test_interval")))
        if interval is None and kind == LATENCY:
            interval = LATENCYBG_INTERVAL
        members = test.get("members") if isinstance(test.get("members"), Mapping) else {}
        mtype = members.get("type")

        if mtype in ("mesh", "ordered_mesh"):
            a_side, b_side, gtype = _names(members, "members"), (), "mesh"
        elif mtype == "disjoint":
            a_side, b_side, gtype = _names(members, "a_members"), _names(members, "b_members"), "disjoint"
        else:
            continue
        urls = {h: tuple(dict.fromkeys(host_mas.get(h, []))) for h in a_side + b_side if host_mas.get(h)}
        content.groups.append(MeshGroup(kind, interval, gtype, a_side, b_side, False, (), urls))
    return content


def _names(members: Mapping[str, Any], key: str) -> tuple[str, ...]:
    raw = members.get(key, [])
    if not isinstance(raw, list):
        return ()
    return tuple(dict.fromkeys(sys.intern(h.strip().lower()) for h in raw if isinstance(h, str) and h.strip()))


def parse_mesh(doc: Any, source: str, fmt: str = "auto", derive_opensearch: bool = False) -> MeshContent:
    """Parse a mesh in the given format; ``auto`` tells MeshConfig (``organizations``) from pSConfig."""
    if fmt == "meshconfig" or (fmt == "auto" and isinstance(doc, Mapping) and "organizations" in doc):
        return parse_meshconfig(doc, source)
    return parse_psconfig(doc, source, derive_opensearch)


# --------------------------------------------------------------------------------------------
# Lookup Service


def parse_activehosts(doc: Any) -> list[str]:
    """Locators of alive Lookup Service instances from ``activehosts.json``."""
    hosts = doc.get("hosts") if isinstance(doc, Mapping) else None
    if not isinstance(hosts, list):
        raise SpiderError("activehosts.json has no 'hosts' list")
    alive = [h for h in hosts if isinstance(h, Mapping) and h.get("status") == "alive"
             and isinstance(h.get("locator"), str)]
    alive.sort(key=lambda h: h.get("priority", 0) if isinstance(h.get("priority"), int) else 0)
    return list(dict.fromkeys(h["locator"] for h in alive))


def _values(record: Mapping[str, Any], key: str) -> list[str]:
    value = record.get(key)
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)] if value is not None else []


def parse_ls_archives(records: Any, source: str, now: float, communities: Sequence[str] = (),
                      allow_private: bool = False) -> list[ArchiveRef]:
    """One esmond read URL per registered, unexpired ``ma`` service record.

    ``service-locator`` lists one URL per address x scheme; the first HTTPS URL with a host name is
    preferred, then HTTPS by address, then HTTP. Private and link-local addresses are dropped unless
    allowed (P5). ``communities`` keeps only records in one of those ``group-communities``.
    """
    if not isinstance(records, list):
        raise SpiderError(f"{source}: Lookup Service answer is not a list of records")
    wanted = {c.lower() for c in communities}
    out: list[ArchiveRef] = []
    for rec in records:
        if not isinstance(rec, Mapping):
            continue
        if "service" not in _values(rec, "type") or "ma" not in _values(rec, "service-type"):
            continue
        expires = parse_timestamp(rec.get("expires"))
        if expires is not None and expires < now:
            continue
        if rec.get("state") in ("deleted", "expired"):
            continue
        if wanted and not wanted & {c.lower() for c in _values(rec, "group-communities")}:
            continue
        best = _best_locator(_values(rec, "service-locator"), allow_private)
        if best:
            out.append(ArchiveRef(_slash(best), ESMOND, source))
    return out


def _best_locator(urls: Sequence[str], allow_private: bool) -> str | None:
    ranked: list[tuple[int, str]] = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        ip = canonical_ip(parts.hostname)
        if ip is not None:
            addr = ipaddress.ip_address(ip)
            if not allow_private and (addr.is_private or addr.is_link_local or addr.is_loopback):
                continue
        rank = (0 if parts.scheme == "https" else 2) + (0 if ip is None else 1)
        ranked.append((rank, url))
    return min(ranked)[1] if ranked else None


# --------------------------------------------------------------------------------------------
# Fetching


@dataclass(frozen=True)
class MeshSource:
    url: str
    format: str = "auto"  # auto | psconfig | meshconfig


@dataclass(frozen=True)
class LookupSettings:
    enabled: bool = False
    bootstrap: str = "http://ps1.es.net:8096/lookup/activehosts.json"
    timeout: float = 5.0
    communities: tuple[str, ...] = ()
    allow_private: bool = False


def mesh_fetch_url(source: MeshSource) -> str:
    if source.format == "meshconfig" and "format=meshconfig" not in source.url:
        return source.url + ("&" if "?" in source.url else "?") + "format=meshconfig"
    return source.url


def discover(client: HttpClient, publishers: Sequence[str], meshes: Sequence[MeshSource],
             static_archives: Sequence[ArchiveRef], lookup: LookupSettings, executor: Executor, now: float,
             derive_opensearch: bool = False, cache: dict[str, MeshContent] | None = None) -> Inventory:
    """Fetch publishers' lists, meshes (with their includes) and, if enabled, the Lookup Service.

    A mesh that cannot be fetched this time is taken from ``cache`` (its last good content) when
    there is one; every failure is recorded in ``Inventory.errors`` and logged, never raised.
    """
    inv = Inventory()
    for ref in static_archives:
        inv.add_archive(ref)
    sources: list[MeshSource] = list(meshes)
    for pub in publishers:
        try:
            for url in parse_config_list(client.get_json(pub), pub):
                sources.append(MeshSource(url, "auto"))
        except (SpiderError, ValueError) as err:
            inv.errors.append(f"publisher {pub}: {err}")

    seen: set[str] = set()
    depth = 0
    while sources and depth <= MAX_INCLUDE_DEPTH:
        batch = [s for s in dict.fromkeys(sources) if s.url not in seen]
        seen.update(s.url for s in batch)
        sources = []

        def fetch(src: MeshSource) -> tuple[MeshSource, MeshContent | None, str | None]:
            url = mesh_fetch_url(src)
            try:
                return src, parse_mesh(client.get_json(url), src.url, src.format, derive_opensearch), None
            except (SpiderError, ValueError) as err:
                return src, None, str(err)

        for src, content, error in executor.map(fetch, batch):
            if content is None:
                cached = cache.get(src.url) if cache is not None else None
                inv.errors.append(f"mesh {src.url}: {error}" + ("; using its last good copy" if cached else ""))
                if cached is None:
                    continue
                content = cached
            elif cache is not None:
                cache[src.url] = content
            inv.meshes.append(src.url)
            inv.groups.extend(content.groups)
            for ref in content.archives:
                inv.add_archive(ref)
            sources.extend(MeshSource(u, "auto") for u in content.includes)
        depth += 1

    if lookup.enabled:
        for ref in lookup_archives(client, lookup, executor, now, inv.errors):
            inv.add_archive(ref)
    return inv


def lookup_archives(client: HttpClient, settings: LookupSettings, executor: Executor, now: float,
                    errors: list[str]) -> list[ArchiveRef]:
    """``ma`` services from every alive Lookup Service locator; failures only add to ``errors``."""
    try:
        locators = parse_activehosts(client.get_json(settings.bootstrap, timeout=settings.timeout, retries=0))
    except (SpiderError, ValueError) as err:
        errors.append(f"lookup service bootstrap {settings.bootstrap}: {err}")
        return []

    def query(locator: str) -> list[ArchiveRef]:
        try:
            records = client.get_json(locator, {"type": "service", "service-type": "ma"},
                                      timeout=settings.timeout, retries=0)
            return parse_ls_archives(records, locator, now, settings.communities, settings.allow_private)
        except (SpiderError, ValueError) as err:
            errors.append(f"lookup service {locator}: {err}")
            return []

    out: list[ArchiveRef] = []
    for refs in executor.map(query, locators):
        out.extend(refs)
    return out
