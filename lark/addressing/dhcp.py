"""The DHCPv4 client of a job: busybox ``udhcpc``, run by the broker (root) inside the job's namespace.

Why udhcpc and not pyroute2's own client (``pyroute2.dhcp``, new in 0.9): udhcpc is the client of
Debian's installer, Alpine and OpenWrt, packaged by Debian (``udhcpc``), and does everything a
job's lease needs by itself: renewal at T1 and rebinding at T2, a RELEASE when it is told to stop
(``-R``), any option on the wire (``-x 0x3d:<hex>`` client identifier, ``-x hostname:``) and an
event hook. pyroute2's client is young (its own sources still carry FIXMEs on timers and
retransmission) and is an asyncio task that would have to live on a thread joined to each job's
namespace inside the broker. A separate process per job also survives a broker restart.

One client per job, detached (``setsid --fork``: it is nobody's child, so nothing has to reap it)
and found again through its pidfile, named by the job's token like everything else of the job's:

    <state>/dhcp/<token>.pid      udhcpc's own pidfile
    <state>/dhcp/<token>.events   one line per hook call: "<epoch> <event> ip= mask= router= server= lease="
    <state>/dhcp/<token>.log      the client's own messages
    <state>/dhcp/udhcpc-hook      the hook (written by Lark, root-only)
    <state>/dhcp/last-<hash>      the address a client identifier last held (kept 7 days)

A released lease is free for the server to give to anyone, and dnsmasq, for one, then picks a
new client's address from a hash of its MAC (new for every run). So the client asks for the
address its identifier last held (option 50, ``-r``): a re-run job gets its address back
whenever it is still free.

The hook gives the address the lease's own lifetime (``valid_lft``): a renewal extends it, and a
lease that runs out unrenewed (the server is gone) is removed by the kernel exactly at expiry,
whatever happens to the client. So the job keeps its address until then, and no longer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lark.addressing import LeaseEvent, latest_lease, parse_events
from lark.errors import KernelError

__all__ = ["HOOK", "client_alive", "client_pid", "client_tokens", "events_path", "read_events", "remember_address",
           "restart_needed", "start_client", "stop_client", "wait_for_lease"]

HOOK = """#!/bin/sh
# udhcpc event hook written by Lark (lark/addressing/dhcp.py); runs as root in the job's namespace.
# The address lives as long as the lease: a renewal extends it, an unrenewed lease is removed by
# the kernel at expiry. "deconfig" (client start, lease lost) leaves the address to that clock.
case "$1" in
bound|renew)
  ip -4 addr replace "$ip/$mask" dev "$interface" valid_lft "$lease" preferred_lft "$lease" || exit 1
  if [ -n "$router" ]; then
    ip -4 route replace default via "${router%% *}" dev "$interface" || true
  fi
  ;;
esac
echo "$(date +%s) $1 ip=$ip mask=$mask router=${router%% *} server=$serverid lease=$lease" >> "$LARK_DHCP_EVENTS"
"""
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _dir(state_dir: Path) -> Path:
    path = state_dir / "dhcp"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def events_path(state_dir: Path, token: str) -> Path:
    return state_dir / "dhcp" / f"{token}.events"


def _pidfile(state_dir: Path, token: str) -> Path:
    return state_dir / "dhcp" / f"{token}.pid"


def _hook(state_dir: Path) -> Path:
    hook = _dir(state_dir) / "udhcpc-hook"
    try:
        if hook.read_text() == HOOK:
            return hook
    except FileNotFoundError:
        pass
    tmp = hook.with_name(f".udhcpc-hook.{os.getpid()}")
    tmp.write_text(HOOK)
    tmp.chmod(0o700)
    os.replace(tmp, hook)
    return hook


def client_command() -> list[str]:
    found = shutil.which("udhcpc", path=_PATH)
    if found:
        return [found]
    busybox = shutil.which("busybox", path=_PATH)
    if busybox:
        return [busybox, "udhcpc"]
    raise KernelError("DHCP addressing needs busybox's udhcpc (Debian package udhcpc), which is not installed")


_REMEMBER_SECONDS = 7 * 86400


def _last_path(state_dir: Path, client_id: bytes) -> Path:
    return state_dir / "dhcp" / f"last-{hashlib.sha256(client_id).hexdigest()[:24]}"


def remember_address(state_dir: Path, client_id: bytes, address: str) -> None:
    """The address (with prefix length) a client identifier was granted, for its next run."""
    path = _last_path(state_dir, client_id)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(address)
    os.replace(tmp, path)


def _last_address(state_dir: Path, client_id: bytes) -> str | None:
    now = time.time()
    for old in (state_dir / "dhcp").glob("last-*"):  # forget identifiers not seen for a week
        try:
            if now - old.stat().st_mtime > _REMEMBER_SECONDS:
                old.unlink(missing_ok=True)
        except FileNotFoundError:
            continue
    try:
        return _last_path(state_dir, client_id).read_text().strip().partition("/")[0] or None
    except FileNotFoundError:
        return None


def start_client(state_dir: Path, token: str, netns_path: str, ifname: str, client_id: bytes, hostname: str) -> None:
    """Start (or restart) the job's client; it keeps its lease renewed until :func:`stop_client`.

    Discovery sends a DISCOVER every second for 5 s (an answer to any of them is taken), pauses
    1 s, and starts again, for as long as the client runs; how long a job's start waits for the
    first lease is the caller's bound. The 5 s round outlasts a server's check that an address is
    free before it first offers it (dnsmasq pings for 3 s): with udhcpc's default 3 s round the
    late offer missed the round, and the lease came a round later.
    """
    directory = _dir(state_dir)
    argv = ["setsid", "--fork", "nsenter", f"--net={netns_path}", *client_command(), "-f", "-i", ifname,
            "-s", str(_hook(state_dir)), "-p", str(_pidfile(state_dir, token)), "-R",
            "-t", "5", "-T", "1", "-A", "1",
            "-x", f"0x3d:{client_id.hex()}", "-x", f"hostname:{hostname}"]
    last = _last_address(state_dir, client_id)
    if last is not None:
        argv += ["-r", last]
    _pidfile(state_dir, token).unlink(missing_ok=True)
    try:
        with open(directory / f"{token}.log", "ab") as log:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  env={"PATH": _PATH, "LARK_DHCP_EVENTS": str(events_path(state_dir, token))},
                                  close_fds=True, check=False)
    except OSError as err:  # setsid or nsenter missing (util-linux), or the log not writable
        raise KernelError(f"cannot start the DHCP client of job {token}: {err}") from None
    if done.returncode != 0:
        raise KernelError(f"cannot start the DHCP client of job {token} (setsid exited {done.returncode})")


def client_pid(state_dir: Path, token: str) -> int | None:
    """The pid of the job's running client, checked against its command line (a reused pid is not it)."""
    try:
        pid = int(_pidfile(state_dir, token).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return pid if str(_pidfile(state_dir, token)).encode() in cmdline else None


def client_tokens(state_dir: Path) -> list[str]:
    """The tokens of every job that has a client pidfile here (running or not), for the sweep."""
    return sorted(p.name.removesuffix(".pid") for p in (state_dir / "dhcp").glob("*.pid"))


def client_alive(state_dir: Path, token: str) -> bool:
    return client_pid(state_dir, token) is not None


def restart_needed(state_dir: Path, token: str) -> bool:
    """A client that was started for the job (its pidfile exists) but is no longer running."""
    return _pidfile(state_dir, token).exists() and not client_alive(state_dir, token)


def read_events(state_dir: Path, token: str) -> list[LeaseEvent]:
    try:
        return parse_events(events_path(state_dir, token).read_text(errors="replace"))
    except FileNotFoundError:
        return []


def wait_for_lease(state_dir: Path, token: str, deadline: float,
                   cancelled: Callable[[], bool] = lambda: False) -> LeaseEvent | None:
    """The job's first lease, or None once ``deadline`` (time.monotonic) has passed without one, or
    as soon as ``cancelled()`` says the job is gone (torn down while it waited)."""
    while True:
        lease = latest_lease(read_events(state_dir, token))
        if lease is not None:
            return lease
        if time.monotonic() >= deadline or cancelled():
            return None
        time.sleep(0.02)


def stop_client(state_dir: Path, token: str, wait: float = 2.0) -> None:
    """Stop the job's client (it sends a RELEASE first) and forget its files. Idempotent."""
    if not (state_dir / "dhcp").is_dir():
        return  # no job of this node was ever addressed by DHCP: one stat per teardown
    pid = client_pid(state_dir, token)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + wait
            while client_pid(state_dir, token) == pid and Path(f"/proc/{pid}").exists():
                if time.monotonic() >= deadline:
                    os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.01)
        except ProcessLookupError:
            pass
    for suffix in (".pid", ".events", ".log"):
        (state_dir / "dhcp" / f"{token}{suffix}").unlink(missing_ok=True)
