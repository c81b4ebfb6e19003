"""Loss and retransmits from every test that reports them, stale pairs kept visible, and the mesh's
cadence matched whichever way round mesh and archive name a host.

Archive shapes (esmond ``types.py``, elmond, perfSONAR Logstash pipeline): esmond throughput
metadata lists ``packet-retransmits`` (TCP) or ``packet-loss-rate`` (UDP) next to ``throughput``; a
null ``time-updated`` means an event type never had data; OpenSearch throughput documents carry
``result.retransmits``/``result.mss`` or the flat UDP ``result.packets_sent``/``packets_lost``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lark.links.records import BreakerKnobs, judge, links_into
from perfsonar.ads import link_ad_attributes
from perfsonar.config import parse_config
from perfsonar.crawl import Spider
from perfsonar.discovery import ArchiveRef
from perfsonar.esmond import ASSUMED_MSS, EsmondReader, ReadSettings, retransmit_rate
from perfsonar.http import HttpClient, HttpSettings
from perfsonar.meshes import MeshGroup
from perfsonar.meshindex import MeshIndex
from perfsonar.model import (
    DEGRADED,
    GOOD,
    LATENCY,
    M_LOSS,
    M_RETRANSMITS,
    M_RTT,
    M_THROUGHPUT,
    M_TP_LOSS,
    RTT,
    STALE,
    THROUGHPUT,
    LinkKey,
)
from perfsonar.opensearch import OpenSearchReader
from tests.perfsonar.fakeps import EsmondApp, EsmondTest, FakePerfSONAR, OpenSearchApp, StaticApp, os_doc, psconfig_mesh

WINDOWS = {THROUGHPUT: 86400.0, LATENCY: 1800.0, RTT: 3600.0}
WEEK = 7 * 86400.0
A = ("ps-bw.alpha.example", "10.1.0.10")
B = ("ps-bw.beta.example", "10.2.0.20")
A6 = ("ps-bw.alpha.example", "2001:db8:1::10")
B6 = ("ps-bw.beta.example", "2001:db8:2::20")


def client() -> HttpClient:
    return HttpClient(HttpSettings(timeout=2.0, retries=0), sleep=lambda _s: None)


def settings(**kw: object) -> ReadSettings:
    return ReadSettings(windows=WINDOWS, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# esmond / elmond


@pytest.mark.parametrize("dialect", ["esmond", "elmond"])
def test_esmond_throughput_loss_and_retransmits(server: FakePerfSONAR, now: float, dialect: str) -> None:
    app = EsmondApp(dialect, mount="/a")
    server.mount("/a", app)
    t = int(now)
    # TCP: 30 s runs at 1 Gbit/s = 3.75e9 bytes = 2,589,779 segments of 1448 bytes; 2590 retransmits ~ 0.1 %.
    app.add(EsmondTest("throughput", A[1], B[1], A[0], B[0], duration=30, points={
        "throughput": [(t - 3600, 1.0e9), (t - 7200, 1.0e9), (t - 10800, None)],  # a null value is dropped
        "packet-retransmits": [(t - 3600, 2590), (t - 7200, 0), (t - 10800, None)]}))
    # UDP: the test's own packet-loss-rate (0..1).
    app.add(EsmondTest("throughput", B[1], A[1], B[0], A[0], protocol="udp", points={
        "throughput": [(t - 3600, 5.0e8)], "packet-loss-rate": [(t - 3600, 0.03)]}))
    r = EsmondReader(client(), ArchiveRef(server.url("/a/esmond/perfsonar/archive/"), "esmond", "t"),
                     settings(tests=(THROUGHPUT,)), now)
    by_src = {spec.src_ip: r.read(spec) for spec in r.list_series()}
    tcp, udp = by_src[A[1]], by_src[B[1]]
    rates = sorted(v for _, v in tcp.samples[M_RETRANSMITS])
    assert rates[0] == 0.0 and rates[1] == pytest.approx(2590 / (1.0e9 * 30 / 8 / ASSUMED_MSS))
    assert M_TP_LOSS not in tcp.samples and tcp.rejected == 2 and tcp.successes == 2
    assert udp.samples[M_TP_LOSS] == [(t - 3600, 0.03)] and M_RETRANSMITS not in udp.samples


def test_esmond_null_time_updated_events_are_not_fetched(server: FakePerfSONAR, now: float) -> None:
    app = EsmondApp("esmond", mount="/a")
    server.mount("/a", app)
    app.add(EsmondTest("throughput", A[1], B[1], A[0], B[0], points={"throughput": [(int(now) - 60, 1e9)]}))
    r = EsmondReader(client(), ArchiveRef(server.url("/a/esmond/perfsonar/archive/"), "esmond", "t"),
                     settings(tests=(THROUGHPUT,)), now)
    (spec,) = r.list_series()
    assert [ref.event_type for ref in spec.refs] == ["throughput"]  # packet-retransmits never had data


def test_esmond_series_older_than_the_window_is_listed_stale_without_fetching(server: FakePerfSONAR,
                                                                               now: float) -> None:
    app = EsmondApp("esmond", mount="/a")
    server.mount("/a", app)
    old = int(now) - 3 * 86400
    md = app.add(EsmondTest("throughput", A[1], B[1], A[0], B[0], points={"throughput": [(old, 1e9)]}))
    # perfSONAR 4.x esmond: pScheduler's tool name, esmond's 32-hex key (its time-updated is trusted).
    assert md["tool-name"] == "pscheduler/iperf3" and len(md["metadata-key"]) == 32
    ref = ArchiveRef(server.url("/a/esmond/perfsonar/archive/"), "esmond", "t")
    assert EsmondReader(client(), ref, settings(tests=(THROUGHPUT,)), now).list_series() == []  # lookback off
    r = EsmondReader(client(), ref, settings(tests=(THROUGHPUT,), lookback=WEEK), now)
    (spec,) = r.list_series()
    assert spec.refs == () and spec.last_seen == old
    before = server.requests_to("/a/esmond/perfsonar/archive/")
    series = r.read(spec)
    assert server.requests_to("/a/esmond/perfsonar/archive/") == before  # nothing to fetch
    assert series.last_seen == old and not series.samples


def test_elmond_series_without_runs_in_the_window_reports_its_scheduling_time(server: FakePerfSONAR,
                                                                               now: float) -> None:
    app = EsmondApp("elmond", mount="/b")
    server.mount("/b", app)
    old = int(now) - 2 * 86400
    app.add(EsmondTest("throughput", A[1], B[1], A[0], B[0], points={"throughput": [(old, 1e9)]}))
    r = EsmondReader(client(), ArchiveRef(server.url("/b/esmond/perfsonar/archive/"), "esmond", "t"),
                     settings(tests=(THROUGHPUT,), lookback=WEEK), now)
    (spec,) = r.list_series()
    series = r.read(spec)
    assert not series.samples and series.last_seen == old


# ------------------------------------------------------------------------------------------------
# OpenSearch


@pytest.fixture
def osapp(server: FakePerfSONAR) -> OpenSearchApp:
    app = OpenSearchApp()
    server.mount("/opensearch", app)
    return app


def os_reader(server: FakePerfSONAR, now: float, **kw: object) -> OpenSearchReader:
    return OpenSearchReader(client(), ArchiveRef(server.url("/opensearch"), "opensearch", "t"), settings(**kw), now)


def test_opensearch_throughput_loss_retransmits_and_every_test_type(server: FakePerfSONAR, osapp: OpenSearchApp,
                                                                    now: float) -> None:
    # TCP with MSS 8948 and 20 s runs: 9e9 bit/s x 20 s / 8 / 8948 = 2,514,528 segments; 2515 retransmits ~ 0.1 %.
    for h in (1, 5):
        osapp.add(os_doc("throughput", A, B, 4, now - 3600 * h, throughput=9.0e9, retransmits=2515, mss=8948,
                         duration=20.0, repeat=14400.0))
    # UDP: flat packets_sent / packets_lost, 5 % lost.
    osapp.add(os_doc("throughput", B, A, 4, now - 3600, throughput=1.0e9, udp=True, loss=0.05, duration=10.0))
    # TCP without a duration: the volume is unknown, so no retransmit rate.
    osapp.add(os_doc("throughput", A6, B6, 6, now - 3600, throughput=3.0e9, retransmits=40))
    # one-way latency from owping (pscheduler_latency), twping and powstream (pscheduler_latencybg)
    osapp.add(os_doc("latency", A, B, 4, now - 300, latency_median=12.5, loss=0.0))
    osapp.add(os_doc("latency", B, A, 4, now - 300, latency_median=12.7, loss=0.01, tool="twping"))
    osapp.add(os_doc("latencybg", A6, B6, 6, now - 60, latency_median=13.0, loss=0.0))
    osapp.add(os_doc("rtt", A, B, 4, now - 120, rtt_mean_s=0.025))
    # traceroute documents are stored too; the spider does not read them (no link figure).
    osapp.add(os_doc("trace", A, B, 4, now - 120, hops=["10.1.0.1", "192.0.2.1", B[1]]))
    # a run whose result fields are null (a tool that did not report them)
    osapp.add(os_doc("throughput", B6, A6, 6, now - 600, throughput=2.0e9, null_fields=("result.throughput",)))
    got = {(s.test, s.src_ip): s for s in os_reader(server, now).read()}
    tcp = got[(THROUGHPUT, A[1])]
    assert [v for _, v in tcp.samples[M_RETRANSMITS]] == pytest.approx([2515 / (9.0e9 * 20 / 8 / 8948)] * 2)
    assert tcp.samples[M_THROUGHPUT][0][1] == 9.0e9 and M_TP_LOSS not in tcp.samples
    udp = got[(THROUGHPUT, B[1])]
    assert udp.samples[M_TP_LOSS] == [(now - 3600, 0.05)]
    assert M_RETRANSMITS not in got[(THROUGHPUT, A6[1])].samples
    assert not got[(THROUGHPUT, B6[1])].samples and got[(THROUGHPUT, B6[1])].successes == 0
    assert got[(LATENCY, B[1])].samples[M_LOSS] == [(now - 300, 0.01)]  # twping, pscheduler_latency
    assert got[(LATENCY, A6[1])].family == 6
    assert got[(RTT, A[1])].samples[M_RTT][0][1] == pytest.approx(25.0)
    assert not any(s.test == "trace" for s in got.values())
    assert all("pscheduler_trace" not in str(body) for body in osapp.bodies)


def test_opensearch_pairs_older_than_the_window_are_reported_stale(server: FakePerfSONAR, osapp: OpenSearchApp,
                                                                    now: float) -> None:
    osapp.add(os_doc("throughput", A, B, 4, now - 3 * 86400, throughput=9e9, repeat=21600.0))
    osapp.add(os_doc("throughput", A, B, 4, now - 4 * 86400, throughput=9e9, repeat=21600.0))
    osapp.add(os_doc("throughput", B, A, 4, now - 3600, throughput=9e9, repeat=21600.0))
    osapp.add(os_doc("throughput", B, A, 4, now - 2 * 86400, throughput=9e9, repeat=21600.0))
    assert {s.src_ip for s in os_reader(server, now, tests=(THROUGHPUT,)).read()} == {B[1]}  # lookback off
    got = os_reader(server, now, tests=(THROUGHPUT,), lookback=WEEK).read()
    stale = [s for s in got if s.last_seen is not None]
    assert [(s.src_ip, s.last_seen, s.interval, s.src_name) for s in stale] == [
        (A[1], now - 3 * 86400, 21600.0, A[0])]
    assert all(not s.samples for s in stale)
    # B -> A has runs in the window: its older runs add nothing (it is reported once, fresh).
    assert [(s.src_ip, s.last_seen) for s in got if s.src_ip == B[1]] == [(B[1], None)]


# ------------------------------------------------------------------------------------------------
# Grading, ads, and what lark/links makes of them


def crawl_config(server: FakePerfSONAR, tmp_path: Path, **extra: dict) -> dict:
    cfg: dict = {"discovery": {"meshes": [server.url("/pub/m")]},
                 "archives": {"endpoints": [{"url": server.url("/opensearch"), "type": "opensearch"}]},
                 "spider": {"state_file": str(tmp_path / "state.json")},
                 "sites": {"rules": [{"site": "ALPHA", "hosts": ["*.alpha.example"], "cidrs": ["10.1.0.0/16"]},
                                     {"site": "BETA", "hosts": ["*.beta.example"], "cidrs": ["10.2.0.0/16"]}],
                           "resolve_dns": False}}
    for key, value in extra.items():
        cfg.setdefault(key, {}).update(value)
    return cfg


@pytest.fixture
def mesh(server: FakePerfSONAR) -> StaticApp:
    pub = StaticApp()
    server.mount("/pub", pub)
    pub.put("/m", psconfig_mesh("M", "throughput", [A[0], B[0]], "PT6H", {}))
    return pub


def test_throughput_loss_degrades_and_feeds_the_breaker(server: FakePerfSONAR, osapp: OpenSearchApp,
                                                        mesh: StaticApp, now: float, tmp_path: Path) -> None:
    for h in (1, 7):
        osapp.add(os_doc("throughput", A, B, 4, now - 3600 * h, throughput=9.0e8, udp=True, loss=0.04))
    sp = Spider(parse_config(crawl_config(server, tmp_path), str(tmp_path / "s.yaml")))
    link = sp.crawl(persist=False).links[LinkKey("ALPHA", "BETA", 4)]
    assert link.metrics[M_TP_LOSS].quality == DEGRADED and link.metrics[M_THROUGHPUT].quality == GOOD
    assert link.quality == DEGRADED
    attrs = link_ad_attributes(link, now, 1800)
    assert attrs["LarkLossFraction"] == pytest.approx(0.04) and attrs["LarkLossTest"] == "throughput"
    # lark/links reads LarkLossFraction: the breaker sees the throughput test's loss as "lossy".
    judged = judge(links_into("BETA", [attrs]), BreakerKnobs(), now)
    assert judged["ALPHA"].broken == "lossy"


def test_stale_pair_is_published_with_its_age_and_left_to_the_unknown_link_policy(
        server: FakePerfSONAR, osapp: OpenSearchApp, mesh: StaticApp, now: float, tmp_path: Path) -> None:
    osapp.add(os_doc("throughput", A, B, 4, now - 3 * 86400, throughput=9e9))
    cfg = crawl_config(server, tmp_path)
    sp = Spider(parse_config(cfg, str(tmp_path / "s.yaml")))
    result = sp.crawl(persist=False)
    link = result.links[LinkKey("ALPHA", "BETA", 4)]
    assert link.quality == STALE and link.metrics[M_THROUGHPUT].n == 0
    assert result.stats.grades[STALE] == 1 and result.stats.rejected == 0
    ad = {a["Name"]: a for a in sp.ads(result)}["ALPHA->BETA/IPv4"]
    assert ad["LarkQuality"] == "stale" and 3 * 86400 <= ad["LarkAgeSeconds"] <= 3 * 86400 + 60
    assert ad["LarkMeasuredAt"] == int(now - 3 * 86400) and "LarkThroughputMbps" not in ad
    assert ad["LarkThroughputExpectedIntervalSeconds"] == 21600  # from the mesh (PT6H)
    # lark/links has no figure to judge: the pair falls under LARK_UNKNOWN_LINK_POLICY.
    assert links_into("BETA", [dict(ad)]) == {}
    # ... unless the admin drops stale links altogether.
    cfg["collector"] = {"publish_stale": False}
    sp = Spider(parse_config(cfg, str(tmp_path / "s.yaml")))
    assert [a["Name"] for a in sp.ads(sp.crawl(persist=False))] == ["lark-spider"]


# ------------------------------------------------------------------------------------------------
# Cadence: mesh and archive naming a host differently


def test_mesh_index_matches_names_and_addresses_both_ways() -> None:
    by_address = MeshGroup(THROUGHPUT, 14400.0, "mesh", ("10.1.0.10", "2001:db8:2::20"))
    by_name = MeshGroup(LATENCY, 60.0, "mesh", ("ps-bw.alpha.example", "ps-bw.beta.example"))
    index = MeshIndex([by_address, by_name], {"ps-bw.alpha.example": ["10.1.0.10", "2001:db8:1::10"],
                                              "ps-bw.beta.example": ["10.2.0.20", "2001:db8:2::20"]})
    # mesh by address, archive by name and address (IPv6 in a non-canonical spelling)
    assert index.interval(THROUGHPUT, "ps-bw.alpha.example", "10.1.0.10", "ps-bw.beta.example",
                          "2001:DB8:2:0::20") == 14400.0
    # mesh by name, archive by address only (IPv4 and IPv6)
    assert index.interval(LATENCY, None, "10.2.0.20", None, "10.1.0.10") == 60.0
    assert index.interval(LATENCY, None, "2001:db8:1::10", None, "2001:db8:2::20") == 60.0
    assert index.interval(LATENCY, "ps-bw.alpha.example", None, None, "192.0.2.1") is None
    assert index.missing() == [(THROUGHPUT, "2001:db8:2::20", "10.1.0.10")]


@pytest.mark.parametrize(("mesh_hosts", "family"), [
    (["10.1.0.10", "10.2.0.20"], 4),                       # mesh by IPv4 address, archive by name
    (["2001:DB8:1::10", "2001:db8:2:0:0:0:0:20"], 6),      # mesh by IPv6 address (any spelling)
    (["ps-bw.alpha.example", "ps-bw.beta.example"], 6),    # mesh by name, archive by IPv6 address only
])
def test_mesh_cadence_reaches_the_ad_whichever_way_hosts_are_named(
        server: FakePerfSONAR, now: float, tmp_path: Path, mesh_hosts: list[str], family: int) -> None:
    pub = StaticApp()
    server.mount("/pub", pub)
    pub.put("/m", psconfig_mesh("M", "throughput", mesh_hosts, "PT2H", {}))
    app = EsmondApp("esmond", mount="/a")
    server.mount("/a", app)
    src, dst = (A, B) if family == 4 else (A6, B6)
    names = (src[0], dst[0]) if mesh_hosts[0][0].isdigit() else (None, None)  # esmond input-source/destination
    app.add(EsmondTest("throughput", src[1], dst[1], names[0], names[1],
                       points={"throughput": [(int(now) - 600, 9e9)]}))
    cfg = crawl_config(server, tmp_path, archives={"endpoints": [
        {"url": server.url("/a/esmond/perfsonar/archive/"), "type": "esmond"}]})
    cfg["sites"]["rules"][0]["cidrs"].append("2001:db8:1::/48")
    cfg["sites"]["rules"][1]["cidrs"].append("2001:db8:2::/48")
    cfg["sites"]["hosts"] = {A[0]: [A[1], A6[1]], B[0]: [B[1], B6[1]]}
    result = Spider(parse_config(cfg, str(tmp_path / "s.yaml"))).crawl(persist=False)
    metric = result.links[LinkKey("ALPHA", "BETA", family)].metrics[M_THROUGHPUT]
    assert metric.expected_interval == 7200.0  # not the 6 h default
    assert len(result.missing) == 1  # the pair was matched to the mesh: only the reverse direction lacks data


def test_retransmit_rate_needs_the_volume() -> None:
    assert retransmit_rate(10, 1e9, None) is None and retransmit_rate(None, 1e9, 10) is None
    assert retransmit_rate(10, 0.0, 10) is None  # nothing sent
    assert retransmit_rate(0, 1e9, 10) == 0.0


def test_retransmits_are_graded_only_when_a_limit_is_set() -> None:
    from perfsonar.model import HostSeries
    from perfsonar.quality import QualityPolicy, summarise_links

    now = 1_800_000_000.0
    s = HostSeries("http://a/", THROUGHPUT, 4, "a.example", None, "b.example", None, interval=21600.0,
                   samples={M_THROUGHPUT: [(now - 60, 9e9)], M_RETRANSMITS: [(now - 60, 0.004)]}, successes=1)
    key = LinkKey("A", "B", 4)

    def site(name: str | None, _ip: str | None) -> str | None:
        return (name or "?")[0].upper()

    relaxed = summarise_links([s], site, now, QualityPolicy())[key]
    assert relaxed.quality == GOOD and relaxed.metrics[M_RETRANSMITS].mean == 0.004
    strict = summarise_links([s], site, now, QualityPolicy(max_retransmits=0.001))[key]
    assert strict.quality == DEGRADED and "TCP retransmits 0.400 % of segments > 0.100 %" in strict.reason


@pytest.mark.parametrize(("lookback", "ok"), [("0", True), ("2d", True), ("1h", False)])
def test_lookback_is_off_or_at_least_the_longest_window(tmp_path: Path, lookback: str, ok: bool) -> None:
    from perfsonar.errors import ConfigError

    data = {"discovery": {"meshes": ["http://x/"]}, "measurements": {"lookback": lookback}}
    if ok:
        assert parse_config(data, str(tmp_path / "s.yaml")).read.lookback in (0.0, 2 * 86400.0)
    else:
        with pytest.raises(ConfigError, match="measurements.lookback"):
            parse_config(data, str(tmp_path / "s.yaml"))


# ------------------------------------------------------------------------------------------------
# A failed or partial look-back, secondary tests without runs, loss figures carried over


def test_a_failed_stale_pair_search_keeps_the_archives_fresh_pairs(
        server: FakePerfSONAR, osapp: OpenSearchApp, mesh: StaticApp, now: float, tmp_path: Path) -> None:
    for h in (1, 7):
        osapp.add(os_doc("throughput", A, B, 4, now - 3600 * h, throughput=9e9))
    osapp.add(os_doc("throughput", B, A, 4, now - 3 * 86400, throughput=9e9))  # only the look-back finds it
    sp = Spider(parse_config(crawl_config(server, tmp_path), str(tmp_path / "s.yaml")))
    real = sp.client.post_json

    def post_json(url: str, body: dict, *args: object, **kw: object) -> object:
        if "lt" in body["query"]["bool"]["filter"][0]["range"]["pscheduler.start_time"]:  # the look-back query
            from perfsonar.errors import ResponseError
            raise ResponseError(url, "timed out (a 7-day aggregation on a busy archive)")
        return real(url, body, *args, **kw)

    sp.client.post_json = post_json  # type: ignore[method-assign]
    result = sp.crawl(persist=False)
    assert result.failed_archives == {} and result.stats.archives_failed == 0
    link = result.links[LinkKey("ALPHA", "BETA", 4)]
    assert link.quality == GOOD and link.metrics[M_THROUGHPUT].n == 2
    assert LinkKey("BETA", "ALPHA", 4) not in result.links  # only the stale pair is lost


def test_stale_pairs_carry_their_own_host_names(server: FakePerfSONAR, osapp: OpenSearchApp, now: float) -> None:
    # No pair of these hosts has a run in the window, so no fresh pair can lend them its names.
    gamma = ("ps-bw.gamma.example", "10.3.0.30")
    osapp.add(os_doc("throughput", gamma, B, 4, now - 3 * 86400, throughput=9e9))
    (stale,) = os_reader(server, now, tests=(THROUGHPUT,), lookback=WEEK).read()
    assert (stale.src_name, stale.src_ip, stale.dst_name, stale.dst_ip) == (gamma[0], gamma[1], B[0], B[1])
    assert stale.last_seen == now - 3 * 86400


def test_a_listed_latency_test_without_runs_does_not_make_fresh_throughput_stale() -> None:
    from perfsonar.model import HostSeries
    from perfsonar.quality import QualityPolicy, summarise_links

    now = 1_800_000_000.0
    tp = HostSeries("http://a/", THROUGHPUT, 4, "a.example", None, "b.example", None, interval=21600.0,
                    samples={M_THROUGHPUT: [(now - 3600, 9e9), (now - 7200, 9.1e9)]}, successes=2)
    # The archive still lists a latency test whose newest run is 2 days old (none in the 30 min window).
    lat = HostSeries("http://a/", LATENCY, 4, "a.example", None, "b.example", None, last_seen=now - 2 * 86400)

    def site(name: str | None, _ip: str | None) -> str | None:
        return (name or "?")[0].upper()

    link = summarise_links([tp, lat], site, now, QualityPolicy())[LinkKey("A", "B", 4)]
    assert link.metrics[M_LOSS].quality == STALE  # the latency test's own grade still says so
    assert link.quality == GOOD and "throughput" in link.reason
    attrs = link_ad_attributes(link, now, 1800)
    assert attrs["LarkQuality"] == "good" and attrs["LarkLossQuality"] == "stale"
    judged = judge(links_into("B", [attrs]), BreakerKnobs(), now)
    assert judged["A"].broken is None  # lark/links lets large inputs cross
    # A stale latency test alone (no fresh figure at all) still makes the link stale.
    alone = summarise_links([lat], site, now, QualityPolicy())[LinkKey("A", "B", 4)]
    assert alone.quality == STALE


def test_a_fresh_throughput_loss_wins_over_a_carried_one_way_loss() -> None:
    from dataclasses import replace

    from perfsonar.model import LinkSummary
    from perfsonar.quality import QualityPolicy, link_grade, summarise_metric

    now = 1_800_000_000.0
    policy = QualityPolicy()
    owamp = summarise_metric(M_LOSS, [(now - 2 * 86400, 0.10)] * 3, 3, [], 60.0, now, policy)
    carried = replace(owamp, quality=STALE, reason="not refreshed", carried=True)  # from the state file
    tp_loss = summarise_metric(M_TP_LOSS, [(now - 600, 0.0), (now - 4000, 0.0)], 2, [], 21600.0, now, policy)
    tp = summarise_metric(M_THROUGHPUT, [(now - 600, 9e9), (now - 4000, 9e9)], 2, [], 21600.0, now, policy)
    metrics = {M_LOSS: carried, M_TP_LOSS: tp_loss, M_THROUGHPUT: tp}
    quality, reason = link_grade(metrics)
    attrs = link_ad_attributes(LinkSummary(LinkKey("A", "B", 4), metrics, quality, reason), now, 1800)
    assert attrs["LarkLossFraction"] == 0.0 and attrs["LarkLossTest"] == "throughput"
    # With a fresh one-way loss, that one is used (the latency test measures loss best).
    fresh = {**metrics, M_LOSS: owamp}
    attrs = link_ad_attributes(LinkSummary(LinkKey("A", "B", 4), fresh, *link_grade(fresh)), now, 1800)
    assert attrs["LarkLossFraction"] == pytest.approx(0.10) and attrs["LarkLossTest"] == "latency"


def test_mesh_pairs_of_test_kinds_not_read_are_not_missing(
        server: FakePerfSONAR, osapp: OpenSearchApp, now: float, tmp_path: Path) -> None:
    pub = StaticApp()
    server.mount("/pub", pub)
    pub.put("/bw", psconfig_mesh("BW", "throughput", [A[0], B[0]], "PT6H", {}))
    pub.put("/lat", psconfig_mesh("LAT", "latencybg", [A[0], B[0]], None, {}))
    for src, dst in ((A, B), (B, A)):
        osapp.add(os_doc("throughput", src, dst, 4, now - 3600, throughput=9e9))
    cfg = crawl_config(server, tmp_path, measurements={"tests": ["throughput"]})
    cfg["discovery"]["meshes"] = [server.url("/pub/bw"), server.url("/pub/lat")]
    result = Spider(parse_config(cfg, str(tmp_path / "s.yaml"))).crawl(persist=False)
    assert result.missing == [] and result.stats.mesh_missing == 0
    cfg["measurements"] = {"tests": ["throughput", "latency"]}  # read latency: its pairs are missing
    result = Spider(parse_config(cfg, str(tmp_path / "s.yaml"))).crawl(persist=False)
    assert sorted(result.missing) == [(LATENCY, A[0], B[0]), (LATENCY, B[0], A[0])]
