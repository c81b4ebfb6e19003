"""The circuit breaker and rank from condor_config.d, expanded by HTCondor, evaluated by classad2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import classad2
import pytest

from lark.links.records import cron_output, links_into

REPO = Path(__file__).resolve().parents[2]
NOW = int(time.time())
GB = 10**9


def expanded(tmp_path: Path, extra: str = "") -> dict[str, str]:
    """The drop-in's expressions as HTCondor itself expands them (real macro expansion)."""
    config = tmp_path / "condor_config"
    config.write_text(f"LOCAL_DIR = {tmp_path}\nLARK_BIN = /opt/lark/bin\nSTART = True\n"
                      f"include : {REPO / 'condor_config.d' / '70-lark-matchmaking.conf'}\n"
                      f"LARK_SITE = UNL\n{extra}")
    code = ("import htcondor2, json; print(json.dumps({k: htcondor2.param[k] for k in "
            "('START', 'LarkInputTransferOK', 'LarkLinkRank', 'LARK_PRE_JOB_RANK', 'STARTD_ATTRS')}))")
    out = subprocess.run([sys.executable, "-c", code], env={"CONDOR_CONFIG": str(config)}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def slot(exprs: dict[str, str], links: dict[str, dict[str, object]]) -> classad2.ClassAd:
    text = cron_output("UNL", links, NOW).replace("- update:true", "")
    ad = classad2.parseOne(text, classad2.ParserType.Old)
    for name in ("LarkInputTransferOK", "LarkLinkRank"):
        ad[name] = classad2.ExprTree(exprs[name])
    ad["Start"] = classad2.ExprTree(exprs["START"])
    return ad


def job(size: int | None, source: str = "FNAL") -> classad2.ClassAd:
    ad = classad2.ClassAd({"LarkSourceSite": source})
    if size is not None:
        ad["LarkInputBytes"] = size
    return ad


def starts(slot_ad: classad2.ClassAd, job_ad: classad2.ClassAd) -> bool:
    return classad2.ExprTree("MY.Start").eval(slot_ad, job_ad) is True


GOOD = {"Mbps": 10000.0, "Loss": 0.0, "MeasuredAt": NOW - 600, "Quality": "good"}
LINKS = {
    "good": GOOD,
    "slow": {**GOOD, "Mbps": 5.0},                      # 10 GB takes 4.4 h > 1 h
    "lossy": {**GOOD, "Loss": 0.1},
    "stale": {**GOOD, "Quality": "stale"},
    "old": {**GOOD, "MeasuredAt": NOW - 3 * 86400},
    "zero": {**GOOD, "Mbps": 0.0},                      # division by zero: an error, never a pass
    "missing": None,
}
# job input -> link state -> starts?  (default knobs: small <= 1 GiB, 3600 s, loss 2 %, 1 day, unknown allow)
EXPECTED = {
    None:      {"good": True, "slow": True, "lossy": True, "stale": True, "old": True, "zero": True, "missing": True},
    10**6:     {"good": True, "slow": True, "lossy": True, "stale": True, "old": True, "zero": True, "missing": True},
    10 * GB:   {"good": True, "slow": False, "lossy": False, "stale": False, "old": False, "zero": False,
                "missing": True},
    1000 * GB: {"good": True, "slow": False, "lossy": False, "stale": False, "old": False, "zero": False,
                "missing": True},
    5000 * GB: {"good": False, "slow": False, "lossy": False, "stale": False, "old": False, "zero": False,
                "missing": True},
}


@pytest.fixture(scope="module")
def exprs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return expanded(tmp_path_factory.mktemp("cm"))


@pytest.mark.parametrize("size", list(EXPECTED))
@pytest.mark.parametrize("state", list(LINKS))
def test_breaker_matrix(exprs: dict[str, str], size: int | None, state: str) -> None:
    link = LINKS[state]
    ad = slot(exprs, {"FNAL": link} if link else {"CERN": GOOD})
    assert starts(ad, job(size)) is EXPECTED[size][state]


def test_local_data_always_passes_and_ranks_first(exprs: dict[str, str]) -> None:
    ad = slot(exprs, {"FNAL": LINKS["slow"]})
    assert starts(ad, job(1000 * GB, source="UNL"))
    local = classad2.ExprTree("MY.LarkLinkRank").eval(ad, job(1, source="UNL"))
    remote = classad2.ExprTree("MY.LarkLinkRank").eval(ad, job(1, source="FNAL"))
    unknown = classad2.ExprTree("MY.LarkLinkRank").eval(ad, job(1, source="Nowhere"))
    assert local > remote == 5.0 > unknown == 0


def test_unknown_link_policy_deny(tmp_path: Path) -> None:
    exprs = expanded(tmp_path, "LARK_UNKNOWN_LINK_POLICY = deny\n")
    ad = slot(exprs, {"CERN": GOOD})
    assert not starts(ad, job(10 * GB))
    assert starts(ad, job(10**6))  # small jobs still pass


def test_knobs_move_the_threshold(tmp_path: Path) -> None:
    exprs = expanded(tmp_path, "LARK_MAX_TRANSFER_SECONDS = 100000\n")
    assert starts(slot(exprs, {"FNAL": LINKS["slow"]}), job(10 * GB))  # 4.4 h < 27.7 h


def test_pre_job_rank_prefers_the_better_link(exprs: dict[str, str]) -> None:
    fast = slot(exprs, {"FNAL": GOOD})
    slow = slot(exprs, {"FNAL": LINKS["slow"]})
    rank = classad2.ExprTree(exprs["LARK_PRE_JOB_RANK"])
    assert rank.eval(fast, job(1)) > rank.eval(slow, job(1))
    assert "LarkInputTransferOK" in exprs["STARTD_ATTRS"]


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
    links = links_into("UNL", ads)
    assert links == {"FNAL": {"Mbps": 900.0, "Loss": 0.001, "MeasuredAt": 123, "Quality": "good"},
                     "Site-2": {"Mbps": 50.0, "Quality": "degraded"}}
    ad = classad2.parseOne(cron_output("UNL", links, NOW).replace("- update:true", ""), classad2.ParserType.Old)
    assert classad2.ExprTree('MY.LarkLinks[TARGET.S]["Mbps"]').eval(ad, classad2.ClassAd({"S": "Site-2"})) == 50.0
    assert ad["LarkLinksCount"] == 2
