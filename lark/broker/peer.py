"""Who is calling the broker: credentials from the socket, facts from /proc. Never the client's word.

The identity of a caller is pinned **when its connection is accepted**, before a byte is read:

* ``SO_PEERCRED`` gives the pid, uid and gid of the process that called ``connect``;
* ``SO_PEERPIDFD`` (Linux >= 6.5) gives a pidfd of that very process. A pidfd cannot be
  recycled: once the process has exited, signalling it fails with ESRCH even if its pid now
  belongs to someone else. Facts read from ``/proc/<pid>`` are trusted only if the pidfd still
  names a live process *after* they were read (a pid is unique among processes that exist).
* Without ``SO_PEERPIDFD`` the fallback is the process start time: it is read at accept time and
  must be unchanged whenever the caller's facts are read again, and a process that started after
  the connection was accepted cannot be the one that connected.

Why it matters: before this, the pid was resolved through ``/proc`` only after the request was
read, so a local user could open connections from short-lived children, keep them, wait until a
victim job's wrapper reused one of those pids and then speak for the victim.

A request is served only for a wrapper: a process whose *parent* runs exactly the configured,
root-owned ``condor_starter`` executable as root (or the condor user), and which sits in a network
namespace other than the broker's own (the starter gave it a fresh one). The job's own processes
(children of the wrapper), a user's program named ``condor_starter`` and local users outside any
job all fail these checks.
"""

from __future__ import annotations

import errno
import os
import pwd
import signal
import socket
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from lark.errors import NotPermitted

# Linux 6.5 (include/uapi/asm-generic/socket.h); Python 3.11's socket module does not name it.
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcFacts:
    """What /proc says about one process at one moment."""

    pid: int
    parent: int
    start: int  # clock ticks since boot (field 22 of /proc/<pid>/stat)
    real_uid: int


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, pinned at accept time."""

    pid: int
    uid: int
    gid: int
    start: int | None  # its start time when the connection was accepted (None: it had gone)
    pidfd: int | None = None  # owned by the connection; closed with it

    def same_process(self) -> bool:
        """Whether the process that connected still exists (never a newcomer with its pid)."""
        if self.start is None:
            return False
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass  # alive, only not ours to signal (signal 0 still checks existence first)
            return True
        now = process_facts(self.pid)
        return now is not None and now.start == self.start

    def facts(self) -> ProcFacts:
        """Fresh /proc facts of this very process, or NotPermitted when it has gone."""
        found = process_facts(self.pid)
        if found is None or found.start != self.start or not self.same_process():
            raise NotPermitted(f"process {self.pid} (uid {self.uid}) that opened this connection has gone")
        return found

    def close(self) -> None:
        if self.pidfd is not None:
            try:
                os.close(self.pidfd)
            except OSError:
                pass


def accept_peer(conn: socket.socket) -> Peer:
    """Pin the identity of ``conn``'s peer; call it right after ``accept``."""
    accepted = boot_ticks_now()
    data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    pidfd: int | None = None
    fallback = False
    try:
        pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError as err:
        if err.errno == errno.EINVAL:
            # Linux 6.5-6.15: the peer has already been reaped, so its pid may belong to anyone now
            return Peer(pid, uid, gid, None, None)
        if err.errno != errno.ENOPROTOOPT:
            raise
        fallback = True  # before Linux 6.5: no SO_PEERPIDFD
    if fallback:
        # A pidfd of whatever process has the pid now; the start time tells whether it can be the
        # one that connected (it must have started before the accept). What this cannot see is a
        # pid reused between connect and accept, a window of microseconds: the broker accepts at once.
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return Peer(pid, uid, gid, None, None)
    try:
        facts = process_facts(pid)
        start = facts.start if facts else None
        if fallback and start is not None and start > accepted:
            start = None  # started after the accept: not the process that connected
        peer = Peer(pid, uid, gid, start, pidfd)
        if start is not None and not peer.same_process():
            return Peer(pid, uid, gid, None, pidfd)  # it exited before we looked: its pid may be reused
        return peer
    except BaseException:
        if pidfd is not None:
            os.close(pidfd)
        raise


def boot_ticks_now() -> int:
    """Now, in the unit of /proc/<pid>/stat start times (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLOCK_TICKS) + 1


def process_facts(pid: int) -> ProcFacts | None:
    """Parent, start time and real uid of ``pid`` (None when it does not exist)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    fields = stat_line.rsplit(")", 1)[1].split()
    real_uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), -1)
    return ProcFacts(pid=pid, parent=int(fields[1]), start=int(fields[19]), real_uid=real_uid)


def executable(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def netns_inode(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        raise NotPermitted(f"cannot see the network namespace of process {pid}") from None


def starter_uids() -> frozenset[int]:
    """Real uids a genuine condor_starter runs with: root, and the condor user where it exists."""
    uids = {0}
    try:
        uids.add(pwd.getpwnam("condor").pw_uid)
    except KeyError:
        pass
    return frozenset(uids)


def trusted_executable(path: Path) -> str:
    """The real path of the configured starter, if it is a root-owned file nobody else may write."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        raise NotPermitted(f"the configured starter {path} (LARK_STARTER) does not exist") from None
    if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or not stat.S_ISREG(st.st_mode):
        raise NotPermitted(f"the configured starter {real} (LARK_STARTER) is not a root-owned file "
                           "that only root may write")
    return real


@dataclass(frozen=True)
class TrustedStarter:
    """The configured starter, checked once when the broker starts (a bad LARK_STARTER stops it
    there with the reason instead of refusing every job): its real path and the uids it runs as."""

    path: str
    uids: frozenset[int]

    @classmethod
    def load(cls, configured: Path) -> TrustedStarter:
        return cls(trusted_executable(configured), starter_uids())


@dataclass(frozen=True)
class Starter:
    pid: int
    start: int
    job_netns: int  # inode of the caller's network namespace, as checked


def starter_of(peer: Peer, host_netns_inode: int, trusted: TrustedStarter) -> Starter:
    """The condor_starter whose direct child ``peer`` is, or NotPermitted saying why not."""
    facts = peer.facts()
    parent = process_facts(facts.parent)
    want = trusted.path
    who = f"process {peer.pid} (uid {peer.uid}) is not a job wrapper"
    # A parent always starts before its child: a later start time means the parent's pid was reused.
    if parent is None or parent.start > facts.start:
        raise NotPermitted(f"{who}: its parent has gone")
    # " (deleted)": the starter binary was replaced by an upgrade while this starter ran; only root
    # could have put a file at that path
    if executable(parent.pid) not in (want, want + " (deleted)"):
        raise NotPermitted(f"{who}: its parent is not HTCondor's condor_starter ({want}, LARK_STARTER)")
    if parent.real_uid not in trusted.uids:
        raise NotPermitted(f"{who}: its parent runs {want} as uid {parent.real_uid}, not as root or condor")
    if netns_inode(parent.pid) != host_netns_inode:
        raise NotPermitted(f"{who}: its parent does not run in the execute host's network namespace")
    job_netns = netns_inode(peer.pid)
    if job_netns == host_netns_inode:
        raise NotPermitted(f"process {peer.pid} runs in the host's network namespace "
                           "(is NO_JOB_NETWORKING = True set on this execute node?)")
    # everything above was read while both were alive; read both once more to close the window
    again = process_facts(parent.pid)
    if again is None or again.start != parent.start:
        raise NotPermitted(f"{who}: its parent has gone")
    peer.facts()
    return Starter(parent.pid, parent.start, job_netns)
