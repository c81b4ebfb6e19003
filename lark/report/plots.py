"""``--plot DIR``: PNG figures (matplotlib, Agg backend) and the HTML report page (page.py).

Every figure draws one quantity per axis, in the units the text report uses (GB = 10^9 bytes, Mbit/s and
Gbit/s = 10^6 and 10^9 bit/s), and carries a caption (:class:`Figure`) that the page prints under it:

* ``accounting_user.png``, ``accounting_group.png``, ``accounting_execute_site.png``: one row per key
  (the largest ``MAX_SERIES``, the rest summed as "other"), columns bytes in, bytes out and charge per
  time bucket, stacked by traffic class;
* ``accounting_classes.png``: the same three quantities for the whole pool, stacked by class;
* ``totals_by_class.png``: per user, group and execute site, bytes in, bytes out and charge as
  horizontal bars stacked by class;
* ``throughput.png``: the throughput distributions of transfers, sessions and jobs, one panel each;
* ``session_durations.png``: sessions against the circuit threshold;
* ``concurrency.png``: per-transfer throughput per concurrency band above the number of transfers in
  each band (bands with few transfers drawn pale);
* ``server_utilisation.png``: Gbit/s per GridFTP server over time (hourly means).

Figures are drawn from the report's plain data (``report["accounting"]["series"]`` etc.), so what a
figure shows is what ``--json`` holds.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lark import extra_hint
from lark.report.errors import ReportError
from lark.report.page import Figure, report_page
from lark.report.render import fmt_bytes, fmt_duration, fmt_money, fmt_rate, fmt_share
from lark.report.report import ReportData
from lark.report.settings import UNCLASSIFIED
from lark.report.stats import as_array

MAX_SERIES = 8  # more rows or bars than this are unreadable; the rest are summed as "other"
FEW_TRANSFERS = 30  # a concurrency band with fewer transfers than this is drawn pale: its quartiles are noise
DPI = 110
GROUP_TITLES = {"user": "user", "group": "accounting group", "execute_site": "execute site"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ReportError(f"--plot needs matplotlib: {extra_hint('plot')}") from err
    matplotlib.use("Agg")  # no display on a submit node; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


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


def class_colors(plt: Any, classes: Sequence[str]) -> dict[str, Any]:
    """One colour per traffic class, the same in every figure; bytes in no class are grey."""
    cmap = plt.get_cmap("tab10")
    named = [c for c in classes if c != UNCLASSIFIED]
    colors = {c: cmap(i % 10) for i, c in enumerate(named)}
    colors[UNCLASSIFIED] = "#b0b0b0"
    return colors


def ordered_classes(classes: Sequence[str]) -> list[str]:
    """Classes in the report's order, bytes in no class last (drawn on top, in grey)."""
    return [c for c in classes if c != UNCLASSIFIED] + [c for c in classes if c == UNCLASSIFIED]


def _period_xlim(ax: Any, period: tuple[float | None, float | None]) -> None:
    """Show the whole report period, so that days without traffic are visible as such."""
    lo, hi = period
    if lo is not None and hi is not None:
        ax.set_xlim(_dt.datetime.fromtimestamp(lo, _dt.UTC), _dt.datetime.fromtimestamp(hi, _dt.UTC))


def _bucket_label(seconds: int) -> str:
    return "day" if seconds == 86400 else "hour" if seconds == 3600 else f"{seconds} s"


def _times(starts: Sequence[int], step: int) -> list[_dt.datetime]:
    # one extra point so that the last bucket is drawn as a full step
    return [_dt.datetime.fromtimestamp(t, _dt.UTC) for t in [*starts, starts[-1] + step]]


# ------------------------------------------------------------------------------------------------
# Accounting


QUANTITIES = (("bytes_in", "GB in"), ("bytes_out", "GB out"), ("charge", "charge"))


def _grid(rows: Sequence[dict[str, Any]], key: str | None, keys: Sequence[str], classes: Sequence[str],
          buckets: Sequence[int]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """{key: {quantity: {class: values per bucket}}}, keys outside ``keys`` summed as "other"."""
    index = {b: i for i, b in enumerate(buckets)}
    known = set(keys)
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for r in rows:
        k = "all" if key is None else (r[key] if r[key] in known else "other")
        cell = out.setdefault(k, {q: {c: np.zeros(len(buckets)) for c in classes} for q, _ in QUANTITIES})
        i = index[r["start"]]
        for q, _ in QUANTITIES:
            cell[q][r["class"]][i] += r[q] / 1e9 if q != "charge" else r[q]
    return out


def _buckets(rows: Sequence[dict[str, Any]], step: int) -> list[int]:
    first = min(r["start"] for r in rows)
    last = max(r["start"] for r in rows)
    return list(range(first, last + step, step))


def plot_accounting(plt: Any, series: dict[str, Any], grouping: str | None, order: Sequence[str], currency: str,
                    path: Path, period: tuple[float | None, float | None] = (None, None)) -> bool:
    """Small multiples: a row per key (or one row for the pool), columns in / out / charge, by class."""
    rows = series.get(f"by_{grouping}" if grouping else "by_class", [])
    if not rows:
        return False
    step = int(series["bucket_seconds"])
    classes = ordered_classes([c for c in series["classes"] if any(r["class"] == c for r in rows)])
    buckets = _buckets(rows, step)
    keys = list(order[:MAX_SERIES])
    grid = _grid(rows, grouping, keys, classes, buckets)
    names = [k for k in [*keys, "other", "all"] if k in grid]
    charged = any(r["charge"] for r in rows)
    quantities = [q for q in QUANTITIES if q[0] != "charge" or charged]
    colors = class_colors(plt, series["classes"])
    x = _times(buckets, step)
    row_height = 1.55 if grouping else 3.0  # the pool alone gets a taller row
    height = 1.15 + row_height * len(names)
    fig, axes = plt.subplots(len(names), len(quantities), figsize=(4.4 * len(quantities), height), sharex=True,
                             squeeze=False)
    unit = _bucket_label(step)
    for r, name in enumerate(names):
        for c, (q, label) in enumerate(quantities):
            ax = axes[r][c]
            values = [[*grid[name][q][cls], grid[name][q][cls][-1]] for cls in classes]
            ax.stackplot(x, *values, step="post", colors=[colors[cls] for cls in classes], labels=classes)
            total = sum(float(grid[name][q][cls].sum()) for cls in classes)
            shown = fmt_money(total, currency) if q == "charge" else fmt_bytes(total * 1e9)
            label_name = "whole pool" if name == "all" else name
            ax.set_title(f"{label_name}: {shown}" if c == 0 else shown, fontsize=9, loc="left")
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=8)
            ax.set_ylim(bottom=0)
            _period_xlim(ax, period)
            if r == 0:
                head = f"{label} per {unit}" if q != "charge" else \
                    f"charge per {unit}{' (' + currency + ')' if currency else ''}"
                ax.annotate(head, (0.5, 1.0), xycoords="axes fraction", xytext=(0, 18), textcoords="offset points",
                            ha="center", va="bottom", fontsize=10, fontweight="bold")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=min(len(classes), 6), fontsize=9, title="traffic class",
               title_fontsize=9, frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout(rect=(0, 0.55 / height, 1, 1))
    _save(plt, fig, path)
    return True


def plot_totals_by_class(plt: Any, accounting: dict[str, Any], currency: str, path: Path) -> bool:
    """Horizontal bars per user / group / execute site, stacked by class: GB in, GB out, charge."""
    series = accounting["series"]
    groupings = [g for g in GROUP_TITLES if series.get(f"by_{g}")]
    if not groupings:
        return False
    classes = ordered_classes(series["classes"])
    colors = class_colors(plt, classes)
    charged = any(r["charge"] for g in groupings for r in series[f"by_{g}"])
    quantities = [q for q in QUANTITIES if q[0] != "charge" or charged]
    nkeys = max(min(len(accounting[f"by_{g}"]), MAX_SERIES + 1) for g in groupings)
    fig, axes = plt.subplots(len(quantities), len(groupings), squeeze=False,
                             figsize=(4.6 * len(groupings), 0.9 + len(quantities) * (0.9 + 0.28 * nkeys)))
    for c, g in enumerate(groupings):
        order = [str(r[g]) for r in accounting[f"by_{g}"]]
        keys = order[:MAX_SERIES]
        totals: dict[str, dict[str, dict[str, float]]] = {}
        for r in series[f"by_{g}"]:
            k = r[g] if r[g] in keys else "other"
            cell = totals.setdefault(k, {q: {} for q, _ in QUANTITIES})
            for q, _ in QUANTITIES:
                cell[q][r["class"]] = cell[q].get(r["class"], 0.0) + (r[q] / 1e9 if q != "charge" else r[q])
        names = [k for k in [*keys, "other"] if k in totals]
        ys = np.arange(len(names))
        for r_i, (q, label) in enumerate(quantities):
            ax = axes[r_i][c]
            left = np.zeros(len(names))
            for cls in classes:
                widths = np.array([totals[k][q].get(cls, 0.0) for k in names])
                if widths.any():
                    ax.barh(ys, widths, left=left, color=colors[cls], label=cls, height=0.7)
                    left += widths
            ax.set_yticks(ys, names, fontsize=8)
            ax.invert_yaxis()  # largest first, as in the tables
            ax.grid(True, axis="x", alpha=0.3)
            ax.tick_params(axis="x", labelsize=8)
            unit = (currency or "charge") if q == "charge" else label
            ax.set_xlabel(unit, fontsize=9)
            ax.set_title(f"{label if q != 'charge' else 'charge'} by {GROUP_TITLES[g]}", fontsize=10, loc="left")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncols=min(len(handles), 6),
               fontsize=9, title="traffic class", title_fontsize=9, frameon=False)
    height = 0.9 + len(quantities) * (0.9 + 0.28 * nkeys)
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1))
    _save(plt, fig, path)
    return True


# ------------------------------------------------------------------------------------------------
# Throughput, sessions, concurrency, utilisation


def plot_throughput(plt: Any, data: ReportData, path: Path) -> bool:
    """One panel per quantity (each its own count axis): transfers, sessions, jobs."""
    panels = []
    circuit = data.report.get("transfers", {}).get("circuit") or {}
    if data.transfers is not None:
        panels.append(("GridFTP transfers", "transfers", _positive(data.transfers.transfer_rates) * 8 / 1e6))
        panels.append(("GridFTP sessions (bytes / duration, idle gaps included)", "sessions",
                       _positive(data.transfers.session_rates) * 8 / 1e6))
    panels.append(("jobs (Lark counters: traffic / run time)", "jobs", _positive(data.job_rates) * 8 / 1e6))
    panels = [p for p in panels if len(p[2])]
    if not panels:
        return False
    bins = _log_bins(np.concatenate([vals for _, _, vals in panels]))
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.0 + 2.3 * len(panels)), sharex=True, squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i, (name, what, vals) in enumerate(panels):
        ax = axes[i][0]
        ax.hist(vals, bins=bins, color=cmap(i), alpha=0.8)
        ax.set_ylabel(f"{what} (count)", fontsize=9)
        med = float(np.median(vals))
        ax.axvline(med, color="black", linewidth=1, label=f"median {fmt_rate(med * 1e6 / 8)}")
        if circuit.get("rate_bytes_per_second") and circuit.get("rate_basis") == what:
            q3 = circuit["rate_bytes_per_second"] * 8 / 1e6
            ax.axvline(q3, color="red", linestyle="--", linewidth=1.2,
                       label=f"Q3 = circuit reference rate {fmt_rate(circuit['rate_bytes_per_second'])}")
        ax.set_title(f"{name}, n = {len(vals):,}", fontsize=10, loc="left")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(True, which="major", alpha=0.3)
    axes[-1][0].set_xscale("log")
    axes[-1][0].set_xlabel("throughput (Mbit/s, log scale)")
    fig.tight_layout()
    _save(plt, fig, path)
    return True


def plot_sessions(plt: Any, data: ReportData, path: Path) -> bool:
    if data.transfers is None:
        return False
    durations = _positive(data.transfers.session_durations)
    if not len(durations):
        return False
    circuit = data.report["transfers"]["circuit"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.hist(durations, bins=_log_bins(durations), histtype="stepfilled", alpha=0.5,
            label=f"observed durations (n={len(durations):,})")
    rate = circuit.get("rate_bytes_per_second")
    if rate:
        sizes = as_array(data.transfers.session_sizes)
        big = _positive(sizes[sizes >= circuit["min_bytes"]] / rate)
        if len(big):
            ax.hist(big, bins=_log_bins(big), histtype="step", linewidth=1.8,
                    label=f"sessions >= {fmt_bytes(circuit['min_bytes'])} at the reference rate (n={len(big):,})")
    ax.axvline(circuit["min_seconds"], color="red", linestyle="--", linewidth=1.2,
               label=f"circuit threshold {fmt_duration(circuit['min_seconds'])}: {fmt_share(circuit['share'])} "
                     "of those sessions last longer")
    ax.set_xscale("log")
    ax.set_xlabel("session duration (s, log scale)")
    ax.set_ylabel("sessions")
    ax.set_title(f"Session durations (gap {data.report['transfers']['sessions']['gap_seconds']:g} s)")
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, path)
    return True


def plot_concurrency(plt: Any, data: ReportData, path: Path) -> bool:
    if data.transfers is None:
        return False
    k = data.report["transfers"]["concurrency"]
    buckets = [b for b in k["buckets"] if b["transfers"]]
    if not buckets:
        return False
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(3, 1.4))
    xs = np.arange(len(buckets))
    med = np.array([b["median"] * 8 / 1e6 for b in buckets])
    q1 = np.array([b["q1"] * 8 / 1e6 for b in buckets])
    q3 = np.array([b["q3"] * 8 / 1e6 for b in buckets])
    counts = np.array([b["transfers"] for b in buckets])
    few = counts < FEW_TRANSFERS
    for sel, style in ((~few, {"color": "tab:blue", "alpha": 0.85, "label": "median, whiskers Q1-Q3"}),
                       (few, {"color": "tab:blue", "alpha": 0.25, "hatch": "//",
                              "label": f"fewer than {FEW_TRANSFERS} transfers: unreliable"})):
        if sel.any():
            ax.bar(xs[sel], med[sel], yerr=[med[sel] - q1[sel], q3[sel] - med[sel]], capsize=4, width=0.6,
                   error_kw={"alpha": 0.4 if style["alpha"] < 0.5 else 1.0}, **style)
    ax.set_ylabel("per-transfer throughput\n(Mbit/s)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    sp = k["spearman"]
    ax.set_title("Throughput vs concurrency" + (f" (Spearman {sp:+.2f})" if sp is not None else ""), loc="left")
    axn.bar(xs, counts, width=0.6, color=["#c8c8c8" if f else "#707070" for f in few])
    for x, n in zip(xs, counts, strict=True):
        axn.annotate(f"{n:,}", (x, n), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                     fontsize=8)
    axn.set_ylim(0, counts.max() * 1.3)
    axn.set_ylabel("transfers", fontsize=9)
    axn.set_xticks(xs, [b["concurrency"] for b in buckets])
    axn.set_xlabel("mean number of other transfers on the same server during the transfer")
    axn.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, path)
    return True


def plot_utilisation(plt: Any, data: ReportData, path: Path,
                     period: tuple[float | None, float | None] = (None, None)) -> bool:
    """One panel per GridFTP server (the largest MAX_SERIES, the rest as "other"), same Gbit/s scale."""
    u = data.report.get("transfers", {}).get("utilisation")
    if not u or not u["rows"]:
        return False
    step = int(u["bucket_seconds"])
    rows = u["rows"]
    by_server: dict[str, float] = {}
    for r in rows:
        by_server[r["server"]] = by_server.get(r["server"], 0.0) + r["bytes"]
    servers = sorted(by_server, key=lambda s: (-by_server[s], s))
    keep = servers[:MAX_SERIES]
    buckets = _buckets(rows, step)
    index = {b: i for i, b in enumerate(buckets)}
    lines = {s: np.zeros(len(buckets)) for s in [*keep, "other"]}
    for r in rows:
        lines[r["server"] if r["server"] in lines else "other"][index[r["start"]]] += r["bits_per_second"] / 1e9
    if not lines["other"].any():
        del lines["other"]
    x = _times(buckets, step)
    fig, axes = plt.subplots(len(lines), 1, figsize=(10, 0.9 + 1.6 * len(lines)), sharex=True, sharey=True,
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i, (name, v) in enumerate(lines.items()):
        ax = axes[i][0]
        y = [*v, v[-1]]
        ax.fill_between(x, y, step="post", color=cmap(i % 10), alpha=0.35, linewidth=0)
        ax.step(x, y, where="post", color=cmap(i % 10), linewidth=0.9)
        ax.set_title(f"{name}: {fmt_bytes(by_server.get(name, 0.0) if name != 'other' else 0.0)} moved, peak "
                     f"{v.max():.3g} Gbit/s, mean {v.mean():.3g} Gbit/s", fontsize=9, loc="left")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        _period_xlim(ax, period)
    fig.supylabel(f"Gbit/s (mean over each {_bucket_label(step)})", fontsize=10)
    axes[-1][0].set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    _save(plt, fig, path)
    return True


# ------------------------------------------------------------------------------------------------
# All figures


def _captions(report: dict[str, Any]) -> dict[str, str]:
    a = report.get("accounting") or {}
    step = _bucket_label(int(a.get("series", {}).get("bucket_seconds", 3600)))
    cur = report.get("config", {}).get("currency", "")
    per_key = ("One row per {what} (the {n} largest by traffic, the rest summed as \"other\"); the columns are "
               "bytes into the jobs, bytes out of them and the charge, per " + step + " of job completion (UTC), "
               "stacked by traffic class (grey: bytes in no class). Each panel has its own vertical scale: "
               "compare rows by the totals written above each panel. A job's bytes count at its completion, "
               "so a long job shows as one spike.")
    return {
        "accounting_user": per_key.format(what="user (Owner)", n=MAX_SERIES),
        "accounting_group": per_key.format(what="accounting group", n=MAX_SERIES),
        "accounting_execute_site": per_key.format(what="execute site", n=MAX_SERIES),
        "accounting_classes": (f"The whole pool per {step} of job completion: bytes in, bytes out and the charge"
                               f"{' in ' + cur if cur else ''}, stacked by traffic class. The height of a stack is "
                               "the total; each coloured band is one class's share."),
        "totals_by_class": ("Totals for the period per user, accounting group and execute site (largest first, as in "
                            "the tables): bytes in, bytes out and charge, each bar split by traffic class. A class "
                            "with a high rate shows a larger share in the charge row than in the bytes rows."),
        "throughput": ("Distributions of throughput (Mbit/s, log scale): one panel per kind of item, each with its "
                       "own count axis, since there are far more transfers than sessions or jobs. A session's "
                       "throughput counts its idle gaps, so it sits left of its transfers'. The black line is the "
                       "median; the red dashed line is the reference rate of the circuit test (Q3)."),
        "session_durations": ("Observed session durations (filled) and, for sessions of at least the minimum size, "
                              "how long each would take at the reference rate (outline). Sessions right of the red "
                              "line would keep a dedicated circuit busy for longer than the threshold."),
        "concurrency": ("Top: per-transfer throughput per band of concurrency (the mean number of other transfers "
                        "on the same server while the transfer ran): the bar is the median, the whiskers Q1 and Q3. "
                        "Bottom: how many transfers each band holds. Pale, hatched bands hold fewer than "
                        f"{FEW_TRANSFERS} transfers and their quartiles say little. Falling medians across well-filled "
                        "bands mean transfers slow each other down."),
        "server_utilisation": ("One panel per GridFTP server, all on the same scale: the mean rate the server moved "
                               "data at, in Gbit/s per hour (UTC), all its transfers together. Each transfer's bytes "
                               "are spread evenly over its duration, so a transfer spanning several hours counts in "
                               "each. Plateaus near a server's NIC or WAN capacity mean it was saturated."),
    }


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return _dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def write_plots(data: ReportData, directory: Path) -> list[Path]:
    """Write every figure that has data, then index.html; returns the files written."""

    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    report = data.report
    cur = report.get("config", {}).get("currency", "")
    captions = _captions(report)
    span = report.get("period", {})
    period = (_epoch(span.get("from")), _epoch(span.get("until")))
    jobs: list[tuple[str, str, Callable[[Path], bool]]] = []
    a = report.get("accounting")
    if a is not None:
        for g in GROUP_TITLES:
            jobs.append((f"accounting_{g}", f"Traffic and charge per {GROUP_TITLES[g]} over time",
                         lambda p, g=g: plot_accounting(plt, a["series"], g, [str(r[g]) for r in a[f"by_{g}"]], cur,
                                                        p, period)))
        jobs.append(("accounting_classes", "Traffic and charge per traffic class over time",
                     lambda p: plot_accounting(plt, a["series"], None, [], cur, p, period)))
        jobs.append(("totals_by_class", "Totals per user, group and site, by traffic class",
                     lambda p: plot_totals_by_class(plt, a, cur, p)))
    jobs.append(("throughput", "Throughput distributions", lambda p: plot_throughput(plt, data, p)))
    if report.get("transfers") is not None:
        jobs += [("session_durations", "Session durations", lambda p: plot_sessions(plt, data, p)),
                 ("concurrency", "Throughput vs concurrency", lambda p: plot_concurrency(plt, data, p)),
                 ("server_utilisation", "GridFTP server utilisation", lambda p: plot_utilisation(plt, data, p, period))]
    written: list[Figure] = []
    for name, title, fn in jobs:
        path = directory / f"{name}.png"
        if fn(path):
            written.append(Figure(path, title, captions[name]))
    page = directory / "index.html"
    page.write_text(report_page(report, written), encoding="utf-8")
    return [f.path for f in written] + [page]
