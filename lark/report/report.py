"""Putting a report together: read the inputs (the I/O edge), feed the pure analyses, return data.

:func:`produce` is what ``lark report`` runs; the readers it uses are in history.py and gridftp.py, the
analyses in accounting.py and transfers.py, and the renderers in render.py and plots.py.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lark.report.accounting import HistoryAccumulator
from lark.report.gridftp import LineStats, iter_gridftp
from lark.report.history import (
    HistoryJob,
    HistoryStats,
    read_history_file,
    read_history_json,
    read_schedd_history,
)
from lark.report.inputs import open_binary
from lark.report.settings import ReportConfig
from lark.report.transfers import TransferAnalysis, TransferTable, analyze_transfers

FORMAT_VERSION = 2  # 2: accounting.series per grouping and class, transfers.utilisation, LastRemoteHost


@dataclass(frozen=True)
class ScheddQuery:
    """A live-schedd source: which schedd, which jobs."""

    pool: str | None = None
    name: str | None = None
    constraint: str | None = None
    since: int | str | None = None
    match: int = -1
    classes: tuple[str, ...] = ()
    window: float | None = 86400.0


@dataclass
class Inputs:
    history_files: Sequence[str | Path] = ()
    history_json: Sequence[str | Path] = ()
    schedd: ScheddQuery | None = None
    gridftp: Sequence[str | Path] = ()
    journals: Sequence[str | Path] = ()  # execute nodes' accounting journals (final counters)


@dataclass
class ReportData:
    """The report (plain data, what --json prints) and the per-item columns the plots draw."""

    report: dict[str, Any]
    job_rates: Sequence[float] = ()
    transfers: TransferAnalysis | None = None


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _jobs(inputs: Inputs, stats: HistoryStats, start: float | None, until: float | None,
          progress: Any) -> Iterator[HistoryJob]:
    for path in inputs.history_files:
        yield from read_history_file(path, stats, start, until, progress)
    for path in inputs.history_json:
        yield from read_history_json(path, stats, start, until, progress)
    if inputs.schedd is not None:
        q = inputs.schedd
        from lark.report.history import locate_schedd

        schedd = locate_schedd(q.pool, q.name)
        if progress is not None:
            progress.start(f"schedd {q.name or 'local'}")
        for n, job in enumerate(read_schedd_history(schedd, q.constraint, q.since, q.match, start, until, q.classes,
                                                    stats, q.window), 1):
            if progress is not None and not n & 0x3FF:
                progress.tick(1024)
            yield job


def accumulate_jobs(jobs: Iterable[HistoryJob], config: ReportConfig,
                    sink: Callable[[HistoryJob], None] | None = None) -> HistoryAccumulator:
    acc = HistoryAccumulator(config)
    for job in jobs:
        acc.add(job)
        if sink is not None:
            sink(job)
    return acc


def load_transfers(paths: Iterable[str | Path], stats: LineStats, start: float | None, until: float | None,
                   progress: Any = None) -> TransferTable:
    table = TransferTable()
    for path in paths:
        with open_binary(path, progress) as (stream, label):
            for t in iter_gridftp(stream, label, stats, start, until, progress):
                table.add(t.start, t.end, t.nbytes, t.user, t.server, t.remote, t.kind)
    return table


def produce(inputs: Inputs, config: ReportConfig, start: float | None = None, until: float | None = None,
            progress: Any = None, job_sink: Callable[[HistoryJob], None] | None = None) -> ReportData:
    """Read every input once and build the report."""
    report: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "generated": iso(_dt.datetime.now(_dt.UTC).timestamp()),
        "period": {"from": iso(start), "until": iso(until)},
        "config": config.as_dict(),
        "inputs": {},
    }
    data = ReportData(report)
    if inputs.history_files or inputs.history_json or inputs.schedd is not None:
        hstats = HistoryStats()
        jobs = _jobs(inputs, hstats, start, until, progress)
        jstats = None
        if inputs.journals:
            from lark.report import journal

            found, jstats = journal.load(inputs.journals)
            jobs = journal.complete(jobs, found, jstats)
        acc = accumulate_jobs(jobs, config, job_sink)
        if progress is not None:
            progress.finish()
        sources = [str(p) for p in (*inputs.history_files, *inputs.history_json)]
        if inputs.schedd is not None:
            sources.append(f"schedd:{inputs.schedd.name or 'local'}")
        report["inputs"]["history"] = {"sources": sources, **hstats.as_dict()}
        if jstats is not None:
            report["inputs"]["journal"] = jstats.as_dict()
        report["accounting"] = acc.result()
        data.job_rates = acc.job_rates
    if inputs.gridftp:
        lstats = LineStats()
        table = load_transfers(inputs.gridftp, lstats, start, until, progress)
        if progress is not None:
            progress.finish()
        report["inputs"]["gridftp"] = {"sources": [str(p) for p in inputs.gridftp], **lstats.as_dict()}
        analysis = analyze_transfers(table, config.session_gap, config.circuit_min_bytes, config.circuit_min_seconds,
                                     config.circuit_rate_basis, config.top)
        del table
        report["transfers"] = analysis.summary
        data.transfers = analysis
    return data
