"""The HTML report page (``--plot DIR`` writes it as ``DIR/index.html``): one self-contained file.

Everything is inline -- the figures as base64 PNG, the style sheet, and a few lines of script that
make the tables sortable (click or Enter on a column header) -- so the page works offline, from a
mail attachment or an archive, and loads nothing from anywhere. Without script the tables are still
there, in the report's order. Each table is the JSON section of the same name, every row of it (long
tables scroll inside their box); each figure has a caption saying how to read it. Cells show the
text report's units; the raw number (bytes, seconds, bytes per second) is in ``data-v`` and is what
sorting uses.

Pure: :func:`report_page` takes the report's plain data and the figures written, and returns text.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lark.report.render import (
    fmt_bytes,
    fmt_corr,
    fmt_duration,
    fmt_int,
    fmt_money,
    fmt_rate,
    fmt_share,
    fmt_time,
)

SCROLL_ROWS = 15  # tables longer than this scroll inside a box

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;max-width:1200px;
margin:1.5em auto;padding:0 1em;color:#1d1d1f;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #dde;padding-bottom:.2em;margin-top:2em}
h3{margin:1.4em 0 .4em;font-size:1.05em}
.meta{color:#555;margin-top:0}
nav{background:#f4f5f8;padding:.5em 1em;border-radius:6px}nav a{margin-right:1.2em}
.cards{display:flex;flex-wrap:wrap;gap:.6em;margin:1em 0}
.card{background:#f4f5f8;border-radius:6px;padding:.5em .9em;min-width:9em}
.card b{display:block;font-size:1.25em}.card span{color:#555;font-size:.85em}
.scroll{display:inline-block;max-width:100%;max-height:26em;overflow:auto;border:1px solid #e2e2e8}
table{border-collapse:collapse;font-size:13px;margin:.3em 0 .2em}
th,td{padding:3px 9px;border-bottom:1px solid #e8e8ee;white-space:nowrap}
th{background:#eef0f5;text-align:left;position:sticky;top:0;cursor:pointer;user-select:none}
th.num,td.num{text-align:right}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
tbody tr:nth-child(even){background:#fafafc}tbody tr:hover{background:#eef4ff}
figure{margin:1.2em 0 2em}figure img{max-width:100%;border:1px solid #ddd}
figcaption{color:#333;font-size:14px;max-width:62em;margin-top:.4em}
figcaption b{display:block;margin-bottom:.2em}
ul.plain{padding-left:1.2em}.note{color:#555;font-size:12px;margin:.2em 0 .8em;max-width:62em}
"""

SCRIPT = """
(function () {
  function value(td) {
    var v = td.getAttribute("data-v");
    if (v === null) { return td.textContent.trim().toLowerCase(); }
    var n = parseFloat(v);
    return isNaN(n) ? -Infinity : n;
  }
  function sortBy(table, th, col) {
    var numeric = th.classList.contains("num");
    var current = th.getAttribute("aria-sort");
    var asc = current ? current !== "ascending" : !numeric;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (x, y) {
      var a = value(x.cells[col]), b = value(y.cells[col]);
      var r = a < b ? -1 : a > b ? 1 : 0;
      return asc ? r : -r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
  });
  document.documentElement.setAttribute("data-sortable", "ready");
})();
"""

Cell = tuple[str, str, Callable[[Any], str], bool]  # header, row key, formatter, numeric



@dataclass(frozen=True)
class Figure:
    """A written figure: file, title, and the caption that says how to read it."""

    path: Path
    title: str
    caption: str

def TEXT(v: Any) -> str:  # noqa: N802 - a marker: the cell's text is in the row, under "<key>_text"
    raise AssertionError("TEXT is a marker")


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _raw(v: Any) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


def _s(x: Any) -> str:
    return "-" if x is None else str(x)


def table(table_id: str, rows: Sequence[dict[str, Any]], columns: Sequence[Cell], note: str = "") -> str:
    """A sortable table of every row; numeric cells carry their raw value in data-v."""
    head = "".join(f"<th{' class=num' if num else ''} scope=col>{_esc(h)}</th>" for h, _, _, num in columns)
    body = []
    for r in rows:
        cells = []
        for _, key, fmt, num in columns:
            v = r.get(key)
            text = r[f"{key}_text"] if fmt is TEXT else fmt(v)
            if num:
                cells.append(f"<td class=num data-v='{_raw(v)}'>{_esc(text)}</td>")
            else:
                cells.append(f"<td>{_esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        body.append(f"<tr><td colspan={len(columns)} class=note>(none)</td></tr>")
    t = (f"<table id='{_esc(table_id)}' class=sortable><thead><tr>{head}</tr></thead><tbody>"
         + "".join(body) + "</tbody></table>")
    if len(rows) > SCROLL_ROWS:
        t = f"<div class=scroll>{t}</div>"
    return t + (f"<p class=note>{_esc(note)}</p>" if note else "")


def figure(fig: Figure) -> str:
    b64 = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    return (f"<figure id='fig-{_esc(fig.path.stem)}'><img alt='{_esc(fig.title)}' "
            f"src='data:image/png;base64,{b64}'><figcaption><b>{_esc(fig.title)}</b>{_esc(fig.caption)}"
            "</figcaption></figure>")


def _cards(items: Sequence[tuple[str, str]]) -> str:
    return "<div class=cards>" + "".join(f"<div class=card><b>{_esc(v)}</b><span>{_esc(k)}</span></div>"
                                         for k, v in items) + "</div>"


def _dist_rows(items: Sequence[tuple[str, dict[str, Any], Callable[[Any], str]]]
               ) -> tuple[list[dict[str, Any]], list[Cell]]:
    """Distribution tables: each row has its own unit, so the text of each cell is made here."""
    stats = ("min", "q1", "median", "mean", "q3", "max")
    rows = []
    for name, d, f in items:
        row: dict[str, Any] = {"what": name, "count": d["count"]}
        for k in stats:
            row[k] = d[k]
            row[f"{k}_text"] = f(d[k])
        rows.append(row)
    cols: list[Cell] = [("", "what", _s, False), ("count", "count", fmt_int, True)]
    cols += [(k, k, TEXT, True) for k in stats]
    return rows, cols


def _inputs(inputs: dict[str, Any]) -> list[str]:
    out = ["<h2 id=inputs>Inputs</h2>"]
    h = inputs.get("history")
    if h is not None:
        nc = h["network_counters"]
        out.append("<ul class=plain>"
                   f"<li>job history: {len(h['sources'])} source(s), {h['ads']:,} ads read, <b>{h['jobs']:,} jobs in "
                   f"the report</b> ({h['outside_period']:,} outside the period, {h['without_completion_date']:,} "
                   "without CompletionDate)</li>"
                   f"<li>network counters: Lark {nc['lark']:,}, docker NetworkInput/OutputMb {nc['docker']:,}, "
                   f"none {nc['none']:,}</li>"
                   f"<li>malformed ads {h['malformed']:,}, partially parsed {h['partially_parsed']:,}</li></ul>")
        missing = [{"attribute": k, "ads": v} for k, v in h["missing_attributes"].items() if v]
        missing += [{"attribute": f"{k} (unusable value)", "ads": v} for k, v in h["invalid_attributes"].items()]
        if missing:
            out.append("<h3>Attributes missing from ads</h3>")
            out.append(table("missing_attributes", missing, [("attribute", "attribute", _s, False),
                                                             ("ads", "ads", fmt_int, True)],
                             "LastRemoteHost counts ads with neither LastRemoteHost nor RemoteHost. Large numbers for "
                             "LarkBytesIn mean jobs outside Lark."))
        if h["malformed_examples"]:
            out.append("<h3>First malformed ads</h3>")
            out.append(table("malformed_ads", h["malformed_examples"], [("source", "source", _s, False),
                                                                        ("line", "line", fmt_int, True),
                                                                        ("reason", "reason", _s, False)]))
    j = inputs.get("journal")
    if j is not None:
        out.append(f"<p>accounting journal: {len(j['sources'])} source(s), {j['entries']:,} entries, final counters "
                   f"taken for {j['jobs_completed_from_journal']:,} job(s)</p>")
    g = inputs.get("gridftp")
    if g is not None:
        left = ", ".join(f"{k} {g[v]:,}" for k, v in (("listings", "listings"), ("failed", "failed"),
                                                       ("other events", "other_events"),
                                                       ("not transfer lines", "not_transfer_lines"),
                                                       ("outside the period", "outside_period")) if g[v])
        notes = ", ".join(f"{k} {g[v]:,}" for k, v in (("unpadded microseconds", "unpadded_microseconds"),
                                                        ("unknown remote", "unknown_remote"),
                                                        ("zero duration", "zero_duration")) if g[v])
        out.append("<ul class=plain>"
                   f"<li>GridFTP logs: {len(g['sources'])} source(s), {g['lines']:,} lines, <b>{g['transfers']:,} "
                   f"transfers in the report</b>, malformed lines {g['malformed']:,}</li>"
                   + (f"<li>left out: {_esc(left)}</li>" if left else "")
                   + (f"<li>notes: {_esc(notes)}</li>" if notes else "") + "</ul>")
        if g["malformed_examples"]:
            out.append(table("malformed_lines", g["malformed_examples"], [("source", "source", _s, False),
                                                                          ("line", "line", fmt_int, True),
                                                                          ("reason", "reason", _s, False)]))
    return out


GROUPINGS = (("user", "user", "Owner, else User"), ("group", "accounting group", "AcctGroup, else AccountingGroup"),
             ("execute_site", "execute site", "MachineAttrGLIDEIN_Site0, MachineAttrLarkSite0, else the domain of "
                                              "LastRemoteHost"),
             ("source_site", "source site", "LarkSourceSite"), ("network_type", "network type", "LarkNetworkType"))


def _accounting(a: dict[str, Any], cur: str, figs: dict[str, Figure]) -> list[str]:
    t = a["totals"]
    def money(x: float | None) -> str:
        return fmt_money(x, "")

    charge_head = f"charge ({cur})" if cur else "charge"
    out = ["<h2 id=accounting>Accounting (job history)</h2>",
           _cards([("jobs", f"{t['jobs']:,}"), ("with network counters", f"{t['jobs_with_counters']:,}"),
                   ("bytes in", fmt_bytes(t["bytes_in"])), ("bytes out", fmt_bytes(t["bytes_out"])),
                   (charge_head, money(t["charge"])), ("wall time", fmt_duration(t["wall_seconds"])),
                   ("sandbox in / out", f"{fmt_bytes(t['sandbox_in'])} / {fmt_bytes(t['sandbox_out'])}")])]
    base: list[Cell] = [("jobs", "jobs", fmt_int, True), ("in", "bytes_in", fmt_bytes, True),
                        ("out", "bytes_out", fmt_bytes, True), ("total", "bytes_total", fmt_bytes, True),
                        ("sandbox in", "sandbox_in", fmt_bytes, True), ("sandbox out", "sandbox_out", fmt_bytes, True),
                        ("wall", "wall_seconds", fmt_duration, True), (charge_head, "charge", money, True)]
    for key, title, source in GROUPINGS:
        rows = a[f"by_{key}"]
        out.append(f"<h3>By {_esc(title)} ({len(rows):,})</h3>")
        out.append(table(f"by_{key}", rows, [(title, key, _s, False), *base],
                         f"{title}: {source}. in/out: the jobs' own network traffic; sandbox: HTCondor file transfer "
                         "(BytesRecvd/BytesSent); wall: sum of CompletionDate - JobCurrentStartDate."))
        if f"accounting_{key}" in figs:
            out.append(figure(figs[f"accounting_{key}"]))
    out.append("<h3>By traffic class</h3>")
    out.append(table("by_class", a["by_class"], [("class", "class", _s, False), ("jobs", "jobs", fmt_int, True),
                                                 ("in", "bytes_in", fmt_bytes, True),
                                                 ("out", "bytes_out", fmt_bytes, True),
                                                 ("total", "bytes_total", fmt_bytes, True),
                                                 ("rate in / GB", "rate_in", _rate, True),
                                                 ("rate out / GB", "rate_out", _rate, True),
                                                 (charge_head, "charge", money, True)],
                     "GB = 10^9 bytes. (unclassified): bytes in no traffic class, priced at the default rate."))
    if a.get("inconsistent_class_counters"):
        out.append(f"<p class=note>{a['inconsistent_class_counters']:,} jobs had class counters above their totals; "
                   "the remainder was taken as 0.</p>")
    for name in ("accounting_classes", "totals_by_class"):
        if name in figs:
            out.append(figure(figs[name]))
    out.append(f"<h3>Top {len(a['top_jobs'])} jobs by traffic</h3>")
    out.append(table("top_jobs", a["top_jobs"], [("job", "job", _s, False), ("user", "user", _s, False),
                                                 ("group", "group", _s, False),
                                                 ("site", "execute_site", _s, False),
                                                 ("source", "source_site", _s, False),
                                                 ("in", "bytes_in", fmt_bytes, True),
                                                 ("out", "bytes_out", fmt_bytes, True),
                                                 (charge_head, "charge", money, True),
                                                 ("completed (UTC)", "end", fmt_time, True)]))
    d = a["distributions"]
    rows, cols = _dist_rows([("traffic per job", d["bytes"], fmt_bytes),
                             ("run time", d["duration_seconds"], fmt_duration),
                             ("throughput", d["bytes_per_second"], fmt_rate)])
    out.append("<h3>Job distributions (jobs with counters)</h3>")
    out.append(table("job_distributions", rows, cols, "Quartiles by linear interpolation (type 7, as numpy)."))
    return out


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _transfers(x: dict[str, Any], figs: dict[str, Figure]) -> list[str]:
    c, k = x["circuit"], x["concurrency"]
    out = ["<h2 id=transfers>Transfers (GridFTP logs)</h2>",
           _cards([("transfers", f"{x['transfers']:,}"), ("bytes", fmt_bytes(x["bytes"])),
                   ("sessions", f"{x['sessions']['count']:,}"),
                   ("circuit-suitable sessions", fmt_share(c["share"])),
                   ("Spearman (concurrency, throughput)", fmt_corr(k["spearman"]))])]
    for key, title, extra in (("user", "user", [("sessions", "sessions", fmt_int, True)]),
                              ("server", "server (HOST)", []), ("remote", "remote endpoint (DEST)", []),
                              ("type", "type", [])):
        rows = x[f"by_{key}"]
        out.append(f"<h3>By {_esc(title)} ({len(rows):,})</h3>")
        cols: list[Cell] = [(title, key, _s, False), ("transfers", "transfers", fmt_int, True), *extra,
                            ("bytes", "bytes", fmt_bytes, True)]
        out.append(table(f"transfers_by_{key}", rows, cols))
    if "server_utilisation" in figs:
        out.append(figure(figs["server_utilisation"]))
    d = x["distributions"]
    rows, cols = _dist_rows([("transfer size", d["transfers"]["bytes"], fmt_bytes),
                             ("transfer duration", d["transfers"]["duration_seconds"], fmt_duration),
                             ("transfer throughput", d["transfers"]["bytes_per_second"], fmt_rate),
                             ("session size", d["sessions"]["bytes"], fmt_bytes),
                             ("session duration", d["sessions"]["duration_seconds"], fmt_duration),
                             ("session throughput", d["sessions"]["bytes_per_second"], fmt_rate),
                             ("transfers per session", d["sessions"]["transfers_per_session"], fmt_int)])
    out.append("<h3>Distributions</h3>")
    out.append(table("transfer_distributions", rows, cols))
    if "throughput" in figs:
        out.append(figure(figs["throughput"]))
    out.append(f"<h3>Top {len(x['sessions']['top'])} sessions by size (gap {x['sessions']['gap_seconds']:g} s)</h3>")
    out.append(table("top_sessions", x["sessions"]["top"], [
        ("user", "user", _s, False), ("server", "server", _s, False), ("remote", "remote", _s, False),
        ("start (UTC)", "start", fmt_time, True), ("duration", "duration_seconds", fmt_duration, True),
        ("bytes", "bytes", fmt_bytes, True), ("transfers", "transfers", fmt_int, True),
        ("throughput", "bytes_per_second", fmt_rate, True)]))
    out.append("<h3>Circuit suitability</h3><ul class=plain>"
               f"<li>sessions of at least {fmt_bytes(c['min_bytes'])}: {c['eligible_sessions']:,} "
               f"({fmt_bytes(c['eligible_bytes'])})</li>"
               f"<li>reference rate: 3rd quartile of {_esc(c['rate_basis'])} throughput = "
               f"{fmt_rate(c['rate_bytes_per_second'])}</li>"
               f"<li>would last longer than {fmt_duration(c['min_seconds'])} at that rate: "
               f"<b>{c['suitable_sessions']:,} = {fmt_share(c['share'])}</b> of those sessions, "
               f"{fmt_share(c['bytes_share'])} of their bytes</li></ul>")
    if "session_durations" in figs:
        out.append(figure(figs["session_durations"]))
    out.append("<h3>Throughput vs concurrency</h3>")
    out.append(f"<p>{k['transfers']:,} transfers, mean concurrency {_num(k['mean'])}; correlation with throughput: "
               f"Pearson {fmt_corr(k['pearson'])}, Spearman {fmt_corr(k['spearman'])} ({_esc(k['scope'])}).</p>")
    out.append(table("concurrency", k["buckets"], [("concurrency", "concurrency", _s, False),
                                                   ("transfers", "transfers", fmt_int, True),
                                                   ("q1", "q1", fmt_rate, True), ("median", "median", fmt_rate, True),
                                                   ("q3", "q3", fmt_rate, True)]))
    if "concurrency" in figs:
        out.append(figure(figs["concurrency"]))
    return out


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _day(iso: str | None) -> str:
    """2026-10-01T00:00:00Z -> 2026-10-01; other times as 2026-10-01 12:30:00."""
    if not iso:
        return "..."
    return iso.removesuffix("T00:00:00Z").replace("T", " ").removesuffix("Z")


def report_page(report: dict[str, Any], figures: Sequence[Figure]) -> str:
    """The whole page as text (see the module docstring)."""
    period = report.get("period", {})
    title = "Lark network report"
    if period.get("from") or period.get("until"):
        title += f" {_day(period.get('from'))} .. {_day(period.get('until'))}"
    cur = report.get("config", {}).get("currency", "")
    figs = {f.path.stem: f for f in figures}
    sections = [("inputs", "Inputs")]
    if report.get("accounting") is not None:
        sections.append(("accounting", "Accounting"))
    if report.get("transfers") is not None:
        sections.append(("transfers", "Transfers"))
    parts = ["<!DOCTYPE html>", "<html lang=en><head><meta charset='utf-8'>",
             "<meta name=viewport content='width=device-width, initial-scale=1'>",
             "<link rel=icon href='data:,'>",  # no favicon request: the page loads nothing
             f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{_esc(title)}</h1>",
             f"<p class=meta>Period in UTC, until excluded. Generated {_esc(report.get('generated'))}, report format "
             f"{_esc(report.get('format_version'))}. Bytes in decimal units (1 GB = 10^9 bytes), rates in bit/s. "
             "Click a column header to sort.</p>",
             "<nav>" + "".join(f"<a href='#{i}'>{_esc(t)}</a>" for i, t in sections) + "</nav>"]
    parts += _inputs(report.get("inputs", {}))
    if report.get("accounting") is not None:
        parts += _accounting(report["accounting"], cur, figs)
    if report.get("transfers") is not None:
        parts += _transfers(report["transfers"], figs)
    elif "throughput" in figs:
        parts.append(figure(figs["throughput"]))
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"
