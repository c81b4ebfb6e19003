"""GridFTP data path: a NAT'd Lark job with forwarded data ports vs two plain namespaces, same transfers.

One GridFTP server (Debian's ``globus-gridftp-server``, anonymous, its own data port range) in the
sandbox "wan" namespace, reached two ways, and two more for reference::

    plain:  client ns --veth-- wan ns (globus-gridftp-server on 198.51.100.1)
    Lark:   job ns (Engine.up, profile xfer) --veth-- host ns [Lark's NAT and rules] --uplink-- wan ns
    routed: client ns --veth-- router ns [forwarding, no rules] --veth-- wan ns
    nat:    client ns --veth-- router ns [masquerade + port-range DNAT, conntrack] --veth-- wan ns

The server's address sits on the wan namespace's loopback: the plain client reaches it over its own
veth, the Lark job through the NAT and the host's default route. Each Lark transfer runs in a job of
its own, as the transfer service's do, made by the real Engine (set up and torn down outside the
timer) from the ``xfer`` profile of the service's pool test (NAT, 4 inbound ports,
``GLOBUS_TCP_PORT_RANGE`` = the forwarded range, ``GLOBUS_FTP_CLIENT_DATA_IP`` = the node's public
address); its client runs with the environment the broker gives such a job.

The goal compares Lark with the plain pair. The references split a gap (``--refs`` chooses them):
``routed`` has the Lark job's extra hop and nothing else; ``nat`` adds the least NAT that serves
GridFTP, one hand-written table with conntrack, so what Lark adds beyond it is its own rules
(accounting in the job's namespace, anti-spoofing, isolation).

The transfers are the service's own mover commands (``lark.transfer.jobs.mover_command``:
``globus-url-copy -vb -p 4``, extended block mode), on every path:

* **get** ``ftp://.../file.bin -> file:///dev/null``: in extended block mode the sender opens the data
  channels, so the server connects to the client (the Globus client library sends PORT, never PASV,
  for a RETR in that mode: globus_ftp_client_state.c). The Lark job advertises the node's public
  address and its forwarded ports; the server's transfer log shows ``DEST=[203.0.113.1]``.
* **put** ``file:///.../file.bin -> ftp://.../dev/null``: the client is the sender and connects to the
  server's passive data ports (through the masquerade for the Lark job).

The file lives on tmpfs (``/dev/shm`` by default), the put's destination is the server's /dev/null:
what is measured is the network path, not a disk. Server pinned to CPU 1, clients to CPU 0 (as the
other throughput benchmarks). Rounds interleave the paths (each goes first in turn); each
transfer is checked in the server's transfer log (bytes, reply 226). Rates are MB/s (10^6 bytes/s)
of the client's wall time (process start to exit: control channel, data channels and the data),
beside it of the server's own START..DATE of the transfer, and per CPU-second: the CPU time of the
client, of the server's session (reaped by the server: its cutime/cstime) and of the ksoftirqd
threads. A kernel without IRQ time accounting (``CONFIG_IRQ_TIME_ACCOUNTING`` off, Debian's default)
charges softirq work (veth, forwarding, NAT, conntrack, the receiver's TCP) to the task it runs on
return from, so that sum is the path's whole cost: a figure other load on a shared machine changes
much less than the wall time. The bytes Lark accounted for each job
(``LarkBytesIn`` of a get, ``LarkBytesOut`` of a put: its counters at its end, what the service
reports as the transfer's ``bytes``) are compared with the file size.

Neither the GridFTP server nor the clients can reach a DNS server from their namespaces, so each
runs in a private mount namespace with a hosts file naming the machine (as the pool test does).
Everything lives in the run's sandbox (``larkb<xy>-*``, Lark prefix ``lb<xy>``) and is removed in
``finally``: the server (and any session it forked) by PID, Lark's jobs, the namespaces, the data
directory.

    .venv/bin/python -m benchmarks.gridftp_path [--short] [--rounds 9] [--size-mib 1024] [--refs routed,nat]
"""

from __future__ import annotations

import argparse
import calendar
import functools
import ipaddress
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks import _sandbox as sb
from benchmarks._sandbox import Sandbox, median, table
from lark.engine import Engine
from lark.jobenv import job_environment
from lark.profiles import build_catalog, request_for_job
from lark.state import JobRecord
from lark.transfer.endpoints import parse_endpoints
from lark.transfer.jobs import mover_command
from lark.transfer.model import validate
from tests.pool.transferkit import PROFILE as XFER_PROFILE
from tests.pool.transferkit import within_allowance
from tests.support import wait_listening

GOAL = 0.90
SERVER_ADDR = "198.51.100.1"  # on the wan namespace's loopback: one server for both paths
# The other links, /28s of the same documentation prefix: (near end, far end) of each
LINK_LEN = 28
PLAIN_LINK = ("198.51.100.17", "198.51.100.18")  # wan <-> the plain client
ROUTER_LINK = ("198.51.100.33", "198.51.100.34")  # wan <-> the router of the routed reference
ROUTED_LINK = ("198.51.100.49", "198.51.100.50")  # that router <-> its client
NAT_ROUTER_LINK = ("198.51.100.65", "198.51.100.66")  # wan <-> the hand-built NAT router
NATTED_LINK = ("198.51.100.81", "198.51.100.82")  # that router <-> its client
NATTED_PORTS = (41000, 41099)  # forwarded by the hand-built NAT: wide, so TIME_WAIT never runs it out
VERBS = ("get", "put")
FTP_PORT = 2811
SERVER_DATA_PORTS = "50000,50099"  # the server's passive ports (its GLOBUS_TCP_PORT_RANGE)
SERVER_CPU, CLIENT_CPU = 1, 0
ENDPOINTS = """\
endpoints:
  data:
    description: the benchmark's GridFTP server, its data directory
    protocol: gridftp
    url: ftp://%(addr)s:%(port)d%(dir)s/
    site: WAN
    profile: xfer
  sink:
    description: the same server, its /dev/null (puts measure the network, not a disk)
    protocol: gridftp
    url: ftp://%(addr)s:%(port)d/dev/
    site: WAN
    profile: xfer
"""
FILE_NAME = "file.bin"
# Runs argv with a hosts file bound over /etc/hosts, in a private mount namespace (no DNS here)
WITH_HOSTS = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              'mount --bind "$1" /etc/hosts && shift && exec "$@"', "gridftp-hosts"]


@dataclass
class Transfer:
    """One timed transfer and the server's record of it."""

    seconds: float  # the client's wall time
    server_seconds: float  # the server's START..DATE
    cpu_seconds: float  # CPU time of the client, the server's session and ksoftirqd: all the path's work
    dest: str  # the server's DEST: the address its data channels went to (get) or came from (put)
    accounted: int | None = None  # bytes Lark counted in the data's direction (Lark path only)


@dataclass
class Client:
    """One way to the server: the client's namespace, hosts file and environment, and its transfers.

    A client with ``engine`` runs each transfer in a new Lark job of the ``xfer`` profile (``ns`` and
    ``env`` are then the job's), as the transfer service does: a transfer is one job.
    """

    name: str
    ns: str
    hosts: Path
    env: dict[str, str]
    engine: Engine | None = None
    results: dict[str, list[Transfer]] = field(default_factory=lambda: {"get": [], "put": []})


def hosts_file(path: Path, own_address: str) -> Path:
    """A hosts file naming this machine ``own_address`` (what the GridFTP tools look themselves up as)."""
    path.write_text(f"127.0.0.1 localhost\n{own_address} {socket.gethostname()}\n{SERVER_ADDR} gridftp-server\n")
    return path


def in_ns_with_hosts(ns: str, hosts: Path, argv: Sequence[str], cpu: int) -> list[str]:
    """``argv`` in network namespace ``ns`` with ``hosts`` as /etc/hosts, pinned to ``cpu``."""
    pin = ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []
    return ["nsenter", f"--net={ns}", *WITH_HOSTS, str(hosts), *pin, *argv]


def base_env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


def make_file(path: Path, size: int) -> None:
    chunk = b"\0" * (1 << 20)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            left -= out.write(chunk[:min(left, len(chunk))])
    path.chmod(0o644)


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    """The running globus-gridftp-server: its PID (it forks one session per control connection)."""

    pid: int
    transfer_log: Path

    def records(self) -> list[dict[str, str]]:
        """The server's transfer log, one ``KEY=VALUE`` dict per transfer."""
        if not self.transfer_log.exists():
            return []
        return [dict(part.split("=", 1) for part in line.split() if "=" in part)
                for line in self.transfer_log.read_text().splitlines() if line.strip()]

    def sessions(self) -> list[int]:
        """PIDs of its sessions still running (a session that exited and was reaped is gone)."""
        return [pid for pid in children(self.pid) if is_gridftp(pid)]

    def sessions_cpu(self) -> float:
        """CPU seconds of its ended sessions (cutime + cstime of the server: what it reaped)."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def wait_sessions_ended(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while (self.sessions() or children(self.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)


def start_server(sandbox: Sandbox, wan: str, data: Path, log_dir: Path) -> Server:
    """globus-gridftp-server in the wan namespace, anonymous (as ``nobody``), its data on ``data``."""
    transfer_log = log_dir / "gridftp-transfer.log"
    argv = ["globus-gridftp-server", "-aa", "-anonymous-user", "nobody", "-anonymous-group", "nogroup",
            "-p", str(FTP_PORT), "-data-interface", SERVER_ADDR, "-port-range", SERVER_DATA_PORTS,
            "-home-dir", str(data), "-rp", f"{data},W/dev/null", "-Z", str(transfer_log),
            "-l", str(log_dir / "gridftp-server.log"), "-d", "WARN,ERROR"]
    hosts = hosts_file(log_dir / "hosts-server", SERVER_ADDR)
    output = log_dir / "gridftp-server.out"
    # nsenter, unshare and sh exec in turn: the PID is the server's own (its sessions are its children)
    with open(output, "w") as out:
        proc = sandbox.popen(in_ns_with_hosts(wan, hosts, argv, SERVER_CPU), stdout=out,
                             stderr=subprocess.STDOUT, env=base_env())
    server = Server(proc.pid, transfer_log)
    sandbox.closers.append(lambda: stop_server(sandbox, proc, server))
    try:
        wait_listening(wan, FTP_PORT, timeout=20)
    except TimeoutError:
        sys.exit(f"globus-gridftp-server did not start: {output.read_text()[-2000:]}")
    return server


def stop_server(sandbox: Sandbox, proc: subprocess.Popen[str], server: Server) -> None:
    """Stop the server once its sessions have ended (it reaps them); a session still there after 5 s
    is killed by its PID, so none is left behind."""
    server.wait_sessions_ended(5)
    sessions = server.sessions()
    sandbox.reap(proc)
    for pid in sessions:
        if is_gridftp(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


def is_gridftp(pid: int) -> bool:
    """``pid`` still runs the GridFTP server (and is not a zombie, nor a reused PID)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
    return name.startswith("globus-gridftp") and state != "Z"


def log_time(stamp: str) -> float:
    """``20261207181205.343450`` (UTC) -> seconds since the epoch."""
    whole, _, frac = stamp.partition(".")
    return calendar.timegm(time.strptime(whole, "%Y%m%d%H%M%S")) + float(f"0.{frac or 0}")


# ---------------------------------------------------------------- the clients


def plain_client(sandbox: Sandbox, wan: str) -> Client:
    """The baseline: a namespace joined to the server's by one plain veth pair."""
    client = sandbox.ns("plain")
    link(sandbox, wan, f"{sb.SB}g0", client, "eth0", PLAIN_LINK)
    sb.ip(client, "route", "add", "default", "via", PLAIN_LINK[0])
    return Client("plain namespaces", client, hosts_file(sandbox.tmp / "hosts-plain", PLAIN_LINK[1]), {})


def routed_client(sandbox: Sandbox, wan: str) -> Client:
    """Reference: the Lark job's extra hop, a router namespace without NAT, firewall or conntrack."""
    router = sandbox.ns("router", forwarding=True)
    client = sandbox.ns("routed")
    link(sandbox, wan, f"{sb.SB}g1", router, "up0", ROUTER_LINK)
    link(sandbox, router, f"{sb.SB}g2", client, "eth0", ROUTED_LINK)
    sb.ip(router, "route", "add", "default", "via", ROUTER_LINK[0])
    routed_net = ipaddress.ip_interface(f"{ROUTED_LINK[0]}/{LINK_LEN}").network
    sb.ip(wan, "route", "add", str(routed_net), "via", ROUTER_LINK[1])
    sb.ip(client, "route", "add", "default", "via", ROUTED_LINK[0])
    return Client("routed hop, no rules (ref.)", client, hosts_file(sandbox.tmp / "hosts-routed", ROUTED_LINK[1]),
                  {})


def natted_client(sandbox: Sandbox, wan: str) -> Client:
    """Reference: the same hop with the least NAT that serves GridFTP: one nftables table with a
    masquerade and a port-range DNAT to the client (conntrack on), no accounting, no other rule.
    The client is told the router's address and the forwarded ports, as a Lark job is."""
    router = sandbox.ns("natrouter", forwarding=True)
    client = sandbox.ns("natted")
    link(sandbox, wan, f"{sb.SB}g3", router, "up0", NAT_ROUTER_LINK)
    link(sandbox, router, f"{sb.SB}g4", client, "eth0", NATTED_LINK)
    sb.ip(router, "route", "add", "default", "via", NAT_ROUTER_LINK[0])
    sb.ip(client, "route", "add", "default", "via", NATTED_LINK[0])
    first, last = NATTED_PORTS
    sb.nft(router, f"""table ip {sb.SB}nat {{
        chain pre {{
            type nat hook prerouting priority dstnat; policy accept;
            iifname "up0" tcp dport {first}-{last} dnat to {NATTED_LINK[1]}
        }}
        chain post {{
            type nat hook postrouting priority srcnat; policy accept;
            oifname "up0" masquerade
        }}
    }}
    """)
    env = {"GLOBUS_TCP_PORT_RANGE": f"{first},{last}", "GLOBUS_FTP_CLIENT_DATA_IP": NAT_ROUTER_LINK[1]}
    return Client("hand-built NAT hop (ref.)", client, hosts_file(sandbox.tmp / "hosts-natted", NAT_ROUTER_LINK[1]),
                  env)


def link(sandbox: Sandbox, ns_a: str, if_a: str, ns_b: str, if_b: str, addrs: tuple[str, str]) -> None:
    """A veth pair between two namespaces, ``addrs`` (a /28 each) on its ends, both up."""
    sandbox.veth(ns_a, if_a, ns_b, if_b)
    for ns, ifname, addr in ((ns_a, if_a, addrs[0]), (ns_b, if_b, addrs[1])):
        sb.ip(ns, "addr", "add", f"{addr}/{LINK_LEN}", "dev", ifname)
        sb.ip(ns, "link", "set", ifname, "up")


def lark_job(engine: Engine, job_id: str) -> tuple[JobRecord, dict[str, str]]:
    """A job of the ``xfer`` profile, as the broker sets one up: its record and the environment it gets."""
    # the transfer service's own pool test profile: what a GridFTP mover runs with
    catalog = build_catalog([("tests/pool/transferkit.py:PROFILE", XFER_PROFILE)], engine.config)
    resolved = request_for_job({"LarkNetworkProfile": "xfer"}, lambda: catalog, engine.config, job_id,
                               lambda: ("root", ()))
    record = engine.up(resolved.request)
    assert resolved.extras is not None and record.ports is not None, "the xfer profile gives forwarded ports"
    env = {**job_environment(record), **resolved.extras.job_environment(record.ports, record.public_ipv4)}
    return record, env


def movers(data: Path, size: int) -> dict[str, list[str]]:
    """The transfer service's mover commands for the get and the put, from its own request checks."""
    text = ENDPOINTS % {"addr": SERVER_ADDR, "port": FTP_PORT, "dir": data}
    endpoints, errors = parse_endpoints(text, "gridftp_path.py:ENDPOINTS")
    assert not errors, errors
    by_name = {e.name: e for e in endpoints}
    get = validate({"verb": "get", "source": f"data:{FILE_NAME}", "destination": "/dev/null", "size": size},
                   by_name, "root")
    put = validate({"verb": "put", "source": str(data / FILE_NAME), "destination": "sink:null"}, by_name, "root")
    return {"get": mover_command(get), "put": mover_command(put)}


def transfer(client: Client, server: Server, verb: str, argv: Sequence[str], size: int) -> Transfer:
    """One transfer of ``client``; a Lark client's in a job of its own, set up and torn down untimed.

    One job per transfer is also what lets a Lark client get again and again: globus-url-copy closes
    the data channels of a get first, so their port (one of the job's forwarded ports, where it
    listened) stays in TIME_WAIT for 60 s, and its next listener cannot bind it (no SO_REUSEADDR).
    A job with 4 ports can start only 4 gets a minute.
    """
    if client.engine is None:
        return run_transfer(client, server, verb, argv, size)
    engine = client.engine
    record, env = lark_job(engine, f"gridftp.{sum(len(r) for r in client.results.values())}")
    try:
        done = run_transfer(replace(client, ns=record.netns, env=env), server, verb, argv, size)
        # what the job's ad would say at its end: LarkBytesIn of a get, LarkBytesOut of a put
        counted = engine.counters(record.token)
        done.accounted = counted.bytes_in if verb == "get" else counted.bytes_out
        return done
    finally:
        engine.down(record.token)


def run_transfer(client: Client, server: Server, verb: str, argv: Sequence[str], size: int) -> Transfer:
    """One transfer in ``client``'s namespace: timed, its CPU time taken, checked in the server's log."""
    server.wait_sessions_ended()
    before_records = len(server.records())
    server_cpu = server.sessions_cpu()
    client_cpu = children_cpu()
    softirq_cpu = ksoftirqd_cpu()
    env = {**base_env(), **client.env}
    t0 = time.perf_counter()
    done = subprocess.run(in_ns_with_hosts(client.ns, client.hosts, argv, CLIENT_CPU), env=env,
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    client_cpu = children_cpu() - client_cpu
    softirq_cpu = ksoftirqd_cpu() - softirq_cpu
    if done.returncode != 0:
        raise RuntimeError(f"{client.name} {verb} failed ({done.returncode}): {done.stdout[-1000:]}"
                           f"{done.stderr[-2000:]}")
    # the session writes its record as the transfer ends, and exits once the client has gone
    server.wait_sessions_ended()
    server_cpu = server.sessions_cpu() - server_cpu
    new = server.records()[before_records:]
    if len(new) != 1:
        raise RuntimeError(f"{client.name} {verb}: expected one new record in the server's transfer log, got {new}")
    rec = new[0]
    kind = "RETR" if verb == "get" else "STOR"
    if (rec.get("TYPE"), rec.get("CODE"), rec.get("NBYTES")) != (kind, "226", str(size)):
        raise RuntimeError(f"{client.name} {verb}: the server logged {rec}, not a {kind} of {size} bytes with 226")
    return Transfer(seconds, log_time(rec["DATE"]) - log_time(rec["START"]), client_cpu + server_cpu + softirq_cpu,
                    rec.get("DEST", "?"))


def children_cpu() -> float:
    """CPU seconds of this process's ended (waited-for) children: the clients."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ksoftirqd_cpu() -> float:
    """CPU seconds of the ksoftirqd threads: the packet work the kernel deferred from the tasks' context
    (without IRQ time accounting, softirq work done on return from a syscall or an interrupt is charged
    to the running task)."""
    return sum(sb.task_cpu_ns(pid) for pid in ksoftirqd_pids()) / 1e9


@functools.cache
def ksoftirqd_pids() -> tuple[int, ...]:
    found = (sb.ksoftirqd_pid(cpu) for cpu in range(os.cpu_count() or 1))
    return tuple(pid for pid in found if pid is not None)


def rates(client: Client, size: int) -> list[float]:
    """Median MB/s of get and put by the client's wall time, by the server's log, and per CPU-second."""
    def rate(verb: str, seconds: Callable[[Transfer], float]) -> float:
        return size / median([seconds(t) for t in client.results[verb]]) / 1e6

    return [rate(verb, how) for how in (lambda t: t.seconds, lambda t: t.server_seconds, lambda t: t.cpu_seconds)
            for verb in VERBS]


HEADERS = ["get (wall)", "put (wall)", "get (server log)", "put (server log)", "get per CPU-s", "put per CPU-s"]


REFERENCES: dict[str, Callable[[Sandbox, str], Client]] = {"routed": routed_client, "nat": natted_client}


def report(clients: Mapping[str, Client], size: int) -> None:
    plain, lark = clients["plain"], clients["lark"]
    rows: list[list[object]] = [[c.name, *rates(c, size)] for c in clients.values()]
    ratio = [a / b for a, b in zip(rates(lark, size), rates(plain, size), strict=True)]
    rows.append(["ratio Lark / plain", *ratio])
    for key, ref in clients.items():
        if key in REFERENCES:
            rows.append([f"ratio Lark / {key}", *(a / b for a, b in zip(rates(lark, size), rates(ref, size),
                                                                        strict=True))])
    print()
    print(table(["MB/s, median", *HEADERS], rows))
    print("   (per CPU-s: MB per CPU-second of the client, the server's session and ksoftirqd, i.e. the path's")
    print("    whole cost, which other load on the machine changes much less than the wall time)")
    print()
    rounds = len(plain.results["get"])
    print(f"per transfer, in order ({rounds} rounds): MB/s of the wall time / MB per CPU-second")
    for c in clients.values():
        for verb in VERBS:
            each = (f"{size / t.seconds / 1e6:6.0f}/{size / t.cpu_seconds / 1e6:<6.0f}" for t in c.results[verb])
            print(f"   {c.name:<28} {verb}: " + "  ".join(each))
    print()
    print("the server's DEST (get: where its data channels connected to; put: where they came from):")
    for c in clients.values():
        for verb in VERBS:
            print(f"   {c.name:<28} {verb}: {', '.join(sorted({t.dest for t in c.results[verb]}))}")
    print()
    acc_rows = []
    for verb, attr in (("get", "LarkBytesIn"), ("put", "LarkBytesOut")):
        counted = [t.accounted for t in lark.results[verb] if t.accounted is not None]
        inside = all(within_allowance(c, size) for c in counted)  # the pool tests' allowance
        acc_rows.append([f"{verb} ({attr})", size, min(counted), max(counted),
                         f"{median([c / size for c in counted]):.5f}", "yes" if inside else "NO"])
    print(table(["Lark accounted per job", "file bytes", "min bytes", "max bytes", "median / file",
                 "all within file .. +5 % +64 KiB"], acc_rows))
    print()
    for i in (0, 1, 4, 5):
        sb.summary("gridftp_path", f"{HEADERS[i]} MB/s ratio Lark/plain", ratio[i], f">= {GOAL:.2f}", ratio[i] >= GOAL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="3 rounds of a 512 MiB file")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per path and verb (default 9)")
    parser.add_argument("--size-mib", type=int, default=None, help="file size in MiB (default 1024)")
    parser.add_argument("--refs", default=",".join(REFERENCES),
                        help=f"reference paths besides plain and Lark, comma-separated (default and all: "
                             f"{','.join(REFERENCES)}; '' for none)")
    parser.add_argument("--data-base", default="/dev/shm", help="tmpfs for the file (default /dev/shm)")
    args = parser.parse_args()
    refs = [r.strip() for r in args.refs.split(",") if r.strip()]
    unknown = sorted(set(refs) - set(REFERENCES))
    if unknown:
        parser.error(f"--refs: unknown path(s) {', '.join(unknown)} (known: {', '.join(REFERENCES)})")
    rounds = args.rounds or (3 if args.short else 9)
    size = (args.size_mib or (512 if args.short else 1024)) << 20
    sb.require_root()
    sb.install_signal_handlers()
    for tool in ("globus-gridftp-server", "globus-url-copy"):
        if shutil.which(tool, path=base_env()["PATH"]) is None:
            sys.exit(f"{tool} is missing (scripts/setup.sh installs globus-gridftp-server-progs and "
                     "globus-gass-copy-progs)")
    sb.header("gridftp_path: globus-url-copy -p 4 get and put, Lark NAT job (xfer profile) vs plain namespaces",
              [f"{rounds} rounds of a {size >> 20} MiB file on {args.data_base} ({sb.fs_type(args.data_base)}), "
               "paths interleaved (order rotating per round), one warm-up each; medians",
               f"server CPU {SERVER_CPU}, clients CPU {CLIENT_CPU}; MB/s = 10^6 bytes/s"])
    sandbox = Sandbox(args.data_base)
    try:
        sandbox.tmp.chmod(0o711)  # the server's anonymous user (nobody) reads the file below
        data = sandbox.tmp / "data"
        data.mkdir()
        data.chmod(0o755)
        make_file(data / FILE_NAME, size)
        topo = sandbox.uplinked()
        sb.ip(topo.wan, "addr", "add", f"{SERVER_ADDR}/32", "dev", "lo")
        engine = sandbox.engine(topo.host)
        record, job_env = lark_job(engine, "gridftp.first")  # to show what a job gets
        engine.down(record.token)
        assert record.ports is not None
        print(f"   each Lark transfer in a new job (set up and torn down untimed), e.g. {record.ipv4_address}: "
              f"forwarded ports {record.ports[0]}-{record.ports[1]} on {record.public_ipv4}; the mover's "
              + ", ".join(f"{k}={v}" for k, v in sorted(job_env.items()) if k.startswith("GLOBUS_")))
        clients = {"plain": plain_client(sandbox, topo.wan)}
        for ref in refs:
            clients[ref] = REFERENCES[ref](sandbox, topo.wan)
        clients["lark"] = Client("Lark NAT job (xfer)", record.netns,
                                 hosts_file(sandbox.tmp / "hosts-lark", record.public_ipv4 or ""), job_env, engine)
        server = start_server(sandbox, topo.wan, data, sandbox.tmp)
        commands = movers(data, size)
        for verb in VERBS:
            print(f"   {verb}: {' '.join(commands[verb])}")
        for client in clients.values():  # warm-up: page cache, the server's first sessions, ARP, conntrack
            for verb in VERBS:
                transfer(client, server, verb, commands[verb], size)
        order = list(clients.values())
        for i in range(rounds):
            turn = order[i % len(order):] + order[:i % len(order)]  # each path goes first in turn
            for verb in VERBS:
                for client in turn:
                    client.results[verb].append(transfer(client, server, verb, commands[verb], size))
        report(clients, size)
    finally:
        sandbox.close()


if __name__ == "__main__":
    main()
