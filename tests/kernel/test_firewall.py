"""Firewall backends (nftables, iptables) against real namespaces and real traffic.

Each backend is used as the engine uses it: a job-side instance inside the job's namespace
(counters and policy, fixture ``inside``) and a host-side one (masquerade, port forwards,
isolation, fixture ``backend``). Topology built per test with plain ``ip`` commands, every
object carrying the run prefix::

    job ns  <prefix>j0 --- <prefix>h<tok>  host ns (the backend)  u<prefix> --- w<prefix>  wan ns
    10.99.0.2/30           10.99.0.1/30                           203.0.113.1   203.0.113.2/24
    2001:db8:99::2/64      2001:db8:99::1/64                      2001:db8:ffff::1  ::2
                                                                                + 203.0.113.3 (denied)
                                                                                + 198.51.100.2/24, 2001:db8:c::2/64
                                                                                  (class "campus")

Traffic is sent with Python sockets created inside the namespaces (a socket keeps the namespace
it was created in), from threads of the test process: no helper processes to clean up.
The pure batch builders are tested at the end without root.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from lark import netns
from lark.config import TrafficClass
from lark.errors import NotFound
from lark.firewall import iptplans as ipt
from lark.firewall import libnft, make_backend, nftrules
from lark.firewall import nftables as nft
from lark.firewall.base import FirewallBackend, FirewallJob, PortForward
from lark.firewall.isolation import HostAllow, Isolation, parse_host_allow, parse_job_to_job
from tests.support import same_bytes, wait_until, wire_count

kernel = pytest.mark.kernel

JOB4, HOST4, WAN_HOST4, WAN4, DENIED4, CAMPUS4 = ("10.99.0.2", "10.99.0.1", "203.0.113.1", "203.0.113.2",
                                                 "203.0.113.3", "198.51.100.2")
JOB6, HOST6, WAN_HOST6, WAN6, CAMPUS6 = ("2001:db8:99::2", "2001:db8:99::1", "2001:db8:ffff::1", "2001:db8:ffff::2",
                                         "2001:db8:c::2")
SPOOF4, SPOOF6 = "10.99.1.3", "2001:db8:99::3"  # .3 of the /30 would be its broadcast
CAMPUS = TrafficClass("campus", (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8:c::/48")))
PORTS = (40001, 40003)


# --------------------------------------------------------------------------------------------
# Plumbing


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", os.path.basename(ns), *args], check=True)


@dataclass
class Lab:
    host: str
    job: str
    wan: str
    prefix: str
    token: str
    host_if: str

    def job_spec(self, **changes: object) -> FirewallJob:
        spec = FirewallJob(
            token=self.token, ifname=f"{self.prefix}j0",  # the job's own interface
            addresses=(ipaddress.ip_address(JOB4), ipaddress.ip_address(JOB6)),
            masquerade_ipv4=True, masquerade_ipv6=True, anti_spoof=True,
            classes=(CAMPUS,),
            port_forward=PortForward(PORTS[0], PORTS[1], ipaddress.IPv4Address(JOB4), ipaddress.IPv6Address(JOB6)),
        )
        return replace(spec, **changes)  # type: ignore[arg-type]


@pytest.fixture
def lab(make_ns, sandbox_ns: str, run_prefix: str) -> Lab:
    host, job, wan = sandbox_ns, make_ns("job"), make_ns("wan")
    for ns in (host, job, wan):  # no duplicate address detection: addresses usable at once
        for knob in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
            subprocess.run(["ip", "netns", "exec", os.path.basename(ns), "sysctl", "-qw", knob], check=True)
    token = "t" + os.urandom(3).hex()[:5]
    host_if, job_if = f"{run_prefix}h{token}", f"{run_prefix}j0"
    up_if, wan_if = f"u{run_prefix}", f"w{run_prefix}"  # uplink must not match the "<prefix>*" NAT exclusion
    ip(host, "link", "add", host_if, "type", "veth", "peer", "name", job_if, "netns", os.path.basename(job))
    ip(host, "link", "add", up_if, "type", "veth", "peer", "name", wan_if, "netns", os.path.basename(wan))
    for args in (("addr", "add", f"{HOST4}/30", "dev", host_if),
                 ("addr", "add", f"{HOST6}/64", "dev", host_if, "nodad"),
                 ("addr", "add", f"{WAN_HOST4}/24", "dev", up_if),
                 ("addr", "add", f"{WAN_HOST6}/64", "dev", up_if, "nodad"),
                 ("link", "set", host_if, "up"), ("link", "set", up_if, "up"),
                 ("route", "add", "198.51.100.0/24", "via", WAN4),
                 ("route", "add", "2001:db8:c::/48", "via", WAN6),
                 ("route", "add", "10.99.1.0/24", "via", JOB4)):  # where a spoofed source's answers go
        ip(host, *args)
    for args in (("addr", "add", f"{JOB4}/30", "dev", job_if), ("addr", "add", f"{JOB6}/64", "dev", job_if, "nodad"),
                 ("link", "set", job_if, "up"), ("route", "add", "default", "via", HOST4),
                 ("route", "add", "default", "via", HOST6)):
        ip(job, *args)
    for args in (("addr", "add", f"{WAN4}/24", "dev", wan_if), ("addr", "add", f"{DENIED4}/24", "dev", wan_if),
                 ("addr", "add", f"{CAMPUS4}/24", "dev", wan_if),
                 ("addr", "add", f"{WAN6}/64", "dev", wan_if, "nodad"),
                 ("addr", "add", f"{CAMPUS6}/64", "dev", wan_if, "nodad"),
                 ("link", "set", wan_if, "up"),
                 # the wan can reach the job directly (for "in" traffic); NAT tests look at the source
                 ("route", "add", "10.99.0.0/16", "via", WAN_HOST4),
                 ("route", "add", "2001:db8:99::/64", "via", WAN_HOST6)):
        ip(wan, *args)
    lab = Lab(host, job, wan, run_prefix, token, host_if)
    # Wait until both families pass end to end (neighbour discovery right after link-up can
    # take a moment), so later "unreachable" results mean the policy and nothing else.
    wait_until("the lab network to pass both families end to end",
               lambda: reachable(job, wan, WAN4, 5999) and reachable(job, wan, WAN6, 5999), 10)
    return lab


BACKENDS = ["nftables", "iptables"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, lab: Lab) -> Iterator[FirewallBackend]:
    """The host side: masquerade, port forwards (and isolation when a test asks for it)."""
    fw = make_backend(request.param, lab.prefix, lab.host)
    fw.ensure_base()
    try:
        yield fw
    finally:
        fw.destroy()  # the namespace goes away too; this checks that destroy works on a used table


@pytest.fixture
def inside(backend: FirewallBackend, lab: Lab) -> Iterator[FirewallBackend]:
    """The same backend's job side, in the job's namespace: counters and policy."""
    fw = make_backend(backend.name, lab.prefix, lab.job, job_side=True)
    try:
        yield fw
    finally:
        fw.destroy()


def add_both(lab: Lab, backend: FirewallBackend, inside: FirewallBackend, **changes: object) -> FirewallJob:
    """Install a job as the engine does: its job side, then its host side."""
    spec = lab.job_spec(**changes)
    inside.add_job(spec)
    backend.add_job(spec)
    return spec


def dump(fw: FirewallBackend, ns: str) -> str:
    """Everything the backend could have left in ``ns``, as text."""
    name = os.path.basename(ns)
    if fw.name == "nftables":
        cmds = [["nft", "list", "ruleset"]]
    else:
        cmds = [["iptables-legacy-save"], ["ip6tables-legacy-save"]]
    return "".join(subprocess.run(["ip", "netns", "exec", name, *c], capture_output=True, text=True,
                                  check=True).stdout for c in cmds)


# --------------------------------------------------------------------------------------------
# Traffic (sockets made inside the namespaces)


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def make_socket(ns: str, addr: str, kind: socket.SocketKind) -> socket.socket:
    return netns.call_in(ns, lambda: socket.socket(_family(addr), kind))


class TcpSink:
    """Accepts one connection, reads to EOF, records bytes and the peer address it saw."""

    def __init__(self, ns: str, addr: str, port: int) -> None:
        self.sock = make_socket(ns, addr, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.bytes = 0
        self.peer: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, peer = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            self.peer = peer[0]
            while chunk := conn.recv(1 << 16):
                self.bytes += len(chunk)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a pending accept(); close() alone does not
        except OSError:
            pass
        self.thread.join(timeout=15)
        self.sock.close()

    def __enter__(self) -> TcpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tcp_send(ns: str, dst: str, port: int, nbytes: int, src: str | None = None, timeout: float = 5) -> None:
    sock = make_socket(ns, dst, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        if src:
            sock.bind((src, 0))
        sock.connect((dst, port))
        block = b"x" * 65536
        left = nbytes
        while left:
            left -= sock.send(block[:min(left, len(block))])
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # EOF once the sink has read everything


@dataclass(frozen=True)
class Crossing:
    """What one TCP transfer put on the wire, counted by the receiver's namespace (IP bytes): the data
    segments that arrived there and the acknowledgements it sent back. With retransmissions on a loaded
    machine both exceed what the payload and a header per packet would give."""

    data: int
    acks: int


def transfer(src_ns: str, dst_ns: str, dst: str, port: int, nbytes: int, src: str | None = None,
             bind: str | None = None) -> Crossing:
    """Send ``nbytes`` from ``src_ns`` to ``dst``:``port``, received in ``dst_ns`` (listening on ``bind``,
    default ``dst``); the wire's count of it at the receiver."""
    table = re.sub(r"\W", "_", dst_ns)[-40:] + f"_wire{port}"
    with wire_count(dst_ns, f"{table}i", f"tcp dport {port}") as data, \
            wire_count(dst_ns, f"{table}o", f"tcp sport {port}", hook="output") as acks:
        with TcpSink(dst_ns, bind or dst, port) as sink:
            tcp_send(src_ns, dst, port, nbytes, src)
        assert sink.bytes == nbytes
        crossing = Crossing(data(), acks())
    assert crossing.data >= nbytes
    return crossing


def reachable(src_ns: str, dst_ns: str, dst: str, port: int, src: str | None = None, timeout: float = 1.0,
              connect_to: str | None = None) -> str | None:
    """TCP connect + a few bytes; the peer address the server saw, or None if it never arrived."""
    with TcpSink(dst_ns, dst, port) as sink:
        try:
            tcp_send(src_ns, connect_to or dst, port, 100, src, timeout)
        except OSError:
            return None
    return sink.peer if sink.bytes == 100 else None


def udp_exchange(src_ns: str, dst_ns: str, bind: str, port: int, connect_to: str, src: str | None = None,
                 timeout: float = 1.0) -> str | None:
    """One datagram there and an answer back; the peer the server saw, or None."""
    server = make_socket(dst_ns, bind, socket.SOCK_DGRAM)
    client = make_socket(src_ns, connect_to, socket.SOCK_DGRAM)
    with server, client:
        server.bind((bind, port))
        server.settimeout(timeout)
        client.settimeout(timeout)
        if src:
            client.bind((src, 0))
        try:
            # a job-side drop in the sender's own output hook is EPERM right here
            client.sendto(b"ping", (connect_to, port))
            data, peer = server.recvfrom(100)
            server.sendto(b"pong:" + data, peer)
            answer, _ = client.recvfrom(100)
        except OSError:
            return None
        return peer[0] if answer == b"pong:ping" else None


# --------------------------------------------------------------------------------------------
# libnftables binding


@kernel
def test_libnft_acts_in_the_given_namespace(make_ns, run_prefix: str) -> None:
    a, b = make_ns("nfta"), make_ns("nftb")
    table = f"{run_prefix}x"
    libnft.run_batch([{"add": {"table": {"family": "inet", "name": table}}}], a)

    def names(ns: str, use_library: bool = True) -> set[str]:
        return {o["table"]["name"] for o in libnft.list_one("list tables", ns, use_library=use_library)}

    assert table in names(a)
    assert table not in names(b)
    assert table not in names(None)  # the test's own (root) namespace was not touched
    listed = subprocess.run(["ip", "netns", "exec", os.path.basename(a), "nft", "list", "tables"],
                            capture_output=True, text=True, check=True).stdout
    assert f"table inet {table}" in listed
    # the nft-command fallback sees the same, also from inside the namespace
    assert table in names(a, use_library=False) and table not in names(b, use_library=False)


@kernel
def test_libnft_errors_carry_nft_message(make_ns) -> None:
    a = make_ns("nfte")
    for use_library in (True, False):
        with pytest.raises(libnft.NftError) as info:
            libnft.run("list table inet nosuchtable", a, use_library=use_library)
        assert info.value.missing and "No such file or directory" in str(info.value)
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# Accounting


@kernel
def test_counters_match_bytes_sent_both_ways(lab: Lab, backend: FirewallBackend, inside: FirewallBackend) -> None:
    add_both(lab, backend, inside)
    before = inside.counters(lab.token)
    out = transfer(lab.job, lab.wan, WAN4, 5001, 3_000_000)  # job -> wan: forwarded, "out"
    into = transfer(lab.wan, lab.job, JOB4, 5002, 2_000_000)  # wan -> job: forwarded, "in"
    mid = inside.counters(lab.token)
    # each direction also carries the other transfer's acknowledgements
    assert same_bytes(mid.bytes_out - before.bytes_out, out.data + into.acks), (mid, before, out, into)
    assert same_bytes(mid.bytes_in - before.bytes_in, into.data + out.acks), (mid, before, out, into)
    # traffic with the host itself (input/output there, not forward) is counted too, and so is a
    # connection the host opens to the job's forwarded port on its own address (nat output)
    host_in = transfer(lab.host, lab.job, JOB6, 5003, 1_000_000)
    host_out = transfer(lab.job, lab.host, HOST6, 5004, 500_000)
    forwarded = transfer(lab.host, lab.job, WAN_HOST4, PORTS[0], 700_000, bind="0.0.0.0")
    after = inside.counters(lab.token)
    assert same_bytes(after.bytes_in - mid.bytes_in, host_in.data + host_out.acks + forwarded.data)
    assert same_bytes(after.bytes_out - mid.bytes_out, host_out.data + host_in.acks + forwarded.acks)
    assert inside.all_counters()[lab.token] == after
    assert backend.all_counters() == {}  # nothing is counted on the host any more


@kernel
def test_traffic_classes_split_ipv4_and_ipv6(lab: Lab, backend: FirewallBackend, inside: FirewallBackend) -> None:
    add_both(lab, backend, inside)
    before = inside.counters(lab.token)
    # the wire at the far end: campus data out (5001 IPv4, 5002 IPv6) and the job's acks of the inbound
    # campus transfer (5004); campus data in and the campus servers' acks; the WAN transfer (5003).
    # On a loaded machine TCP retransmits, so the payload alone does not bound what was counted.
    with wire_count(lab.wan, f"{lab.prefix}wco", ["tcp dport { 5001, 5002 }", "tcp sport 5004"]) as campus_out, \
            wire_count(lab.wan, f"{lab.prefix}wci", ["tcp dport 5004", "tcp sport { 5001, 5002 }"],
                       hook="output") as campus_in, \
            wire_count(lab.wan, f"{lab.prefix}wwo", "tcp dport 5003") as wan_out:
        transfer(lab.job, lab.wan, CAMPUS4, 5001, 1_000_000)
        transfer(lab.job, lab.wan, CAMPUS6, 5002, 700_000)
        transfer(lab.job, lab.wan, WAN4, 5003, 400_000)  # not campus
        transfer(lab.wan, lab.job, JOB6, 5004, 300_000, src=CAMPUS6)  # campus, inbound
        after = inside.counters(lab.token)
        wire = {"campus out": campus_out(), "campus in": campus_in(), "wan out": wan_out()}
    camp_b, camp_a = before.classes["campus"], after.classes["campus"]
    out_campus = camp_a.bytes_out - camp_b.bytes_out
    in_campus = camp_a.bytes_in - camp_b.bytes_in
    assert wire["campus out"] >= 1_700_000 and same_bytes(out_campus, wire["campus out"]), (out_campus, wire)
    assert wire["campus in"] >= 300_000 and same_bytes(in_campus, wire["campus in"]), (in_campus, wire)
    # the rest of what left the job is the WAN transfer alone: no campus byte in it, none of it in campus
    total_out = after.bytes_out - before.bytes_out
    assert wire["wan out"] >= 400_000 and same_bytes(total_out - out_campus, wire["wan out"]), (total_out, wire)


# --------------------------------------------------------------------------------------------
# Policy


@kernel
def test_anti_spoofing_drops_a_spoofed_source(lab: Lab, backend: FirewallBackend, inside: FirewallBackend) -> None:
    job_if = f"{lab.prefix}j0"
    ip(lab.job, "addr", "add", f"{SPOOF4}/32", "dev", job_if)
    ip(lab.job, "addr", "add", f"{SPOOF6}/128", "dev", job_if, "nodad")
    # masquerade off, so the wan sees the real source of what gets through
    add_both(lab, backend, inside, masquerade_ipv4=False, masquerade_ipv6=False)
    assert udp_exchange(lab.job, lab.wan, WAN4, 6001, WAN4, src=JOB4) == JOB4
    assert udp_exchange(lab.job, lab.wan, WAN4, 6002, WAN4, src=SPOOF4) is None
    assert udp_exchange(lab.job, lab.wan, WAN6, 6003, WAN6, src=JOB6) == JOB6
    assert udp_exchange(lab.job, lab.wan, WAN6, 6004, WAN6, src=SPOOF6) is None
    # without anti-spoofing the same packet passes: the drop above was the policy
    add_both(lab, backend, inside, masquerade_ipv4=False, masquerade_ipv6=False, anti_spoof=False)
    assert udp_exchange(lab.job, lab.wan, WAN4, 6005, WAN4, src=SPOOF4) == SPOOF4


def send_router_advertisement(ns: str, ifname: str) -> None:
    """A minimal RA (router lifetime 1800 s) to all nodes, as a rogue job could send it."""
    def send() -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            # type 134, code 0, checksum (kernel), hop limit 64, flags 0, lifetime, reachable, retrans
            ra = bytes([134, 0, 0, 0, 64, 0]) + (1800).to_bytes(2, "big") + bytes(8)
            try:
                sock.sendto(ra, ("ff02::1", 0, 0, socket.if_nametoindex(ifname)))
            except PermissionError:
                pass  # dropped by the job-side rules in the job's own output hook



    netns.call_in(ns, send)


def ra_default_route(host: str, ifname: str) -> bool:
    out = subprocess.run(["ip", "-n", os.path.basename(host), "-6", "route", "show", "default", "dev", ifname],
                         capture_output=True, text=True, check=True).stdout
    return "proto ra" in out


@kernel
def test_router_advertisements_from_a_job_are_dropped(lab: Lab, backend: FirewallBackend,
                                                      inside: FirewallBackend) -> None:
    job_if = f"{lab.prefix}j0"
    subprocess.run(["ip", "netns", "exec", os.path.basename(lab.host), "sysctl", "-qw",
                    f"net.ipv6.conf.{lab.host_if}.accept_ra=2"], check=True)

    def host_took_an_ra(seconds: float) -> bool:
        def sent_and_taken() -> bool:  # a rogue job would keep sending, so do we
            send_router_advertisement(lab.job, job_if)
            return bool(ra_default_route(lab.host, lab.host_if))

        try:
            wait_until(f"a default route from the job's RA on {lab.host_if}", sent_and_taken, seconds, 0.2)
        except TimeoutError:
            return False
        return True

    assert host_took_an_ra(5)  # control: without the job's rules the host takes the job's RA
    ip(lab.host, "-6", "route", "flush", "proto", "ra")
    add_both(lab, backend, inside)
    assert not host_took_an_ra(1)


@kernel
def test_denied_destination_is_unreachable(lab: Lab, backend: FirewallBackend, inside: FirewallBackend) -> None:
    add_both(lab, backend, inside, deny=(ipaddress.ip_network(f"{DENIED4}/32"),))
    assert reachable(lab.job, lab.wan, WAN4, 7001) is not None
    assert reachable(lab.job, lab.wan, DENIED4, 7002) is None


@kernel
def test_allow_list_drops_everything_else(lab: Lab, backend: FirewallBackend, inside: FirewallBackend) -> None:
    add_both(lab, backend, inside, allow=(ipaddress.ip_network("198.51.100.0/24"),
                                          ipaddress.ip_network("2001:db8:c::/48")))
    assert reachable(lab.job, lab.wan, CAMPUS4, 7001) is not None
    assert reachable(lab.job, lab.wan, CAMPUS6, 7002) is not None
    assert reachable(lab.job, lab.wan, WAN4, 7003) is None
    assert reachable(lab.job, lab.wan, WAN6, 7004) is None


@kernel
def test_masquerade_shows_the_host_address_to_the_wan(lab: Lab, backend: FirewallBackend) -> None:
    backend.add_job(lab.job_spec(masquerade_ipv4=False, masquerade_ipv6=False))
    assert reachable(lab.job, lab.wan, WAN4, 7101) == JOB4  # control: routed, not translated
    backend.add_job(lab.job_spec())
    assert reachable(lab.job, lab.wan, WAN4, 7102) == WAN_HOST4
    assert reachable(lab.job, lab.wan, WAN6, 7103) == WAN_HOST6
    assert udp_exchange(lab.job, lab.wan, WAN4, 7104, WAN4) == WAN_HOST4


@kernel
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_port_forward_reaches_a_server_in_the_job(lab: Lab, backend: FirewallBackend, proto: str) -> None:
    backend.add_job(lab.job_spec())
    port = PORTS[0] + 1
    for src_ns, host_addr, job_bind in ((lab.wan, WAN_HOST4, "0.0.0.0"), (lab.wan, WAN_HOST6, "::"),
                                        (lab.host, WAN_HOST4, "0.0.0.0")):  # the host itself, via nat output
        if proto == "tcp":
            peer = reachable(src_ns, lab.job, job_bind, port, connect_to=host_addr)
        else:
            peer = udp_exchange(src_ns, lab.job, job_bind, port, host_addr)
        assert peer is not None, (proto, src_ns, host_addr)
        peer = peer.removeprefix("::ffff:")
        assert peer in (WAN4, WAN6, WAN_HOST4), peer
    # a port outside the job's range is not forwarded
    assert udp_exchange(lab.wan, lab.job, "0.0.0.0", PORTS[1] + 1, WAN_HOST4) is None


@kernel
def test_isolation_keeps_jobs_off_the_host_and_each_other(lab: Lab, backend: FirewallBackend, make_ns) -> None:
    other = make_ns("job2")  # a second job on the same host: 10.99.2.2 behind <prefix>hx<...>
    other_if = f"{lab.prefix}hx{lab.token[1:]}"
    ip(lab.host, "link", "add", other_if, "type", "veth", "peer", "name", "eth0", "netns", os.path.basename(other))
    ip(lab.host, "addr", "add", "10.99.2.1/30", "dev", other_if)
    ip(lab.host, "link", "set", other_if, "up")
    for args in (("addr", "add", "10.99.2.2/30", "dev", "eth0"), ("link", "set", "eth0", "up"),
                 ("route", "add", "default", "via", "10.99.2.1")):
        ip(other, *args)
    # controls, before isolation: the host's services and the other job are reachable
    assert reachable(lab.job, lab.host, HOST4, 7601) is not None
    assert reachable(lab.job, other, "10.99.2.2", 7602) is not None
    isolated = make_backend(backend.name, lab.prefix, lab.host,
                            isolation=Isolation(host_allow=parse_host_allow("tcp/7611")))
    isolated.ensure_base()  # rewrites the shared base rules
    assert reachable(lab.job, lab.host, HOST4, 7603) is None
    assert reachable(lab.job, lab.host, HOST6, 7604) is None
    assert reachable(lab.job, lab.host, WAN_HOST4, 7605) is None  # any address of the host
    assert reachable(lab.job, other, "10.99.2.2", 7606) is None
    assert reachable(lab.job, lab.host, HOST4, 7611) is not None  # the hole, and only it
    assert reachable(lab.host, lab.job, JOB4, 7607) is not None  # what the host opens: replies pass
    assert reachable(lab.wan, lab.job, JOB6, 7608) is not None  # the world still reaches the job
    assert reachable(lab.job, lab.wan, WAN4, 7609) is not None  # and the job the world
    make_backend(backend.name, lab.prefix, lab.host, isolation=Isolation(job_to_job=True)).ensure_base()
    assert reachable(lab.job, other, "10.99.2.2", 7610) is not None
    assert reachable(lab.job, lab.host, HOST4, 7612) is None


# --------------------------------------------------------------------------------------------
# Life cycle


@kernel
def test_base_present_notices_a_lost_hook_and_ensure_base_mends_it(lab: Lab, backend: FirewallBackend) -> None:
    """What the engine asks before retrying a job's rules: is every shared piece still there?"""
    assert backend.base_present()
    if backend.name == "nftables":  # an admin removes one hook chain
        argv = ["nft", "-f", "-"]
        script = f"flush chain inet {lab.prefix} filter_input\ndelete chain inet {lab.prefix} filter_input\n"
    else:  # an admin's `ip6tables -F INPUT` drops the jump into Lark's chain
        argv = ["ip6tables-legacy", "-D", "INPUT", "-j", f"{lab.prefix}-INPUT"]
        script = ""
    subprocess.run(["ip", "netns", "exec", os.path.basename(lab.host), *argv], input=script, text=True,
                   check=True)
    assert not backend.base_present()
    backend.ensure_base()
    assert backend.base_present()
    backend.add_job(lab.job_spec())
    assert reachable(lab.job, lab.wan, WAN4, 7203) == WAN_HOST4


@kernel
def test_remove_job_is_idempotent_and_leaves_nothing(lab: Lab, backend: FirewallBackend) -> None:
    job = lab.job_spec(deny=(ipaddress.ip_network(f"{DENIED4}/32"),), allow=(ipaddress.ip_network("0.0.0.0/0"),))
    backend.add_job(job)
    backend.add_job(job)  # re-applying is allowed and does not duplicate anything
    assert backend.job_tokens() == {lab.token}
    assert lab.token in dump(backend, lab.host)
    backend.remove_job(job)
    backend.remove_job(job)
    assert backend.job_tokens() == set()
    assert lab.token not in dump(backend, lab.host)
    assert backend.all_counters() == {}
    with pytest.raises(NotFound):
        backend.counters(lab.token)
    # the hooks are still in place: a new job works after the removal
    backend.add_job(job)
    assert reachable(lab.job, lab.wan, WAN4, 7201) == WAN_HOST4
    backend.remove_job(job)
    assert backend.base_present()
    backend.destroy()
    backend.destroy()
    assert not backend.base_present()  # what tells the engine to rebuild the base before a retry
    backend.remove_job(job)  # nothing at all left: still fine
    assert lab.prefix not in dump(backend, lab.host)


@kernel
def test_remove_orphans_removes_only_the_others(lab: Lab, backend: FirewallBackend) -> None:
    real = lab.job_spec()
    others = [lab.job_spec(token=f"o{i}{lab.token[1:5]}", ifname=f"{lab.prefix}h{i}x",
                           addresses=(ipaddress.ip_address(f"10.98.{i}.2"),
                                      ipaddress.ip_address(f"2001:db8:98:{i}::2")),
                           port_forward=PortForward(41000 + 10 * i, 41000 + 10 * i + 4,
                                                    ipaddress.IPv4Address(f"10.98.{i}.2"), None))
              for i in range(3)]
    for job in (real, *others):
        backend.add_job(job)
    assert backend.job_tokens() == {real.token, *(o.token for o in others)}
    removed = backend.remove_orphans({real.token})
    assert removed == {o.token for o in others}
    assert backend.job_tokens() == {real.token}
    text = dump(backend, lab.host)
    assert not any(o.token in text for o in others) and "10.98." not in text
    assert backend.remove_orphans({real.token}) == set()
    # the kept job is still masqueraded
    assert reachable(lab.job, lab.wan, WAN4, 7202) == WAN_HOST4


@kernel
def test_reapplying_a_job_keeps_its_counts(lab: Lab, backend: FirewallBackend, inside: FirewallBackend) -> None:
    add_both(lab, backend, inside)
    transfer(lab.job, lab.wan, CAMPUS4, 5001, 500_000)
    first = inside.counters(lab.token)
    assert first.classes["campus"].bytes_out >= 500_000
    add_both(lab, backend, inside, deny=(ipaddress.ip_network(f"{DENIED4}/32"),))
    again = inside.counters(lab.token)
    # neither lost nor counted twice; a straggler (the transfer's last ACK, an MLD report) may
    # land between the two reads
    assert first.bytes_out <= again.bytes_out <= first.bytes_out + 2000
    campus_first, campus_again = first.classes["campus"].bytes_out, again.classes["campus"].bytes_out
    assert campus_first <= campus_again <= campus_first + 2000


@kernel
def test_a_lost_job_side_table_comes_back_with_the_counts_given(lab: Lab, backend: FirewallBackend,
                                                                inside: FirewallBackend) -> None:
    """What the engine does when the table inside a job's namespace vanished (flushed there)."""
    add_both(lab, backend, inside)
    transfer(lab.job, lab.wan, CAMPUS4, 5001, 300_000)
    last = inside.counters(lab.token)
    inside.destroy()
    with pytest.raises(NotFound):
        inside.counters(lab.token)
    inside.add_job(lab.job_spec(), carry=last)
    resumed = inside.counters(lab.token)
    assert last.bytes_out <= resumed.bytes_out <= last.bytes_out + 2000  # a straggler at most
    assert last.bytes_in <= resumed.bytes_in <= last.bytes_in + 2000
    transfer(lab.job, lab.wan, CAMPUS4, 5002, 200_000)
    assert inside.counters(lab.token).classes["campus"].bytes_out >= last.classes["campus"].bytes_out + 200_000


@kernel
def test_job_side_backend_counts_inside_the_job_namespace(lab: Lab, backend: FirewallBackend) -> None:
    """macvlan/ipvlan jobs: the backend lives in the job's namespace and hooks input/output."""
    inside = make_backend(backend.name, lab.prefix, lab.job, job_side=True)
    job = FirewallJob(token=lab.token, ifname=f"{lab.prefix}j0",  # no masquerade: nothing on the host
                      addresses=(ipaddress.ip_address(JOB4), ipaddress.ip_address(JOB6)), classes=(CAMPUS,),
                      deny=(ipaddress.ip_network(f"{DENIED4}/32"),))
    try:
        inside.add_job(job)
        out = transfer(lab.job, lab.wan, CAMPUS4, 5001, 600_000)
        into = transfer(lab.wan, lab.job, JOB4, 5002, 400_000)
        c = inside.counters(lab.token)
        assert same_bytes(c.bytes_out, out.data + into.acks), (c, out, into)
        assert same_bytes(c.bytes_in, into.data + out.acks), (c, out, into)
        assert c.classes["campus"].bytes_out >= out.data
        assert reachable(lab.job, lab.wan, DENIED4, 7301) is None
        inside.remove_job(job)
        inside.remove_job(job)
        assert inside.job_tokens() == set()
    finally:
        inside.destroy()
    assert lab.prefix not in dump(inside, lab.job)


@kernel
def test_a_stale_job_side_table_gives_way_to_the_next_job(lab: Lab, backend: FirewallBackend,
                                                          inside: FirewallBackend) -> None:
    """Teardown leaves a job's rules in its namespace (they die with it); should the namespace
    serve another job, the old job's policy and counters must not apply to the new one."""
    inside.add_job(lab.job_spec(token="old" + lab.token[3:], deny=(ipaddress.ip_network(f"{WAN4}/32"),)))
    assert reachable(lab.job, lab.wan, WAN4, 7701) is None  # the old job's deny
    inside.add_job(lab.job_spec())
    assert inside.job_tokens() == {lab.token}
    before = inside.counters(lab.token).bytes_out
    transfer(lab.job, lab.wan, WAN4, 7702, 100_000)  # masquerade off (no host part): routed
    assert inside.counters(lab.token).bytes_out - before >= 100_000


@kernel
def test_nftables_backend_works_without_the_library(lab: Lab) -> None:
    """The ``nft`` command fallback (hosts without libnftables.so.1) drives the same batches."""
    fw = nft.NftablesBackend(lab.prefix, lab.host, use_library=False)
    inside = nft.NftablesBackend(lab.prefix, lab.job, job_side=True, use_library=False)
    try:
        inside.add_job(lab.job_spec())
        fw.add_job(lab.job_spec())
        out = transfer(lab.job, lab.wan, CAMPUS4, 5001, 300_000)
        c = inside.counters(lab.token)
        assert same_bytes(c.bytes_out, out.data), (c, out)
        assert same_bytes(c.classes["campus"].bytes_out, out.data), (c, out)
        assert reachable(lab.job, lab.wan, WAN4, 7501) == WAN_HOST4
        for side in (fw, inside, fw, inside):
            side.remove_job(lab.job_spec())
        assert fw.job_tokens() == set() and inside.job_tokens() == set()
    finally:
        fw.destroy()
        inside.destroy()
    assert lab.prefix not in dump(fw, lab.host)
    assert lab.prefix not in dump(inside, lab.job)


@kernel
def test_a_thousand_jobs_are_elements_not_rules(lab: Lab) -> None:
    """nftables only: the host's per-packet path stays a set/map lookup whatever the number of jobs."""
    fw = nft.NftablesBackend(lab.prefix, lab.host, isolation=Isolation())
    fw.ensure_base()
    try:
        n = 1000
        jobs = [FirewallJob(token=f"k{i:05d}", ifname=f"{lab.prefix}k{i}",
                            addresses=(ipaddress.IPv4Address(f"10.{100 + i // 250}.{i % 250}.2"),
                                       ipaddress.IPv6Address(f"2001:db8:1:{i:x}::2")),
                            masquerade_ipv4=True, masquerade_ipv6=True, classes=(CAMPUS,),
                            port_forward=PortForward(20000 + 10 * i, 20000 + 10 * i + 9,
                                                     ipaddress.IPv4Address(f"10.{100 + i // 250}.{i % 250}.2"), None))
                for i in range(n)]
        t0 = time.perf_counter()
        for job in jobs:
            fw.add_job(job)
        fw.add_job(lab.job_spec())  # the real job comes last
        setup = time.perf_counter() - t0
        listing = libnft.list_one(f"list table inet {lab.prefix}", lab.host)
        rules_per_chain: dict[str, int] = {}
        for obj in listing:
            if "rule" in obj:
                rules_per_chain[obj["rule"]["chain"]] = rules_per_chain.get(obj["rule"]["chain"], 0) + 1
        # hook chains: the same few rules as with one job, and no per-job chain at all
        assert {c: rules_per_chain.get(c, 0) for c in nftrules.HOST_BASE_CHAINS} == {
            "filter_forward": 1, "filter_input": 1, "nat_prerouting": 2, "nat_output": 2, "nat_postrouting": 2}
        assert not [c for c in rules_per_chain if nftrules.JOB_CHAIN_RE.match(c)]
        elements = {o[k]["name"]: len(o[k].get("elem", [])) for o in listing for k in ("set", "map") if k in o}
        for name in ("nat4", "nat6", "fwd4"):
            assert elements[name] == n + 1, name
        # no per-job anonymous sets (nft would fetch each one on every run)
        assert set(libnft.set_names(lab.prefix, netns=lab.host)) == {"nd", "fwd4", "fwd6", *nftrules.SETS}
        assert fw.job_tokens() == {lab.token, *(j.token for j in jobs)}
        # the real job still works behind 1000 others
        assert reachable(lab.job, lab.wan, WAN4, 7401) == WAN_HOST4
        t1 = time.perf_counter()
        assert fw.remove_orphans({lab.token}) == {j.token for j in jobs}
        sweep = time.perf_counter() - t1
        assert fw.job_tokens() == {lab.token}
        print(f"\n1000 nft jobs: setup {setup:.2f} s ({setup / (n + 1) * 1000:.2f} ms/job), "
              f"one-batch sweep of 1000: {sweep * 1000:.0f} ms")
    finally:
        fw.destroy()


# --------------------------------------------------------------------------------------------
# Pure builders (no root)


def _job(**changes: object) -> FirewallJob:
    base = FirewallJob(token="abc123", ifname="larkhabc123",
                       addresses=(ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("fd00::2")),
                       masquerade_ipv4=True, masquerade_ipv6=True, classes=(CAMPUS,),
                       deny=(ipaddress.ip_network("10.9.0.0/16"),),
                       port_forward=PortForward(40000, 40009, ipaddress.IPv4Address("10.0.0.2"), None))
    return replace(base, **changes)  # type: ignore[arg-type]


def test_nft_base_batch_is_idempotent_shape() -> None:
    batch = nftrules.base_batch("lark", job_side=False)
    flushed = [c["flush"]["chain"]["name"] for c in batch if "flush" in c]
    assert flushed == [*nftrules.HOST_BASE_CHAINS, *nftrules.ISOLATION_CHAINS]  # rewritten, never appended to
    assert not [c for c in batch if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"].startswith("filter")]
    assert all(list(c)[0] in ("add", "flush") for c in batch)
    assert "fwd" not in {c["add"]["chain"]["name"] for c in batch if "chain" in c.get("add", {})}
    side = nftrules.base_batch("lark", job_side=True)
    assert not any("nat" in json.dumps(c) for c in side if "set" in c.get("add", {}))
    assert [c["add"]["chain"]["hook"] for c in side if "chain" in c.get("add", {})] == ["input", "output"]


def test_nft_job_batch_order_and_ownership() -> None:
    job = _job(allow=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.0.0/16")))
    batch = nftrules.job_batch("lark", job, job_side=True, initial={("job-abc123-out", "total"): (5, 500)})
    text = json.dumps(batch)
    rules = [c["add"]["rule"] for c in batch if "rule" in c.get("add", {})]
    out = [r for r in rules if r["chain"] == "job-abc123-out"]
    kinds = [next(iter(r["expr"][-1])) for r in out]
    # RA/redirect, ND, anti-spoof v4 and v6, deny v4, allow v4, no IPv6 in the allow list: no IPv6
    assert kinds[:7] == ["drop", "return", "drop", "drop", "drop", "drop", "drop"]
    assert [r["expr"][0]["match"]["right"] for r in out[:2]] == ["@router_only", "@nd"]
    assert out[7]["comment"] == "total" and out[7]["expr"] == [{"counter": {"packets": 5, "bytes": 500}}]
    assert {r.get("comment") for r in out[8:]} == {"class:campus"}
    # a list of networks is a shared named set; per-job rules hold no anonymous set
    assert '"set": [' not in json.dumps(rules)
    shared = [c["add"]["set"] for c in batch if "set" in c.get("add", {})]
    assert len(shared) == 1 and shared[0]["name"].startswith("net4_") and len(shared[0]["elem"]) == 2
    elems = [c["add"]["element"] for c in batch if "element" in c.get("add", {})]
    assert {e["name"] for e in elems} == {"jobs_out", "jobs_in"}
    assert text.count('"comment": "abc123"') == 2  # every element names its owner
    assert "handle" not in text and "create" not in text  # re-applying replaces, never fails
    inbound = [r for r in rules if r["chain"] == "job-abc123-in"]
    assert inbound[0]["expr"][-1] == {"return": None} and inbound[1]["comment"] == "total"  # ND is not counted
    # the host's part: elements only, each naming its owner
    host = nftrules.job_batch("lark", job, job_side=False)
    assert all("element" in c["add"] for c in host)
    assert {c["add"]["element"]["name"] for c in host} == {"nat4", "nat6", "fwd4"}
    assert json.dumps(host).count('"comment": "abc123"') == 3
    assert nftrules.job_batch("lark", _job(masquerade_ipv4=False, masquerade_ipv6=False, port_forward=None),
                         job_side=False) == []


def test_nft_isolation_rules() -> None:
    iso = Isolation(host_allow=parse_host_allow("tcp/53, 192.0.2.0/24 tcp/8000-8100, 2001:db8::1/128"),
                    job_to_job=(ipaddress.ip_network("10.250.0.0/30"),))
    rules = [c["add"]["rule"] for c in nftrules.base_batch("lark", job_side=False, isolation=iso)
             if "rule" in c.get("add", {})]
    by_chain: dict[str, list[str]] = {}
    for rule in rules:
        by_chain.setdefault(rule["chain"], []).append(json.dumps(rule["expr"]))
    assert by_chain["filter_input"] == [json.dumps([
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "larkh*"}},
        {"jump": {"target": "jobs_to_host"}}])]
    host = by_chain["jobs_to_host"]
    assert "established" in host[0] and "@nd" in host[1] and host[-1] == json.dumps([{"drop": None}])
    assert '"right": 53' in host[2] and '"range": [8000, 8100]' in host[3] and "2001:db8::1" in host[4]
    assert len(host) == 6
    jobs = by_chain["jobs_to_jobs"]
    assert "established" in jobs[0] and "10.250.0.0" in jobs[1] and jobs[2] == json.dumps([{"drop": None}])
    assert "oifname" in by_chain["filter_forward"][0]
    # every job may reach every other: no forward rule; isolation off: no filter rule at all
    open_jobs = json.dumps(nftrules.base_batch("lark", job_side=False, isolation=Isolation(job_to_job=True)))
    assert "jobs_to_jobs" in open_jobs and '"target": "jobs_to_jobs"' not in open_jobs
    off = nftrules.base_batch("lark", job_side=False, isolation=Isolation(enabled=False))
    assert not [c for c in off if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"].startswith("jobs_")]


def test_isolation_knobs_parse_with_clear_errors() -> None:
    assert parse_host_allow("") == ()
    assert parse_host_allow(" tcp/22 , udp/53,tcp/8000-8010 ") == (
        HostAllow(None, "tcp", 22, 22), HostAllow(None, "udp", 53, 53), HostAllow(None, "tcp", 8000, 8010))
    assert parse_host_allow("10.0.0.1, 192.0.2.0/24 udp/123") == (
        HostAllow(ipaddress.ip_network("10.0.0.1/32")),
        HostAllow(ipaddress.ip_network("192.0.2.0/24"), "udp", 123, 123))
    for bad, words in (("tcp/0", "1-65535"), ("tcp/9-8", "FIRST <= LAST"), ("sctp/5", "CIDR"),
                       ("10.0.0.1 tcp/22 udp/3", "commas"), ("10.0.0.0/33", "CIDR")):
        with pytest.raises(ValueError, match=re.escape(words)):
            parse_host_allow(bad)
    assert parse_job_to_job("False") is False and parse_job_to_job("") is False
    assert parse_job_to_job("yes") is True
    assert parse_job_to_job("10.250.0.0/16, fd00::/8") == (ipaddress.ip_network("10.250.0.0/16"),
                                                          ipaddress.ip_network("fd00::/8"))
    with pytest.raises(ValueError, match="True, False or a CIDR list"):
        parse_job_to_job("sometimes")


def test_nft_removal_deletes_only_owned_elements() -> None:
    t = {"family": "inet", "table": "lark"}
    listing = [
        {"map": {**t, "name": "jobs_out", "elem": [[{"elem": {"val": "larkhabc123", "comment": "abc123"}},
                                                    {"jump": {"target": "job-abc123-out"}}],
                                                   ["larkhzzz", {"jump": {"target": "job-zzz-out"}}]]}},
        {"set": {**t, "name": "nat4", "elem": [{"elem": {"val": "10.0.0.2", "comment": "newjob"}}]}},
        {"set": {"family": "inet", "table": "other", "name": "nat4", "elem": ["10.0.0.3"]}},
    ]
    state = nftrules.parse_objects(listing, "lark")
    state.chains |= {"job-abc123-out", "job-abc123-in", "filter_forward"}
    assert state.tokens() == {"abc123", "zzz", "newjob"}
    batch = nftrules.removal_batch("lark", state, {"abc123"})
    assert batch[0] == {"delete": {"element": {**t, "name": "jobs_out", "elem": ["larkhabc123"]}}}
    assert "10.0.0.2" not in json.dumps(batch)  # the address now belongs to another job
    assert [list(c)[0] for c in batch[1:]] == ["flush", "delete", "flush", "delete"]


def test_nft_counters_are_grouped_by_job_and_class() -> None:
    rows = [("job-a1-out", "total", 3, 300), ("job-a1-in", "total", 2, 200),
            ("job-a1-out", "class:campus", 1, 60), ("job-a1-out", "class:campus", 1, 40),  # IPv4 + IPv6 rule
            ("filter_forward", "total", 9, 9)]
    grouped = nftrules.job_counters_from(rows)
    assert list(grouped) == ["a1"]
    a1 = grouped["a1"]
    assert (a1.bytes_out, a1.packets_out, a1.bytes_in, a1.packets_in) == (300, 3, 200, 2)
    assert a1.classes["campus"].bytes_out == 100 and a1.classes["campus"].packets_out == 2
    assert nftrules.initial_counters(rows)[("job-a1-out", "class:campus")] == (2, 100)


def test_iptables_plans() -> None:
    plans = ipt.job_plans("lark", _job(ifname="lark0"), job_side=True)
    assert [(p.family, p.table) for p in plans] == [(4, "filter"), (6, "filter")]
    f4 = plans[0]
    assert f4.chains == ("lark-abc123-in", "lark-abc123-out", "lark-abc123-src")
    jumps = [r for r in f4.rules if r.chain in ("lark-INPUT", "lark-OUTPUT")]
    assert {(r.chain, r.in_iface, r.out_iface, r.target) for r in jumps} == {
        ("lark-INPUT", "lark0", None, "lark-abc123-in"), ("lark-OUTPUT", None, "lark0", "lark-abc123-out")}
    f6_in = [r for r in plans[1].rules if r.chain == "lark-abc123-in"]
    nd = len(ipt.ND_TYPES)  # link upkeep (ND, MLD) returns before anything is counted
    assert [r.target for r in f6_in[:nd]] == ["RETURN"] * nd and f6_in[nd].comment == "total"
    host = ipt.job_plans("lark", _job(), job_side=False)
    assert [(p.family, p.table) for p in host] == [(4, "nat"), (6, "nat")]
    nat4 = host[0].rules
    assert sum(r.target == "DNAT" for r in nat4) == 4  # tcp+udp, prerouting+output
    assert all(r.comment == "abc123" for r in nat4)
    assert ipt.parse_job_chain("lark", "lark-abc123-out") == "abc123"
    assert ipt.parse_job_chain("lark", "lark-FORWARD") is None
    with pytest.raises(ValueError):
        ipt.job_plans("lark", _job(token="x" * 20), job_side=False)
    iso = Isolation(host_allow=parse_host_allow("tcp/53, 2001:db8::/64"),
                    job_to_job=(ipaddress.ip_network("10.0.0.0/8"),))
    base4 = ipt.base_plans("lark", False, iso)[0]
    assert base4.table == "filter"
    assert set(base4.rewrite) == {"lark-FORWARD", "lark-INPUT", "lark-JOBHOST", "lark-JOBJOB"}
    fill = [(r.chain, r.target, r.dst) for r in base4.fill]
    assert fill == [("lark-INPUT", "lark-JOBHOST", None), ("lark-JOBHOST", "RETURN", None),
                    ("lark-JOBHOST", "RETURN", None), ("lark-JOBHOST", "DROP", None),
                    ("lark-FORWARD", "lark-JOBJOB", None), ("lark-JOBJOB", "RETURN", None),
                    ("lark-JOBJOB", "RETURN", "10.0.0.0/8"), ("lark-JOBJOB", "DROP", None)]
    assert ipt.base_plans("lark", False, Isolation(enabled=False))[0].fill == ()




