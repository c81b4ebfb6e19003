"""A month of accounting through ``lark report``: the JSON series add up to totals worked out here from the
generator's own numbers, and ``--plot`` writes one non-trivial figure per grouping and per class."""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from pathlib import Path

import pytest

from lark.report import cli
from lark.report.accounting import DAY, HOUR, HistoryAccumulator
from lark.report.history import HistoryJob
from lark.report.settings import UNCLASSIFIED, ReportConfig, parse_rates

from .month import CHARGE_ARGS, OCT, SERVERS, month_jobs, write_month_gridftp, write_month_history

FIGURES = {"accounting_user.png", "accounting_group.png", "accounting_execute_site.png", "accounting_classes.png",
           "totals_by_class.png", "throughput.png", "session_durations.png", "concurrency.png",
           "server_utilisation.png"}


@pytest.fixture(scope="module")
def month(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("month")
    jobs = month_jobs()
    transfers = write_month_gridftp(d / "gridftp.log")
    write_month_history(d / "history", jobs)
    code = cli.main(["--no-progress", "--month", "2026-10", "--history", str(d / "history"), "--gridftp",
                     str(d / "gridftp.log"), *CHARGE_ARGS, "--json", "-o", str(d / "report.json"),
                     "--plot", str(d / "plot")])
    assert code == 0
    return {"dir": d, "jobs": jobs, "transfers": transfers, "report": json.loads((d / "report.json").read_text())}


def expected_by(jobs, key) -> dict[str, list[float]]:
    """[bytes in, bytes out, charge] per key, from the generator's numbers (not the report's code)."""
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for j in jobs:
        if j.counters:
            t = out[key(j)]
            t[0] += j.bytes_in
            t[1] += j.bytes_out
            t[2] += j.charge
    return dict(out)


def series_sums(rows, key) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for r in rows:
        t = out[r[key]]
        t[0] += r["bytes_in"]
        t[1] += r["bytes_out"]
        t[2] += r["charge"]
    return dict(out)


def assert_same(got: dict[str, list[float]], want: dict[str, list[float]]) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k][:2] == want[k][:2], k  # bytes: exact
        assert got[k][2] == pytest.approx(want[k][2], rel=1e-9), k


def test_series_add_up_to_totals_worked_out_independently(month):
    report, jobs = month["report"], month["jobs"]
    assert report["format_version"] == 2
    series = report["accounting"]["series"]
    # a month of completions: daily buckets, each a UTC midnight within October (or the days jobs end after)
    assert series["bucket_seconds"] == DAY
    assert all(r["start"] % DAY == 0 and OCT <= r["start"] < OCT + 40 * DAY for r in series["by_user"])
    assert series["classes"] == ["Wan", "Campus", UNCLASSIFIED]

    assert_same(series_sums(series["by_user"], "user"), expected_by(jobs, lambda j: j.user))
    assert_same(series_sums(series["by_group"], "group"), expected_by(jobs, lambda j: j.group))
    assert_same(series_sums(series["by_execute_site"], "execute_site"), expected_by(jobs, lambda j: j.site))
    per_class = series_sums(series["by_class"], "class")
    counted = [j for j in jobs if j.counters]
    assert per_class["Wan"][:2] == [sum(j.wan_in for j in counted), sum(j.wan_out for j in counted)]
    assert per_class["Campus"][:2] == [sum(j.campus_in for j in counted), sum(j.campus_out for j in counted)]
    assert per_class[UNCLASSIFIED][:2] == [sum(j.rest_in for j in counted), sum(j.rest_out for j in counted)]
    # 0.05 / GB wan in, 0.08 wan out, campus free, the rest 0.01
    assert per_class["Campus"][2] == 0
    assert per_class["Wan"][2] == pytest.approx(sum(j.wan_in * 0.05 + j.wan_out * 0.08 for j in counted) / 1e9)
    total = report["accounting"]["totals"]
    assert sum(v[2] for v in per_class.values()) == pytest.approx(total["charge"])
    assert sum(v[0] for v in per_class.values()) == total["bytes_in"] == sum(j.bytes_in for j in jobs)

    # one user's day, by class, is the sum of that user's jobs completing that day
    alice = [j for j in counted if j.user == "alice"]
    day = (alice[0].end // DAY) * DAY
    rows = {r["class"]: r for r in series["by_user"] if r["user"] == "alice" and r["start"] == day}
    same_day = [j for j in alice if j.end // DAY * DAY == day]
    assert rows["Wan"]["bytes_in"] == sum(j.wan_in for j in same_day)
    assert rows[UNCLASSIFIED]["bytes_out"] == sum(j.rest_out for j in same_day)


def test_server_utilisation_moves_every_byte_of_every_server(month):
    u = month["report"]["transfers"]["utilisation"]
    assert u["bucket_seconds"] == HOUR
    moved: dict[str, float] = defaultdict(float)
    for r in u["rows"]:
        assert r["bits_per_second"] == pytest.approx(r["bytes"] * 8 / HOUR)
        moved[r["server"]] += r["bytes"]
    sent: dict[str, float] = defaultdict(float)
    for _, _, nbytes, _, server in month["transfers"]:
        sent[server] += nbytes
    assert set(moved) == set(SERVERS)
    for server in SERVERS:
        assert moved[server] == pytest.approx(sent[server], rel=1e-9)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def test_plot_writes_a_figure_per_grouping_and_class(month):
    plot = month["dir"] / "plot"
    assert {p.name for p in plot.glob("*.png")} == FIGURES
    import matplotlib.image

    for name in FIGURES:
        path = plot / name
        w, h = png_size(path)
        assert w >= 800 and h >= 400 and path.stat().st_size > 20_000, name
        pixels = matplotlib.image.imread(path)[..., :3]
        # drawn, not blank: many pixels are neither white nor one flat colour
        assert (pixels.min(axis=2) < 0.9).mean() > 0.02, name
    # six users, three groups: one row each, so the per-user figure is twice as tall
    assert png_size(plot / "accounting_user.png")[1] > 1.6 * png_size(plot / "accounting_group.png")[1]


def test_hourly_cells_become_daily_past_three_days():
    acc = HistoryAccumulator(ReportConfig(charge_per_gb=parse_rates("default=1")))
    G = 1_000_000_000

    def job(n: int, end: int, b_in: int, user: str = "alice") -> HistoryJob:
        return HistoryJob(job=str(n), user=user, bytes_in=b_in, bytes_out=0, counters="lark", start=end - 10,
                         end=end, classes=(("Wan", b_in // 2, 0),))

    acc.add(job(1, 10 * HOUR + 5, 2 * G))
    acc.add(job(2, 10 * HOUR + 50, 4 * G, "bob"))
    acc.add(job(3, 30 * HOUR, 6 * G))
    hourly = acc.result()["series"]
    assert hourly["bucket_seconds"] == HOUR
    assert [(r["user"], r["start"], r["class"], r["bytes_in"]) for r in hourly["by_user"]] == [
        ("alice", 10 * HOUR, "Wan", G), ("alice", 10 * HOUR, UNCLASSIFIED, G),
        ("alice", 30 * HOUR, "Wan", 3 * G), ("alice", 30 * HOUR, UNCLASSIFIED, 3 * G),
        ("bob", 10 * HOUR, "Wan", 2 * G), ("bob", 10 * HOUR, UNCLASSIFIED, 2 * G)]
    acc.add(job(4, 5 * DAY, 8 * G))  # the span is now over 3 days: days from here on
    daily = acc.result()["series"]
    assert daily["bucket_seconds"] == DAY
    # day 0 holds jobs 1 and 2; job 3 (30 h) is day 1; job 4 day 5
    assert [(r["start"], r["class"], r["bytes_in"], r["charge"]) for r in daily["by_class"]] == [
        (0, "Wan", 3 * G, 3.0), (0, UNCLASSIFIED, 3 * G, 3.0), (DAY, "Wan", 3 * G, 3.0),
        (DAY, UNCLASSIFIED, 3 * G, 3.0), (5 * DAY, "Wan", 4 * G, 4.0), (5 * DAY, UNCLASSIFIED, 4 * G, 4.0)]
    assert acc.result()["by_user"][0]["bytes_in"] == 16 * G  # the tables are the buckets' sums


def test_series_in_csv_long_form(month, capsys):
    d = month["dir"]
    assert cli.main(["--no-progress", "--month", "2026-10", "--history", str(d / "history"), *CHARGE_ARGS,
                     "--csv"]) == 0
    rows = [line.split(",") for line in capsys.readouterr().out.splitlines()]
    series = month["report"]["accounting"]["series"]["by_user"]
    first = series[0]
    key = f"{first['user']}|{first['start']}|{first['class']}"
    assert ["accounting.series.by_user", key, "bytes_in", str(first["bytes_in"])] in rows
    assert sum(1 for r in rows if r[0] == "accounting.series.by_user" and r[2] == "bytes_out") == len(series)
