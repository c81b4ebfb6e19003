"""Map perfSONAR hosts to grid sites without hand-maintained host lists, and say why.

Sources, in order of precedence (the first that knows a host decides; :meth:`SiteMap.explain` names it):

1. ``sites.rules`` in the spider config (and ``--site HOST=SITE``): CIDR prefixes (longest wins),
   then host-name patterns;
2. the HTCondor pool (``sites.pool``): perfSONAR hosts that execute nodes of a site list in their
   slot ads (:mod:`perfsonar.pool`);
3. site registries: OSG Topology, GOCDB, CRIC (:mod:`perfsonar.registries`);
4. legacy MeshConfig meshes: the ``organizations[].sites[]`` entry that lists the host;
5. pSConfig meshes: the address's ``_meta`` (a site key, else ``display-name``) (:mod:`perfsonar.meshes`);
6. domain rules, last: ``sites.domains`` and the DNS domains the pool's execute nodes of one site
   share, matched against the host's name or, for a bare address, its reverse DNS name.

Within one source the first statement about a host wins and a contradicting one is logged as a
conflict (e.g. one host in two meshes under two display names: the first mesh's name is kept).

Measurements name their ends by IP (esmond, ``meta.*.ip``) and often by name too. Like WLCG's own
ingest (``sand-ci/ps-ingest``), every host a source names is resolved to **all** its addresses, so a
measurement is mapped by the IP it was taken on; IPv6 text is canonicalised first. A host that
matches nothing is reported as unmapped — never guessed from a similar name.

Site names are normalised once, as matchmaking needs them: surrounding and repeated white space
removed, and names that matchmaking cannot tell apart — the same after ``[^A-Za-z0-9_]`` -> ``_``
and ignoring case, which is how the submit transform turns a site into an attribute name — are one
site, spelled as the highest-precedence source spells it.

Resolution goes through injectable resolvers so tests use static tables and send no DNS queries.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lark.links.records import site_key as attribute_key
from perfsonar.model import SiteClaim
from perfsonar.normalise import canonical_ip
from perfsonar.registries import RegistryEntry

Resolver = Callable[[str], Sequence[str]]
ReverseResolver = Callable[[str], str | None]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Claim kinds in order of precedence (after the rules, before the domain rules).
CLAIM_KINDS = ("pool", "registry", "meshconfig", "psconfig")


@dataclass(frozen=True)
class SiteRule:
    """One site's CIDR prefixes and host-name patterns (glob, or ``re:<regex>``)."""

    site: str
    networks: tuple[IPNetwork, ...] = ()
    patterns: tuple[str, ...] = ()
    source: str = "sites.rules"

    def matching_pattern(self, name: str) -> str | None:
        low = name.lower().rstrip(".")
        for pattern in self.patterns:
            if pattern.startswith("re:"):
                if re.fullmatch(pattern[3:], low, flags=re.IGNORECASE):
                    return pattern
            elif fnmatch.fnmatchcase(low, pattern.lower()):
                return pattern
        return None

    def matches_name(self, name: str) -> bool:
        return self.matching_pattern(name) is not None


@dataclass(frozen=True)
class DomainRule:
    """Hosts whose (forward or reverse DNS) name ends in ``domain`` belong to ``site``."""

    domain: str
    site: str
    source: str


@dataclass(frozen=True)
class Decision:
    """A host's site and the source that decided it (``site`` None: unmapped)."""

    site: str | None
    source: str


def normalise_site(name: str) -> str:
    """A site name with surrounding and repeated white space removed."""
    return " ".join(name.split())


def site_key(name: str) -> str:
    """What matchmaking can tell apart: the attribute-name form of the site, ignoring case (as
    ``lark-links`` compares sites), after the spider's white-space normalisation."""
    return attribute_key(normalise_site(name))


def registry_claims(entries: Iterable[RegistryEntry]) -> list[SiteClaim]:
    return [SiteClaim(e.site, e.host, f"registry {e.source}" + (f" ({e.flavour})" if e.flavour else ""),
                      "registry") for e in entries]


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


def system_reverse_resolver(ip: str) -> str | None:
    """The reverse DNS (PTR) name of ``ip``, or None."""
    try:
        return socket.gethostbyaddr(ip)[0].lower().rstrip(".")
    except (OSError, UnicodeError):
        return None


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
    """Answers "which site is this host, and who says so?" from every source, in precedence order.

    ``addresses`` maps a (lower-case) host name to its canonical IPs; build it with
    :func:`resolve_names`. Lookups are cached, so a crawl of 90,000 series costs one decision per
    distinct endpoint. ``reverse`` (IP -> name) is only consulted for the domain rules.
    """

    rules: Sequence[SiteRule] = ()
    claims: Sequence[SiteClaim] = ()
    domains: Sequence[DomainRule] = ()
    addresses: Mapping[str, Sequence[str]] = field(default_factory=dict)
    reverse: ReverseResolver | None = None
    conflicts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._spelling: dict[str, str] = {}
        nets = [(net, self._name(rule.site), f"{rule.source} cidr {net}") for rule in self.rules
                for net in rule.networks]
        # Longest prefix first, so a /28 carve-out beats the campus /16 of another rule.
        self._networks = sorted(nets, key=lambda item: -item[0].prefixlen)
        self._patterns = [(rule, self._name(rule.site)) for rule in self.rules if rule.patterns]
        self._names_by_ip: dict[str, list[str]] = {}
        for name, ips in self.addresses.items():
            for ip in ips:
                self._names_by_ip.setdefault(ip, []).append(name)
        # One (by name, by IP) table per claim kind, in precedence order.
        self._tiers: list[tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str]]]] = []
        for kind in CLAIM_KINDS:
            by_name: dict[str, tuple[str, str]] = {}
            for claim in self.claims:
                if claim.kind != kind:
                    continue
                host = canonical_ip(claim.host) or claim.host.lower().rstrip(".")
                site = self._name(claim.site)
                known = by_name.get(host)
                if known is not None:
                    if known[0] != site:
                        self.conflicts.append(f"{host} is {known[0]} ({known[1]}) and {site} ({claim.source}); "
                                              f"keeping {known[0]}")
                    continue
                by_name[host] = (site, claim.source)
            by_ip: dict[str, tuple[str, str]] = {}
            for host, (site, source) in by_name.items():
                literal = canonical_ip(host)
                for ip in ([literal] if literal else self.addresses.get(host, ())):
                    known = by_ip.get(ip)
                    if known is not None and known[0] != site:
                        self.conflicts.append(f"address {ip} belongs to hosts of {known[0]} and {site}; "
                                              f"keeping {known[0]}")
                        continue
                    by_ip.setdefault(ip, (site, f"{source}, by address {ip} of {host}" if not literal else source))
            self._tiers.append((by_name, by_ip))
        self._domains = sorted(((d.domain.lower().strip(".").removeprefix("*."), self._name(d.site), d.source)
                                for d in self.domains), key=lambda item: -len(item[0]))
        self._cache: dict[tuple[str | None, str | None], Decision] = {}

    def _name(self, site: str) -> str:
        """The one spelling of a site (the first source's, in precedence order)."""
        return self._spelling.setdefault(site_key(site), normalise_site(site))

    def site_of(self, name: str | None, ip: str | None) -> str | None:
        """The site of an endpoint known by host name, IP, or both; None when nothing matches."""
        return self.explain(name, ip).site

    def explain(self, name: str | None, ip: str | None) -> Decision:
        """The site of an endpoint and the source that decided it."""
        key = (name.lower().rstrip(".") if name else None, canonical_ip(ip) if ip else None)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._decide(*key)
        return found

    def _decide(self, name: str | None, ip: str | None) -> Decision:
        if name and ip is None and canonical_ip(name):
            name, ip = None, canonical_ip(name)
        ips: list[str] = [ip] if ip else []
        if name:
            ips.extend(a for a in self.addresses.get(name, ()) if a not in ips)
        for addr in ips:
            hit = self._by_network(addr)
            if hit:
                return hit
        names: list[str] = [name] if name else []
        via: dict[str, str] = {}  # names found through an address -> that address
        for addr in ips:
            for other in self._names_by_ip.get(addr, ()):
                if other not in names:
                    names.append(other)
                    via[other] = addr

        def how(candidate: str) -> str:
            return f", by address {via[candidate]} of {candidate}" if candidate in via else ""

        for candidate in names:
            for rule, site in self._patterns:
                pattern = rule.matching_pattern(candidate)
                if pattern is not None:
                    return Decision(site, f"{rule.source} host pattern {pattern!r}{how(candidate)}")
        for by_name, by_ip in self._tiers:
            for candidate in names:
                if candidate in by_name:
                    site, source = by_name[candidate]
                    return Decision(site, source + how(candidate))
            for addr in ips:
                if addr in by_ip:
                    return Decision(*by_ip[addr])
        if self._domains:
            candidates = list(names)
            if self.reverse is not None:
                candidates.extend(r for r in (self.reverse(a) for a in ips) if r and r not in candidates)
            for candidate in candidates:
                low = candidate.lower().rstrip(".")
                for domain, site, source in self._domains:
                    if low == domain or low.endswith("." + domain):
                        how = "" if candidate in names else " (reverse DNS)"
                        return Decision(site, f"{source}: {candidate}{how} is in {domain}")
        return Decision(None, "no rule, pool, registry, mesh or domain knows it")

    def _by_network(self, ip: str) -> Decision | None:
        addr = ipaddress.ip_address(ip)
        for net, site, source in self._networks:
            if addr.version == net.version and addr in net:
                return Decision(site, source)
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
