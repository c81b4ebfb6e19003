"""lark-netd's log rotates the way HTCondor's daemon logs do (MAX_LARK_NETD_LOG, MAX_NUM_LARK_NETD_LOG)."""

from __future__ import annotations

import logging
from pathlib import Path

from lark.broker.main import DEFAULT_MAX_LOG, log_handler, log_rotation


def write(handler: logging.Handler, count: int) -> None:
    logger = logging.getLogger(f"lark.test.rotation.{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    for i in range(count):
        logger.warning("line %03d %s", i, "x" * 40)
    handler.close()
    logger.removeHandler(handler)


def test_the_log_becomes_old_at_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "LarkNetdLog"
    knobs = {"MAX_LARK_NETD_LOG": "500"}
    write(log_handler(path, knobs.get), 40)  # 40 lines of ~50 bytes: 2,000 bytes, 4 rotations
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LarkNetdLog", "LarkNetdLog.old"]
    assert path.stat().st_size <= 500
    # the newest lines are in the live file, the ones before them in .old; older ones are gone
    assert "line 039" in path.read_text()
    old = (tmp_path / "LarkNetdLog.old").read_text()
    assert "line 000" not in old and old.strip()


def test_more_old_files_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "LarkNetdLog"
    write(log_handler(path, {"MAX_LARK_NETD_LOG": "500", "MAX_NUM_LARK_NETD_LOG": "3"}.get), 60)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "LarkNetdLog", "LarkNetdLog.old", "LarkNetdLog.old.1", "LarkNetdLog.old.2"]


def test_zero_never_rotates_and_bad_values_fall_back_to_htcondors_defaults(tmp_path: Path) -> None:
    path = tmp_path / "LarkNetdLog"
    write(log_handler(path, {"MAX_LARK_NETD_LOG": "0"}.get), 100)
    assert [p.name for p in tmp_path.iterdir()] == ["LarkNetdLog"]
    assert log_rotation({"MAX_LARK_NETD_LOG": "10MB", "MAX_NUM_LARK_NETD_LOG": "x"}.get) == (DEFAULT_MAX_LOG, 1)
    assert log_rotation({}.get) == (10 * 1024 * 1024, 1)
