"""Build ``LarkNetworkLink`` ClassAds from link summaries (pure; real ``classad2`` objects).

One generic ad per directed site pair and IP family. Attribute names carry their unit
(``...Mbps``, ``...Ms``, ``...Fraction``, ``...Seconds``) so expressions that read them cannot mix
units. A figure the spider does not have is left out of the ad (``undefined`` in ClassAd terms),
never written as 0 or -1, so a policy cannot mistake "unknown" for "terrible" or "perfect".

Per metric ``<M>`` (Throughput, ThroughputLoss, Retransmit, Loss, OneWayDelay, Rtt, RttLoss) the ad
carries:

* ``Lark<M><Unit>``       headline figure: median (mean for the two loss fractions),
* ``Lark<M><Unit>P25``/``P75``/``Latest``,
* ``Lark<M>Samples``, ``Lark<M>SuccessRatio``, ``Lark<M>Quality``, ``Lark<M>QualityReason``,
  ``Lark<M>AgeSeconds``, ``Lark<M>ExpectedIntervalSeconds``.

and per link: ``LarkLossFraction`` / ``LarkLossTest`` (one-way loss from the latency test, else the
throughput test's own loss, a figure from this crawl before one carried over from an earlier crawl,
and which test it came from: the figure the circuit breaker reads),
``LarkQuality`` / ``LarkQualityReason`` (worst metric), ``LarkSuccessRatio`` (lowest
per-test ratio), ``LarkMeasuredAt`` (newest sample, UNIX s), ``LarkAgeSeconds`` (age of that sample
when the ad was built; consumers wanting the live age use ``time() - LarkMeasuredAt``),
``LarkUpdatedAt``, ``ClassAdLifetime``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import classad2

from lark.links.records import site_key
from perfsonar.model import (
    M_LOSS,
    M_OWDELAY,
    M_RETRANSMITS,
    M_RTT,
    M_RTT_LOSS,
    M_THROUGHPUT,
    M_TP_LOSS,
    METRIC_TEST,
    LinkSummary,
    MetricSummary,
)
from perfsonar.normalise import plausible
from perfsonar.quality import headline

MY_TYPE = "LarkNetworkLink"

# metric -> (attribute stem, unit suffix, factor from the internal unit to the ad's unit)
AD_METRICS: dict[str, tuple[str, str, float]] = {
    M_THROUGHPUT: ("Throughput", "Mbps", 1e-6),
    M_TP_LOSS: ("ThroughputLoss", "Fraction", 1.0),
    M_RETRANSMITS: ("Retransmit", "Fraction", 1.0),
    M_LOSS: ("Loss", "Fraction", 1.0),
    M_OWDELAY: ("OneWayDelay", "Ms", 1.0),
    M_RTT: ("Rtt", "Ms", 1.0),
    M_RTT_LOSS: ("RttLoss", "Fraction", 1.0),
}

# Lists of host names and archives are for people reading condor_status; keep the ad small.
MAX_LISTED = 8


def _number(metric: str, value: float | None, factor: float) -> float | None:
    """The value converted to the ad's unit, or None if it is missing or fails the bounds check.

    This is the last line of defence against publishing garbage: even a value that slipped past
    the readers (or a corrupted state file) is re-checked here.
    """
    if plausible(metric, value) is None:
        return None
    assert value is not None
    out = value * factor
    return round(out, 6) if math.isfinite(out) else None


def _metric_attributes(out: dict[str, Any], summary: MetricSummary, now: float) -> None:
    stem, unit, factor = AD_METRICS[summary.metric]
    figures = {
        f"Lark{stem}{unit}": headline(summary),
        f"Lark{stem}{unit}P25": summary.p25,
        f"Lark{stem}{unit}P75": summary.p75,
        f"Lark{stem}{unit}Latest": summary.latest,
    }
    for attr, value in figures.items():
        number = _number(summary.metric, value, factor)
        if number is not None:
            out[attr] = number
    out[f"Lark{stem}Samples"] = int(summary.n)
    ratio = summary.success_ratio
    if ratio is not None:
        out[f"Lark{stem}SuccessRatio"] = round(ratio, 4)
    out[f"Lark{stem}Quality"] = summary.quality
    out[f"Lark{stem}QualityReason"] = summary.reason
    age = summary.age(now)
    if age is not None:
        out[f"Lark{stem}AgeSeconds"] = int(round(age))
    out[f"Lark{stem}ExpectedIntervalSeconds"] = int(round(summary.expected_interval))


def link_ad_name(link: LinkSummary) -> str:
    return link.key.name()


def link_ad_attributes(link: LinkSummary, now: float, lifetime: int) -> dict[str, Any]:
    """Every attribute of a link's ad as plain Python values (pure; see the module doc for names)."""
    out: dict[str, Any] = {
        "MyType": MY_TYPE,
        "Name": link_ad_name(link),
        "LarkSourceSite": link.key.src_site,
        "LarkDestinationSite": link.key.dst_site,
        # the site as execute nodes look it up: their LARK_SITE may be spelt another way ("Big Site",
        # "BIG_SITE"), and the collector's == ignores case but not spaces and punctuation
        "LarkDestinationSiteKey": site_key(link.key.dst_site),
        "LarkIPFamily": int(link.key.family),
    }
    for metric in AD_METRICS:
        summary = link.metrics.get(metric)
        if summary is not None:
            _metric_attributes(out, summary, now)
    # One-way loss before the throughput test's own, but a fresh figure before one carried over.
    with_loss = [m for m in (M_LOSS, M_TP_LOSS) if m in link.metrics and link.metrics[m].n]
    loss_metric = next((m for m in with_loss if not link.metrics[m].carried), with_loss[0] if with_loss else None)
    if loss_metric is not None:
        loss = _number(loss_metric, headline(link.metrics[loss_metric]), 1.0)
        if loss is not None:
            out["LarkLossFraction"] = loss
            out["LarkLossTest"] = METRIC_TEST[loss_metric]
    ratios = [m.success_ratio for m in link.metrics.values() if m.success_ratio is not None]
    if ratios:
        out["LarkSuccessRatio"] = round(min(ratios), 4)
    out["LarkQuality"] = link.quality
    out["LarkQualityReason"] = link.reason
    measured = link.measured_at
    if measured is not None:
        out["LarkMeasuredAt"] = int(measured)
        out["LarkAgeSeconds"] = int(round(max(0.0, now - measured)))
    out["LarkUpdatedAt"] = int(now)
    out["LarkSourceHosts"] = list(link.src_hosts[:MAX_LISTED])
    out["LarkDestinationHosts"] = list(link.dst_hosts[:MAX_LISTED])
    out["LarkArchives"] = list(link.archives[:MAX_LISTED])
    out["ClassAdLifetime"] = int(lifetime)
    return out


def build_link_ad(link: LinkSummary, now: float, lifetime: int, into: classad2.ClassAd | None = None
                  ) -> classad2.ClassAd:
    """The ``LarkNetworkLink`` ad of one link, as of ``now`` (UNIX s), expiring after ``lifetime`` s.

    ``into`` is an existing ad to refill instead of allocating one: the htcondor 25.x ``classad2``
    bindings never free a ClassAd (~140 bytes each, measured), which a daemon that builds 10^5 ads
    per crawl cannot afford, so the publisher recycles a fixed pool of ads. Attributes the new link
    does not have are deleted first, so nothing of the previous link survives.
    """
    attrs = link_ad_attributes(link, now, lifetime)
    if into is None:
        ad = classad2.ClassAd()
    else:
        ad = into
        for key in [k for k in ad.keys() if k not in attrs]:
            del ad[key]
    for key, value in attrs.items():
        ad[key] = value
    return ad


def build_link_ads(links: Iterable[LinkSummary], now: float, lifetime: int,
                   include_unknown: bool = False) -> list[classad2.ClassAd]:
    """Ads for every link, sorted by name; links graded ``unknown`` only when asked for."""
    ordered = sorted(links, key=lambda link: (link.key.src_site, link.key.dst_site, link.key.family))
    return [build_link_ad(link, now, lifetime) for link in ordered if include_unknown or link.quality != "unknown"]


def build_spider_ad(name: str, now: float, lifetime: int, stats: dict[str, int | float | str]) -> classad2.ClassAd:
    """A ``LarkSpider`` status ad (crawl counters) so admins can watch the spider in condor_status."""
    ad = classad2.ClassAd()
    ad["MyType"] = "LarkSpider"
    ad["Name"] = name
    ad["LarkUpdatedAt"] = int(now)
    ad["ClassAdLifetime"] = int(lifetime)
    for key, value in sorted(stats.items()):
        ad[key] = value
    return ad
