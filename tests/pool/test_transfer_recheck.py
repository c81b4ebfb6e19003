"""A token's worker is replaced in the background and a revoked token stops working, on the real pool.

``lark-transferd`` runs with ``--token-recheck 3``: each token's worker (the process holding it,
lark/transfer/schedd.py) acts for at most 3 s before the schedd is asked again. The endpoint's profile
is offered by no slot, so every transfer stays QUEUED and nothing runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lark.transfer.tokens import token_claims
from tests.pool.harness import USER
from tests.pool.larkpool import LarkPool
from tests.pool.transferkit import Service, transfer_service
from tests.support import wait_until

pytestmark = pytest.mark.pool

PORT = 8644  # test_transfer.py's service is on 8642, the SciTokens one on 8643
RECHECK = 3.0
ENDPOINTS = """\
endpoints:
  parked:
    protocol: https
    url: http://192.0.2.1/data/
    site: WAN
    profile: recheck-parked
"""
REVOKE_CONFIG = "79-lark-revoke-test.conf"


@pytest.fixture(scope="module")
def service(lark_pool: LarkPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with transfer_service(lark_pool, tmp_path_factory.mktemp("recheck-wheel"), ENDPOINTS, profile_names=(),
                          port=PORT, options=["--token-recheck", str(RECHECK)]) as base:
        try:
            yield base
        finally:
            base.pool.run(["condor_rm", "-all"], check=False)


def call(service: Service, token: str, method: str = "GET", path: str = "/v1/transfers",
         **kwargs: object) -> tuple[int, object]:
    import requests

    def request() -> tuple[int, object]:
        r = requests.request(method, f"http://127.0.0.1:{PORT}{path}", timeout=60,
                             headers={"Authorization": f"Bearer {token}"}, **kwargs)  # type: ignore[arg-type]
        return r.status_code, r.json() if r.content else None

    return service.pool.call_in_netns(request)


def worker_pids(root: int) -> set[int]:
    """The ``lark.transfer.worker`` processes among the descendants of process ``root``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == root:
                return True
        return False

    found = set()
    for pid in parents:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"lark.transfer.worker" in cmdline and descends(pid):
            found.add(pid)
    return found


def test_a_busy_tokens_worker_is_replaced_without_a_failed_request(service: Service) -> None:
    token = service.tokens[USER]
    seen: set[int] = set()
    deadline = time.monotonic() + 4 * RECHECK
    calls = 0
    while time.monotonic() < deadline:
        status, body = call(service, token)
        assert status == 200, body  # never a request lost to a worker's retirement
        calls += 1
        seen |= worker_pids(service.pid)
        time.sleep(0.1)
    assert calls > 10
    # one worker per recheck period at least, each started before the last one retired
    assert len(seen) >= 3, seen
    # and the retired ones ended: only the current worker (and perhaps its starting successor) remain
    wait_until("the retired workers to end", lambda: len(worker_pids(service.pid)) <= 2, 30, 0.2)


def test_a_revoked_token_stops_within_the_recheck_time(service: Service) -> None:
    fresh = service.pool.run(["condor_token_create", "-identity", f"{USER}@lark.test", "-lifetime", "3600"]
                             ).stdout.strip()
    claims = token_claims(fresh)
    assert claims is not None and isinstance(claims.get("jti"), str)
    status, body = call(service, fresh, "POST", json={"verb": "delete", "source": "parked:before-revocation"})
    assert status == 201, body
    service.pool.add_config(REVOKE_CONFIG, f'SEC_TOKEN_REVOCATION_EXPR = jti =?= "{claims["jti"]}"\n')
    service.pool.reconfig()
    try:
        def refused() -> object:
            status, body = call(service, fresh)
            return body if status == 401 else None

        # its worker keeps the session it has until its time is up; the next one is refused
        body = wait_until("the revoked token to be refused", refused, RECHECK + 30, 0.25)
        assert "did not accept" in str(body), body
        status, body = call(service, fresh, "POST", json={"verb": "delete", "source": "parked:after-revocation"})
        assert status == 401, body
        assert service.pool.q('LarkTransferSource == "parked:after-revocation"', ["ClusterId"]) == []
        # another token of the same user is not affected
        assert call(service, service.tokens[USER])[0] == 200
    finally:
        service.pool.remove_config(REVOKE_CONFIG)
        service.pool.reconfig()
