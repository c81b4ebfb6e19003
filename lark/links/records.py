"""What an execute node publishes about its links: pure functions over ``LarkNetworkLink`` ads.

The negotiator cannot join ads, so each execute node copies the links *into* its site into its slot
ads. It publishes each link already judged, as the largest input the circuit breaker lets through
from that site, one flat attribute per remote site::

    LarkSite = "UNL"
    LarkMaxInputBytes_FNAL = 423000000000        (940 Mbit/s for LARK_MAX_TRANSFER_SECONDS)
    LarkMaxInputBytes_CERN = 1073741824          (stale, lossy or old: small inputs only)
    LarkMaxInputBytes_UNL = 1.0E300              (this site: no limit)
    LarkUnknownLinkMaxInputBytes = 1.0E300       (LARK_UNKNOWN_LINK_POLICY = allow)

Why flat, pre-judged attributes and not a record of measurements evaluated in START: the negotiator
evaluates the breaker for every job x slot pair it considers. A nested ``LarkLinks[site]["Mbps"]``
record evaluated there made the cycle 3.4x slower on 1000 x 1000 (benchmarks/negotiation_cycle.py);
a flat attribute named after the site, looked up by an expression the submit side compiled into the
job (``60-lark-submit.conf``), costs one hash lookup. The judging (loss, age, staleness, transfer
time) happens here, once a minute, instead of a million times a cycle.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import classad2

# attribute in a LarkNetworkLink ad -> field of the link record used here
FIELDS = {
    "LarkThroughputMbps": "Mbps",
    "LarkLossFraction": "Loss",
    "LarkMeasuredAt": "MeasuredAt",
    "LarkQuality": "Quality",
}
PREFERRED_FAMILY = 4  # jobs' transfers use IPv4 unless a site has only IPv6 measurements
LIMIT_PREFIX = "LarkMaxInputBytes_"
NO_LIMIT = 1.0e300  # "any size": larger than any input, still a number the negotiator compares
MAX_BYTES = 1 << 62  # the largest limit published as an integer (ClassAd integers are 64-bit)
_NOT_IN_A_NAME = re.compile(rb"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class BreakerKnobs:
    """The execute node's circuit-breaker knobs (70-lark-matchmaking.conf)."""

    max_transfer_seconds: float = 3600.0
    small_input_bytes: int = 1 << 30
    max_loss: float = 0.02
    max_link_age: float = 86400.0
    unknown_link_allowed: bool = True
    #: also publish the measurements as a nested record for people (``LarkLinks[site]["Mbps"]``);
    #: off by default: the record alone made a 1000 x 1000 negotiation cycle 1.12x slower
    publish_record: bool = False
    max_sites: int = 500


def attribute_suffix(site: str) -> str:
    """The site as part of an attribute name; the submit transform computes the same with
    ``replaceAll("[^A-Za-z0-9_]", LarkSourceSite, "_")``, which works on UTF-8 bytes: so does this
    ("Sité" -> "Sit__", one "_" per byte)."""
    return _NOT_IN_A_NAME.sub(b"_", site.encode()).decode()


def _value(ad: Mapping[str, object], name: str) -> object | None:
    value = ad.get(name)
    if value is None or isinstance(value, classad2.Value):
        return None
    return value


def site_key(site: str) -> str:
    """A site name as the breaker compares it: its attribute spelling (:func:`attribute_suffix`) in
    lower case, as ClassAd attribute names are. "ALPHA" (a slot's ``LarkSite``), "Alpha" (a mesh's
    display name) and "alpha" are one site, as they already share one ``LarkMaxInputBytes_`` attribute."""
    return attribute_suffix(site).lower()


def links_into(site: str, ads: Iterable[Mapping[str, object]]) -> dict[str, dict[str, object]]:
    """One record per remote site for the links whose destination is ``site``.

    Site names are compared with :func:`site_key`, so the spider's spelling of a site need not be
    the slot's. Where a site pair has both families, the IPv4 link wins; a link graded ``unknown``
    carries no figures and is left out (the unknown-link policy then applies to it).
    """
    here = site_key(site)
    chosen: dict[str, tuple[int, dict[str, object]]] = {}
    for ad in ads:
        destination = _value(ad, "LarkDestinationSite")
        if not isinstance(destination, str) or site_key(destination) != here:
            continue
        remote = _value(ad, "LarkSourceSite")
        if not isinstance(remote, str) or not remote or site_key(remote) == here:
            continue
        record = {field: v for attr, field in FIELDS.items() if (v := _value(ad, attr)) is not None}
        if "Mbps" not in record or record.get("Quality") == "unknown":
            continue
        family = _value(ad, "LarkIPFamily")
        rank = 0 if family == PREFERRED_FAMILY else 1
        if remote not in chosen or rank < chosen[remote][0]:
            chosen[remote] = (rank, record)
    return {name: chosen[name][1] for name in sorted(chosen)}


def why_broken(link: Mapping[str, object], knobs: BreakerKnobs, now: float) -> str | None:
    """Why large inputs must not cross this link, or None when its measurement can be trusted."""
    mbps = link.get("Mbps")
    if not isinstance(mbps, int | float) or not math.isfinite(mbps) or mbps <= 0:
        return "no usable throughput"
    if link.get("Quality") == "stale":
        return "graded stale"
    loss = link.get("Loss", 0.0)  # no loss test in the mesh: judged on throughput and age alone
    if not isinstance(loss, int | float) or not loss <= knobs.max_loss:  # NaN is lossy too
        return "lossy"
    measured = link.get("MeasuredAt")
    if not isinstance(measured, int | float) or not now - measured <= knobs.max_link_age:
        return "measurement too old"
    return None


@dataclass(frozen=True)
class Judgement:
    limit: int  # the largest input the breaker lets through the link
    broken: str | None  # why only small inputs may cross it, if so


def judge_link(link: Mapping[str, object], knobs: BreakerKnobs, now: float) -> Judgement:
    """What crosses the link within ``max_transfer_seconds``, never less than ``small_input_bytes``
    (small inputs always pass) nor more than MAX_BYTES (the ClassAd library's integers); a broken
    link lets only small inputs through."""
    broken = why_broken(link, knobs, now)
    if broken:
        return Judgement(knobs.small_input_bytes, broken)
    crosses = float(link["Mbps"]) * 1e6 / 8 * knobs.max_transfer_seconds  # type: ignore[arg-type]
    return Judgement(int(min(MAX_BYTES, max(knobs.small_input_bytes, crosses))), None)


def judge(links: Mapping[str, Mapping[str, object]], knobs: BreakerKnobs, now: float) -> dict[str, Judgement]:
    """Every link judged once per run; everything published is read from this."""
    return {remote: judge_link(link, knobs, now) for remote, link in links.items()}


def unknown_link_limit(knobs: BreakerKnobs) -> float:
    return NO_LIMIT if knobs.unknown_link_allowed else knobs.small_input_bytes


def slot_limits(site: str, judged: Mapping[str, Judgement]) -> dict[str, float]:
    """``LarkMaxInputBytes_<site>`` for every judged remote site, and no limit for this site.

    Attribute names are case-insensitive, so two sites whose names differ only in case or in
    characters an attribute name cannot hold share one attribute: the smallest limit wins, so a
    collision can only make the breaker stricter (also for this site's own jobs, should a remote
    site collide with it).
    """
    limits: dict[str, tuple[str, float]] = {}  # lower-cased name -> (name, limit)

    def put(name: str, limit: float) -> None:
        key = name.lower()
        limits[key] = (name, min(limit, limits[key][1]) if key in limits else limit)

    for remote, judgement in judged.items():
        put(LIMIT_PREFIX + attribute_suffix(remote), judgement.limit)
    put(LIMIT_PREFIX + attribute_suffix(site), NO_LIMIT)
    return dict(limits.values())


def published(judged: Mapping[str, Judgement], knobs: BreakerKnobs) -> dict[str, Judgement]:
    """At most LARK_LINKS_MAX_SITES links. A site left out gets the unknown-link limit, so the links
    left out are those whose limit is closest to it: the fastest under "allow", the most broken
    under "deny". (Rank then sees a fastest link left out as unknown, 0: the cap is for the breaker.)"""
    sign = 1 if knobs.unknown_link_allowed else -1  # allow: unknown = no limit; deny: unknown = small
    ranked = sorted(judged, key=lambda remote: (sign * judged[remote].limit, remote))
    return {remote: judged[remote] for remote in sorted(ranked[:knobs.max_sites])}


def cron_output(site: str, links: Mapping[str, Mapping[str, object]], knobs: BreakerKnobs, now: int,
                error: str = "", links_read_at: int | None = None) -> str:
    """STARTD_CRON output: ``Attr = value`` lines rendered by classad2, then ``- update:true``.

    ``error``: what went wrong in this run (empty clears an earlier message); ``links_read_at``: when
    ``links`` were read from the collector, if not ``now``."""
    judged = judge(links, knobs, now)
    shown = published(judged, knobs)
    ad = classad2.ClassAd()
    ad["LarkSite"] = site
    for name, limit in slot_limits(site, shown).items():
        ad[name] = limit
    ad["LarkUnknownLinkMaxInputBytes"] = unknown_link_limit(knobs)
    # for people, and bounded like the limits: the first LARK_LINKS_MAX_SITES names
    ad["LarkBrokenLinkSites"] = ",".join(sorted(remote for remote, j in judged.items() if j.broken)[:knobs.max_sites])
    if knobs.publish_record:
        ad["LarkLinks"] = classad2.ClassAd({name: classad2.ClassAd(dict(links[name])) for name in shown})
    ad["LarkLinksUpdatedAt"] = int(now if links_read_at is None else links_read_at)
    ad["LarkLinksCount"] = len(shown)
    ad["LarkLinksNotPublished"] = len(judged) - len(shown)  # over LARK_LINKS_MAX_SITES
    ad["LarkLinksError"] = error
    return ad.printOld() + "- update:true\n"
