"""Network namespaces without forking.

pyroute2's own netns helpers fork a child per socket (6-8 ms a job). Lark instead switches a
short-lived *thread* into the target namespace (``setns`` is per thread), opens what it needs
there (netlink sockets keep the namespace they were created in), and lets the thread end. The
calling thread never changes namespace, so nothing else in the process is affected.

Pitfall this module exists to avoid: pyroute2 0.9 opens its socket lazily, so
``IPRoute()`` created inside a switched thread still binds to the *caller's* namespace. Always
open namespace sockets with :func:`iproute_in`, which creates the socket itself inside the thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from lark.errors import KernelError, NotFound

if TYPE_CHECKING:
    from pyroute2 import IPRoute

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_SHARED = 1 << 20
MS_REC = 16384
MNT_DETACH = 2
NETNS_RUN_DIR = Path("/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise KernelError(f"{what}: {os.strerror(err)}")


def call_in(netns: str | os.PathLike[str] | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread that has joined ``netns`` (None: run it here, unchanged)."""
    if netns is None:
        return fn()
    [result] = call_in_each([os.fspath(netns)], lambda _path: fn())
    if isinstance(result, BaseException):
        raise result  # raised in the caller's thread, as if fn had run here
    return result


def call_in_each(paths: Sequence[str], fn: Callable[[str], T]) -> list[T | BaseException]:
    """``fn(path)`` inside each namespace of ``paths`` in turn, all on one fresh thread.

    For periodic reads across every job's namespace: a thread start costs 0.1-0.6 ms on a busy
    host, a ``setns`` a few microseconds. Each result is ``fn``'s value or the exception it (or
    entering the namespace) raised; ``fn`` never runs in a namespace it did not ask for.
    """
    results: list[T | BaseException] = []

    def run() -> None:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                results.append(NotFound(f"network namespace {path} does not exist"))
                continue
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), f"setns({path})")
                results.append(fn(path))
            except BaseException as exc:  # handed back with the others
                results.append(exc)
            finally:
                os.close(fd)

    thread = threading.Thread(target=run, name="lark-netns-each")
    thread.start()
    thread.join()
    return results


def netlink_socket_in(netns: str | os.PathLike[str] | None, proto: int = 0) -> socket.socket:
    """A raw netlink socket (default NETLINK_ROUTE) living in ``netns``."""
    return call_in(netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, proto))


def iproute_in(netns: str | os.PathLike[str] | None) -> IPRoute:
    """An ``IPRoute`` whose socket is bound to ``netns`` (None: the caller's namespace)."""
    from pyroute2 import IPRoute

    sock = netlink_socket_in(netns)
    return IPRoute(fileno=sock.detach())


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does.

    Without shared propagation a process that unshares its mount namespace later (HTCondor's
    starter does) keeps a private copy of every netns bind mount and with it the namespace alive
    after Lark unmounts it.
    """
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = bytes(NETNS_RUN_DIR)
    if _libc.mount(b"none", path, None, MS_SHARED | MS_REC, None) == 0:
        return
    _check(_libc.mount(path, path, b"none", MS_BIND | MS_REC, None), f"bind-mount {NETNS_RUN_DIR}")
    _check(_libc.mount(b"none", path, None, MS_SHARED | MS_REC, None), f"make {NETNS_RUN_DIR} shared")


def _new_mount_point(name: str) -> Path:
    """The empty file ``/run/netns/<name>`` that a namespace is bind-mounted on (must not exist)."""
    _ensure_run_dir()
    path = NETNS_RUN_DIR / name
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    except FileExistsError:
        raise KernelError(f"network namespace {name} already exists") from None
    return path


def create_named(name: str) -> Path:
    """Create ``/run/netns/<name>`` (like ``ip netns add``) without forking; returns its path."""
    path = _new_mount_point(name)

    def unshare_and_bind() -> None:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        _check(_libc.mount(b"/proc/thread-self/ns/net", bytes(path), b"none", MS_BIND, None),
               f"bind-mount netns {name}")

    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            unshare_and_bind()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="lark-netns-create")
    thread.start()
    thread.join()
    if "error" in box:
        path.unlink(missing_ok=True)
        raise box["error"]
    return path


def pin(source: str | os.PathLike[str], name: str) -> Path:
    """Bind-mount the namespace ``source`` (e.g. ``/proc/<pid>/ns/net``) at ``/run/netns/<name>``.

    The pin keeps the namespace, its interfaces and its nftables table (the job's counters)
    alive after its last process exits, until :func:`delete_named` removes it. Names carry the
    prefix and the job's token, so ``ip netns`` shows them and a sweep finds orphans.
    """
    path = _new_mount_point(name)
    if _libc.mount(os.fsencode(source), bytes(path), b"none", MS_BIND, None) != 0:
        err = ctypes.get_errno()
        path.unlink(missing_ok=True)
        if err == errno.ENOENT:
            raise NotFound(f"network namespace {source} does not exist")
        raise KernelError(f"bind-mount netns {source} at {path}: {os.strerror(err)}")
    return path


def delete_named(name_or_path: str | os.PathLike[str]) -> bool:
    """Unmount and unlink a named namespace; True if something was removed. Idempotent.

    The kernel destroys the namespace (and the veth peers in it) asynchronously once the last
    reference is gone; the call itself returns in well under a millisecond.
    """
    path = Path(name_or_path)
    if not path.is_absolute():
        path = NETNS_RUN_DIR / path
    removed = False
    if _libc.umount2(bytes(path), MNT_DETACH) == 0:
        removed = True
    else:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise KernelError(f"umount {path}: {os.strerror(err)}")
    try:
        path.unlink()
        removed = True
    except FileNotFoundError:
        pass
    return removed


def list_named(prefix: str) -> list[str]:
    """Names of the namespaces in /run/netns that start with ``prefix``."""
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def inode(netns: str | os.PathLike[str]) -> int:
    """The namespace's inode number: its identity, comparable with /proc/<pid>/ns/net."""
    try:
        return os.stat(netns).st_ino
    except FileNotFoundError:
        raise NotFound(f"network namespace {netns} does not exist") from None


def current_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


