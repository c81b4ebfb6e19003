"""The broker's view of its caller: identity pinned at accept, the starter recognised by what a user
cannot fake. Real processes and real Unix sockets; no HTCondor needed."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from lark.broker.peer import TrustedStarter, accept_peer, process_facts, starter_of, trusted_executable
from lark.errors import NotPermitted


@pytest.fixture
def listener(tmp_path: Path):
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    yield srv, path
    srv.close()


def test_a_live_caller_is_pinned_with_its_start_time(listener) -> None:
    srv, path = listener
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    conn, _ = srv.accept()
    peer = accept_peer(conn)
    try:
        assert peer.pid == os.getpid() and peer.uid == os.getuid()
        assert peer.start == process_facts(os.getpid()).start  # type: ignore[union-attr]
        assert peer.same_process()
        assert peer.facts().pid == os.getpid()
    finally:
        peer.close()
        conn.close()
        client.close()


def test_a_caller_that_exited_before_accept_is_never_trusted(listener) -> None:
    """The recycling attack's first step: a short-lived child connects and exits, its parent keeps
    the connection. Whatever later gets that pid, the connection speaks for nobody."""
    srv, path = listener
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    child = os.fork()
    if child == 0:  # the child connects on the inherited socket and exits at once
        try:
            client.connect(path)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    conn, _ = srv.accept()
    peer = accept_peer(conn)
    try:
        assert peer.pid == child
        assert not peer.same_process()
        with pytest.raises(NotPermitted, match="has gone"):
            peer.facts()
    finally:
        peer.close()
        conn.close()
        client.close()


def test_only_a_root_owned_starter_nobody_else_may_write_is_trusted(tmp_path: Path) -> None:
    exe = tmp_path / "condor_starter"
    shutil.copy(sys.executable, exe)
    os.chmod(exe, 0o755)
    assert trusted_executable(exe) == str(exe.resolve())
    os.chmod(exe, 0o775)  # group-writable: someone else could replace what runs as the starter
    with pytest.raises(NotPermitted, match="root-owned"):
        trusted_executable(exe)
    with pytest.raises(NotPermitted, match="does not exist"):
        trusted_executable(tmp_path / "missing")


def test_a_parent_that_is_not_the_configured_starter_is_refused(listener, tmp_path: Path) -> None:
    """Here the caller's parent is pytest's interpreter, not the configured starter (a root-owned
    file of the same name elsewhere, as a user's own program named condor_starter would be)."""
    srv, path = listener
    starter = tmp_path / "sbin" / "condor_starter"
    starter.parent.mkdir()
    shutil.copy(sys.executable, starter)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            os.write(write_end, b"x")
            import time

            time.sleep(30)
        finally:
            os._exit(0)
    os.close(write_end)
    os.read(read_end, 1)
    conn, _ = srv.accept()
    peer = accept_peer(conn)
    try:
        host_ns = os.stat("/proc/self/ns/net").st_ino
        with pytest.raises(NotPermitted, match="is not a job wrapper: its parent is not HTCondor's condor_starter"):
            starter_of(peer, host_ns, TrustedStarter.load(starter))
    finally:
        peer.close()
        conn.close()
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.close(read_end)


def test_a_bad_lark_starter_stops_the_broker_at_start_with_the_reason(tmp_path: Path) -> None:
    """Checked once at start: otherwise the broker would run and refuse every job, each then held."""
    import subprocess

    run = subprocess.run([sys.executable, "-m", "lark.broker.main", "--stderr", "-D", "LARK_NAME_PREFIX=lkst",
                          "-D", f"LARK_STATE_DIR={tmp_path / 'state'}", "-D", f"LARK_SOCKET={tmp_path / 's.sock'}",
                          "-D", f"LARK_STARTER={tmp_path / 'no-such-starter'}"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2, run.stderr
    assert "LARK_STARTER" in run.stderr and "does not exist" in run.stderr
    assert not (tmp_path / "s.sock").exists()  # it never listened
