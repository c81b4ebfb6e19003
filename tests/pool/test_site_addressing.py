"""A bridge job addressed by the site network, on the real pool: the site LAN's own DHCP server
(dnsmasq, started here on the pool's bridge) leases the job its IPv4 address and router
advertisements give it an IPv6 address; the lease is renewed while the job runs (dnsmasq's shortest
lease is two minutes, so the client renews after one: the job runs a little longer than that); the
job's bytes reach condor_history; at the end the lease is released and Lark leaves nothing behind.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.pool.larkpool import LarkPool
from tests.support import same_bytes, wait_until
from tests.support.dnsmasq import Dnsmasq

pytestmark = pytest.mark.pool

LEASED = ("198.51.100.100", "198.51.100.120")  # the server's range: outside Lark's static pool (.10-.50)
SITE_V6 = "2001:db8:5::1/64"  # the bridge's own address; the advertised prefix is its /64
PROFILE = """\
profiles:
  sitenet:
    description: the site LAN, addressed by its own DHCP server and router advertisements
    attach: bridge
    parent: br-lark
    addressing: dhcp+slaac
"""


@pytest.fixture(scope="module")
def site_lan(lark_pool: LarkPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    pool = lark_pool.pool
    netns = pool.netns_path
    subprocess.run(["ip", "-n", pool.netns_name, "addr", "add", SITE_V6, "dev", "br-lark", "nodad"], check=True)
    pool.write("/etc/condor/profiles.d/sitenet.yaml", PROFILE, owner="root")
    pool.add_config("76-lark-sitenet-test.conf", "STARTD_CRON_LARKPROFILES_PERIOD = 2s\n")
    pool.reconfig()
    # a startd cron's new period takes effect at its next run, which an earlier module's reconfig may
    # have put 300 s away: the restarted startd runs its crons at once, with the profile in place
    pool.restart_daemon("startd")
    server = Dnsmasq(netns, tmp_path_factory.mktemp("sitenet"), "br-lark", *LEASED)
    server.start()
    try:
        seen: list[object] = []

        def advertised() -> bool:
            slots = pool.status('MyType == "Machine"', ["LarkProfiles"])
            seen[:] = [s.get("LarkProfiles") for s in slots]
            return bool(slots) and all("sitenet" in str(p) for p in seen)

        try:
            wait_until("the slots to advertise the sitenet profile", advertised, 60, 0.5)
        except TimeoutError as err:
            raise AssertionError(f"{err}; the slots advertise LarkProfiles = {seen}") from None
        yield server
    finally:
        server.stop()
        pool.remove_config("76-lark-sitenet-test.conf")
        (pool.root / "etc/condor/profiles.d/sitenet.yaml").unlink(missing_ok=True)
        pool.reconfig()
        subprocess.run(["ip", "-n", pool.netns_name, "addr", "del", SITE_V6, "dev", "br-lark"], capture_output=True)


def test_bridge_job_leased_by_the_site_keeps_its_lease_and_is_accounted(lark_pool: LarkPool,
                                                                         site_lan: Dnsmasq) -> None:
    sink = lark_pool.pool_sink("198.51.100.1")
    # sends 200 kB on the site LAN, then runs past the client's renewal (T1: half the 2-minute lease)
    cluster = lark_pool.submit_job(f"198.51.100.1 {sink.port} 200000 75", extra='+LarkNetworkProfile = "sitenet"')
    lark_pool.pool.wait(cluster, timeout=240)
    out = lark_pool.output(cluster)
    assert out.get("reply") == "ok", out

    # the job's addresses: IPv4 from the server's range, IPv6 from the advertised prefix
    v4 = out["env"]["LARK_IPV4_ADDRESS"]
    assert ipaddress.ip_address(LEASED[0]) <= ipaddress.ip_address(v4) <= ipaddress.ip_address(LEASED[1])
    v6 = ipaddress.ip_address(out["env"]["LARK_IPV6_ADDRESS"])
    assert v6 in ipaddress.ip_interface(SITE_V6).network
    assert sink.received == [(v4, 200000)]

    # the server's own log: the lease granted to that address, renewed while the job ran, released after
    assert site_lan.said(f"DHCPACK(br-lark) {v4}")
    log = site_lan.log.read_text()
    assert log.count(f"DHCPACK(br-lark) {v4}") >= 2, "no renewal of the job's lease reached the server"
    wait_until("the job's lease to be released", lambda: site_lan.said(f"DHCPRELEASE(br-lark) {v4}"), 30)

    # the job's ad in condor_history: the lease facts and its bytes, equal to the wire
    ad = lark_pool.pool.history(cluster, ["LarkAddressing", "LarkIPv4Address", "LarkIPv6Address", "LarkLeaseServer",
                                          "LarkLeaseRenewals", "LarkBytesOut", "NetworkOutputMb"])[0]
    assert ad["LarkAddressing"] == "dhcp+slaac"
    assert ad["LarkIPv4Address"] == v4 and ipaddress.ip_address(ad["LarkIPv6Address"]) == v6
    assert ad["LarkLeaseServer"] == "198.51.100.1"
    assert ad["LarkLeaseRenewals"] >= 1
    [wire] = sink.wire_bytes().values()
    assert 200000 <= ad["LarkBytesOut"] and same_bytes(ad["LarkBytesOut"], wire), (ad, wire)

    # nothing of the job is left on the node: no record, no client, no job interface on the bridge
    def nothing_left() -> bool:
        listed = json.loads(lark_pool.pool.run(["/opt/lark/bin/lark", "list", "--json"]).stdout)
        ports = subprocess.run(["ip", "-n", lark_pool.pool.netns_name, "-o", "link", "show", "master", "br-lark"],
                               capture_output=True, text=True, check=True).stdout
        return listed == [] and f"{lark_pool.prefix}" not in ports

    wait_until("the job's record and bridge port to be gone", nothing_left, 30, 0.5)
    clients = lark_pool.pool.run(["sh", "-c", "ls /var/lib/lark/dhcp/*.pid 2>/dev/null | wc -l"]).stdout.strip()
    assert clients == "0"
