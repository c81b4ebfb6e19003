"""Smoke tests of the real HTCondor test pool itself (no Lark code involved yet).

They run before every test that uses the ``lark_pool`` fixture, which turns the shared pool into a
Lark node for the rest of the session (ordered in tests/pool/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.pool.harness import COMPLETED, RUNNING, SRC, Pool, _mounts_under, console_scripts, host_sysctls

pytestmark = pytest.mark.pool

# prints: uid, network namespace, then one interface name per line
PROBE = """#!/bin/sh
id -u
readlink /proc/self/ns/net
tail -n +3 /proc/self/net/dev | cut -d: -f1 | tr -d ' '
"""

SUBMIT = """\
executable = probe.sh
output = probe.out
error = probe.err
log = probe.log
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
request_memory = 64
{extra}
queue
"""


def _ns(path: str) -> str:
    return f"net:[{os.stat(path).st_ino}]"


def _probe(pool: Pool, extra: str = "") -> tuple[dict, list[str]]:
    cluster = pool.submit(SUBMIT.format(extra=extra), files={"probe.sh": PROBE})
    (ad,) = pool.wait(cluster, timeout=120)
    out = pool.host_path(f"{ad['Iwd']}/probe.out").read_text().split()
    return ad, out


def test_pool_runs_in_its_own_network_namespace(pool: Pool) -> None:
    assert pool.master_pid is not None
    assert _ns(f"/proc/{pool.master_pid}/ns/net") == _ns(pool.netns_path) != _ns("/proc/self/ns/net")
    links = pool.run(["ip", "-o", "link", "show"]).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]
    assert sorted(os.listdir(pool.host_path("/sys/class/net"))) == ["lo"]  # sysfs mounted from the pool netns
    assert pool.config_val("ENABLE_KERNEL_TUNING").lower() == "false"
    assert pool.config_val("ENABLE_IPV6").lower() == "false"
    assert host_sysctls() == pool.host_sysctls_at_start  # the root master did not tune the host kernel


def test_vanilla_job_completes_and_is_in_history(pool: Pool) -> None:
    ad, out = _probe(pool)
    assert ad["JobStatus"] == COMPLETED and ad["ExitCode"] == 0 and ad["Owner"] == "larkuser"
    uid, netns, *links = out
    assert uid == "2001"
    assert netns == _ns(pool.netns_path)  # without NO_JOB_NETWORKING the job shares the pool's network
    assert "lo" in links
    (hist,) = pool.history(ad["ClusterId"], ["ClusterId", "ProcId", "Owner", "ExitCode", "JobStatus"])
    assert hist == {"ClusterId": ad["ClusterId"], "ProcId": 0, "Owner": "larkuser", "ExitCode": 0,
                    "JobStatus": COMPLETED}


def test_no_job_networking_gives_the_job_an_empty_namespace(pool: Pool) -> None:
    pool.add_config("60-smoke-no-job-networking.conf", "NO_JOB_NETWORKING = True\n")
    try:
        pool.restart_daemon("startd")  # a reconfig only half-applies this knob
        (slot,) = pool.status('MyType == "Machine"', ["HasJobNetworking", "WithinResourceLimits"])
        assert slot["HasJobNetworking"] is False
        assert "WantJobNetworking" in str(slot["WithinResourceLimits"])
        ad, out = _probe(pool, "want_job_networking = false")
        assert ad["JobStatus"] == COMPLETED and ad["ExitCode"] == 0
        uid, netns, *links = out
        assert uid == "2001"
        assert netns not in (_ns(pool.netns_path), _ns("/proc/self/ns/net"))
        assert links == ["lo"]
    finally:
        pool.remove_config("60-smoke-no-job-networking.conf")
        pool.restart_daemon("startd")
    (slot,) = pool.status('MyType == "Machine"', ["HasJobNetworking"])
    assert slot.get("HasJobNetworking", True) is True


def test_token_gives_daemon_authorization_for_generic_ads(pool: Pool) -> None:
    token_dir = pool.token_dir("lark@lark.test")
    assert token_dir.stat().st_mode & 0o777 == 0o700
    assert [p.stat().st_mode & 0o777 for p in token_dir.iterdir()] == [0o600]
    name = f"smoke-{pool.prefix}"
    pool.write("/tmp/smoke.ad", f'MyType = "LarkSmokeLink"\nName = "{name}"\nClassAdLifetime = 60\n', owner="root")
    env = {"_CONDOR_SEC_TOKEN_DIRECTORY": pool.chroot_path(token_dir),
           "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS"}
    pool.run(["condor_advertise", "UPDATE_AD_GENERIC", "/tmp/smoke.ad"], env=env)
    found = pool.status('MyType == "LarkSmokeLink"', ["Name", "AuthenticatedIdentity"])
    assert [ad["Name"] for ad in found] == [name]
    assert found[0]["AuthenticatedIdentity"] == "lark@lark.test"


def test_lark_is_importable_from_the_working_tree(pool: Pool) -> None:
    code = "import lark, htcondor2, classad2, pyroute2, yaml, requests; print(lark.__file__)"
    out = pool.run(["/opt/lark/venv/bin/python", "-c", code], user="larkuser").stdout.strip()
    assert out == f"{SRC}/lark/__init__.py"
    for name in console_scripts():
        shim = pool.host_path(f"/usr/local/bin/{name}")
        assert os.access(shim, os.X_OK), shim
    assert pool.run(["touch", f"{SRC}/x"], check=False).returncode != 0  # the working tree is read-only


def test_teardown_leaves_nothing_behind(pool: Pool, run_prefix: str) -> None:
    """A second pool (own netns, so it can use the same port) with a running job, torn down by the harness."""
    other = Pool(run_prefix + "t", image=pool.image)
    try:
        other.start()
        cluster = other.submit("executable = /bin/sleep\narguments = 300\nshould_transfer_files = NO\nqueue\n")
        other.wait_status(cluster, RUNNING, timeout=60)
        assert other.processes()
    finally:
        other.teardown()
    assert other.processes() == []
    assert not Path(other.netns_path).exists()
    assert _mounts_under(other.run_dir) == []
    assert not other.run_dir.exists()
