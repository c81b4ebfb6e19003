"""The transfer service on the real pool: ``lark-transferd`` and ``lark transfer`` as a user runs them.

Set-up (module scope, on the shared Lark pool, by :func:`tests.pool.transferkit.transfer_service`):

- the ``[transfer]`` extra in Lark's venv; the movers (``curl``, ``globus-url-copy``) are in the pool
  image;
- a profile ``xfer``: NAT with the node's 4 forwarded ports, exporting ``GLOBUS_TCP_PORT_RANGE`` and
  ``GLOBUS_FTP_CLIENT_DATA_IP`` (the node's public address), so a GridFTP server can call the job back;
- in the "wan" namespace (203.0.113.2): an HTTP server (GET/PUT/DELETE, plus a path that never ends)
  and Debian's GridFTP server with its transfer log;
- ``lark-transferd`` in the pool as root, submitting with each caller's IDTOKEN, never its own power.

Transfers are made with the CLI as ``larkuser`` (token in ~/.condor/tokens.d, as condor_token_fetch
leaves it); what another user's token may do is asked over HTTP. The xrootd and container-universe
movers are tested in test_transfer_movers.py.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pool.harness import USER
from tests.pool.larkpool import WAN_ADDR, LarkPool
from tests.pool.transferkit import (
    HTTP_PORT,
    PORT,
    PUBLIC_ADDR,
    Service,
    data_dir,
    serve_http,
    start_in_wan,
    succeeded,
    transfer_json,
    transfer_service,
    wan_hosts,
    within_allowance,
    writable_dir,
)
from tests.support import wait_until

pytestmark = pytest.mark.pool

FTP_PORT = 2811
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


@dataclass
class WanService(Service):
    """The service, and where the wan's HTTP and GridFTP servers keep their files."""

    http_dir: Path
    ftp_dir: Path
    ftp_log: Path


@pytest.fixture(scope="module")
def service(lark_pool: LarkPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WanService]:
    if shutil.which("globus-gridftp-server") is None:
        pytest.fail("the transfer tests need Debian's globus-gridftp-server-progs (scripts/setup.sh installs it)")
    # the data servers' directories: the GridFTP server's anonymous user (nobody) writes there
    with data_dir("lark-transfer-") as data, serve_http(lark_pool.wan, writable_dir(data / "http")):
        ftp_dir, ftp_log = writable_dir(data / "ftp"), data / "gridftp-transfer.log"
        # the GridFTP server looks up the machine's own name, to give PASV replies an address: the wan one
        server = ["globus-gridftp-server", "-aa", "-anonymous-user", "nobody", "-anonymous-group", "nogroup",
                  "-p", str(FTP_PORT), "-control-interface", WAN_ADDR, "-data-interface", WAN_ADDR,
                  "-home-dir", str(data), "-rp", str(data), "-Z", str(ftp_log), "-l", str(data / "server.log"),
                  "-d", "WARN,ERROR,INFO", "-s"]
        endpoints = ENDPOINTS % {"wan": WAN_ADDR, "http": HTTP_PORT, "ftp": FTP_PORT, "ftp_dir": str(ftp_dir)}
        with start_in_wan(lark_pool, server, wan_hosts(data / "hosts"), "globus-gridftp-server", FTP_PORT), \
                transfer_service(lark_pool, tmp_path_factory.mktemp("transfer-wheel"), endpoints) as base:
            yield WanService(base.lark, base.tokens, data / "http", ftp_dir, ftp_log)


def test_put_and_get_through_https(service: WanService) -> None:
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


def test_gridftp_through_the_nat_with_forwarded_data_ports_and_the_server_log(service: WanService) -> None:
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


def test_rm_of_a_running_transfer_ends_canceled_and_other_users_cannot_touch_it(service: WanService) -> None:
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


def test_a_retried_post_with_the_same_submission_id_returns_the_same_transfer(service: WanService) -> None:
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


def test_bad_requests_never_reach_the_schedd_and_name_the_field(service: WanService) -> None:
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


def chromium_in_pool(service: WanService, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's chromium, headless, in the pool's namespace (where the service listens)."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("the page test needs Debian's chromium package (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="lark-chromium-") as profile:
        return subprocess.run(["nsenter", f"--net={service.pool.netns_path}", browser, *CHROMIUM_FLAGS,
                               f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180,
                              check=False)


def test_the_page_shows_the_users_transfers_live(service: WanService, tmp_path: Path) -> None:
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
