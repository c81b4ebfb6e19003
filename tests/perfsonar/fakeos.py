"""The perfSONAR 5 OpenSearch archive of the loopback fake: documents and the ``_search`` evaluator.

Split from :mod:`tests.perfsonar.fakeps` (which re-exports these names); shapes follow the perfSONAR
5 Logstash pipeline (``06-result_*.conf``) and OpenSearch's documented search and aggregation responses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

Response = tuple[int, Any, str]  # status, JSON-able object or raw bytes, content type
JSON = "application/json"


def os_doc(test_type: str, src: tuple[str, str], dst: tuple[str, str], ip_version: int, start: float, *,
           succeeded: bool = True, error: str | None = None, throughput: float | None = None,
           latency_median: float | None = None, loss: float | None = None, rtt_mean_s: float | None = None,
           bucket_width: float = 0.001, repeat: float | None = None, tz_hours: int = 0,
           rtt_as_iso: bool = False, tool: str | None = None, udp: bool = False, retransmits: int | None = 3,
           mss: int | None = None, duration: float | None = None, hops: list[str] | None = None,
           null_fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """One ``pscheduler_<type>`` document as the perfSONAR 5 Logstash pipeline stores it.

    Shapes (Logstash ``06-result_*.conf``): throughput ``result.throughput`` (bit/s, sender side), TCP
    ``result.retransmits``/``mss``/``mtu`` or UDP flat ``result.packets_sent``/``packets_lost``, and
    ``test.spec.duration`` in seconds; latency/latencybg ``result.packets.*`` and ``result.latency.*`` in
    bucket-width units (owping, twping, powstream); rtt ``result.rtt.*`` in seconds; trace
    ``result.hop.*`` with the full paths in ``result.json``. ``null_fields`` sets dotted fields to null,
    as documents of tools that did not report them have.
    """
    tz = timezone(timedelta(hours=tz_hours))
    started = datetime.fromtimestamp(start, UTC).astimezone(tz)
    spec: dict[str, Any] = {"schema": 1, "source": src[0], "dest": dst[0], "ip-version": ip_version}
    tool = tool or {"throughput": "iperf3", "latencybg": "powstream", "latency": "owping", "rtt": "ping",
                    "trace": "traceroute"}[test_type]
    if test_type in ("latencybg", "latency"):
        spec |= {"packet-count": 600, "packet-interval": 0.1, "bucket-width": bucket_width}
    if test_type == "throughput":
        if duration is not None:
            spec["duration"] = duration
        if udp:
            spec["udp"] = True
    doc: dict[str, Any] = {
        "@timestamp": (started + timedelta(seconds=40)).isoformat(),
        "id": hashlib.md5(f"{src}{dst}{start}{test_type}".encode()).hexdigest(),
        "test": {"type": test_type, "spec": spec},
        "pscheduler": {"start_time": started.isoformat(timespec="seconds"),
                       "end_time": (started + timedelta(seconds=35)).isoformat(timespec="seconds"),
                       "tool": tool, "test_checksum": hashlib.sha256(f"{src}{dst}{test_type}".encode()).hexdigest()},
        "meta": {"ip_version": ip_version, "source": {"ip": src[1], "hostname": src[0]},
                 "destination": {"ip": dst[1], "hostname": dst[0]},
                 "observer": {"ip": src[1], "hostname": src[0]}},
        "result": {"succeeded": succeeded},
    }
    if repeat is not None:
        doc["schedule"] = {"repeat": repeat, "slip": repeat, "sliprand": True}
    r = doc["result"]
    if not succeeded:
        r["error"] = error or "run failed"
        return doc
    if test_type == "throughput":
        r |= {"throughput": throughput, "mtu": 9000}
        if udp:
            sent = 100000
            r |= {"packets_sent": sent, "packets_lost": round((loss or 0.0) * sent), "jitter": 0.02}
        else:
            if retransmits is not None:
                r["retransmits"] = retransmits
            if mss is not None:
                r["mss"] = mss
    elif test_type in ("latencybg", "latency"):
        med = latency_median
        r |= {"max_clock_error": 1.2,
              "packets": {"sent": 600, "received": 600 - round((loss or 0) * 600), "lost": round((loss or 0) * 600),
                          "duplicated": 0, "reordered": 0, "loss": loss},
              "latency": {"min": med, "max": med, "mean": med, "median": med, "p_25": med, "p_75": med}}
    elif test_type == "rtt":
        mean: Any = f"PT{rtt_mean_s}S" if rtt_as_iso else rtt_mean_s
        r |= {"packets": {"sent": 10, "received": 10, "lost": 0, "loss": loss or 0.0},
              "rtt": {"min": mean, "max": mean, "mean": mean, "stddev": 0.0}}
    elif test_type == "trace":
        path = hops or [src[1], dst[1]]
        r |= {"mtu": 9000, "hop": {"count": len(path), "success_count": len(path), "error_count": 0, "ip": path,
                                   "ip_str": " ".join(path),
                                   "checksum": hashlib.sha256(" ".join(path).encode()).hexdigest()},
              "json": [[{"ip": ip, "rtt": "PT0.0012S"} for ip in path]]}
    for dotted in null_fields:
        cur = doc
        *parents, last = dotted.split(".")
        for part in parents:
            cur = cur.setdefault(part, {})
        cur[last] = None
    return doc


def _dig(doc: Any, dotted: str) -> Any:
    cur = doc
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _present(doc: Any, dotted: str) -> bool:
    """Whether the document has the field at all (an explicit null counts: ``_source`` keeps it)."""
    cur = doc
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return False
        cur = cur[part]
    return True


def _project(doc: Mapping[str, Any], includes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in includes:
        if not _present(doc, path):
            continue
        value = _dig(doc, path)
        cur = out
        parts = path.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
    return out


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class OpenSearchApp:
    """The ``/opensearch`` proxy of a perfSONAR 5 archive, evaluating the queries the spider sends.

    Supports: index lists with ``ignore_unavailable``, a ``range`` filter on ``pscheduler.start_time``,
    and a ``composite`` aggregation over field terms (with ``after`` paging and ``missing_bucket``)
    with ``filter``/``min``/``top_hits`` sub-aggregations — the documented response envelope.
    """

    def __init__(self) -> None:
        self.indices: dict[str, list[dict[str, Any]]] = {}
        self.bodies: list[Any] = []

    def add(self, doc: dict[str, Any]) -> None:
        self.indices.setdefault(f"pscheduler_{doc['test']['type']}", []).append(doc)

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes, base: str) -> Response:
        parts = [p for p in path.split("/") if p]
        if len(parts) != 2 or parts[1] != "_search":
            return 404, {"error": {"type": "not_found"}, "status": 404}, JSON
        names = parts[0].split(",")
        ignore = query.get("ignore_unavailable", ["false"])[0] == "true"
        missing = [n for n in names if n not in self.indices]
        if missing and not ignore:
            return 404, {"error": {"type": "index_not_found_exception", "index": missing[0]}, "status": 404}, JSON
        req = json.loads(body or b"{}")
        self.bodies.append(req)
        docs = [d for n in names for d in self.indices.get(n, [])]
        for flt in _dig(req, "query.bool.filter") or []:
            rng = (flt.get("range") or {}).get("pscheduler.start_time")
            if rng:
                lo = _ts(rng["gte"]) if "gte" in rng else float("-inf")
                hi = _ts(rng["lte"]) if "lte" in rng else float("inf")
                below = _ts(rng["lt"]) if "lt" in rng else float("inf")
                docs = [d for d in docs if lo <= _ts(d["pscheduler"]["start_time"]) <= hi
                        and _ts(d["pscheduler"]["start_time"]) < below]
        envelope: dict[str, Any] = {"took": 3, "timed_out": False,
                                    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                                    "hits": {"total": {"value": len(docs), "relation": "eq"}, "max_score": None,
                                             "hits": []}}
        aggs = req.get("aggs") or {}
        if "pairs" in aggs:
            envelope["aggregations"] = {"pairs": self._composite(docs, aggs["pairs"])}
        if "filter_path" in query:
            envelope = filter_path(envelope, query["filter_path"][0].split(","))
        return 200, envelope, JSON

    def _composite(self, docs: list[dict[str, Any]], spec: Mapping[str, Any]) -> dict[str, Any]:
        comp = spec["composite"]
        sources = [(name, cfg["terms"]["field"]) for src in comp["sources"] for name, cfg in src.items()]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for d in docs:
            groups.setdefault(tuple(_dig(d, f) for _, f in sources), []).append(d)

        def order(key: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple((v is not None, str(v)) for v in key)

        keys = sorted(groups, key=order)
        after = comp.get("after")
        if after:
            marker = order(tuple(after.get(n) for n, _ in sources))
            keys = [k for k in keys if order(k) > marker]
        keys = keys[: comp["size"]]
        buckets = []
        sub = spec.get("aggs", {})
        for key in keys:
            members = groups[key]
            bucket: dict[str, Any] = {"key": {n: v for (n, _), v in zip(sources, key, strict=True)},
                                      "doc_count": len(members)}
            if "ok" in sub:
                term = sub["ok"]["filter"]["term"]
                field_name, wanted = next(iter(term.items()))
                bucket["ok"] = {"doc_count": sum(1 for m in members if _dig(m, field_name) == wanted)}
            if "last" in sub:  # max over a date: epoch milliseconds, and the date as a string
                newest = max(_ts(m["pscheduler"]["start_time"]) for m in members)
                bucket["last"] = {"value": newest * 1000.0,
                                  "value_as_string": datetime.fromtimestamp(newest, UTC).strftime(
                                      "%Y-%m-%dT%H:%M:%S.000Z")}
            if "repeat" in sub:
                vals = [v for v in (_dig(m, sub["repeat"]["min"]["field"]) for m in members) if v is not None]
                bucket["repeat"] = {"value": min(vals) if vals else None}
            for name in ("names", "recent"):
                if name not in sub:
                    continue
                th = sub[name]["top_hits"]
                ordered = sorted(members, key=lambda m: _ts(m["pscheduler"]["start_time"]), reverse=True)[: th["size"]]
                includes = th.get("_source", {}).get("includes", [])
                bucket[name] = {"hits": {"total": {"value": len(members), "relation": "eq"}, "max_score": None,
                                             "hits": [{"_index": ".ds-pscheduler-000001", "_id": m["id"],
                                                       "_score": None, "_source": _project(m, includes),
                                                       "sort": [int(_ts(m["pscheduler"]["start_time"]) * 1000)]}
                                                      for m in ordered]}}
            buckets.append(bucket)
        out: dict[str, Any] = {"buckets": buckets}
        if buckets:
            out["after_key"] = buckets[-1]["key"]
        return out


def filter_path(doc: Any, patterns: list[str]) -> Any:
    """OpenSearch ``filter_path``: keep only the dotted paths given; arrays are walked through."""
    def keep(node: Any, paths: list[list[str]]) -> Any:
        if any(not p for p in paths):
            return node
        if isinstance(node, list):
            kept = [keep(item, paths) for item in node]
            return [k for k in kept if k is not _DROP]
        if not isinstance(node, Mapping):
            return _DROP
        out = {}
        for key, value in node.items():
            sub = [p[1:] for p in paths if p and p[0] in (key, "*")]
            if sub:
                kept = keep(value, sub)
                if kept is not _DROP:
                    out[key] = kept
        return out if out else _DROP

    result = keep(doc, [p.split(".") for p in patterns if p])
    return {} if result is _DROP else result


_DROP = object()
