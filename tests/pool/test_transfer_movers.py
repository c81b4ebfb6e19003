"""The transfer service's other movers on the real pool: xrootd (``xrdcp``, ``xrdfs``) against a real
xrootd server, and a mover that runs in the container universe.

Set-up (module scope, on the shared Lark pool, by :func:`tests.pool.transferkit.transfer_service`):

- in the "wan" namespace (203.0.113.2): Debian's ``xrootd`` as a standalone data server without
  authentication (``all.export /data r/w`` below ``oss.localroot``, ``xrd.port``), running as nobody,
  and the kit's HTTP server;
- a SIF image built in the pool from a directory: the static busybox and the pool's ``curl`` and
  ``xrdcp`` with the libraries ``ldd`` names for them (no registry, no download); the container
  universe binds the shared directory the movers' local paths are in (``SINGULARITY_BIND_EXPR``);
- endpoints ``xroot`` (``root://203.0.113.2:1094//data/``), and ``web-ctr`` and ``xroot-ctr`` (the HTTP
  and xrootd servers, movers in the image), all on the ``xfer`` NAT profile.

Every byte count is checked twice: against the file (the header allowance) and against what the wan
namespace saw on the wire for the server's port, from or to the node's public (NAT) address. Equal to
the byte: the mover's data went over the job's own interface and nothing else did.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.pool.harness import USER
from tests.pool.larkpool import WAN_ADDR, LarkPool, build_sif, wait_for_sif
from tests.pool.transferkit import (
    PUBLIC_ADDR,
    Service,
    data_dir,
    serve_http,
    sha256,
    start_in_wan,
    succeeded,
    transfer_json,
    transfer_service,
    wan_hosts,
    within_allowance,
    writable_dir,
)
from tests.support import same_bytes, wire_count

pytestmark = pytest.mark.pool

XROOTD_PORT = 1094
HTTP_PORT = 8081  # not the kit's 8080, whose canceled transfers may still retransmit (serve_http)
IMAGE = "/srv/lark-img/mover.sif"
# The directory of the pool's shared file system that the container universe binds into the movers'
# containers (SINGULARITY_BIND_EXPR): their local paths must be visible inside
SHARED = "/srv/lark-xfer"
BIND_CONFIG = f'SINGULARITY_BIND_EXPR = "{SHARED}"\n'
# A standalone data server: no redirector, no authentication (no sec.protocol), /data writable
XROOTD_CONFIG = """\
xrd.port {port}
oss.localroot {root}
all.export /data r/w
all.adminpath {admin}
all.pidpath {admin}
"""
ENDPOINTS = f"""\
endpoints:
  xroot:
    description: an xrootd data server in the wan
    protocol: xrootd
    url: root://{WAN_ADDR}:{XROOTD_PORT}//data/
    site: WAN
    profile: xfer
  web-ctr:
    description: the wan's HTTP server, movers in the container universe
    protocol: https
    url: http://{WAN_ADDR}:{HTTP_PORT}/
    site: WAN
    profile: xfer
    container_image: {IMAGE}
  xroot-ctr:
    description: the xrootd server, movers in the container universe
    protocol: xrootd
    url: root://{WAN_ADDR}:{XROOTD_PORT}//data/
    site: WAN
    profile: xfer
    container_image: {IMAGE}
"""


def remote_delete(service: Service, target: str) -> dict[str, Any]:
    """``lark transfer rm --remote TARGET``, then ``wait`` for it: the delete transfer's final view."""
    transfer_id = transfer_json(service.cli("rm", "--remote", target, "--json"))["id"]
    return transfer_json(service.cli("wait", transfer_id, "--json", "--interval", "0.5", check=False))


@dataclass
class MoverService(Service):
    """The service, and where the wan's xrootd and HTTP servers keep their files."""

    xrootd_data: Path
    xrootd_log: Path
    http_dir: Path


@pytest.fixture(scope="module")
def service(lark_pool: LarkPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoverService]:
    xrootd = shutil.which("xrootd")
    if xrootd is None:
        pytest.fail("the xrootd mover test needs Debian's xrootd-server (scripts/setup.sh installs it)")
    pool = lark_pool.pool
    with data_dir("lark-movers-") as data, serve_http(lark_pool.wan, writable_dir(data / "http"), HTTP_PORT):
        # xrootd drops to nobody (-R) before it opens its log: everything it writes is nobody's
        xrd = data / "xrootd"
        for sub in ("root/data", "admin"):
            (xrd / sub).mkdir(parents=True)
        config = xrd / "xrootd.cfg"
        config.write_text(XROOTD_CONFIG.format(port=XROOTD_PORT, root=xrd / "root", admin=xrd / "admin"))
        shutil.chown(xrd, "nobody", "nogroup")
        for path in xrd.rglob("*"):
            shutil.chown(path, "nobody", "nogroup")
        server = [xrootd, "-c", str(config), "-l", str(xrd / "xrootd.log"), "-R", "nobody"]
        shared = pool.host_path(SHARED)
        writable_dir(shared)
        try:
            build_sif(pool, IMAGE, binaries=["/usr/bin/curl", "/usr/bin/xrdcp"])
            pool.add_config("78-lark-transfer-movers.conf", BIND_CONFIG)
            with start_in_wan(lark_pool, server, wan_hosts(data / "hosts"), "xrootd", XROOTD_PORT), \
                    transfer_service(lark_pool, tmp_path_factory.mktemp("movers-wheel"), ENDPOINTS) as base:
                wait_for_sif(pool)
                yield MoverService(base.lark, base.tokens, xrd / "root/data", xrd / "xrootd.log",
                                   data / "http")
        finally:
            pool.remove_config("78-lark-transfer-movers.conf")
            pool.reconfig()
            pool.host_path(IMAGE).unlink(missing_ok=True)
            shutil.rmtree(shared, ignore_errors=True)


def test_xrootd_put_get_and_delete_through_the_nat(service: MoverService) -> None:
    size = 3_000_000
    path, sha = service.user_file("xrd-in.bin", size)
    # what the job sent to the server's port, and what the server sent back, seen in the wan
    with wire_count(service.lark.wan, f"{service.lark.prefix}-xrd-in",
                    f"ip saddr {PUBLIC_ADDR} tcp dport {XROOTD_PORT}") as to_server:
        put = succeeded(service, "put", path, "xroot:run1/in.bin", "--size", str(size))
        sent = to_server()
    stored = service.xrootd_data / "run1/in.bin"
    assert sha256(stored) == sha
    assert (put["owner"], put["verb"], put["protocol"], put["profile"]) == (USER, "put", "xrootd", "xfer")
    assert within_allowance(put["bytes"], size), put  # LarkBytesOut
    assert same_bytes(put["bytes"], sent), (put, sent)

    back = f"{service.pool.home(USER)}/xrd-back.bin"
    with wire_count(service.lark.wan, f"{service.lark.prefix}-xrd-out",
                    f"ip daddr {PUBLIC_ADDR} tcp sport {XROOTD_PORT}", hook="output") as from_server:
        got = succeeded(service, "get", "xroot:run1/in.bin", back, "--size", str(size))
        received = from_server()
    assert service.pool_sha(back) == sha
    assert got["site"] == "WAN" and got["size"] == size
    assert within_allowance(got["bytes"], size), got  # LarkBytesIn
    assert same_bytes(got["bytes"], received), (got, received)

    gone = remote_delete(service, "xroot:run1/in.bin")
    assert (gone["state"], gone["verb"], gone["protocol"]) == ("SUCCEEDED", "delete", "xrootd"), gone
    assert not stored.exists()
    # the server's log: each of the three movers logged in as the user, from the node's public address
    logins = [line.split("XrootdXeq: ")[1] for line in service.xrootd_log.read_text().splitlines()
              if line.endswith(" login")]
    assert len(logins) == 3 and all(line.startswith(f"{USER}.") and f"@[::ffff:{PUBLIC_ADDR}] " in line
                                    for line in logins), logins


def test_a_delete_of_a_missing_xrootd_file_fails_with_the_movers_message(service: MoverService) -> None:
    gone = remote_delete(service, "xroot:never/there.bin")
    assert gone["state"] == "FAILED" and gone["reason"].startswith("the mover exited with status "), gone
    logs = service.cli("logs", gone["id"]).stdout
    assert "no such file or directory" in logs.lower(), logs


def test_a_mover_in_the_container_universe(service: MoverService) -> None:
    size = 2_000_000
    data = os.urandom(size)
    (service.http_dir / "ctr_in.bin").write_bytes(data)
    local = f"{SHARED}/ctr-back.bin"
    with wire_count(service.lark.wan, f"{service.lark.prefix}-ctr-out",
                    f"ip daddr {PUBLIC_ADDR} tcp sport {HTTP_PORT}", hook="output") as from_server:
        got = succeeded(service, "get", "web-ctr:ctr/in.bin", local, "--size", str(size))
        received = from_server()
    assert service.pool.host_path(local).read_bytes() == data
    assert got["protocol"] == "https" and got["endpoint"] == "web-ctr"
    assert within_allowance(got["bytes"], size), got
    assert same_bytes(got["bytes"], received), (got, received)
    # it ran in the container universe, in the endpoint's image
    cluster = int(got["id"].split(".")[0])
    [ad] = service.pool.history(cluster, ["WantContainer", "ContainerImage", "JobUniverse", "LarkNetworkType"])
    assert ad["WantContainer"] is True and ad["ContainerImage"] == IMAGE, ad
    assert ad["LarkNetworkType"] == "nat"
    endpoints = {e["name"]: e for e in service.api("GET", "/v1/endpoints")[1]}
    assert endpoints["web-ctr"]["universe"] == "container" and endpoints["xroot"]["universe"] == "vanilla"


def test_an_xrootd_mover_in_the_container_universe(service: MoverService) -> None:
    size = 1_500_000
    path, sha = service.user_file("ctr-xrd.bin", size)
    local = f"{SHARED}/ctr-xrd.bin"
    shutil.copyfile(service.pool.host_path(path), service.pool.host_path(local))
    with wire_count(service.lark.wan, f"{service.lark.prefix}-ctr-xrd",
                    f"ip saddr {PUBLIC_ADDR} tcp dport {XROOTD_PORT}") as to_server:
        put = succeeded(service, "put", local, "xroot-ctr:ctr/in.bin", "--size", str(size))
        sent = to_server()
    assert sha256(service.xrootd_data / "ctr/in.bin") == sha
    assert within_allowance(put["bytes"], size), put
    assert same_bytes(put["bytes"], sent), (put, sent)
    [ad] = service.pool.history(int(put["id"].split(".")[0]), ["WantContainer", "ContainerImage"])
    assert ad["WantContainer"] is True and ad["ContainerImage"] == IMAGE, ad
