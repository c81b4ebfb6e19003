"""Totals, per-class charging and top-N from job records: hand-computed expectations."""

from __future__ import annotations

import pytest

from lark.report.accounting import HistoryAccumulator, class_breakdown, job_charge
from lark.report.history import HistoryJob
from lark.report.settings import UNCLASSIFIED, ReportConfig, parse_rates

G = 1_000_000_000


def cfg(rates: str = "", top: int = 10) -> ReportConfig:
    return ReportConfig(charge_per_gb=parse_rates(rates), top=top)


def job(jid: str, user: str = "alice", b_in: int | None = 0, b_out: int | None = 0, classes=(), **kw) -> HistoryJob:
    counters = "lark" if b_in is not None or b_out is not None else ""
    return HistoryJob(job=jid, user=user, bytes_in=b_in, bytes_out=b_out, counters=counters, classes=tuple(classes),
                     **kw)


def test_per_class_charging_hand_computed():
    j = job("1.0", b_in=10 * G, b_out=4 * G, classes=[("Wan", 6 * G, 2 * G), ("Campus", 1 * G, 1 * G)])
    c = cfg("default=0.01, wan=0.05, wan:out=0.10, campus=0")
    total, parts = job_charge(j, c)
    # Wan: 6 GB in at 0.05 + 2 GB out at 0.10 = 0.50; Campus 0; unclassified 3 GB in + 1 GB out at 0.01 = 0.04
    assert total == pytest.approx(0.54)
    assert [(p[0], p[1], p[2], round(p[3], 10)) for p in parts] == [
        ("Wan", 6 * G, 2 * G, 0.5), ("Campus", G, G, 0.0), (UNCLASSIFIED, 3 * G, G, 0.04)]


def test_rate_lookup_order_and_name_forms():
    c = cfg("default=0.01, default:out=0.02, off_campus=0.03, wan:in=0.2")
    assert c.rate("OffCampus", "in") == 0.03  # off_campus and OffCampus are the same class
    assert c.rate("Wan", "in") == 0.2 and c.rate("Wan", "out") == 0.02  # direction, then default:direction
    assert c.rate("Lab", "in") == 0.01 and c.rate(UNCLASSIFIED, "out") == 0.02
    assert cfg().rate("Wan", "in") == 0.0


def test_no_counters_no_charge_and_inconsistent_classes():
    assert job_charge(job("1", b_in=None, b_out=None), cfg("default=1")) == (0.0, [])
    rows, bad = class_breakdown(job("2", b_in=5, b_out=5, classes=[("Wan", 7, 1)]))
    assert bad and rows == [("Wan", 7, 1), (UNCLASSIFIED, 0, 4)]
    rows, bad = class_breakdown(job("3", b_in=5, b_out=0))
    assert not bad and rows == [(UNCLASSIFIED, 5, 0)]


def test_accumulator_totals_top_and_distributions():
    acc = HistoryAccumulator(cfg("default=1", top=2))
    records = [
        job("1", "alice", 2 * G, 1 * G, group="cms", execute_site="UNL", source_site="FNAL", sandbox_in=10,
            start=0, end=100, classes=[("Wan", G, 0)]),
        job("2", "alice", 1 * G, 0, group="cms", execute_site="MIT", source_site="FNAL", start=0, end=300),
        job("3", "bob", 5 * G, 1 * G, group="atlas", execute_site="UNL", source_site="BNL", input_mb=2.5,
            start=100, end=150),
        job("4", "bob", None, None, group="atlas", execute_site="UNL", start=0, end=10),  # no counters
    ]
    for r in records:
        acc.add(r)
    res = acc.result()
    t = res["totals"]
    assert (t["jobs"], t["jobs_with_counters"], t["bytes_in"], t["bytes_out"]) == (4, 3, 8 * G, 2 * G)
    assert (t["charge"], t["sandbox_in"], t["input_mb"], t["wall_seconds"]) == (pytest.approx(10.0), 10, 2.5, 460)
    by_user = {r["user"]: r for r in res["by_user"]}
    assert [r["user"] for r in res["by_user"]] == ["bob", "alice"]  # 6 GB before 4 GB
    assert (by_user["alice"]["jobs"], by_user["alice"]["bytes_total"], by_user["alice"]["charge"]) == \
        (2, 4 * G, pytest.approx(4.0))
    assert (by_user["bob"]["jobs"], by_user["bob"]["jobs_with_counters"]) == (2, 1)
    assert [(r["execute_site"], r["bytes_total"], r["jobs"]) for r in res["by_execute_site"]] == [
        ("UNL", 9 * G, 3), ("MIT", G, 1)]
    assert [(r["source_site"], r["bytes_total"]) for r in res["by_source_site"]] == [
        ("BNL", 6 * G), ("FNAL", 4 * G), ("(unknown)", 0)]
    assert [(r["group"], r["jobs"]) for r in res["by_group"]] == [("atlas", 2), ("cms", 2)]
    classes = {r["class"]: r for r in res["by_class"]}
    assert (classes["Wan"]["bytes_in"], classes["Wan"]["jobs"]) == (G, 1)
    assert (classes[UNCLASSIFIED]["bytes_in"], classes[UNCLASSIFIED]["bytes_out"]) == (7 * G, 2 * G)
    assert [r["job"] for r in res["top_jobs"]] == ["3", "1"]  # top 2 by bytes
    d = res["distributions"]
    assert d["bytes"]["count"] == 3 and d["bytes"]["median"] == 3 * G
    # durations 100, 300, 50 s (job 4 has no counters); rates 3e7, 3.333e6, 1.2e8 B/s
    assert (d["duration_seconds"]["min"], d["duration_seconds"]["max"]) == (50, 300)
    assert d["bytes_per_second"]["max"] == 6 * G / 50
    # all four completed in the hour starting at 0; job 1: Wan G in (charge 1), the rest unclassified
    # (G in, G out: 2); job 2: G in (1); job 3: 5 G in, G out (6); job 4 has no counters
    series = res["series"]
    assert (series["bucket_seconds"], series["classes"]) == (3600, ["Wan", UNCLASSIFIED])
    assert series["by_execute_site"] == [
        {"execute_site": "UNL", "start": 0, "class": "Wan", "bytes_in": G, "bytes_out": 0, "charge": 1.0},
        {"execute_site": "UNL", "start": 0, "class": UNCLASSIFIED, "bytes_in": 6 * G, "bytes_out": 2 * G,
         "charge": 8.0},
        {"execute_site": "MIT", "start": 0, "class": UNCLASSIFIED, "bytes_in": G, "bytes_out": 0, "charge": 1.0}]
    assert series["by_class"] == [
        {"class": "Wan", "start": 0, "bytes_in": G, "bytes_out": 0, "charge": 1.0},
        {"class": UNCLASSIFIED, "start": 0, "bytes_in": 7 * G, "bytes_out": 2 * G, "charge": 9.0}]


def test_top_ties_keep_the_first_seen():
    acc = HistoryAccumulator(cfg(top=2))
    for i in range(4):
        acc.add(job(str(i), b_in=5))
    assert [r["job"] for r in acc.result()["top_jobs"]] == ["0", "1"]


def test_accumulator_charge_equals_sum_of_job_charges():
    c = cfg("default=0.01, wan=0.05, wan:out=0.1, campus=0.002")
    jobs = [job(str(i), b_in=(i + 1) * G, b_out=i * G // 2,
                classes=[("Wan", i * G // 3, i * G // 5)] + ([("Campus", G // 7, 0)] if i % 2 else []))
            for i in range(12)]
    acc = HistoryAccumulator(c)
    for j in jobs:
        acc.add(j)
    assert acc.result()["totals"]["charge"] == pytest.approx(sum(job_charge(j, c)[0] for j in jobs))
    assert sum(r["charge"] for r in acc.result()["by_class"]) == pytest.approx(acc.result()["totals"]["charge"])


def test_groupings_match_job_record_field_order():
    from lark.report.accounting import GROUPINGS

    assert HistoryJob._fields[1:6] == GROUPINGS  # HistoryAccumulator.add slices job[1:6]
