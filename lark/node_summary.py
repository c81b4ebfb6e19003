"""The execute node's network totals, for its startd ad (``LarkNodeBytesIn``, ...).

HTCondor's own way to show what a node does is attributes in its machine ad, which
``condor_status`` and every pool monitor already read. The broker keeps the totals in one small
file in its state directory (ended jobs' final bytes, kept across broker restarts, plus the jobs
running now) and a startd cron job, ``lark node-ad``, prints them as ClassAd attributes; the cron
runs unprivileged, so the file is world-readable and holds only node totals.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lark.shares import ShareSettings

NODE_SUMMARY_FILE = "node.json"


def load_ended(path: Path) -> dict[str, int]:
    """The ended jobs' totals the last broker left (zeros for a new node or a damaged file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    ended = data.get("ended") if isinstance(data.get("ended"), dict) else {}
    return {key: int(ended.get(key, 0)) if isinstance(ended.get(key, 0), int) else 0
            for key in ("jobs", "bytes_in", "bytes_out")}


def add_ended(ended: Mapping[str, int], bytes_in: int, bytes_out: int) -> dict[str, int]:
    return {"jobs": ended.get("jobs", 0) + 1, "bytes_in": ended.get("bytes_in", 0) + bytes_in,
            "bytes_out": ended.get("bytes_out", 0) + bytes_out}


def write(path: Path, ended: Mapping[str, int], jobs: int, bytes_in: int, bytes_out: int) -> None:
    data = {"time": int(time.time()), "ended": dict(ended),
            "running": {"jobs": jobs, "bytes_in": bytes_in, "bytes_out": bytes_out}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def startd_attributes(path: Path, now: float | None = None) -> dict[str, object]:
    """The machine-ad attributes ``lark node-ad`` prints (pure apart from reading ``path``)."""
    try:
        data = json.loads(path.read_text())
        ended, running = data["ended"], data["running"]
        written = int(data["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return {"LarkNodeSummaryError": f"no node summary at {path} (is lark-netd running?)"}
    now = time.time() if now is None else now
    return {
        "LarkNodeBytesIn": int(ended.get("bytes_in", 0)) + int(running.get("bytes_in", 0)),
        "LarkNodeBytesOut": int(ended.get("bytes_out", 0)) + int(running.get("bytes_out", 0)),
        "LarkNodeJobsRunning": int(running.get("jobs", 0)),
        "LarkNodeJobsEnded": int(ended.get("jobs", 0)),
        "LarkNodeSummaryAge": max(0, int(now) - written),
    }


def share_attributes(settings: ShareSettings) -> dict[str, object]:
    """The node's share policy for its ad (pure): whether users share the uplink, and how."""
    if not settings.enabled:
        return {"LarkSharePolicy": "off"}
    attrs: dict[str, object] = {
        "LarkSharePolicy": settings.summary(),
        "LarkShareUplinkMbit": settings.uplink_mbit,
        "LarkShareDownlinkMbit": settings.downlink_mbit,
    }
    if settings.user_ceiling_mbit:
        attrs["LarkShareUserCeilingMbit"] = settings.user_ceiling_mbit
    return attrs
