"""``lark pool demo``: up a multi-site pool, show Lark's main job in it step by step, down.

Each step prints what it shows and its evidence: the site links measured with iperf3 over the shaped WAN
and kept in a perfSONAR archive, lark-spider's link ads, the links cron's slot limits; jobs that download
from a site's data server, accounted per traffic class (their own site's LAN is ``campus``, the rest
``offcampus``) — ``condor_q -af`` while they run, ``condor_history`` after, next to the bytes the server
sent; a container-universe job on the shipped ``nat-callback`` profile; big-input jobs the circuit breaker
keeps off the thin site, with ``condor_q -better-analyze``; and ``lark report`` over the pool's history
(kept, with its plots, in ``/tmp/lark-pool-demo-<name>/``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lark.pool.archive import MeasurementArchive
from lark.pool.containers import build_sif, container_submit, wait_for_sif
from lark.pool.data import DataServer
from lark.pool.links import crawl_and_publish, enable_links_cron, measure_links, wait_for_limits
from lark.pool.personal import PersonalPool, personal_pool
from lark.pool.util import wait_until

DOWNLOAD_BYTES = 4_000_000
GET = """#!/usr/bin/python3
# Downloads a URL slowly enough to be watched, and prints how many bytes of body it got.
import sys, time, urllib.request
n = 0
with urllib.request.urlopen(sys.argv[1], timeout=120) as response:
    while chunk := response.read(65536):
        n += len(chunk)
time.sleep(3)
print(n)
"""
BIG_INPUT = 2 * 10**9  # 600 s carry it at 27 Mbit/s: SITE2 (100) can, SITE3 (10) cannot
ATTRS = ("LarkNetworkType", "LarkBytesIn", "LarkBytesInCampus", "LarkBytesInOffcampus")

Say = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


def _step(say: Say, number: int, title: str) -> None:
    say(f"\n== {number}. {title}")


def download_job(pool: PersonalPool, server: DataServer, site: int, say: Say) -> dict[str, object]:
    """A job pinned to ``site`` downloads from ``server``; watched with condor_q, then condor_history."""
    node = pool.plan.node(f"site{site}")
    cluster = pool.submit.submit(
        f"executable = get.py\narguments = {server.url}/bytes/{DOWNLOAD_BYTES}\noutput = out\nerror = err\n"
        f"log = log\nshould_transfer_files = YES\nrequirements = Machine == \"{node.hostname}\"\nqueue\n",
        files={"get.py": GET})
    say(f"   submitted job {cluster} as larkuser: site{site} downloads {DOWNLOAD_BYTES} bytes from {server.url}")
    af = ["condor_q", str(cluster), "-af", "ClusterId", "JobStatus", "RemoteHost", *ATTRS]
    seen = ""
    deadline = time.monotonic() + 120
    while pool.submit.q(f"ClusterId == {cluster}") and time.monotonic() < deadline:
        line = pool.submit.run(af, check=False).stdout.strip()
        if line and line != seen and "undefined undefined undefined" not in line:
            say(f"   $ condor_q -af ClusterId JobStatus RemoteHost {' '.join(ATTRS)}\n     {line}")
            seen = line
        time.sleep(1)
    (ad,) = pool.submit.wait(cluster, timeout=max(1.0, deadline - time.monotonic()))
    hist = pool.submit.run(["condor_history", str(cluster), "-limit", "1", "-af", "ClusterId", "LastRemoteHost",
                            *ATTRS]).stdout.strip()
    say(f"   $ condor_history -af ClusterId LastRemoteHost {' '.join(ATTRS)}\n     {hist}")
    return ad


def _show(pool: PersonalPool, say: Say, argv: list[str]) -> None:
    say(f"   $ {' '.join(a if ' ' not in a else repr(a) for a in argv)}")
    for line in pool.submit.run(argv, user="larkuser").stdout.strip().splitlines():
        say(f"     {line}")


def big_input_jobs(pool: PersonalPool, say: Say) -> None:
    source = f'+LarkSourceSite = "SITE1"\n+LarkInputBytes = {BIG_INPUT}\n'
    common = f"executable = /bin/sleep\narguments = 1\nlog = log\nshould_transfer_files = YES\n{source}"
    big = pool.submit.submit(common + "queue 4\n")
    pinned = pool.submit.submit(common + 'requirements = Machine == "site3.lark.test"\nqueue\n')
    say(f"   submitted jobs {big}.0-3 (anywhere) and {pinned}.0 (only at SITE3)")
    try:
        pool.submit.wait(big, timeout=180)
        _show(pool, say, ["condor_history", str(big), "-af", "ClusterId", "ProcId", "LastRemoteHost"])

        def considered() -> bool:
            (ad,) = pool.submit.q(f"ClusterId == {pinned}", ["LastRejMatchTime", "JobStatus"])
            return ad.get("JobStatus") == 1 and bool(ad.get("LastRejMatchTime"))

        wait_until("the negotiator to consider the job pinned to SITE3", considered, 60, 0.5)
        say(f"   job {pinned}.0 stays idle; condor_q -better-analyze says why:")
        analysis = pool.submit.run(["condor_q", "-better-analyze", str(pinned)], check=False).stdout
        for line in analysis.splitlines():
            if "LarkMaxInputBytes" in line or "match" in line.lower():
                say(f"     {line.strip()}")
    finally:
        pool.submit.run(["condor_rm", str(big), str(pinned)], check=False)


PROFILE = "/opt/lark/share/lark/condor_config.d/profiles.d/nat-callback.yaml"
IMAGE = "/srv/lark-img/busybox.sif"
CONTAINER_JOB = """#!/bin/sh
# Inside the image: the callback range Lark forwarded to the job, then a download from $1.
echo "inside the image: $(cat /lark-test-image)"
echo "LARK_PORT_RANGE=$LARK_PORT_RANGE GLOBUS_TCP_PORT_RANGE=$GLOBUS_TCP_PORT_RANGE HPSS_PORT_RANGE=$HPSS_PORT_RANGE"
echo "downloaded $(wget -q -O - "$1" | wc -c) bytes from $1"
"""


def container_job(pool: PersonalPool, server: DataServer, say: Say) -> None:
    """A container-universe job on the shipped ``nat-callback`` profile at SITE2, pulling from SITE1."""
    node = pool.nodes["site2"]
    node.run(["mkdir", "-p", "/etc/condor/profiles.d"])
    node.run(["cp", PROFILE, "/etc/condor/profiles.d/"])
    say(f"   site2: {PROFILE.rsplit('/', 1)[-1]} copied to /etc/condor/profiles.d/; lark profiles check: "
        + node.run(["/opt/lark/bin/lark", "profiles", "check"], check=False).stdout.strip().splitlines()[-1])
    node.restart_daemon("startd")  # its crons run at start: LARKPROFILES advertises the profile now
    build_sif(node, IMAGE)
    wait_for_sif(node)
    wait_until("site2 to advertise the profile", lambda: any(
        "nat-callback" in str(ad.get("LarkProfiles")) for ad in pool.submit.status(
            'Machine == "site2.lark.test" && MyType == "Machine"', ["LarkProfiles"])), 60, 0.5)
    submit = container_submit(IMAGE, f"{server.url}/bytes/{DOWNLOAD_BYTES}", "nat-callback").replace(
        "queue", 'requirements = Machine == "site2.lark.test"\nqueue')
    cluster = pool.submit.submit(submit, files={"job.sh": CONTAINER_JOB})
    say(f"   submitted container job {cluster} (universe = container, {IMAGE}, "
        '+LarkNetworkProfile = "nat-callback")')
    (ad,) = pool.submit.wait(cluster, timeout=180)
    for line in pool.submit.host_path(f"{ad['Iwd']}/out.0.txt").read_text().strip().splitlines():
        say(f"     {line}")
    _show(pool, say, ["condor_history", str(cluster), "-af", "ClusterId", "LastRemoteHost", "LarkNetworkProfile",
                      "LarkPortRange", "LarkBytesIn", "LarkBytesInOffcampus"])


def report(pool: PersonalPool, say: Say, out_dir: Path) -> None:
    """``lark report`` over a copy of the submit node's history (kept after ``down``), with its plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    history = out_dir / "history"
    shutil.copyfile(pool.submit.host_path("/var/spool/condor/history"), history)
    text, plots = out_dir / "report.txt", out_dir / "plots"
    argv = [sys.executable, "-m", "lark.cli.main", "report", "--history", str(history), "--month", "this",
            "--plot", str(plots), "-o", str(text)]
    say(f"   $ lark report --history {history} --month this --plot {plots}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        say(f"   lark report failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
        return
    lines = text.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Accounting")), 0)
    for line in lines[start:start + 12]:
        say(f"     {line}")
    say(f"   the whole report: {text}; plots: {plots / 'index.html'}")


def demo(name: str = "demo", say: Say = _print) -> int:
    """The whole story; returns 0 when every step showed what it should."""
    _step(say, 1, "a personal pool: central manager, submit node, three sites on a shaped WAN, Lark installed "
                  "by the admin guide")
    with personal_pool(name, sites=3, slots=2, progress=lambda m: say(f"   {m}")) as pool:
        for site in pool.plan.sites:
            say(f"   {site.name}: execute node {site.execute_address}, data server {site.data_address}, "
                f"WAN link {site.mbit} Mbit/s")
        _step(say, 2, "the site links, measured with iperf3 from SITE1's data server over the WAN, kept in a "
                      "perfSONAR archive")
        archive = MeasurementArchive(f"/run/netns/{pool.plan.wan_netns}", pool.plan.node("cm").gateway)
        try:
            measured = measure_links(pool, archive)
            for index, mbit in measured.items():
                say(f"   SITE1 -> SITE{index}: {mbit:.1f} Mbit/s (link shaped to {pool.plan.sites[index - 1].mbit})")
            say(f"   archive: {archive.url} (pSConfig mesh list at {archive.publisher}, esmond at "
                "/esmond/perfsonar/archive/)")
            _step(say, 3, "lark-spider crawls the archive and advertises link ads to the central manager's collector")
            names, spider_log = crawl_and_publish(pool, archive)
            say("   $ lark-spider --once -c /etc/lark/spider.yaml   (on the central manager)")
            for line in spider_log.splitlines()[-3:]:
                say(f"     {line}")
            _show(pool, say, ["condor_status", "-any", "-constraint", 'MyType == "LarkNetworkLink"', "-af",
                              "LarkSourceSite", "LarkDestinationSite", "LarkThroughputMbps", "LarkQuality"])
        finally:
            archive.close()
        _step(say, 4, "the links cron on each execute node turns the link ads into slot limits "
                      "(70-lark-matchmaking.conf; 600 s to carry a job's input)")
        enable_links_cron(pool)
        wait_for_limits(pool, "SITE1", list(measured))
        _show(pool, say, ["condor_status", "-af", "Machine", "LarkSite", "LarkMaxInputBytes_SITE1"])
        servers = [DataServer(f"/run/netns/{pool.plan.router_netns(s)}", s.data_address) for s in pool.plan.sites]
        try:
            _step(say, 5, "a job downloads from another site: Lark accounts its bytes as offcampus")
            download_job(pool, servers[0], 3, say)
            say(f"   SITE1's data server sent {sum(n for _, n in servers[0].served)} bytes of body; "
                "LarkBytesIn counts them with their TCP/IP headers")
            _step(say, 6, "a job downloads from its own site's data server: campus")
            download_job(pool, servers[0], 1, say)
            _step(say, 7, "a container-universe transfer job on a network profile with a callback port range")
            container_job(pool, servers[0], say)
        finally:
            for server in servers:
                server.close()
        _step(say, 8, f"jobs with {BIG_INPUT / 1e9:.0f} GB of input at SITE1: the circuit breaker keeps them off "
                      "the site whose link cannot carry it")
        big_input_jobs(pool, say)
        _step(say, 9, "lark report over the pool's history: bytes per user and per traffic class, with plots")
        report(pool, say, Path(f"/tmp/lark-pool-demo-{name}"))
        _step(say, 10, f"lark pool down {name}: nothing left behind")
    say(f"   pool {name} removed: no mounts, namespaces, links or processes left")
    return 0
