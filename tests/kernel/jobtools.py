"""Small real-traffic tools for kernel tests: a TCP/UDP sink and sender run inside namespaces
(the wire counter, the iperf3 reader and the namespace helpers they share are in tests.support).

They run as separate Python processes via ``nsenter --net=<ns>`` so the test process itself never
changes namespace. Every process is started here and ended here, by PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from tests.support import in_ns, iperf3_json, received_mbit, wait_listening

SINK = r"""
import json, socket, sys
family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
kind = socket.SOCK_DGRAM if sys.argv[3] == 'udp' else socket.SOCK_STREAM
s = socket.socket(family, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
print('ready', flush=True)
if kind == socket.SOCK_DGRAM:
    data, peer = s.recvfrom(65535)
    s.sendto(b'pong:' + data[:16], peer)
    print(json.dumps({'bytes': len(data), 'peer': peer[0]}), flush=True)
else:
    s.listen(8)
    c, peer = s.accept()
    total = 0
    while True:
        chunk = c.recv(1 << 16)
        if not chunk:
            break
        total += len(chunk)
    c.sendall(b'ok')
    c.close()
    print(json.dumps({'bytes': total, 'peer': peer[0]}), flush=True)
"""

SEND = r"""
import socket, sys
dst, port, n, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
src = sys.argv[5] if len(sys.argv) > 5 else None
family = socket.AF_INET6 if ':' in dst else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM if proto == 'udp' else socket.SOCK_STREAM)
s.settimeout(float(sys.argv[6]) if len(sys.argv) > 6 else 5)
if src:
    s.bind((src, 0))
if proto == 'udp':
    s.sendto(b'x' * n, (dst, port))
    print(s.recvfrom(100)[0].decode())
else:
    s.connect((dst, port))
    block = b'x' * 65536
    left = n
    while left:
        left -= s.send(block[:min(left, len(block))])
    s.shutdown(socket.SHUT_WR)
    print(s.recv(10).decode())
"""


@contextmanager
def sink(netns: str, addr: str, port: int, proto: str = "tcp") -> Iterator[subprocess.Popen[str]]:
    """A one-shot server; after the client is done, ``result(proc)`` gives bytes received and peer."""
    proc = subprocess.Popen(in_ns(netns, [sys.executable, "-c", SINK, addr, str(port), proto]),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "ready", f"sink did not start: {line!r}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def result(proc: subprocess.Popen[str], timeout: float = 10) -> dict[str, object]:
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def send(netns: str, dst: str, port: int, nbytes: int, proto: str = "tcp", src: str | None = None,
         timeout: float = 5) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", SEND, dst, str(port), str(nbytes), proto, src or "", str(timeout)]
    return subprocess.run(in_ns(netns, argv), capture_output=True, text=True, timeout=timeout + 10)


def iperf_mbit(server_ns: str, server_addr: str, client_ns: str, seconds: int = 3, reverse: bool = False,
               port: int = 5201) -> float:
    """Measured TCP throughput (receiver side) from client to server (or back with reverse)."""
    server = subprocess.Popen(in_ns(server_ns, ["iperf3", "-s", "-1", "-B", server_addr, "-p", str(port)]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(server_ns, port)
        argv = ["iperf3", "-c", server_addr, "-p", str(port), "-t", str(seconds), "-J"]
        if reverse:
            argv.append("-R")
        out = subprocess.run(in_ns(client_ns, argv), capture_output=True, text=True, timeout=seconds + 20)
        return received_mbit(iperf3_json(out.stdout, out.stderr))
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def links(netns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", netns.rsplit("/", 1)[-1], "-o", "link"], capture_output=True, text=True,
                         check=True).stdout if netns.startswith("/run/netns/") else subprocess.run(
        in_ns(netns, ["ip", "-o", "link"]), capture_output=True, text=True, check=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


# The ``lark`` CLI (``python -c KILL_AT_STEP STEP ARGS...``) with the engine's step hook killing the
# process right after the named step: a crash at a known point of a set-up
KILL_AT_STEP = (
    "import os, signal, sys\n"
    "import lark.engine\n"
    "step = sys.argv.pop(1)\n"
    "lark.engine.STEP_HOOK = lambda s: os.kill(os.getpid(), signal.SIGKILL) if s == step else None\n"
    "from lark.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
