"""Mesh documents: pSConfig templates and legacy MeshConfig -> test pairs, cadences, archives, sites.

Meshes are what OSG/WLCG actually use as their inventory (their publishers and ``psconfig-client``): a publisher's
``pub/config`` list names the meshes; each mesh is native pSConfig JSON, or legacy MeshConfig when
requested with ``?format=meshconfig``. From a mesh the spider learns the directed host pairs per test
type, the expected cadence (``schedules[].repeat``; powstream reports every 60 s), where results
are archived (esmond/elmond read URLs from ``_meta.esmond_url``, the esmond archiver's ``data.url``,
MeshConfig ``measurement_archives[].read_url``; optionally the OpenSearch endpoint of an HTTP
archiver's Logstash host), and what site each host belongs to, where the mesh says so:

* pSConfig: an address's ``_meta`` — a site-like key (:data:`META_SITE_KEYS`) or its
  ``display-name``, which is how the WLCG/OSG meshes name a host's site (PWA writes the host's
  description or site name there; WLCG's own ``psconfig-client`` reads the site from it);
* MeshConfig: the ``description`` of the ``organizations[].sites[]`` entry that lists the host, else
  the host's own ``hosts[].description`` — psconfig-web's MeshConfig output has one site entry per
  host (``{hosts: [host], location}``, no description) and puts the host's description or site
  name in the host's ``description``.

A display name that is only the host's own name or address says nothing about its site and is
ignored. Everything here is a pure function of the decoded JSON; :mod:`perfsonar.discovery` fetches.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from perfsonar.errors import SpiderError
from perfsonar.http import origin
from perfsonar.model import ESMOND, LATENCY, OPENSEARCH, RTT, THROUGHPUT, SiteClaim
from perfsonar.normalise import canonical_ip, parse_seconds

log = logging.getLogger("lark.spider")

# pSConfig test type -> spider test kind (trace, dns, http, ... carry no link figures we publish)
PSCONFIG_TESTS = {"throughput": THROUGHPUT, "latencybg": LATENCY, "latency": LATENCY, "rtt": RTT}
# MeshConfig (perfSONAR <= 4.0) test parameter types
MESHCONFIG_TESTS = {"perfsonarbuoy/bwctl": THROUGHPUT, "perfsonarbuoy/owamp": LATENCY, "pinger": RTT}
# powstream sends 600 packets at 10 Hz and reports once a minute (pScheduler powstream defaults)
LATENCYBG_INTERVAL = 60.0
# Keys of an address's ``_meta`` that name its site outright, checked before ``display-name``.
META_SITE_KEYS = ("site", "site-name", "site_name", "sitename", "rcsite")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?$", re.IGNORECASE)

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
    sites: list[SiteClaim] = field(default_factory=list)  # what the mesh says about its hosts' sites

    @property
    def tests(self) -> list[MeshTest]:
        """Every directed test, expanded (for inspection; the crawl works on the groups)."""
        return [t for g in self.groups for t in g.tests()]


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
            out.append(ArchiveRef(with_slash(url), ESMOND, source))
    if archiver == "esmond":
        url = data.get("url", data.get("_url"))
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            out.append(ArchiveRef(with_slash(url), ESMOND, source))
    if archiver == "http" and derive_opensearch:
        url = data.get("_url", data.get("url"))
        path = urlsplit(url).path.rstrip("/") if isinstance(url, str) else ""
        if isinstance(url, str) and path.endswith("/logstash"):
            # perfSONAR 5 archives serve OpenSearch read-only at /opensearch next to /logstash.
            out.append(ArchiveRef(origin(url) + path[: -len("/logstash")] + "/opensearch", OPENSEARCH, source))
    return out


def with_slash(url: str) -> str:
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
            return _host_key(value if isinstance(value, str) and value.strip() else name)
        return _host_key(name)

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
    for name, addr in addresses.items():
        if not isinstance(addr, Mapping) or not isinstance(name, str):
            continue
        host = host_of(name)
        found = meta_site(addr.get("_meta"), host or name)
        if host and found:
            content.sites.append(SiteClaim(found[0], host, f"mesh {source}: addresses.{name}._meta.{found[1]}",
                                           "psconfig"))
    return content


def meta_site(meta: Any, host: str) -> tuple[str, str] | None:
    """(site, key) from a pSConfig address ``_meta``: a site-like key, else ``display-name``."""
    if not isinstance(meta, Mapping):
        return None
    for key in (*META_SITE_KEYS, "display-name"):
        site = site_text(meta.get(key), host)
        if site:
            return site, key
    return None


def site_text(value: Any, host: str) -> str | None:
    """``value`` when it can be a site name: not empty, not the host itself, not an address or DNS name."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    low = text.lower().rstrip(".")
    if not text or low == host.lower().rstrip(".") or canonical_ip(text) or _DNS_NAME.match(text):
        return None
    return text


def _host_key(text: str) -> str:
    """A mesh host as the spider keys it: lower case, IP literals in canonical form."""
    low = text.strip().lower()
    return canonical_ip(low) or low


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
                    out.append(with_slash(url))
        return out

    def visit_hosts(hosts: Any, inherited: list[str], site: Any = None, where: str = "") -> None:
        for h, host in enumerate(hosts if isinstance(hosts, list) else []):
            if not isinstance(host, Mapping):
                continue
            urls = read_urls(host.get("measurement_archives")) or inherited
            for addr in host.get("addresses", []) if isinstance(host.get("addresses"), list) else []:
                value = addr.get("address") if isinstance(addr, Mapping) else addr
                if isinstance(value, str) and value.strip():
                    key = _host_key(value)
                    host_mas.setdefault(key, []).extend(urls)
                    # The site entry's description, else the host's own: psconfig-web writes one host
                    # per site entry with no site description and the host's description or site
                    # name in hosts[].description.
                    named, said = site_text(site, key), f"{where}description"
                    if not named:
                        named, said = site_text(host.get("description"), key), f"{where}hosts[{h}].description"
                    if named:
                        content.sites.append(SiteClaim(named, key, f"mesh {source}: {said}", "meshconfig"))

    top = read_urls(doc.get("measurement_archives"))
    visit_hosts(doc.get("hosts"), top)
    for i, org in enumerate(doc.get("organizations", []) if isinstance(doc.get("organizations"), list) else []):
        if not isinstance(org, Mapping):
            continue
        org_urls = read_urls(org.get("measurement_archives")) or top
        visit_hosts(org.get("hosts"), org_urls, None, f"organizations[{i}].")
        for j, site in enumerate(org.get("sites", []) if isinstance(org.get("sites"), list) else []):
            if isinstance(site, Mapping):
                visit_hosts(site.get("hosts"), read_urls(site.get("measurement_archives")) or org_urls,
                            site.get("description"), f"organizations[{i}].sites[{j}].")
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
    return tuple(dict.fromkeys(sys.intern(_host_key(h)) for h in raw if isinstance(h, str) and h.strip()))


def parse_mesh(doc: Any, source: str, fmt: str = "auto", derive_opensearch: bool = False) -> MeshContent:
    """Parse a mesh in the given format; ``auto`` tells MeshConfig (``organizations``) from pSConfig."""
    if fmt == "meshconfig" or (fmt == "auto" and isinstance(doc, Mapping) and "organizations" in doc):
        return parse_meshconfig(doc, source)
    return parse_psconfig(doc, source, derive_opensearch)
