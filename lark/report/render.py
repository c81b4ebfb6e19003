"""Renderers: human-readable tables (default), CSV (long form: section,key,metric,value) and JSON.

Units in the table: bytes with decimal prefixes (1 GB = 10^9 B, as charged), rates in Mbit/s (10^6
bit/s, what network engineers quote), durations as h/m/s. CSV and JSON carry raw numbers: bytes,
seconds, bytes per second, epoch seconds.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

Row = dict[str, Any]


# ------------------------------------------------------------------------------------------------
# Formatting helpers (pure)


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} EB"  # pragma: no cover - unreachable


def fmt_rate(bytes_per_second: float | None) -> str:
    if bytes_per_second is None or (isinstance(bytes_per_second, float) and math.isnan(bytes_per_second)):
        return "-"
    mbit = bytes_per_second * 8 / 1e6
    return f"{mbit / 1000:.2f} Gb/s" if mbit >= 1000 else f"{mbit:.1f} Mb/s"


def fmt_duration(seconds: float | None) -> str:
    """One format for every duration: the two largest of d, h, m, s (``4.2s``, ``42s``, ``5m03s``,
    ``2h07m``, ``29h19m`` is never written: ``1d05h``, and ``1234d05h`` for sums of wall time)."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"
    s = round(s)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_int(n: float | None) -> str:
    return "-" if n is None else f"{int(n):,}"


def fmt_share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def fmt_money(x: float | None, currency: str = "") -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}" + (f" {currency}" if currency else "")


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_corr(x: float | None) -> str:
    return "-" if x is None else f"{x:+.3f}"


Column = tuple[str, str, Callable[[Any], str]]  # header, row key, formatter


def table(rows: Sequence[Row], columns: Sequence[Column], limit: int | None = None) -> list[str]:
    """Aligned text table: first column left-aligned, others right-aligned."""
    shown = rows if limit is None else rows[:limit]
    cells = [[c[0] for c in columns]] + [[c[2](r.get(c[1])) for c in columns] for r in shown]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    out = []
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(columns))]
        out.append("  " + "  ".join(parts).rstrip())
        if n == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    if limit is not None and len(rows) > limit:
        out.append(f"  ... {len(rows) - limit} more (all rows are in --csv/--json)")
    return out


def _s(x: Any) -> str:
    return "-" if x is None else str(x)


# ------------------------------------------------------------------------------------------------
# Human report


def render_text(report: Row, out: TextIO) -> None:
    cfg = report.get("config", {})
    top = int(cfg.get("top", 10))
    cur = cfg.get("currency", "")
    money = (lambda x: fmt_money(x, "")) if cur else fmt_money
    period = report.get("period", {})
    w = out.write
    title = "Lark network report"
    if period.get("from") or period.get("until"):
        title += f" for {period.get('from') or '...'} .. {period.get('until') or '...'} (UTC, until excluded)"
    w(title + "\n" + "=" * len(title) + "\n\n")
    _inputs(report.get("inputs", {}), w)
    acct = report.get("accounting")
    if acct is not None:
        _accounting(acct, top, cur, money, w)
    xfer = report.get("transfers")
    if xfer is not None:
        _transfers(xfer, top, w)
    if acct is None and xfer is None:
        w("No input given: use --history, --history-json, --schedd or --gridftp.\n")


def _inputs(inputs: Row, w: Callable[[str], Any]) -> None:
    w("Inputs\n------\n")
    h = inputs.get("history")
    if h is not None:
        w(f"  history: {len(h['sources'])} source(s), {h['ads']:,} ads, {h['jobs']:,} jobs in the report")
        if h["outside_period"] or h["without_completion_date"]:
            w(f" ({h['outside_period']:,} outside the period, {h['without_completion_date']:,} without"
              " CompletionDate)")
        w("\n")
        nc = h["network_counters"]
        w(f"    network counters: Lark {nc['lark']:,}, docker NetworkInput/OutputMb {nc['docker']:,}, "
          f"none {nc['none']:,}\n")
        missing = {k: v for k, v in h["missing_attributes"].items() if v}
        if missing:
            w("    missing attributes (older or non-Lark jobs): "
              + ", ".join(f"{k} {v:,}" for k, v in missing.items()) + "\n")
        if h["invalid_attributes"]:
            w("    unusable values (not numbers): "
              + ", ".join(f"{k} {v:,}" for k, v in h["invalid_attributes"].items()) + "\n")
        _malformed(h["malformed"] + h["partially_parsed"], h["malformed_examples"], "ads", w)
    j = inputs.get("journal")
    if j is not None:
        w(f"  accounting journal: {len(j['sources'])} source(s), {j['entries']:,} entries, final counters taken "
          f"for {j['jobs_completed_from_journal']:,} job(s) whose job ad missed them")
        ignored = [f"{j['damaged_lines']:,} damaged lines skipped"] if j["damaged_lines"] else []
        if j["entries_of_another_owner"]:
            ignored.append(f"{j['entries_of_another_owner']:,} entries naming another owner's job ignored")
        w(f" ({'; '.join(ignored)})\n" if ignored else "\n")
    g = inputs.get("gridftp")
    if g is not None:
        w(f"  gridftp: {len(g['sources'])} source(s), {g['lines']:,} lines, {g['transfers']:,} transfers in the "
          f"report\n")
        skipped = [("listings", g["listings"]), ("failed (CODE != 226)", g["failed"]),
                   ("other events", g["other_events"]), ("not transfer lines", g["not_transfer_lines"]),
                   ("outside the period", g["outside_period"])]
        skipped = [(k, v) for k, v in skipped if v]
        if skipped:
            w("    left out: " + ", ".join(f"{k} {v:,}" for k, v in skipped) + "\n")
        notes = [("unpadded microseconds (pre-2009 servers)", g["unpadded_microseconds"]),
                 ("unknown remote DEST=[0.0.0.0]", g["unknown_remote"]),
                 ("zero duration (no throughput)", g["zero_duration"])]
        notes = [(k, v) for k, v in notes if v]
        if notes:
            w("    notes: " + ", ".join(f"{k} {v:,}" for k, v in notes) + "\n")
        _malformed(g["malformed"], g["malformed_examples"], "lines", w)
    w("\n")


def _malformed(count: int, examples: Sequence[Row], what: str, w: Callable[[str], Any]) -> None:
    if not count:
        return
    w(f"    malformed {what}: {count:,}\n")
    for e in examples[:10]:
        w(f"      {e['source']}:{e['line']}: {e['reason']}\n")
    if count > 10:
        w(f"      ... ({count - 10:,} more; the first {len(examples)} are in --json)\n")


def _accounting(a: Row, top: int, cur: str, money: Callable[[Any], str], w: Callable[[str], Any]) -> None:
    t = a["totals"]
    w("Accounting (job history)\n------------------------\n")
    w(f"  {t['jobs']:,} jobs ({t['jobs_with_counters']:,} with network counters): in {fmt_bytes(t['bytes_in'])}, "
      f"out {fmt_bytes(t['bytes_out'])}, charge {fmt_money(t['charge'], cur)}\n")
    w(f"  sandbox (BytesRecvd/BytesSent): in {fmt_bytes(t['sandbox_in'])}, out {fmt_bytes(t['sandbox_out'])}; "
      f"declared input {fmt_bytes(t['input_mb'] * 1e6)}\n\n")
    base: list[Column] = [("jobs", "jobs", fmt_int), ("in", "bytes_in", fmt_bytes), ("out", "bytes_out", fmt_bytes),
                          ("total", "bytes_total", fmt_bytes), ("sandbox in", "sandbox_in", fmt_bytes),
                          ("sandbox out", "sandbox_out", fmt_bytes), ("wall", "wall_seconds", fmt_duration),
                          (f"charge{' ' + cur if cur else ''}", "charge", money)]
    for key, title in (("user", "user"), ("group", "accounting group"), ("execute_site", "execute site"),
                       ("source_site", "source site (LarkSourceSite)"), ("network_type", "network type")):
        rows = a[f"by_{key}"]
        w(f"  By {title} ({len(rows):,})\n")
        for line in table(rows, [(key, key, _s), *base], top):
            w(line + "\n")
        w("\n")
    w("  By traffic class (charge per GB = 10^9 bytes)\n")
    for line in table(a["by_class"], [("class", "class", _s), ("jobs", "jobs", fmt_int),
                                      ("in", "bytes_in", fmt_bytes), ("out", "bytes_out", fmt_bytes),
                                      ("rate in", "rate_in", _rate_cell), ("rate out", "rate_out", _rate_cell),
                                      (f"charge{' ' + cur if cur else ''}", "charge", money)]):
        w(line + "\n")
    if a.get("inconsistent_class_counters"):
        w(f"  ({a['inconsistent_class_counters']:,} jobs had class counters above their totals; "
          "remainder taken as 0)\n")
    w(f"\n  Top {top} jobs by traffic\n")
    for line in table(a["top_jobs"], [("job", "job", _s), ("user", "user", _s), ("site", "execute_site", _s),
                                      ("source", "source_site", _s), ("in", "bytes_in", fmt_bytes),
                                      ("out", "bytes_out", fmt_bytes), ("charge", "charge", money),
                                      ("completed (UTC)", "end", fmt_time)]):
        w(line + "\n")
    d = a["distributions"]
    w("\n  Job distributions (jobs with counters)\n")
    _dist_table([("traffic per job", d["bytes"], fmt_bytes), ("run time", d["duration_seconds"], fmt_duration),
                 ("throughput", d["bytes_per_second"], fmt_rate)], w)
    w("\n")


def _rate_cell(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _dist_table(items: Sequence[tuple[str, Row, Callable[[Any], str]]], w: Callable[[str], Any]) -> None:
    rows = []
    for name, d, f in items:
        rows.append({"what": name, "count": fmt_int(d["count"]), **{k: f(d[k]) for k in
                                                                     ("min", "q1", "median", "mean", "q3", "max")}})
    cols: list[Column] = [("", "what", _s), ("count", "count", _s)] + \
        [(k, k, _s) for k in ("min", "q1", "median", "mean", "q3", "max")]
    for line in table(rows, cols):
        w(line + "\n")


def _transfers(x: Row, top: int, w: Callable[[str], Any]) -> None:
    w("Transfers (GridFTP logs)\n------------------------\n")
    w(f"  {x['transfers']:,} transfers, {fmt_bytes(x['bytes'])}, {x['sessions']['count']:,} sessions "
      f"(gap {x['sessions']['gap_seconds']:g} s)\n\n")
    for key, title, extra in (("user", "user", [("sessions", "sessions", fmt_int)]), ("server", "server (HOST)", []),
                              ("remote", "remote endpoint (DEST)", []), ("type", "type", [])):
        rows = x[f"by_{key}"]
        w(f"  By {title} ({len(rows):,})\n")
        cols: list[Column] = [(key, key, _s), ("transfers", "transfers", fmt_int), *extra,
                              ("bytes", "bytes", fmt_bytes)]
        for line in table(rows, cols, top):
            w(line + "\n")
        w("\n")
    d = x["distributions"]
    w("  Distributions\n")
    _dist_table([("transfer size", d["transfers"]["bytes"], fmt_bytes),
                 ("transfer duration", d["transfers"]["duration_seconds"], fmt_duration),
                 ("transfer throughput", d["transfers"]["bytes_per_second"], fmt_rate),
                 ("session size", d["sessions"]["bytes"], fmt_bytes),
                 ("session duration", d["sessions"]["duration_seconds"], fmt_duration),
                 ("session throughput", d["sessions"]["bytes_per_second"], fmt_rate),
                 ("transfers per session", d["sessions"]["transfers_per_session"], fmt_int)], w)
    w(f"\n  Top {top} sessions by size\n")
    for line in table(x["sessions"]["top"], [("user", "user", _s), ("server", "server", _s), ("remote", "remote", _s),
                                             ("start (UTC)", "start", fmt_time),
                                             ("duration", "duration_seconds", fmt_duration),
                                             ("bytes", "bytes", fmt_bytes), ("transfers", "transfers", fmt_int),
                                             ("throughput", "bytes_per_second", fmt_rate)]):
        w(line + "\n")
    c = x["circuit"]
    w("\n  Circuit suitability\n")
    w(f"    sessions of at least {fmt_bytes(c['min_bytes'])}: {c['eligible_sessions']:,} "
      f"({fmt_bytes(c['eligible_bytes'])})\n")
    w(f"    reference rate: 3rd quartile of {c['rate_basis']} throughput = {fmt_rate(c['rate_bytes_per_second'])}\n")
    w(f"    would last longer than {fmt_duration(c['min_seconds'])} at that rate: {c['suitable_sessions']:,} = "
      f"{fmt_share(c['share'])} of those sessions, {fmt_share(c['bytes_share'])} of their bytes\n")
    k = x["concurrency"]
    w("\n  Throughput vs concurrency (" + k["scope"] + ")\n")
    w(f"    transfers {k['transfers']:,}, mean concurrency {_num(k['mean'])}, correlation with throughput: "
      f"Pearson {fmt_corr(k['pearson'])}, Spearman {fmt_corr(k['spearman'])}\n")
    for line in table(k["buckets"], [("concurrency", "concurrency", _s), ("transfers", "transfers", fmt_int),
                                     ("q1", "q1", fmt_rate), ("median", "median", fmt_rate), ("q3", "q3", fmt_rate)]):
        w(line + "\n")
    w("\n")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# ------------------------------------------------------------------------------------------------
# CSV (long form) and JSON

_ID_FIELDS = {
    "transfers.sessions.top": ("user", "server", "remote", "start"),
    "accounting.series.by_user": ("user", "start", "class"),
    "accounting.series.by_group": ("group", "start", "class"),
    "accounting.series.by_execute_site": ("execute_site", "start", "class"),
    "accounting.series.by_class": ("class", "start"),
    "transfers.series": ("server", "hour"),
    "transfers.utilisation.rows": ("server", "start"),
    "inputs.history.malformed_examples": ("source", "line"),
    "inputs.gridftp.malformed_examples": ("source", "line"),
}


def _csv_value(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return int(v)
    return v


def csv_records(report: Row) -> Iterator[tuple[str, str, str, Any]]:
    """(section, key, metric, value) for every number and label in the report."""

    def walk(section: str, obj: Any) -> Iterator[tuple[str, str, str, Any]]:
        for name, value in obj.items():
            if isinstance(value, dict):
                yield from walk(f"{section}.{name}" if section else name, value)
            elif isinstance(value, list):
                sub = f"{section}.{name}" if section else name
                for i, item in enumerate(value):
                    if isinstance(item, dict):
                        ids = _ID_FIELDS.get(sub) or (next(iter(item)),)
                        key = "|".join(str(_csv_value(item.get(f))) for f in ids)
                        for metric, v in item.items():
                            if metric not in ids or len(ids) > 1:
                                yield sub, key, metric, _csv_value(v)
                    else:
                        yield sub, str(i), "value", _csv_value(item)
            else:
                yield section, "", name, _csv_value(value)

    yield from walk("", report)


def render_csv(report: Row, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("section", "key", "metric", "value"))
    for rec in csv_records(report):
        writer.writerow(rec)


def _clean(obj: Any) -> Any:
    """JSON has no NaN/Infinity: undefined numbers become null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


ROWS_MARK = "\x00rows:"  # stands in for a long list of rows while the rest is indented


def render_json(report: Row, out: TextIO) -> None:
    """Indented JSON, except that lists of rows (objects) are written one row per line.

    That is easier to read and grep for the time series (thousands of rows), and much faster: the
    standard library indents with its pure-Python encoder, but writes a row without indentation
    with its C encoder. The document is the same either way for a JSON reader.
    """
    rows: list[list[Any]] = []

    def mark(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: mark(v) for k, v in obj.items()}
        if isinstance(obj, list) and len(obj) > 1 and all(isinstance(x, dict) for x in obj):
            rows.append(obj)
            return f"{ROWS_MARK}{len(rows) - 1}"
        return obj

    text = json.dumps(mark(_clean(report)), indent=2, allow_nan=False)
    encode = json.JSONEncoder(allow_nan=False).encode  # no indent: the C encoder
    token = json.dumps(ROWS_MARK)[:-1]  # '"\u0000rows:' as the indented text spells it
    pos = 0
    while (i := text.find(token, pos)) >= 0:
        out.write(text[pos:i])
        j = text.index('"', i + len(token))
        block = rows[int(text[i + len(token):j])]
        line = text[text.rfind("\n", 0, i) + 1:i]  # e.g. '    "by_user": '
        indent = line[:len(line) - len(line.lstrip())]
        out.write("[")
        sep = "\n"
        for r in block:  # row by row: the block is never held twice
            out.write(f"{sep}{indent}  {encode(r)}")
            sep = ",\n"
        out.write(f"\n{indent}]")
        pos = j + 1
    out.write(text[pos:])
    out.write("\n")


def render(report: Row, fmt: str) -> str:
    buf = io.StringIO()
    {"text": render_text, "csv": render_csv, "json": render_json}[fmt](report, buf)
    return buf.getvalue()


JOB_CSV_FIELDS = ("job", "user", "group", "execute_site", "source_site", "network_type", "counters", "bytes_in",
                  "bytes_out", "sandbox_in", "sandbox_out", "input_mb", "start", "end", "charge")
