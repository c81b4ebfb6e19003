"""``ipvlan``: like macvlan, but children share the parent's MAC (for NICs/switches that limit MACs).

Needs the kernel's ipvlan driver; on a kernel without it ``up`` fails with a clear error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lark.attach import macvlan
from lark.attach.base import AddressWait, AttachContext, Mode, SitePools, allocate_site_addresses
from lark.errors import KernelError, UnsupportedFeature

if TYPE_CHECKING:
    from lark.state import JobRecord


def up(ctx: AttachContext, record: JobRecord) -> AddressWait | None:
    try:
        return macvlan.up(ctx, record)
    except KernelError as err:
        if "Operation not supported" in str(err) or "Unknown device type" in str(err):
            raise UnsupportedFeature("this kernel has no ipvlan driver (CONFIG_IPVLAN); use macvlan") from None
        raise


MODE = Mode(
    name="ipvlan", rank=40,
    summary="ipvlan (L2) child of LARK_IPVLAN_PARENT, sharing its MAC; site addresses",
    allocate=allocate_site_addresses, up=up, down=macvlan.down, check=macvlan.check,
    site=SitePools.for_mode("ipvlan", "LARK_IPVLAN_PARENT", "parent interface", "Parent interface of ipvlan jobs."),
    kernel_features=("veth", "ipvlan", "tbf"),
)
