"""The accounting journal: every job's final counters, kept on the execute node.

The job ad is where users read accounting, but it can only be reached while the job's starter
lives (chirp). A job whose wrapper was killed, or that ended while the broker was away, may be
gone from the node before its final counters could be pushed; its figures must not vanish with
it. So the broker appends one JSON line per finished job to ``LARK_ACCOUNTING_JOURNAL`` *before*
it tears the job's network down, whether or not the job ad could be updated, and ``lark report
--journal`` reads it beside ``condor_history``.

The job id in an entry comes from the job ad in the job's scratch directory, which the job's user
can edit; the owner comes from the socket, which it cannot. A reader that credits figures to a job
must therefore check that the job's owner is the entry's ``owner`` (``lark report`` does), so a
user can at most mislabel figures among their own jobs.

One line, appended with a single ``write`` on an ``O_APPEND`` descriptor and flushed with
``fsync``: concurrent writers never interleave within a line, and a crash loses at most the line
being written. A reader skips a damaged line (and says how many it skipped) instead of failing.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JournalEntry:
    job_id: str  # "Cluster.Proc"
    global_job_id: str | None
    owner_uid: int | None  # the wrapper's uid, from the socket: the job cannot choose it
    token: str
    reason: str  # how the job's network ended: "finalize" or "holder-gone"
    in_job_ad: bool  # the final values also reached the job ad
    attributes: Mapping[str, object]  # LarkBytesIn, LarkBytesOut, ... as in the job ad
    time: float = 0.0
    final: bool = True
    owner: str | None = None  # the uid's account name; looked up when not given

    def to_line(self) -> str:
        data = {"time": round(self.time or time.time(), 3), "job_id": self.job_id,
                "global_job_id": self.global_job_id, "owner_uid": self.owner_uid,
                "owner": self.owner or user_name(self.owner_uid), "token": self.token,
                "final": self.final, "reason": self.reason, "in_job_ad": self.in_job_ad, **self.attributes}
        return json.dumps(data, sort_keys=True) + "\n"


def user_name(uid: int | None) -> str | None:
    """The account name of ``uid`` on this node (what HTCondor calls the job's Owner)."""
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def append(path: Path, entry: JournalEntry) -> None:
    """Append one entry durably (root-only file: it names users' jobs)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    # no link: the knob may point into a directory someone else can write
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    try:
        line = entry.to_line().encode()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a line cut short by a crash stays on its own (and is skipped)
        while line:
            written = os.write(fd, line)
            line = line[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class JournalRead:
    entries: list[dict[str, object]]
    skipped: int  # damaged lines


def read(path: Path) -> JournalRead:
    """Every entry of the journal, oldest first; damaged lines are counted, not fatal."""
    entries: list[dict[str, object]] = []
    skipped = 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return JournalRead([], 0)
    for line in lines:
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(item, dict) and isinstance(item.get("job_id"), str):
            entries.append(item)
        else:
            skipped += 1
    return JournalRead(entries, skipped)


def latest_by_job(entries: list[dict[str, object]]) -> Iterator[tuple[str, dict[str, object]]]:
    """The last entry of each job, a job being its GlobalJobId (else Cluster.Proc) *and* its owner:
    two schedds' job 5.0 are two jobs, and an entry whose job id a user forged in the job ad they
    own cannot replace another user's entry."""
    last: dict[tuple[str, object], dict[str, object]] = {}
    for item in entries:
        job = item.get("global_job_id") or item["job_id"]
        last[(str(job), item.get("owner_uid"))] = item
    for item in last.values():
        yield str(item["job_id"]), item
