"""The spider's persisted state: the last link summaries, so an outage does not erase what we knew.

Written atomically (temporary file + rename in the same directory) after every crawl, read at start
and before every crawl's merge. A missing, unreadable or corrupt state file is logged and treated as
empty — the spider then simply has nothing to carry over; it never stops because of it. Every value
read back goes through the same plausibility checks as fresh data when ads are built.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perfsonar.model import GRADES, METRICS, LinkKey, LinkSummary, MetricSummary

log = logging.getLogger("lark.spider")

STATE_VERSION = 1


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


def links_to_json(links: Mapping[LinkKey, LinkSummary], saved_at: float) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "saved_at": saved_at,
        "links": [
            {"src": k.src_site, "dst": k.dst_site, "family": k.family, "quality": link.quality, "reason": link.reason,
             "src_hosts": list(link.src_hosts), "dst_hosts": list(link.dst_hosts), "archives": list(link.archives),
             "metrics": {name: metric_to_json(m) for name, m in link.metrics.items()}}
            for k, link in sorted(links.items(), key=lambda item: (item[0].src_site, item[0].dst_site,
                                                                   item[0].family))
        ],
    }


def links_from_json(doc: Any) -> dict[LinkKey, LinkSummary]:
    """Links from a decoded state document; malformed entries are skipped one by one."""
    if not isinstance(doc, Mapping) or doc.get("version") != STATE_VERSION or not isinstance(doc.get("links"), list):
        return {}
    out: dict[LinkKey, LinkSummary] = {}
    for entry in doc["links"]:
        if not isinstance(entry, Mapping):
            continue
        src, dst, family = entry.get("src"), entry.get("dst"), entry.get("family")
        if not isinstance(src, str) or not isinstance(dst, str) or family not in (4, 6):
            continue
        raw = entry.get("metrics")
        metrics = {}
        for name, m in (raw.items() if isinstance(raw, Mapping) else ()):
            parsed = metric_from_json(name, m)
            if parsed is not None:
                metrics[name] = parsed
        if not metrics:
            continue
        key = LinkKey(src, dst, int(family))

        def strings(v: Any) -> tuple[str, ...]:
            return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()

        quality = entry.get("quality") if entry.get("quality") in GRADES else "unknown"
        out[key] = LinkSummary(key=key, metrics=metrics, quality=str(quality), reason=str(entry.get("reason", "")),
                               src_hosts=strings(entry.get("src_hosts")), dst_hosts=strings(entry.get("dst_hosts")),
                               archives=strings(entry.get("archives")))
    return out


def load_state(path: Path | None) -> dict[LinkKey, LinkSummary]:
    """The links saved by the previous crawl; {} (with a log line) when there is no usable file."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        log.warning("cannot read state file %s: %s; starting without previous values", path, err.strerror)
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        log.warning("state file %s is corrupt (%s); starting without previous values", path, err)
        return {}
    links = links_from_json(doc)
    if not links and isinstance(doc, Mapping) and doc.get("links"):
        log.warning("state file %s has no usable links (version %s)", path, doc.get("version"))
    return links


def save_state(path: Path | None, links: Mapping[LinkKey, LinkSummary], saved_at: float) -> None:
    """Write the state atomically; a failure is logged, not raised (the next crawl tries again)."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(links_to_json(links, saved_at), fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        log.error("cannot write state file %s: %s", path, err.strerror or err)
