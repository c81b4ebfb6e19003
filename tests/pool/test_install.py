"""Install Lark into the bare pool by the admin guide's own commands, then use it as the guide says.

The commands are read from docs/admin-guide.md (the fenced blocks marked ``<!-- install: execute``
and ``<!-- install: submit``) and run as written, as root in the pool, in the directory holding the
wheel; the only help they get is a wheelhouse (the pool has no network) that pip is pointed at
through its own environment variables. The pool has no compiler, so this is also the plain
install "without gcc". Runs before the ``lark_pool`` fixture (tests/pool/conftest.py orders it)
and leaves the pool as it found it, drop-ins removed and the startd restarted.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lark import netns
from tests.pool.harness import JobHeld, Pool
from tests.pool.larkpool import JOB, Sink, build_wheel, fill_wheelhouse, run_guide_block

pytestmark = pytest.mark.pool

LARK = "/opt/lark/bin/lark"
UPLINK_HOST, UPLINK_FAR = "203.0.113.1", "203.0.113.2"
PAYLOAD = 300_000


@pytest.fixture(scope="module")
def installed(pool: Pool, run_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The guide's execute and submit blocks run in the pool; yields their output and the doctor's."""
    assert pool.run("command -v gcc cc", check=False).returncode != 0, "the pool must have no compiler"
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    fill_wheelhouse(pool, wheel)
    try:
        execute = run_guide_block(pool, "execute")
        submit = run_guide_block(pool, "submit") if execute.returncode == 0 else None
        yield {"execute": execute, "submit": submit}
    finally:
        for name in ("50-lark-execute.conf", "60-lark-submit.conf"):
            pool.host_path(f"/etc/condor/config.d/{name}").unlink(missing_ok=True)
        pool.reconfig()  # the master stops lark-netd (no longer in DAEMON_LIST)
        pool.restart_daemon("startd")  # and the startd forgets NO_JOB_NETWORKING


def test_the_guides_install_commands_work_as_written_and_the_doctor_agrees(installed: dict[str, object]) -> None:
    execute = installed["execute"]
    assert isinstance(execute, subprocess.CompletedProcess)
    assert execute.returncode == 0, f"stdout:\n{execute.stdout}\nstderr:\n{execute.stderr}"
    # the block's last command is `lark doctor --wait 60`: it printed one line per check, all holding
    doctor_lines = [line for line in execute.stdout.splitlines() if line[:5].strip() in ("OK", "WARN", "FAIL")]
    assert doctor_lines and not [line for line in doctor_lines if line.startswith("FAIL")], execute.stdout
    submit = installed["submit"]
    assert isinstance(submit, subprocess.CompletedProcess)
    assert submit.returncode == 0, f"stdout:\n{submit.stdout}\nstderr:\n{submit.stderr}"


def test_the_doctor_checks_both_roles_and_all_hold(pool: Pool, installed: dict[str, object]) -> None:
    out = pool.run([LARK, "doctor", "--json"], check=False)
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert out.returncode == 0, out.stdout
    for name in ("broker", "versions", "no-job-networking", "job-wrapper", "slots", "chirp-prefix", "firewall",
                 "kernel-veth", "kernel-tbf", "transforms"):
        assert checks[name]["status"] in ("ok", "warn"), checks[name]
    assert checks["no-job-networking"]["status"] == "ok"
    assert checks["transforms"]["status"] == "ok"


def test_the_plain_install_has_no_numpy_and_the_wrapper_uses_the_environments_python(
        pool: Pool, installed: dict[str, object]) -> None:
    assert pool.run(["/opt/lark/bin/python3", "-c", "import numpy"], check=False).returncode != 0
    assert pool.run(["/opt/lark/bin/python3", "-c", "import pyroute2, yaml, htcondor2, classad2"]).returncode == 0
    head = pool.host_path("/opt/lark/bin/lark-wrap").read_text().splitlines()[:10]
    assert any('exec "$here/python3" -I -S' in line for line in head)
    assert (pool.host_path("/opt/lark/bin/python3")).exists()


def test_admin_commands_after_the_install(pool: Pool, installed: dict[str, object]) -> None:
    listed = pool.run([LARK, "list", "--json"])
    assert json.loads(listed.stdout) == []
    checked = pool.run([LARK, "check"], check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = pool.run([LARK, "config", "--json"])
    rows = {row["knob"]: row for row in json.loads(config.stdout)}
    # the drop-in's LARK_NETWORK_TYPES, with the file and line it is on
    assert rows["LARK_NETWORK_TYPES"]["value"] == "nat, none"
    assert str(rows["LARK_NETWORK_TYPES"]["where"]).startswith("/etc/condor/config.d/50-lark-execute.conf:")
    assert pool.run([LARK, "--version"]).stdout.strip().startswith("lark ")


SUBMIT = """executable = job.py
arguments = "{args}"
output = out.json
error = err.txt
log = job.log
should_transfer_files = NO
{extra}
queue
"""


@pytest.fixture
def uplink(pool: Pool, run_prefix: str) -> Iterator[Sink]:
    """A far end for the job's traffic: a veth from the pool's namespace to one of the test's own."""
    wan_name = f"{run_prefix}-iwan"
    wan = str(netns.create_named(wan_name))
    sink = None
    try:
        subprocess.run(["ip", "link", "add", "iup0", "netns", pool.netns_name, "type", "veth", "peer", "name", "iup1",
                        "netns", wan_name], check=True)
        for ns, args in ((pool.netns_name, ["addr", "add", f"{UPLINK_HOST}/24", "dev", "iup0"]),
                         (pool.netns_name, ["link", "set", "iup0", "up"]),
                         (pool.netns_name, ["route", "add", "default", "via", UPLINK_FAR]),
                         (wan_name, ["addr", "add", f"{UPLINK_FAR}/24", "dev", "iup1"]),
                         (wan_name, ["link", "set", "iup1", "up"]), (wan_name, ["link", "set", "lo", "up"])):
            subprocess.run(["ip", "-n", ns, *args], check=True)
        sink = Sink(wan, UPLINK_FAR, table_prefix=run_prefix)
        yield sink
    finally:
        if sink is not None:
            sink.close()
        # deleting one end deletes the pair, and the pool's default route with it, at once (a namespace
        # is destroyed asynchronously, after its last socket is gone)
        subprocess.run(["ip", "-n", pool.netns_name, "link", "del", "iup0"], capture_output=True)
        netns.delete_named(wan_name)


def test_a_jobs_network_input_mb_is_its_lark_bytes_in(pool: Pool, installed: dict[str, object], uplink: Sink) -> None:
    cluster = pool.submit(SUBMIT.format(args=f"{UPLINK_FAR} {uplink.port} {PAYLOAD} 0", extra=""),
                          files={"job.py": JOB})
    (ad,) = pool.wait(cluster, timeout=120)
    (hist,) = pool.history(cluster, ["LarkNetworkType", "LarkBytesIn", "LarkBytesOut", "NetworkInputMb",
                                     "NetworkOutputMb"])
    out = json.loads(pool.host_path(f"{ad['Iwd']}/out.json").read_text())
    assert out.get("reply") == "ok", out
    assert hist["LarkNetworkType"] == "nat"
    assert hist["LarkBytesOut"] > PAYLOAD  # the payload plus headers
    assert hist["LarkBytesIn"] > 0  # the reply and the ACKs
    # MB = 10^6 bytes; the ClassAd real carries 6 significant digits
    assert hist["NetworkInputMb"] == pytest.approx(hist["LarkBytesIn"] / 1e6, rel=1e-5)
    assert hist["NetworkOutputMb"] == pytest.approx(hist["LarkBytesOut"] / 1e6, rel=1e-5)


def test_a_none_job_has_explicit_zeros(pool: Pool, installed: dict[str, object]) -> None:
    cluster = pool.submit(SUBMIT.format(args="- 0 0 0", extra='+LarkNetworkType = "none"'), files={"job.py": JOB})
    pool.wait(cluster, timeout=120)
    (hist,) = pool.history(cluster, ["LarkNetworkType", "LarkBytesIn", "LarkBytesOut", "NetworkInputMb"])
    assert (hist["LarkNetworkType"], hist["LarkBytesIn"], hist["LarkBytesOut"], hist["NetworkInputMb"]) == \
        ("none", 0, 0, 0)


def test_a_request_the_node_cannot_honour_is_held_with_the_hooks_name(pool: Pool, installed: dict[str, object],
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The user guide quotes this hold reason; print it so a changed HTCondor wording is seen."""
    cluster = pool.submit(SUBMIT.format(args="- 0 0 0", extra='+LarkNetworkType = "bridge"'), files={"job.py": JOB})
    t0 = time.monotonic()
    with pytest.raises(JobHeld) as held:
        pool.wait(cluster, timeout=120)
    reason = str(held.value.ads[0].get("HoldReason"))
    (codes,) = pool.q(f"ClusterId == {cluster}", ["HoldReasonCode", "HoldReasonSubCode"])
    with capsys.disabled():
        print(f"\nhold after {time.monotonic() - t0:.0f} s: {reason}")
    pool.run(["condor_rm", str(cluster)], check=False)
    assert (codes.get("HoldReasonCode"), codes.get("HoldReasonSubCode")) == (19, 190)
    assert reason.startswith("Error from slot")
    assert ": PREPARE_JOB (lark-prepare-job) failed (reported status 190): Lark: LarkNetworkType: 'bridge' is " \
           "not offered on this node (offered: nat, none)" in reason


def test_doctor_reports_what_is_missing_once_the_drop_in_is_gone(pool: Pool, installed: dict[str, object]) -> None:
    """The doctor can fail: without the submit drop-in the schedd's transforms are reported, with the fix."""
    path: Path = pool.host_path("/etc/condor/config.d/60-lark-submit.conf")
    saved = path.read_text()
    path.unlink()
    try:
        pool.reconfig()
        deadline = time.monotonic() + 30
        while True:
            out = pool.run([LARK, "doctor", "--json"], check=False)
            checks = {c["name"]: c for c in json.loads(out.stdout)}
            if checks["transforms"]["status"] == "fail" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert out.returncode == 1
        assert checks["transforms"]["status"] == "fail"
        assert "60-lark-submit.conf" in checks["transforms"]["fix"]
    finally:
        pool.write("/etc/condor/config.d/60-lark-submit.conf", saved, owner="root")
        pool.reconfig()
