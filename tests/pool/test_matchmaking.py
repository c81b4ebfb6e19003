"""perfSONAR archive -> lark-spider -> collector -> lark-links cron -> slot ads -> circuit breaker.

A 10 GB-input job from a site whose measured link is poor stays Idle and `condor_q -better-analyze`
names the Lark clause; once the archive reports a good link the job matches and runs. A small-input
job runs throughout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lark import netns
from perfsonar.config import parse_config
from perfsonar.crawl import Spider
from perfsonar.publish import configure_security, publish_ads
from tests.perfsonar.fakeps import (
    EsmondApp,
    EsmondTest,
    FakePerfSONAR,
    StaticApp,
    esmond_archiver,
    psconfig_mesh,
    pub_config_list,
)
from tests.pool.harness import COMPLETED, IDLE
from tests.pool.larkpool import LarkPool

pytestmark = pytest.mark.pool
REPO = Path(__file__).resolve().parents[2]
SRC_HOST, DST_HOST = "ps-bw.fnal.example", "ps-bw.unl.example"
SRC_IP, DST_IP = "198.18.1.10", "198.18.2.20"  # benchmark-test range: only names, no traffic goes there


class Archive:
    """One loopback esmond archive with one throughput test FNAL -> UNL whose value tests can change."""

    def __init__(self) -> None:
        self.server = FakePerfSONAR("127.0.0.1").start()
        pub = StaticApp()
        self.server.mount("/pub", pub)
        archives = {"a": esmond_archiver(self.server.url("/a/esmond/perfsonar/archive/"))}
        pub.put("/config/bw", psconfig_mesh("BW", "throughput", [SRC_HOST, DST_HOST], "PT1H", archives))
        pub.put("/config", pub_config_list([self.server.url("/pub/config/bw")]))

    def report(self, bits_per_second: float) -> None:
        """From now on the archive holds three recent samples at this rate (a fresh archive app)."""
        now = int(time.time())
        esmond = EsmondApp("esmond", mount="/a")
        esmond.add(EsmondTest("throughput", SRC_IP, DST_IP, SRC_HOST, DST_HOST,
                              points={"throughput": [(now - 600 * k, bits_per_second) for k in range(1, 4)]}))
        self.server.mount("/a", esmond)

    def spider_config(self, tmp_path: Path, token_dir: str) -> dict:
        return {
            "spider": {"state_file": str(tmp_path / "spider-state.json"), "concurrency": 2, "interval": 60},
            "http": {"timeout": 2.0, "retries": 1, "backoff": 0.0},
            "discovery": {"publishers": [self.server.url("/pub/config")]},
            "sites": {"rules": [{"site": "FNAL", "hosts": ["*.fnal.example"]},
                                {"site": "UNL", "hosts": ["*.unl.example"]}],
                      "hosts": {SRC_HOST: [SRC_IP], DST_HOST: [DST_IP]}, "resolve_dns": False},
            "collector": {"address": "127.0.0.1:9618", "token_dir": token_dir, "ad_lifetime": 600},
        }


@pytest.fixture(scope="module")
def archive() -> Iterator[Archive]:
    a = Archive()
    try:
        yield a
    finally:
        a.server.stop()


@pytest.fixture(scope="module")
def matchmaking_pool(lark_pool: LarkPool) -> Iterator[LarkPool]:
    pool = lark_pool.pool
    pool.add_config("70-lark-matchmaking.conf", (REPO / "condor_config.d" / "70-lark-matchmaking.conf").read_text())
    pool.add_config("75-lark-matchmaking-test.conf",
                    "LARK_SITE = UNL\nSTARTD_CRON_LARKLINKS_PERIOD = 2s\nLARK_MAX_TRANSFER_SECONDS = 600\n")
    pool.reconfig()
    try:
        yield lark_pool
    finally:
        pool.remove_config("75-lark-matchmaking-test.conf")
        pool.remove_config("70-lark-matchmaking.conf")
        pool.reconfig()


def crawl_and_publish(archive: Archive, lp: LarkPool, tmp_path: Path) -> list[str]:
    token_dir = str(lp.pool.token_dir())
    config = parse_config(archive.spider_config(tmp_path, token_dir), str(tmp_path / "spider.yaml"))
    spider = Spider(config)
    ads = list(spider.iter_ads(spider.crawl()))

    def publish() -> None:
        # the collector listens on the pool namespace's loopback
        configure_security(token_dir)
        publish_ads(ads, "127.0.0.1:9618", token_dir)

    netns.call_in(lp.pool.netns_path, publish)
    return [str(ad["Name"]) for ad in ads]


def slot_link_mbps(lp: LarkPool) -> list[object]:
    slots = lp.pool.status('MyType == "Machine"', ["LarkSite", "LarkLinks"])
    return [(s.get("LarkLinks") or {}).get("FNAL", {}).get("Mbps") for s in slots]


def wait_for_slots(lp: LarkPool, mbps: float, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = slot_link_mbps(lp)
        if seen and all(v is not None and abs(float(v) - mbps) < 0.01 * mbps for v in seen):
            return
        assert time.monotonic() < deadline, f"slots never showed FNAL at {mbps} Mbps: {seen}"
        time.sleep(0.5)


def test_poor_link_gates_big_jobs_until_it_is_good(matchmaking_pool: LarkPool, archive: Archive,
                                                   tmp_path: Path) -> None:
    lp = matchmaking_pool
    archive.report(5e6)  # 5 Mbit/s: 10 GB would take 4.4 hours
    names = crawl_and_publish(archive, lp, tmp_path)
    assert any("FNAL" in n and "UNL" in n for n in names), names
    links = lp.pool.status('MyType == "LarkNetworkLink"', ["LarkSourceSite", "LarkDestinationSite",
                                                           "LarkThroughputMbps", "LarkQuality"])
    assert {(ad["LarkSourceSite"], ad["LarkDestinationSite"]) for ad in links} >= {("FNAL", "UNL")}
    wait_for_slots(lp, 5.0)

    big = lp.submit_job("- 0 0 0", extra='+LarkSourceSite = "FNAL"\n+LarkInputBytes = 10000000000')
    small = lp.submit_job("- 0 0 0", extra='+LarkSourceSite = "FNAL"\n+LarkInputBytes = 1000')
    lp.pool.wait(small, timeout=120)  # small jobs pass whatever the link
    time.sleep(8)  # several negotiation cycles (NEGOTIATOR_INTERVAL = 2 s)
    assert [ad["JobStatus"] for ad in lp.pool.q(f"ClusterId == {big}", ["JobStatus"])] == [IDLE]
    analysis = lp.pool.run(["condor_q", "-better-analyze", "-reverse", str(big)], check=False).stdout
    analysis += lp.pool.run(["condor_q", "-better-analyze", str(big)], check=False).stdout
    assert "LarkInputTransferOK" in analysis, analysis

    archive.report(9.4e9)  # the link recovers: 10 GB in 8.5 s
    crawl_and_publish(archive, lp, tmp_path)
    wait_for_slots(lp, 9400.0)
    ads = lp.pool.wait(big, timeout=120)
    assert ads[0]["JobStatus"] == COMPLETED
