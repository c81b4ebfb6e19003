"""``nat``: a veth pair, host end addressed from Lark's NAT pool, job traffic masqueraded out.

Each job gets its own small subnet (``LARK_NAT_IPV4_SUBNET_LENGTH``, default /30: host end .1, job
.2) and, when ``LARK_NAT_IPV6_POOL`` is set, an IPv6 subnet (default /64 from a ULA /48: host ::1,
job ::2). IPv6 leaves the host through NAT66 by default (``LARK_NAT_IPV6_MASQUERADE``) because a
ULA is not routable; with a routed global prefix set it to False and route the pool to the node.
The host can reach the job (and the job the host) on these addresses directly.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from lark.attach.base import AttachContext, Mode, check_job_side, configure_job_interface
from lark.ipam import SubnetPool
from lark.netlink import add_address, add_veth_into, delete_link, link_index, set_up

if TYPE_CHECKING:
    from lark.nodeconfig import LarkConfig
    from lark.state import JobRecord


def allocate(config: LarkConfig, record: JobRecord) -> None:
    subnet, alloc = SubnetPool(config.state_dir, config.nat_ipv4_pool, config.nat_ipv4_subnet_length).allocate(
        record.token)
    record.allocations.append(alloc)
    hosts = subnet.hosts()
    host, job = next(hosts), next(hosts)
    record.host_ipv4, record.ipv4 = f"{host}/{subnet.prefixlen}", f"{job}/{subnet.prefixlen}"
    if config.nat_ipv6_pool is not None:
        subnet6, alloc6 = SubnetPool(config.state_dir, config.nat_ipv6_pool,
                                     config.nat_ipv6_subnet_length).allocate(record.token)
        record.allocations.append(alloc6)
        base = subnet6.network_address
        record.host_ipv6 = f"{base + 1}/{subnet6.prefixlen}"
        record.ipv6 = f"{base + 2}/{subnet6.prefixlen}"


def up(ctx: AttachContext, record: JobRecord) -> None:
    assert record.host_ifname and record.job_ifname and ctx.job_netns_fd is not None
    index = add_veth_into(ctx.host, record.host_ifname, record.job_ifname, ctx.job_netns_fd)
    for text in (record.host_ipv4, record.host_ipv6):
        if text:
            add_address(ctx.host, index, ipaddress.ip_interface(text), record.host_ifname)
    set_up(ctx.host, index, record.host_ifname)
    # the job's default gateways are the host end's addresses (record.host_ipv4_address)
    configure_job_interface(ctx, record)


def down(ctx: AttachContext, record: JobRecord) -> None:
    # Deleting the namespace removes the veth (async, <1 ms); only a job namespace Lark does not
    # own (an HTCondor job's) needs the synchronous ~40 ms delete of the host end.
    if record.host_ifname:
        delete_link(ctx.host, record.host_ifname)


def check(ctx: AttachContext, record: JobRecord) -> list[str]:
    problems = []
    if record.host_ifname and link_index(ctx.host, record.host_ifname) is None:
        problems.append(f"host interface {record.host_ifname} is missing")
    return problems + check_job_side(ctx, record)


# Counting and policy sit inside the job's namespace here too: for NAT the host's output hook
# names the original route's device (lo) for connections the host opens to a job's forwarded
# port (see lark.firewall.nftables).
MODE = Mode(
    name="nat", rank=10,
    summary="veth pair; per-job subnet from LARK_NAT_*_POOL; masqueraded out; inbound ports forwarded",
    allocate=allocate, up=up, down=down, check=check,
    host_interface=True, masquerade=True, routed=True, port_forwarding=True,
    address_source="LARK_NAT_IPV4_POOL/LARK_NAT_IPV6_POOL",
    kernel_features=("veth", "tbf"),
)
