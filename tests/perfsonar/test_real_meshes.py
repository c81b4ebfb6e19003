"""The spider on a mesh shaped like the WLCG/OSG ones, with its defaults (issue #10).

The mesh names each address's site in ``_meta.display-name`` (as PWA writes it and WLCG's own
``psconfig-client`` reads it); the archives are a legacy esmond and a perfSONAR 5 elmond named by the
mesh. No ``sites.rules``, no registry: the real ``lark-spider`` entry point is given only the
publisher's URL. The crawl must then yield one link per measured site pair, with loss read from the
throughput tests, a stale pair visible with its age, and the mesh's cadence in the ads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.perfsonar.fakeps import (
    EsmondApp,
    EsmondTest,
    FakePerfSONAR,
    StaticApp,
    esmond_archiver,
    http_archive,
    psconfig_mesh,
    pub_config_list,
)

SITE_OF = {"ps-bw.alpha.example": "ALPHA", "ps-bw.beta.example": "BETA", "ps-bw.gamma.example": "GAMMA"}
IP = {"ps-bw.alpha.example": "10.1.0.10", "ps-bw.beta.example": "10.2.0.20", "ps-bw.gamma.example": "10.3.0.30"}
HOSTS = list(SITE_OF)
DAY = 86400


class MetaWorld:
    """A publisher with one throughput mesh (cadence PT4H) whose addresses carry their site in ``_meta``."""

    def __init__(self, server: FakePerfSONAR, now: float, display: dict[str, str] | None = None) -> None:
        t = int(now)
        self.server = server
        self.pub = StaticApp()
        server.mount("/pub", self.pub)
        # ALPHA's own archive: legacy esmond.
        self.esmond = EsmondApp("esmond", mount="/a")
        server.mount("/a", self.esmond)
        alpha, beta, gamma = HOSTS
        # ALPHA -> BETA: UDP throughput with 4 % loss in its own packet-loss-rate.
        self.esmond.add(EsmondTest("throughput", IP[alpha], IP[beta], alpha, beta, protocol="udp", points={
            "throughput": [(t - 3600 * k, 9.0e8) for k in (1, 5, 9)],
            "packet-loss-rate": [(t - 3600 * k, 0.04) for k in (1, 5, 9)]}))
        # ALPHA -> GAMMA: the archive still lists the test, but its newest run is 3 days old.
        self.esmond.add(EsmondTest("throughput", IP[alpha], IP[gamma], alpha, gamma, points={
            "throughput": [(t - 3 * DAY, 5.0e9), (t - 3 * DAY - 14400, 5.1e9)]}))
        # BETA's archive: perfSONAR 5 elmond, named by the HTTP archiver's _meta.esmond_url.
        self.elmond = EsmondApp("elmond", mount="/b")
        server.mount("/b", self.elmond)
        self.elmond.add(EsmondTest("throughput", IP[beta], IP[alpha], beta, alpha, points={
            "throughput": [(t - 3600 * k, 9.4e9) for k in (2, 6, 10)],
            "packet-retransmits": [(t - 3600 * k, 0) for k in (2, 6, 10)]}))
        archives = {"a": esmond_archiver(server.url("/a/esmond/perfsonar/archive/")),
                    "b": http_archive(server.url("/b/logstash"), server.url("/b/esmond/perfsonar/archive/"))}
        names = SITE_OF if display is None else display
        self.pub.put("/config/bw", psconfig_mesh("WLCG Bandwidth", "throughput", HOSTS, "PT4H", archives,
                                                 display=names))
        self.pub.put("/config", pub_config_list([server.url("/pub/config/bw")]))

    @property
    def publisher(self) -> str:
        return self.server.url("/pub/config")


def run_spider(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``lark-spider`` entry point, with no configuration file and a private state path."""
    exe = Path(sys.executable).with_name("lark-spider")
    env = dict(os.environ, LARK_SPIDER_CONFIG=str(tmp_path / "no-such-spider.yaml"),
               LARK_SPIDER_STATE_FILE=str(tmp_path / "state.json"))
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def ads_of(stdout: str) -> dict[str, dict]:
    return {ad["Name"]: ad for ad in json.loads(stdout.split("\n# ")[0]) if ad["MyType"] == "LarkNetworkLink"}


def test_publisher_url_alone_maps_sites_from_meta_and_publishes_every_measured_pair(
        server: FakePerfSONAR, now: float, tmp_path: Path) -> None:
    world = MetaWorld(server, now)
    done = run_spider(tmp_path, "--once", "--dry-run", "--json", "--psconfig", world.publisher)
    assert done.returncode == 0, done.stderr
    ads = ads_of(done.stdout)
    assert set(ads) == {"ALPHA->BETA/IPv4", "ALPHA->GAMMA/IPv4", "BETA->ALPHA/IPv4"}

    # Loss from the throughput test's own packet-loss-rate: graded degraded, named as such.
    ab = ads["ALPHA->BETA/IPv4"]
    assert ab["LarkLossFraction"] == pytest.approx(0.04) and ab["LarkLossTest"] == "throughput"
    assert ab["LarkThroughputLossFraction"] == pytest.approx(0.04)
    assert ab["LarkQuality"] == "degraded" and "throughput-test packet loss 4.00 %" in ab["LarkQualityReason"]
    # The mesh's cadence (PT4H) reached the ad of a test whose archive has no schedule.
    assert ab["LarkThroughputExpectedIntervalSeconds"] == 14400

    # Newest run 3 days old: published as stale, with its age and without a figure to trust.
    ag = ads["ALPHA->GAMMA/IPv4"]
    assert ag["LarkQuality"] == "stale" and ag["LarkAgeSeconds"] >= 3 * DAY
    assert "LarkThroughputMbps" not in ag and "newest run 3.0 d old" in ag["LarkQualityReason"]

    ba = ads["BETA->ALPHA/IPv4"]
    assert ba["LarkQuality"] == "good" and ba["LarkThroughputMbps"] == 9400.0
    assert ba["LarkRetransmitFraction"] == 0.0 and "LarkLossFraction" not in ba
    assert not (tmp_path / "state.json").exists()


def test_two_dry_runs_print_the_same_ads_and_write_no_state(server: FakePerfSONAR, now: float,
                                                             tmp_path: Path) -> None:
    world = MetaWorld(server, now)
    first = run_spider(tmp_path, "--once", "--dry-run", "--json", "--psconfig", world.publisher)
    # Archive A disappears: a crawl that had written the state would now carry its links over.
    server.apps.pop("/a")
    second = run_spider(tmp_path, "--once", "--dry-run", "--json", "--psconfig", world.publisher)
    server.mount("/a", world.esmond)
    third = run_spider(tmp_path, "--once", "--dry-run", "--json", "--psconfig", world.publisher)
    assert first.returncode == third.returncode == 0, first.stderr + third.stderr

    def stable(stdout: str) -> dict[str, dict]:
        return {name: {k: v for k, v in ad.items() if k not in ("LarkUpdatedAt", "LarkAgeSeconds")
                       and not k.endswith("AgeSeconds") and k != "LarkQualityReason"
                       and not k.endswith("QualityReason")}
                for name, ad in ads_of(stdout).items()}

    assert stable(first.stdout) == stable(third.stdout)
    assert "ALPHA->BETA/IPv4" not in ads_of(second.stdout)  # nothing was remembered from the first run
    assert not (tmp_path / "state.json").exists()


def test_no_link_exits_4_naming_the_unmapped_hosts(server: FakePerfSONAR, now: float, tmp_path: Path) -> None:
    # The mesh's display names are only the host names: no site anywhere.
    world = MetaWorld(server, now, display={h: h for h in HOSTS})
    done = run_spider(tmp_path, "--once", "--dry-run", "--psconfig", world.publisher)
    assert done.returncode == 4
    reason = [line for line in done.stderr.splitlines() if line.startswith("lark-spider: ")]
    assert len(reason) == 1 and "no link could be published" in reason[0]
    assert "ps-bw.alpha.example" in reason[0] and "--site" in reason[0]
    # --site HOST=SITE on the command line is enough to fix it.
    sites = [f"--site={h}={s}" for h, s in SITE_OF.items()]
    fixed = run_spider(tmp_path, "--once", "--dry-run", "--json", "--psconfig", world.publisher, *sites)
    assert fixed.returncode == 0 and "ALPHA->BETA/IPv4" in ads_of(fixed.stdout)


def test_explain_sites_and_links(server: FakePerfSONAR, now: float, tmp_path: Path) -> None:
    world = MetaWorld(server, now)
    done = run_spider(tmp_path, "--explain-sites", "--psconfig", world.publisher, "--site", "10.3.0.0/16=GAMMA-NET")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    alpha = next(line for line in lines if line.startswith("ps-bw.alpha.example "))
    assert "ALPHA" in alpha and "addresses.ps-bw.alpha.example._meta.display-name" in alpha
    gamma = next(line for line in lines if line.startswith("ps-bw.gamma.example (10.3.0.30)"))
    assert "GAMMA-NET" in gamma and "--site" not in gamma and "cidr 10.3.0.0/16" in gamma  # rules come first
    links = run_spider(tmp_path, "--explain-links", "--psconfig", world.publisher)
    assert links.returncode == 0
    assert "ALPHA->GAMMA/IPv4  stale" in links.stdout
    # GAMMA -> * and BETA -> GAMMA are in the mesh but no archive has them.
    assert "# 3 mesh pairs without data in any archive:" in links.stdout
    assert "ps-bw.gamma.example (GAMMA) -> ps-bw.alpha.example (ALPHA)  throughput  no data" in links.stdout


def test_help_is_plain_text(tmp_path: Path) -> None:
    done = run_spider(tmp_path, "--help")
    assert done.returncode == 0
    assert "``" not in done.stdout and "--psconfig URL" in done.stdout and "exit status" in done.stdout
    assert "4  hosts were discovered but no link could be published" in done.stdout


def test_archives_and_sites_from_the_command_line_alone(server: FakePerfSONAR, now: float, tmp_path: Path) -> None:
    MetaWorld(server, now)  # its archives, without its publisher
    sites = [f"--site={h}={s}" for h, s in SITE_OF.items()]
    archives = ["--esmond", server.url("/a/esmond/perfsonar/archive/"),
                "--esmond", server.url("/b/esmond/perfsonar/archive/"),
                "--opensearch", server.url("/nothing/opensearch")]
    done = run_spider(tmp_path, "--once", "--dry-run", "--json", *archives, *sites)
    assert done.returncode == 0, done.stderr
    ads = ads_of(done.stdout)
    assert {"ALPHA->BETA/IPv4", "BETA->ALPHA/IPv4", "ALPHA->GAMMA/IPv4"} <= set(ads)
    # Without a mesh there is no mesh cadence: the default 6 h applies.
    assert ads["ALPHA->BETA/IPv4"]["LarkThroughputExpectedIntervalSeconds"] == 21600
    assert "nothing/opensearch" in done.stderr  # the unreachable archive is reported, not fatal
    check = run_spider(tmp_path, "--check-config", "--esmond", server.url("/a/esmond/perfsonar/archive/"))
    assert check.returncode == 0 and "<command line>: OK (0 publishers, 0 meshes, 1 archive endpoints" in check.stdout
    bad = run_spider(tmp_path, "--once", "--dry-run", "--esmond", server.url("/a/"), "--site", "nosite")
    assert bad.returncode == 1 and "expected HOST=SITE" in bad.stderr
