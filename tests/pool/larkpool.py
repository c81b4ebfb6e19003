"""The ``lark_pool`` fixture: the test pool configured as a Lark execute + submit node.

The pool runs in its own network namespace (the "execute host"); a ``wan`` namespace behind an
uplink plays the outside world, and a bridge in the pool namespace plays the site LAN. Jobs are
submitted by ``larkuser`` with condor_submit, exactly as users do. Session-scoped: every pool test
module shares one configured pool.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lark import netns
from lark.pool.containers import IMAGE_MARKER, build_sif, container_submit, wait_for_sif  # noqa: F401 (re-exported)
from lark.pool.install import (  # the admin guide's install, re-exported for the tests
    INSTALL_DIR,
    WHEELHOUSE,
    build_wheel,
    fill_wheelhouse,
    run_guide_block,
)
from tests.pool.harness import Pool

REPO = Path(__file__).resolve().parents[2]
WAN_ADDR = "203.0.113.2"
METRICS_PORT = 9810  # lark-netd's Prometheus endpoint, on the execute host's loopback
CAMPUS_ADDR = "203.0.113.2"  # LARK_TRAFFIC_CLASS_CAMPUS = 203.0.113.0/25
OFFCAMPUS_ADDR = "203.0.113.200"
#: the wrapper's own config file, next to it in $(LARK_BIN) (the guide's /opt/lark/bin); the test pool
#: lets it give up on an absent broker after 5 s instead of 60, so that broker-down tests are quick
WRAP_CONF = "/opt/lark/bin/lark-wrap.conf"
WRAP_RETRY_SECONDS = 5
#: the broker's accounting journal (LARK_ACCOUNTING_JOURNAL's default)
JOURNAL = "/var/lib/lark/accounting.jsonl"
SOCKET = "/run/lark/netd.sock"

JOB = r"""#!/usr/bin/python3
# Reports what the job sees of its network, then sends a payload to a server and reads the reply.
import json, os, socket, sys, time
dst, port, nbytes, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
info = {"netns": os.readlink("/proc/self/ns/net"),
        "ifaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("LARK_", "GLOBUS_", "MOVER_"))}}
try:
    import subprocess
    info["ip_link_down"] = subprocess.run(["ip", "link", "set", "lark0", "down"], capture_output=True,
                                          text=True).returncode
except Exception as err:
    info["ip_link_down"] = str(err)
if dst != "-":
    try:
        t0 = time.monotonic()
        s = socket.create_connection((dst, port), timeout=10)
        block = b"x" * 65536
        left = nbytes
        while left:
            left -= s.send(block[:min(left, len(block))])
        s.shutdown(socket.SHUT_WR)
        info["reply"] = s.recv(100).decode()
        info["seconds"] = time.monotonic() - t0
    except OSError as err:
        info["error"] = str(err)
time.sleep(hold)
print(json.dumps(info))
"""


@dataclass
class Sink:
    """A TCP server in a namespace of the test's own; records (peer, bytes) per connection.

    It also counts what arrives on the wire, per connection, with an nft set in its own namespace
    (``wire_bytes``): the ground truth that a job's accounted bytes must equal, retransmissions and
    headers included, whatever the machine's load.
    """

    netns_path: str
    address: str
    port: int = 0
    received: list[tuple[str, int]] = field(default_factory=list)
    table_prefix: str = "lark"  # the nft table is <table_prefix>-sink<port>
    # the nft to use there: the pool's namespace needs the pool's own (newer) nft, because the host's
    # 1.0.6 crashes listing rules that nft 1.1 wrote
    nft_argv: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.address, self.port))
            s.listen(64)
            return s

        self.sock = netns.call_in(self.netns_path, make)
        self.port = self.sock.getsockname()[1]
        self.wire_table = f"{self.table_prefix}-sink{self.port}"
        self.nft_argv = self.nft_argv or ("nsenter", f"--net={self.netns_path}", "nft")
        family = "ip6" if ":" in self.address else "ip"
        try:
            self._nft(f"""table inet {self.wire_table} {{
  set conns {{ type inet_service; flags dynamic; size 4096; counter; }}
  chain in {{ type filter hook input priority 0;
    {family} daddr {self.address} tcp dport {self.port} update @conns {{ tcp sport }}
  }}
}}""")
        except BaseException:
            self.sock.close()
            raise
        threading.Thread(target=self._serve, daemon=True).start()

    def _nft(self, script: str) -> None:
        subprocess.run([*self.nft_argv, "-f", "-"], input=script, text=True, check=True)

    def wire_bytes(self) -> dict[int, int]:
        """IP bytes that arrived for this server, per client (post-NAT) source port."""
        out = subprocess.run([*self.nft_argv, "-j", "list", "set", "inet", self.wire_table, "conns"],
                             capture_output=True, text=True, check=True).stdout
        elements = next(item["set"] for item in json.loads(out)["nftables"] if "set" in item).get("elem", [])
        return {e["elem"]["val"]: e["elem"]["counter"]["bytes"] for e in elements}

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn, peer[0]), daemon=True).start()

    def _one(self, conn: socket.socket, peer: str) -> None:
        total = 0
        with conn:
            conn.settimeout(60)
            try:
                while chunk := conn.recv(1 << 16):
                    total += len(chunk)
                conn.sendall(b"ok")
            except OSError:
                pass
        self.received.append((peer, total))

    def close(self) -> None:
        self.sock.close()
        subprocess.run([*self.nft_argv, "delete", "table", "inet", self.wire_table], capture_output=True)


@dataclass
class LarkPool:
    pool: Pool
    prefix: str
    wan: str
    sinks: list[Sink]

    def sink(self, address: str = WAN_ADDR) -> Sink:
        sink = Sink(self.wan, address, table_prefix=self.prefix)
        self.sinks.append(sink)
        return sink

    def pool_sink(self, address: str) -> Sink:
        """A sink in the execute host's own namespace (e.g. on the site LAN bridge)."""
        sink = Sink(self.pool.netns_path, address, table_prefix=self.prefix,
                    nft_argv=("nsenter", f"--net={self.pool.netns_path}", "chroot", str(self.pool.root), "nft"))
        self.sinks.append(sink)
        return sink

    def submit_job(self, args: str, extra: str = "", transfer: bool = False, count: int = 1) -> int:
        files = {"job.py": JOB}
        transfer_lines = ("should_transfer_files = YES\nwhen_to_transfer_output = ON_EXIT\n" if transfer
                          else "should_transfer_files = NO\n")
        submit = (f"executable = job.py\narguments = \"{args}\"\noutput = out.$(Process).json\n"
                  f"error = err.$(Process).txt\nlog = job.log\n{transfer_lines}{extra}\nqueue {count}\n")
        return self.pool.submit(submit, files=files)

    def output(self, cluster: int, proc: int = 0) -> dict[str, object]:
        ad = self.pool.history(cluster, ["Iwd"])[0]
        iwd = self.pool.root / ad["Iwd"].lstrip("/")
        text = (iwd / f"out.{proc}.json").read_text()
        if not text.strip():
            err = (iwd / f"err.{proc}.txt").read_text()
            raise AssertionError(f"job {cluster}.{proc} printed nothing; stderr:\n{err}\n"
                                 f"LarkNetdLog:\n{_netd_log(self.pool)}")
        return json.loads(text)

    def kernel_objects(self) -> list[str]:
        """Lark's objects in the execute host's namespace: job interfaces and firewall job chains."""
        out = subprocess.run(["ip", "-n", self.pool.netns_name, "-o", "link"], capture_output=True, text=True,
                             check=True).stdout
        found = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
                 if line.split(":")[1].strip().startswith(self.prefix + "h")]
        # the pool's own nft: the host's (1.0.6) crashes on what the broker's nft 1.1 wrote
        listed = self.pool.run(["nft", "list", "table", "inet", self.prefix], check=False)
        if listed.returncode != 0 and "No such file or directory" not in listed.stderr:
            raise AssertionError(f"cannot list the execute host's nft table: {listed.stderr}")
        found += [line.strip() for line in listed.stdout.splitlines() if line.strip().startswith("chain job-")]
        state = self.pool.root / "var/lib/lark/jobs"
        found += [p.name for p in state.glob("*.json")] if state.is_dir() else []
        return found

    def wait_no_objects(self, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := self.kernel_objects()) and time.monotonic() < deadline:
            time.sleep(0.3)
        return left

    def broker_pid(self) -> int:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if any(b"lark-netd" in part for part in cmd[:2]) and self.pool._belongs(int(entry)):
                    return int(entry)
            except OSError:
                continue
        raise AssertionError("lark-netd is not running")

    def broker_pids(self) -> list[int]:
        """Every live lark-netd of this pool (none while it is off)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if any(b"lark-netd" in part for part in cmd[:2]) and self.pool._belongs(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
        return found

    def ask_broker(self, request: bytes, timeout: float = 10) -> dict[str, object] | None:
        """One request to the broker from the test process (root, host namespace); None if unreachable."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        try:
            s.connect(str(self.pool.root / SOCKET.lstrip("/")))
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return json.loads(data) if data else None
        except (OSError, ValueError):
            return None
        finally:
            s.close()

    def wait_broker_ready(self, timeout: float = 60, not_pid: int | None = None) -> int:
        """Until a lark-netd (other than ``not_pid``) answers a ping; returns its pid."""
        deadline = time.monotonic() + timeout
        while True:
            pids = [p for p in self.broker_pids() if p != not_pid]
            if pids and (self.ask_broker(b'{"op": "ping"}\n', timeout=2) or {}).get("ok"):
                return pids[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"lark-netd not ready after {timeout} s:\n{_netd_log(self.pool)}")
            time.sleep(0.1)

    def netd_off(self, timeout: float = 30) -> None:
        """``condor_off -daemon LARK_NETD``, until no lark-netd of this pool runs."""
        self.pool.run(["condor_off", "-daemon", "LARK_NETD"])
        deadline = time.monotonic() + timeout
        while self.broker_pids():
            assert time.monotonic() < deadline, "lark-netd still runs after condor_off"
            time.sleep(0.1)

    def netd_on(self, timeout: float = 60) -> int:
        """``condor_on -daemon LARK_NETD``, until the broker answers; returns its pid."""
        self.pool.run(["condor_on", "-daemon", "LARK_NETD"])
        return self.wait_broker_ready(timeout)

    def journal(self) -> list[dict[str, object]]:
        """The broker's accounting journal, one dict per (undamaged) line; [] when there is none."""
        path = self.pool.root / JOURNAL.lstrip("/")
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                entries.append(item)
        return entries

    def job_records(self) -> set[str]:
        """File names of the broker's job records (``/var/lib/lark/jobs/*.json``)."""
        state = self.pool.root / "var/lib/lark/jobs"
        return {p.name for p in state.glob("*.json")} if state.is_dir() else set()


# ------------------------------------------------------------------ container-universe helpers (the image
# builders live in lark/pool/containers.py)

@dataclass
class DataSegment:
    """A data LAN behind a macvlan parent of the execute host.

    ``parent`` is a veth in the pool's namespace (the kernel has no dummy driver) whose peer sits in a
    namespace of this segment's own holding the data server at ``server_address``; jobs get macvlan
    children of ``parent``. :meth:`close` deletes the namespace, which destroys the veth pair and with it
    every macvlan child still hanging off the parent.
    """

    pool: Pool
    netns_name: str
    parent: str = "mvpar0"
    server_if: str = "data0"
    server_address: str = "10.77.0.1"
    prefix_len: int = 24

    def __post_init__(self) -> None:
        self.netns_path = str(netns.create_named(self.netns_name))
        try:
            subprocess.run(["ip", "link", "add", self.parent, "netns", self.pool.netns_name, "type", "veth", "peer",
                            "name", self.server_if, "netns", self.netns_name], check=True)
            _ip(self.pool.netns_name, "link", "set", self.parent, "up")
            _ip(self.netns_name, "addr", "add", f"{self.server_address}/{self.prefix_len}", "dev", self.server_if)
            _ip(self.netns_name, "link", "set", self.server_if, "up")
            _ip(self.netns_name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        netns.delete_named(self.netns_name)
        # the veth peer in the pool's namespace goes with it; make sure even when the pair was half made
        subprocess.run(["ip", "-n", self.pool.netns_name, "link", "del", self.parent], capture_output=True)


def host_links() -> set[str]:
    """Names of the host's own network interfaces (a pool must add none)."""
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


@pytest.fixture(scope="session")
def lark_pool(pool: Pool, run_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LarkPool]:
    """Lark installed as docs/admin-guide.md says (its install blocks, run as written, with the test
    pool's own knobs in a site file of their own written first), plus the ``[metrics]`` extra."""
    ns = pool.netns_name
    wan_name = f"{run_prefix}-pwan"
    wan = str(netns.create_named(wan_name))
    lp = LarkPool(pool, run_prefix, wan, [])  # its sinks are closed however the session ends
    try:
        subprocess.run(["ip", "link", "add", "uplink0", "netns", ns, "type", "veth", "peer", "name", "up1",
                        "netns", wan_name], check=True)
        _ip(ns, "addr", "add", "203.0.113.1/24", "dev", "uplink0")
        _ip(ns, "link", "set", "uplink0", "up")
        _ip(ns, "route", "add", "default", "via", WAN_ADDR)
        for addr in (f"{WAN_ADDR}/24", f"{OFFCAMPUS_ADDR}/24"):
            _ip(wan_name, "addr", "add", addr, "dev", "up1")
        _ip(wan_name, "link", "set", "up1", "up")
        _ip(wan_name, "link", "set", "lo", "up")
        _ip(ns, "link", "add", "br-lark", "type", "bridge")
        _ip(ns, "addr", "add", "198.51.100.1/24", "dev", "br-lark")
        _ip(ns, "link", "set", "br-lark", "up")

        # the site's own settings, in a file of its own next to the guide's drop-ins
        pool.add_config("70-lark-test.conf", f"""
LARK_NAME_PREFIX = {run_prefix}
LARK_NETWORK_TYPES = nat, bridge, none
LARK_BRIDGE = br-lark
LARK_BRIDGE_IPV4_POOL = 198.51.100.0/24 198.51.100.10-198.51.100.50
LARK_BRIDGE_IPV4_GATEWAY = 198.51.100.1
LARK_TRAFFIC_CLASSES = campus, offcampus
LARK_TRAFFIC_CLASS_CAMPUS = 203.0.113.0/25
LARK_TRAFFIC_CLASS_OFFCAMPUS = 0.0.0.0/0, ::/0
LARK_MAX_BANDWIDTH_MBIT = 1000
LARK_INBOUND_PORT_RANGE = 40000-40003
LARK_MAX_INBOUND_PORTS = 10
LARK_SWEEP_INTERVAL = 2
LARK_ACCOUNTING_INTERVAL = 2
LARK_METRICS_ADDRESS = 127.0.0.1:{METRICS_PORT}
STARTD_CRON_LARKNODE_PERIOD = 3s
MASTER_BACKOFF_CONSTANT = 1
NUM_CPUS = 8
MASTER_NEW_BINARY_RESTART = NEVER
""")
        wheel = build_wheel(tmp_path_factory.mktemp("lark-wheel"))
        fill_wheelhouse(pool, wheel, extras=("metrics",))
        for block in ("execute", "submit"):  # each ends with `lark doctor`, which must pass
            done = run_guide_block(pool, block)
            if done.returncode != 0:
                raise AssertionError(f"the admin guide's {block} install failed:\n{done.stdout}\n{done.stderr}\n"
                                     f"{_netd_log(pool)}")
        # the guide's "Extras": the broker's Prometheus endpoint (LARK_METRICS_ADDRESS) needs [metrics]
        pool.run(["/opt/lark/bin/pip", "install", "-q", f"{INSTALL_DIR}/{wheel.name}[metrics]"],
                 env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE}, timeout=300)
        # the wrapper's own config file (root's, next to it): give up on an absent broker quickly
        pool.write(WRAP_CONF, f"retry_seconds = {WRAP_RETRY_SECONDS}\n", owner="root", mode=0o644)
        lp.netd_off()  # the broker imports prometheus-client at start: restart it
        lp.netd_on()
        yield lp
    finally:
        for sink in lp.sinks:
            sink.close()
        for name in ("70-lark-test.conf", "60-lark-submit.conf", "50-lark-execute.conf"):
            pool.remove_config(name)
        pool.host_path(WRAP_CONF).unlink(missing_ok=True)
        try:
            pool.reconfig()
        except Exception as err:  # the pool's own teardown follows anyway
            print(f"reconfig after Lark tests failed: {err}")
        netns.delete_named(wan_name)


def _netd_log(pool: Pool) -> str:
    path = pool.root / "var/log/condor/LarkNetdLog"
    return path.read_text()[-3000:] if path.exists() else "(no LarkNetdLog)"
