"""A site's data server: HTTP in the site router's namespace, serving ``/bytes/<n>`` (n bytes).

The listening socket is made inside the namespace (:func:`lark.netns.call_in`); the server's threads run in
the calling process, which keeps nothing of the namespace but that socket. Each response is recorded as
``(client address, bytes of body)`` in :attr:`DataServer.served`.
"""

from __future__ import annotations

import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lark.pool.util import serve_in_netns

DATA_PORT = 8000
CHUNK = b"\0" * 65536
_PATH = re.compile(r"/bytes/(\d{1,12})")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        match = _PATH.fullmatch(self.path)
        if not match:
            self.send_error(404, "GET /bytes/<n>")
            return
        left = total = int(match.group(1))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(total))
        self.end_headers()
        try:
            while left:
                n = min(left, len(CHUNK))
                self.wfile.write(CHUNK[:n])
                left -= n
        except OSError:
            return
        self.server.served.append((self.client_address[0], total))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    served: list[tuple[str, int]]


class DataServer:
    """``http://<address>:<port>/bytes/<n>`` inside the namespace at ``netns_path``."""

    def __init__(self, netns_path: str, address: str, port: int = DATA_PORT) -> None:
        self.address, self.port = address, port
        self._server = _Server((address, port), _Handler, bind_and_activate=False)
        self._server.served = []
        self._thread = serve_in_netns(self._server, netns_path, address, port)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def served(self) -> list[tuple[str, int]]:
        return self._server.served

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
