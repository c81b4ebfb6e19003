"""The execute side of the circuit breaker: links judged into per-site limits by the links cron, its
failure handling, and the drop-in's expressions as HTCondor expands them.

The submit side (the ``LarkLink`` job transform) needs HTCondor's transform engine; the whole chain,
transform included, is checked on the real pool in tests/pool/test_matchmaking.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import classad2
import pytest

from lark.errors import ConfigError
from lark.links.cron import KNOBS as CRON_KNOBS
from lark.links.cron import breaker_knobs, error_output, run
from lark.links.records import (
    NO_LIMIT,
    BreakerKnobs,
    attribute_suffix,
    cron_output,
    judge,
    judge_link,
    links_into,
    published,
    slot_limits,
)

REPO = Path(__file__).resolve().parents[2]
NOW = int(time.time())
GB = 10**9
GIB = 1 << 30
KNOBS = BreakerKnobs()  # the drop-in's defaults: 3600 s, 1 GiB, 2 % loss, 1 day, unknown allowed

GOOD = {"Mbps": 10000.0, "Loss": 0.0, "MeasuredAt": NOW - 600, "Quality": "good"}
LINKS: dict[str, dict[str, object]] = {
    "good": GOOD,
    "slow": {**GOOD, "Mbps": 5.0},                      # 10 GB takes 4.4 h > 1 h
    "lossy": {**GOOD, "Loss": 0.1},
    "stale": {**GOOD, "Quality": "stale"},
    "old": {**GOOD, "MeasuredAt": NOW - 3 * 86400},
    "undated": {"Mbps": 10000.0, "Quality": "good"},
    "zero": {**GOOD, "Mbps": 0.0},
    "degraded": {**GOOD, "Mbps": 100.0, "Quality": "degraded"},  # slow but trustworthy figures
}
# link state -> the largest input it lets through (default knobs)
EXPECTED_LIMIT = {
    "good": int(10000 * 1e6 / 8 * 3600),  # 4.5 TB
    "slow": int(5 * 1e6 / 8 * 3600),      # 2.25 GB, above the 1 GiB floor
    "lossy": GIB, "stale": GIB, "old": GIB, "undated": GIB, "zero": GIB,  # broken: small inputs only
    "degraded": int(100 * 1e6 / 8 * 3600),  # 45 GB: slow, but its figures can be trusted
}


def max_input_bytes(link: dict[str, object], knobs: BreakerKnobs, now: float) -> int:
    return judge_link(link, knobs, now).limit


@pytest.mark.parametrize("state", list(LINKS))
def test_each_link_state_is_judged_into_a_limit(state: str) -> None:
    assert max_input_bytes(LINKS[state], KNOBS, NOW) == EXPECTED_LIMIT[state]


def test_the_limit_never_drops_below_the_small_input_floor() -> None:
    assert max_input_bytes({**GOOD, "Mbps": 0.001}, KNOBS, NOW) == GIB
    assert max_input_bytes(GOOD, BreakerKnobs(small_input_bytes=10**16), NOW) == 10**16


def test_knobs_move_the_limit() -> None:
    slow = LINKS["slow"]
    assert max_input_bytes(slow, BreakerKnobs(max_transfer_seconds=100000), NOW) == int(5 * 1e6 / 8 * 100000)
    assert max_input_bytes(LINKS["lossy"], BreakerKnobs(max_loss=0.2), NOW) == EXPECTED_LIMIT["good"]
    assert max_input_bytes(LINKS["old"], BreakerKnobs(max_link_age=4 * 86400), NOW) == EXPECTED_LIMIT["good"]


def test_site_names_become_the_attribute_names_the_transform_computes() -> None:
    for site in ("FNAL", "FNAL-T1.x", "Sité-1", "a b/c", "T2_US_Nebraska"):
        transform = classad2.ExprTree(f'replaceAll("[^A-Za-z0-9_]", {classad2.quote(site)}, "_")').eval()
        assert attribute_suffix(site) == transform, site


def test_collisions_of_case_or_of_the_local_site_only_tighten() -> None:
    limits = slot_limits("UNL", judge({"fnal": LINKS["slow"], "FNAL": GOOD, "unl": LINKS["stale"]}, KNOBS, NOW))
    assert {k.lower(): v for k, v in limits.items()} == {"larkmaxinputbytes_fnal": EXPECTED_LIMIT["slow"],
                                                         "larkmaxinputbytes_unl": GIB}


def test_non_finite_figures_never_open_the_breaker() -> None:
    assert max_input_bytes({**GOOD, "Mbps": float("inf")}, KNOBS, NOW) == GIB
    assert max_input_bytes({**GOOD, "Mbps": float("nan")}, KNOBS, NOW) == GIB
    assert max_input_bytes({**GOOD, "Loss": float("nan")}, KNOBS, NOW) == GIB
    assert max_input_bytes({k: v for k, v in GOOD.items() if k != "Loss"}, KNOBS, NOW) == EXPECTED_LIMIT["good"]


def test_slot_limits_name_sites_safely_and_collisions_only_tighten() -> None:
    links = {"FNAL-T1.x": GOOD, "FNAL_T1_x": LINKS["slow"], "CERN": GOOD}
    limits = slot_limits("UNL", judge(links, KNOBS, NOW))
    assert attribute_suffix("FNAL-T1.x") == "FNAL_T1_x"
    assert limits == {"LarkMaxInputBytes_FNAL_T1_x": EXPECTED_LIMIT["slow"],
                      "LarkMaxInputBytes_CERN": EXPECTED_LIMIT["good"],
                      "LarkMaxInputBytes_UNL": NO_LIMIT}


def test_cron_output_is_an_update_the_startd_reads() -> None:
    text = cron_output("UNL", {"FNAL": LINKS["slow"], "CERN": LINKS["stale"]}, BreakerKnobs(unknown_link_allowed=False),
                       NOW)
    assert text.endswith("- update:true\n")
    ad = classad2.parseOne(text.replace("- update:true", ""), classad2.ParserType.Old)
    assert ad["LarkMaxInputBytes_FNAL"] == EXPECTED_LIMIT["slow"]
    assert ad["LarkMaxInputBytes_CERN"] == GIB
    assert ad["LarkMaxInputBytes_UNL"] == NO_LIMIT
    assert ad["LarkUnknownLinkMaxInputBytes"] == GIB
    assert ad["LarkBrokenLinkSites"] == "CERN"
    assert ad["LarkLinksCount"] == 2 and ad["LarkLinksUpdatedAt"] == NOW and ad["LarkLinksError"] == ""
    assert "LarkLinks" not in ad


def test_the_measurement_record_for_people_is_opt_in() -> None:
    text = cron_output("UNL", {"FNAL": LINKS["slow"]}, BreakerKnobs(publish_record=True), NOW)
    ad = classad2.parseOne(text.replace("- update:true", ""), classad2.ParserType.Old)
    # the bracket form evaluates; LarkLinks["FNAL"].Mbps would not
    assert classad2.ExprTree('MY.LarkLinks[TARGET.S]["Mbps"]').eval(ad, classad2.ClassAd({"S": "FNAL"})) == 5.0


def test_breaker_knobs_from_param_and_bad_values_name_the_knob() -> None:
    params = {"LARK_MAX_TRANSFER_SECONDS": "600", "LARK_UNKNOWN_LINK_POLICY": "Deny", "LARK_MAX_LOSS": "0.5",
              "LARK_LINKS_PUBLISH_RECORD": "True"}
    knobs = breaker_knobs(params.get)
    assert knobs == BreakerKnobs(max_transfer_seconds=600, max_loss=0.5, unknown_link_allowed=False,
                                 publish_record=True)
    with pytest.raises(ConfigError, match="LARK_MAX_LOSS: expected a number, got 'lots' .condor_config_val -v"):
        breaker_knobs({"LARK_MAX_LOSS": "lots"}.get)
    assert breaker_knobs({"LARK_UNKNOWN_LINK_POLICY": "False"}.get).unknown_link_allowed is False  # a boolean too
    with pytest.raises(ConfigError, match="LARK_UNKNOWN_LINK_POLICY: expected allow or deny, got 'maybe'"):
        breaker_knobs({"LARK_UNKNOWN_LINK_POLICY": "maybe"}.get)
    with pytest.raises(ConfigError, match="LARK_LINKS_MAX_SITES: expected a whole number, got '2.5'"):
        breaker_knobs({"LARK_LINKS_MAX_SITES": "2.5"}.get)
    for knob, value in (("LARK_MAX_LOSS", "nan"), ("LARK_MAX_TRANSFER_SECONDS", "inf"), ("LARK_MAX_LOSS", "2"),
                        ("LARK_SMALL_INPUT_BYTES", "1e30"), ("LARK_SMALL_INPUT_BYTES", "1_073_741_824"),
                        ("LARK_SMALL_INPUT_BYTES", "10" * 10), ("LARK_MAX_LINK_AGE", "-1")):
        with pytest.raises(ConfigError, match=f"{knob}: expected a (whole )?number"):
            breaker_knobs({knob: value}.get)


def test_links_into_prefers_ipv4_and_skips_unknown() -> None:
    ads = [
        {"LarkSourceSite": "FNAL", "LarkDestinationSite": "UNL", "LarkIPFamily": 6, "LarkThroughputMbps": 100.0,
         "LarkQuality": "good"},
        {"LarkSourceSite": "FNAL", "LarkDestinationSite": "UNL", "LarkIPFamily": 4, "LarkThroughputMbps": 900.0,
         "LarkQuality": "good", "LarkLossFraction": 0.001, "LarkMeasuredAt": 123},
        {"LarkSourceSite": "CERN", "LarkDestinationSite": "UNL", "LarkIPFamily": 4, "LarkQuality": "unknown"},
        {"LarkSourceSite": "UNL", "LarkDestinationSite": "FNAL", "LarkIPFamily": 4, "LarkThroughputMbps": 1.0},
        {"LarkSourceSite": "Site-2", "LarkDestinationSite": "UNL", "LarkIPFamily": 6, "LarkThroughputMbps": 50.0,
         "LarkQuality": "degraded"},
    ]
    assert links_into("UNL", ads) == {"FNAL": {"Mbps": 900.0, "Loss": 0.001, "MeasuredAt": 123, "Quality": "good"},
                                      "Site-2": {"Mbps": 50.0, "Quality": "degraded"}}
    assert list(links_into("UNL", ads)) == ["FNAL", "Site-2"]


def test_links_into_matches_site_spellings_as_attribute_names_do() -> None:
    # The slots say LarkSite = "ALPHA"; the spider took the mesh's spelling "Alpha". The submit side
    # names attributes with replaceAll("[^A-Za-z0-9_]", site, "_") and attribute names ignore case, so
    # "Alpha", "ALPHA" and "alpha" are one site (and "Big Site" is "big_site").
    ads = [{"LarkSourceSite": "BETA", "LarkDestinationSite": "Alpha", "LarkIPFamily": 4,
            "LarkThroughputMbps": 9000.0, "LarkQuality": "good", "LarkMeasuredAt": 1},
           {"LarkSourceSite": "Big Site", "LarkDestinationSite": "alpha", "LarkIPFamily": 4,
            "LarkThroughputMbps": 100.0, "LarkQuality": "good"},
           {"LarkSourceSite": "alpha", "LarkDestinationSite": "ALPHA", "LarkIPFamily": 4,  # this site itself
            "LarkThroughputMbps": 1.0, "LarkQuality": "good"},
           {"LarkSourceSite": "BETA", "LarkDestinationSite": "ALPHA-2", "LarkIPFamily": 4,  # another site
            "LarkThroughputMbps": 1.0, "LarkQuality": "good"}]
    assert links_into("ALPHA", ads) == {"BETA": {"Mbps": 9000.0, "MeasuredAt": 1, "Quality": "good"},
                                        "Big Site": {"Mbps": 100.0, "Quality": "good"}}
    assert set(links_into("big_site", [{**ads[0], "LarkDestinationSite": "Big Site"}])) == {"BETA"}


def test_over_the_site_cap_the_least_restrictive_links_are_left_out() -> None:
    links = {"A": GOOD, "B": LINKS["stale"], "C": LINKS["slow"], "D": LINKS["degraded"]}
    # "allow": an unpublished site passes anything, so the fastest links are the ones to leave out
    two = BreakerKnobs(max_sites=2)
    assert list(published(judge(links, two, NOW), two)) == ["B", "C"]  # 1 GiB, 2.25 GB; not 45 GB, 4.5 TB
    ad = parsed(cron_output("UNL", links, two, NOW))
    assert ad["LarkLinksNotPublished"] == 2 and ad["LarkLinksCount"] == 2 and "LarkMaxInputBytes_A" not in ad
    # "deny": an unpublished site takes small inputs only, so the broken and slowest go first
    deny = BreakerKnobs(unknown_link_allowed=False, max_sites=2)
    assert list(published(judge(links, deny, NOW), deny)) == ["A", "D"]
    # the broken-sites list for people is bounded like the limits
    assert parsed(cron_output("UNL", {f"S{i}": LINKS["stale"] for i in range(5)}, two, NOW))[
        "LarkBrokenLinkSites"] == "S0,S1"


def test_absurd_figures_are_clamped_not_fatal() -> None:
    huge = {**GOOD, "Mbps": 1e300}
    assert max_input_bytes(huge, BreakerKnobs(max_transfer_seconds=1e9), NOW) == 1 << 62
    assert parsed(cron_output("UNL", {"X": huge}, KNOBS, NOW))["LarkMaxInputBytes_X"] == 1 << 62


# ---------------------------------------------------------------- one cron run, and its failures

LINK_AD = {"LarkSourceSite": "FNAL", "LarkDestinationSite": "UNL", "LarkIPFamily": 4, "LarkThroughputMbps": 5.0,
           "LarkQuality": "good", "LarkLossFraction": 0.0, "LarkMeasuredAt": NOW - 600}


def parsed(text: str) -> classad2.ClassAd:
    assert text.endswith("- update:true\n")
    return classad2.parseOne(text.replace("- update:true", ""), classad2.ParserType.Old)


def collector_down() -> list[dict[str, object]]:
    raise OSError("connection refused")


def test_failures_keep_the_last_good_limits_and_say_why(tmp_path: Path) -> None:
    cache = tmp_path / "lark-links.json"
    lossy_ad = {**LINK_AD, "LarkLossFraction": 0.1}  # lossy under the default 2 %, fine under 50 %
    knobs = {"LARK_MAX_TRANSFER_SECONDS": "7200", "LARK_MAX_LOSS": "0.5"}
    two_hours = int(5 * 1e6 / 8 * 7200)
    good = parsed(run("UNL", knobs.get, lambda: [lossy_ad], cache, NOW))
    assert good["LarkMaxInputBytes_FNAL"] == two_hours and good["LarkLinksError"] == ""

    later = NOW + 120
    down = parsed(run("UNL", knobs.get, collector_down, cache, later))
    assert down["LarkMaxInputBytes_FNAL"] == two_hours
    assert down["LarkLinksError"] == "cannot query the collector: connection refused"
    assert down["LarkLinksUpdatedAt"] == NOW  # when the links were read, not now

    # a typo keeps that knob's last good value (50 %, not the default 2 %) and no other knob is lost
    bad_knob = parsed(run("UNL", {**knobs, "LARK_MAX_LOSS": "lots"}.get, lambda: [lossy_ad], cache, later))
    assert bad_knob["LarkMaxInputBytes_FNAL"] == two_hours
    assert "LARK_MAX_LOSS: expected a number, got 'lots'" in bad_knob["LarkLinksError"]

    # the kept measurement still ages: two days on, the link counts as broken
    aged = parsed(run("UNL", knobs.get, collector_down, cache, NOW + 2 * 86400))
    assert aged["LarkMaxInputBytes_FNAL"] == GIB and aged["LarkBrokenLinkSites"] == "FNAL"


def test_without_a_good_run_the_unknown_link_policy_decides(tmp_path: Path) -> None:
    cache = tmp_path / "lark-links.json"
    cache.write_text("{not json")  # a damaged cache is ignored and said, not fatal
    deny = {"LARK_UNKNOWN_LINK_POLICY": "deny"}.get
    out = parsed(run("UNL", deny, collector_down, cache, NOW))
    assert f"ignored the damaged cache {cache}" in out["LarkLinksError"], out
    assert "cannot query the collector: connection refused" in out["LarkLinksError"] and out["LarkSite"] == "UNL"
    # never "no attributes": a big job's check would fall back to "no limit" and pass
    assert out["LarkUnknownLinkMaxInputBytes"] == GIB and out["LarkMaxInputBytes_UNL"] == NO_LIMIT
    bad = parsed(run("UNL", {"LARK_MAX_LOSS": "lots"}.get, lambda: [LINK_AD], None, NOW))
    assert "LARK_MAX_LOSS" in bad["LarkLinksError"] and bad["LarkMaxInputBytes_FNAL"] == EXPECTED_LIMIT["slow"]


def test_fresh_links_are_kept_despite_a_bad_knob_and_only_for_their_own_site(tmp_path: Path) -> None:
    cache = tmp_path / "lark-links.json"
    bad = parsed(run("UNL", {"LARK_MAX_LOSS": "lots"}.get, lambda: [LINK_AD], cache, NOW))
    assert "LARK_MAX_LOSS" in bad["LarkLinksError"]
    down = parsed(run("UNL", {}.get, collector_down, cache, NOW + 60))  # the typo's run kept its links
    assert down["LarkMaxInputBytes_FNAL"] == EXPECTED_LIMIT["slow"] and down["LarkLinksUpdatedAt"] == NOW
    moved = parsed(run("KIT", {}.get, collector_down, cache, NOW + 120))  # LARK_SITE changed meanwhile
    assert "LarkMaxInputBytes_FNAL" not in moved and moved["LarkMaxInputBytes_KIT"] == NO_LIMIT


def test_the_fail_closed_answer_uses_the_nodes_small_input_limit() -> None:
    out = parsed(error_output("lark-links failed", BreakerKnobs(small_input_bytes=5 * GB), "UNL"))
    assert out["LarkUnknownLinkMaxInputBytes"] == 5 * GB and out["LarkLinksError"] == "lark-links failed"


# ---------------------------------------------------------------- the drop-in, expanded by HTCondor


def expanded(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "condor_config"
    config.write_text(f"LOCAL_DIR = {tmp_path}\nLARK_BIN = /opt/lark/bin\nSTART = True\n"
                      f"include : {REPO / 'condor_config.d' / '70-lark-matchmaking.conf'}\nLARK_SITE = UNL\n")
    names = ("START", "LARK_PRE_JOB_RANK", "STARTD_CRON_JOBLIST", *CRON_KNOBS)
    code = f"import htcondor2, json; print(json.dumps({{k: htcondor2.param.get(k) for k in {names!r}}}))"
    out = subprocess.run([sys.executable, "-c", code], env={"CONDOR_CONFIG": str(config)}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def exprs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return expanded(tmp_path_factory.mktemp("cm"))


def slot(links: dict[str, dict[str, object]]) -> classad2.ClassAd:
    return classad2.parseOne(cron_output("UNL", links, KNOBS, NOW).replace("- update:true", ""),
                             classad2.ParserType.Old)


# the check the submit transform compiles into a 10 GB job from FNAL (tests/pool runs the real transform)
FNAL_CHECK = "(TARGET.LarkMaxInputBytes_FNAL ?: TARGET.LarkUnknownLinkMaxInputBytes ?: 1.0e300) >= {size}"


def passes(slot_ad: classad2.ClassAd, size: int = 10 * GB) -> bool:
    return classad2.ExprTree(FNAL_CHECK.format(size=size)).eval(classad2.ClassAd(), slot_ad) is True


def test_the_compiled_check_reads_the_judged_limit(exprs: dict[str, str]) -> None:
    assert "Lark" not in exprs["START"]  # the breaker is the job's: START stays the admin's
    assert "LARKLINKS" in exprs["STARTD_CRON_JOBLIST"]
    assert passes(slot({"FNAL": GOOD}))
    assert not passes(slot({"FNAL": LINKS["slow"]}))
    assert passes(slot({"FNAL": LINKS["slow"]}), size=2 * GB)
    assert not passes(slot({"FNAL": LINKS["stale"]}), size=2 * GB)
    assert passes(slot({"CERN": GOOD}))  # unknown link, policy allow
    deny = classad2.parseOne(cron_output("UNL", {"CERN": GOOD}, BreakerKnobs(unknown_link_allowed=False), NOW)
                             .replace("- update:true", ""), classad2.ParserType.Old)
    assert not passes(deny) and passes(deny, size=GIB)


def test_the_drop_ins_knobs_are_the_built_in_defaults(exprs: dict[str, str]) -> None:
    """BreakerKnobs' defaults are what a node without the drop-in (or a fail-closed run) uses: they
    must be what 70-lark-matchmaking.conf ships."""
    assert all(exprs[knob] is not None for knob in CRON_KNOBS), exprs
    assert breaker_knobs(exprs.get) == BreakerKnobs()


def test_pre_job_rank_prefers_the_better_link(exprs: dict[str, str]) -> None:
    rank = classad2.ExprTree(exprs["LARK_PRE_JOB_RANK"])
    job = classad2.ClassAd({"LarkLinkRank": classad2.ExprTree("TARGET.LarkMaxInputBytes_FNAL ?: 0")})
    good, slow, stale, unknown = (rank.eval(slot(links), job) for links in (
        {"FNAL": GOOD}, {"FNAL": LINKS["slow"]}, {"FNAL": LINKS["stale"]}, {"CERN": GOOD}))
    assert good > slow > stale > unknown == 0
    local = classad2.ClassAd({"LarkLinkRank": classad2.ExprTree("TARGET.LarkMaxInputBytes_UNL ?: 0")})
    assert rank.eval(slot({"FNAL": GOOD}), local) == NO_LIMIT > good
