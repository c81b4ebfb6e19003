"""perfSONAR archive -> lark-spider -> collector -> lark-links cron -> slot ads -> circuit breaker.

A 10 GB-input job from a site whose measured link is poor stays Idle and `condor_q -better-analyze`
names the Lark clause; once the archive reports a good link the job matches and runs. A small-input
job runs throughout. The submit side's transform (which compiles each job's link lookup) is run by
HTCondor itself over a matrix of jobs and links, and bad attributes are held at submission.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import classad2
import pytest

from lark import netns
from lark.links.records import BreakerKnobs, cron_output, judge_link
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
from tests.pool.harness import COMPLETED, IDLE, JobHeld
from tests.pool.larkpool import LarkPool
from tests.support import wait_until

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


KNOBS = BreakerKnobs(max_transfer_seconds=600)  # as 75-lark-matchmaking-test.conf sets it


def wait_for_slots(lp: LarkPool, mbps: float, timeout: float = 30) -> None:
    """Until every slot holds FNAL's limit as the cron judges a fresh link of ``mbps``."""
    expected = judge_link({"Mbps": mbps, "MeasuredAt": time.time(), "Quality": "good"}, KNOBS, time.time()).limit
    def shown() -> bool:
        seen = [s.get("LarkMaxInputBytes_FNAL") for s in lp.pool.status('MyType == "Machine"',
                                                                         ["LarkMaxInputBytes_FNAL"])]
        return bool(seen) and all(isinstance(v, int) and abs(v - expected) <= 0.02 * expected for v in seen)

    wait_until(f"every slot to show FNAL's limit {expected} ({mbps} Mbps)", shown, timeout, 0.5)


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
    [big_ad] = lp.pool.q(f"ClusterId == {big}", ["LarkInputTransferOK", "LarkLinkRank"])
    assert "LarkMaxInputBytes_FNAL" in str(big_ad["LarkInputTransferOK"])  # compiled by the schedd's transform
    try:
        gate_then_open(lp, archive, tmp_path, big, small)
    finally:
        lp.pool.run(["condor_rm", str(big), str(small)], check=False)  # a failed run leaves no idle job


def gate_then_open(lp: LarkPool, archive: Archive, tmp_path: Path, big: int, small: int) -> None:
    lp.pool.wait(small, timeout=120)  # small jobs pass whatever the link
    # Two negotiation cycles after the small job left its slot free have considered the big job and
    # found no slot for it (the schedd records each rejection; the clock is in whole seconds).
    since = int(time.time()) + 1
    rejections: set[int] = set()

    def rejected_twice() -> dict[str, object] | None:
        [ad] = lp.pool.q(f"ClusterId == {big}", ["JobStatus", "LastRejMatchTime", "LastRejMatchReason"])
        assert ad["JobStatus"] == IDLE, ad
        if (ad.get("LastRejMatchTime") or 0) >= since:
            assert ad.get("LastRejMatchReason") == "no match found", ad
            rejections.add(ad["LastRejMatchTime"])
        return ad if len(rejections) >= 2 else None

    ad = wait_until("two rejections of the big job by the negotiator", rejected_twice, 60, 0.5)
    assert ad["JobStatus"] == IDLE, ad
    analysis = lp.pool.run(["condor_q", "-better-analyze", "-reverse", str(big)], check=False).stdout
    analysis += lp.pool.run(["condor_q", "-better-analyze", str(big)], check=False).stdout
    assert "LarkMaxInputBytes_FNAL" in analysis, analysis  # the job's Lark clause, which no slot satisfies

    archive.report(9.4e9)  # the link recovers: 10 GB in 8.5 s
    crawl_and_publish(archive, lp, tmp_path)
    wait_for_slots(lp, 9400.0)
    ads = lp.pool.wait(big, timeout=120)
    assert ads[0]["JobStatus"] == COMPLETED


def test_bad_matchmaking_attributes_are_held_at_submission(matchmaking_pool: LarkPool) -> None:
    lp = matchmaking_pool
    for extra, says in (('+LarkInputBytes = "lots"', "LarkInputBytes must be a number of bytes"),
                        ("+LarkSourceSite = 17", "LarkSourceSite must be a site name in quotes")):
        cluster = lp.submit_job("- 0 0 0", extra=extra)
        try:
            with pytest.raises(JobHeld) as info:
                lp.pool.wait(cluster, timeout=60)
            assert says in info.value.ads[0]["HoldReason"], info.value.ads
            [ad] = lp.pool.q(f"ClusterId == {cluster}", ["HoldReasonSubCode", "LarkInputTransferOK"])
            assert ad["HoldReasonSubCode"] == 4202 and "LarkInputTransferOK" not in ad, ad
        finally:
            lp.pool.run(["condor_rm", str(cluster)], check=False)


GB = 10**9
GOOD = {"Mbps": 10000.0, "Loss": 0.0, "Quality": "good"}
LINK_STATES = {
    "good": GOOD, "slow": {**GOOD, "Mbps": 5.0}, "lossy": {**GOOD, "Loss": 0.1}, "stale": {**GOOD, "Quality": "stale"},
    "old": {**GOOD, "age": 3 * 86400}, "zero": {**GOOD, "Mbps": 0.0}, "missing": None,
}
# job (source site, input bytes) -> link state -> may it start? (test knobs: 600 s, small <= 1 GiB)
MATRIX = {
    ("FNAL", None):       dict.fromkeys(LINK_STATES, True),
    ("FNAL", 10**6):      dict.fromkeys(LINK_STATES, True),
    ("FNAL", 10 * GB):    {"good": True, "slow": False, "lossy": False, "stale": False, "old": False, "zero": False,
                           "missing": True},
    ("FNAL", 5000 * GB):  {**dict.fromkeys(LINK_STATES, False), "missing": True},  # 10 Gbit/s * 600 s = 750 GB
    ("UNL", 5000 * GB):   dict.fromkeys(LINK_STATES, True),  # the data is at this site
    ("FNAL-T1.x", 10 * GB): {"good": True, "slow": False, "lossy": False, "stale": False, "old": False,
                             "zero": False, "missing": True},  # a name that is no attribute name
}


def transformed_jobs(lp: LarkPool, jobs: list[tuple[str, int | float | str | None]],
                     env: dict[str, str] | None = None) -> list[classad2.ClassAd]:
    """The jobs as the schedd's own transforms (the pool's 60-lark-submit.conf) leave them."""
    text = "\n".join(
        f'ClusterId = 1\nProcId = {i}\nRequirements = true\nLarkSourceSite = "{site}"\n'
        + (f"LarkInputBytes = {size}\n" if size is not None else "")
        for i, (site, size) in enumerate(jobs))
    # 25.x exits 1 even when every ad was transformed: judge by the output and stderr instead
    res = lp.pool.run(["condor_transform_ads", "-jobtransforms", "LarkSite LarkLink", "-"], input=text, check=False,
                      env=env)
    ads = list(classad2.parseAds(res.stdout, classad2.ParserType.Old))
    assert [ad["ProcId"] for ad in ads] == list(range(len(jobs))) and not res.stderr.strip(), res
    return ads


def test_breaker_matrix_through_htcondors_own_transform(matchmaking_pool: LarkPool) -> None:
    lp = matchmaking_pool
    now = time.time()
    jobs = transformed_jobs(lp, list(MATRIX))
    for state, link in LINK_STATES.items():
        links = {"CERN": GOOD}
        if link is not None:
            links = {src: {**link, "MeasuredAt": now - link.get("age", 600)} for src in ("FNAL", "FNAL-T1.x")}
        slot = classad2.parseOne(cron_output("UNL", links, KNOBS, int(now)).replace("- update:true", ""),
                                 classad2.ParserType.Old)
        for (key, expected), job in zip(MATRIX.items(), jobs, strict=True):
            # the slot satisfies the job's Requirements, where the transform put the check
            assert slot.matches(job) is expected[state], (key, state, job)


def test_unknown_link_policy_deny_refuses_only_large_jobs(matchmaking_pool: LarkPool) -> None:
    lp = matchmaking_pool
    deny = BreakerKnobs(max_transfer_seconds=600, unknown_link_allowed=False)
    slot = classad2.parseOne(cron_output("UNL", {"CERN": {**GOOD, "MeasuredAt": time.time()}}, deny,
                                         int(time.time())).replace("- update:true", ""), classad2.ParserType.Old)
    small, big = transformed_jobs(lp, [("FNAL", 10**6), ("FNAL", 10 * GB)])
    assert slot.matches(small) is True
    assert slot.matches(big) is False


def test_a_bad_breaker_knob_is_named_and_the_last_limits_stay(matchmaking_pool: LarkPool, archive: Archive,
                                                              tmp_path: Path) -> None:
    lp = matchmaking_pool
    archive.report(5e6)
    crawl_and_publish(archive, lp, tmp_path)
    wait_for_slots(lp, 5.0)
    lp.pool.add_config("76-lark-bad-knob.conf", "LARK_MAX_LOSS = lots\n")
    lp.pool.reconfig()
    try:
        def with_the_error() -> list[dict[str, object]]:
            slots = lp.pool.status('MyType == "Machine"', ["LarkLinksError", "LarkMaxInputBytes_FNAL"])
            errors = [str(s.get("LarkLinksError", "")) for s in slots]
            return slots if all("LARK_MAX_LOSS: expected a number, got 'lots'" in e for e in errors) else []

        slots = wait_until("every slot's LarkLinksError to name LARK_MAX_LOSS", with_the_error, 30, 0.5)
        assert all(isinstance(s.get("LarkMaxInputBytes_FNAL"), int) for s in slots), slots  # nothing lost
    finally:
        lp.pool.remove_config("76-lark-bad-knob.conf")
        lp.pool.reconfig()
    wait_for_slots(lp, 5.0)


def test_jobs_of_one_site_and_size_class_share_their_requirements(matchmaking_pool: LarkPool) -> None:
    """Requirements compile the size rounded up to two significant digits, not a reference to each
    job's own LarkInputBytes: such jobs can share an autocluster, and the rounding only tightens."""
    a, b, c = transformed_jobs(matchmaking_pool, [("FNAL", 10_000_000_001), ("FNAL", 10_950_000_000),
                                                  ("FNAL", 11_000_000_001)])
    assert str(a["Requirements"]) == str(b["Requirements"]) != str(c["Requirements"])
    assert "LarkInputBytes" not in str(a["Requirements"])
    limit = classad2.ClassAd({"LarkMaxInputBytes_FNAL": 11_000_000_000})
    assert limit.matches(a) and limit.matches(b) and not limit.matches(c)


def test_a_bad_small_input_knob_on_the_schedd_holds_jobs_with_a_site_and_says_why(
        matchmaking_pool: LarkPool) -> None:
    """Without a number for LARK_SMALL_INPUT_BYTES the transform cannot tell which jobs need the link
    check: jobs with a source site are held with a reason naming the knob, the others are untouched."""
    # ClassAd real() would read "10GB" and "1,073,741,824" as 10 and 1; 20 digits overflow a ClassAd integer
    for knob in ("lots", "10GB", "1,073,741,824", "10" * 10):
        jobs = transformed_jobs(matchmaking_pool, [("FNAL", 10 * GB), ("FNAL", None), ("", 10 * GB)],
                                env={"_CONDOR_LARK_SMALL_INPUT_BYTES": knob})
        for job in jobs[:2]:
            assert job["JobStatus"] == 5 and job["HoldReasonSubCode"] == 4203, (knob, job)
            assert "LARK_SMALL_INPUT_BYTES is not a number" in job["HoldReason"], job
            assert "LarkInputTransferOK" not in job and "LarkLinkRank" not in job, job
            assert job.eval("Requirements") is False, job  # released by mistake, it still never runs
        assert "JobStatus" not in jobs[2] and "LarkInputTransferOK" not in jobs[2], jobs[2]


def test_the_compiled_size_at_the_edges(matchmaking_pool: LarkPool) -> None:
    """What the transform compiles: an integer, rounded up to two significant digits; nothing at or
    below LARK_SMALL_INPUT_BYTES; a hold for sizes the integer arithmetic cannot take."""
    sizes: list[int | float | str | None] = [10**10, "10e9", 9.99e9, 1073741824, 1073741825, 123456789012345678,
                                             "1e19", "1e40"]
    jobs = transformed_jobs(matchmaking_pool, [("FNAL", size) for size in sizes])
    compiled = [str(job.get("LarkInputTransferOK")) for job in jobs]
    assert compiled[0].endswith(">= 10000000000)") and compiled[1] == compiled[0]  # exact, and from a real
    assert compiled[2] == compiled[0]  # 9.99e9 rounds up to 1.0e10
    assert jobs[3].get("LarkInputTransferOK") is None  # exactly the small-input limit: always passes
    assert compiled[4].endswith(">= 1100000000)")
    assert compiled[5].endswith(">= 130000000000000000)")
    for job in jobs[6:]:
        assert job["JobStatus"] == 5 and "below 1e18" in job["HoldReason"], job
        assert job.get("LarkInputTransferOK") is None
