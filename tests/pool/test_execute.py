"""Lark on a real HTCondor execute node: jobs get their own accounted networks."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.pool.harness import RUNNING, JobHeld
from tests.pool.larkpool import METRICS_PORT, OFFCAMPUS_ADDR, WAN_ADDR, LarkPool
from tests.support import same_bytes, wait_until

pytestmark = pytest.mark.pool


def history_attr(lp: LarkPool, cluster: int, *names: str) -> dict[str, object]:
    return lp.pool.history(cluster, names)[0]


# ------------------------------------------------------------------ accounting end to end


@pytest.mark.parametrize("transfer", [False, True], ids=["vanilla", "file-transfer"])
def test_job_has_its_own_network_and_its_bytes_reach_history(lark_pool: LarkPool, transfer: bool) -> None:
    sink = lark_pool.sink(OFFCAMPUS_ADDR)
    payload = 2_000_000
    cluster = lark_pool.submit_job(f"{OFFCAMPUS_ADDR} {sink.port} {payload} 0", transfer=transfer)
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    pool_ns = f"net:[{os.stat(lark_pool.pool.netns_path).st_ino}]"
    assert out["netns"] != pool_ns
    assert out.get("reply") == "ok", out
    assert out["ifaces"] == ["lark0", "lo"]
    assert out["env"]["LARK_NETWORK_TYPE"] == "nat"
    assert sink.received == [("203.0.113.1", payload)]  # masqueraded behind the execute host
    ad = history_attr(lark_pool, cluster, "LarkBytesIn", "LarkBytesOut", "LarkBytesOutOffcampus",
                      "LarkBytesOutCampus", "LarkNetworkType", "LarkIPv4Address", "ExitCode",
                      "NetworkInputMb", "NetworkOutputMb")
    assert ad["ExitCode"] == 0
    assert ad["LarkNetworkType"] == "nat"
    [wire] = sink.wire_bytes().values()  # what really crossed: headers and any retransmissions
    assert payload <= ad["LarkBytesOut"]
    assert same_bytes(ad["LarkBytesOut"], wire), (ad, wire)
    assert ad["LarkBytesOutOffcampus"] == ad["LarkBytesOut"]
    assert ad["LarkBytesOutCampus"] == 0
    assert 0 < ad["LarkBytesIn"] < 200_000
    # HTCondor's own attributes carry the same figures (MB = 10^6 bytes), for every accounting tool
    assert ad["NetworkInputMb"] == pytest.approx(ad["LarkBytesIn"] / 1e6, rel=1e-9)
    assert ad["NetworkOutputMb"] == pytest.approx(ad["LarkBytesOut"] / 1e6, rel=1e-9)
    assert lark_pool.wait_no_objects() == []


def scrape_metrics(lp: LarkPool) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """lark-netd's metrics as Prometheus reads them: HTTP on the execute host, prometheus-client's parser."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from lark import netns

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10) as reply:
            return reply.read().decode()

    text = netns.call_in(lp.pool.netns_path, get)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_node_metrics_follow_a_running_job_and_match_its_history(lark_pool: LarkPool) -> None:
    """The job's bytes appear in the node's metrics while it runs; when it ends its series go and
    its user's total grows by exactly the job's final LarkBytesOut in condor_history."""
    user_out = ("lark_user_bytes_total", (("direction", "out"), ("user", "larkuser")))
    before = scrape_metrics(lark_pool).get(user_out, 0.0)
    node_before = node_bytes_out(lark_pool)
    sink = lark_pool.sink(OFFCAMPUS_ADDR)
    payload = 1_000_000
    cluster = lark_pool.submit_job(f"{OFFCAMPUS_ADDR} {sink.port} {payload} 8")
    lark_pool.pool.wait_status(cluster, RUNNING, timeout=120)
    job = f"{cluster}.0"

    def running_out() -> float:
        samples = scrape_metrics(lark_pool)
        running = samples.get(("lark_job_bytes_total", (("direction", "out"), ("job", job), ("mode", "nat"),
                                                        ("user", "larkuser"))), 0.0)
        return running if running >= payload else 0.0

    wait_until(f"job {job}'s bytes out in the metrics to reach {payload} while it runs", running_out, 60, 0.5)
    lark_pool.pool.wait(cluster, timeout=120)
    final = history_attr(lark_pool, cluster, "LarkBytesOut")["LarkBytesOut"]
    after = scrape_metrics(lark_pool)
    assert not [k for k in after if ("job", job) in k[1]], "an ended job's series must be dropped"
    assert after[user_out] - before == final
    assert after[("lark_job_setups_total", (("mode", "nat"),))] >= 1
    # the node's totals reach its machine ad (the LARKNODE startd cron), HTCondor's own way
    wait_until(f"LarkNodeBytesOut to grow by {final} from {node_before}",
               lambda: node_bytes_out(lark_pool) - node_before >= final, 60, 1)


def node_bytes_out(lp: LarkPool) -> int:
    ads = lp.pool.status('MyType == "Machine"', ["LarkNodeBytesOut"])
    return max((int(ad["LarkNodeBytesOut"]) for ad in ads if isinstance(ad.get("LarkNodeBytesOut"), int)), default=0)


def test_none_type_has_only_loopback(lark_pool: LarkPool) -> None:
    cluster = lark_pool.submit_job(f"{WAN_ADDR} 9 10 0", extra='+LarkNetworkType = "none"')
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    assert out["ifaces"] == ["lo"]
    assert "error" in out
    ad = lark_pool.pool.history(cluster, ["LarkNetworkType", "LarkBytesIn", "LarkBytesOut", "NetworkInputMb",
                                          "NetworkOutputMb"])[0]
    assert ad["LarkNetworkType"] == "none"
    # no network, no bytes: explicit zeros, so sums and accounting tools need no special case
    assert (ad["LarkBytesIn"], ad["LarkBytesOut"], ad["NetworkInputMb"], ad["NetworkOutputMb"]) == (0, 0, 0, 0)


def test_bridge_type_is_on_the_site_lan(lark_pool: LarkPool) -> None:
    sink = lark_pool.pool_sink("198.51.100.1")
    cluster = lark_pool.submit_job(f"198.51.100.1 {sink.port} 100000 0", extra='+LarkNetworkType = "bridge"')
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    assert out.get("reply") == "ok", out
    address = out["env"]["LARK_IPV4_ADDRESS"]
    assert address.startswith("198.51.100.")
    assert sink.received == [(address, 100000)]
    ad = history_attr(lark_pool, cluster, "LarkBytesOut", "LarkIPv4Address")
    assert ad["LarkIPv4Address"] == address
    [wire] = sink.wire_bytes().values()
    assert 100000 <= ad["LarkBytesOut"]
    assert same_bytes(ad["LarkBytesOut"], wire), (ad, wire)


def test_bandwidth_limited_job_stays_under_its_cap(lark_pool: LarkPool) -> None:
    sink = lark_pool.sink()
    cap = 20
    cluster = lark_pool.submit_job(f"{WAN_ADDR} {sink.port} 5000000 0", extra=f"+LarkBandwidthMbit = {cap}")
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    assert out.get("reply") == "ok", out
    mbit = 5_000_000 * 8 / float(out["seconds"]) / 1e6
    assert 0 < mbit <= cap * 1.15, mbit  # generous: the overshoot figure is the benchmark's


# ------------------------------------------------------------------ bad requests


def test_invalid_attribute_is_held_by_the_prepare_hook(lark_pool: LarkPool) -> None:
    cluster = lark_pool.submit_job(f"{WAN_ADDR} 9 10 0", extra='+LarkNetworkType = "wifi"')
    with pytest.raises(JobHeld) as info:
        lark_pool.pool.wait(cluster, timeout=120)
    reason = info.value.ads[0]["HoldReason"]
    assert "LarkNetworkType" in reason and "unknown network type" in reason, reason
    lark_pool.pool.run(["condor_rm", str(cluster)])
    assert lark_pool.wait_no_objects() == []


def test_setup_failure_in_the_broker_holds_the_job_with_its_reason(lark_pool: LarkPool) -> None:
    # 8 ports pass the hook (LARK_MAX_INBOUND_PORTS = 10) but the node's range has only 4
    cluster = lark_pool.submit_job(f"{WAN_ADDR} 9 10 0", extra="+LarkInboundPorts = 8")
    with pytest.raises(JobHeld) as info:
        lark_pool.pool.wait(cluster, timeout=120)
    ad = info.value.ads[0]
    assert "Lark could not set up the job's network" in ad["HoldReason"], ad
    assert "cannot reserve 8 ports in inbound port range 40000-40003" in ad["HoldReason"], ad
    lark_pool.pool.run(["condor_rm", str(cluster)])
    assert lark_pool.wait_no_objects() == []


# ------------------------------------------------------------------ robustness and isolation


def test_broker_killed_while_jobs_run_then_restarted(lark_pool: LarkPool) -> None:
    sink = lark_pool.sink()
    payload = 300_000
    cluster = lark_pool.submit_job(f"{WAN_ADDR} {sink.port} {payload} 12", count=4)
    lark_pool.pool.wait_status(cluster, RUNNING, timeout=120)
    # every job has its network, has sent its payload and now sleeps
    wait_until("all 4 payloads at the sink", lambda: len(sink.received) >= 4, 60, 0.2)
    os.kill(lark_pool.broker_pid(), signal.SIGKILL)
    ads = lark_pool.pool.wait(cluster, timeout=180)
    assert len(ads) == 4
    assert sorted(b for _, b in sink.received) == [payload] * 4
    ads = lark_pool.pool.history(cluster, ["ProcId", "LarkBytesOut", "ExitCode"])
    assert [ad["ExitCode"] for ad in ads] == [0] * 4
    # each job's final counter equals what its connection put on the wire, though the broker that
    # was keeping it died in between (pairs matched by size: NAT hides which job used which port)
    counted = sorted(ad["LarkBytesOut"] for ad in ads)
    wire = sorted(sink.wire_bytes().values())
    assert len(wire) == 4 and counted[0] >= payload
    assert all(same_bytes(c, w) for c, w in zip(counted, wire, strict=True)), (counted, wire)
    assert lark_pool.broker_pid()  # the master restarted it
    assert lark_pool.wait_no_objects() == []


def test_condor_rm_of_a_running_job_leaves_nothing(lark_pool: LarkPool) -> None:
    cluster = lark_pool.submit_job("- 0 0 300")
    lark_pool.pool.wait_status(cluster, RUNNING, timeout=120)
    # "running" is reported before the wrapper has its network
    wait_until("the running job's network", lark_pool.kernel_objects, 20, 0.2)
    lark_pool.pool.run(["condor_rm", str(cluster)])
    assert lark_pool.wait_no_objects(timeout=10) == []  # within a few sweep intervals (2 s here)


def test_a_job_cannot_change_its_network_and_outsiders_are_refused(lark_pool: LarkPool) -> None:
    cluster = lark_pool.submit_job("- 0 0 0")
    lark_pool.pool.wait(cluster, timeout=120)
    out = lark_pool.output(cluster)
    assert out["ip_link_down"] != 0  # no CAP_NET_ADMIN over its own namespace
    probe = ("import json, socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/lark/netd.sock'); "
             "s.sendall(b'{\"op\": \"setup\"}\\n'); print(s.recv(4096).decode())")
    reply = json.loads(lark_pool.pool.run(["python3", "-c", probe], user="larkuser").stdout)
    assert reply["ok"] is False and "not a job wrapper" in reply["error"]
    garbage = lark_pool.pool.run(["python3", "-c", probe.replace('{\\"op\\": \\"setup\\"}', "garbage")],
                                 user="larkuser").stdout
    assert json.loads(garbage)["ok"] is False
    assert lark_pool.broker_pid()


def test_slots_advertise_what_the_node_offers(lark_pool: LarkPool) -> None:
    slots = lark_pool.pool.status('MyType == "Machine"', ["HasLark", "LarkNetworkTypes", "LarkMaxBandwidthMbit"])
    assert slots and all(s["HasLark"] is True for s in slots)
    assert all(s["LarkNetworkTypes"].replace(" ", "") == "nat,bridge,none" for s in slots)
    assert all(s["LarkMaxBandwidthMbit"] == 1000 for s in slots)
