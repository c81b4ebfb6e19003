"""The node totals behind LarkNodeBytesIn/Out: kept across broker restarts, read by an unprivileged cron."""

from __future__ import annotations

import stat
from pathlib import Path

from lark import node_summary


def test_totals_survive_a_restart_and_add_the_running_jobs(tmp_path: Path) -> None:
    path = tmp_path / node_summary.NODE_SUMMARY_FILE
    ended = node_summary.load_ended(path)  # a new node
    assert ended == {"jobs": 0, "bytes_in": 0, "bytes_out": 0}
    ended = node_summary.add_ended(ended, 100, 1000)
    node_summary.write(path, ended, jobs=2, bytes_in=5, bytes_out=50)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the startd cron does not run as root
    # what a new broker starts from
    assert node_summary.load_ended(path) == {"jobs": 1, "bytes_in": 100, "bytes_out": 1000}
    attrs = node_summary.startd_attributes(path, now=path.stat().st_mtime + 7)
    assert attrs["LarkNodeBytesIn"] == 105 and attrs["LarkNodeBytesOut"] == 1050
    assert (attrs["LarkNodeJobsRunning"], attrs["LarkNodeJobsEnded"]) == (2, 1)
    assert 6 <= attrs["LarkNodeSummaryAge"] <= 8


def test_a_damaged_or_missing_summary_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / node_summary.NODE_SUMMARY_FILE
    assert "LarkNodeSummaryError" in node_summary.startd_attributes(path)
    path.write_text("{not json")
    assert "LarkNodeSummaryError" in node_summary.startd_attributes(path)
    assert node_summary.load_ended(path) == {"jobs": 0, "bytes_in": 0, "bytes_out": 0}
