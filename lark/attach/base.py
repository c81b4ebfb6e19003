"""What an attachment mode is: its facts and its ``allocate``/``up``/``down``/``check``, in one object.

Each mode module (``lark/attach/<mode>.py``) declares one :class:`Mode`; :mod:`lark.attach` keeps
the registry. The engine asks the mode object (does it have a host interface? masquerade? port
forwards?) and never compares mode names, so a new mode is one new module.

The engine fills a :class:`~lark.state.JobRecord` with names, asks the mode to allocate addresses
into it (persisted before any kernel object exists), then calls ``up``. ``down`` must work from
the record alone and succeed when things are already gone; ``check`` returns a list of drift
messages (empty when the kernel matches the record).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lark.ipam import AddressRangePool
from lark.knobs import Knob
from lark.netlink import add_address, add_default_route, addresses_of, link_index, require_link, set_up
from lark.values import AddressPool, IPAddress, parse_address, parse_pool, parse_text

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from lark.config import LarkConfig
    from lark.state import JobRecord


@dataclass
class AttachContext:
    config: LarkConfig
    host: IPRoute  # netlink socket in the host namespace
    job: IPRoute | None  # netlink socket in the job's namespace (None once it is gone)
    job_netns_fd: int | None  # open fd of the job's namespace, for creating links directly inside


Allocate = Callable[["LarkConfig", "JobRecord"], None]
Step = Callable[[AttachContext, "JobRecord"], None]
Check = Callable[[AttachContext, "JobRecord"], list[str]]


def _optional_pool(family: int) -> Callable[[str], AddressPool | None]:
    return lambda text: parse_pool(text, family) if text.strip() else None


def _optional_gateway(family: int) -> Callable[[str], IPAddress | None]:
    def parse(text: str) -> IPAddress | None:
        if not text.strip():
            return None
        address = parse_address(text)
        if address.version != family:
            raise ValueError(f"{address} is not an IPv{family} address")
        return address

    return parse


@dataclass(frozen=True)
class SitePools:
    """The knobs of a mode that puts jobs on an existing L2 segment: its parent and address pools."""

    parent: Knob[str]
    parent_what: str  # how an error names the parent: "bridge", "parent interface"
    ipv4_pool: Knob[AddressPool | None]
    ipv4_gateway: Knob[IPAddress | None]
    ipv6_pool: Knob[AddressPool | None]
    ipv6_gateway: Knob[IPAddress | None]

    @classmethod
    def for_mode(cls, mode: str, parent_knob: str, parent_what: str, parent_doc: str) -> SitePools:
        """``LARK_<MODE>_IPV4_POOL`` and friends, owned by ``mode``."""
        up, owner = mode.upper(), f"mode {mode}"
        return cls(
            parent=Knob(parent_knob, "", parse_text, parent_doc, owner),
            parent_what=parent_what,
            ipv4_pool=Knob(f"LARK_{up}_IPV4_POOL", "", _optional_pool(4), f"{mode} jobs' IPv4 addresses: CIDR of "
                           "the LAN, optionally followed by a range 'first-last' inside it.", owner),
            ipv4_gateway=Knob(f"LARK_{up}_IPV4_GATEWAY", "", _optional_gateway(4),
                              f"Default IPv4 gateway of {mode} jobs (empty: none; never handed out).", owner),
            ipv6_pool=Knob(f"LARK_{up}_IPV6_POOL", "", _optional_pool(6),
                           f"{mode} jobs' IPv6 addresses (CIDR, optional range).", owner),
            ipv6_gateway=Knob(f"LARK_{up}_IPV6_GATEWAY", "", _optional_gateway(6),
                              f"Default IPv6 gateway of {mode} jobs.", owner),
        )

    def knobs(self) -> tuple[Knob[object], ...]:
        return (self.parent, self.ipv4_pool, self.ipv4_gateway, self.ipv6_pool, self.ipv6_gateway)


@dataclass(frozen=True)
class Mode:
    """One attachment mode: the facts the engine, the config and the docs ask, and its behaviour."""

    name: str
    summary: str  # one line for the docs' table
    allocate: Allocate
    up: Step
    down: Step
    check: Check
    # The job gets an interface besides lo. Without one there is nothing to count, police or shape.
    job_interface: bool = True
    # A veth pair: one interface per job on the host too (its name is recorded and swept by prefix).
    host_interface: bool = False
    # Counters and policy live inside the job's namespace (see lark.firewall), not on the host.
    job_side_firewall: bool = True
    # Job traffic leaves through the host's routing, masqueraded (needs forwarding on the host).
    masquerade: bool = False
    routed: bool = False
    # Inbound ports are host ports forwarded to the job; otherwise the job's own address is reachable.
    port_forwarding: bool = False
    # Addresses come from the site pools of these knobs (the job sits on an existing segment).
    site: SitePools | None = None
    # Bandwidth limits can be set (needs a job interface).
    shaping: bool = True
    # Where a mode without site pools takes its addresses from (said when a profile gives it pools).
    address_source: str = "the node's own configuration"
    # Kernel features a job of this mode needs, as `lark doctor` probes them ("veth", "bridge",
    # "macvlan", "ipvlan", "tbf" for shaping).
    kernel_features: tuple[str, ...] = ()
    extra_knobs: tuple[Knob[object], ...] = field(default=())

    @property
    def knobs(self) -> tuple[Knob[object], ...]:
        return (self.site.knobs() if self.site else ()) + self.extra_knobs

    def facts(self) -> dict[str, object]:
        """The facts as one table row (docs/modes.md is checked against this)."""
        return {"job interface": self.job_interface, "host interface (veth)": self.host_interface,
                "firewall inside the job": self.job_side_firewall, "masquerade": self.masquerade,
                "routed by the host": self.routed, "port forwarding": self.port_forwarding,
                "site pools": self.site is not None, "shaping": self.shaping}


# --------------------------------------------------------------------------------------------
# Helpers the modes share


def allocate_site_addresses(config: LarkConfig, record: JobRecord) -> None:
    """Addresses from an L2 segment's pools (bridge, macvlan, ipvlan jobs)."""
    site = config.site_attachments[record.mode]
    for pool, gateway, family in ((site.ipv4, site.ipv4_gateway, 4), (site.ipv6, site.ipv6_gateway, 6)):
        if pool is None:
            continue
        iface, alloc = AddressRangePool(config.state_dir, record.mode, pool, gateway).allocate(record.token)
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


def bring_up_loopback(ctx: AttachContext) -> None:
    assert ctx.job is not None
    index = link_index(ctx.job, "lo")
    if index is not None:
        set_up(ctx.job, index, "lo")


def configure_job_interface(ctx: AttachContext, record: JobRecord) -> int:
    """Addresses, link up and default routes (via the record's gateways) on the job's own interface."""
    assert ctx.job is not None and record.job_ifname
    index = require_link(ctx.job, record.job_ifname, "job interface")
    for text in (record.ipv4, record.ipv6):
        if text:
            add_address(ctx.job, index, ipaddress.ip_interface(text), record.job_ifname)
    set_up(ctx.job, index, record.job_ifname)
    bring_up_loopback(ctx)
    for gateway in (record.host_ipv4_address, record.host_ipv6_address):
        if gateway:
            add_default_route(ctx.job, ipaddress.ip_address(gateway), index)
    return index
