"""A real loopback HTTP server that speaks perfSONAR, plus generators of perfSONAR-shaped data.

Shapes follow the public sources of the software that produces them, listed in docs/spider.md ("Test
fixtures and where their shapes come from"). Nothing is a mock of the client: the spider talks HTTP to a
``ThreadingHTTPServer`` on 127.0.0.1 (or ::1) with an ephemeral port. Apps are mounted under path
prefixes so one server can host several archives; faults (HTTP errors, sleeping past the client's
timeout, truncated JSON, oversized bodies, HTML answers) can be injected per path prefix.

The apps' ``handle`` methods are plain functions of the request, so the benchmark can serve the
same apps from a faster server.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

# The OpenSearch archive lives in tests/perfsonar/fakeos.py; its names are part of this module's surface.
from tests.perfsonar.fakeos import OpenSearchApp as OpenSearchApp
from tests.perfsonar.fakeos import filter_path as filter_path
from tests.perfsonar.fakeos import os_doc as os_doc

Response = tuple[int, Any, str]  # status, JSON-able object or raw bytes, content type
JSON = "application/json"


# ============================================================================================
# Server


@dataclass
class Fault:
    kind: str  # status | sleep | truncate | oversize | html | drip
    status: int = 500
    seconds: float = 0.0
    size: int = 0
    times: int | None = None  # apply to the first N matching requests only (None: always)
    chunked: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hit the size cap reset their connection: expected here.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class FakePerfSONAR:
    """Loopback server hosting perfSONAR apps under path prefixes."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.apps: dict[str, Any] = {}
        self.faults: list[tuple[str, Fault]] = []
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # otherwise Nagle + delayed ACK add 40 ms per request

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer._serve(self, "GET", b"")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                outer._serve(self, "POST", self.rfile.read(length) if length else b"")

        cls = _Server6 if ":" in host else _Server
        self.httpd = cls((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakePerfSONAR:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def mount(self, prefix: str, app: Any) -> str:
        """Serve ``app`` under ``prefix``; returns the full base URL of the mount."""
        self.apps[prefix.rstrip("/")] = app
        return self.url(prefix)

    def fault(self, prefix: str, fault: Fault) -> None:
        with self._lock:
            self.faults.append((prefix, fault))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def requests_to(self, prefix: str) -> int:
        return sum(1 for _, p in self.log if p.startswith(prefix))

    # -- request handling ---------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        parts = urlsplit(h.path)
        with self._lock:
            self.log.append((method, h.path))
            fault = None
            for prefix, f in self.faults:
                if parts.path.startswith(prefix) and (f.times is None or f.times > 0):
                    if f.times is not None:
                        f.times -= 1
                    fault = f
                    break
        try:
            self._answer(h, method, parts.path, parse_qs(parts.query), body, fault)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeouts, size cap): expected in failure-mode tests

    def _answer(self, h: BaseHTTPRequestHandler, method: str, path: str, query: dict[str, list[str]], body: bytes,
                fault: Fault | None) -> None:
        if fault and fault.kind == "status":
            return self._send(h, fault.status, json.dumps({"detail": "injected failure"}).encode(), JSON)
        if fault and fault.kind == "sleep":
            time.sleep(fault.seconds)
        if fault and fault.kind == "html":
            return self._send(h, 200, b"<html><body><h1>Archive Viewset List</h1></body></html>", "text/html")
        if fault and fault.kind == "oversize":
            return self._send_big(h, fault.size, fault.chunked)
        app, rest = None, path
        for prefix in sorted(self.apps, key=len, reverse=True):
            if path == prefix or path.startswith(prefix + "/") or prefix == "":
                app, rest = self.apps[prefix], path[len(prefix):] or "/"
                break
        if app is None:
            return self._send(h, 404, json.dumps({"detail": "Not found."}).encode(), JSON)
        mount_base = self.base + path[: len(path) - len(rest)] if rest != path else self.base
        status, payload, ctype = app.handle(method, rest, query, body, mount_base)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if fault and fault.kind == "truncate":
            data = data[: max(1, len(data) // 2)]
        if fault and fault.kind == "drip":
            return self._send_drip(h, status, data, ctype, fault.seconds)
        self._send(h, status, data, ctype)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    @staticmethod
    def _send_big(h: BaseHTTPRequestHandler, size: int, chunked: bool) -> None:
        h.send_response(200)
        h.send_header("Content-Type", JSON)
        block = b"[" + b"0," * 32767 + b"0]"
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            sent = 0
            while sent < size:
                h.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                sent += len(block)
            h.wfile.write(b"0\r\n\r\n")
        else:
            h.send_header("Content-Length", str(size))
            h.end_headers()
            sent = 0
            while sent < size:
                chunk = block[: size - sent]
                h.wfile.write(chunk)
                sent += len(chunk)

    @staticmethod
    def _send_drip(h: BaseHTTPRequestHandler, status: int, data: bytes, ctype: str, pause: float) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for i in range(0, len(data), 16):
            h.wfile.write(data[i:i + 16])
            h.wfile.flush()
            time.sleep(pause)


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ============================================================================================
# Static documents (pSConfig, MeshConfig, publisher lists, Lookup Service)


class StaticApp:
    """Serves fixed JSON documents by path; ``?format=meshconfig`` picks an alternative document."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}
        self.alternatives: dict[tuple[str, str], Any] = {}

    def put(self, path: str, doc: Any, meshconfig: Any = None) -> None:
        self.docs[path] = doc
        if meshconfig is not None:
            self.alternatives[(path, "meshconfig")] = meshconfig

    def put_raw(self, path: str, text: str, content_type: str) -> None:
        """A document served as is (registry exports: XML)."""
        self.docs[path] = (text.encode(), content_type)

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes, base: str) -> Response:
        fmt = query.get("format", [""])[0]
        if (path, fmt) in self.alternatives:
            return 200, self.alternatives[(path, fmt)], JSON
        if path in self.docs:
            doc = self.docs[path]
            if isinstance(doc, tuple):
                return 200, doc[0], doc[1]
            return 200, doc(query) if callable(doc) else doc, JSON
        return 404, {"detail": "Not found."}, JSON


def pub_config_list(urls: Iterable[str]) -> list[dict[str, Any]]:
    """A PWA ``pub/config`` list: one ``{"include": [url]}`` per mesh."""
    return [{"include": [u]} for u in urls]


def psconfig_mesh(name: str, test_type: str, hosts: list[str], repeat: str | None, archives: dict[str, Any],
                  display: Mapping[str, str] | None = None, group_type: str = "mesh",
                  b_hosts: list[str] | None = None) -> dict[str, Any]:
    """A native pSConfig template with one task over a mesh (or disjoint) group of ``hosts``."""
    names = hosts + (b_hosts or [])
    addresses = {h: {"address": h, "_meta": {"display-name": (display or {}).get(h, h)}} for h in names}
    if group_type == "mesh":
        group = {"type": "mesh", "addresses": [{"name": h} for h in hosts]}
    else:
        group = {"type": "disjoint", "a-addresses": [{"name": h} for h in hosts],
                 "b-addresses": [{"name": h} for h in b_hosts or []]}
    spec = {"source": "{% address[0] %}", "dest": "{% address[1] %}"}
    if test_type == "latencybg":
        spec |= {"packet-count": 600, "packet-interval": 0.1, "bucket-width": 0.001, "flip": "{% flip %}"}
    doc: dict[str, Any] = {
        "_meta": {"display-name": name},
        "archives": archives,
        "addresses": addresses,
        "groups": {"g": group},
        "tests": {"t": {"type": test_type, "spec": spec}},
        "tasks": {"task": {"group": "g", "test": "t", "archives": list(archives),
                           "reference": {"display-task-name": name}}},
    }
    if repeat:
        doc["schedules"] = {"s": {"repeat": repeat, "slip": repeat, "sliprand": True}}
        doc["tasks"]["task"]["schedule"] = "s"
    return doc


def http_archive(logstash_url: str, esmond_url: str | None) -> dict[str, Any]:
    """A perfSONAR 5 HTTP archiver definition with the esmond read URL in ``_meta``."""
    arch: dict[str, Any] = {"archiver": "http",
                            "data": {"schema": 3, "_url": logstash_url, "op": "put", "verify-ssl": False,
                                     "_headers": {"x-ps-observer": "{% scheduled_by_address %}",
                                                  "content-type": "application/json"}}}
    if esmond_url:
        arch["_meta"] = {"esmond_url": esmond_url}
    return arch


def esmond_archiver(url: str) -> dict[str, Any]:
    return {"archiver": "esmond", "data": {"url": url, "measurement-agent": "{% scheduled_by_address %}"}}


def meshconfig_mesh(description: str, sites: Mapping[str, list[str]], read_url: str,
                    tests: list[tuple[str, str, list[str], int | None]], shape: str = "pwa") -> dict[str, Any]:
    """A legacy MeshConfig document: organisations/sites/hosts with ``measurement_archives``.

    ``sites`` maps a site name to its hosts; ``tests`` items are (description, parameter type, members,
    interval). ``shape="pwa"`` is what psconfig-web's ``api/pub/meshconfig.js`` publishes: one
    ``organizations[0].sites[]`` entry per host, ``{hosts: [host], location}`` with no description,
    and the site in the host's ``description`` (``desc || sitename``); ``shape="site"`` is the
    hand-written form with a ``description`` on each site entry and none on its hosts.
    """
    assert shape in ("pwa", "site")

    def host(name: str, desc: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"addresses": [name], "measurement_archives": [
            {"type": "perfsonarbuoy/bwctl", "read_url": read_url, "write_url": read_url},
            {"type": "perfsonarbuoy/owamp", "read_url": read_url, "write_url": read_url}]}
        if desc is not None:
            out |= {"description": desc, "toolkit_url": "auto"}
        return out

    if shape == "pwa":
        entries = [{"hosts": [host(h, site)], "location": {"country": "US", "city": None}}
                   for site, hosts in sites.items() for h in hosts]
        org: dict[str, Any] = {"sites": entries}
    else:
        org = {"description": "Org", "sites": [
            {"description": site, "hosts": [host(h, None) for h in hosts]} for site, hosts in sites.items()]}
    return {
        "description": description,
        "organizations": [org],
        "tests": [{"description": d, "members": {"type": "mesh", "members": members},
                   "parameters": {"type": ptype, **({"interval": interval} if interval else {})}}
                  for d, ptype, members, interval in tests],
    }


def activehosts(locators: list[tuple[str, str]]) -> dict[str, Any]:
    return {"hosts": [{"locator": loc, "status": status, "priority": 100, "lastupdated": "2025-05-02T10:15:01.223Z"}
                      for loc, status in locators]}


def ls_ma_record(name: str, locators: list[str], expires: datetime, communities: list[str] | None = None
                 ) -> dict[str, Any]:
    uid = hashlib.md5(name.encode()).hexdigest()
    return {"type": ["service"], "uri": f"lookup/service/{uid}", "state": "renewed",
            "expires": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "ttl": [], "client-uuid": [uid],
            "service-type": ["ma"], "service-name": [f"{name} Measurement Archive"],
            "service-version": ["esmond-2.0"], "service-locator": locators,
            "group-communities": communities or ["OSG"], "location-sitename": [name]}


class LookupApp:
    """An sLS instance: ``GET /lookup/records?type=...&service-type=...`` returns matching records."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes, base: str) -> Response:
        if path.rstrip("/") != "/lookup/records":
            return 404, {"error": "not found"}, JSON
        out = []
        for rec in self.records:
            ok = True
            for key, values in query.items():
                if key in ("operator", "maxresults", "skip"):
                    continue
                have = rec.get(key)
                have_list = have if isinstance(have, list) else [have]
                if not any(v in have_list for v in values):
                    ok = False
            if ok:
                out.append(rec)
        return 200, out, JSON


# ============================================================================================
# esmond / elmond


def md_key(dialect: str, *parts: object) -> str:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return digest if dialect == "elmond" else digest[:32]


EVENTS = {
    "throughput": ["throughput", "packet-retransmits", "failures", "pscheduler-run-href"],
    # UDP throughput tests report loss instead of retransmits (elmond's event tables)
    "throughput-udp": ["throughput", "packet-loss-rate", "packet-count-lost", "packet-count-sent", "failures",
                       "pscheduler-run-href"],
    "trace": ["packet-trace", "path-mtu", "failures"],
    "latency": ["histogram-owdelay", "packet-loss-rate", "packet-count-lost", "packet-count-sent", "histogram-ttl",
                "time-error-estimates", "failures"],
    "rtt": ["histogram-rtt", "packet-loss-rate-bidir", "histogram-ttl-reverse", "failures"],
}
TOOLS = {"throughput": "iperf3", "latency": "powstream", "rtt": "ping", "trace": "traceroute"}


@dataclass
class EsmondTest:
    """One esmond metadata record and its data, per event type: list of (ts, val)."""

    test: str
    src_ip: str
    dst_ip: str
    src_name: str | None
    dst_name: str | None
    points: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    tool: str | None = None
    bucket_width: float | None = None
    stats_summary: bool = False
    protocol: str = "tcp"  # throughput: "udp" lists packet-loss-rate instead of packet-retransmits
    duration: int = 30  # throughput: time-duration of each run, seconds
    updated: dict[str, int | None] = field(default_factory=dict)  # time-updated per event type, if not the newest ts


class EsmondApp:
    """An esmond (perfSONAR 4) or elmond (perfSONAR 5) archive at ``…/esmond/perfsonar/archive``.

    Differences reproduced: key length, value types (strings vs native), ``base`` vs ``base/0``,
    default page sizes (1500 vs 1000), elmond's 10000 maximum (HTTP 400), ``metadata-next-page``
    paging with an *absolute* URL built from ``public_host`` (as a server behind a proxy would).
    """

    PATH = "/esmond/perfsonar/archive"

    def __init__(self, dialect: str = "esmond", mount: str = "", public_host: str | None = None,
                 paging: bool = True) -> None:
        assert dialect in ("esmond", "elmond")
        self.dialect = dialect
        self.mount = mount.rstrip("/")  # the prefix the server mounts this app under
        self.public_host = public_host
        self.paging = paging
        self.tests: list[tuple[dict[str, Any], EsmondTest]] = []
        self.data: dict[str, list[tuple[int, Any]]] = {}

    @property
    def default_limit(self) -> int:
        return 1500 if self.dialect == "esmond" else 1000

    def add(self, t: EsmondTest) -> dict[str, Any]:
        elmond = self.dialect == "elmond"
        key = md_key(self.dialect, t.test, t.src_ip, t.dst_ip, t.tool, len(self.tests))
        rel = f"{self.PATH}/{key}/"
        uri = self.mount + rel
        tool = t.tool or f"pscheduler/{TOOLS[t.test]}"  # perfSONAR 4.x esmond archives pScheduler runs too

        def value(v: Any) -> Any:
            return v if elmond else str(v)

        md: dict[str, Any] = {
            "metadata-key": key, "uri": uri, "url": f"https://{self.public_host or 'archive.example'}{uri}",
            "subject-type": "point-to-point", "source": t.src_ip, "destination": t.dst_ip,
            "measurement-agent": t.src_ip, "input-source": t.src_name or t.src_ip,
            "input-destination": t.dst_name or t.dst_ip, "tool-name": tool,
            "pscheduler-test-type": {"throughput": "throughput", "latency": "latencybg", "rtt": "rtt",
                                     "trace": "trace"}[t.test],
            "event-types": [],
        }
        if t.test == "throughput":
            md |= {"time-duration": value(t.duration), "ip-transport-protocol": t.protocol,
                   "bw-parallel-streams": value(1)}
        elif t.test == "trace":
            md |= {"trace-first-ttl": value(1), "trace-max-ttl": value(30), "trace-num-queries": value(1)}
        elif t.test == "latency":
            md |= {"sample-size": value(600), "time-probe-interval": value(0.1),
                   "sample-bucket-width": value(t.bucket_width if t.bucket_width is not None else 0.001)}
        else:
            md |= {"ip-packet-size": value(64), "sample-size": value(10)}
        events = EVENTS["throughput-udp" if t.test == "throughput" and t.protocol == "udp" else t.test]
        for et in events:
            pts = sorted(t.points.get(et, []), key=lambda p: p[0])
            base = f"{rel}{et}/base" + ("/0" if elmond else "")
            summaries = []
            if t.stats_summary and et.startswith("histogram-"):
                stats_rel = f"{rel}{et}/statistics/0"
                summaries.append({"summary-type": "statistics", "summary-window": 0 if elmond else "0",
                                  "time-updated": pts[-1][0] if pts else None, "uri": self.mount + stats_rel})
                self.data[stats_rel] = [(ts, histogram_stats(v)) for ts, v in pts]
            updated = t.updated[et] if et in t.updated else (pts[-1][0] if pts else None)
            md["event-types"].append({"event-type": et, "base-uri": self.mount + base,
                                      "time-updated": updated, "summaries": summaries})
            self.data[base] = pts
        self.tests.append((md, t))
        return md

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes, base: str) -> Response:
        if method != "GET":
            return 405, {"detail": "Method not allowed."}, JSON
        full = path
        limit = int(query.get("limit", [self.default_limit])[0])
        if self.dialect == "elmond" and limit > 10000:
            return 400, {"error": "limit must be <= 10000"}, JSON
        if full.rstrip("/") == self.PATH:
            return 200, self._metadata(query, limit, base), JSON
        series = self.data.get(full, self.data.get(full.rstrip("/")))
        if series is None:
            return 404, {"detail": "Not found."}, JSON
        start = int(query.get("time-start", [0])[0])
        pts = [p for p in series if p[0] >= start][:limit]
        return 200, [{"ts": ts, "val": v} for ts, v in pts], JSON

    def _metadata(self, query: dict[str, list[str]], limit: int, base: str) -> list[dict[str, Any]]:
        et = query.get("event-type", [None])[0]
        rng = query.get("time-range", [None])[0]
        now = time.time()
        found = []
        for md, _t in self.tests:
            ets = {e["event-type"]: e for e in md["event-types"]}
            if et and et not in ets:
                continue
            if rng and et and self.dialect == "esmond":
                updated = ets[et]["time-updated"]
                if updated is None or updated < now - int(rng):
                    continue
            found.append(json.loads(json.dumps(md)))
        offset = int(query.get("offset", [0])[0])
        page = found[offset:offset + limit]
        if page and self.paging:
            nxt = None
            if offset + limit < len(found):
                q = {k: v[0] for k, v in query.items()} | {"offset": offset + limit, "limit": limit}
                origin = f"https://{self.public_host}" if self.public_host else base[: len(base) - len(self.mount)]
                nxt = f"{origin}{self.mount}{self.PATH}/?{urlencode(q)}"
            page[0] |= {"metadata-count-total": len(found), "metadata-previous-page": None,
                        "metadata-next-page": nxt}
        return page


def histogram_stats(hist: Mapping[str, int]) -> dict[str, Any]:
    """esmond's ``statistics`` summary of one histogram (median by cumulative count)."""
    items = sorted((float(k), c) for k, c in hist.items())
    total = sum(c for _, c in items)
    running, median = 0, items[-1][0]
    for k, c in items:
        running += c
        if running * 2 >= total:
            median = k
            break
    mean = sum(k * c for k, c in items) / total
    return {"minimum": items[0][0], "maximum": items[-1][0], "mean": mean, "median": median, "mode": [median],
            "percentile-25": items[0][0], "percentile-75": items[-1][0], "percentile-95": items[-1][0],
            "standard-deviation": 0.0, "variance": 0.0}


def owd_histogram(median_ms: float, bucket_width: float = 0.001, n: int = 600) -> dict[str, int]:
    """A powstream-like histogram whose median is ``median_ms``, keyed in units of ``bucket_width``."""
    unit = bucket_width / 0.001
    center = median_ms / unit
    return {f"{center - 0.01:.2f}": n // 4, f"{center:.2f}": n // 2, f"{center + 0.01:.2f}": n - n // 4 - n // 2}


def write_json(path: Any, doc: Any) -> None:
    path.write_text(json.dumps(doc), encoding="utf-8")


Handler = Callable[[str, str, dict[str, list[str]], bytes, str], Response]
