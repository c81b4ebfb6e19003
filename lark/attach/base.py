"""What every attachment mode provides: ``allocate``, ``up``, ``down``, ``check``.

The engine fills a :class:`~lark.state.JobRecord` with names, asks the mode to allocate addresses
into it (persisted before any kernel object exists), then calls ``up``. ``down`` must work from
the record alone and succeed when things are already gone; ``check`` returns a list of drift
messages (empty when the kernel matches the record).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lark.config import LarkConfig
from lark.ipam import AddressRangePool
from lark.netlink import addresses_of, link_index

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from lark.state import JobRecord


@dataclass
class AttachContext:
    config: LarkConfig
    host: IPRoute  # netlink socket in the host namespace
    job: IPRoute | None  # netlink socket in the job's namespace (None once it is gone)
    job_netns_fd: int | None  # open fd of the job's namespace, for creating links directly inside


class Attachment(Protocol):
    mode: str

    def allocate(self, config: LarkConfig, record: JobRecord) -> None: ...

    def up(self, ctx: AttachContext, record: JobRecord) -> None: ...

    def down(self, ctx: AttachContext, record: JobRecord) -> None: ...

    def check(self, ctx: AttachContext, record: JobRecord) -> list[str]: ...


def allocate_site_addresses(config: LarkConfig, record: JobRecord, mode: str) -> None:
    """Addresses from an L2 segment's pools (bridge, macvlan, ipvlan jobs)."""
    site = config.site_attachments[mode]
    for pool, gateway, family in ((site.ipv4, site.ipv4_gateway, 4), (site.ipv6, site.ipv6_gateway, 6)):
        if pool is None:
            continue
        iface, alloc = AddressRangePool(config.state_dir, mode, pool, gateway).allocate(record.token)
        record.allocations.append(alloc)
        if family == 4:
            record.ipv4 = str(iface)
            record.host_ipv4 = str(gateway) if gateway else None
        else:
            record.ipv6 = str(iface)
            record.host_ipv6 = str(gateway) if gateway else None
    record.parent = site.parent


def check_job_side(ctx: AttachContext, record: JobRecord) -> list[str]:
    """Drift inside the job's namespace: the interface exists, is up and has its addresses."""
    if ctx.job is None:
        return [f"job namespace {record.netns} is gone"]
    index = link_index(ctx.job, record.job_ifname or "")
    if index is None:
        return [f"job interface {record.job_ifname} is missing in {record.netns}"]
    problems = []
    have = addresses_of(ctx.job, index)
    for want in (record.ipv4, record.ipv6):
        if want and want not in have:
            problems.append(f"job interface {record.job_ifname} lacks address {want}")
    link = ctx.job.get_links(index)[0]
    if link.get("state") != "up" and not (link["flags"] & 1):
        problems.append(f"job interface {record.job_ifname} is down")
    return problems


def open_fd(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def bring_up_loopback(ctx: AttachContext) -> None:
    from lark.netlink import set_up

    assert ctx.job is not None
    index = link_index(ctx.job, "lo")
    if index is not None:
        set_up(ctx.job, index, "lo")


def configure_job_interface(ctx: AttachContext, record: JobRecord) -> int:
    """Addresses, link up and default routes on the job's own interface (already in its namespace)."""
    import ipaddress

    from lark.netlink import add_address, add_default_route, require_link, set_up

    assert ctx.job is not None and record.job_ifname
    index = require_link(ctx.job, record.job_ifname, "job interface")
    for text in (record.ipv4, record.ipv6):
        if text:
            add_address(ctx.job, index, ipaddress.ip_interface(text), record.job_ifname)
    set_up(ctx.job, index, record.job_ifname)
    bring_up_loopback(ctx)
    for gateway in (record.host_ipv4, record.host_ipv6):
        if gateway:
            add_default_route(ctx.job, ipaddress.ip_address(gateway.split("/")[0]), index)
    return index
