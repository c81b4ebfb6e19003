"""``--plot DIR``: PNG figures (matplotlib, Agg backend) and a self-contained HTML summary page.

Figures: throughput distribution, bytes per site over time (history) and per server (GridFTP),
session durations against the circuit threshold, and throughput by concurrency band. The HTML page
embeds every PNG as base64 and the text report, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lark.report.errors import ReportError
from lark.report.render import fmt_bytes, fmt_duration, fmt_rate, fmt_share, render
from lark.report.report import ReportData
from lark.report.stats import as_array

MAX_SERIES = 8  # more lines than this are unreadable; the rest are summed as "other"
LABEL_BOX = {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8}  # keeps labels legible on bars


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ReportError("--plot needs matplotlib (pip install 'htcondor-lark[plot]')") from err
    matplotlib.use("Agg")  # no display on a submit node; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _log_bins(values: Any, per_decade: int = 10) -> list[float]:
    lo = math.floor(math.log10(float(np.min(values))))
    hi = math.ceil(math.log10(float(np.max(values))))
    if hi == lo:
        hi += 1
    n = (hi - lo) * per_decade
    return [10 ** (lo + i / per_decade) for i in range(n + 1)]


def _positive(values: Any) -> np.ndarray:
    a = as_array(values)
    return a[a > 0]  # NaN compares False


def plot_throughput(plt: Any, data: ReportData, path: Path) -> bool:
    series = []
    if data.transfers is not None:
        series.append(("GridFTP transfers", _positive(data.transfers.transfer_rates) * 8 / 1e6))
        series.append(("GridFTP sessions", _positive(data.transfers.session_rates) * 8 / 1e6))
    series.append(("jobs (Lark counters)", _positive(data.job_rates) * 8 / 1e6))
    series = [(name, vals) for name, vals in series if len(vals)]
    if not series:
        return False
    bins = _log_bins(np.concatenate([vals for _, vals in series]))
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, vals in series:
        ax.hist(vals, bins=bins, histtype="step", linewidth=1.8, label=f"{name} (n={len(vals):,})")
    circuit = data.report.get("transfers", {}).get("circuit")
    if circuit and circuit.get("rate_bytes_per_second"):
        q3 = circuit["rate_bytes_per_second"] * 8 / 1e6
        ax.axvline(q3, color="black", linestyle="--", linewidth=1)
        ax.annotate(f"Q3 {circuit['rate_basis']} = {fmt_rate(circuit['rate_bytes_per_second'])}", (q3, 0.97),
                    xycoords=("data", "axes fraction"), xytext=(-3, 0), textcoords="offset points", ha="right",
                    va="top", fontsize=9, rotation=90, bbox=LABEL_BOX)
    ax.set_xscale("log")
    ax.set_xlabel("throughput (Mbit/s, log scale)")
    ax.set_ylabel("count")
    ax.set_title("Throughput distribution")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _time_series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], dict[str, list[float]], str]:
    """hourly rows -> (bucket starts, {name: GB per bucket}, bucket label); daily beyond 3 days."""
    hours = [r["hour"] for r in rows]
    span = max(hours) - min(hours)
    step = 86400 if span > 3 * 86400 else 3600
    first = min(hours) // step * step
    nb = int((max(hours) - first) // step) + 1
    totals: dict[str, float] = {}
    for r in rows:
        totals[r[key]] = totals.get(r[key], 0.0) + r["bytes"]
    keep = sorted(totals, key=lambda k: -totals[k])[:MAX_SERIES]
    out: dict[str, list[float]] = {k: [0.0] * nb for k in keep}
    if len(totals) > len(keep):
        out["other"] = [0.0] * nb
    for r in rows:
        name = r[key] if r[key] in out else "other"
        out[name][int((r["hour"] - first) // step)] += r["bytes"] / 1e9
    return [first + i * step for i in range(nb)], out, "day" if step == 86400 else "hour"


def plot_series(plt: Any, rows: Sequence[dict[str, Any]], key: str, title: str, path: Path) -> bool:
    if not rows:
        return False
    import datetime as _dt

    starts, series, unit = _time_series(rows, key)
    step = 86400 if unit == "day" else 3600
    # one extra point so that the last bucket is drawn as a full step
    x = [_dt.datetime.fromtimestamp(t, _dt.UTC) for t in [*starts, starts[-1] + step]]
    values = [[*v, v[-1]] for v in series.values()]
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(series))]
    if "other" in series:
        colors[-1] = "lightgrey"
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.stackplot(x, *values, labels=list(series.keys()), step="post", colors=colors)
    ax.set_ylabel(f"GB per {unit} (10^9 bytes)")
    ax.set_xlabel("time (UTC), by completion")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, ncols=2)
    ax.grid(True, alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_sessions(plt: Any, data: ReportData, path: Path) -> bool:
    if data.transfers is None:
        return False
    durations = _positive(data.transfers.session_durations)
    if not len(durations):
        return False
    circuit = data.report["transfers"]["circuit"]
    fig, ax = plt.subplots(figsize=(9, 5))
    bins = _log_bins(durations)
    ax.hist(durations, bins=bins, histtype="stepfilled", alpha=0.5, label=f"observed (n={len(durations):,})")
    rate = circuit.get("rate_bytes_per_second")
    if rate:
        sizes = as_array(data.transfers.session_sizes)
        big = _positive(sizes[sizes >= circuit["min_bytes"]] / rate)
        if len(big):
            ax.hist(big, bins=_log_bins(big), histtype="step", linewidth=1.8,
                    label=f"sessions >= {fmt_bytes(circuit['min_bytes'])} at Q3 rate (n={len(big):,})")
    ax.axvline(circuit["min_seconds"], color="red", linestyle="--", linewidth=1)
    ax.annotate(f"circuit threshold {fmt_duration(circuit['min_seconds'])}: {fmt_share(circuit['share'])} suitable",
                (circuit["min_seconds"], 0.97), xycoords=("data", "axes fraction"), xytext=(3, 0),
                textcoords="offset points", ha="left", va="top", rotation=90, fontsize=9,
                bbox=LABEL_BOX)
    ax.set_xscale("log")
    ax.set_xlabel("session duration (s, log scale)")
    ax.set_ylabel("sessions")
    ax.set_title(f"Session durations (gap {data.report['transfers']['sessions']['gap_seconds']:g} s)")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_concurrency(plt: Any, data: ReportData, path: Path) -> bool:
    if data.transfers is None:
        return False
    k = data.report["transfers"]["concurrency"]
    buckets = [b for b in k["buckets"] if b["transfers"]]
    if not buckets:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = list(range(len(buckets)))
    med = [b["median"] * 8 / 1e6 for b in buckets]
    lo = [max(m - b["q1"] * 8 / 1e6, 0) for m, b in zip(med, buckets, strict=True)]
    hi = [b["q3"] * 8 / 1e6 - m for m, b in zip(med, buckets, strict=True)]
    ax.bar(xs, med, yerr=[lo, hi], capsize=4, alpha=0.7)
    ax.set_xticks(xs, [f"{b['concurrency']}\n(n={b['transfers']:,})" for b in buckets])
    ax.set_xlabel("mean concurrent transfers on the same server")
    ax.set_ylabel("throughput, Mbit/s (median, bars Q1-Q3)")
    sp = k["spearman"]
    ax.set_title("Throughput vs concurrency" + (f" (Spearman {sp:+.2f})" if sp is not None else ""))
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(data: ReportData, directory: Path) -> list[Path]:
    """Write every figure that has data, then index.html; returns the files written."""
    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []
    jobs = [("throughput.png", "Throughput distribution", lambda p: plot_throughput(plt, data, p)),
            ("bytes_per_site.png", "Bytes per execute site over time",
             lambda p: plot_series(plt, data.report.get("accounting", {}).get("series", []), "site",
                                   "Job traffic (Lark counters) per execute site", p)),
            ("bytes_per_server.png", "GridFTP bytes per server over time",
             lambda p: plot_series(plt, data.report.get("transfers", {}).get("series", []), "server",
                                   "GridFTP traffic per server", p)),
            ("session_durations.png", "Session durations", lambda p: plot_sessions(plt, data, p)),
            ("concurrency.png", "Throughput vs concurrency", lambda p: plot_concurrency(plt, data, p))]
    for name, title, fn in jobs:
        path = directory / name
        if fn(path):
            written.append((title, path))
    page = directory / "index.html"
    page.write_text(summary_html(data, written), encoding="utf-8")
    return [p for _, p in written] + [page]


def _highlights(report: dict[str, Any]) -> list[str]:
    out = []
    a = report.get("accounting")
    if a:
        t = a["totals"]
        cur = report["config"].get("currency", "")
        out.append(f"{t['jobs']:,} jobs moved {fmt_bytes(t['bytes_in'])} in and {fmt_bytes(t['bytes_out'])} out; "
                   f"charge {t['charge']:,.2f} {cur}".rstrip())
        if a["by_user"]:
            u = a["by_user"][0]
            out.append(f"largest user: {u['user']} with {fmt_bytes(u['bytes_total'])}")
    x = report.get("transfers")
    if x:
        out.append(f"{x['transfers']:,} GridFTP transfers ({fmt_bytes(x['bytes'])}) in {x['sessions']['count']:,} "
                   "sessions")
        c = x["circuit"]
        out.append(f"circuit suitability: {fmt_share(c['share'])} of {c['eligible_sessions']:,} sessions >= "
                   f"{fmt_bytes(c['min_bytes'])} would last longer than {fmt_duration(c['min_seconds'])} at "
                   f"{fmt_rate(c['rate_bytes_per_second'])}")
        k = x["concurrency"]
        if k["spearman"] is not None:
            out.append(f"throughput vs concurrency: Spearman {k['spearman']:+.3f}")
    return out


def summary_html(data: ReportData, figures: Sequence[tuple[str, Path]]) -> str:
    report = data.report
    period = report.get("period", {})
    title = "Lark network report"
    if period.get("from") or period.get("until"):
        title += f" {period.get('from') or '...'} .. {period.get('until') or '...'}"
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}pre{background:#f6f6f6;padding:1em;"
             "overflow-x:auto;font-size:12px}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p>Generated {html.escape(str(report.get('generated')))}</p>", "<ul>"]
    parts += [f"<li>{html.escape(h)}</li>" for h in _highlights(report)]
    parts.append("</ul>")
    for caption, path in figures:
        b64 = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{b64}'>")
    parts.append("<h2>Full report</h2><pre>" + html.escape(render(report, "text")) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
