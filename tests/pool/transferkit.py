"""What the transfer service's pool tests share: ``lark-transferd`` running in the pool, data servers in
the "wan" namespace, and ``lark transfer`` run as the user.

:func:`transfer_service` sets the service up on the shared Lark pool (module scope in each test module):

- the ``[transfer]`` extra goes into Lark's venv from the wheelhouse, as the admin would; the movers
  (``curl``, ``globus-url-copy``, ``xrdcp``/``xrdfs``) are in the pool image's package list already;
- the test's profiles, and its endpoints file naming the data servers the module started;
- IDTOKENs for ``larkuser`` (in ~/.condor/tokens.d, as condor_token_fetch leaves it) and ``other``;
- ``lark-transferd`` in the pool as root, submitting with each caller's token, never its own power.

Data servers: :func:`serve_http` (GET/PUT/DELETE on a directory, plus a path that never ends) and
:func:`start_in_wan` for a real server program (GridFTP, xrootd) in the wan namespace with its own
``/etc/hosts`` (neither namespace can reach a DNS server).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lark import netns
from lark.pool.util import serve_in_netns
from lark.transfer.jobs import Movers
from tests.pool.harness import USER, Pool
from tests.pool.larkpool import INSTALL_DIR, WAN_ADDR, WHEELHOUSE, LarkPool, build_wheel, fill_wheelhouse
from tests.support import wait_until

PORT = 8642
HTTP_PORT = 8080  # each module serves HTTP on a port of its own (serve_http): see there
PUBLIC_ADDR = "203.0.113.1"  # the execute host's uplink: where the forwarded ports are
PROFILE = """\
profiles:
  xfer:
    description: transfer movers, NAT with the node's 4 forwarded ports for GridFTP data channels
    attach: nat
    inbound_ports: 4
    port_range_env:
      GLOBUS_TCP_PORT_RANGE: "{first},{last}"
      GLOBUS_FTP_CLIENT_DATA_IP: "{public_address}"
"""
# The movers and the GridFTP server look their own addresses up (getnameinfo); no namespace here can
# reach a DNS server, so the names come from hosts files
HOSTS = f"{PUBLIC_ADDR} lark-node\n{WAN_ADDR} lark-wan-data\n"
# ... and no name goes to a DNS server: the pool's resolver is its loopback, where a lookup fails at once.
# (xrdcp looks names up at start; with the build host's resolver out of reach it waited 20 s for two
# lookups to time out, and its queries left the job, on the accounted interface, towards that address)
RESOLV = "nameserver 127.0.0.1\n"
# What a transfer's accounted bytes may add to the file: TCP/IP headers (52 of every 1500 bytes on the
# wire, < 4 %) and the protocol's own exchange (HTTP headers; FTP control channel, handshakes; xrootd's
# login and open/close requests)
HEADER_SHARE = 0.05
HEADER_BYTES = 64 * 1024


def within_allowance(accounted: int, payload: int) -> bool:
    return payload <= accounted <= payload * (1 + HEADER_SHARE) + HEADER_BYTES


class DataHandler(http.server.BaseHTTPRequestHandler):
    """GET, PUT and DELETE on one directory; GET /slow/... sends a little and then waits for ``release``."""

    root: Path
    release: threading.Event

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _path(self) -> Path:
        return self.root / self.path.lstrip("/").replace("/", "_")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/slow/"):
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            while not self.release.wait(0.2):
                try:
                    self.wfile.write(b"x" * 1024)
                except OSError:
                    return
            return
        path = self._path()
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        self._path().write_bytes(self.rfile.read(length))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_DELETE(self) -> None:  # noqa: N802
        path = self._path()
        existed = path.is_file()
        path.unlink(missing_ok=True)
        self.send_response(204 if existed else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def serve_http(wan: str, root: Path, port: int = HTTP_PORT) -> Iterator[threading.Event]:
    """An HTTP server on WAN_ADDR:``port`` serving ``root``; yields the event that ends /slow/ answers.

    A module whose wire counts match the server's port serves on a port of its own: the connection of
    a transfer canceled in another module outlives it (the server's kernel goes on retransmitting to a
    job that is gone, from the old port), and a count on the same port would hold those packets."""
    release = threading.Event()
    handler = type("Handler", (DataHandler,), {"root": root, "release": release})
    server = http.server.ThreadingHTTPServer((WAN_ADDR, port), handler, bind_and_activate=False)
    serve_in_netns(server, wan, WAN_ADDR, port)
    try:
        yield release
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def wait_listening(ns_path: str, address: str, port: int, what: str, alive: Callable[[], bool]) -> None:
    def listening() -> bool:
        if not alive():
            raise AssertionError(f"{what} exited")

        def probe() -> bool:
            with socket.socket() as s:
                s.settimeout(1)
                return s.connect_ex((address, port)) == 0
        return netns.call_in(ns_path, probe)

    wait_until(f"{what} on {address}:{port}", listening, 60, 0.2)


@contextmanager
def start_in_wan(lark_pool: LarkPool, argv: Sequence[str], hosts: Path, name: str, port: int) -> Iterator[None]:
    """Run the server ``argv`` in the wan namespace, with ``hosts`` bind-mounted on /etc/hosts in a mount
    namespace of its own, until the block ends; fails with its output if it exits before it listens."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={lark_pool.wan}", "unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$1" /etc/hosts && shift && exec "$@"', name, str(hosts), *argv],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_listening(lark_pool.wan, WAN_ADDR, port, name,
                       lambda: proc.poll() is None or pytest.fail(f"{name}: {proc.communicate()[0]}"))
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wan_hosts(path: Path) -> Path:
    """A hosts file for a server in the wan: the machine's own name is the wan address (servers put it in
    their replies, e.g. GridFTP's PASV), and the node's and the wan's names."""
    path.write_text(f"127.0.0.1 localhost\n{WAN_ADDR} {socket.gethostname()}\n" + HOSTS)
    return path


@dataclass
class Service:
    """``lark-transferd`` in the pool, and the tokens of ``larkuser`` and ``other``."""

    lark: LarkPool
    tokens: dict[str, str]
    pid: int = field(default=0, kw_only=True)  # the daemon's process (nsenter; the service is its descendant)

    @property
    def pool(self) -> Pool:
        return self.lark.pool

    def api(self, method: str, path: str, user: str = USER, **kwargs: Any) -> tuple[int, Any]:
        """One HTTP call from inside the pool's namespace with ``user``'s token."""
        import requests

        def call() -> tuple[int, Any]:
            r = requests.request(method, f"http://127.0.0.1:{PORT}{path}", timeout=60,
                                 headers={"Authorization": f"Bearer {self.tokens[user]}"}, **kwargs)
            return r.status_code, r.json() if r.content else None

        return self.pool.call_in_netns(call)

    def cli(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return self.pool.run(["/opt/lark/bin/lark", "transfer", "--url", f"http://127.0.0.1:{PORT}", *args],
                             user=USER, check=check, timeout=timeout)

    def user_file(self, name: str, size: int) -> tuple[str, str]:
        """A file of random bytes in larkuser's home: (its path in the pool, its sha256)."""
        data = os.urandom(size)
        path = f"{self.pool.home(USER)}/{name}"
        self.pool.write(path, data, owner=USER, mode=0o644)
        return path, hashlib.sha256(data).hexdigest()

    def pool_sha(self, path: str) -> str:
        return hashlib.sha256(self.pool.host_path(path).read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def transfer_service(lark_pool: LarkPool, wheel_dir: Path, endpoints: str, profiles: str = PROFILE,
                     profile_names: Sequence[str] = ("xfer",), port: int = PORT, options: Sequence[str] = ()
                     ) -> Iterator[Service]:
    """``lark-transferd`` (with ``options``) serving ``endpoints`` (the YAML text) with ``profiles`` in the
    pool on ``port``, until the block ends; every slot advertises ``profile_names`` before it yields.
    """
    pool = lark_pool.pool
    wheel = build_wheel(wheel_dir)
    fill_wheelhouse(pool, wheel, extras=("metrics", "transfer"))
    pool.run(["/opt/lark/bin/pip", "install", "-q", f"{INSTALL_DIR}/{wheel.name}[metrics,transfer]"],
             env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE}, timeout=300)
    movers = [getattr(Movers(), name) for name in ("globus_url_copy", "curl", "xrdcp", "xrdfs")]
    missing = [mover for mover in movers if not pool.host_path(mover).is_file()]
    assert not missing, f"the pool image lacks the movers {missing} (lark/pool/image.py PACKAGES)"
    pool.write("/etc/condor/profiles.d/transfer.yaml", profiles, owner="root")
    pool.add_config("77-lark-transfer-test.conf", "STARTD_CRON_LARKPROFILES_PERIOD = 2s\n")
    pool.reconfig()
    etc_hosts, resolv = pool.host_path("/etc/hosts"), pool.host_path("/etc/resolv.conf")
    hosts_before, resolv_before = etc_hosts.read_text(), resolv.read_text()
    etc_hosts.write_text(hosts_before + HOSTS)
    resolv.write_text(RESOLV)
    daemon: subprocess.Popen[str] | None = None
    try:
        pool.write("/etc/lark/transfer-endpoints.yaml", endpoints, owner="root")
        tokens = {user: pool.run(["condor_token_create", "-identity", f"{user}@lark.test"]).stdout.strip()
                  for user in (USER, "other")}
        home = pool.home(USER)
        pool.write(f"{home}/.condor/tokens.d/transfer", tokens[USER] + "\n", owner=USER, mode=0o600)
        pool.host_path(f"{home}/.condor/tokens.d").chmod(0o700)
        daemon = subprocess.Popen(
            ["nsenter", f"--net={pool.netns_path}", "chroot", str(pool.root), "/usr/bin/env", "-i",
             "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "/opt/lark/bin/lark-transferd",
             "--endpoints", "/etc/lark/transfer-endpoints.yaml", "--port", str(port),
             "--profile-dir", "/etc/condor/profiles.d", *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_listening(pool.netns_path, "127.0.0.1", port, "lark-transferd", lambda: daemon.poll() is None)

        def advertised() -> bool:
            slots = pool.status('MyType == "Machine"', ["LarkProfiles"])
            return bool(slots) and all(set(profile_names) <= set(str(s.get("LarkProfiles", "")).split(","))
                                       for s in slots)

        wait_until(f"every slot to advertise the profiles {', '.join(profile_names)}", advertised, 60, 0.5)
        yield Service(lark_pool, tokens, pid=daemon.pid)
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                out, _ = daemon.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                out, _ = daemon.communicate()
            print("lark-transferd output:\n" + (out or "")[-4000:])
        etc_hosts.write_text(hosts_before)
        resolv.write_text(resolv_before)
        pool.remove_config("77-lark-transfer-test.conf")
        pool.host_path("/etc/condor/profiles.d/transfer.yaml").unlink(missing_ok=True)
        pool.reconfig()


@contextmanager
def data_dir(prefix: str) -> Iterator[Path]:
    """A directory for the data servers, removed at the end (servers running as nobody write below it)."""
    data = Path(tempfile.mkdtemp(prefix=prefix))
    data.chmod(0o755)
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


def writable_dir(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o777)
    return path


def succeeded(service: Service, *args: str) -> dict[str, Any]:
    """``lark transfer <args> --wait --json``: the transfer's final view, which must be SUCCEEDED (else the
    assertion shows the job's event log and the mover's output)."""
    done = service.cli(*args, "--wait", "--json", "--interval", "0.5", check=False)
    view = transfer_json(done)
    if view.get("state") != "SUCCEEDED":
        logs = service.cli("logs", view["id"], check=False).stdout if "id" in view else ""
        raise AssertionError(f"{args}: {view}\n{done.stderr}\n{logs}")
    return view



def transfer_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The last JSON document ``lark transfer ... --json`` printed (``--wait`` prints the id's view last)."""
    text = done.stdout
    start = text.rfind("\n{")
    try:
        return json.loads(text[start + 1:] if start >= 0 else text)
    except json.JSONDecodeError:
        raise AssertionError(f"lark transfer printed no JSON: {text!r}\n{done.stderr}") from None
