"""Session merging, circuit suitability and concurrency: hand-computed expectations."""

from __future__ import annotations

import math
import random

import pytest

from lark.report.transfers import (
    Transfer,
    TransferTable,
    analyze_transfers,
    circuit_suitability,
    concurrency_buckets,
    merge_sessions,
    server_timelines,
    third_quartile_rate,
    throughputs,
    transfer_concurrency,
)


def table(*rows: tuple) -> TransferTable:
    """rows: (start, end, bytes[, user[, server[, remote]]])"""
    t = TransferTable()
    for r in rows:
        start, end, size, user, server, remote = (*r, "alice", "h1", "r1")[:6] if len(r) == 3 else \
            (*r, "h1", "r1")[:6] if len(r) == 4 else (*r, "r1")[:6] if len(r) == 5 else r
        t.add(start, end, size, user, server, remote)
    return t


def test_merge_overlap_exact_gap_and_latest_completion():
    t = table(
        (0, 100, 10),
        (50, 120, 20),  # overlaps: joins, latest completion 120
        (180, 200, 30),  # starts exactly gap (60 s) after 120: joins (<=)
        (260.000001, 300, 40),  # 60.000001 s after 200: new session
        (270, 280, 50),  # overlaps: joins; latest completion stays 300
        (350, 360, 60),  # 50 s after 300 (the LATEST completion, not 280 of the last transfer): joins
    )
    s = merge_sessions(t, gap=60)
    assert s.rows() == [(0, 0, 200, 60, 3), (0, 260.000001, 360, 150, 3)]


def test_gap_boundary_both_sides():
    t = table((0, 10, 1), (70, 80, 1), (140.5, 150, 1))
    assert [r[4] for r in merge_sessions(t, 60).rows()] == [2, 1]  # 70-10 = 60 joins, 140.5-80 = 60.5 splits
    assert len(merge_sessions(t, 60.5)) == 1
    assert len(merge_sessions(t, 59.999)) == 3


def test_gap_zero_joins_only_touching_or_overlapping():
    t = table((0, 10, 1), (10, 20, 1), (20.000001, 30, 1))
    assert [r[4] for r in merge_sessions(t, 0).rows()] == [2, 1]


def test_users_and_endpoint_pairs_are_kept_apart():
    t = table(
        (0, 10, 1, "alice", "h1", "r1"),
        (20, 30, 2, "bob", "h1", "r1"),  # other user, same endpoints
        (40, 50, 4, "alice", "h1", "r2"),  # same user, other remote
        (45, 55, 8, "alice", "h2", "r1"),  # same user, other server
        (100, 110, 16, "alice", "h1", "r1"),  # 90 s after alice@h1-r1's last completion: new session
        (130, 140, 32, "alice", "h1", "r1"),  # 20 s after: joins
    )
    s = merge_sessions(t, 60)
    got = sorted((t.pair_names(p), start, end, size, n) for p, start, end, size, n in s.rows())
    assert got == [
        (("alice", "h1", "r1"), 0, 10, 1, 1),
        (("alice", "h1", "r1"), 100, 140, 48, 2),
        (("alice", "h1", "r2"), 40, 50, 4, 1),
        (("alice", "h2", "r1"), 45, 55, 8, 1),
        (("bob", "h1", "r1"), 20, 30, 2, 1),
    ]


def test_log_order_is_by_end_so_sessions_sort_by_start():
    # A log lists B (written at 110) before A (written at 200) although A started first.
    t = table((100, 110, 5), (0, 200, 7))
    assert merge_sessions(t, 60).rows() == [(0, 0, 200, 12, 2)]


def test_negative_gap_rejected():
    with pytest.raises(ValueError):
        merge_sessions(table((0, 1, 1)), -1)


def test_throughput_zero_duration_is_nan():
    r = throughputs([0, 5], [10, 5], [100, 7])
    assert r[0] == 10.0 and math.isnan(r[1])


def test_third_quartile_rate_ignores_zero_and_nan():
    assert third_quartile_rate([1, 2, 3, 4, 0, float("nan")]) == 3.25
    assert third_quartile_rate([]) is None


def test_circuit_suitability_hand_computed():
    mb = 1e6
    sizes = [50 * mb, 100 * mb, 300 * mb, 600 * mb, 1000 * mb, 2000 * mb]
    # rate 1 MB/s: durations 100, 300, 600 (not longer than 600), 1000, 2000 s; 50 MB below the minimum
    c = circuit_suitability(sizes, 1e6, min_bytes=100 * mb, min_seconds=600)
    assert (c.eligible, c.suitable) == (5, 2)
    assert c.share == pytest.approx(0.4)
    assert c.bytes_share == pytest.approx(3000 / 4000)
    assert c.as_dict()["eligible_bytes"] == 4000 * mb


def test_circuit_without_rate_or_sessions():
    assert circuit_suitability([1e9], None).share is None
    assert circuit_suitability([], 1e6).share is None


def test_concurrency_hand_computed():
    t = table(
        (0, 10, 100, "u", "h1"),  # A
        (5, 15, 100, "u", "h1"),  # B
        (5, 10, 100, "u", "h1"),  # C
        (0, 10, 100, "u", "h2"),  # D: other server, alone
        (7, 7, 100, "u", "h1"),  # E: zero duration
        (15, 20, 100, "u", "h1"),  # F: starts when B ends: no overlap
    )
    # h1 active count: [0,5) 1, [5,10) 3, [10,15) 1, [15,20) 1
    # A: (5*1 + 5*3)/10 - 1 = 1;  B: (5*3 + 5*1)/10 - 1 = 1;  C: 15/5 - 1 = 2;  F: 5/5 - 1 = 0
    c = transfer_concurrency(t)
    assert list(c[:4]) == pytest.approx([1.0, 1.0, 2.0, 0.0])
    assert math.isnan(c[4])
    assert c[5] == pytest.approx(0.0)


def _brute_force(t: TransferTable) -> list[float]:
    servers = t.column("servers").tolist()
    out = []
    for i in range(len(t)):
        s, e = t.starts[i], t.ends[i]
        if e <= s:
            out.append(float("nan"))
            continue
        overlap = sum(max(0.0, min(e, t.ends[j]) - max(s, t.starts[j]))
                      for j in range(len(t)) if j != i and servers[j] == servers[i])
        out.append(overlap / (e - s))
    return out


def test_concurrency_matches_quadratic_definition_on_random_data():
    rng = random.Random(7)
    t = TransferTable()
    for _ in range(300):
        s = 1.79e9 + rng.uniform(0, 5000)
        t.add(s, s + rng.choice([0, rng.expovariate(1 / 200)]), 1, "u", rng.choice(["h1", "h2", "h3"]), "r")
    fast, slow = transfer_concurrency(t).tolist(), _brute_force(t)
    for a, b in zip(fast, slow, strict=True):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)


def test_server_utilisation_hand_computed():
    t = table((0, 7200, 7200, "u", "X"),  # 1 B/s for two hours: 3600 B in each
              (1800, 1800, 100, "u", "X"),  # zero duration: its bytes go to the hour of its end
              (3600, 5400, 1800, "u", "X", "r2"),  # 1 B/s in the second hour
              (7100, 7300, 2000, "v", "Y"))  # 10 B/s across an hour boundary: 1000 B each side
    conc, rows = server_timelines(t)
    assert [(r["server"], r["start"], r["bytes"]) for r in rows] == [
        ("X", 0, pytest.approx(3700)), ("X", 3600, pytest.approx(5400)),
        ("Y", 3600, pytest.approx(1000)), ("Y", 7200, pytest.approx(1000))]
    assert rows[1]["bits_per_second"] == pytest.approx(5400 * 8 / 3600)
    assert conc[0] == pytest.approx(0.25) and math.isnan(conc[1])  # the 7200 s one overlaps 1800 s of another


def test_concurrency_buckets():
    rows = concurrency_buckets([0.0, 0.2, 1.0, 2.0, 3.4, float("nan"), 20], [10, 20, 30, 40, 60, 99, 5])
    by = {r["concurrency"]: r for r in rows}
    assert by["~0"]["transfers"] == 2 and by["~0"]["median"] == 15
    assert by["~1"]["transfers"] == 1 and by["2-3"]["median"] == 50
    assert by["16+"]["transfers"] == 1 and by["4-7"]["transfers"] == 0


def test_analyze_transfers_summary():
    t = TransferTable.from_transfers([
        Transfer(0, 10, 1000, "alice", "h1", "r1"),
        Transfer(30, 40, 3000, "alice", "h1", "r1", kind="STOR"),
        Transfer(0, 20, 2000, "bob", "h1", "r2"),
    ])
    a = analyze_transfers(t, gap=60, circuit_min_bytes=1500, circuit_min_seconds=15, top=5).summary
    assert a["transfers"] == 3 and a["bytes"] == 6000
    assert a["sessions"]["count"] == 2
    top = a["sessions"]["top"]
    assert [(r["user"], r["bytes"], r["transfers"], r["duration_seconds"]) for r in top] == [
        ("alice", 4000, 2, 40), ("bob", 2000, 1, 20)]
    assert top[0]["bytes_per_second"] == 100
    # transfer rates 100, 300, 100 -> sorted 100,100,300: Q3 at position 1.5 = 200 B/s
    c = a["circuit"]
    assert c["rate_bytes_per_second"] == 200
    # both sessions >= 1500 B; at 200 B/s: 4000 -> 20 s (> 15), 2000 -> 10 s
    assert (c["eligible_sessions"], c["suitable_sessions"], c["share"]) == (2, 1, 0.5)
    assert a["by_user"] == [{"user": "alice", "transfers": 2, "bytes": 4000, "sessions": 1},
                            {"user": "bob", "transfers": 1, "bytes": 2000, "sessions": 1}]
    assert a["by_type"] == [{"type": "RETR", "transfers": 2, "bytes": 3000},  # tie on bytes: by name
                            {"type": "STOR", "transfers": 1, "bytes": 3000}]
    d = a["distributions"]["sessions"]["duration_seconds"]
    assert (d["min"], d["max"], d["mean"]) == (20, 40, 30)
    # alice [0,10) has bob [0,20) beside it all along: 1; bob has alice for 10 of 20 s: 0.5; alice
    # [30,40) is alone: 0. Mean (1 + 0.5 + 0) / 3 = 0.5
    k = a["concurrency"]
    assert k["transfers"] == 3 and k["mean"] == pytest.approx(0.5)


def test_analyze_sessions_rate_basis():
    t = TransferTable.from_transfers([Transfer(0, 10, 1000, "a", "h", "r"), Transfer(100, 110, 1000, "a", "h", "r")])
    a = analyze_transfers(t, rate_basis="sessions").summary
    assert a["circuit"]["rate_basis"] == "sessions" and a["circuit"]["rate_bytes_per_second"] == 100
    with pytest.raises(ValueError):
        analyze_transfers(t, rate_basis="jobs")


def _reference_sessions(rows: list[tuple], gap: float) -> list[tuple]:
    """The rule written the slow, obvious way: per key, by start, against the latest completion so far."""
    out = []
    keys = sorted({r[3:] for r in rows})
    for key in keys:
        mine = sorted((r for r in rows if r[3:] == key), key=lambda r: r[0])
        cur = None
        for s, e, b, *_ in mine:
            if cur is not None and s - cur[1] <= gap:
                cur = [cur[0], max(cur[1], e), cur[2] + b, cur[3] + 1]
            else:
                if cur is not None:
                    out.append((key, *cur))
                cur = [s, e, b, 1]
        out.append((key, *cur))
    return sorted(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorised_merge_matches_the_rule_on_random_data(seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(400):
        s = round(rng.uniform(0, 3000), 6)
        rows.append((s, s + rng.choice([0, 5, rng.expovariate(1 / 50)]), rng.randrange(1000),
                     rng.choice("ab"), rng.choice(["h1", "h2"]), rng.choice(["r1", "r2", "r3"])))
    rows.append((rows[0][1] + 60, rows[0][1] + 70, 1, *rows[0][3:]))  # exactly at the gap somewhere
    t = table(*rows)
    got = sorted((t.pair_names(p), s, e, b, n) for p, s, e, b, n in merge_sessions(t, 60).rows())
    want = _reference_sessions(rows, 60)
    assert [(k, s, e, n) for k, s, e, _, n in got] == [(k, s, e, n) for k, s, e, _, n in want]
    assert [b for *_, b, _ in got] == pytest.approx([b for *_, b, _ in want])
