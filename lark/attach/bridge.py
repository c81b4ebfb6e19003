"""``bridge``: a veth whose host end is enslaved to an existing Linux bridge (``LARK_BRIDGE``).

The job gets an address from the bridged LAN's pool (``LARK_BRIDGE_IPV4_POOL`` /
``LARK_BRIDGE_IPV6_POOL``), or from the site's DHCP server and router advertisements
(``LARK_BRIDGE_ADDRESSING``, see :mod:`lark.addressing`), and is addressable on the site network
like any host on it. Lark does
not create the bridge: it belongs to the node's network configuration. Counting and policy sit
inside the job's namespace: bridged traffic reaches the host's inet hooks with the *bridge* as
interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lark.attach.base import (
    AddressWait,
    AttachContext,
    Mode,
    SitePools,
    allocate_site_addresses,
    check_job_side,
    configure_site_interface,
)
from lark.errors import KernelError
from lark.netlink import add_veth_into, delete_link, link_index, set_up

if TYPE_CHECKING:
    from lark.state import JobRecord


def up(ctx: AttachContext, record: JobRecord) -> AddressWait | None:
    assert record.host_ifname and record.job_ifname and ctx.job_netns_fd is not None and record.parent
    bridge = link_index(ctx.host, record.parent)
    if bridge is None:
        raise KernelError(f"bridge {record.parent!r} (LARK_BRIDGE) does not exist on this host")
    kind = ctx.host.get_links(bridge)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    if kind != "bridge":
        raise KernelError(f"LARK_BRIDGE {record.parent!r} is a {kind or 'plain'} interface, not a bridge")
    index = add_veth_into(ctx.host, record.host_ifname, record.job_ifname, ctx.job_netns_fd)
    set_up(ctx.host, index, record.host_ifname, master=bridge)
    return configure_site_interface(ctx, record)


def down(ctx: AttachContext, record: JobRecord) -> None:
    if record.host_ifname:
        delete_link(ctx.host, record.host_ifname)


def check(ctx: AttachContext, record: JobRecord) -> list[str]:
    problems = []
    index = link_index(ctx.host, record.host_ifname or "")
    if index is None:
        problems.append(f"host interface {record.host_ifname} is missing")
    else:
        master = ctx.host.get_links(index)[0].get("IFLA_MASTER")
        bridge = link_index(ctx.host, record.parent or "")
        if master != bridge:
            problems.append(f"host interface {record.host_ifname} is not enslaved to {record.parent}")
    return problems + check_job_side(ctx, record)


MODE = Mode(
    name="bridge", rank=20,
    summary="veth pair whose host end joins the existing bridge LARK_BRIDGE; site addresses",
    allocate=allocate_site_addresses, up=up, down=down, check=check, host_interface=True,
    site=SitePools.for_mode("bridge", "LARK_BRIDGE", "bridge",
                            "Name of an existing Linux bridge that bridge-mode jobs join.", dynamic=True,
                            parent_hint="the bridge jobs join, e.g. br-data"),
    kernel_features=("veth", "bridge", "tbf"),
)
