"""The spider's persisted state: the last link summaries, so an outage does not erase what we knew.

Format: JSON Lines — a header ``{"version": 1, "saved_at": …, "links": N}`` and one link per line, so
a state of 10^5 links is written and read without building one huge document. Written atomically
(temporary file + rename in the same directory) after every crawl, read when the spider starts. A
missing, unreadable or corrupt state file (or line) is logged and treated as empty — the spider then
has nothing to carry over, but never stops because of it. Every value read back goes through the
same plausibility checks as fresh data when ads are built.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from perfsonar.model import GRADES, METRICS, LinkKey, LinkSummary, MetricSummary

log = logging.getLogger("lark.spider")

STATE_VERSION = 2  # 2: JSON Lines (a header line, then one link per line); 1 was one document


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def metric_to_json(m: MetricSummary) -> dict[str, Any]:
    return {"n": m.n, "median": m.median, "p25": m.p25, "p75": m.p75, "mean": m.mean, "latest": m.latest,
            "latest_ts": m.latest_ts, "interval": m.expected_interval, "successes": m.successes,
            "failures": m.failures, "last_error": m.last_error, "quality": m.quality, "reason": m.reason,
            "carried": m.carried}


def metric_from_json(metric: str, d: Mapping[str, Any]) -> MetricSummary | None:
    if metric not in METRICS or not isinstance(d, Mapping):
        return None
    interval = _num(d.get("interval"))
    quality = d.get("quality")
    if interval is None or interval <= 0 or quality not in GRADES:
        return None
    return MetricSummary(
        metric=metric, n=int(_num(d.get("n")) or 0), median=_num(d.get("median")), p25=_num(d.get("p25")),
        p75=_num(d.get("p75")), mean=_num(d.get("mean")), latest=_num(d.get("latest")),
        latest_ts=_num(d.get("latest_ts")), expected_interval=interval, successes=int(_num(d.get("successes")) or 0),
        failures=int(_num(d.get("failures")) or 0),
        last_error=d.get("last_error") if isinstance(d.get("last_error"), str) else None,
        quality=str(quality), reason=str(d.get("reason", "")), carried=bool(d.get("carried", False)))


def link_to_json(link: LinkSummary) -> dict[str, Any]:
    k = link.key
    return {"src": k.src_site, "dst": k.dst_site, "family": k.family, "quality": link.quality, "reason": link.reason,
            "src_hosts": list(link.src_hosts), "dst_hosts": list(link.dst_hosts), "archives": list(link.archives),
            "metrics": {name: metric_to_json(m) for name, m in link.metrics.items()}}


def link_from_json(entry: Any) -> LinkSummary | None:
    """One link from its decoded state entry; None when the entry is malformed."""
    if not isinstance(entry, Mapping):
        return None
    src, dst, family = entry.get("src"), entry.get("dst"), entry.get("family")
    if not isinstance(src, str) or not isinstance(dst, str) or family not in (4, 6):
        return None
    raw = entry.get("metrics")
    metrics = {}
    for name, m in (raw.items() if isinstance(raw, Mapping) else ()):
        parsed = metric_from_json(name, m)
        if parsed is not None:
            metrics[name] = parsed
    if not metrics:
        return None

    def strings(v: Any) -> tuple[str, ...]:
        return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()

    quality = entry.get("quality") if entry.get("quality") in GRADES else "unknown"
    return LinkSummary(key=LinkKey(src, dst, int(family)), metrics=metrics, quality=str(quality),
                       reason=str(entry.get("reason", "")), src_hosts=strings(entry.get("src_hosts")),
                       dst_hosts=strings(entry.get("dst_hosts")), archives=strings(entry.get("archives")))


def write_links(fh: IO[str], links: Mapping[LinkKey, LinkSummary], saved_at: float) -> None:
    """JSON Lines: a header line, then one link per line (streamed: no 10^5-entry document in memory)."""
    fh.write(json.dumps({"version": STATE_VERSION, "saved_at": saved_at, "links": len(links)}) + "\n")
    for key in sorted(links, key=lambda k: (k.src_site, k.dst_site, k.family)):
        fh.write(json.dumps(link_to_json(links[key]), separators=(",", ":")) + "\n")


def iter_links(lines: Iterable[str], source: str = "state") -> Iterator[LinkSummary]:
    """Links from the lines :func:`write_links` wrote, one at a time; bad lines are skipped (and
    counted in the log), a bad header yields nothing."""
    it = iter(lines)
    try:
        header = json.loads(next(it))
    except (StopIteration, json.JSONDecodeError):
        log.warning("%s: no valid header line; starting without previous values", source)
        return
    if not isinstance(header, Mapping) or header.get("version") != STATE_VERSION:
        log.warning("%s: unsupported state version; starting without previous values", source)
        return
    bad = 0
    for line in it:
        try:
            link = link_from_json(json.loads(line))
        except json.JSONDecodeError:
            link = None
        if link is None:
            bad += 1
            continue
        yield link
    if bad:
        log.warning("%s: skipped %d unreadable link entries", source, bad)


def stream_state(path: Path | None) -> Iterator[LinkSummary]:
    """The saved links one by one, read straight from the file (no 10^5-link dict in memory)."""
    if path is None:
        return
    try:
        fh = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    except OSError as err:
        log.warning("cannot read state file %s: %s; starting without previous values", path, err.strerror)
        return
    with fh:
        yield from iter_links(fh, str(path))


def load_state(path: Path | None) -> dict[LinkKey, LinkSummary]:
    """The links saved by the previous crawl; {} (with a log line) when there is no usable file."""
    if path is None:
        return {}
    return {link.key: link for link in stream_state(path)}


def save_state(path: Path | None, links: Mapping[LinkKey, LinkSummary], saved_at: float) -> bool:
    """Write the state atomically; a failure is logged, not raised (the next crawl tries again).
    True when the file now holds ``links``."""
    if path is None:
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                write_links(fh, links, saved_at)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        log.error("cannot write state file %s: %s", path, err.strerror or err)
        return False
    return True
