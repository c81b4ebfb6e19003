"""End to end over loopback HTTP: meshes + esmond + elmond + OpenSearch -> graded links -> ClassAds.

Also the robustness promises: an archive outage keeps the last good values (marked stale, from the
state file even across a restart), and slow, huge, truncated or erroring archives are skipped
without stopping the crawl or leaking garbage into the ads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from perfsonar.config import SpiderConfig, parse_config
from perfsonar.crawl import Spider
from perfsonar.main import main
from perfsonar.model import DEGRADED, GOOD, M_LOSS, M_OWDELAY, M_RTT, M_THROUGHPUT, STALE, LinkKey
from tests.perfsonar.fakeps import (
    EsmondApp,
    EsmondTest,
    FakePerfSONAR,
    Fault,
    OpenSearchApp,
    StaticApp,
    esmond_archiver,
    http_archive,
    os_doc,
    owd_histogram,
    psconfig_mesh,
    pub_config_list,
)
from tests.support import wait_until

BW = {"ALPHA": "ps-bw.alpha.example", "BETA": "ps-bw.beta.example", "GAMMA": "ps-bw.gamma.example"}
LAT = {"ALPHA": "ps-lat.alpha.example", "BETA": "ps-lat.beta.example"}
IP = {"ps-bw.alpha.example": ("10.1.0.10", "2001:db8:1::10"), "ps-bw.beta.example": ("10.2.0.20", "2001:db8:2::20"),
      "ps-bw.gamma.example": ("10.3.0.30", None), "ps-lat.alpha.example": ("10.1.0.11", None),
      "ps-lat.beta.example": ("10.2.0.21", None)}


def v4(name: str) -> str:
    return IP[name][0]


class World:
    """The loopback perfSONAR deployment every crawl test reads."""

    def __init__(self, server: FakePerfSONAR, now: float) -> None:
        self.server, self.now = server, now
        t = int(now)
        self.pub = StaticApp()
        server.mount("/pub", self.pub)
        # Archive A: legacy esmond holding ALPHA's throughput tests.
        self.esmond = EsmondApp("esmond", mount="/a")
        server.mount("/a", self.esmond)
        self.esmond.add(EsmondTest("throughput", v4(BW["ALPHA"]), v4(BW["BETA"]), BW["ALPHA"], BW["BETA"], points={
            "throughput": [(t - 3600, 9.4e9), (t - 25200, 9.0e9), (t - 46800, 8.6e9)],
            "failures": [(t - 64800, {"error": "iperf3 returned an error: unable to connect"})]}))
        # A stale pair: hourly test whose newest sample is 5 h old.
        self.esmond.add(EsmondTest("throughput", v4(BW["ALPHA"]), v4(BW["GAMMA"]), BW["ALPHA"], BW["GAMMA"],
                                   points={"throughput": [(t - 5 * 3600, 2.0e9), (t - 6 * 3600, 2.2e9)]}))
        # IPv6-only results between the same hosts.
        self.esmond.add(EsmondTest("throughput", IP[BW["ALPHA"]][1], IP[BW["BETA"]][1], BW["ALPHA"], BW["BETA"],
                                   points={"throughput": [(t - 7200, 3.1e9)]}))
        # A host nobody can map.
        self.esmond.add(EsmondTest("throughput", v4(BW["ALPHA"]), "192.0.2.99", BW["ALPHA"], "ps.stranger.example",
                                   points={"throughput": [(t - 3600, 1e9)]}))
        # Wrong units: loss as a percentage, throughput in... something else. Must not reach the ads.
        self.esmond.add(EsmondTest("throughput", v4(BW["GAMMA"]), v4(BW["BETA"]), BW["GAMMA"], BW["BETA"],
                                   points={"throughput": [(t - 3600, -42), (t - 7200, 7.5e18)]}))
        # Archive B: perfSONAR 5 elmond with the latency tests (BETA -> ALPHA loses 5 % of packets).
        self.elmond = EsmondApp("elmond", mount="/b")
        server.mount("/b", self.elmond)
        hist = owd_histogram(21.5, 0.0001)
        self.elmond.add(EsmondTest("latency", v4(LAT["BETA"]), v4(LAT["ALPHA"]), LAT["BETA"], LAT["ALPHA"],
                                   bucket_width=0.0001, points={
                                       "histogram-owdelay": [(t - 60 * k, hist) for k in range(1, 20)],
                                       "packet-loss-rate": [(t - 60 * k, 0.05) for k in range(1, 20)]}))
        # Archive C: perfSONAR 5 OpenSearch with BETA's throughput and RTT tests.
        self.opensearch = OpenSearchApp()
        server.mount("/c/opensearch", self.opensearch)
        beta, alpha = (BW["BETA"], v4(BW["BETA"])), (BW["ALPHA"], v4(BW["ALPHA"]))
        for h, bps in ((2, 5.5e9), (8, 6.5e9)):
            self.opensearch.add(os_doc("throughput", beta, alpha, 4, now - 3600 * h, throughput=bps,
                                       repeat=21600.0, tz_hours=2))
        self.opensearch.add(os_doc("rtt", beta, alpha, 4, now - 120, rtt_mean_s=0.0215, loss=0.0))
        # Meshes: throughput (6-hourly) and latency, published in a pub/config list.
        archives = {"a": esmond_archiver(server.url("/a/esmond/perfsonar/archive/")),
                    "c": http_archive(server.url("/c/logstash"), None)}
        self.pub.put("/config/bw", psconfig_mesh("BW", "throughput", list(BW.values()), "PT6H", archives))
        gamma = psconfig_mesh("BW-GAMMA", "throughput", [BW["ALPHA"], BW["GAMMA"]], "PT1H", archives)
        self.pub.put("/config/gamma", gamma)
        self.pub.put("/config/lat", psconfig_mesh("LAT", "latencybg", list(LAT.values()), None, {
            "b": http_archive(server.url("/b/logstash"), server.url("/b/esmond/perfsonar/archive/"))}))
        self.pub.put("/config", pub_config_list([server.url(f"/pub/config/{n}") for n in ("bw", "gamma", "lat")]))

    def config(self, tmp_path: Path, **extra: object) -> dict:
        topo = tmp_path / "topology" / "Facility" / "GAMMA-SITE"
        topo.mkdir(parents=True, exist_ok=True)
        # GAMMA is mapped by the OSG Topology registry, not by a hand-written rule.
        (topo / "GAMMA.yaml").write_text(yaml.safe_dump({"Resources": {"GAMMA BW": {
            "Active": True, "FQDN": BW["GAMMA"], "Services": {"net.perfSONAR.Bandwidth": {
                "Details": {"endpoint": BW["GAMMA"]}}}}}}))
        cfg: dict = {
            "spider": {"state_file": str(tmp_path / "state.json"), "concurrency": 4, "interval": 600},
            "http": {"timeout": 1.0, "retries": 1, "backoff": 0.0, "max_response_bytes": 2_000_000},
            "discovery": {"publishers": [self.server.url("/pub/config")], "derive_opensearch": True},
            "sites": {
                "rules": [{"site": "ALPHA", "cidrs": ["10.1.0.0/16", "2001:db8:1::/48"]},
                          {"site": "BETA", "hosts": ["*.beta.example"]}],
                "registries": [{"type": "osg-topology", "path": str(tmp_path / "topology")}],
                "hosts": {name: [a for a in ips if a] for name, ips in IP.items()},
                "resolve_dns": False,
            },
            "collector": {"address": "127.0.0.1:9618", "ad_lifetime": 1800},
        }
        for key, value in extra.items():
            cfg.setdefault(key, {}).update(value)  # type: ignore[arg-type]
        return cfg


def spider(cfg: dict, tmp_path: Path) -> Spider:
    parsed: SpiderConfig = parse_config(cfg, str(tmp_path / "spider.yaml"))
    return Spider(parsed)


@pytest.fixture
def world(server: FakePerfSONAR, now: float) -> World:
    return World(server, now)


def test_full_crawl_figures_grades_and_ads(world: World, tmp_path: Path) -> None:
    sp = spider(world.config(tmp_path), tmp_path)
    result = sp.crawl()
    links = result.links

    ab = links[LinkKey("ALPHA", "BETA", 4)].metrics[M_THROUGHPUT]
    assert (ab.n, ab.median, ab.latest) == (3, 9.0e9, 9.4e9)
    assert ab.failures == 1 and ab.expected_interval == 21600.0 and ab.quality == GOOD

    ab6 = links[LinkKey("ALPHA", "BETA", 6)].metrics[M_THROUGHPUT]
    assert ab6.median == 3.1e9 and ab6.quality == GOOD

    ag = links[LinkKey("ALPHA", "GAMMA", 4)]
    assert ag.quality == STALE and ag.metrics[M_THROUGHPUT].expected_interval == 3600.0
    assert "every 60 min" in ag.reason

    ba = links[LinkKey("BETA", "ALPHA", 4)]
    assert ba.metrics[M_LOSS].mean == pytest.approx(0.05) and ba.metrics[M_LOSS].quality == DEGRADED
    assert ba.metrics[M_OWDELAY].median == pytest.approx(21.5)  # 0.0001 s buckets rescaled to ms
    assert ba.metrics[M_OWDELAY].expected_interval == 60.0
    assert ba.metrics[M_THROUGHPUT].median == 6.0e9  # from OpenSearch, bit/s
    assert ba.metrics[M_RTT].median == pytest.approx(21.5)  # OpenSearch seconds -> ms
    assert ba.quality == DEGRADED and "loss" in ba.reason

    assert LinkKey("GAMMA", "BETA", 4) not in links  # only garbage values: nothing published
    assert any("ps.stranger.example" in u for u in result.unmapped)
    assert result.stats.rejected >= 2 and result.stats.archives == 3 and result.stats.archives_failed == 0

    ads = {ad["Name"]: ad for ad in sp.ads(result)}
    ad = ads["ALPHA->BETA/IPv4"]
    assert ad["MyType"] == "LarkNetworkLink" and ad["LarkThroughputMbps"] == 9000.0
    assert ad["LarkQuality"] == GOOD and ad["ClassAdLifetime"] == 1800
    assert ads["BETA->ALPHA/IPv4"]["LarkLossFraction"] == pytest.approx(0.05)
    assert ads["BETA->ALPHA/IPv4"]["LarkRttMs"] == pytest.approx(21.5)
    assert ads["ALPHA->BETA/IPv6"]["LarkIPFamily"] == 6
    assert ads["lark-spider"]["MyType"] == "LarkSpider"
    lines = (tmp_path / "state.json").read_text().splitlines()
    assert json.loads(lines[0])["links"] == len(links) == len(lines) - 1


def test_archive_outage_keeps_last_values_stale_across_restart(world: World, tmp_path: Path) -> None:
    cfg = world.config(tmp_path)
    first = spider(cfg, tmp_path).crawl()
    assert first.links[LinkKey("ALPHA", "BETA", 4)].quality == GOOD

    world.server.fault("/a/", Fault("status", status=500))  # archive A down
    sp = spider(cfg, tmp_path)  # a restarted spider: only the state file remembers
    second = sp.crawl()
    link = second.links[LinkKey("ALPHA", "BETA", 4)]
    m = link.metrics[M_THROUGHPUT]
    assert m.carried and m.quality == STALE and m.median == 9.0e9
    assert "archive" in m.reason and "HTTP 500" in m.reason and "old" in m.reason
    assert second.stats.archives_failed == 1 and second.stats.carried >= 1
    # Other archives were unaffected.
    assert second.links[LinkKey("BETA", "ALPHA", 4)].metrics[M_THROUGHPUT].quality == GOOD
    ad = {a["Name"]: a for a in sp.ads(second)}["ALPHA->BETA/IPv4"]
    assert ad["LarkQuality"] == STALE and ad["LarkThroughputMbps"] == 9000.0 and ad["LarkAgeSeconds"] >= 3600

    world.server.clear_faults()
    third = sp.crawl()
    assert third.links[LinkKey("ALPHA", "BETA", 4)].metrics[M_THROUGHPUT].quality == GOOD


@pytest.mark.parametrize("fault", [
    Fault("sleep", seconds=2.0),                  # slower than the 1 s client timeout
    Fault("oversize", size=5_000_000),            # larger than max_response_bytes
    Fault("oversize", size=5_000_000, chunked=True),
    Fault("truncate"),
    Fault("html"),
    Fault("status", status=502),
])
def test_bad_archives_are_skipped_and_others_still_publish(world: World, tmp_path: Path, fault: Fault) -> None:
    world.server.fault("/b/", fault)
    world.server.fault("/c/", fault)
    sp = spider(world.config(tmp_path), tmp_path)
    result = sp.crawl()
    assert result.stats.archives_failed == 2
    assert any("/b/" in e for e in result.errors) and any("/c/" in e for e in result.errors)
    assert result.links[LinkKey("ALPHA", "BETA", 4)].quality == GOOD  # archive A still read
    assert LinkKey("BETA", "ALPHA", 4) not in result.links  # nothing known, nothing invented
    for ad in sp.ads(result):
        for key in ad.keys():
            value = ad[key]
            assert not (isinstance(value, float) and (value != value or value < 0))


def test_partial_series_failures_are_reported(world: World, tmp_path: Path) -> None:
    # Metadata lists fine but one series' data endpoint errors.
    md = world.esmond.tests[1][0]
    base = next(e["base-uri"] for e in md["event-types"] if e["event-type"] == "throughput")
    world.server.fault(base, Fault("status", status=500))
    result = spider(world.config(tmp_path), tmp_path).crawl()
    assert result.stats.series_failed == 1 and result.stats.archives_partial == 1
    assert LinkKey("ALPHA", "GAMMA", 4) not in result.links
    assert result.links[LinkKey("ALPHA", "BETA", 4)].quality == GOOD


def test_esmond_fallback_when_opensearch_fails(world: World, tmp_path: Path) -> None:
    # Archive B advertises both an OpenSearch endpoint (derived from its Logstash URL) and elmond;
    # OpenSearch is preferred but absent there, so the crawl falls back to elmond.
    result = spider(world.config(tmp_path), tmp_path).crawl()
    assert result.links[LinkKey("BETA", "ALPHA", 4)].metrics[M_LOSS].n == 19
    assert any("used a fallback" in e for e in result.errors)
    assert result.stats.archives_failed == 0


def test_restrict_to_mesh_pairs(world: World, tmp_path: Path) -> None:
    # A BETA host that no mesh lists (by name or by address).
    world.esmond.add(EsmondTest("throughput", "10.2.0.99", v4(BW["GAMMA"]), "ps-other.beta.example", BW["GAMMA"],
                                points={"throughput": [(int(world.now) - 60, 1e9)]}))
    cfg = world.config(tmp_path, discovery={"restrict_to_mesh": True})
    result = spider(cfg, tmp_path).crawl()
    assert LinkKey("BETA", "GAMMA", 4) not in result.links
    assert LinkKey("ALPHA", "BETA", 4) in result.links


def test_cli_once_dry_run_prints_ads(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spider.yaml"
    path.write_text(yaml.safe_dump(world.config(tmp_path)))
    assert main(["--once", "--dry-run", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert 'MyType = "LarkNetworkLink"' in out and 'Name = "ALPHA->BETA/IPv4"' in out
    assert "LarkThroughputMbps = 9000.0" in out
    assert "ads would be advertised to 127.0.0.1:9618" in out and "ps.stranger.example" in out
    assert main(["--once", "--dry-run", "--json", "-c", str(path)]) == 0
    ads = json.loads(capsys.readouterr().out.split("\n# ")[0])
    assert any(a.get("Name") == "BETA->ALPHA/IPv4" for a in ads)


def test_cli_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spider.yaml"
    path.write_text("quality:\n  max_loss: lots\n")
    assert main(["--check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: quality.max_loss" in err


def test_cli_knob_log_and_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spider.yaml"
    path.write_text("archives:\n  endpoints:\n    - {url: http://127.0.0.1:9/esmond/perfsonar/archive, type: esmond}\n")
    assert main(["--check-config", "-c", str(path)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("LARK_SPIDER_INTERVAL", "soon")  # a knob overrides its key of the file
    assert main(["--check-config", "-c", str(path)]) == 2
    assert "interval" in capsys.readouterr().err
    monkeypatch.delenv("LARK_SPIDER_INTERVAL")
    log = tmp_path / "missing-dir" / "spider.log"
    assert main(["--once", "--dry-run", "--log", str(log), "-c", str(path)]) == 2
    assert f"cannot open log {log}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["--no-such-option"])
    assert usage.value.code == 2


def test_ad_batches_recycle_a_fixed_pool(world: World, tmp_path: Path) -> None:
    sp = spider(world.config(tmp_path), tmp_path)
    result = sp.crawl()
    expected = [ad["Name"] for ad in sp.iter_ads(result)]
    seen: list[str] = []
    ids: set[int] = set()
    for batch in sp.ad_batches(result, size=2):
        assert len(batch) <= 2
        seen.extend(ad["Name"] for ad in batch)  # read each batch before asking for the next
        ids.update(id(ad) for ad in batch[:2] if ad["MyType"] == "LarkNetworkLink")
    assert seen == expected
    assert len(ids) == 2  # the same two ClassAd objects carried every link


def _wait_for(path: Path, text: str, timeout: float = 60.0) -> str:
    def content_with_text() -> str:
        content = path.read_text() if path.exists() else ""
        return content if text in content else ""

    try:
        return wait_until(f"{text!r} in {path}", content_with_text, timeout, 0.1)
    except TimeoutError as err:
        raise AssertionError(f"{err}:\n{path.read_text() if path.exists() else ''}") from None


def test_cli_once_exits_3_when_the_collector_refuses(world: World, tmp_path: Path) -> None:
    path = tmp_path / "spider.yaml"
    cfg = world.config(tmp_path)
    cfg["collector"]["address"] = "127.0.0.1:9"  # nothing listens there
    cfg["spider"]["log"] = str(tmp_path / "SpiderLog")
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--once", "-c", str(path)]) == 3
    assert "ERROR: advertising to 127.0.0.1:9 failed" in (tmp_path / "SpiderLog").read_text()


def test_daemon_survives_publish_failures_reloads_and_stops_on_sigterm(world: World, tmp_path: Path) -> None:
    log_file = tmp_path / "LarkSpiderLog"
    cfg = world.config(tmp_path)
    cfg["collector"]["address"] = "127.0.0.1:9"
    cfg["spider"] |= {"log": str(log_file), "interval": 10}
    path = tmp_path / "spider.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exe = Path(sys.executable).with_name("lark-spider")
    env = dict(os.environ, LARK_SPIDER_CONFIG=str(path))
    proc = subprocess.Popen([str(exe)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        text = _wait_for(log_file, "crawl 1 done")
        _wait_for(log_file, "advertising to 127.0.0.1:9 failed")
        assert proc.poll() is None  # a failed publish is logged, the daemon keeps going
        proc.send_signal(signal.SIGHUP)
        _wait_for(log_file, "configuration reloaded")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_file.read_text()
    assert "lark-spider exiting" in text
    for line in text.splitlines():
        if line and not line.startswith((" ", "Traceback")):
            assert re.match(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d ", line), line


def test_the_crawl_line_is_the_one_the_docs_show() -> None:
    from collections import Counter

    from perfsonar.crawl import CrawlStats

    doc = (Path(__file__).resolve().parents[2] / "docs" / "spider.md").read_text()
    block = doc.split("## One line per crawl", 1)[1].split("```", 2)[1]
    shown = " ".join(block.split())
    shown = shown[shown.index("crawl "):]  # after the log's time stamp
    # The figures of the docs' example, set one by one; every label and separator comes from line().
    stats = CrawlStats(number=3, duration=44.9, meshes=1, mesh_tests=90300, archives=301, series=90300,
                       samples=361200, links=90300, grades=Counter(good=90300), mesh_missing=0, requests=48145,
                       phases={"discovery": 0.0, "reading": 40.7, "grading": 3.8})
    assert stats.line() == shown
    assert "7 mesh pairs without data" in CrawlStats(mesh_missing=7).line()
