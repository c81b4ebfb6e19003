"""Map perfSONAR hosts to grid sites without hand-maintained host lists.

Sources, in order of precedence:

1. ``sites.rules`` in the spider config: CIDR prefixes and host-name patterns per site;
2. site registries: OSG Topology YAML (the ``topology/`` tree or single resource-group files),
   GOCDB service endpoints (XML as served by the GOCDB PI, or the same records as JSON) and CRIC /
   AGIS PerfSonar service records (JSON).

Measurements name their ends by IP (esmond, ``meta.*.ip``) and often by name too. Like WLCG's own
ingest (reference §3, P3), every registry and mesh host name is resolved to **all** its addresses
so a measurement is mapped by the IP it was taken on; IPv6 text is canonicalised first. A host that
matches nothing is reported as unmapped — never guessed from a similar name.

Parsing functions are pure (text in, entries out); resolution goes through an injectable
``Resolver`` so tests use a static table and never send DNS queries.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from perfsonar.errors import RegistryError
from perfsonar.normalise import canonical_ip

Resolver = Callable[[str], Sequence[str]]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PERFSONAR_SERVICE_TYPES = ("net.perfSONAR.Bandwidth", "net.perfSONAR.Latency")
REGISTRY_TYPES = ("osg-topology", "gocdb", "cric")
OSG_SITE_KEYS = ("resource_group", "site", "wlcg")


@dataclass(frozen=True)
class SiteRule:
    """One site's CIDR prefixes and host-name patterns (glob, or ``re:<regex>``)."""

    site: str
    networks: tuple[IPNetwork, ...] = ()
    patterns: tuple[str, ...] = ()

    def matches_name(self, name: str) -> bool:
        low = name.lower().rstrip(".")
        for pattern in self.patterns:
            if pattern.startswith("re:"):
                if re.fullmatch(pattern[3:], low, flags=re.IGNORECASE):
                    return True
            elif fnmatch.fnmatchcase(low, pattern.lower()):
                return True
        return False


@dataclass(frozen=True)
class RegistryEntry:
    """A perfSONAR host a registry assigns to a site."""

    site: str
    host: str
    source: str
    flavour: str | None = None


# --------------------------------------------------------------------------------------------
# Registry parsers (pure)


def parse_osg_resource_group(doc: Any, source: str, resource_group: str, site_dir: str | None = None,
                             site_key: str = "resource_group") -> list[RegistryEntry]:
    """perfSONAR hosts of one OSG Topology resource-group YAML document.

    The site is the resource group (the file name, as OSG's own XML calls it ``GroupName``), the
    site directory, or the WLCG accounting name of the group's resources (``site_key``). Inactive
    resources are skipped. A perfSONAR service's ``Details.endpoint`` wins over the resource FQDN.
    """
    if not isinstance(doc, Mapping):
        raise RegistryError(f"{source}: not an OSG Topology resource group (expected a mapping)")
    resources = doc.get("Resources")
    if not isinstance(resources, Mapping):
        return []
    wlcg_names = [r.get("WLCGInformation", {}).get("AccountingName") for r in resources.values()
                  if isinstance(r, Mapping) and isinstance(r.get("WLCGInformation"), Mapping)]
    wlcg = next((n for n in wlcg_names if isinstance(n, str) and n), None)
    if site_key == "site":
        site = site_dir or resource_group
    elif site_key == "wlcg":
        site = wlcg or resource_group
    else:
        site = resource_group
    out: list[RegistryEntry] = []
    for res in resources.values():
        if not isinstance(res, Mapping) or res.get("Active") is False:
            continue
        services = res.get("Services")
        if not isinstance(services, Mapping):
            continue
        for stype, svc in services.items():
            if stype not in PERFSONAR_SERVICE_TYPES:
                continue
            details = svc.get("Details") if isinstance(svc, Mapping) else None
            endpoint = details.get("endpoint") if isinstance(details, Mapping) else None
            host = endpoint if isinstance(endpoint, str) and endpoint else res.get("FQDN")
            if isinstance(host, str) and host:
                out.append(RegistryEntry(site, _host_only(host), source, stype))
    return out


def parse_gocdb(text: str, source: str) -> list[RegistryEntry]:
    """perfSONAR endpoints from GOCDB ``get_service_endpoint`` output (XML, or the same as JSON)."""
    records: list[Mapping[str, Any]] = []
    stripped = text.lstrip()
    if stripped.startswith("<"):
        try:
            root = ET.fromstring(text)
        except ET.ParseError as err:
            raise RegistryError(f"{source}: not valid GOCDB XML: {err}") from None
        for ep in root.iter("SERVICE_ENDPOINT"):
            records.append({child.tag: (child.text or "").strip() for child in ep})
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise RegistryError(f"{source}: not valid JSON: {err}") from None
        if isinstance(doc, Mapping):
            doc = doc.get("SERVICE_ENDPOINT", doc.get("results", list(doc.values())))
        if not isinstance(doc, list):
            raise RegistryError(f"{source}: expected a list of GOCDB SERVICE_ENDPOINT records")
        records = [r for r in doc if isinstance(r, Mapping)]
    out = []
    for rec in records:
        stype = str(rec.get("SERVICE_TYPE", ""))
        host, site = rec.get("HOSTNAME"), rec.get("SITENAME")
        if stype not in PERFSONAR_SERVICE_TYPES or not isinstance(host, str) or not isinstance(site, str):
            continue
        if str(rec.get("IN_PRODUCTION", "Y")).upper() in ("N", "FALSE", "0"):
            continue
        if host and site:
            out.append(RegistryEntry(site, _host_only(host), source, stype))
    return out


def parse_cric(text: str, source: str) -> list[RegistryEntry]:
    """PerfSonar service records from CRIC (``rcsite``) or its predecessor AGIS (``rc_site``).

    CRIC answers ``?json`` queries with an object keyed by service name, AGIS with a list; both are
    accepted. Records whose ``state``/``status`` says they are not active are skipped.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise RegistryError(f"{source}: not valid JSON: {err}") from None
    records = list(doc.values()) if isinstance(doc, Mapping) else doc
    if not isinstance(records, list):
        raise RegistryError(f"{source}: expected a list or an object of CRIC service records")
    out = []
    for rec in records:
        if not isinstance(rec, Mapping):
            continue
        stype = str(rec.get("type", "PerfSonar"))
        if stype.lower() != "perfsonar":
            continue
        if str(rec.get("state", "ACTIVE")).upper() not in ("ACTIVE", ""):
            continue
        site = rec.get("rcsite") or rec.get("rc_site") or rec.get("site")
        host = rec.get("endpoint") or rec.get("hostname")
        if isinstance(site, Mapping):
            site = site.get("name")
        if isinstance(site, str) and site and isinstance(host, str) and host:
            flavour = rec.get("flavour")
            out.append(RegistryEntry(site, _host_only(host), source, flavour if isinstance(flavour, str) else None))
    return out


def _host_only(endpoint: str) -> str:
    """``https://ps.example:443/x`` or ``ps.example:8085`` -> ``ps.example`` (lower case)."""
    text = endpoint.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):
        return text[1:].split("]", 1)[0].lower()
    if text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.lower().rstrip(".")


# --------------------------------------------------------------------------------------------
# Registry loaders (file reads only)


def load_registry(kind: str, path: Path, site_key: str = "resource_group") -> list[RegistryEntry]:
    """Entries of one registry file or directory. Raises :class:`RegistryError` naming the file."""
    try:
        if kind == "osg-topology":
            files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
            out: list[RegistryEntry] = []
            for f in files:
                if f.name.endswith("_downtime.yaml") or f.name == "SITE.yaml":
                    continue  # downtime and site-description files list no resources
                try:
                    doc = yaml.safe_load(f.read_text(encoding="utf-8"))
                except yaml.YAMLError as err:
                    raise RegistryError(f"{f}: not valid YAML: {err}") from None
                site_dir = f.parent.name if path.is_dir() and f.parent != path else None
                out.extend(parse_osg_resource_group(doc, str(f), f.stem, site_dir, site_key))
            return out
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise RegistryError(f"{path}: cannot read registry: {err.strerror or err}") from None
    if kind == "gocdb":
        return parse_gocdb(text, str(path))
    if kind == "cric":
        return parse_cric(text, str(path))
    raise RegistryError(f"{path}: unknown registry type {kind!r} (accepted: {', '.join(REGISTRY_TYPES)})")


# --------------------------------------------------------------------------------------------
# Resolution


def system_resolver(name: str) -> list[str]:
    """All A and AAAA addresses of ``name`` from the system resolver; [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    out: list[str] = []
    for info in infos:
        ip = canonical_ip(str(info[4][0]))
        if ip and ip not in out:
            out.append(ip)
    return out


def static_resolver(table: Mapping[str, Sequence[str]]) -> Resolver:
    """A resolver that answers from a fixed table (tests, benchmarks, air-gapped sites)."""
    lowered = {k.lower().rstrip("."): list(v) for k, v in table.items()}

    def resolve(name: str) -> list[str]:
        return [ip for ip in (canonical_ip(a) for a in lowered.get(name.lower().rstrip("."), [])) if ip]

    return resolve


# --------------------------------------------------------------------------------------------
# The map


@dataclass
class SiteMap:
    """Answers "which site is this host?" from rules, registries and resolved addresses.

    ``addresses`` maps a (lower-case) host name to its canonical IPs; build it with
    :func:`resolve_names`. Lookups are cached, so a crawl of 90,000 series costs one decision per
    distinct endpoint.
    """

    rules: Sequence[SiteRule] = ()
    entries: Sequence[RegistryEntry] = ()
    addresses: Mapping[str, Sequence[str]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        nets = [(net, rule.site) for rule in self.rules for net in rule.networks]
        # Longest prefix first, so a /28 carve-out beats the campus /16 of another rule.
        self._networks = sorted(nets, key=lambda item: -item[0].prefixlen)
        self._by_name: dict[str, str] = {}
        for entry in self.entries:
            host = entry.host.lower()
            known = self._by_name.get(host)
            if known is not None and known != entry.site:
                self.conflicts.append(f"{host} is listed for {known} and {entry.site} ({entry.source}); "
                                      f"keeping {known}")
                continue
            self._by_name[host] = entry.site
        self._by_ip: dict[str, str] = {}
        self._names_by_ip: dict[str, list[str]] = {}
        for name, ips in self.addresses.items():
            for ip in ips:
                self._names_by_ip.setdefault(ip, []).append(name)
        for host, site in self._by_name.items():
            literal = canonical_ip(host)
            for ip in ([literal] if literal else self.addresses.get(host, ())):
                known = self._by_ip.get(ip)
                if known is not None and known != site:
                    self.conflicts.append(f"address {ip} belongs to hosts of {known} and {site}; keeping {known}")
                    continue
                self._by_ip[ip] = site
        self._cache: dict[tuple[str | None, str | None], str | None] = {}

    def site_of(self, name: str | None, ip: str | None) -> str | None:
        """The site of an endpoint known by host name, IP, or both; None when nothing matches."""
        key = (name.lower().rstrip(".") if name else None, canonical_ip(ip) if ip else None)
        if key in self._cache:
            return self._cache[key]
        site = self._decide(*key)
        self._cache[key] = site
        return site

    def _decide(self, name: str | None, ip: str | None) -> str | None:
        if name and ip is None and canonical_ip(name):
            name, ip = None, canonical_ip(name)
        ips: list[str] = [ip] if ip else []
        if name:
            ips.extend(a for a in self.addresses.get(name, ()) if a not in ips)
        for addr in ips:
            site = self._by_network(addr)
            if site:
                return site
        names: list[str] = [name] if name else []
        for addr in ips:
            names.extend(n for n in self._names_by_ip.get(addr, ()) if n not in names)
        for candidate in names:
            for rule in self.rules:
                if rule.patterns and rule.matches_name(candidate):
                    return rule.site
        for candidate in names:
            if candidate in self._by_name:
                return self._by_name[candidate]
        for addr in ips:
            if addr in self._by_ip:
                return self._by_ip[addr]
        return None

    def _by_network(self, ip: str) -> str | None:
        addr = ipaddress.ip_address(ip)
        for net, site in self._networks:
            if addr.version == net.version and addr in net:
                return site
        return None


def resolve_names(names: Iterable[str], resolver: Resolver,
                  run: Callable[[Callable[[str], Sequence[str]], list[str]], Iterable[Sequence[str]]] | None = None
                  ) -> dict[str, list[str]]:
    """Resolve every host name (IP literals are kept as they are) to its canonical addresses.

    ``run`` maps the resolver over the names, e.g. ``executor.map`` for concurrency; default is a
    plain loop. Names that do not resolve map to [] (and are reported later if data uses them).
    """
    todo = sorted({n.lower().rstrip(".") for n in names if n and canonical_ip(n) is None})
    results = run(resolver, todo) if run else map(resolver, todo)
    out: dict[str, list[str]] = {}
    for name, ips in zip(todo, results, strict=True):
        out[name] = [c for c in (canonical_ip(a) for a in ips) if c]
    return out
