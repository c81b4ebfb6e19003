"""Container-universe jobs on the real pool: Apptainer runs them inside the job's Lark namespace.

HTCondor runs USER_JOB_WRAPPER (lark-wrap) *outside* the container, around the whole ``apptainer
exec`` command line, and apptainer keeps its caller's network namespace (no ``--net``). So the
container inherits the network the broker built for the wrapper: a macvlan child on a data LAN, or
NAT with a forwarded callback range, with the profile applied and the bytes accounted.

The image is built here from a directory (static busybox), with no registry and no download.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lark import netns
from tests.pool.harness import RUNNING, Pool, PoolError
from tests.pool.larkpool import IMAGE_MARKER, DataSegment, LarkPool, Sink, build_sif, container_submit, wait_for_sif
from tests.support import same_bytes, wait_until, wire_count

pytestmark = pytest.mark.pool

IMAGE = "/srv/lark-img/busybox.sif"
PARENT = "mvpar0"
SERVER = "10.77.0.1"
EXECUTE_HOST = "203.0.113.1"  # the pool's uplink address: where callbacks into a NAT job's range go
PROFILES = f"""\
profiles:
  ctr-dtn:
    description: container data plane, macvlan on {PARENT}
    attach: macvlan
    parent: {PARENT}
    ipv4_pool: 10.77.0.0/24 10.77.0.10-10.77.0.20
    ipv4_gateway: {SERVER}
  ctr-callback:
    description: NAT, 2 forwarded ports per job for movers that call back
    attach: nat
    inbound_ports: 2
    port_range_env:
      GLOBUS_TCP_PORT_RANGE: "{{first}},{{last}}"
      HPSS_PORT_RANGE: "{{first}}-{{last}}"
"""

# Every job prints what it sees as key=value lines: the image marker (it runs inside the image), its
# network namespace and interfaces, and the Lark/mover variables that reached the container.
REPORT = r"""
echo "marker=$(cat {marker} 2>&1)"
echo "netns=$(readlink /proc/self/ns/net)"
echo "ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' ')"
echo "lark0=$(ip -o -4 addr show dev lark0 2>&1 | awk '{print $4}')"
env | grep -E '^(LARK_|GLOBUS_|HPSS_)' | sed 's/^/env:/'
""".replace("{marker}", IMAGE_MARKER)

SEND_JOB = "#!/bin/sh\n# $1 server, $2 port, $3 file: move the file to the data server" + REPORT + r"""
reply=$(nc -w 10 "$1" "$2" < "$3")
echo "nc_status=$?"
echo "reply=$reply"
"""

# A transfer that outlives several accounting intervals (LARK_ACCOUNTING_INTERVAL = 2 s): $4 pieces of
# $3 bytes, a second apart, on one connection.
SLOW_SEND_JOB = "#!/bin/sh\n# $1 server, $2 port" + REPORT + r"""
reply=$( (i=0; while [ "$i" -lt "$4" ]; do head -c "$3" /dev/urandom; sleep 1; i=$((i + 1)); done) \
         | nc -w 10 "$1" "$2")
echo "nc_status=$?"
echo "reply=$reply"
"""

# An HSI client in parallel mode waits for the HPSS movers to call back on its range: listen on every
# port of LARK_PORT_RANGE, one connection each, and report what each brought.
CALLBACK_JOB = "#!/bin/sh" + REPORT + r"""
first=${LARK_PORT_RANGE%-*}
last=${LARK_PORT_RANGE#*-}
[ -n "$first" ] || { echo "error=no LARK_PORT_RANGE"; exit 3; }
p=$first
while [ "$p" -le "$last" ]; do
  nc -l -p "$p" > "got.$p" &
  p=$((p + 1))
done
wait
for f in got.*; do echo "got.${f#got.}=$(wc -c < "$f")"; done
"""

# Holds its network until the test has seen both jobs running (the test drops "release" in its
# scratch directory), at most 90 s.
HOLD_JOB = "#!/bin/sh" + REPORT + r"""
touch "ready.$1"
i=0
while [ ! -e release ] && [ "$i" -lt 900 ]; do sleep 0.1; i=$((i + 1)); done
"""


@dataclass
class ContainerPool:
    lark: LarkPool
    segment: DataSegment
    clusters: list[int] = field(default_factory=list)  # submitted by the current test

    @property
    def pool(self) -> Pool:
        return self.lark.pool

    def submit(self, script: str, args: str, profile: str, files: dict[str, str | bytes] | None = None,
               count: int = 1) -> int:
        submit = container_submit(IMAGE, args, profile, list(files or {}), count)
        cluster = self.pool.submit(submit, files={"job.sh": script, **(files or {})})
        self.clusters.append(cluster)
        return cluster

    def report(self, cluster: int, proc: int = 0) -> dict[str, str]:
        """The job's key=value lines (``env:`` lines become ``env.NAME``); fails with its stderr if empty."""
        ad = self.pool.history(cluster, ["Iwd"], f"ProcId == {proc}")[0]
        iwd = self.pool.root / ad["Iwd"].lstrip("/")
        text = (iwd / f"out.{proc}.txt").read_text()
        if "marker=" not in text:
            raise AssertionError(f"job {cluster}.{proc} printed {text!r}; stderr:\n"
                                 f"{(iwd / f'err.{proc}.txt').read_text()}\n{_starter_log(self.pool)}")
        out: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("env:"):
                key, _, value = line[4:].partition("=")
                out[f"env.{key}"] = value
            elif "=" in line:
                key, _, value = line.partition("=")
                out[key] = value
        return out


def _starter_log(pool: Pool) -> str:
    logs = sorted((pool.root / "var/log/condor").glob("StarterLog*"), key=lambda p: p.stat().st_mtime)
    return f"--- {logs[-1].name} ---\n" + logs[-1].read_text()[-3000:] if logs else "(no StarterLog)"


@pytest.fixture(scope="module")
def containers(lark_pool: LarkPool) -> Iterator[ContainerPool]:
    pool = lark_pool.pool
    segment = DataSegment(pool, f"{lark_pool.prefix}-pdat", parent=PARENT, server_address=SERVER)
    try:
        pool.write("/etc/condor/profiles.d/containers.yaml", PROFILES, owner="root")
        checked = pool.run(["lark", "profiles", "check"], check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        pool.reconfig()
        build_sif(pool, IMAGE)
        wait_for_sif(pool)
        yield ContainerPool(lark_pool, segment)
    finally:
        (pool.root / "etc/condor/profiles.d/containers.yaml").unlink(missing_ok=True)
        try:
            pool.reconfig()
        finally:
            segment.close()


@pytest.fixture(autouse=True)
def _jobs_removed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test submitted is removed when it ends, however it ends: a job left waiting (a
    listener, a job waiting for its release file) would hold the node's ports and slots."""
    yield
    if "containers" in request.fixturenames:
        containers: ContainerPool = request.getfixturevalue("containers")
        for cluster in containers.clusters:
            containers.pool.run(["condor_rm", str(cluster)], check=False)  # fails harmlessly once done
        containers.clusters.clear()


# ------------------------------------------------------------------ (a) macvlan profile


def test_container_job_on_a_macvlan_profile_moves_a_file_to_a_data_server(containers: ContainerPool) -> None:
    pool = containers.pool
    sink = Sink(containers.segment.netns_path, SERVER, table_prefix=containers.lark.prefix)
    try:
        payload = os.urandom(3_000_000)
        cluster = containers.submit(SEND_JOB, f"{SERVER} {sink.port} payload.bin", "ctr-dtn",
                                    files={"payload.bin": payload})
        pool.wait(cluster, timeout=180)
        out = containers.report(cluster)
        ad = pool.history(cluster, ["LarkBytesIn", "LarkBytesOut", "LarkNetworkType", "LarkIPv4Address",
                                    "ExitCode", "ContainerImage", "WantContainer"])[0]
        # it ran inside the image, in a namespace of its own holding only Lark's interface and loopback
        assert out["marker"] == "lark test image", out
        assert ad["WantContainer"] is True and ad["ContainerImage"] == IMAGE  # container universe
        assert out["netns"] != f"net:[{os.stat(pool.netns_path).st_ino}]"
        assert out["netns"] != f"net:[{os.stat('/proc/self/ns/net').st_ino}]"
        assert out["ifaces"].split() == ["lark0", "lo"], out
        address = ad["LarkIPv4Address"]
        assert ad["LarkNetworkType"] == "macvlan"
        assert out["lark0"] == f"{address}/24", out  # Lark's macvlan child, with Lark's address
        assert out["env.LARK_IPV4_ADDRESS"] == address  # the wrapper's variables reach the container
        assert out["env.LARK_NETWORK_PROFILE"] == "ctr-dtn"
        # the file went over the macvlan child: the server saw the job's own address (no NAT)
        assert out["reply"] == "ok" and out["nc_status"] == "0", out
        assert sink.received == [(address, len(payload))]
        assert ad["ExitCode"] == 0
        [wire] = sink.wire_bytes().values()
        assert same_bytes(ad["LarkBytesOut"], wire), (ad, wire)
        assert 0 < ad["LarkBytesIn"] < 300_000  # the server's acknowledgements and reply
    finally:
        sink.close()
    assert containers.lark.wait_no_objects() == []


def test_final_count_of_a_long_transfer_is_what_crossed_the_wire(containers: ContainerPool) -> None:
    """Periodic (delayed) updates run while the job sends; the value in history must be the final one."""
    pool = containers.pool
    sink = Sink(containers.segment.netns_path, SERVER, table_prefix=containers.lark.prefix)
    try:
        pieces, size = 7, 400_000
        cluster = containers.submit(SLOW_SEND_JOB, f"{SERVER} {sink.port} {size} {pieces}", "ctr-dtn")
        pool.wait(cluster, timeout=180)
        out = containers.report(cluster)
        assert out["reply"] == "ok", out
        ad = pool.history(cluster, ["LarkBytesOut", "LarkIPv4Address"])[0]
        assert sink.received == [(ad["LarkIPv4Address"], pieces * size)]
        [wire] = sink.wire_bytes().values()
        # equal only if the final count, not the last periodic one, is what reached the job ad
        assert same_bytes(ad["LarkBytesOut"], wire), (ad, wire)
    finally:
        sink.close()


# ------------------------------------------------------------------ (b) NAT profile, callbacks


def _call_back(wan: str, port: int, data: bytes, timeout: float = 60) -> None:
    """Connect from the wan namespace to the execute host's port until the job listens, send, close."""

    def attempt() -> bool:
        try:
            with socket.create_connection((EXECUTE_HOST, port), timeout=5) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.settimeout(30)
                while s.recv(65536):
                    pass
            return True
        except ConnectionRefusedError:  # the job's nc is not listening yet
            return False

    wait_until(f"a listener on {EXECUTE_HOST}:{port}", lambda: netns.call_in(wan, attempt), timeout, 0.3)


def test_nat_profile_container_job_receives_callbacks_on_its_forwarded_range(containers: ContainerPool) -> None:
    pool = containers.pool
    cluster = containers.submit(CALLBACK_JOB, "-", "ctr-callback")
    ad = _wait_for_attr(pool, cluster, "LarkPortRange")
    first, last = (int(p) for p in str(ad["LarkPortRange"]).split("-"))
    assert last - first == 1
    # what the wan sends to the job's forwarded range, counted where it leaves
    with wire_count(containers.lark.wan, f"{containers.lark.prefix}-cb", f"ip daddr {EXECUTE_HOST} "
                    f"tcp dport {first}-{last}", hook="output") as sent:
        # two movers call back, one on each port of the range, from another namespace
        sizes = {first: 1_500_000, last: 700_000}
        for port, size in sizes.items():
            _call_back(containers.lark.wan, port, os.urandom(size))
        pool.wait(cluster, timeout=120)
        out = containers.report(cluster)
        wire = sent()
    assert out["marker"] == "lark test image"
    assert out["ifaces"].split() == ["lark0", "lo"], out
    assert out["env.LARK_PORT_RANGE"] == f"{first}-{last}"
    assert out["env.LARK_PUBLIC_ADDRESS"] == EXECUTE_HOST
    assert out["env.GLOBUS_TCP_PORT_RANGE"] == f"{first},{last}"
    assert out["env.HPSS_PORT_RANGE"] == f"{first}-{last}"
    assert {int(k.split(".")[1]): int(v) for k, v in out.items() if k.startswith("got.")} == sizes, out
    hist = pool.history(cluster, ["LarkBytesIn", "LarkBytesOut", "LarkNetworkType", "ExitCode"])[0]
    assert hist["ExitCode"] == 0 and hist["LarkNetworkType"] == "nat"
    assert same_bytes(hist["LarkBytesIn"], wire), (hist, wire)
    assert 0 < hist["LarkBytesOut"] < 200_000  # only acknowledgements went back
    assert containers.lark.wait_no_objects() == []


def _wait_for_attr(pool: Pool, cluster: int, attr: str, timeout: float = 120) -> dict[str, object]:
    def with_attr() -> dict[str, object] | None:
        ads = pool.q(f"ClusterId == {cluster}", ["ProcId", "JobStatus", attr, "HoldReason"])
        if any(ad.get("HoldReason") for ad in ads):
            raise PoolError(f"job held: {ads}")
        return sorted(ads, key=lambda ad: ad["ProcId"])[0] if any(ad.get(attr) for ad in ads) else None

    return wait_until(f"{attr} in the ad of cluster {cluster}", with_attr, timeout, 0.3)


# ------------------------------------------------------------------ (c) disjoint ranges


def test_two_simultaneous_jobs_of_one_profile_get_disjoint_port_ranges(containers: ContainerPool) -> None:
    pool = containers.pool
    cluster = containers.submit(HOLD_JOB, "$(Cluster).$(Process)", "ctr-callback", count=2)
    try:
        def both_running() -> list[dict[str, object]]:  # at once, each holding its range
            ads = pool.q(f"ClusterId == {cluster}", ["ProcId", "JobStatus", "LarkPortRange", "HoldReason"])
            assert not any(ad.get("HoldReason") for ad in ads), ads
            ready = list(_ready_files(pool, cluster))
            both = len(ready) == 2 and all(ad["JobStatus"] == RUNNING and ad.get("LarkPortRange") for ad in ads)
            return ads if both else []

        ads = wait_until(f"both jobs of cluster {cluster} running with a port range", both_running, 120, 0.3)
        running_ranges = {ad["ProcId"]: ad["LarkPortRange"] for ad in ads}
    finally:
        for ready_file in _ready_files(pool, cluster):
            (ready_file.parent / "release").touch()
    pool.wait(cluster, timeout=120)
    ranges = []
    for proc in (0, 1):
        out = containers.report(cluster, proc)
        first, last = (int(p) for p in out["env.LARK_PORT_RANGE"].split("-"))
        assert out["env.LARK_PORT_RANGE"] == running_ranges[proc]
        assert out["env.GLOBUS_TCP_PORT_RANGE"] == f"{first},{last}"
        assert last - first == 1 and 40000 <= first and last <= 40003  # the node's LARK_INBOUND_PORT_RANGE
        ranges.append(set(range(first, last + 1)))
    assert not ranges[0] & ranges[1], running_ranges
    assert containers.lark.wait_no_objects() == []


def _ready_files(pool: Pool, cluster: int) -> Iterator[Path]:
    """The HOLD_JOB's ready files in the jobs' scratch directories (the execute directory, as root)."""
    execute = pool.root / pool.config_val("EXECUTE").lstrip("/")
    wanted = {f"ready.{cluster}.{proc}" for proc in (0, 1)}
    # os.walk, not Path.glob: apptainer's rootfs directories come and go under the scratch
    # directories while we look, and glob raises on a directory that vanished mid-walk
    for top, _dirs, files in os.walk(execute, onerror=lambda _err: None):
        for name in wanted & set(files):
            yield Path(top) / name
