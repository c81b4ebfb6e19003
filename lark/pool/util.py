"""Small process, mount, lock and wait helpers of the personal pool (:mod:`lark.pool`).

Every helper runs host tools with a clean ``PATH`` and says in its error what failed, with the tail of
the tool's output; nothing here knows about HTCondor.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shlex
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

log = logging.getLogger("lark.pool")

HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

T = TypeVar("T")
#: held during an image build; passed to every build command (set by :mod:`lark.pool.image`)
build_lock_fd: int | None = None


def wait_until(what: str, predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something true, and return that;
    after ``timeout`` seconds raise TimeoutError naming ``what`` (the predicate may raise to stop early)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


class PoolError(RuntimeError):
    """The pool could not be built, started, queried or torn down; the message says why."""


class JobHeld(PoolError):
    """A job that :meth:`Pool.wait` waited for was put on hold."""

    def __init__(self, message: str, ads: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.ads = ads




def tail(text: str | bytes | None, lines: int = 30) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def file_tail(path: Path, lines: int = 30) -> str:
    try:
        return f"--- {path} (last {lines} lines) ---\n" + tail(path.read_text(errors="replace"), lines)
    except OSError as exc:
        return f"--- {path}: {exc.strerror}"


def run_host(argv: Sequence[str], *, timeout: float = 60.0, check: bool = True, out: IO[str] | None = None,
          env: Mapping[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a host command with a clean PATH; ``out``: stream stdout+stderr to that file instead of capturing."""
    full_env = {"PATH": HOST_PATH, "LANG": "C.UTF-8", **(env or {})}
    log.debug("host: %s", shlex.join(argv))
    pass_fds = () if build_lock_fd is None else (build_lock_fd,)
    if out is not None:
        out.write(f"\n$ {shlex.join(argv)}\n")
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                              env=full_env, input=input, check=False, pass_fds=pass_fds)
    else:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env, input=input,
                              check=False, pass_fds=pass_fds)
    if check and proc.returncode != 0:
        raise PoolError(f"{shlex.join(argv)} exited {proc.returncode}\n{tail(proc.stdout)}\n{tail(proc.stderr)}")
    return proc


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, deepest first."""
    prefix = str(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def umount_all(path: Path) -> None:
    """Unmount everything at or below ``path``: ``umount -R`` (shallowest first), then lazily what is busy."""
    for lazy in ([], ["-l"]):
        for point in sorted(mounts_under(path), key=lambda p: p.count("/")):
            if point in mounts_under(path):
                run_host(["umount", "-R", *lazy, point], check=False)
    left = mounts_under(path)
    if left:
        raise PoolError(f"cannot unmount {left}")


def remove_tree(path: Path) -> None:
    """``rm -rf --one-file-system`` of a directory that must have nothing mounted below it."""
    if not path.exists():
        return
    if mounts_under(path):
        raise PoolError(f"refusing to delete {path}: still has mounts {mounts_under(path)}")
    run_host(["rm", "-rf", "--one-file-system", str(path)], timeout=300)


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on ``path`` (created), or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def in_parallel(calls: Sequence[Callable[[], object]]) -> None:
    """Run ``calls`` in threads; raise the first failure once all are done."""
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def serve_in_netns(server: socketserver.TCPServer, netns_path: str, address: str, port: int,
                   backlog: int = 64) -> threading.Thread:
    """Give ``server`` (made with ``bind_and_activate=False``) a socket listening on ``address``:``port``
    inside the namespace at ``netns_path``, and serve it on a daemon thread (returned). The socket stays
    in that namespace; serving it needs no switch."""
    server.socket.close()

    def listen() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(backlog)
        return s

    from lark import netns

    server.socket = netns.call_in(netns_path, listen)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    return thread
