"""A small perfSONAR publisher and esmond archive for the pool's own measurements (the demo).

What lark-spider reads from a real perfSONAR deployment, reduced to one throughput mesh: ``/pub/config``
(the list of meshes), ``/pub/config/bw`` (a pSConfig template naming the hosts and the esmond archive) and
the archive at ``/esmond/perfsonar/archive/`` (metadata, then each test's ``throughput`` series in
bits per second). :meth:`MeasurementArchive.add` records one iperf3 result; the server runs in a namespace
of the pool (its socket made there, its threads in the calling process).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lark.pool.util import serve_in_netns

ARCHIVE_PATH = "/esmond/perfsonar/archive"
_BASE = re.compile(re.escape(ARCHIVE_PATH) + r"/([0-9a-f]{32})/throughput/base/?")


class MeasurementArchive:
    """``http://<address>:<port>``: the publisher and the archive, serving what :meth:`add` recorded."""

    def __init__(self, netns_path: str, address: str, port: int = 8080) -> None:
        self.address, self.port = address, port
        self.hosts: list[str] = []
        self.tests: dict[str, dict[str, Any]] = {}  # metadata key -> metadata record
        self.series: dict[str, list[tuple[int, float]]] = {}
        archive = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                status, doc = archive.answer(self.path)
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
                pass

        self._server = ThreadingHTTPServer((address, port), Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        serve_in_netns(self._server, netns_path, address, port, backlog=16)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def publisher(self) -> str:
        """The URL lark-spider discovers the mesh from (its ``discovery.publishers``)."""
        return f"{self.url}/pub/config"

    def add(self, src_host: str, src_ip: str, dst_host: str, dst_ip: str, bits_per_second: float,
            when: float | None = None) -> None:
        """One iperf3 result src -> dst; the archive keeps every result of a pair as its series."""
        key = hashlib.sha256(f"{src_ip}|{dst_ip}".encode()).hexdigest()[:32]
        for host in (src_host, dst_host):
            if host not in self.hosts:
                self.hosts.append(host)
        uri = f"{ARCHIVE_PATH}/{key}/"
        self.series.setdefault(key, []).append((int(when or time.time()), bits_per_second))
        self.tests[key] = {
            "metadata-key": key, "uri": uri, "url": f"{self.url}{uri}", "subject-type": "point-to-point",
            "source": src_ip, "destination": dst_ip, "measurement-agent": src_ip, "input-source": src_host,
            "input-destination": dst_host, "tool-name": "pscheduler/iperf3", "pscheduler-test-type": "throughput",
            "time-duration": "2", "ip-transport-protocol": "tcp", "bw-parallel-streams": "1",
            "event-types": [{"event-type": "throughput", "base-uri": f"{uri}throughput/base",
                             "time-updated": self.series[key][-1][0], "summaries": []}],
        }

    def answer(self, path: str) -> tuple[int, Any]:
        """The JSON document for ``path`` (pure apart from reading what was recorded)."""
        route, _, _query = path.partition("?")
        if route == "/pub/config":
            return 200, [{"include": [f"{self.url}/pub/config/bw"]}]
        if route == "/pub/config/bw":
            return 200, self._mesh()
        if route.rstrip("/") == ARCHIVE_PATH:
            return 200, list(self.tests.values())
        match = _BASE.fullmatch(route)
        if match and match.group(1) in self.series:
            return 200, [{"ts": ts, "val": str(val)} for ts, val in self.series[match.group(1)]]
        return 404, {"detail": "Not found."}

    def _mesh(self) -> dict[str, Any]:
        archives = {"a": {"archiver": "esmond", "data": {"url": f"{self.url}{ARCHIVE_PATH}/",
                                                         "measurement-agent": "{% scheduled_by_address %}"}}}
        return {
            "_meta": {"display-name": "lark pool WAN"},
            "archives": archives,
            "addresses": {h: {"address": h, "_meta": {"display-name": h}} for h in self.hosts},
            "groups": {"g": {"type": "mesh", "addresses": [{"name": h} for h in self.hosts]}},
            "tests": {"t": {"type": "throughput", "spec": {"source": "{% address[0] %}", "dest": "{% address[1] %}"}}},
            "schedules": {"s": {"repeat": "PT1H", "slip": "PT1H", "sliprand": True}},
            "tasks": {"task": {"group": "g", "test": "t", "archives": ["a"], "schedule": "s",
                               "reference": {"display-task-name": "lark pool WAN"}}},
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
