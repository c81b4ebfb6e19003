"""The spider on a mesh shaped like the WLCG/OSG ones, with its defaults.

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
from tests.support import wait_until

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


EXE = Path(sys.executable).with_name("lark-spider")


def spider_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LARK_SPIDER_", "_CONDOR_"))}
    return dict(env, LARK_SPIDER_CONFIG=str(tmp_path / "no-such-spider.yaml"), **extra)


def run_spider(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed ``lark-spider`` entry point, with no configuration file (so: no state file either)."""
    return subprocess.run([str(EXE), *args], env=spider_env(tmp_path, **env), capture_output=True, text=True,
                          timeout=120, check=False)


def ads_of(stdout: str) -> dict[str, dict]:
    """The link ads of ``--json`` output, which is one JSON document and nothing else."""
    return {ad["Name"]: ad for ad in json.loads(stdout) if ad["MyType"] == "LarkNetworkLink"}


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
    # The summary lines are on stderr, so stdout stays one JSON document.
    assert "# 3 link ads would be advertised to the local collector" in done.stderr


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
    assert bad.returncode == 2 and "expected HOST=SITE" in bad.stderr


def daemon_state(server: FakePerfSONAR, world: MetaWorld, tmp_path: Path) -> tuple[Path, Path]:
    """A configuration file like a daemon's, and the state file its last crawl wrote (3 links)."""
    from perfsonar.config import load_spider_config
    from perfsonar.crawl import Spider

    state = tmp_path / "daemon-state.json"
    cfg_file = tmp_path / "spider.yaml"
    cfg_file.write_text(json.dumps({"discovery": {"meshes": [world.publisher]},
                                    "spider": {"state_file": str(state)}, "sites": {"resolve_dns": False}}))
    Spider(load_spider_config(cfg_file, knobs=None)).crawl(persist=True)
    assert '"links": 3' in state.read_text().splitlines()[0]  # the daemon's links are on disk
    return cfg_file, state


def test_a_one_off_from_the_command_line_never_reads_the_daemons_state(server: FakePerfSONAR, now: float,
                                                                      tmp_path: Path) -> None:
    world = MetaWorld(server, now)
    _cfg, state = daemon_state(server, world, tmp_path)
    saved = state.read_bytes()
    # A one-off of a mesh where nothing maps to a site, with the daemon's state file configured by knob:
    # no carried-over ads of the daemon's links, and exit 4.
    unmapped = MetaWorld(server, now, display={h: h for h in HOSTS})
    done = run_spider(tmp_path, "--once", "--dry-run", "--json", "--psconfig", unmapped.publisher,
                      LARK_SPIDER_STATE_FILE=str(state))
    assert done.returncode == 4, done.stderr
    assert ads_of(done.stdout) == {}
    assert state.read_bytes() == saved


def test_only_carried_links_exit_4(server: FakePerfSONAR, now: float, tmp_path: Path) -> None:
    world = MetaWorld(server, now)
    cfg_file, _state = daemon_state(server, world, tmp_path)
    server.apps.pop("/a")
    server.apps.pop("/b")  # every archive is down: the dry run has only the state file's links
    done = run_spider(tmp_path, "--once", "--dry-run", "--json", "-c", str(cfg_file))
    ads = ads_of(done.stdout)
    assert ads and all(ad["LarkQuality"] == "stale" for ad in ads.values())
    assert all("not refreshed" in ad["LarkQualityReason"] for ad in ads.values())
    assert done.returncode == 4, done.stderr
    assert "no link could be published" in done.stderr


def test_nothing_discovered_exits_5(tmp_path: Path) -> None:
    done = run_spider(tmp_path, "--once", "--dry-run", "--psconfig", "http://127.0.0.1:9/pub/config")
    assert done.returncode == 5, done.stderr
    assert "lark-spider: nothing was discovered" in done.stderr
    assert "5  nothing was discovered" in run_spider(tmp_path, "--help").stdout


@pytest.mark.parametrize("with_file", [False, True])
def test_sighup_reloads_with_the_command_line_sources(server: FakePerfSONAR, now: float, tmp_path: Path,
                                                      with_file: bool) -> None:
    import signal

    world = MetaWorld(server, now)
    log = tmp_path / "spider.log"
    args = [str(EXE), "--psconfig", world.publisher, "--site", "ps-bw.gamma.example=GAMMA", "--log", str(log)]
    if with_file:  # a file with no source of its own: the mesh and the rule come from the command line
        (tmp_path / "spider.yaml").write_text("sites:\n  resolve_dns: false\n")
        args += ["-c", str(tmp_path / "spider.yaml")]
    env = spider_env(tmp_path, LARK_SPIDER_COLLECTOR="127.0.0.1:9")  # publishing fails fast: logged only
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_for(text: str) -> str:
        def logged() -> str:
            content = log.read_text() if log.exists() else ""
            if text in content:
                return content
            assert proc.poll() is None, content  # the spider died: say so now, with its log
            return ""

        try:
            return wait_until(f"{text!r} in the spider's log", logged, 60, 0.1)
        except TimeoutError as err:
            raise AssertionError(f"{err}:\n{log.read_text() if log.exists() else ''}") from None

    try:
        wait_for("crawl 1 done")
        proc.send_signal(signal.SIGHUP)
        content = wait_for("configuration reloaded")
        assert "not reloading" not in content
        assert "reloaded from" in content and "1 meshes, 0 archive endpoints, 1 site rules" in content
    finally:
        proc.terminate()
        proc.wait(timeout=30)
