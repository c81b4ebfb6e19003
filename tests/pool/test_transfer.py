"""The transfer service on the real pool: ``lark-transferd`` and ``lark transfer`` as a user runs them.

Set-up (module scope, on the shared Lark pool):

- the movers go into this run's overlay of the pool image (``curl``, ``globus-url-copy``; Debian
  packages, installed with the host's network before anything runs), and the ``[transfer]`` extra into
  Lark's venv from the wheelhouse, as the admin would;
- a profile ``xfer``: NAT with the node's 4 forwarded ports, exporting ``GLOBUS_TCP_PORT_RANGE`` and
  ``GLOBUS_FTP_CLIENT_DATA_IP`` (the node's public address), so a GridFTP server can call the job back;
- in the "wan" namespace (203.0.113.2): an HTTP server (GET/PUT/DELETE, plus a path that never ends)
  and Debian's GridFTP server with its transfer log;
- ``lark-transferd`` in the pool as root, submitting with each caller's IDTOKEN, never its own power.

Transfers are made with the CLI as ``larkuser`` (token in ~/.condor/tokens.d, as condor_token_fetch
leaves it); what another user's token may do is asked over HTTP.
"""

from __future__ import annotations

import calendar
import hashlib
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lark import netns
from tests.pool.harness import USER, Pool
from tests.pool.larkpool import INSTALL_DIR, WAN_ADDR, WHEELHOUSE, LarkPool, build_wheel, fill_wheelhouse
from tests.support import wait_until

pytestmark = pytest.mark.pool

PORT = 8642
HTTP_PORT = 8080
FTP_PORT = 2811
MOVER_PACKAGES = ("curl", "globus-gass-copy-progs")
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
ENDPOINTS = """\
endpoints:
  web:
    description: an HTTP server in the wan
    protocol: https
    url: http://%(wan)s:%(http)d/
    site: WAN
    profile: xfer
  ftp:
    description: Debian's GridFTP server in the wan
    protocol: gridftp
    url: ftp://%(wan)s:%(ftp)d%(ftp_dir)s/
    site: WAN
    profile: xfer
"""
# What a transfer's accounted bytes may add to the file: TCP/IP headers (52 of every 1500 bytes on the
# wire, < 4 %) and the protocol's own exchange (HTTP headers; FTP control channel, handshakes)
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


@dataclass
class Service:
    lark: LarkPool
    tokens: dict[str, str]
    http_dir: Path
    ftp_dir: Path
    ftp_log: Path

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


def _install_movers(pool: Pool) -> None:
    """The movers, into this run's overlay only (the pool itself has no network; the host has)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
    install = ["chroot", str(pool.root), "apt-get", "install", "-y", "-qq", "--no-install-recommends",
               *MOVER_PACKAGES]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:  # the image's package lists may be older than the archive
        subprocess.run(["chroot", str(pool.root), "apt-get", "update", "-qq"], env=env, capture_output=True,
                       timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"installing {MOVER_PACKAGES} in the pool failed:\n{done.stdout}\n{done.stderr}"


def _serve_http(wan: str, root: Path, release: threading.Event) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (DataHandler,), {"root": root, "release": release})
    # the listening socket is made inside the wan namespace and stays there; serving needs no switch
    server = netns.call_in(wan, lambda: http.server.ThreadingHTTPServer((WAN_ADDR, HTTP_PORT), handler))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _wait_listening(ns_path: str, address: str, port: int, what: str, alive: Callable[[], bool]) -> None:
    def listening() -> bool:
        if not alive():
            raise AssertionError(f"{what} exited")

        def probe() -> bool:
            with socket.socket() as s:
                s.settimeout(1)
                return s.connect_ex((address, port)) == 0
        return netns.call_in(ns_path, probe)

    wait_until(f"{what} on {address}:{port}", listening, 60, 0.2)


@pytest.fixture(scope="module")
def service(lark_pool: LarkPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    pool = lark_pool.pool
    if shutil.which("globus-gridftp-server") is None:
        pytest.fail("the transfer tests need Debian's globus-gridftp-server-progs (scripts/setup.sh installs it)")
    _install_movers(pool)
    wheel = build_wheel(tmp_path_factory.mktemp("transfer-wheel"))
    fill_wheelhouse(pool, wheel, extras=("metrics", "transfer"))
    pool.run(["/opt/lark/bin/pip", "install", "-q", f"{INSTALL_DIR}/{wheel.name}[metrics,transfer]"],
             env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE}, timeout=300)

    pool.write("/etc/condor/profiles.d/transfer.yaml", PROFILE, owner="root")
    pool.add_config("77-lark-transfer-test.conf", "STARTD_CRON_LARKPROFILES_PERIOD = 2s\n")
    pool.reconfig()
    # the data servers' directories: the GridFTP server's anonymous user (nobody) writes there
    data = Path(tempfile.mkdtemp(prefix="lark-transfer-"))
    data.chmod(0o755)
    http_dir, ftp_dir = data / "http", data / "ftp"
    for d in (http_dir, ftp_dir):
        d.mkdir()
        d.chmod(0o777)
    ftp_log = data / "gridftp-transfer.log"
    release = threading.Event()
    http_server = _serve_http(lark_pool.wan, http_dir, release)
    # the GridFTP server and the movers look their own addresses up (getnameinfo); neither namespace can
    # reach a DNS server, so both get the names from a hosts file: the server's in a mount namespace of
    # its own, the pool's in this run's overlay
    hosts = f"203.0.113.1 lark-node\n{WAN_ADDR} lark-wan-data\n"
    # (the server also looks up the machine's own name, to give PASV replies an address: the wan one)
    (data / "hosts").write_text(f"127.0.0.1 localhost\n{WAN_ADDR} {socket.gethostname()}\n" + hosts)
    etc_hosts = pool.host_path("/etc/hosts")
    hosts_before = etc_hosts.read_text()
    etc_hosts.write_text(hosts_before + hosts)
    server = ["globus-gridftp-server", "-aa", "-anonymous-user", "nobody", "-anonymous-group", "nogroup", "-p",
              str(FTP_PORT), "-control-interface", WAN_ADDR, "-data-interface", WAN_ADDR, "-home-dir", str(data),
              "-rp", str(data), "-Z", str(ftp_log), "-l", str(data / "server.log"), "-d", "WARN,ERROR,INFO", "-s"]
    ftpd = subprocess.Popen(
        ["nsenter", f"--net={lark_pool.wan}", "unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$1" /etc/hosts && shift && exec "$@"', "lark-gridftp", str(data / "hosts"), *server],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    daemon: subprocess.Popen[str] | None = None
    try:
        _wait_listening(lark_pool.wan, WAN_ADDR, FTP_PORT, "globus-gridftp-server",
                        lambda: ftpd.poll() is None or pytest.fail(f"globus-gridftp-server: {ftpd.communicate()[0]}"))
        pool.write("/etc/lark/transfer-endpoints.yaml", ENDPOINTS % {
            "wan": WAN_ADDR, "http": HTTP_PORT, "ftp": FTP_PORT, "ftp_dir": str(ftp_dir)}, owner="root")
        tokens = {user: pool.run(["condor_token_create", "-identity", f"{user}@lark.test"]).stdout.strip()
                  for user in (USER, "other")}
        home = pool.home(USER)
        pool.write(f"{home}/.condor/tokens.d/transfer", tokens[USER] + "\n", owner=USER, mode=0o600)
        pool.host_path(f"{home}/.condor/tokens.d").chmod(0o700)
        daemon = subprocess.Popen(
            ["nsenter", f"--net={pool.netns_path}", "chroot", str(pool.root), "/usr/bin/env", "-i",
             "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "/opt/lark/bin/lark-transferd",
             "--endpoints", "/etc/lark/transfer-endpoints.yaml", "--port", str(PORT),
             "--profile-dir", "/etc/condor/profiles.d"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_listening(pool.netns_path, "127.0.0.1", PORT, "lark-transferd", lambda: daemon.poll() is None)

        def advertised() -> bool:
            slots = pool.status('MyType == "Machine"', ["LarkProfiles"])
            return bool(slots) and all("xfer" in str(s.get("LarkProfiles", "")).split(",") for s in slots)

        wait_until("every slot to advertise the xfer profile", advertised, 60, 0.5)
        yield Service(lark_pool, tokens, http_dir, ftp_dir, ftp_log)
    finally:
        release.set()
        if daemon is not None:
            daemon.terminate()
            try:
                out, _ = daemon.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                out, _ = daemon.communicate()
            print("lark-transferd output:\n" + (out or "")[-4000:])
        ftpd.terminate()
        try:
            ftpd.wait(20)
        except subprocess.TimeoutExpired:
            ftpd.kill()
            ftpd.wait()
        http_server.shutdown()
        http_server.server_close()
        shutil.rmtree(data, ignore_errors=True)
        etc_hosts.write_text(hosts_before)
        pool.remove_config("77-lark-transfer-test.conf")
        pool.host_path("/etc/condor/profiles.d/transfer.yaml").unlink(missing_ok=True)
        pool.reconfig()


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
    return json.loads(text[start + 1:] if start >= 0 else text)


def test_put_and_get_through_https(service: Service) -> None:
    path, sha = service.user_file("web-in.bin", 3_000_000)
    put = succeeded(service, "put", path, "web:run1/in.bin", "--size", "3000000")
    assert hashlib.sha256((service.http_dir / "run1_in.bin").read_bytes()).hexdigest() == sha
    assert (put["owner"], put["verb"], put["profile"], put["protocol"]) == (USER, "put", "xfer", "https")
    assert within_allowance(put["bytes"], 3_000_000), put  # LarkBytesOut: what the job sent

    back = f"{service.pool.home(USER)}/web-back.bin"
    got = succeeded(service, "get", "web:run1/in.bin", back, "--size", "3000000")
    assert service.pool_sha(back) == sha
    assert got["site"] == "WAN" and got["size"] == 3_000_000
    assert within_allowance(got["bytes"], 3_000_000), got  # LarkBytesIn: what the job received
    # the job's times have whole seconds: a transfer within one second has no rate
    seconds = got["ended"] - got["started"]
    assert seconds >= 0
    assert got["rate_mbit"] == (round(got["bytes"] * 8 / seconds / 1e6, 3) if seconds else None)

    status = service.cli("status", got["id"])
    assert status.stdout.split()[:2] == [got["id"], "SUCCEEDED"]
    logs = service.cli("logs", got["id"]).stdout
    assert "Job terminated" in logs and "(return value 0)" in logs


def test_gridftp_through_the_nat_with_forwarded_data_ports_and_the_server_log(service: Service) -> None:
    size = 4_000_000
    path, sha = service.user_file("ftp-in.bin", size)
    put = succeeded(service, "put", path, "ftp:in.bin")
    assert hashlib.sha256((service.ftp_dir / "in.bin").read_bytes()).hexdigest() == sha
    assert within_allowance(put["bytes"], size), put

    # a get in extended block mode (-p 4): the server is the sender, so it opens the data channels to
    # the job, on its forwarded ports of the node's public address (GLOBUS_FTP_CLIENT_DATA_IP and
    # GLOBUS_TCP_PORT_RANGE, from the profile)
    back = f"{service.pool.home(USER)}/ftp-back.bin"
    got = succeeded(service, "get", "ftp:in.bin", back)
    assert service.pool_sha(back) == sha
    assert within_allowance(got["bytes"], size), got

    lines = [line for line in service.ftp_log.read_text().splitlines() if line.strip()]
    fields = [dict(part.split("=", 1) for part in line.split() if "=" in part) for line in lines]
    by_type = {f["TYPE"]: f for f in fields}
    assert by_type["STOR"]["NBYTES"] == by_type["RETR"]["NBYTES"] == str(size)
    assert by_type["RETR"]["STREAMS"] == "4" and by_type["RETR"]["DEST"] == f"[{PUBLIC_ADDR}]"
    # the service's own record matches the server's: its transfer happened while the job ran
    end = calendar.timegm(time.strptime(by_type["RETR"]["DATE"].split(".")[0], "%Y%m%d%H%M%S"))
    assert got["started"] - 1 <= end <= got["ended"] + 1

    # lark report reads the server's log: one RETR and one STOR of the file, both from the node's public
    # address (the NAT), and the service's accounted bytes cover what the server says it moved
    report = subprocess.run([str(Path(__file__).resolve().parents[2] / ".venv/bin/lark"), "report", "--no-progress",
                             "--gridftp", str(service.ftp_log), "--json"], capture_output=True, text=True,
                            timeout=120)
    assert report.returncode == 0, report.stderr
    transfers = json.loads(report.stdout)["transfers"]
    assert transfers["by_type"] == [{"type": "RETR", "transfers": 1, "bytes": size},
                                    {"type": "STOR", "transfers": 1, "bytes": size}]
    assert [r["remote"] for r in transfers["by_remote"]] == [PUBLIC_ADDR]
    by_report = {t["type"]: t["bytes"] for t in transfers["by_type"]}
    assert within_allowance(got["bytes"], int(by_report["RETR"])) and within_allowance(put["bytes"],
                                                                                        int(by_report["STOR"]))


def test_rm_of_a_running_transfer_ends_canceled_and_other_users_cannot_touch_it(service: Service) -> None:
    done = service.cli("get", "web:slow/forever", f"{service.pool.home(USER)}/never.bin", "--json")
    transfer_id = json.loads(done.stdout)["id"]

    def active() -> bool:
        status, view = service.api("GET", f"/v1/transfers/{transfer_id}")
        assert status == 200 and view["state"] in ("QUEUED", "ACTIVE"), view
        return view["state"] == "ACTIVE"

    wait_until(f"transfer {transfer_id} to run", active, 120, 0.5)
    # another user's token: the transfer does not exist for them, and they cannot cancel it
    assert service.api("GET", f"/v1/transfers/{transfer_id}", user="other")[0] == 404
    assert service.api("DELETE", f"/v1/transfers/{transfer_id}", user="other")[0] == 404
    status, page = service.api("GET", "/v1/transfers", user="other")
    assert status == 200 and page["transfers"] == []
    assert service.api("GET", f"/v1/transfers?owner={USER}", user="other")[0] == 403
    assert service.api("GET", f"/v1/transfers/{transfer_id}")[1]["state"] == "ACTIVE"

    service.cli("rm", transfer_id)
    ended = service.cli("wait", transfer_id, "--json", "--interval", "0.5", check=False)
    assert ended.returncode == 1 and transfer_json(ended)["state"] == "CANCELED", ended.stdout + ended.stderr
    assert service.api("DELETE", f"/v1/transfers/{transfer_id}")[0] == 409  # already ended


def test_a_retried_post_with_the_same_submission_id_returns_the_same_transfer(service: Service) -> None:
    path, _ = service.user_file("retry.bin", 1000)
    body = {"verb": "put", "source": path, "destination": "web:retry.bin", "submission_id": "retry-7f3a"}
    first_status, first = service.api("POST", "/v1/transfers", json=body)
    again_status, again = service.api("POST", "/v1/transfers", json=body)
    assert (first_status, again_status) == (201, 200)
    assert again["id"] == first["id"]
    ids = [t["id"] for t in service.api("GET", "/v1/transfers?limit=1000")[1]["transfers"]
           if t["submission_id"] == "retry-7f3a"]
    assert ids == [first["id"]]
    # a finished one is found in the history too
    wait_until("the retried transfer to end", lambda: service.api("GET", f"/v1/transfers/{first['id']}")[1]["state"]
               in ("SUCCEEDED", "FAILED"), 120, 0.5)
    assert service.api("POST", "/v1/transfers", json=body)[1]["id"] == first["id"]


def test_bad_requests_never_reach_the_schedd_and_name_the_field(service: Service) -> None:
    before = len(service.pool.q("true", ["ClusterId"]))
    cases = [
        ({"verb": "get", "source": "nowhere:x", "destination": "/tmp/x"}, 422, "source"),
        ({"verb": "get", "source": "web:../x", "destination": "/tmp/x"}, 422, "source"),
        ({"verb": "delete", "source": "ftp:x"}, 422, "verb"),
        ({"verb": "get", "source": "web:x", "destination": "x"}, 422, "destination"),
        ({"verb": "get", "source": "web:x", "destination": "/x", "size": -5}, 422, "size"),
    ]
    for body, status, field in cases:
        got_status, error = service.api("POST", "/v1/transfers", json=body)
        assert (got_status, error["error"]["field"]) == (status, field), (body, error)
    assert len(service.pool.q("true", ["ClusterId"])) == before
    import requests

    unauthenticated = service.pool.call_in_netns(lambda: requests.get(f"http://127.0.0.1:{PORT}/v1/transfers",
                                                                      timeout=30))
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["field"] == "Authorization"
    forged = service.tokens[USER][:-4] + "AAAA"
    service.tokens["forged"] = forged
    assert service.api("GET", "/v1/transfers", user="forged")[0] == 401
    openapi = service.api("GET", "/v1/openapi.json")[1]
    assert {"/v1/transfers", "/v1/transfers/{transfer_id}", "/v1/transfers/{transfer_id}/log", "/v1/endpoints",
            "/v1/profiles"} <= set(openapi["paths"])
    endpoints = {e["name"]: e for e in service.api("GET", "/v1/endpoints")[1]}
    assert endpoints["ftp"]["protocol"] == "gridftp" and endpoints["web"]["site"] == "WAN"
    assert [p["name"] for p in service.api("GET", "/v1/profiles")[1]] == ["xfer"]


# ------------------------------------------------------------------ the web page, in headless chromium

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0")
WIDTH, HEIGHT = 1280, 720


def chromium_in_pool(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's chromium, headless, in the pool's namespace (where the service listens)."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("the page test needs Debian's chromium package (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="lark-chromium-") as profile:
        return subprocess.run(["nsenter", f"--net={service.pool.netns_path}", browser, *CHROMIUM_FLAGS,
                               f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180,
                              check=False)


def test_the_page_shows_the_users_transfers_live(service: Service, tmp_path: Path) -> None:
    """Runs after the transfers above: the page lists them with their states, bytes and rates, and opens
    a transfer's log; a screenshot shows it (LARK_TRANSFER_SCREENSHOT=docs/img/transfer.png keeps it)."""
    _, page = service.api("GET", "/v1/transfers")
    transfers = page["transfers"]
    assert {t["state"] for t in transfers} >= {"SUCCEEDED", "CANCELED"}
    done = next(t for t in transfers if t["state"] == "SUCCEEDED" and t["verb"] == "get")
    url = f"http://127.0.0.1:{PORT}/#token={service.tokens[USER]}&log={done['id']}"
    proc = chromium_in_pool(service, "--virtual-time-budget=8000", "--dump-dom", url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line for line in proc.stderr.splitlines() if ":CONSOLE" in line] == []
    dom = proc.stdout
    for t in transfers:  # one row per transfer, with its state badge
        assert f'id="transfer-{t["id"]}"' in dom
        row = dom[dom.index(f'id="transfer-{t["id"]}"'):]
        assert f'<span class="state {t["state"]}">{t["state"]}</span>' in row[:row.index("</tr>")]
    assert f"{len(transfers)} transfer(s), updated" in dom
    assert f"<h2>Transfer {done['id']}</h2>" in dom and "Job terminated." in dom  # the log opened
    assert service.tokens[USER] not in dom  # the token left the address bar

    # another user's token shows none of them
    other = chromium_in_pool(service, "--virtual-time-budget=5000", "--dump-dom",
                             f"http://127.0.0.1:{PORT}/#token={service.tokens['other']}")
    assert "0 transfer(s), updated" in other.stdout and 'id="transfer-' not in other.stdout

    shot = tmp_path / "transfer.png"
    proc = chromium_in_pool(service, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}",
                            "--virtual-time-budget=8000", url)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (WIDTH, HEIGHT)
    keep = os.environ.get("LARK_TRANSFER_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
