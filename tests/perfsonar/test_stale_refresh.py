"""The look-back for stale pairs is made at most every ``measurements.stale_refresh``.

Between refreshes a daemon's crawl sends no look-back query (no OpenSearch stale-pair search, no
esmond metadata search over ``lookback``) and still publishes the stale pairs of the last listing,
their age growing with the clock. A failed refresh keeps the last listing; a pair that runs again is
fresh at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from perfsonar.config import DEFAULT_STALE_REFRESH, parse_config
from perfsonar.crawl import Spider
from perfsonar.lookback import due_at
from perfsonar.model import GOOD, M_THROUGHPUT, STALE, LinkKey
from tests.perfsonar.fakeps import EsmondApp, EsmondTest, FakePerfSONAR, OpenSearchApp, StaticApp, os_doc, psconfig_mesh

A = ("ps-bw.alpha.example", "10.1.0.10")
B = ("ps-bw.beta.example", "10.2.0.20")
WEEK = 7 * 86400


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def mesh(server: FakePerfSONAR) -> StaticApp:
    pub = StaticApp()
    server.mount("/pub", pub)
    pub.put("/m", psconfig_mesh("M", "throughput", [A[0], B[0]], "PT6H", {}))
    return pub


def config(server: FakePerfSONAR, tmp_path: Path, endpoint: dict[str, str], **measurements: Any) -> Any:
    return parse_config({
        "discovery": {"meshes": [server.url("/pub/m")]},
        "archives": {"endpoints": [endpoint]},
        "measurements": {"tests": ["throughput"], **measurements},
        "spider": {"state_file": str(tmp_path / "state.json")},
        "sites": {"rules": [{"site": "ALPHA", "hosts": ["*.alpha.example"], "cidrs": ["10.1.0.0/16"]},
                            {"site": "BETA", "hosts": ["*.beta.example"], "cidrs": ["10.2.0.0/16"]}],
                  "resolve_dns": False},
    }, str(tmp_path / "s.yaml"))


def lookback_queries(app: OpenSearchApp) -> int:
    """OpenSearch searches over [now - lookback, now - window): the stale-pair search (one page here)."""
    return sum(1 for body in app.bodies
               if "lt" in body["query"]["bool"]["filter"][0]["range"]["pscheduler.start_time"])


@pytest.fixture
def osapp(server: FakePerfSONAR, now: float) -> OpenSearchApp:
    """An OpenSearch archive with a fresh pair A -> B."""
    app = OpenSearchApp()
    server.mount("/opensearch", app)
    for h in (1, 7):
        app.add(os_doc("throughput", A, B, 4, now - 3600 * h, throughput=9e9))
    return app


def os_spider(server: FakePerfSONAR, tmp_path: Path, clock: Clock, **measurements: Any) -> Spider:
    cfg = config(server, tmp_path, {"url": server.url("/opensearch"), "type": "opensearch"}, **measurements)
    return Spider(cfg, clock=clock)


def test_stale_refresh_defaults_to_an_hour_and_accepts_zero(tmp_path: Path, server: FakePerfSONAR) -> None:
    ep = {"url": server.url("/opensearch"), "type": "opensearch"}
    assert config(server, tmp_path, ep).read.stale_refresh == DEFAULT_STALE_REFRESH == 3600.0
    assert config(server, tmp_path, ep, stale_refresh="10m").read.stale_refresh == 600.0
    assert config(server, tmp_path, ep, stale_refresh=0).read.stale_refresh == 0.0


def test_second_crawl_within_stale_refresh_sends_no_lookback_and_keeps_the_stale_pair(
        server: FakePerfSONAR, osapp: OpenSearchApp, mesh: StaticApp, now: float, tmp_path: Path) -> None:
    osapp.add(os_doc("throughput", B, A, 4, now - 3 * 86400, throughput=9e9))  # only the look-back finds it
    clock = Clock(now)
    sp = os_spider(server, tmp_path, clock)
    first = sp.crawl()
    assert lookback_queries(osapp) >= 1
    stale = first.links[LinkKey("BETA", "ALPHA", 4)]
    assert stale.quality == STALE and stale.metrics[M_THROUGHPUT].latest_ts == now - 3 * 86400
    ad = {a["Name"]: a for a in sp.ads(first)}["BETA->ALPHA/IPv4"]
    assert 3 * 86400 <= ad["LarkAgeSeconds"] <= 3 * 86400 + 5

    searches, lookbacks = len(osapp.bodies), lookback_queries(osapp)
    requests = server.requests_to("/opensearch")
    clock.t = now + 600  # the next crawl of a daemon, within measurements.stale_refresh (1 h)
    second = sp.crawl()
    assert lookback_queries(osapp) == lookbacks  # no look-back query at all ...
    assert server.requests_to("/opensearch") - requests == len(osapp.bodies) - searches == searches - lookbacks
    stale = second.links[LinkKey("BETA", "ALPHA", 4)]  # ... and the stale pair is still published
    assert stale.quality == STALE and not stale.metrics[M_THROUGHPUT].carried
    assert stale.metrics[M_THROUGHPUT].latest_ts == now - 3 * 86400
    ad = {a["Name"]: a for a in sp.ads(second)}["BETA->ALPHA/IPv4"]
    assert 3 * 86400 + 600 <= ad["LarkAgeSeconds"] <= 3 * 86400 + 605  # its age grows with the clock
    assert ad["LarkQuality"] == "stale" and "3.0 d old" in ad["LarkQualityReason"]
    assert second.links[LinkKey("ALPHA", "BETA", 4)].quality == GOOD

    clock.t = now + 5401  # older than stale_refresh (a first listing: 1 to 1.5 x, spread by archive)
    sp.crawl()
    assert lookback_queries(osapp) == lookbacks + 1
    clock.t = now + 5401 + 3000  # later listings last stale_refresh exactly
    sp.crawl()
    assert lookback_queries(osapp) == lookbacks + 1
    clock.t = now + 5401 + 3600
    sp.crawl()
    assert lookback_queries(osapp) == lookbacks + 2


def test_first_listings_are_spread_so_refreshes_fall_into_different_crawls() -> None:
    firsts = [due_at(f"https://ps{i}.example/opensearch", "throughput", 1000.0, 3600.0, True) for i in range(300)]
    assert all(1000.0 + 3600.0 <= t < 1000.0 + 1.5 * 3600.0 for t in firsts)
    assert len({int((t - 4600.0) // 600) for t in firsts}) == 3  # over the three 10-min crawls of that half hour
    assert due_at("https://ps1.example/opensearch", "throughput", 1000.0, 3600.0, False) == 4600.0
    assert due_at("https://ps1.example/opensearch", "throughput", 1000.0, 0.0, True) == 1000.0  # every crawl


def test_zero_stale_refresh_and_one_off_runs_look_back_every_time(
        server: FakePerfSONAR, osapp: OpenSearchApp, mesh: StaticApp, now: float, tmp_path: Path) -> None:
    osapp.add(os_doc("throughput", B, A, 4, now - 3 * 86400, throughput=9e9))
    sp = os_spider(server, tmp_path, Clock(now), stale_refresh=0)
    for crawl in (1, 2):
        assert sp.crawl(persist=False).links[LinkKey("BETA", "ALPHA", 4)].quality == STALE
        assert lookback_queries(osapp) == crawl
    for _run in (1, 2):  # each --once / --dry-run is a new Spider: one look-back each
        before = lookback_queries(osapp)
        os_spider(server, tmp_path, Clock(now)).crawl(persist=False)
        assert lookback_queries(osapp) == before + 1


def test_a_cached_stale_pair_that_runs_again_is_fresh_at_once(
        server: FakePerfSONAR, osapp: OpenSearchApp, mesh: StaticApp, now: float, tmp_path: Path) -> None:
    osapp.add(os_doc("throughput", B, A, 4, now - 3 * 86400, throughput=9e9))
    clock = Clock(now)
    sp = os_spider(server, tmp_path, clock)
    assert sp.crawl().links[LinkKey("BETA", "ALPHA", 4)].quality == STALE
    osapp.add(os_doc("throughput", B, A, 4, now + 60, throughput=8e9))
    lookbacks = lookback_queries(osapp)
    clock.t = now + 120
    link = sp.crawl().links[LinkKey("BETA", "ALPHA", 4)]
    assert lookback_queries(osapp) == lookbacks
    assert link.quality == GOOD and link.metrics[M_THROUGHPUT].n == 1


def test_a_failed_refresh_keeps_the_last_listing_and_says_how_old_it_is(
        server: FakePerfSONAR, osapp: OpenSearchApp, mesh: StaticApp, now: float, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    osapp.add(os_doc("throughput", B, A, 4, now - 3 * 86400, throughput=9e9))
    clock = Clock(now)
    sp = os_spider(server, tmp_path, clock)
    sp.crawl()
    real = sp.client.post_json
    failing = {"on": True}

    def post_json(url: str, body: dict, *args: object, **kw: object) -> object:
        if failing["on"] and "lt" in body["query"]["bool"]["filter"][0]["range"]["pscheduler.start_time"]:
            from perfsonar.errors import ResponseError
            raise ResponseError(url, "timed out")
        return real(url, body, *args, **kw)

    sp.client.post_json = post_json  # type: ignore[method-assign]
    clock.t = now + 2 * 3600  # a refresh is due, and fails
    with caplog.at_level(logging.WARNING, logger="lark.spider"):
        result = sp.crawl()
    assert "stale-pair search for throughput failed, using the listing from 2.0 h ago" in caplog.text
    link = result.links[LinkKey("BETA", "ALPHA", 4)]
    assert link.quality == STALE and not link.metrics[M_THROUGHPUT].carried
    assert result.stats.archives_failed == 0
    failing["on"] = False  # the failed refresh is tried again at the very next crawl
    lookbacks = lookback_queries(osapp)
    clock.t = now + 2 * 3600 + 600
    sp.crawl()
    assert lookback_queries(osapp) == lookbacks + 1


@pytest.mark.parametrize("dialect", ["esmond", "elmond"])
def test_esmond_lists_the_lookback_once_per_stale_refresh(
        server: FakePerfSONAR, mesh: StaticApp, now: float, tmp_path: Path, dialect: str) -> None:
    app = EsmondApp(dialect, mount="/a")
    server.mount("/a", app)
    t = int(now)
    app.add(EsmondTest("throughput", A[1], B[1], A[0], B[0], points={"throughput": [(t - 3600, 9e9)]}))
    app.add(EsmondTest("throughput", B[1], A[1], B[0], A[0], points={"throughput": [(t - 3 * 86400, 9e9)]}))
    clock = Clock(now)
    sp = Spider(config(server, tmp_path, {"url": server.url("/a/esmond/perfsonar/archive/"), "type": "esmond"}),
                clock=clock)

    def listings(time_range: int) -> int:
        return sum(1 for _, p in server.log if "event-type=throughput" in p and f"time-range={time_range}" in p)

    first = sp.crawl()
    assert listings(WEEK) == 1 and listings(86400) == 0
    clock.t = now + 600
    second = sp.crawl()
    assert listings(WEEK) == 1 and listings(86400) == 1  # the window only, between refreshes
    for result, age in ((first, 0), (second, 600)):
        stale = result.links[LinkKey("BETA", "ALPHA", 4)]
        assert stale.quality == STALE and not stale.metrics[M_THROUGHPUT].carried
        ad = {a["Name"]: a for a in sp.ads(result)}["BETA->ALPHA/IPv4"]
        assert 3 * 86400 + age <= ad["LarkAgeSeconds"] <= 3 * 86400 + age + 5
        assert result.links[LinkKey("ALPHA", "BETA", 4)].quality == GOOD
    clock.t = now + 5401
    sp.crawl()
    assert listings(WEEK) == 2
