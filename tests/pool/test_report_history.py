"""`lark report` reads what a real pool wrote: its history file and `condor_history -json` output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lark.report.history import HistoryStats, read_history_file, read_history_json
from tests.pool.larkpool import OFFCAMPUS_ADDR, LarkPool

pytestmark = pytest.mark.pool
LARK = str(Path(sys.executable).parent / "lark")


@pytest.fixture(scope="module")
def finished_job(lark_pool: LarkPool) -> tuple[int, dict[str, object]]:
    sink = lark_pool.sink(OFFCAMPUS_ADDR)
    cluster = lark_pool.submit_job(f"{OFFCAMPUS_ADDR} {sink.port} 750000 0")
    lark_pool.pool.wait(cluster, timeout=120)
    ad = lark_pool.pool.history(cluster, ["LarkBytesIn", "LarkBytesOut", "LarkBytesOutOffcampus"])[0]
    return cluster, ad


def _mine(records: list, cluster: int) -> object:  # noqa: ANN401
    found = [r for r in records if r.job.endswith(f"#{cluster}.0") or r.job == f"{cluster}.0"]
    assert len(found) == 1, [r.job for r in records]
    return found[0]


def test_reads_the_real_history_file(lark_pool: LarkPool, finished_job: tuple[int, dict[str, object]]) -> None:
    cluster, ad = finished_job
    stats = HistoryStats()
    records = list(read_history_file(lark_pool.pool.root / "var/spool/condor/history", stats))
    assert stats.malformed == 0
    record = _mine(records, cluster)
    assert record.counters == "lark"
    assert (record.bytes_in, record.bytes_out) == (ad["LarkBytesIn"], ad["LarkBytesOut"])
    assert dict((name.lower(), out) for name, _, out in record.classes)["offcampus"] == ad["LarkBytesOutOffcampus"]
    assert record.user.startswith("larkuser")


def test_reads_condor_history_json_and_reports_it(lark_pool: LarkPool, finished_job: tuple[int, dict[str, object]],
                                                  tmp_path: Path) -> None:
    cluster, ad = finished_job
    out = lark_pool.pool.run(["condor_history", "-json"]).stdout
    path = tmp_path / "history.json"
    path.write_text(out)
    stats = HistoryStats()
    record = _mine(list(read_history_json(path, stats)), cluster)
    assert (record.bytes_in, record.bytes_out) == (ad["LarkBytesIn"], ad["LarkBytesOut"])
    report = subprocess.run([LARK, "report", "--history-json", str(path), "--json"], capture_output=True,
                            text=True, check=True)
    data = json.loads(report.stdout)
    # the report's row for larkuser adds up what the history says of larkuser's jobs, summed here
    # independently from condor_history's own JSON
    ads = [ad for ad in json.loads(out) if ad.get("Owner") == "larkuser"]
    want_in = sum(int(ad["LarkBytesIn"]) for ad in ads if isinstance(ad.get("LarkBytesIn"), int))
    want_out = sum(int(ad["LarkBytesOut"]) for ad in ads if isinstance(ad.get("LarkBytesOut"), int))
    [row] = [r for r in data["accounting"]["by_user"] if r["user"].partition("@")[0] == "larkuser"]
    assert (row["bytes_in"], row["bytes_out"]) == (want_in, want_out), (row, want_in, want_out)
    assert row["jobs"] == len(ads)
