"""``macvlan``: a macvlan child of a physical parent (``LARK_MACVLAN_PARENT``), born in the job's namespace.

Near-native throughput (no veth hop, no host routing). There is no per-job interface on the host,
so the job's accounting and policy live inside its own namespace (the firewall backend runs in
job-side mode), where the unprivileged job cannot change them. In bridge mode, macvlan children
reach each other but not the parent's own address: that is the driver's design.
"""

from __future__ import annotations

from lark.attach.base import AttachContext, allocate_site_addresses, check_job_side, configure_job_interface
from lark.config import LarkConfig
from lark.errors import KernelError
from lark.netlink import _netlink, delete_link, link_index
from lark.state import JobRecord

mode = "macvlan"
KIND_OPTIONS: dict[str, dict[str, object]] = {
    "macvlan": {"macvlan_mode": "bridge"},
    "ipvlan": {"ipvlan_mode": 0},  # L2
}


def allocate(config: LarkConfig, record: JobRecord) -> None:
    allocate_site_addresses(config, record, record.mode)


def up(ctx: AttachContext, record: JobRecord) -> None:
    assert record.job_ifname and ctx.job_netns_fd is not None and record.parent
    parent = link_index(ctx.host, record.parent)
    if parent is None:
        knob = f"LARK_{record.mode.upper()}_PARENT"
        raise KernelError(f"parent interface {record.parent!r} ({knob}) does not exist on this host")
    _netlink(f"creating {record.mode} {record.job_ifname} on {record.parent}", lambda: ctx.host.link(
        "add", ifname=record.job_ifname, kind=record.mode, link=parent, net_ns_fd=ctx.job_netns_fd,
        **KIND_OPTIONS[record.mode]))
    configure_job_interface(ctx, record)


def down(ctx: AttachContext, record: JobRecord) -> None:
    # the child lives in the job's namespace and dies with it; delete it early when we still can
    if ctx.job is not None and record.job_ifname:
        delete_link(ctx.job, record.job_ifname)


def check(ctx: AttachContext, record: JobRecord) -> list[str]:
    problems = []
    if link_index(ctx.host, record.parent or "") is None:
        problems.append(f"parent interface {record.parent} is missing")
    return problems + check_job_side(ctx, record)
