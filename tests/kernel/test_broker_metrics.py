"""lark-netd's Prometheus metrics, scraped over HTTP from a real broker while a real job sends data.

The broker runs in a sandbox namespace with ``LARK_METRICS_ADDRESS``; a fake starter's child gets
a NAT network from it; the test sends datagrams from inside that child's namespace and scrapes the
endpoint with an HTTP client, parsing the answer with prometheus-client's own text parser.
"""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from lark import netns
from tests.kernel.brokerkit import BrokerLab
from tests.support import wait_until

PORT = 9810
DATAGRAMS, PAYLOAD = 200, 1000
# each datagram on the wire: payload + UDP header (8) + IPv4 header (20)
WIRE_BYTES = DATAGRAMS * (PAYLOAD + 28)


def scrape(lab: BrokerLab) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, keyed by (sample name, sorted labels)."""
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as reply:
            return reply.read().decode()

    text = netns.call_in(lab.host_ns, get)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def job_out(samples: dict, job: str) -> float | None:
    for (name, labels), value in samples.items():
        if name == "lark_job_bytes_total" and ("job", job) in labels and ("direction", "out") in labels:
            return value
    return None


def test_a_running_jobs_bytes_are_scraped_and_end_as_its_users_total(lab: BrokerLab) -> None:
    lab.start_broker(LARK_METRICS_ADDRESS=f"127.0.0.1:{PORT}", LARK_ACCOUNTING_INTERVAL="1")
    starter = lab.fake_starter()
    lab.write_job_ad(starter.pid, cluster=7)
    wrapper = starter.spawn(uid=lab.uid, gid=lab.gid, newnet=True)
    setup = starter.ask(wrapper, "setup", timeout=20)
    assert setup.get("ok") is True, setup
    gateway = setup["env"]["LARK_HOST_IPV4_ADDRESS"]

    def send() -> None:  # from inside the job's namespace, through its interface
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(DATAGRAMS):
                s.sendto(b"x" * PAYLOAD, (gateway, 9))

    netns.call_in(f"/proc/{wrapper}/ns/net", send)
    def running_out() -> int | None:
        out = job_out(scrape(lab), "7.0")
        return out if out is not None and out >= WIRE_BYTES else None

    running = wait_until(f"the running job's bytes out in the metrics to reach {WIRE_BYTES}", running_out, 15, 0.3)

    final = starter.ask(wrapper, "finalize", timeout=20)
    assert final.get("ok") is True, final
    final_out = final["accounting"]["LarkBytesOut"]
    assert final_out >= running  # counters only grow
    after = scrape(lab)
    assert job_out(after, "7.0") is None, "an ended job's series must be dropped"
    # the job ran as the lab's job user: its total is the job's final figure
    assert after[("lark_user_bytes_total", (("direction", "out"), ("user", lab.user)))] == final_out
    assert after[("lark_job_setups_total", (("mode", "nat"),))] == 1
    assert sum(v for (name, _), v in after.items() if name == "lark_job_setup_seconds_count") == 1
