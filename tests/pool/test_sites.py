"""The multi-site personal pool (``lark pool``): sites, shaped WAN links, per-class accounting across sites.

One pool for the module: a central manager, a submit node and three execute sites (1000, 100 and 10
Mbit/s to the WAN), Lark installed into it by the admin guide's blocks. Each site's data server is an HTTP
server in its router's namespace (:class:`lark.pool.data.DataServer`); the ground truth for a job's
counters is an nft counter on the path the data took, past the shaping.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from lark.pool.archive import MeasurementArchive
from lark.pool.data import DataServer
from lark.pool.links import crawl_and_publish, enable_links_cron, measure_links, wait_for_limits
from lark.pool.node import RUNNING, host_sysctls
from lark.pool.personal import PersonalPool, broker_ping, personal_pool
from tests.pool.larkpool import host_links
from tests.support import in_ns, iperf3_json, received_mbit, same_bytes, wait_listening, wait_until, wire_count

pytestmark = pytest.mark.pool

GET = """#!/usr/bin/python3
# Downloads a URL and prints how many bytes of body it got.
import sys, urllib.request
n = 0
with urllib.request.urlopen(sys.argv[1], timeout=60) as response:
    while chunk := response.read(65536):
        n += len(chunk)
print(n)
"""


@pytest.fixture(scope="module")
def sites(require_root: None, run_prefix: str) -> Iterator[PersonalPool]:
    before = host_links()
    with personal_pool(run_prefix, sites=3, slots=2) as pool:
        pool.host_links_before = before  # type: ignore[attr-defined]
        yield pool


@pytest.fixture(scope="module")
def data_servers(sites: PersonalPool) -> Iterator[dict[int, DataServer]]:
    servers = {s.index: DataServer(f"/run/netns/{sites.plan.router_netns(s)}", s.data_address)
               for s in sites.plan.sites}
    yield servers
    for server in servers.values():
        server.close()


def test_every_node_has_its_own_namespace_and_name_and_the_host_is_untouched(sites: PersonalPool) -> None:
    for node in sites.plan.nodes:
        pool = sites.nodes[node.name]
        assert pool.master_pid is not None
        assert os.stat(f"/proc/{pool.master_pid}/ns/net").st_ino == os.stat(pool.netns_path).st_ino
        assert pool.run(["hostname"], pivoted=True).stdout.strip() == node.hostname
        assert pool.config_val("ENABLE_KERNEL_TUNING").lower() == "false"
        assert host_sysctls() == pool.host_sysctls_at_start
    assert host_links() == sites.host_links_before  # type: ignore[attr-defined]
    slots = sites.submit.status('MyType == "Machine"', ["Machine", "HasLark", "LarkSite"])
    assert sorted(s["Machine"] for s in slots) == ["site1.lark.test", "site2.lark.test", "site3.lark.test"]
    assert all(s.get("HasLark") is True for s in slots), slots
    status = sites.status()
    assert all(ping.get("ok") for ping in status["brokers"].values()), status["brokers"]


def _download_mbit(sites: PersonalPool, node: str, server: str) -> float:
    """iperf3 from the node's namespace, the server sending (-R): the rate the node's site link allows."""
    router = f"/run/netns/{sites.plan.router_netns(sites.plan.sites[0])}"
    port = 5201
    proc = subprocess.Popen(in_ns(router, ["iperf3", "-s", "-1", "-B", server, "-p", str(port)]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(router, port)
        done = subprocess.run(in_ns(sites.nodes[node].netns_path, ["iperf3", "-J", "-R", "-t", "2", "-c", server,
                                                                   "-p", str(port)]),
                              capture_output=True, text=True, timeout=60, check=False)
        return received_mbit(iperf3_json(done.stdout, done.stderr))
    finally:
        proc.kill()
        proc.wait()


def test_site_links_have_their_own_capacities(sites: PersonalPool) -> None:
    server = sites.plan.sites[0].data_address  # site1's side of the WAN is the fast one
    thin = _download_mbit(sites, "site3", server)
    middle = _download_mbit(sites, "site2", server)
    assert sites.plan.sites[2].mbit == 10 and sites.plan.sites[1].mbit == 100
    assert 3 < thin <= 10 * 1.05, thin
    assert 3 * thin < middle <= 100 * 1.05, (thin, middle)


@pytest.mark.parametrize(("job_site", "server_site", "traffic_class"),
                         [(3, 1, "Offcampus"), (1, 1, "Campus")], ids=["cross-site", "same-site"])
def test_a_download_is_accounted_to_its_class_and_equals_the_wire(
        sites: PersonalPool, data_servers: dict[int, DataServer], job_site: int, server_site: int,
        traffic_class: str) -> None:
    server = data_servers[server_site]
    payload = 2_000_000
    job_node = sites.plan.node(f"site{job_site}")
    # the packets that reached the job's site: counted where they enter its LAN, past the WAN's shaping
    # (a packet the shaper dropped and TCP sent again is on the server's wire twice, in the job once)
    if job_site == server_site:
        netns, hook = sites.plan.router_netns(sites.plan.sites[server_site - 1]), "output"
    else:
        netns, hook = sites.plan.router_netns(sites.plan.sites[job_site - 1]), "forward"
    match = f"ip saddr {server.address} tcp sport {server.port} ip daddr {job_node.address}"
    with wire_count(f"/run/netns/{netns}", f"{sites.plan.prefix}-wire".replace("-", "_"), match, hook) as wire:
        cluster = sites.submit.submit(
            f"executable = get.py\narguments = {server.url}/bytes/{payload}\noutput = out\nerror = err\nlog = log\n"
            f"should_transfer_files = YES\nrequirements = Machine == \"{job_node.hostname}\"\nqueue\n",
            files={"get.py": GET})
        (ad,) = sites.submit.wait(cluster, timeout=120)
        seen = wire()
    assert sites.submit.host_path(f"{ad['Iwd']}/out").read_text().strip() == str(payload)
    other = "Campus" if traffic_class == "Offcampus" else "Offcampus"
    (hist,) = sites.submit.history(cluster, ["LarkBytesIn", f"LarkBytesIn{traffic_class}", f"LarkBytesIn{other}",
                                             "LarkNetworkType", "ExitCode"])
    assert hist["ExitCode"] == 0 and hist["LarkNetworkType"] == "nat"
    assert payload < hist["LarkBytesIn"]
    assert same_bytes(hist["LarkBytesIn"], seen), (hist, seen)
    assert hist[f"LarkBytesIn{traffic_class}"] == hist["LarkBytesIn"]
    assert hist[f"LarkBytesIn{other}"] == 0


# ------------------------------------------------------------------ network-aware matchmaking between the sites

BIG_INPUT = 2 * 10**9  # > LARK_SMALL_INPUT_BYTES; 600 s carry it at 27 Mbit/s: site2 can, site3 (10) cannot


@pytest.fixture(scope="module")
def matchmaking(sites: PersonalPool) -> Iterator[dict[int, float]]:
    """As ``lark pool demo`` does it: the links from site1 measured with iperf3 into the pool's perfSONAR
    archive (in the WAN), crawled by lark-spider from the central manager and advertised there, and the
    package's matchmaking drop-in on every execute node; yields the measured rates (Mbit/s) by site."""
    archive = MeasurementArchive(f"/run/netns/{sites.plan.wan_netns}", sites.plan.node("cm").gateway)
    try:
        measured = measure_links(sites, archive)
        names, spider_log = crawl_and_publish(sites, archive)  # lark-spider --once on the central manager
        assert names == [f"SITE1->SITE{i}/IPv4" for i in sorted(measured)], spider_log
    finally:
        archive.close()
    enable_links_cron(sites)
    yield measured


def test_a_big_input_job_lands_only_where_the_measured_link_carries_it(
        sites: PersonalPool, matchmaking: dict[int, float]) -> None:
    links = sites.submit.status('MyType == "LarkNetworkLink"', ["LarkSourceSite", "LarkDestinationSite"])
    assert {(ad["LarkSourceSite"], ad["LarkDestinationSite"]) for ad in links} >= {("SITE1", "SITE2"),
                                                                                   ("SITE1", "SITE3")}

    slots = wait_for_limits(sites, "SITE1", list(matchmaking))
    assert slots["site3.lark.test"] < BIG_INPUT < slots["site2.lark.test"], (slots, matchmaking)

    source = '+LarkSourceSite = "SITE1"\n'
    big = sites.submit.submit(f"executable = /bin/true\nlog = log\nshould_transfer_files = YES\n{source}"
                              f"+LarkInputBytes = {BIG_INPUT}\nqueue 6\n")
    pinned = sites.submit.submit(f"executable = /bin/true\nlog = log\nshould_transfer_files = YES\n{source}"
                                 f"+LarkInputBytes = {BIG_INPUT}\nrequirements = Machine == \"site3.lark.test\"\n"
                                 "queue\n")
    small = sites.submit.submit(f"executable = /bin/true\nlog = log\nshould_transfer_files = YES\n{source}"
                                "+LarkInputBytes = 1000\nrequirements = Machine == \"site3.lark.test\"\nqueue\n")
    try:
        ran = sites.submit.wait(big, timeout=180)
        hosts = {ad["LastRemoteHost"].split("@")[-1] for ad in ran}
        assert hosts and "site3.lark.test" not in hosts, hosts
        sites.submit.wait(small, timeout=120)  # the thin site runs jobs whose input it can carry
        [ad] = sites.submit.q(f"ClusterId == {pinned}", ["JobStatus"])
        assert ad["JobStatus"] == 1, ad  # idle: no slot of site3 takes it
        analysis = sites.submit.run(["condor_q", "-better-analyze", str(pinned)], check=False).stdout
        assert "LarkMaxInputBytes_SITE1" in analysis, analysis
    finally:
        sites.submit.run(["condor_rm", str(big), str(pinned), str(small)], check=False)


GET_TWICE = """#!/usr/bin/python3
# Downloads a URL, waits, downloads it again; prints the bytes of body it got.
import sys, time, urllib.request
def get(url):
    n = 0
    with urllib.request.urlopen(url, timeout=60) as response:
        while chunk := response.read(65536):
            n += len(chunk)
    return n
n = get(sys.argv[1])
time.sleep(float(sys.argv[2]))
print(n + get(sys.argv[1]))
"""


def test_a_broker_restart_on_one_site_disturbs_nothing_on_the_others(
        sites: PersonalPool, data_servers: dict[int, DataServer]) -> None:
    server, half = data_servers[1], 1_000_000
    job_node, site1 = sites.plan.node("site3"), sites.nodes["site1"]
    router3 = f"/run/netns/{sites.plan.router_netns(sites.plan.sites[2])}"
    match = f"ip saddr {server.address} tcp sport {server.port} ip daddr {job_node.address}"
    served_before = len(server.served)
    with wire_count(router3, f"{sites.plan.prefix}-wire2".replace("-", "_"), match, "forward") as wire:
        cluster = sites.submit.submit(
            f"executable = get.py\narguments = \"{server.url}/bytes/{half} 15\"\noutput = out\nerror = err\n"
            f"log = log\nshould_transfer_files = YES\nrequirements = Machine == \"{job_node.hostname}\"\nqueue\n",
            files={"get.py": GET_TWICE})
        sites.submit.wait_status(cluster, RUNNING, timeout=120)
        wait_until("the job's first download", lambda: len(server.served) > served_before, 60, 0.1)
        site1.run(["condor_off", "-daemon", "LARK_NETD"])
        wait_until("site1's broker to stop", lambda: not broker_ping(site1).get("ok"), 30, 0.1)
        site1.run(["condor_on", "-daemon", "LARK_NETD"])
        wait_until("site1's broker to answer again", lambda: broker_ping(site1).get("ok"), 60, 0.2)
        [running] = sites.submit.q(f"ClusterId == {cluster}", ["JobStatus"])
        assert running["JobStatus"] == RUNNING  # the restart happened while the job ran at site3
        (ad,) = sites.submit.wait(cluster, timeout=120)
        seen = wire()
    assert sites.submit.host_path(f"{ad['Iwd']}/out").read_text().strip() == str(2 * half)
    (hist,) = sites.submit.history(cluster, ["LarkBytesIn", "LarkBytesInOffcampus", "ExitCode"])
    assert hist["ExitCode"] == 0 and same_bytes(hist["LarkBytesIn"], seen), (hist, seen)
    assert hist["LarkBytesInOffcampus"] == hist["LarkBytesIn"]
    # and site1 itself runs Lark jobs again
    cluster = sites.submit.submit(
        f"executable = get.py\narguments = {server.url}/bytes/{half}\noutput = out\nerror = err\nlog = log\n"
        "should_transfer_files = YES\nrequirements = Machine == \"site1.lark.test\"\nqueue\n", files={"get.py": GET})
    sites.submit.wait(cluster, timeout=120)
    (hist,) = sites.submit.history(cluster, ["LarkBytesIn", "LarkBytesInCampus", "LarkNetworkType"])
    assert hist["LarkNetworkType"] == "nat" and half < hist["LarkBytesInCampus"] == hist["LarkBytesIn"], hist
