"""Who is calling the broker: credentials from the socket, facts from /proc. Never the client's word.

A request is served only for a wrapper: a process whose *parent* is a ``condor_starter`` and which
sits in a network namespace other than the broker's own (the starter gave it a fresh one). The
job's own processes (children of the wrapper) and local users outside any job fail these checks.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from lark.errors import NotPermitted

STARTER_NAMES = ("condor_starter",)


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_credentials(conn: socket.socket) -> Peer:
    data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return Peer(pid, uid, gid)


def parent_pid(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    raise NotPermitted(f"process {pid} has gone")


def executable_name(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def netns_inode(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        raise NotPermitted(f"cannot see the network namespace of process {pid}") from None


def starter_of(peer: Peer, host_netns_inode: int) -> int:
    """The pid of the condor_starter whose direct child ``peer`` is, or NotPermitted."""
    starter = parent_pid(peer.pid)
    if executable_name(starter) not in STARTER_NAMES:
        raise NotPermitted(f"process {peer.pid} (uid {peer.uid}) is not a job wrapper started by condor_starter")
    if netns_inode(peer.pid) == host_netns_inode:
        raise NotPermitted(f"process {peer.pid} runs in the host's network namespace "
                           "(is NO_JOB_NETWORKING = True set on this execute node?)")
    return starter
