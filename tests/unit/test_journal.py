"""The accounting journal on disk: appends survive a torn line, and entries are kept per job and owner."""

from __future__ import annotations

from pathlib import Path

from lark import journal


def entry(job: str, gjid: str | None, uid: int, b_in: int) -> journal.JournalEntry:
    return journal.JournalEntry(job_id=job, global_job_id=gjid, owner_uid=uid, token="t00001", reason="finalize",
                                in_job_ad=True, attributes={"LarkBytesIn": b_in, "LarkBytesOut": 0}, owner=f"u{uid}")


def test_a_line_cut_short_by_a_crash_does_not_swallow_the_next_entry(tmp_path: Path) -> None:
    path = tmp_path / "accounting.jsonl"
    journal.append(path, entry("1.0", None, 1, 10))
    with path.open("a") as fh:
        fh.write('{"job_id": "2.0", "LarkBy')  # the broker died mid-write
    journal.append(path, entry("3.0", None, 1, 30))
    read = journal.read(path)
    assert [e["job_id"] for e in read.entries] == ["1.0", "3.0"]
    assert read.skipped == 1


def test_two_schedds_jobs_of_the_same_number_and_a_forged_id_stay_apart(tmp_path: Path) -> None:
    path = tmp_path / "accounting.jsonl"
    journal.append(path, entry("5.0", "a.example#5.0#100", 1, 1))
    journal.append(path, entry("5.0", "b.example#5.0#200", 2, 2))
    journal.append(path, entry("5.0", "a.example#5.0#100", 3, 99))  # uid 3 claims a's job 5.0
    journal.append(path, entry("5.0", "a.example#5.0#100", 1, 11))  # a's job, a later run on this node
    kept = sorted((e["global_job_id"], e["owner_uid"], e["LarkBytesIn"])
                  for _, e in journal.latest_by_job(journal.read(path).entries))
    assert kept == [("a.example#5.0#100", 1, 11), ("a.example#5.0#100", 3, 99), ("b.example#5.0#200", 2, 2)]
