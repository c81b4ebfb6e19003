"""``lark demo``: the README's first command. A job fetches a page from a host-side server.

It starts a throwaway HTTP server on the host end of the job's network (IPv4 and IPv6), runs a
fetch inside the job's namespace as ``lark run`` would, prints what the job got and Lark's
accounting for it, and leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lark import netns
from lark.config import LarkConfig
from lark.engine import Engine
from lark.policy import JobRequest
from lark.state import JobRecord

PAGE = b"<html><body><h1>Hello from the host side</h1>" + b"<p>Lark counted these bytes.</p>" * 64 + b"</body></html>"

FETCH = """
import sys, urllib.request
for url in sys.argv[1:]:
    body = urllib.request.urlopen(url, timeout=5).read()
    print(f"job: fetched {len(body)} bytes from {url}")
"""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"host: served {self.command} {self.path} to {self.client_address[0]}", file=sys.stderr)


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def demo(engine: Engine, config: LarkConfig, mode: str) -> int:
    from lark.cli.run import exit_code, format_summary, run_in_job

    servers: list[ThreadingHTTPServer] = []

    def command(record: JobRecord) -> list[str]:
        urls = []
        for addr, cls in ((record.host_ipv4, ThreadingHTTPServer), (record.host_ipv6, _V6Server)):
            if not addr:
                continue
            ip = str(ipaddress.ip_interface(addr).ip)
            server = netns.call_in(engine.host_netns, lambda ip=ip, cls=cls: cls((ip, 0), _Handler))
            servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            host = f"[{ip}]" if ":" in ip else ip
            urls.append(f"http://{host}:{server.server_address[1]}/")
        return [sys.executable, "-c", FETCH, *urls]

    try:
        status, record, counters = run_in_job(engine, JobRequest("demo", mode), command)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    print(format_summary(record, counters))
    left = [r.token for r in engine.records() if r.token == record.token]
    print("lark: cleaned up" if not left else f"lark: leftovers {left}")
    return exit_code(status)
