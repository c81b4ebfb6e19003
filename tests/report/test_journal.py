"""``lark report --journal``: final counters that missed the job ad come from the node's journal."""

from __future__ import annotations

import json
from pathlib import Path

from lark import journal
from lark.report import cli

from .conftest import T0, lark_job, make_ad, write_json

GB = 1_000_000_000


def entry(cluster: int, bytes_in: int, bytes_out: int, owner: str = "alice", **classes: int) -> journal.JournalEntry:
    attrs: dict[str, object] = {"LarkBytesIn": bytes_in, "LarkBytesOut": bytes_out, "LarkPacketsIn": 1,
                                "LarkPacketsOut": 1, **classes}
    return journal.JournalEntry(job_id=f"{cluster}.0", global_job_id=f"submit.lark.test#{cluster}.0#{T0 - 10}",
                                owner_uid=2001, owner=owner, token=f"t{cluster:05d}", reason="holder-gone",
                                in_job_ad=False, attributes=attrs)


def test_journal_completes_jobs_whose_ad_missed_the_final_counters(tmp_path: Path, capsys) -> None:
    ads = [
        lark_job(1, bytes_in=1 * GB, bytes_out=0),  # history has the last periodic value only
        lark_job(2, bytes_in=5 * GB, bytes_out=0),  # history already final (more than the journal)
        make_ad({"ClusterId": 3, "ProcId": 0, "Owner": "bob", "JobCurrentStartDate": T0, "CompletionDate": T0 + 9,
                 "GlobalJobId": f"submit.lark.test#3.0#{T0 - 10}", "LarkNetworkType": "nat"}),  # no counters
        lark_job(4, bytes_in=2 * GB, bytes_out=0),  # no journal entry of its own owner
    ]
    history = write_json(tmp_path / "h.json", ads)
    path = tmp_path / "accounting.jsonl"
    journal.append(path, entry(1, 3 * GB, 1 * GB, LarkBytesInCampus=2 * GB, LarkBytesOutCampus=0))
    journal.append(path, entry(2, 4 * GB, 0))
    journal.append(path, entry(3, 0, 7 * GB, owner="bob"))
    # mallory is not job 4's owner alice: a user who edited the job id in the job ad they own cannot
    # credit figures to another user's job (nor replace alice's own entry, had she one)
    journal.append(path, entry(4, 50 * GB, 0, owner="mallory"))
    with path.open("a") as fh:
        fh.write('{"job_id": "9.0", "LarkBytesIn": \n')  # a line cut short by a crash

    code = cli.main(["--no-progress", "--history-json", str(history), "--journal", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["inputs"]["journal"] == {"sources": [str(path)], "entries": 4, "damaged_lines": 1,
                                           "jobs_completed_from_journal": 2, "entries_of_another_owner": 1}
    totals = report["accounting"]["totals"]
    # job 1: 3 + 1 GB from the journal; job 2: 5 GB kept; job 3: 7 GB from the journal; job 4: 2 GB
    assert totals["bytes_in"] == 3 * GB + 5 * GB + 0 + 2 * GB
    assert totals["bytes_out"] == 1 * GB + 0 + 7 * GB + 0


def test_journal_needs_a_history_input(tmp_path: Path, capsys) -> None:
    path = tmp_path / "accounting.jsonl"
    journal.append(path, entry(1, 1, 1))
    assert cli.main(["--no-progress", "--journal", str(path)]) == 2
    assert "--journal completes the accounting of jobs read from a history" in capsys.readouterr().err


def test_a_journal_that_does_not_exist_is_an_error(tmp_path: Path, capsys) -> None:
    history = write_json(tmp_path / "h.json", [lark_job(1)])
    assert cli.main(["--no-progress", "--history-json", str(history), "--journal", str(tmp_path / "no")]) == 2
    assert "no such journal file" in capsys.readouterr().err
