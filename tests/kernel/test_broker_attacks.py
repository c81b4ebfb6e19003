"""Attacks on a real ``lark-netd`` by local users and misbehaving clients.

Each test starts the broker as a subprocess in the test's own sandbox namespace, with its own
``LARK_NAME_PREFIX`` (the run's prefix), state dir, socket, execute dir, journal and ``LARK_STARTER``
(a root-owned copy of the interpreter named ``condor_starter``); see :mod:`tests.kernel.brokerkit`.
The job user and the attacker are ``nobody``. Nothing leaves the sandbox: clients speak to the
broker's Unix socket only, and every job network is made inside the sandbox host.

What each test holds the broker to:

1. pid recycling: a connection opened by a process that has gone is refused even after its pid
   belongs to a job's wrapper; the wrapper's network stays up and no counters leak.
2. trickle: one deadline for a whole request; a slow client is dropped, others are served meanwhile.
3. burst: 200 connects at the same instant all get in (no EAGAIN) and all get an answer.
4. held connections: 1,500 idle connections cost no thread each; a fresh client is still served;
   a job is served (and the broker survives) while a user holds 1,000; beyond
   LARK_BROKER_MAX_CONNECTIONS a connection is closed at once and one user cannot take every slot;
   the broker raises its RLIMIT_NOFILE soft limit to the hard one.
5. fake starter: only the configured, root-owned starter running as root counts as a starter.
6. one setup per job: a second wrapper of the same starter, or one after finalize, is refused.

A broker started here gets ``PYTHONFAULTHANDLER=1``, so a test that sees it abort shows the Python stack.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time

import pytest

from tests.kernel.brokerkit import (
    BrokerLab,
    ask,
    idle_connections,
    links_in,
    nofile_limits,
    ping,
    raise_nofile,
    socket_count,
    still_open,
    thread_count,
)
from tests.support import wait_until

pytestmark = pytest.mark.kernel


def refused(reply: dict) -> bool:
    """An error reply with a message (a dropped connection is not the refusal the interface promises)."""
    return reply.get("ok") is False and bool(reply.get("error"))


# ---------------------------------------------------------------- 1. pid recycling


@pytest.mark.parametrize("opener", ["local_user", "local_user_gone_at_accept", "exited_wrapper"])
def test_finalize_on_a_connection_whose_process_is_gone_is_refused_after_pid_reuse(lab: BrokerLab,
                                                                                  opener: str) -> None:
    """The attacker holds a connection whose opener has exited; the victim job's wrapper is given the
    opener's pid (ns_last_pid, as root, right before the fake starter forks it); the attacker then
    sends ``finalize`` on the old connection.

    ``local_user``: the opener is a child of an unprivileged local process (uid nobody, no job); it
    stays 0.3 s after connecting, so the broker accepts while it lives.
    ``local_user_gone_at_accept``: the same, but the opener exits right after ``connect``, most likely
    before the broker has accepted (no live process to pin then).
    ``exited_wrapper``: the opener is a wrapper-like child of another fake starter (job user, fresh
    network namespace), so every /proc fact at accept time was right; only the process's identity
    (pidfd / start time) tells it from the victim.
    """
    lab.start_broker(LARK_REQUEST_TIMEOUT="60")  # the held connection must outlive the set-up below
    victim_starter = lab.fake_starter()
    lab.write_job_ad(victim_starter.pid, cluster=7)
    if opener.startswith("local_user"):
        holder = lab.attacker()
        handle, old_pid = holder.hold(linger=0.0 if opener.endswith("gone_at_accept") else 0.3)
    else:
        holder = lab.fake_starter()
        lab.write_job_ad(holder.pid, cluster=8)
        handle, old_pid = holder.hold(uid=lab.uid, gid=lab.gid, newnet=True)

    victim = victim_starter.spawn(uid=lab.uid, gid=lab.gid, newnet=True, pid=old_pid)
    assert victim == old_pid, f"the victim's wrapper got pid {victim}, not the recycled {old_pid}"
    setup = victim_starter.ask(victim, "setup")
    assert setup.get("ok") is True, f"the victim's own setup failed: {setup}\n{lab.broker_log()}"
    before = lab.record_of(victim)
    assert before is not None and before["status"] == "up", f"no record for the victim: {lab.records()}"

    reply = holder.send_held(handle, "finalize")
    time.sleep(0.5)  # a broker that accepted would tear the network down just after replying
    after = lab.record_of(victim)
    victim_links = links_in(f"/proc/{victim}/ns/net")
    assert refused(reply), (f"finalize on a connection opened by pid {old_pid} (exited; pid now the victim's "
                            f"wrapper) was not refused: {reply}; victim record after: "
                            f"{after and after['status']}, its links {victim_links}")
    assert "accounting" not in reply, f"the attacker got the victim's counters: {reply}"
    assert after is not None and after["status"] == "up", f"the victim's record is now {after}"
    assert before["job_ifname"] in victim_links, f"the victim's interface is gone: {victim_links}"

    final = victim_starter.ask(victim, "finalize")  # the real wrapper still can
    assert final.get("ok") is True, f"the victim's own finalize failed: {final}\n{lab.broker_log()}"


# ---------------------------------------------------------------- 2. trickle


def test_a_client_trickling_its_request_is_dropped_at_the_deadline(lab: BrokerLab) -> None:
    timeout = 1.0
    lab.start_broker(LARK_REQUEST_TIMEOUT=str(timeout))
    pinged: dict | None = None
    closed_after: float | None = None
    how = ""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(lab.socket))
        start = time.monotonic()
        while closed_after is None and time.monotonic() - start < 4 * timeout:
            try:
                sock.send(b" ")  # JSON whitespace: a request that never ends
            except OSError as err:
                closed_after, how = time.monotonic() - start, f"send: {errno.errorcode.get(err.errno, err)}"
                break
            if pinged is None:
                pinged = ask(lab.socket, "ping", timeout=3 * timeout)
            wait_until = time.monotonic() + 1.0  # one byte per second
            while closed_after is None and time.monotonic() < wait_until:
                sock.settimeout(max(0.01, wait_until - time.monotonic()))
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError as err:
                    closed_after, how = time.monotonic() - start, f"recv: {errno.errorcode.get(err.errno, err)}"
                    break
                if not data:
                    closed_after, how = time.monotonic() - start, how or "EOF"
                else:
                    how = f"reply {data[:120]!r} then "
    assert closed_after is not None, f"a client sending one byte per second was still connected after {4 * timeout} s"
    assert closed_after >= 0.5 * timeout, f"dropped after {closed_after:.2f} s ({how}), before the deadline"
    assert pinged is not None and pinged.get("ok") is True, f"ping meanwhile: {pinged}"


# ---------------------------------------------------------------- 3. burst


def test_a_burst_of_200_connects_is_accepted_and_answered(lab: BrokerLab) -> None:
    lab.start_broker()
    raise_nofile(1024)
    socks: list[socket.socket] = []
    failed: list[str] = []
    try:
        for _ in range(200):  # all connects first, without waiting: the backlog takes the burst
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(str(lab.socket))
            except OSError as err:
                failed.append(errno.errorcode.get(err.errno or 0, str(err)))
                sock.close()
                continue
            socks.append(sock)
        for sock in socks:
            sock.send(b'{"op": "ping"}\n')
        answered = _read_replies(socks, deadline=time.monotonic() + 30)
    finally:
        for sock in socks:
            sock.close()
    assert not failed, f"{len(failed)}/200 connects failed ({', '.join(sorted(set(failed)))})"
    ok = sum(1 for reply in answered.values() if reply.startswith(b"{") and b'"ok": true' in reply)
    others = [r for r in answered.values() if b"true" not in r][:3]
    assert ok == 200, f"{ok}/200 pings answered ok; other replies: {others}"


def _read_replies(socks: list[socket.socket], deadline: float) -> dict[int, bytes]:
    """Read every socket until its reply line ends or it closes; {index: bytes read}."""
    sel = selectors.DefaultSelector()
    got: dict[int, bytes] = {}
    for i, sock in enumerate(socks):
        sel.register(sock, selectors.EVENT_READ, i)
        got[i] = b""
    pending = len(socks)
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            i = key.data
            try:
                chunk = key.fileobj.recv(4096)  # type: ignore[union-attr]
            except OSError:
                chunk = b""
            got[i] += chunk
            if not chunk or got[i].endswith(b"\n"):
                sel.unregister(key.fileobj)
                pending -= 1
    sel.close()
    return got


# ---------------------------------------------------------------- 4. held connections


def test_1500_idle_connections_cost_no_thread_each(lab: BrokerLab) -> None:
    lab.start_broker(LARK_REQUEST_TIMEOUT="120")  # held, not dropped, while we look
    raise_nofile(4096)
    baseline = socket_count(lab.broker_pid)
    with idle_connections(lab.socket, 1500) as socks:
        # accepted by the broker (its descriptors; its own sockets may come and go, so a lower bound)
        wait_until("the broker to hold the idle connections",
                   lambda: socket_count(lab.broker_pid) >= baseline + 1490, 20, 0.1)
        held = still_open(socks)  # and none of them closed
        threads = 0
        for _ in range(5):  # the highest of a few looks
            threads = max(threads, thread_count(lab.broker_pid))
            time.sleep(0.05)
        answered = ask(lab.socket, "ping", timeout=5)
        # With 1500 connections (and their pidfds) open, descriptors the broker opens for a job's
        # kernel work would be numbered past 1024, where libnftables' select() aborts the process:
        # a job set up now proves the held connections live out of that range.
        starter = lab.fake_starter()
        lab.write_job_ad(starter.pid, cluster=3)
        wrapper = starter.spawn(uid=lab.uid, gid=lab.gid, newnet=True)
        setup = starter.ask(wrapper, "setup", timeout=20)
        final = starter.ask(wrapper, "finalize", timeout=20) if setup.get("ok") else None
    assert lab.broker is not None and lab.broker.poll() is None, f"lark-netd died:\n{lab.crash_report()}"
    assert setup.get("ok") is True and final is not None and final.get("ok") is True, (setup, final)
    assert held >= 1500, f"the broker holds only {held} of 1500 connections"
    assert threads < 50, f"the broker runs {threads} threads with 1500 idle connections"
    assert answered.get("ok") is True, f"ping with 1500 idle connections: {answered}"
    assert ping(lab.socket), "ping after the idle connections closed"


def test_a_job_is_served_while_a_user_holds_1000_connections(lab: BrokerLab) -> None:
    """An unprivileged user holds 1,000 idle connections (within the default per-user share), and a
    job comes: its network is made and removed, and the broker lives on.

    With that many descriptors open, every new one the broker opens for the job (netlink, nftables)
    is numbered above 1024; a library that still puts it in an ``fd_set`` (select) aborts the process.
    """
    lab.start_broker(LARK_REQUEST_TIMEOUT="120")
    starter = lab.fake_starter()
    lab.write_job_ad(starter.pid, cluster=4)
    baseline = socket_count(lab.broker_pid)
    flood = lab.attacker().call(do="flood", n=1000)
    held = socket_count(lab.broker_pid) - baseline
    wrapper = starter.spawn(uid=lab.uid, gid=lab.gid, newnet=True)
    setup = starter.ask(wrapper, "setup", timeout=20)
    final = starter.ask(wrapper, "finalize", timeout=20) if setup.get("ok") else None
    time.sleep(0.3)  # a process that aborted has closed its sockets before it can be reaped
    alive = lab.broker is not None and lab.broker.poll() is None
    assert alive, (f"lark-netd died (exit {lab.broker.poll() if lab.broker else None}) serving a job while a user "
                   f"held {held} connections ({flood}):\n{lab.crash_report()}")
    assert setup.get("ok") is True, f"setup while a user holds {held} connections: {setup}"
    assert final is not None and final.get("ok") is True, f"finalize while a user holds {held} connections: {final}"


def test_connections_beyond_the_limits_are_closed_at_once(lab: BrokerLab) -> None:
    """LARK_BROKER_MAX_CONNECTIONS bounds what the broker holds: one unprivileged user cannot take
    every slot, and once all are taken a new connection is closed at once (no reply), not queued."""
    lab.start_broker(LARK_BROKER_MAX_CONNECTIONS="16", LARK_REQUEST_TIMEOUT="120")
    attacker = lab.attacker()
    flood = attacker.call(do="flood", n=16)
    assert flood["opened"] == 16, f"the user could not even connect: {flood}"
    assert flood["closed"] > 0, "one unprivileged user holds all 16 of the broker's connections"
    assert ping(lab.socket), f"ping while a user holds {16 - flood['closed']} connections"
    with idle_connections(lab.socket, 16):  # root takes whatever is left
        time.sleep(0.3)
        start = time.monotonic()
        beyond = ask(lab.socket, "ping", timeout=5)
        waited = time.monotonic() - start
    assert beyond.get("ok") is not True and waited < 1.0, \
        f"a connection beyond the maximum: {beyond} after {waited:.2f} s (expected: closed at once)"
    # the broker sees our closes on its next turn
    wait_until("a ping answered after the idle connections closed", lambda: ping(lab.socket), 3)


def test_the_broker_raises_its_descriptor_limit(lab: BrokerLab) -> None:
    lab.start_broker(nofile_soft=1024)
    soft, hard = nofile_limits(lab.broker_pid)
    assert soft == hard, f"RLIMIT_NOFILE of lark-netd: soft {soft}, hard {hard} (started with soft 1024)"


# ---------------------------------------------------------------- 5. fake starter


@pytest.mark.parametrize("starter", ["root_copy_elsewhere", "user_copy", "configured_path_run_by_user"])
def test_a_fake_condor_starter_is_not_a_starter(lab: BrokerLab, starter: str) -> None:
    """``root_copy_elsewhere``: root-owned, named condor_starter, run as root, but not at LARK_STARTER.
    ``user_copy``: the user's own program named condor_starter, run by the user.
    ``configured_path_run_by_user``: the configured starter executable, run by the user (real uid nobody).
    The user's children take a fresh user + network namespace (no privilege needed)."""
    lab.start_broker()
    if starter == "root_copy_elsewhere":
        driver = lab.fake_starter(exe=lab.root_copy_elsewhere())
        child_spec = {"uid": lab.uid, "gid": lab.gid, "newnet": True}
    else:
        exe = lab.user_copy() if starter == "user_copy" else None
        driver = lab.fake_starter(exe=exe, as_user=True)
        child_spec = {"newnet": True, "userns": True}
    lab.write_job_ad(driver.pid, cluster=5)  # as if HTCondor had: only the starter must fail
    child = driver.spawn(**child_spec)
    reply = driver.ask(child, "setup")
    assert refused(reply) and "is not a job wrapper" in str(reply.get("error")), (
        f"setup from a child of {driver.exe} (uid {driver.uid}) was not refused as 'is not a job wrapper': {reply}")
    assert lab.record_of(child) is None, "the broker recorded a network for it"


# ---------------------------------------------------------------- 6. one setup per job


def test_one_setup_per_job(lab: BrokerLab) -> None:
    lab.start_broker()
    starter = lab.fake_starter()
    lab.write_job_ad(starter.pid, cluster=6)
    first = starter.spawn(uid=lab.uid, gid=lab.gid, newnet=True)
    setup = starter.ask(first, "setup")
    assert setup.get("ok") is True, f"first setup: {setup}\n{lab.broker_log()}"

    second = starter.spawn(uid=lab.uid, gid=lab.gid, newnet=True)
    again = starter.ask(second, "setup")
    assert refused(again) and "already" in str(again.get("error")), f"second wrapper's setup while up: {again}"
    assert lab.record_of(second) is None

    final = starter.ask(first, "finalize")
    assert final.get("ok") is True, f"finalize: {final}"
    third = starter.spawn(uid=lab.uid, gid=lab.gid, newnet=True)
    late = starter.ask(third, "setup")
    assert refused(late) and "already" in str(late.get("error")), f"another wrapper's setup after finalize: {late}"
    redo = starter.ask(first, "setup")
    assert refused(redo), f"the first wrapper's setup after its finalize: {redo}"
    assert lab.record_of(third) is None, f"records: {lab.records()}"
