"""``macvlan``: a macvlan child of a physical parent (``LARK_MACVLAN_PARENT``), born in the job's namespace.

Near-native throughput (no veth hop, no host routing). There is no per-job interface on the host,
so the job's accounting and policy live inside its own namespace (the firewall backend runs in
job-side mode), where the unprivileged job cannot change them. In bridge mode, macvlan children
reach each other but not the parent's own address: that is the driver's design. The helpers here
serve :mod:`lark.attach.ipvlan` too (the kernel link kind is the mode's name).
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
from lark.netlink import create_link, delete_link, link_index

if TYPE_CHECKING:
    from lark.state import JobRecord

KIND_OPTIONS: dict[str, dict[str, object]] = {
    "macvlan": {"macvlan_mode": "bridge"},
    "ipvlan": {"ipvlan_mode": 0},  # L2
}


def up(ctx: AttachContext, record: JobRecord) -> AddressWait | None:
    assert record.job_ifname and ctx.job_netns_fd is not None and record.parent
    parent = link_index(ctx.host, record.parent)
    if parent is None:
        knob = f"LARK_{record.mode.upper()}_PARENT"
        raise KernelError(f"parent interface {record.parent!r} ({knob}) does not exist on this host")
    create_link(ctx.host, f"creating {record.mode} {record.job_ifname} on {record.parent}",
                ifname=record.job_ifname, kind=record.mode, link=parent, net_ns_fd=ctx.job_netns_fd,
                **KIND_OPTIONS[record.mode])
    return configure_site_interface(ctx, record)


def down(ctx: AttachContext, record: JobRecord) -> None:
    # the child lives in the job's namespace and dies with it; delete it early when we still can
    if ctx.job is not None and record.job_ifname:
        delete_link(ctx.job, record.job_ifname)


def check(ctx: AttachContext, record: JobRecord) -> list[str]:
    problems = []
    if link_index(ctx.host, record.parent or "") is None:
        problems.append(f"parent interface {record.parent} is missing")
    return problems + check_job_side(ctx, record)


MODE = Mode(
    name="macvlan", rank=30,
    summary="macvlan child of LARK_MACVLAN_PARENT, born in the job's namespace; site addresses",
    allocate=allocate_site_addresses, up=up, down=down, check=check,
    site=SitePools.for_mode("macvlan", "LARK_MACVLAN_PARENT", "parent interface", "Parent interface of macvlan jobs.",
                            dynamic=True),
    kernel_features=("veth", "macvlan", "tbf"),
)
