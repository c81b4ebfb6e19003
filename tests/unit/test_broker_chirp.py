"""The broker's chirp channel: bounded calls, and the chirp config read once and safely.

Real sockets on loopback play a starter's chirp server that dies mid-call or trickles its reply;
HTCondor's own client would spin for ever on the first and wait for hours on the second.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lark.broker import condor
from lark.broker.condor import Chirp, ChirpAddress, parse_chirp_config, read_small_file
from lark.errors import LarkError


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """Start a one-connection-at-a-time TCP server on 127.0.0.1 running ``behave(conn)``."""
    socks: list[socket.socket] = []

    def start(behave: Callable[[socket.socket], None]) -> int:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        socks.append(srv)

        def loop() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=behave, args=(conn,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()
        return srv.getsockname()[1]

    yield start
    for s in socks:
        s.close()


def test_a_server_that_closes_mid_call_fails_the_call_at_once(server) -> None:
    def hang_up(conn: socket.socket) -> None:
        conn.recv(100)
        conn.close()  # the starter was killed after reading the command

    port = server(hang_up)
    t0 = time.monotonic()
    with pytest.raises(LarkError, match="chirp to 127.0.0.1"):
        Chirp(ChirpAddress("127.0.0.1", port, "c")).set({"LarkBytesIn": 1})
    assert time.monotonic() - t0 < condor.CHIRP_DEADLINE  # an error, not a spin until some timeout


def test_a_trickling_server_is_cut_off_at_the_deadline(server, monkeypatch) -> None:
    monkeypatch.setattr(condor, "CHIRP_DEADLINE", 1.0)

    def trickle(conn: socket.socket) -> None:
        conn.recv(100)
        try:
            for _ in range(100):
                conn.send(b"0")  # a byte at a time, never the newline: each read alone is quick
                time.sleep(0.2)
        except OSError:
            pass
        conn.close()

    port = server(trickle)
    t0 = time.monotonic()
    with pytest.raises(LarkError):
        Chirp(ChirpAddress("127.0.0.1", port, "c")).set({"LarkBytesIn": 1})
    assert time.monotonic() - t0 < 5  # one deadline for the call, not one per read


def test_the_chirp_config_is_read_only_from_a_small_regular_file(tmp_path: Path) -> None:
    good = tmp_path / ".chirp.config"
    good.write_text("127.0.0.1 40123 cookie123\n")
    assert parse_chirp_config(read_small_file(good, 4096) or "", good) == ChirpAddress("127.0.0.1", 40123, "cookie123")
    assert read_small_file(tmp_path / "absent", 4096) is None
    link = tmp_path / "link"
    link.symlink_to(good)  # e.g. to another job's config, with its cookie
    with pytest.raises(LarkError, match="symbolic link"):
        read_small_file(link, 4096)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # a read would block the broker for ever
    with pytest.raises(LarkError, match="not a regular file"):
        read_small_file(fifo, 4096)
    big = tmp_path / "big"
    big.write_text("x" * 5000)
    with pytest.raises(LarkError, match="more than"):
        read_small_file(big, 4096)


def test_a_chirp_address_must_be_one_of_this_hosts(tmp_path: Path) -> None:
    path = tmp_path / ".chirp.config"
    with pytest.raises(LarkError, match="not an address of this host"):
        parse_chirp_config("192.0.2.7 40123 c", path)  # a documentation address nobody here has
    with pytest.raises(LarkError, match="host port cookie"):
        parse_chirp_config("127.0.0.1 notaport c", path)
