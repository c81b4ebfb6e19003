"""Discover test pairs, their cadence, their archives and their hosts' sites from meshes and the Lookup Service.

The meshes themselves are parsed by :mod:`perfsonar.meshes` (pure functions of the JSON); this module
fetches publishers' lists and meshes (following ``includes``), keeps the last good copy of a mesh that
fails, and merges everything into one :class:`Inventory`.

The simple Lookup Service is only an optional extra source of archives (its clients start from a
single bootstrap locator, some operators' servers are broken, some refuse GET). It is queried per
locator with a short timeout, and the spider refuses a configuration where it would be the only
source.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from perfsonar.errors import SpiderError
from perfsonar.http import HttpClient
from perfsonar.meshes import (
    LATENCYBG_INTERVAL,
    MESHCONFIG_TESTS,
    PSCONFIG_TESTS,
    ArchiveRef,
    MeshContent,
    MeshGroup,
    MeshTest,
    archives_from_psconfig_archive,
    parse_config_list,
    parse_mesh,
    parse_meshconfig,
    parse_psconfig,
    with_slash,
)
from perfsonar.model import ESMOND, SiteClaim
from perfsonar.normalise import canonical_ip, parse_archive_time

__all__ = ["LATENCYBG_INTERVAL", "MESHCONFIG_TESTS", "PSCONFIG_TESTS", "ArchiveRef", "Inventory", "LookupSettings",
           "MeshContent", "MeshGroup", "MeshSource", "MeshTest", "archives_from_psconfig_archive", "discover",
           "lookup_archives", "mesh_fetch_url", "parse_activehosts", "parse_config_list", "parse_ls_archives",
           "parse_mesh", "parse_meshconfig", "parse_psconfig"]

log = logging.getLogger("lark.spider")

MAX_INCLUDE_DEPTH = 3


@dataclass
class Inventory:
    """Everything discovery found, merged over all sources."""

    groups: list[MeshGroup] = field(default_factory=list)
    archives: dict[str, ArchiveRef] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    meshes: list[str] = field(default_factory=list)
    sites: list[SiteClaim] = field(default_factory=list)  # hosts' sites as the meshes state them, in mesh order

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
    allowed (records often list addresses that only work inside the host's own network).
    ``communities`` keeps only records in one of those ``group-communities``.
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
        expires = parse_archive_time(rec.get("expires"))
        if expires is not None and expires < now:
            continue
        if rec.get("state") in ("deleted", "expired"):
            continue
        if wanted and not wanted & {c.lower() for c in _values(rec, "group-communities")}:
            continue
        best = _best_locator(_values(rec, "service-locator"), allow_private)
        if best:
            out.append(ArchiveRef(with_slash(best), ESMOND, source))
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
                doc = client.get_json(url)
                if isinstance(doc, list) and src.format == "auto":
                    # A publisher's pub/config list given where a mesh was expected: follow its includes.
                    return src, MeshContent(includes=parse_config_list(doc, src.url), name=src.url), None
                return src, parse_mesh(doc, src.url, src.format, derive_opensearch), None
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
            if content.groups or not content.includes:
                inv.meshes.append(src.url)
            inv.groups.extend(content.groups)
            inv.sites.extend(content.sites)
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
