"""``lark report``: argument parsing and output; the work is in lark.report.report and friends.

``add_parser(subparsers)`` adds the ``report`` sub-command to the ``lark`` admin CLI (which dispatches
with ``args.func(args)``); ``python -m lark.report`` runs the same command standalone.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import csv
import datetime as _dt
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from lark import extra_hint
from lark.errors import LarkError
from lark.report.errors import ReportError
from lark.report.history import HISTORY_ATTRIBUTES, HistoryJob, class_attributes
from lark.report.progress import Progress, wanted
from lark.report.settings import RATE_BASES, ReportConfig, apply, load_report_config

# The analyses (numpy) and renderers are imported in _run(): `lark` builds this sub-parser for every
# command, and the admin CLI should not pay numpy's import time for `lark list`.

DESCRIPTION = "Network accounting and transfer analysis from condor_history and GridFTP transfer logs."
EPILOG = """examples:
  lark report --month last --history /var/lib/condor/spool/history --charge default=0.01 --charge wan=0.05
  condor_history -json -attributes $(lark report --print-attributes) | lark report --history-json - --csv
  lark report --schedd --from 2026-10-01 --until 2026-11-01 --plot /tmp/oct
  lark report --gridftp /var/log/gridftp-transfer.log* --gap 60 --circuit-min-mb 100 --json
Settings also come from LARK_REPORT_* knobs (see docs/report.md)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("inputs (any combination; '-' reads stdin; .gz/.bz2/.xz are read transparently)")
    src.add_argument("--history", action="append", default=[], metavar="FILE",
                     help="schedd history file (banner format) or condor_history -l output (repeatable)")
    src.add_argument("--history-json", action="append", default=[], metavar="FILE",
                     help="condor_history -json output (repeatable)")
    src.add_argument("--schedd", nargs="?", const="", default=None, metavar="NAME",
                     help="query a schedd's history through htcondor2 (default: the local schedd)")
    src.add_argument("--pool", metavar="HOST[:PORT]", help="collector used to locate --schedd NAME")
    src.add_argument("--constraint", metavar="EXPR", help="ClassAd constraint for --schedd")
    src.add_argument("--since", metavar="JOBID|EXPR",
                     help="--schedd: stop at this cluster, cluster.proc, or when EXPR becomes true")
    src.add_argument("--match", type=int, default=-1, metavar="N", help="--schedd: at most N jobs")
    src.add_argument("--classes", default="", metavar="A,B",
                     help="traffic classes to project from a schedd (found automatically in recent jobs)")
    src.add_argument("--journal", action="append", default=[], metavar="FILE",
                     help="an execute node's accounting journal (LARK_ACCOUNTING_JOURNAL): final counters of "
                          "jobs whose job ad missed them (needs a history input)")
    src.add_argument("--gridftp", action="append", default=[], metavar="FILE",
                     help="GridFTP server transfer log (log_transfer file or main log) (repeatable)")
    when = p.add_argument_group("period (UTC; jobs by CompletionDate, transfers by end time)")
    when.add_argument("--month", metavar="YYYY-MM|last|this", help="one calendar month")
    when.add_argument("--from", dest="start", metavar="WHEN", help="YYYY-MM-DD[THH:MM[:SS]] or epoch seconds")
    when.add_argument("--until", metavar="WHEN", help="end of the period (excluded)")
    opt = p.add_argument_group("analysis (override LARK_REPORT_* knobs and --report-config)")
    opt.add_argument("--report-config", type=Path, metavar="YAML", help="settings file (see docs/report.md)")
    opt.add_argument("--charge", action="append", default=[], metavar="CLASS[:in|:out]=RATE",
                     help="price per GB (10^9 bytes) of a traffic class; 'default' prices the rest (repeatable)")
    opt.add_argument("--currency", help="label printed with charges")
    opt.add_argument("--gap", type=float, metavar="SECONDS", help="session gap (default 60)")
    opt.add_argument("--circuit-min-mb", type=float, metavar="MB", help="smallest session considered (default 100)")
    opt.add_argument("--circuit-min-minutes", type=float, metavar="MIN",
                     help="duration above which a session suits a circuit (default 10)")
    opt.add_argument("--circuit-rate", choices=RATE_BASES, help="Q3 of which throughput (default transfers)")
    opt.add_argument("--top", type=int, metavar="N", help="rows per table (default 10)")
    out = p.add_argument_group("output")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument("--csv", dest="fmt", action="store_const", const="csv", help="long-form CSV")
    fmt.add_argument("--json", dest="fmt", action="store_const", const="json", help="JSON")
    out.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the report here (default stdout)")
    out.add_argument("--plot", type=Path, metavar="DIR", help="write PNG figures and index.html into DIR")
    out.add_argument("--jobs-csv", type=Path, metavar="FILE", help="also write one CSV row per job (streamed)")
    prog = out.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress on stderr (default: only when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    out.add_argument("--print-attributes", action="store_true",
                     help="print the attribute list for condor_history -attributes and exit")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` to the ``lark`` CLI's sub-parsers; the lark CLI then calls ``args.func(args)``."""
    p = subparsers.add_parser("report", help="accounting and transfer-session report", description=DESCRIPTION,
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    """Standalone parser for ``python -m lark.report`` (with lark's --config/-D for the knobs)."""
    p = argparse.ArgumentParser(prog="python -m lark.report", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", type=Path, metavar="PATH",
                   help="HTCondor config file or config.d directory holding LARK_REPORT_* knobs (repeatable)")
    p.add_argument("-D", dest="overrides", action="append", default=[], metavar="KNOB=VALUE",
                   help="override one LARK_REPORT_* knob")
    add_arguments(p)
    return p


# ------------------------------------------------------------------------------------------------


def parse_when(text: str, what: str) -> float:
    """``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS]`` (UTC unless an offset is given) or epoch seconds."""
    t = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", t) and len(t) != 8:
        return float(t)
    try:
        d = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"{what}: expected YYYY-MM-DD[THH:MM[:SS]] or epoch seconds, got {text!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)
    return d.timestamp()


def month_period(text: str, now: _dt.datetime | None = None) -> tuple[float, float]:
    """``2026-10`` / ``last`` / ``this`` -> [first instant of the month, first instant of the next)."""
    now = now or _dt.datetime.now(_dt.UTC)
    if text == "this":
        y, m = now.year, now.month
    elif text == "last":
        y, m = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    else:
        mt = re.fullmatch(r"(\d{4})-(\d{1,2})", text.strip())
        if not mt or not 1 <= int(mt.group(2)) <= 12:
            raise ReportError(f"--month: expected YYYY-MM, last or this, got {text!r}")
        y, m = int(mt.group(1)), int(mt.group(2))
    ny, nm = (y, m + 1) if m < 12 else (y + 1, 1)
    return float(calendar.timegm((y, m, 1, 0, 0, 0))), float(calendar.timegm((ny, nm, 1, 0, 0, 0)))


def parse_since(text: str | None) -> int | str | None:
    if text is None:
        return None
    t = text.strip()
    if t.isdigit():
        return int(t)  # a cluster id (the bindings mis-handle a plain-digit string)
    return t


def settings_from_args(args: argparse.Namespace) -> ReportConfig:
    config = load_report_config(getattr(args, "config", None), getattr(args, "overrides", None) or (),
                                args.report_config)
    cli: dict[str, Any] = {}
    if args.charge:
        cli["CHARGE_PER_GB"] = ",".join(args.charge)
    for attr, knob in (("currency", "CURRENCY"), ("gap", "SESSION_GAP"), ("circuit_min_mb", "CIRCUIT_MIN_MB"),
                       ("circuit_min_minutes", "CIRCUIT_MIN_MINUTES"), ("circuit_rate", "CIRCUIT_RATE"),
                       ("top", "TOP")):
        value = getattr(args, attr)
        if value is not None:
            cli[knob] = value
    if cli:
        config = apply(config, cli, "command line")
    return config


def period_from_args(args: argparse.Namespace) -> tuple[float | None, float | None]:
    start = until = None
    if args.month:
        if args.start or args.until:
            raise ReportError("--month cannot be combined with --from/--until")
        start, until = month_period(args.month)
    if args.start:
        start = parse_when(args.start, "--from")
    if args.until:
        until = parse_when(args.until, "--until")
    if start is not None and until is not None and until <= start:
        raise ReportError("--until must be after --from")
    return start, until


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    try:
        with open(path, "w", encoding="utf-8", newline="") as f:
            yield f
    except OSError as err:
        raise ReportError(f"{path}: cannot write: {err.strerror}") from err


class JobCsvSink:
    """Writes one row per job as records stream by (--jobs-csv), so the full list never sits in memory."""

    def __init__(self, out: TextIO, config: ReportConfig) -> None:
        from lark.report.accounting import job_charge
        from lark.report.render import JOB_CSV_FIELDS

        self.charge = job_charge
        self.fields = JOB_CSV_FIELDS
        self.writer = csv.writer(out, lineterminator="\n")
        self.writer.writerow(JOB_CSV_FIELDS)
        self.config = config

    def __call__(self, job: HistoryJob) -> None:
        charge = self.charge(job, self.config)[0] if job.bytes_total is not None else 0.0
        row = [getattr(job, f, None) for f in self.fields[:-1]] + [charge]
        self.writer.writerow(["" if v is None else v for v in row])


def run(args: argparse.Namespace) -> int:
    """Run ``lark report`` with parsed arguments; returns the exit code (0 ok, 2 error).

    Malformed records never fail the report: they are counted and listed in it.
    """
    try:
        return _run(args)
    except LarkError as err:
        print(f"lark report: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `lark report | head`
        return 0


def _run(args: argparse.Namespace) -> int:
    try:
        import numpy  # noqa: F401 - the analyses are vectorised with numpy
    except ImportError as err:
        raise ReportError(f"lark report needs numpy: {extra_hint('report')}") from err
    from lark.report.render import render
    from lark.report.report import Inputs, ScheddQuery, produce

    classes = tuple(c for c in re.split(r"[,\s]+", args.classes or "") if c)
    if args.print_attributes:
        print(",".join(list(HISTORY_ATTRIBUTES) + class_attributes(classes)))
        return 0
    config = settings_from_args(args)
    start, until = period_from_args(args)
    schedd = None
    if args.schedd is not None:
        schedd = ScheddQuery(pool=args.pool, name=args.schedd or None, constraint=args.constraint,
                             since=parse_since(args.since), match=args.match, classes=classes)
    elif args.pool or args.constraint or args.since:
        raise ReportError("--pool, --constraint and --since apply to --schedd only "
                          "(for files, filter with condor_history -constraint)")
    inputs = Inputs(args.history, args.history_json, schedd, args.gridftp, args.journal)
    if inputs.journals and not (inputs.history_files or inputs.history_json or inputs.schedd):
        raise ReportError("--journal completes the accounting of jobs read from a history: give --history, "
                          "--history-json or --schedd too")
    if not (inputs.history_files or inputs.history_json or inputs.schedd or inputs.gridftp):
        raise ReportError("no input: give --history FILE, --history-json FILE, --schedd or --gridftp FILE")
    if sum(1 for p in (*inputs.history_files, *inputs.history_json, *inputs.gridftp) if str(p) == "-") > 1:
        raise ReportError("only one input can be stdin ('-')")
    progress = Progress(enabled=wanted(args.progress))
    sink_file = None
    try:
        sink = None
        if args.jobs_csv is not None:
            try:
                sink_file = open(args.jobs_csv, "w", encoding="utf-8", newline="")  # noqa: SIM115
            except OSError as err:
                raise ReportError(f"{args.jobs_csv}: cannot write: {err.strerror}") from err
            sink = JobCsvSink(sink_file, config)
        data = produce(inputs, config, start, until, progress, sink)
    finally:
        if sink_file is not None:
            sink_file.close()
    with _output(args.output) as out:
        out.write(render(data.report, args.fmt or "text"))
    if args.plot is not None:
        from lark.report.plots import write_plots

        for path in write_plots(data, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)
