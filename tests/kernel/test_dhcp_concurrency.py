"""A job waiting for its DHCP lease holds up no other job: the wait runs off the engine's kernel thread.

The site segment and its real dnsmasq are those of test_dhcp.py; here dnsmasq hears the waiting
job's client and ignores it (``--dhcp-ignore=tag:!known``, no client is known), as a server that
has no lease for it would. While that job's ``up`` is blocked in its wait, a static nat job and a
static bridge job are set up and torn down on the same engine (one kernel thread for all three).
Nothing here compares times: the proof is the order of events (the waiting ``up`` has not returned
when the other two are done).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

import lark.engine
from lark.attach.base import AddressingTimeout
from lark.engine import Engine
from lark.errors import NotFound
from lark.policy import JobRequest
from lark.state import JobRecord
from lark.values import SiteAttachment, parse_pool
from tests.kernel.test_dhcp import Site, in_net, udhcpc_pids
from tests.kernel.test_dhcp import site as site  # noqa: F401 - the fixture: segment, dnsmasq, engines
from tests.support import wait_until

pytestmark = pytest.mark.kernel
IGNORE_EVERYONE = ("--dhcp-ignore=tag:!known",)
STATIC_POOL = "10.77.0.0/24 10.77.0.100-10.77.0.109"


@pytest.fixture
def steps() -> Iterator[dict[str, threading.Event]]:
    """One event per step of ``Engine.up`` reached (any job): "waiting" = a client asks, its ``up`` waits."""
    seen: dict[str, threading.Event] = {name: threading.Event() for name in ("waiting", "addressed")}
    lark.engine.STEP_HOOK = lambda name: seen[name].set() if name in seen else None
    try:
        yield seen
    finally:
        lark.engine.STEP_HOOK = None


def dhcp_site(site: Site, fallback_pool: bool = False) -> SiteAttachment:
    """A network profile's site: the segment's bridge, addresses from its DHCP server."""
    return SiteAttachment(parent=f"{site.prefix}br", ipv4=parse_pool(STATIC_POOL, 4) if fallback_pool else None,
                          ipv4_gateway=None, ipv6=None, ipv6_gateway=None, addressing="dhcp")


def start_waiting_job(engine: Engine, pool: ThreadPoolExecutor, site: Site, steps: dict[str, threading.Event],
                      job: str, fallback_pool: bool = False) -> Future[JobRecord]:
    """The DHCP job's ``up`` on a thread of its own (as a broker request worker), once it waits."""
    waiting = pool.submit(engine.up, JobRequest(job, "bridge"), site=dhcp_site(site, fallback_pool),
                          global_job_id=f"submit#{job}#1")
    assert steps["waiting"].wait(60), "the DHCP job never reached its wait"
    # the server hears the client and says nothing: the job's up is in its wait for a lease
    wait_until("dnsmasq ignoring the client", lambda: site.dnsmasq.said("ignored"), 30)
    assert not waiting.done()
    return waiting


def static_jobs_up_and_down(engine: Engine) -> list[str]:
    """A nat and a static bridge job, set up and torn down to completion; what each showed while up."""
    seen = []
    for request in (JobRequest("60.0", "nat"), JobRequest("60.1", "bridge")):
        record = engine.up(request)
        assert record.status == "up" and record.ipv4 is not None
        problems = engine.check()
        assert [p for p in problems if record.token in p] == [], problems
        seen.append(f"{record.mode} {record.ipv4}")
        engine.down(record.token)
        assert engine.store.load(record.token) is None
    return seen


@pytest.mark.parametrize("fallback", ["hold", "static"])
def test_static_jobs_are_set_up_and_torn_down_while_a_dhcp_job_waits(site: Site, steps: dict[str, threading.Event],
                                                                   fallback: str) -> None:
    site.dnsmasq.start(extra=IGNORE_EVERYONE)
    engine = site.make_engine(LARK_NETWORK_TYPES="nat, bridge", LARK_BRIDGE_ADDRESSING="static",
                              LARK_BRIDGE_IPV4_POOL=STATIC_POOL, LARK_ADDRESSING_TIMEOUT="10",
                              LARK_ADDRESSING_FALLBACK=fallback)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="request") as pool:
        waiting = start_waiting_job(engine, pool, site, steps, "61.0", fallback_pool=fallback == "static")
        [dhcp_job] = [r for r in engine.records() if r.status == "setting-up"]
        done = static_jobs_up_and_down(engine)
        # the order that matters: both static jobs came and went while the DHCP job still waited
        assert not waiting.done() and not steps["addressed"].is_set(), done
        assert [r.token for r in engine.records()] == [dhcp_job.token]
        assert udhcpc_pids(site.state_dir) != []  # its client still asking
        if fallback == "hold":
            with pytest.raises(AddressingTimeout, match="no DHCPv4 lease .* LARK_ADDRESSING_FALLBACK = hold"):
                waiting.result(timeout=120)
        else:
            record = waiting.result(timeout=120)
            assert record.status == "up" and in_net(record.ipv4, "10.77.0.96/28")
            assert record.dhcp_client_id is None and record.lease_expires is None
            assert set(record.firewall_spec["addresses"]) == {record.ipv4_address}  # type: ignore[arg-type]
            engine.down(record.token)
    assert site.lark_objects(engine) == []
    assert engine.firewall.job_tokens() == set()


def test_a_teardown_during_the_wait_ends_it_and_leaves_nothing(site: Site, steps: dict[str, threading.Event]) -> None:
    """``down`` (the broker when the wrapper dies, ``lark down``) is not queued behind the wait, and
    the waiting ``up`` stops at once instead of at its deadline, failing with the reason."""
    site.dnsmasq.start(extra=IGNORE_EVERYONE)
    engine = site.make_engine(LARK_BRIDGE_ADDRESSING="dhcp", LARK_ADDRESSING_TIMEOUT="600")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="request") as pool:
        waiting = start_waiting_job(engine, pool, site, steps, "62.0")
        assert engine.down("62.0") is True
        with pytest.raises(NotFound, match="removed while it waited for its addresses"):
            waiting.result(timeout=120)  # long before the 600 s deadline: the wait saw the teardown
    assert site.lark_objects(engine) == []
    assert engine.firewall.job_tokens() == set()
