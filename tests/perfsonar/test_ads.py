"""LarkNetworkLink ads built with the real classad2 bindings."""

from __future__ import annotations

import classad2

from perfsonar.ads import MY_TYPE, build_link_ad, build_link_ads, build_spider_ad
from perfsonar.model import (
    GOOD,
    M_LOSS,
    M_OWDELAY,
    M_THROUGHPUT,
    STALE,
    UNKNOWN,
    LinkKey,
    LinkSummary,
    MetricSummary,
)
from perfsonar.quality import QualityPolicy, link_grade, summarise_metric

NOW = 1_746_200_000.0


def link(metrics: dict[str, MetricSummary], family: int = 4) -> LinkSummary:
    quality, reason = link_grade(metrics)
    return LinkSummary(LinkKey("UNL", "AGLT2", family), metrics, quality, reason, ("ps-bw.unl.edu",),
                       ("psmsu02.aglt2.org",), ("https://ps.unl.edu/esmond/perfsonar/archive/",))


def test_link_ad_attributes_units_and_types() -> None:
    p = QualityPolicy()
    thr = summarise_metric(M_THROUGHPUT, [(NOW - 3600, 9.4e9), (NOW - 25200, 8.8e9)], 2, [(NOW - 9000, "refused")],
                           21600, NOW, p)
    loss = summarise_metric(M_LOSS, [(NOW - 60, 0.0), (NOW - 120, 0.004)], 2, [], 60, NOW, p)
    owd = summarise_metric(M_OWDELAY, [(NOW - 60, 34.42), (NOW - 120, 34.40)], 2, [], 60, NOW, p)
    ad = build_link_ad(link({M_THROUGHPUT: thr, M_LOSS: loss, M_OWDELAY: owd}), NOW, 1800)
    assert isinstance(ad, classad2.ClassAd)
    assert ad["MyType"] == MY_TYPE == "LarkNetworkLink"
    assert ad["Name"] == "UNL->AGLT2/IPv4"
    assert (ad["LarkSourceSite"], ad["LarkDestinationSite"], ad["LarkIPFamily"]) == ("UNL", "AGLT2", 4)
    assert ad["LarkThroughputMbps"] == 9100.0  # median of 9400 and 8800 Mbps
    assert ad["LarkThroughputMbpsLatest"] == 9400.0
    assert ad["LarkThroughputSamples"] == 2
    assert ad["LarkThroughputSuccessRatio"] == round(2 / 3, 4)
    assert ad["LarkLossFraction"] == 0.002  # mean, not median, for loss
    assert ad["LarkOneWayDelayMs"] == 34.41
    assert ad["LarkOneWayDelayExpectedIntervalSeconds"] == 60
    assert ad["LarkQuality"] == GOOD and isinstance(ad["LarkQualityReason"], str)
    assert ad["LarkMeasuredAt"] == int(NOW - 60) and ad["LarkAgeSeconds"] == 60
    assert ad["ClassAdLifetime"] == 1800
    assert list(ad["LarkSourceHosts"]) == ["ps-bw.unl.edu"]
    # The ad round-trips through the ClassAd text format and evaluates in expressions.
    again = classad2.parseOne(ad.printOld())
    assert again["LarkThroughputMbps"] == 9100.0
    expr = classad2.ExprTree('LarkQuality == "good" && LarkThroughputMbps > 1000 && LarkLossFraction < 0.01')
    assert expr.eval(again) is True


def test_missing_and_implausible_figures_are_left_out() -> None:
    p = QualityPolicy()
    garbage = MetricSummary(metric=M_LOSS, n=2, median=3.0, p25=3.0, p75=3.0, mean=3.0, latest=3.0,
                            latest_ts=NOW - 60, expected_interval=60, successes=2, failures=0, last_error=None,
                            quality=GOOD, reason="corrupted state")
    thr = summarise_metric(M_THROUGHPUT, [(NOW - 60, 9e9)], 1, [], 21600, NOW, p)
    ad = build_link_ad(link({M_LOSS: garbage, M_THROUGHPUT: thr}), NOW, 600)
    assert "LarkLossFraction" not in ad and "LarkLossFractionLatest" not in ad
    assert ad["LarkThroughputMbps"] == 9000.0
    assert "LarkRttMs" not in ad and "LarkOneWayDelayMs" not in ad
    # Undefined in expressions, so a policy can tell "unknown" from "bad".
    assert classad2.ExprTree("isUndefined(LarkRttMs)").eval(ad) is True


def test_unknown_links_are_not_published_unless_asked() -> None:
    p = QualityPolicy()
    empty = summarise_metric(M_THROUGHPUT, [], 0, [], 21600, NOW, p)
    stale = summarise_metric(M_THROUGHPUT, [(NOW - 10 * 86400, 9e9)], 1, [], 21600, NOW, p)
    unknown_link = link({M_THROUGHPUT: empty})
    stale_link = LinkSummary(LinkKey("A", "B", 6), {M_THROUGHPUT: stale}, *link_grade({M_THROUGHPUT: stale}))
    assert unknown_link.quality == UNKNOWN and stale_link.quality == STALE
    ads = build_link_ads([unknown_link, stale_link], NOW, 600)
    assert [a["Name"] for a in ads] == ["A->B/IPv6"]
    assert ads[0]["LarkAgeSeconds"] == 10 * 86400
    assert len(build_link_ads([unknown_link, stale_link], NOW, 600, include_unknown=True)) == 2


def test_spider_status_ad() -> None:
    ad = build_spider_ad("lark-spider@cm", NOW, 900, {"LarkLinks": 12, "LarkCrawlSeconds": 1.5})
    assert ad["MyType"] == "LarkSpider" and ad["LarkLinks"] == 12 and ad["ClassAdLifetime"] == 900


def test_refilling_an_ad_leaves_nothing_of_the_previous_link() -> None:
    p = QualityPolicy()
    full = link({M_THROUGHPUT: summarise_metric(M_THROUGHPUT, [(NOW - 60, 9e9)], 1, [], 21600, NOW, p),
                 M_LOSS: summarise_metric(M_LOSS, [(NOW - 60, 0.01)], 1, [], 60, NOW, p)})
    ad = build_link_ad(full, NOW, 600)
    assert "LarkLossFraction" in ad
    only_owd = LinkSummary(LinkKey("X", "Y", 6), {M_OWDELAY: summarise_metric(M_OWDELAY, [(NOW - 60, 20.0)], 1, [],
                                                                                 60, NOW, p)}, GOOD, "ok")
    same = build_link_ad(only_owd, NOW, 600, into=ad)
    assert same is ad
    assert ad["Name"] == "X->Y/IPv6" and ad["LarkOneWayDelayMs"] == 20.0
    assert "LarkLossFraction" not in ad and "LarkThroughputMbps" not in ad
