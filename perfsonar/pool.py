"""What the HTCondor pool itself knows about sites: execute nodes that advertise their site.

Every Lark execute node advertises its site in its slot ads (``LarkSite``, from ``LARK_SITE``; glideins
also carry ``GLIDEIN_Site``) and its host name (``Machine``). From a collector query over the slot
ads the spider learns two things:

* **perfSONAR hosts a site names for itself**: a slot ad may list them in :data:`PERFSONAR_ATTR`
  (``LarkPerfSONARHosts``, a string list or a comma/space separated string; an admin adds it with
  ``LARK_PERFSONAR_HOSTS = ps-bw.example.edu, ps-lat.example.edu`` and ``STARTD_ATTRS``). These are
  exact statements and rank right after the spider's own rules.
* **the DNS domains of a site's execute nodes**: when every execute node in ``unl.edu`` belongs to
  UNL, a perfSONAR host in ``unl.edu`` is taken to be UNL's too. A domain shared by execute nodes of
  two sites says nothing and is dropped; so is a domain of fewer than two labels. These are the
  weakest statements and are consulted last, with the configured domain rules.

The query is optional (``sites.pool.enabled``) and goes through a :data:`PoolSource` (a function
returning slot ads as mappings), so tests use a fake source and need no collector.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from perfsonar.errors import SpiderError
from perfsonar.model import SiteClaim
from perfsonar.normalise import canonical_ip
from perfsonar.sites import DomainRule

PERFSONAR_ATTR = "LarkPerfSONARHosts"
SITE_ATTRS = ("LarkSite", "GLIDEIN_Site")
PROJECTION = ("Machine", *SITE_ATTRS, PERFSONAR_ATTR)

PoolSource = Callable[[], Iterable[Mapping[str, object]]]


@dataclass(frozen=True)
class PoolSettings:
    """``sites.pool``: whether and where to ask the collector for the slot ads."""

    enabled: bool = False
    collector: str | None = None  # None: the local pool's COLLECTOR_HOST
    constraint: str = "LarkSite =!= undefined || GLIDEIN_Site =!= undefined"


def _site_of(ad: Mapping[str, object]) -> str | None:
    for attr in SITE_ATTRS:
        value = ad.get(attr)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _hosts(value: object) -> list[str]:
    if isinstance(value, str):
        items: Iterable[object] = value.replace(",", " ").split()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return []
    return [str(v).strip().lower().rstrip(".") for v in items if isinstance(v, str) and v.strip()]


def domain_of(machine: str) -> str | None:
    """``node12.unl.edu`` -> ``unl.edu``; None for bare names, addresses and one-label domains."""
    name = machine.strip().lower().rstrip(".")
    if canonical_ip(name) or name.count(".") < 2:
        return None
    return name.split(".", 1)[1]


def pool_knowledge(ads: Iterable[Mapping[str, object]], source: str = "pool"
                   ) -> tuple[list[SiteClaim], list[DomainRule]]:
    """perfSONAR host claims and unambiguous execute-node domains from slot ads (pure)."""
    claims: list[SiteClaim] = []
    seen: set[tuple[str, str]] = set()
    domains: dict[str, Counter[str]] = {}
    machines: dict[str, set[str]] = {}
    for ad in ads:
        site = _site_of(ad)
        if site is None:
            continue
        for host in _hosts(ad.get(PERFSONAR_ATTR)):
            if (host, site) not in seen:
                seen.add((host, site))
                claims.append(SiteClaim(site, host, f"{source}: {PERFSONAR_ATTR} of execute nodes of {site}",
                                        "pool"))
        machine = ad.get("Machine")
        domain = domain_of(machine) if isinstance(machine, str) else None
        if domain and machine not in machines.setdefault(domain, set()):
            assert isinstance(machine, str)
            machines[domain].add(machine)
            domains.setdefault(domain, Counter())[site] += 1
    rules = []
    for domain in sorted(domains):
        sites = domains[domain]
        if len(sites) == 1:
            site, count = next(iter(sites.items()))
            rules.append(DomainRule(domain, site, f"{source}: {count} execute node{'s' if count > 1 else ''} of "
                                                  f"{site} in {domain}"))
    return claims, rules


def collector_source(settings: PoolSettings) -> PoolSource:
    """A :data:`PoolSource` that queries the collector's startd ads through the HTCondor bindings."""

    def query() -> list[Mapping[str, object]]:
        try:
            import htcondor2
        except ImportError as err:
            raise SpiderError(f"sites.pool needs the HTCondor Python bindings: {err}") from None
        try:
            coll = htcondor2.Collector(settings.collector) if settings.collector else htcondor2.Collector()
            ads = coll.query(htcondor2.AdType.Startd, constraint=settings.constraint, projection=list(PROJECTION))
        except (htcondor2.HTCondorException, OSError, ValueError, RuntimeError) as err:
            raise SpiderError(f"pool query at {settings.collector or 'the local collector'} failed: {err}") \
                from None
        return [{k: ad.get(k) for k in PROJECTION if k in ad} for ad in ads]

    return query
