"""``lark pool demo``: up a multi-site pool, show Lark's main job in it step by step, down.

Each step prints what it shows and its evidence: the site links measured with iperf3 over the shaped WAN,
then jobs that download from a site's data server, accounted per traffic class (their own site's LAN is
``campus``, the rest ``offcampus``) — ``condor_q -af`` while they run, ``condor_history`` after, next
to the bytes the server sent.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

from lark.pool.data import DataServer
from lark.pool.personal import PersonalPool, personal_pool
from lark.pool.util import HOST_PATH, PoolError, wait_until

IPERF_PORT = 5201
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
ATTRS = ("LarkNetworkType", "LarkBytesIn", "LarkBytesInCampus", "LarkBytesInOffcampus")

Say = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


def measure_mbit(pool: PersonalPool, server_site: int, node: str, seconds: int = 2) -> float:
    """iperf3 from ``node``'s namespace, ``server_site``'s data server sending: that link's rate, Mbit/s."""
    router = f"/run/netns/{pool.plan.router_netns(pool.plan.sites[server_site - 1])}"
    address = pool.plan.sites[server_site - 1].data_address
    server = subprocess.Popen(["nsenter", f"--net={router}", "iperf3", "-s", "-1", "-B", address, "-p",
                               str(IPERF_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={"PATH": HOST_PATH})
    try:
        def client() -> subprocess.CompletedProcess[str] | None:
            done = subprocess.run(["nsenter", f"--net={pool.nodes[node].netns_path}", "iperf3", "-J", "-R", "-t",
                                   str(seconds), "-c", address, "-p", str(IPERF_PORT)], capture_output=True,
                                  text=True, timeout=60, check=False, env={"PATH": HOST_PATH})
            return done if done.returncode == 0 else None  # the server may not listen yet

        done = wait_until(f"iperf3 from {node} to {address}", client, 20, 0.2)
        report = json.loads(done.stdout)
        return float(report["end"]["sum_received"]["bits_per_second"]) / 1e6
    except (TimeoutError, ValueError, KeyError) as exc:
        raise PoolError(f"iperf3 measurement to {node} failed: {exc}") from None
    finally:
        server.kill()
        server.wait()


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
    af = ["condor_q", "-af", "ClusterId", "JobStatus", "RemoteHost", *ATTRS, str(cluster)]
    seen = ""
    deadline = time.monotonic() + 120
    while pool.submit.q(f"ClusterId == {cluster}") and time.monotonic() < deadline:
        line = pool.submit.run(af, check=False).stdout.strip()
        if line and line != seen and "undefined undefined undefined" not in line:
            say(f"   $ condor_q -af ClusterId JobStatus RemoteHost {' '.join(ATTRS)}\n     {line}")
            seen = line
        time.sleep(1)
    (ad,) = pool.submit.wait(cluster, timeout=max(1.0, deadline - time.monotonic()))
    hist = pool.submit.run(["condor_history", "-af", "ClusterId", "LastRemoteHost", *ATTRS, "-limit", "1",
                            str(cluster)]).stdout.strip()
    say(f"   $ condor_history -af ClusterId LastRemoteHost {' '.join(ATTRS)}\n     {hist}")
    return ad


def demo(name: str = "demo", say: Say = _print) -> int:
    """The whole story; returns 0 when every step showed what it should."""
    _step(say, 1, "a personal pool: central manager, submit node, three sites on a shaped WAN, Lark installed "
                  "by the admin guide")
    with personal_pool(name, sites=3, slots=2, progress=lambda m: say(f"   {m}")) as pool:
        for site in pool.plan.sites:
            say(f"   {site.name}: execute node {site.execute_address}, data server {site.data_address}, "
                f"WAN link {site.mbit} Mbit/s")
        _step(say, 2, "the site links, measured with iperf3 from SITE1's data server over the WAN")
        for site in pool.plan.sites[1:]:
            mbit = measure_mbit(pool, 1, f"site{site.index}")
            say(f"   SITE1 -> {site.name}: {mbit:.1f} Mbit/s (link shaped to {site.mbit})")
        servers = [DataServer(f"/run/netns/{pool.plan.router_netns(s)}", s.data_address) for s in pool.plan.sites]
        try:
            _step(say, 3, "a job downloads from another site: Lark accounts its bytes as offcampus")
            download_job(pool, servers[0], 3, say)
            say(f"   SITE1's data server sent {sum(n for _, n in servers[0].served)} bytes of body; "
                "LarkBytesIn counts them with their TCP/IP headers")
            _step(say, 4, "a job downloads from its own site's data server: campus")
            download_job(pool, servers[0], 1, say)
        finally:
            for server in servers:
                server.close()
        _step(say, 5, f"lark pool down {name}: nothing left behind")
    say(f"   pool {name} removed: no mounts, namespaces, links or processes left")
    return 0
