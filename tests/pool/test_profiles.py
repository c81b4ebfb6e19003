"""Network profiles on the real pool: a callback profile's port range reaches the job's environment,
the node advertises its profiles, and a user outside a profile's allowed list is held with a reason."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pool.harness import JobHeld
from tests.pool.larkpool import LarkPool
from tests.support import wait_until

pytestmark = pytest.mark.pool

PROFILES = """\
profiles:
  callback:
    description: NAT with 4 forwarded ports for movers that call back
    attach: nat
    inbound_ports: 4
    port_range_env:
      GLOBUS_TCP_PORT_RANGE: "{first},{last}"
    environment:
      MOVER_MODE: callback
  staff-only:
    attach: nat
    users: [someone-else]
"""


@pytest.fixture(scope="module")
def profile_pool(lark_pool: LarkPool) -> Iterator[LarkPool]:
    pool = lark_pool.pool
    pool.write("/etc/condor/profiles.d/test.yaml", PROFILES, owner="root")
    pool.add_config("76-lark-profiles-test.conf", "STARTD_CRON_LARKPROFILES_PERIOD = 2s\n")
    pool.reconfig()
    try:
        yield lark_pool
    finally:
        pool.remove_config("76-lark-profiles-test.conf")
        (pool.root / "etc/condor/profiles.d/test.yaml").unlink(missing_ok=True)
        pool.reconfig()


def test_node_advertises_its_profiles(profile_pool: LarkPool) -> None:
    def advertised() -> bool:
        slots = profile_pool.pool.status('MyType == "Machine"', ["LarkProfiles"])
        return bool(slots) and all(s.get("LarkProfiles") == "callback,staff-only" for s in slots)

    wait_until('every slot to advertise LarkProfiles = "callback,staff-only"', advertised, 30, 0.5)


def test_callback_profile_exports_its_port_range(profile_pool: LarkPool) -> None:
    cluster = profile_pool.submit_job("- 0 0 0", extra='+LarkNetworkProfile = "callback"')
    profile_pool.pool.wait(cluster, timeout=120)
    env = profile_pool.output(cluster)["env"]
    first, last = (int(p) for p in env["LARK_PORT_RANGE"].split("-"))
    assert last - first == 3
    assert env["GLOBUS_TCP_PORT_RANGE"] == f"{first},{last}"
    assert env["LARK_PUBLIC_ADDRESS"] == "203.0.113.1"
    assert env["LARK_NETWORK_PROFILE"] == "callback"
    assert env["MOVER_MODE"] == "callback"
    ad = profile_pool.pool.history(cluster, ["LarkPortRange"])[0]
    assert ad["LarkPortRange"] == env["LARK_PORT_RANGE"]


def test_user_outside_the_allowed_list_is_held(profile_pool: LarkPool) -> None:
    cluster = profile_pool.submit_job("- 0 0 0", extra='+LarkNetworkProfile = "staff-only"')
    with pytest.raises(JobHeld) as info:
        profile_pool.pool.wait(cluster, timeout=120)
    reason = info.value.ads[0]["HoldReason"]
    assert "staff-only" in reason and "larkuser" in reason, reason
    profile_pool.pool.run(["condor_rm", str(cluster)])
