"""Network-aware matchmaking in a personal pool: measured links -> archive -> lark-spider -> links cron.

:func:`measure_links` runs iperf3 from one site's data server to every other site's execute node over
the shaped WAN and records each result in a :class:`~lark.pool.archive.MeasurementArchive` (in the WAN's
namespace, where the central manager reaches it); :func:`crawl_and_publish` runs ``lark-spider --once``
on the central manager, which crawls that archive and advertises the link ads to its collector;
:func:`enable_links_cron` installs the package's matchmaking drop-in on every execute node, whose links
cron turns the ads into the slots' ``LarkMaxInputBytes_<SITE>`` limits.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from lark.pool.sites import DOMAIN, Plan
from lark.pool.util import HOST_PATH, PoolError, wait_until

if TYPE_CHECKING:
    from lark.pool.archive import MeasurementArchive
    from lark.pool.personal import PersonalPool

IPERF_PORT = 5201
MATCHMAKING_DROP_IN = "/opt/lark/share/lark/condor_config.d/70-lark-matchmaking.conf"
#: the pool's own breaker settings: the links cron every 2 s, and 600 s to carry a job's input
POOL_MATCHMAKING_CONFIG = "STARTD_CRON_LARKLINKS_PERIOD = 2s\nLARK_MAX_TRANSFER_SECONDS = 600\n"


def ps_host(index: int) -> str:
    """The perfSONAR host name of site ``index`` (measured from its data server or to its execute node)."""
    return f"ps.site{index}.{DOMAIN}"


def measure_mbit(pool: PersonalPool, server_site: int, node: str, seconds: int = 2) -> float:
    """iperf3 from ``node``'s namespace, ``server_site``'s data server sending: that link's rate, Mbit/s."""
    import json

    router = f"/run/netns/{pool.plan.router_netns(pool.plan.sites[server_site - 1])}"
    address = pool.plan.sites[server_site - 1].data_address
    server = subprocess.Popen(["nsenter", f"--net={router}", "iperf3", "-s", "-B", address, "-p", str(IPERF_PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PATH": HOST_PATH})
    errors: list[str] = []
    try:
        def client() -> float | None:
            """The received rate, or None to try again (the server not listening yet, or busy)."""
            done = subprocess.run(["nsenter", f"--net={pool.nodes[node].netns_path}", "iperf3", "-J", "-R", "-t",
                                   str(seconds), "-c", address, "-p", str(IPERF_PORT)], capture_output=True,
                                  text=True, timeout=60, check=False, env={"PATH": HOST_PATH})
            try:
                report = json.loads(done.stdout)
                return float(report["end"]["sum_received"]["bits_per_second"]) / 1e6
            except (ValueError, KeyError, TypeError):
                errors.append(done.stdout[-300:] + done.stderr[-300:])
                return None

        return wait_until(f"iperf3 from {node} to {address}", client, 30, 0.3)
    except TimeoutError as exc:
        raise PoolError(f"iperf3 measurement to {node} failed: {exc}; last: {errors[-1:]}") from None
    finally:
        server.kill()
        server.wait()


def measure_links(pool: PersonalPool, archive: MeasurementArchive, source: int = 1) -> dict[int, float]:
    """Every other site's link from site ``source``, measured and recorded; Mbit/s by site index."""
    src = pool.plan.sites[source - 1]
    measured = {}
    for site in pool.plan.sites:
        if site.index == source:
            continue
        mbit = measure_mbit(pool, source, f"site{site.index}")
        archive.add(ps_host(src.index), src.data_address, ps_host(site.index), site.execute_address, mbit * 1e6)
        measured[site.index] = mbit
    return measured


def spider_config(plan: Plan, archive: MeasurementArchive, token_dir: str, collector: str,
                  state_dir: Path) -> dict[str, object]:
    """lark-spider's configuration for the pool (pure): the archive's publisher, the sites by host name."""
    return {
        "spider": {"state_file": str(state_dir / "spider-state.json"), "concurrency": 2, "interval": 60},
        "http": {"timeout": 5.0, "retries": 1, "backoff": 0.0},
        "discovery": {"publishers": [archive.publisher]},
        "sites": {"rules": [{"site": s.name, "hosts": [ps_host(s.index)]} for s in plan.sites],
                  "hosts": {ps_host(s.index): [s.data_address, s.execute_address] for s in plan.sites},
                  "resolve_dns": False},
        "collector": {"address": collector, "token_dir": token_dir, "ad_lifetime": 3600},
    }


SPIDER_CONFIG = "/etc/lark/spider.yaml"
SPIDER_STATE = "/var/lib/lark-spider"


def crawl_and_publish(pool: PersonalPool, archive: MeasurementArchive) -> tuple[list[str], str]:
    """``lark-spider --once`` on the central manager: it crawls the archive (in the WAN) and advertises
    the link ads to its collector with an IDTOKEN of ``lark@lark.test``. Returns the names of the link
    ads in the collector and the spider's log."""
    import yaml

    token_dir = pool.cm.chroot_path(pool.cm.token_dir())
    config = spider_config(pool.plan, archive, token_dir, pool.cm.collector_address, Path(SPIDER_STATE))
    pool.cm.write(SPIDER_CONFIG, yaml.safe_dump(config, sort_keys=False), owner="root")
    pool.cm.run(["mkdir", "-p", SPIDER_STATE])
    done = pool.cm.run(["lark-spider", "--once", "-c", SPIDER_CONFIG, "--log", "-"], check=False, timeout=120)
    if done.returncode != 0:
        raise PoolError(f"lark-spider --once failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    names = pool.cm.run(["condor_status", "-any", "-constraint", 'MyType == "LarkNetworkLink"', "-af",
                         "Name"]).stdout.split()
    return sorted(names), done.stderr.strip()


def enable_links_cron(pool: PersonalPool) -> None:
    """The package's matchmaking drop-in and the pool's breaker settings on every execute node."""
    for _, node in pool.execute_nodes():
        node.run(["cp", MATCHMAKING_DROP_IN, "/etc/condor/config.d/"])
        node.add_config("75-lark-pool-matchmaking.conf", POOL_MATCHMAKING_CONFIG)
        node.reconfig()


def slot_limits(pool: PersonalPool, source: str) -> dict[str, int]:
    """``LarkMaxInputBytes_<source>`` of every slot that has it, by machine."""
    attr = f"LarkMaxInputBytes_{source}"
    slots = pool.submit.status('MyType == "Machine"', ["Machine", attr])
    return {s["Machine"]: s[attr] for s in slots if isinstance(s.get(attr), int)}


def wait_for_limits(pool: PersonalPool, source: str, sites: list[int], timeout: float = 60) -> dict[str, int]:
    """Until the slots of ``sites`` show their limit for data from ``source``; returns every limit."""
    wanted = {f"site{i}.{DOMAIN}" for i in sites}
    try:
        return wait_until(f"the links cron to publish {source}'s limits", lambda: (
            limits if wanted <= set(limits := slot_limits(pool, source)) else None), timeout, 0.5)
    except TimeoutError as exc:
        raise PoolError(str(exc)) from None
