"""Accounting from the execute nodes' journals, for jobs whose final counters missed the job ad.

The broker pushes a job's final counters into its ad, and also appends them to the node's
accounting journal (:mod:`lark.journal`). When the push failed (the job's wrapper was killed, or
the job ended while the broker was away), ``condor_history`` holds the last periodic value or
nothing; ``lark report --journal FILE`` then takes the journal's final figures for that job.
A journal entry replaces the history's counters only when it counts more bytes: counters only
grow, so the larger figure is the later one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lark import journal
from lark.report.errors import InputError
from lark.report.history import HistoryJob

IN_PREFIX = "LarkBytesIn"
OUT_PREFIX = "LarkBytesOut"


@dataclass
class JournalFigures:
    bytes_in: int
    bytes_out: int
    classes: tuple[tuple[str, int, int], ...]
    owner: str | None = None  # the account that ran the job on the execute node

    @property
    def total(self) -> int:
        return self.bytes_in + self.bytes_out


@dataclass
class JournalStats:
    sources: list[str]
    entries: int = 0
    skipped: int = 0  # damaged lines
    applied: int = 0  # jobs whose counters came from a journal
    foreign: int = 0  # entries naming a job of another owner (ignored)

    def as_dict(self) -> dict[str, object]:
        return {"sources": self.sources, "entries": self.entries, "damaged_lines": self.skipped,
                "jobs_completed_from_journal": self.applied, "entries_of_another_owner": self.foreign}


def job_key(job_id: str, global_job_id: object) -> str:
    """The report's job name: ``schedd#Cluster.Proc`` when the GlobalJobId names the schedd."""
    if isinstance(global_job_id, str) and "#" in global_job_id:
        return f"{global_job_id.partition('#')[0]}#{job_id}"
    return job_id


def figures(entry: Mapping[str, object]) -> JournalFigures | None:
    """The counters of one journal entry (None when it has none, e.g. a ``none``-mode job)."""
    def count(name: str) -> int | None:
        value = entry.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    b_in, b_out = count(IN_PREFIX), count(OUT_PREFIX)
    if b_in is None and b_out is None:
        return None
    per_class: dict[str, list[int]] = {}
    for name in entry:
        for prefix, slot in ((IN_PREFIX, 0), (OUT_PREFIX, 1)):
            suffix = name[len(prefix):]
            if name.startswith(prefix) and suffix and suffix[0].isupper() and (value := count(name)) is not None:
                per_class.setdefault(suffix, [0, 0])[slot] = value
    classes = tuple((name, v[0], v[1]) for name, v in sorted(per_class.items()))
    owner = entry.get("owner")
    return JournalFigures(b_in or 0, b_out or 0, classes, owner if isinstance(owner, str) else None)


def load(paths: Iterable[str | Path]) -> tuple[dict[str, list[JournalFigures]], JournalStats]:
    """Final figures per job from every journal (the last entry of a job wins)."""
    stats = JournalStats([str(p) for p in paths])
    found: dict[str, list[JournalFigures]] = {}
    for path in stats.sources:
        if not Path(path).is_file():
            raise InputError(path, "no such journal file")
        read = journal.read(Path(path))
        stats.entries += len(read.entries)
        stats.skipped += read.skipped
        for job_id, entry in journal.latest_by_job(read.entries):
            got = figures(entry)
            if got is not None and entry.get("final") is True:
                found.setdefault(job_key(job_id, entry.get("global_job_id")), []).append(got)
    return found, stats


def complete(jobs: Iterable[HistoryJob], found: Mapping[str, list[JournalFigures]], stats: JournalStats
             ) -> Iterator[HistoryJob]:
    """``jobs`` with journal figures where the history has fewer bytes (or none).

    Only for the job's own owner: the job id in an entry comes from a file the job's user can edit,
    the owner from the broker's socket, so a user cannot credit figures to someone else's job.
    """
    for job in jobs:
        candidates = found.get(job.job, [])
        owner = job.user.partition("@")[0]
        mine = [c for c in candidates if c.owner == owner]  # an unknown owner is no match
        stats.foreign += len(candidates) - len(mine)
        got = mine[-1] if mine else None
        if got is not None and (job.bytes_total is None or got.total > job.bytes_total):
            stats.applied += 1
            job = job._replace(bytes_in=got.bytes_in, bytes_out=got.bytes_out, counters="lark",
                               classes=got.classes or job.classes)
        yield job
