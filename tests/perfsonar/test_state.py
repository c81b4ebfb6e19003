"""The state file: round trip, atomic replacement, and tolerance of damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfsonar.model import M_LOSS, M_THROUGHPUT, STALE, LinkKey, LinkSummary
from perfsonar.quality import QualityPolicy, link_grade, summarise_metric
from perfsonar.state import load_state, save_state

NOW = 1_746_200_000.0


def links() -> dict[LinkKey, LinkSummary]:
    p = QualityPolicy()
    out = {}
    for i, fam in enumerate((4, 6)):
        metrics = {M_THROUGHPUT: summarise_metric(M_THROUGHPUT, [(NOW - 60, 9e9 - i)], 1, [(NOW - 90, "err")], 21600,
                                                  NOW, p),
                   M_LOSS: summarise_metric(M_LOSS, [(NOW - 60, 0.001)], 1, [], 60, NOW, p)}
        key = LinkKey("A", "B", fam)
        out[key] = LinkSummary(key, metrics, *link_grade(metrics), ("a.example",), ("b.example",), ("http://x/",))
    return out


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    original = links()
    save_state(path, original, NOW)
    assert load_state(path) == original
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary files left behind


def test_missing_and_corrupt_files_mean_empty_state(tmp_path: Path) -> None:
    assert load_state(tmp_path / "none.json") == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert load_state(bad) == {}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 0}) + "\n")
    assert load_state(old) == {}


def _truncated(line: str) -> str:
    return line[: len(line) // 2]  # e.g. a disk that filled up mid-write


def _bad_values(line: str) -> str:
    entry = json.loads(line)
    entry["metrics"]["throughput"]["quality"] = "excellent"  # not a grade
    entry["metrics"]["loss"]["interval"] = -1  # not a cadence
    return json.dumps(entry)


@pytest.mark.parametrize("damage", [_truncated, _bad_values])
@pytest.mark.parametrize("damaged_line", [1, 2])
def test_a_damaged_line_costs_only_its_own_link(tmp_path: Path, damage, damaged_line: int,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """One damaged link entry (and one with an impossible address family) is skipped with a warning;
    the other link comes back with all its values, including when it was measured (its age)."""
    path = tmp_path / "state.json"
    original = links()
    save_state(path, original, NOW)
    lines = path.read_text().splitlines()
    assert len(lines) == 3  # the header, then one line per link
    entry = json.loads(lines[damaged_line])
    damaged_key = LinkKey(entry["src"], entry["dst"], entry["family"])
    lines[damaged_line] = damage(lines[damaged_line])
    lines.append(json.dumps({"src": "C", "dst": "D", "family": 5, "metrics": {}}))
    path.write_text("\n".join(lines) + "\n")

    with caplog.at_level("WARNING"):
        loaded = load_state(path)

    survivor = next(key for key in original if key != damaged_key)
    assert loaded == {survivor: original[survivor]}
    assert loaded[survivor].measured_at == NOW - 60
    assert "skipped 2 unreadable link entries" in caplog.text


def test_carried_flag_and_grades_survive(tmp_path: Path) -> None:
    from dataclasses import replace

    original = links()
    key = LinkKey("A", "B", 4)
    m = replace(original[key].metrics[M_THROUGHPUT], quality=STALE, carried=True)
    original[key] = replace(original[key], metrics={M_THROUGHPUT: m})
    path = tmp_path / "state.json"
    save_state(path, original, NOW)
    again = load_state(path)[key].metrics[M_THROUGHPUT]
    assert again.carried and again.quality == STALE and again.last_error == "err"


def test_unwritable_location_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert save_state(blocker / "state.json", links(), NOW) is False  # parent is a file: no exception
    assert "cannot write state file" in caplog.text
    assert save_state(tmp_path / "state.json", links(), NOW) is True


def test_a_version_1_state_file_is_reported_not_silently_empty(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "links": []}\n')
    assert load_state(path) == {}
    assert "version" in caplog.text
