"""How ``lark-netd`` holds its clients: one selector thread, a bounded pool of workers.

The broker's decisions live in :mod:`lark.broker.server`; this module only accepts, pins each
caller's identity at accept time, reads a request line within its deadline, refuses early what
can be refused without reading, and hands complete requests to the workers. It also watches the
pidfds of the jobs' wrappers, so the broker hears the moment one ends.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lark.broker.peer import Peer, TrustedStarter, accept_peer, starter_of
from lark.broker.protocol import MAX_REQUEST, encode_reply, parse_request, wants_lines
from lark.config import LarkConfig
from lark.errors import LarkError
from lark.metrics import NodeMetrics

log = logging.getLogger("lark.netd")


class RequestHandler(Protocol):
    """What the server needs of the broker."""

    config: LarkConfig
    host_netns_inode: int
    trusted_starter: TrustedStarter
    metrics: NodeMetrics | None
    watch: Callable[[int, str], None] | None

    def handle(self, request: object, peer: Peer) -> dict[str, object]: ...

    def holder_exited(self, token: str) -> None: ...


@dataclass
class _Connection:
    sock: socket.socket
    peer: Peer
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    refused: bool = False  # answered at accept; kept only until the client has sent or closed


# libnftables 1.0.6 (Debian 12) waits on its netlink socket with select(), which aborts the whole
# process ("bit out of range 0 - FD_SETSIZE") when that socket's number is 1024 or more. Held client
# connections (a socket and a pidfd each) would push it there, so they live above that range.
SELECT_SAFE_FLOOR = 1024
ACCEPTS_PER_ROUND = 64
# A caller refused at accept gets its answer, then the connection is kept (write side shut) until
# the client has sent its request or closed, so that a client that writes before it reads still
# gets the reason instead of EPIPE; at most this many such connections, each for at most a second.
REFUSED_LINGER_MAX = 256
REFUSED_LINGER_SECONDS = 1.0


def move_up(fd: int) -> int:
    """``fd`` renumbered to SELECT_SAFE_FLOOR or above (the same fd when the limit does not allow)."""
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, SELECT_SAFE_FLOOR)
    except OSError:
        return fd  # RLIMIT_NOFILE at or below the floor: nothing to gain
    os.close(fd)
    return high


def _above_select_range(conn: socket.socket, peer: Peer) -> tuple[socket.socket, Peer]:
    moved = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=move_up(conn.detach()))
    if peer.pidfd is not None:
        peer = dataclasses.replace(peer, pidfd=move_up(peer.pidfd))
    return moved, peer


@dataclass(frozen=True)
class _Watch:
    pidfd: int  # readable once the process has ended
    token: str


class BrokerServer:
    """Accepts and reads on one selector thread; serves complete requests on a bounded pool.

    Why not one thread per connection: 1,500 held connections were 1,500 threads, and a listen
    queue of 5 refused 131 of 200 simultaneous job starts. Here a connection that is still sending
    costs a descriptor and a small buffer; ``LARK_REQUEST_TIMEOUT`` bounds the whole request (not
    each read, so trickling a byte at a time does not keep it open), and at most
    ``LARK_BROKER_MAX_CONNECTIONS`` are held (newer ones are closed at once; a wrapper retries), and
    at most a quarter of them for one non-root uid.
    """

    def __init__(self, path: Path, broker: RequestHandler, backlog: int = 256, workers: int = 8,
                 max_connections: int = 4096, request_timeout: float = 5.0) -> None:
        self.broker = broker
        self.path = path
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        # any local process may connect; authorisation is by the caller's pinned identity, per request
        os.chmod(path, 0o666)
        self.sock.listen(backlog)
        self.sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.sock, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._connections: dict[int, _Connection] = {}
        self._per_uid: dict[int, int] = {}  # connections open or queued, per caller uid
        self._lingering = 0  # refused connections waiting for their client (REFUSED_LINGER_MAX)
        self._uid_lock = threading.Lock()
        self._new_watches: list[tuple[int, str]] = []  # (pidfd, token), registered by the selector thread
        self._watch_lock = threading.Lock()
        broker.watch = self.watch
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lark-request")
        self._stopping = threading.Event()

    # -- the selector thread

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        while not self._stopping.is_set():
            try:
                for key, _events in self._selector.select(timeout=min(poll_interval, self._next_deadline())):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        os.read(self._wake_r, 64)
                        self._register_watches()
                    elif isinstance(key.data, _Watch):
                        self._holder_exited(key.data)
                    else:
                        self._read(key.data)
                self._expire()
            except Exception:  # a broken connection must never stop the broker
                log.exception("error in the broker's connection loop; continuing")

    def watch(self, pidfd: int, token: str) -> None:
        """Call ``broker.holder_exited(token)`` once the process behind ``pidfd`` has ended (any thread)."""
        with self._watch_lock:
            self._new_watches.append((pidfd, token))
        os.write(self._wake_w, b"w")

    def _register_watches(self) -> None:
        with self._watch_lock:
            new, self._new_watches = self._new_watches, []
        for pidfd, token in new:
            self._selector.register(pidfd, selectors.EVENT_READ, _Watch(pidfd, token))

    def _holder_exited(self, watch: _Watch) -> None:
        self._selector.unregister(watch.pidfd)
        os.close(watch.pidfd)
        self._workers.submit(self._quietly, self.broker.holder_exited, watch.token)

    @staticmethod
    def _quietly(fn: Callable[[str], None], token: str) -> None:
        try:
            fn(token)
        except Exception:
            log.exception("handling the end of job %s failed (the sweep will retry)", token)

    def _next_deadline(self) -> float:
        if not self._connections:
            return 3600.0
        return max(0.0, min(c.deadline for c in self._connections.values()) - time.monotonic())

    def _accept(self) -> None:
        # A bounded number per round: a process that connects and closes in a loop must not keep
        # this thread accepting while nothing is read and no deadline is enforced.
        for _ in range(ACCEPTS_PER_ROUND):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # EMFILE and the like: leave the rest in the backlog for now
                log.warning("accept failed: %s", err)
                return
            if len(self._connections) - self._lingering >= self.max_connections:
                conn.close()
                continue
            try:
                peer = accept_peer(conn)  # before a byte is read: the identity cannot be recycled later
            except OSError:
                conn.close()
                continue
            if peer.uid != 0:
                # Only root and job wrappers have anything to ask: anyone else is told why and let go
                # at once, so no other process (a job's own, a local user's) can hold connections.
                try:
                    starter_of(peer, self.broker.host_netns_inode, self.broker.trusted_starter)
                except LarkError as err:
                    self._refuse_now(conn, peer, str(err))
                    continue
                with self._uid_lock:
                    if self._per_uid.get(peer.uid, 0) >= self.max_connections // 4:
                        self._refuse_now(conn, peer, "too many connections from this user")
                        continue
            with self._uid_lock:
                self._per_uid[peer.uid] = self._per_uid.get(peer.uid, 0) + 1
            conn, peer = _above_select_range(conn, peer)
            conn.setblocking(False)
            c = _Connection(conn, peer, time.monotonic() + self.request_timeout)
            self._connections[conn.fileno()] = c
            self._selector.register(conn, selectors.EVENT_READ, c)

    def _refuse_now(self, conn: socket.socket, peer: Peer, reason: str) -> None:
        log.debug("refused a connection from pid %d uid %d: %s", peer.pid, peer.uid, reason)
        if self.broker.metrics is not None:
            self.broker.metrics.refused.labels("connect").inc()
        try:
            conn.setblocking(False)
            conn.send(json.dumps({"ok": False, "error": reason}).encode() + b"\n")
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if self._lingering >= REFUSED_LINGER_MAX:
            conn.close()
            peer.close()
            return
        conn, peer = _above_select_range(conn, peer)
        c = _Connection(conn, peer, time.monotonic() + REFUSED_LINGER_SECONDS, refused=True)
        self._lingering += 1
        self._connections[conn.fileno()] = c
        self._selector.register(conn, selectors.EVENT_READ, c)

    def _release_uid(self, uid: int) -> None:
        with self._uid_lock:
            left = self._per_uid.get(uid, 1) - 1
            if left > 0:
                self._per_uid[uid] = left
            else:
                self._per_uid.pop(uid, None)

    def _read(self, c: _Connection) -> None:
        if c.refused:  # it has sent its request (or closed): it has its answer already
            # read what it sent before closing: closing a Unix socket with unread data makes the
            # peer's next read fail with ECONNRESET instead of returning the answer
            try:
                while c.sock.recv(MAX_REQUEST):
                    pass
            except OSError:
                pass
            self._drop(c)
            return
        try:
            data = c.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(c)
            return
        c.buffer += data
        newline = c.buffer.find(b"\n")
        if newline >= 0 or len(c.buffer) >= MAX_REQUEST or not data:
            if not c.buffer:
                self._drop(c)  # closed without a word
                return
            line = bytes(c.buffer[: newline + 1] if newline >= 0 else c.buffer[:MAX_REQUEST])
            self._detach(c)
            self._workers.submit(self._serve, c, line)

    def _expire(self) -> None:
        now = time.monotonic()
        for c in [c for c in self._connections.values() if c.deadline <= now]:
            log.debug("dropped pid %d: no whole request within %.1f s", c.peer.pid, self.request_timeout)
            self._drop(c)

    def _detach(self, c: _Connection) -> None:
        self._selector.unregister(c.sock)
        self._connections.pop(c.sock.fileno(), None)

    def _drop(self, c: _Connection) -> None:
        self._detach(c)
        c.sock.close()
        c.peer.close()
        if c.refused:
            self._lingering -= 1
        else:
            self._release_uid(c.peer.uid)

    # -- a worker thread

    def _serve(self, c: _Connection, line: bytes) -> None:
        try:
            request = parse_request(line)
            reply = self.broker.handle(request, c.peer)
            c.sock.setblocking(True)
            c.sock.settimeout(self.request_timeout)
            c.sock.sendall(encode_reply(reply, wants_lines(request)))
        except OSError:
            pass
        finally:
            c.sock.close()
            c.peer.close()
            self._release_uid(c.peer.uid)  # a queued request still counted against its user

    # -- life cycle

    def shutdown(self) -> None:
        self._stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def server_close(self) -> None:
        self._workers.shutdown(wait=True)
        for c in list(self._connections.values()):
            self._drop(c)
        self._selector.close()
        self.sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
