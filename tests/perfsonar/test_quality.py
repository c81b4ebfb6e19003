"""Summary statistics and grades per site pair (pure functions, fixed clock)."""

from __future__ import annotations

import pytest

from lark.values import human_duration
from perfsonar.model import (
    DEGRADED,
    GOOD,
    LATENCY,
    M_LOSS,
    M_OWDELAY,
    M_RTT,
    M_RTT_LOSS,
    M_THROUGHPUT,
    RTT,
    STALE,
    THROUGHPUT,
    UNKNOWN,
    HostSeries,
    LinkKey,
)
from perfsonar.quality import (
    QualityPolicy,
    SummaryReport,
    carry_forward,
    grade_metric,
    link_grade,
    summarise_links,
    summarise_metric,
)

NOW = 1_746_200_000.0
POLICY = QualityPolicy()
SITES = {"10.0.1.1": "ALPHA", "10.0.2.1": "BETA", "10.0.2.2": "BETA", "2001:db8:1::1": "ALPHA",
         "2001:db8:2::1": "BETA"}


def site_of(name: str | None, ip: str | None) -> str | None:
    return SITES.get(ip or "")


def series(test: str, src: str = "10.0.1.1", dst: str = "10.0.2.1", family: int = 4, **metrics: list) -> HostSeries:
    s = HostSeries(archive="http://a/", test=test, family=family, src_name=None, src_ip=src, dst_name=None, dst_ip=dst)
    for metric, samples in metrics.items():
        for ts, value in samples:
            s.add(metric, ts, value)
    s.successes = max((len(v) for v in s.samples.values()), default=0)
    return s


def test_throughput_statistics_and_good_grade() -> None:
    hours = [NOW - 3600 * k for k in (1, 7, 13, 19)]
    s = series(THROUGHPUT, throughput=list(zip(hours, [9e9, 8e9, 7e9, 6e9], strict=True)))
    links = summarise_links([s], site_of, NOW, POLICY)
    link = links[LinkKey("ALPHA", "BETA", 4)]
    m = link.metrics[M_THROUGHPUT]
    assert (m.n, m.median, m.p25, m.p75) == (4, 7.5e9, 6.75e9, 8.25e9)
    assert m.latest == 9e9 and m.latest_ts == NOW - 3600
    assert m.expected_interval == 21600.0  # default cadence for throughput
    assert m.quality == GOOD and "4 samples" in m.reason
    assert link.quality == GOOD
    assert link.measured_at == NOW - 3600


def test_stale_relative_to_cadence() -> None:
    # Latency runs every 60 s; the newest sample is 30 min old -> stale (limit max(3x60, 900) s).
    s = series(LATENCY, loss=[(NOW - 1800, 0.0)], owdelay=[(NOW - 1800, 20.0)])
    m = summarise_links([s], site_of, NOW, POLICY)[LinkKey("ALPHA", "BETA", 4)].metrics[M_LOSS]
    assert m.quality == STALE
    assert "30 min old" in m.reason and "every 60 s" in m.reason
    # Throughput with the same age is fresh: it only runs every 6 h.
    t = series(THROUGHPUT, throughput=[(NOW - 1800, 5e9)])
    assert summarise_links([t], site_of, NOW, POLICY)[LinkKey("ALPHA", "BETA", 4)].quality == GOOD


def test_cadence_from_the_data_beats_mesh_and_default() -> None:
    s = series(THROUGHPUT, throughput=[(NOW - 5 * 3600, 5e9)])
    s.interval = 3600.0  # OpenSearch schedule.repeat: hourly -> 5 h is stale
    m = summarise_links([s], site_of, NOW, POLICY)[LinkKey("ALPHA", "BETA", 4)].metrics[M_THROUGHPUT]
    assert m.quality == STALE and m.expected_interval == 3600.0
    s2 = series(THROUGHPUT, throughput=[(NOW - 5 * 3600, 5e9)])
    mesh = {(THROUGHPUT, None, None): 14400.0}
    m2 = summarise_links([s2], site_of, NOW, POLICY, lambda t, a, _ai, b, _bi: mesh.get((t, a, b)))[
        LinkKey("ALPHA", "BETA", 4)].metrics[M_THROUGHPUT]
    assert m2.expected_interval == 14400.0 and m2.quality == GOOD


def test_loss_uses_mean_and_degrades_above_threshold() -> None:
    samples = [(NOW - 60 * k, v) for k, v in enumerate([0.0, 0.0, 0.0, 0.2], start=1)]
    s = series(LATENCY, loss=samples, owdelay=[(ts, 30.0) for ts, _ in samples])
    link = summarise_links([s], site_of, NOW, POLICY)[LinkKey("ALPHA", "BETA", 4)]
    loss = link.metrics[M_LOSS]
    assert loss.mean == pytest.approx(0.05) and loss.median == 0.0
    assert loss.quality == DEGRADED and "5.00 % > 2.00 %" in loss.reason
    assert link.metrics[M_OWDELAY].quality == GOOD
    assert link.quality == DEGRADED and link.reason.startswith("loss:")


def test_failures_lower_the_success_ratio() -> None:
    s = series(THROUGHPUT, throughput=[(NOW - 3600, 9e9)])
    s.failures = [(NOW - 7200, "iperf3 returned an error: unable to connect"), (NOW - 10800, "timeout")]
    m = summarise_links([s], site_of, NOW, POLICY)[LinkKey("ALPHA", "BETA", 4)].metrics[M_THROUGHPUT]
    assert (m.successes, m.failures) == (1, 2)
    assert m.success_ratio == pytest.approx(1 / 3)
    assert m.quality == DEGRADED and "2 of 3 runs failed" in m.reason and "unable to connect" in m.reason


def test_all_runs_failed_is_degraded_not_unknown() -> None:
    s = series(THROUGHPUT)
    s.failures = [(NOW - 3600, "Connection refused")]
    m = summarise_links([s], site_of, NOW, POLICY)[LinkKey("ALPHA", "BETA", 4)].metrics[M_THROUGHPUT]
    assert m.n == 0 and m.quality == DEGRADED and "all 1 runs" in m.reason and "Connection refused" in m.reason


def test_unlisted_failures_count() -> None:
    s = series(THROUGHPUT, throughput=[(NOW - 3600, 9e9)])
    s.unlisted_failures = 5  # OpenSearch counted them, top_hits did not return them
    m = summarise_links([s], site_of, NOW, POLICY)[LinkKey("ALPHA", "BETA", 4)].metrics[M_THROUGHPUT]
    assert m.failures == 5 and m.quality == DEGRADED


def test_min_throughput_and_spread_policies() -> None:
    samples = [(NOW - 3600 * k, v) for k, v in enumerate([1e9, 5e9, 9e9, 2e8], start=1)]
    strict = QualityPolicy(min_throughput_mbps=5000)
    m = summarise_metric(M_THROUGHPUT, samples, 4, [], 21600, NOW, strict)
    assert m.quality == DEGRADED and "< 5000 Mbps" in m.reason
    noisy = QualityPolicy(max_relative_spread=0.5)
    m2 = summarise_metric(M_THROUGHPUT, samples, 4, [], 21600, NOW, noisy)
    assert m2.quality == DEGRADED and m2.reason.startswith("noisy")


def test_too_few_samples_is_unknown() -> None:
    q, reason = grade_metric(M_THROUGHPUT, [5e9], NOW - 60, 1, 0, None, 21600, NOW, QualityPolicy(min_samples=3))
    assert q == UNKNOWN and "need 3" in reason
    assert grade_metric(M_RTT, [], None, 0, 0, None, 600, NOW, POLICY)[0] == UNKNOWN


def test_rtt_loss_is_kept_apart_from_one_way_loss() -> None:
    s = series(RTT, rtt=[(NOW - 300, 34.2)], rtt_loss=[(NOW - 300, 0.5)])
    link = summarise_links([s], site_of, NOW, POLICY)[LinkKey("ALPHA", "BETA", 4)]
    assert set(link.metrics) == {M_RTT, M_RTT_LOSS}
    assert link.metrics[M_RTT_LOSS].quality == DEGRADED and "round-trip loss" in link.metrics[M_RTT_LOSS].reason


def test_families_are_separate_links() -> None:
    v4 = series(THROUGHPUT, throughput=[(NOW - 60, 9e9)])
    v6 = series(THROUGHPUT, "2001:db8:1::1", "2001:db8:2::1", 6, throughput=[(NOW - 60, 2e9)])
    links = summarise_links([v4, v6], site_of, NOW, POLICY)
    assert links[LinkKey("ALPHA", "BETA", 4)].metrics[M_THROUGHPUT].median == 9e9
    assert links[LinkKey("ALPHA", "BETA", 6)].metrics[M_THROUGHPUT].median == 2e9


def test_site_pairs_pool_hosts_and_dedupe_copies_of_one_run() -> None:
    a = series(THROUGHPUT, dst="10.0.2.1", throughput=[(NOW - 60, 9e9), (NOW - 7200, 8e9)])
    b = series(THROUGHPUT, dst="10.0.2.2", throughput=[(NOW - 120, 1e9)])
    copy = series(THROUGHPUT, dst="10.0.2.1", throughput=[(NOW - 60, 9e9)])  # same run, central archive
    copy.archive = "http://central/"
    report = SummaryReport()
    link = summarise_links([a, b, copy], site_of, NOW, POLICY, report=report)[LinkKey("ALPHA", "BETA", 4)]
    assert link.metrics[M_THROUGHPUT].n == 3 and report.duplicates == 1
    assert link.metrics[M_THROUGHPUT].successes == 3
    assert link.archives == ("http://a/", "http://central/")


def test_unmapped_hosts_are_reported_not_guessed() -> None:
    s = series(THROUGHPUT, dst="192.0.2.99", throughput=[(NOW - 60, 9e9)])
    s.dst_name = "ps.unknown.example"
    intra = series(THROUGHPUT, dst="10.0.1.1", throughput=[(NOW - 60, 9e9)])
    report = SummaryReport()
    assert summarise_links([s, intra], site_of, NOW, POLICY, report=report) == {}
    assert report.unmapped == {"ps.unknown.example (192.0.2.99)"}
    assert report.same_site == 1


def test_link_grade_ignores_unknown_metrics_and_picks_worst() -> None:
    good = summarise_metric(M_THROUGHPUT, [(NOW - 60, 9e9)], 1, [], 21600, NOW, POLICY)
    stale = summarise_metric(M_OWDELAY, [(NOW - 86400, 30.0)], 1, [], 60, NOW, POLICY)
    unknown = summarise_metric(M_RTT, [], 0, [], 600, NOW, POLICY)
    assert link_grade({M_THROUGHPUT: good, M_RTT: unknown})[0] == GOOD
    quality, reason = link_grade({M_THROUGHPUT: good, M_OWDELAY: stale})
    assert quality == STALE and reason.startswith("one-way delay:")
    assert link_grade({M_RTT: unknown})[0] == UNKNOWN


def test_carry_forward_keeps_last_values_marked_stale() -> None:
    old = summarise_links([series(THROUGHPUT, throughput=[(NOW - 3600, 9e9)]),
                           series(LATENCY, loss=[(NOW - 60, 0.0)], owdelay=[(NOW - 60, 30.0)])],
                          site_of, NOW, POLICY)
    later = NOW + 600
    # This crawl only got throughput; the latency archive failed.
    fresh = summarise_links([series(THROUGHPUT, throughput=[(later - 60, 8e9)])], site_of, later, POLICY)
    merged = carry_forward(fresh, old.values(), later, max_age=86400, failed_archives={"http://a/": "HTTP 500"})
    link = merged[LinkKey("ALPHA", "BETA", 4)]
    assert link.metrics[M_THROUGHPUT].latest == 8e9 and not link.metrics[M_THROUGHPUT].carried
    loss = link.metrics[M_LOSS]
    assert loss.carried and loss.quality == STALE and loss.mean == 0.0
    assert "archive http://a/ failed: HTTP 500" in loss.reason and "11 min old" in loss.reason
    assert link.quality == STALE
    # A link with no fresh data at all survives too; too old ones are dropped.
    gone = carry_forward({}, old.values(), later, max_age=86400)
    assert gone[LinkKey("ALPHA", "BETA", 4)].quality == STALE
    assert carry_forward({}, old.values(), NOW + 10 * 86400, max_age=86400) == {}


def test_human_duration() -> None:
    assert [human_duration(s) for s in (42, 720, 18720, 3 * 86400)] == ["42 s", "12 min", "5.2 h", "3.0 d"]
