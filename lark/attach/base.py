"""What an attachment mode is: its facts and its ``allocate``/``up``/``down``/``check``, in one object.

Each mode module (``lark/attach/<mode>.py``) declares one :class:`Mode`; :mod:`lark.attach` keeps
the registry. The engine asks the mode object (does it have a host interface? masquerade? port
forwards?) and never compares mode names, so a new mode is one new module.

The engine fills a :class:`~lark.state.JobRecord` with names, asks the mode to allocate addresses
into it (persisted before any kernel object exists), then calls ``up``, on its kernel thread. An
``up`` that must wait for the site's network returns an :class:`AddressWait`: the engine waits
off the kernel thread, then has it finish the job's addresses. ``down`` must work from
the record alone and succeed when things are already gone; ``check`` returns a list of drift
messages (empty when the kernel matches the record).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lark.addressing import Addressing, LeaseEvent, client_id, dhcp_hostname, parse_addressing, wants_dhcp, wants_slaac
from lark.errors import KernelError, LarkError
from lark.ipam import AddressRangePool
from lark.knobs import Knob
from lark.netlink import add_address, add_default_route, addresses_of, link_index, require_link, set_up
from lark.values import AddressPool, IPAddress, parse_address, parse_pool, parse_text

if TYPE_CHECKING:
    from pathlib import Path

    from pyroute2 import IPRoute

    from lark.nodeconfig import LarkConfig
    from lark.state import JobRecord


@dataclass
class AttachContext:
    config: LarkConfig
    host: IPRoute  # netlink socket in the host namespace
    job: IPRoute | None  # netlink socket in the job's namespace (None once it is gone)
    job_netns_fd: int | None  # open fd of the job's namespace, for creating links directly inside


Allocate = Callable[["LarkConfig", "JobRecord"], None]
# ``up`` returns the rest of a start that waits for the site's network (None: nothing to wait for)
Up = Callable[[AttachContext, "JobRecord"], "AddressWait | None"]
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
    # Where the job's addresses come from (None: always the pools); see lark.addressing.
    addressing: Knob[Addressing] | None = None
    # What a profile of this mode names as `parent`, with an example (said when it is missing).
    parent_hint: str = "the interface the jobs' children hang off, e.g. ens1f0"

    @classmethod
    def for_mode(cls, mode: str, parent_knob: str, parent_what: str, parent_doc: str,
                 dynamic: bool = False, parent_hint: str | None = None) -> SitePools:
        """``LARK_<MODE>_IPV4_POOL`` and friends, owned by ``mode``; ``dynamic``: also
        ``LARK_<MODE>_ADDRESSING`` (the site's DHCP server and router advertisements)."""
        up, owner = mode.upper(), f"mode {mode}"
        addressing = Knob(f"LARK_{up}_ADDRESSING", "static", parse_addressing,
                          f"Where {mode} jobs' addresses come from: static (the pools), dhcp (IPv4 from the "
                          "site's DHCP server), slaac (IPv6 from router advertisements) or dhcp+slaac; a family "
                          "not taken from the network comes from its pool.", owner) if dynamic else None
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
            addressing=addressing,
            parent_hint=parent_hint or f"the interface the {mode} children hang off, e.g. ens1f0",
        )

    def knobs(self) -> tuple[Knob[object], ...]:
        pools = (self.parent, self.ipv4_pool, self.ipv4_gateway, self.ipv6_pool, self.ipv6_gateway)
        return pools + ((self.addressing,) if self.addressing is not None else ())


@dataclass(frozen=True)
class Mode:
    """One attachment mode: the facts the engine, the config and the docs ask, and its behaviour."""

    name: str
    summary: str  # one line for the docs' table
    allocate: Allocate
    up: Up
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
    # Where the mode is listed (messages, CLI choices, docs): lower first, then by name.
    rank: int = 50
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


class AddressingTimeout(LarkError):
    """The site's network gave a job no address within LARK_ADDRESSING_TIMEOUT (the job is held)."""


def allocate_site_addresses(config: LarkConfig, record: JobRecord) -> None:
    """Addresses from an L2 segment's pools (bridge, macvlan, ipvlan jobs).

    A family the site's network addresses (DHCP, SLAAC) takes nothing from its pool, unless the
    node falls back to static addresses (LARK_ADDRESSING_FALLBACK): then its pool address is held
    in reserve for the job's life and used only when the network gives none in time.
    """
    site = config.site_attachments[record.mode]
    record.addressing = site.addressing
    reserve = config.addressing_fallback == "static"
    for pool, gateway, family in ((site.ipv4, site.ipv4_gateway, 4), (site.ipv6, site.ipv6_gateway, 6)):
        if pool is None or (_dynamic(record, family) and not reserve):
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


# --------------------------------------------------------------------------------------------
# Addresses from the site's network (lark.addressing): DHCPv4 and SLAAC


def _dynamic(record: JobRecord, family: int) -> bool:
    return wants_dhcp(record.addressing) if family == 4 else wants_slaac(record.addressing)


def configure_site_interface(ctx: AttachContext, record: JobRecord) -> AddressWait | None:
    """The job's interface on a site segment, addressed as ``record.addressing`` says.

    Router advertisements are accepted only by a SLAAC job. A static job is done here (None). A job
    the site's network addresses gets its link up (with the address of a family that stays static)
    and the rest of its start is returned, to run off the kernel thread (:class:`AddressWait`): a
    DHCP job's client starts once the link is up, and the start waits for its lease and SLAAC
    address together, at most LARK_ADDRESSING_TIMEOUT seconds, then either fails with a clear
    reason (the job is held) or, with LARK_ADDRESSING_FALLBACK = static, takes the pool address
    reserved for the family.
    """
    from lark.addressing import slaac

    assert ctx.job is not None and record.job_ifname
    require_link(ctx.job, record.job_ifname, "job interface")
    slaac.accept_router_adverts(record.netns, record.job_ifname, wants_slaac(record.addressing))
    if record.addressing == "static":
        configure_job_interface(ctx, record)
        return None
    reserved = {4: (record.ipv4, record.host_ipv4), 6: (record.ipv6, record.host_ipv6)}
    for family in (4, 6):
        if _dynamic(record, family):
            _set_family(record, family, None, None)
    configure_job_interface(ctx, record)  # the static family, if any; link up
    ident = b""
    if wants_dhcp(record.addressing):
        ident = client_id(record.global_job_id or record.job_id, record.job_ifname)
        record.dhcp_client_id = ident.hex()
    timeout = ctx.config.addressing_timeout
    return AddressWait(netns=record.netns, ifname=record.job_ifname, token=record.token,
                       state_dir=ctx.config.state_dir, dhcp=wants_dhcp(record.addressing),
                       slaac=wants_slaac(record.addressing), client_id=ident,
                       hostname=dhcp_hostname(record.job_id, record.token), timeout=timeout,
                       deadline=time.monotonic() + timeout, reserved=reserved)


@dataclass
class AddressWait:
    """The part of a site-segment job's start that waits for the site's network (DHCP, SLAAC).

    It runs apart from the rest so that it need not run on the engine's single kernel thread: a
    job whose DHCP server is slow (dnsmasq checks a new address for ~3 s before offering it) or
    silent (the whole LARK_ADDRESSING_TIMEOUT) then delays its own start, not every other job's
    set-up and teardown on the node. The engine calls, in this order:

    1. the mode's ``up`` (kernel thread): the interface up (:func:`configure_site_interface`),
       which returns this object;
    2. :meth:`start` (the thread that asked for the job: a broker request worker, ``lark up``'s
       main thread): waits for the link's carrier, then starts the job's DHCP client;
    3. :meth:`wait` (the same thread): the lease and the SLAAC address, until the deadline;
    4. :meth:`finish` (kernel thread): the addresses into the record, or the fallback.

    ``start`` and ``wait`` never touch the engine's sockets (pyroute2 ties a socket to the thread
    that first used it): they open their own in the job's namespace. ``cancelled`` says that the
    job was torn down meanwhile: they stop waiting at once. A client started here is found by its
    pidfile, named by the job's token, by a teardown and by the sweep alike.
    """

    netns: str
    ifname: str
    token: str
    state_dir: Path
    dhcp: bool
    slaac: bool
    client_id: bytes  # option 61 (empty without DHCP)
    hostname: str
    timeout: float
    deadline: float  # time.monotonic()
    # each family's pool address and gateway held in reserve (LARK_ADDRESSING_FALLBACK = static)
    reserved: dict[int, tuple[str | None, str | None]]
    lease: LeaseEvent | None = None
    lease_events: int = 0  # lines of the client's event log read when the lease came
    slaac_address: str | None = None

    def start(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Once the link is usable, start the DHCP client (if the job asked for DHCP)."""
        from lark.addressing import dhcp

        if not self.dhcp:
            return
        # A link is usable once the kernel has seen its carrier (up to ~1 s after "up"; until then
        # what it sends is dropped): a discover sent before would be lost, and the next comes 1 s later.
        with self._job_socket() as (ipr, index):
            _wait_operational(ipr, index, self.ifname, self.deadline, cancelled)
        if not cancelled():
            dhcp.start_client(self.state_dir, self.token, self.netns, self.ifname, self.client_id, self.hostname)

    def wait(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """The lease and the SLAAC address, as far as they come before the deadline."""
        from lark.addressing import dhcp, slaac

        if self.dhcp:
            self.lease = dhcp.wait_for_lease(self.state_dir, self.token, self.deadline, cancelled)
            if self.lease is not None:
                self.lease_events = len(dhcp.read_events(self.state_dir, self.token))
                if self.lease.address:
                    dhcp.remember_address(self.state_dir, self.client_id, self.lease.address)
        if self.slaac and not cancelled():
            with self._job_socket() as (ipr, index):
                self.slaac_address = slaac.wait_for_address(ipr, index, self.deadline, cancelled)

    def finish(self, ctx: AttachContext, record: JobRecord) -> None:
        """What came goes into the record (the client and the kernel have put it on the interface);
        a family that did not come falls back as LARK_ADDRESSING_FALLBACK says."""
        missing: list[int] = []
        if self.dhcp:
            if self.lease is None:
                missing.append(4)
            else:
                _set_family(record, 4, self.lease.address, self.lease.router)
                record.lease_server, record.lease_expires = self.lease.server, self.lease.expires
                record.lease_events_seen = self.lease_events
        if self.slaac:
            if self.slaac_address is None:
                missing.append(6)
            else:
                _set_family(record, 6, self.slaac_address, None)
        if missing:
            assert ctx.job is not None
            index = require_link(ctx.job, self.ifname, "job interface")
            _fall_back(ctx, record, index, missing, self.reserved, self.timeout)

    @contextmanager
    def _job_socket(self) -> Iterator[tuple[IPRoute, int]]:
        from lark import netns

        ipr = netns.iproute_in(self.netns)
        try:
            yield ipr, require_link(ipr, self.ifname, "job interface")
        finally:
            ipr.close()


def _wait_operational(ipr: IPRoute, index: int, ifname: str, deadline: float, cancelled: Callable[[], bool]) -> None:
    from pyroute2 import NetlinkError

    while time.monotonic() < deadline and not cancelled():
        try:
            state = ipr.get_links(index)[0].get("IFLA_OPERSTATE")
        except NetlinkError as err:  # the interface went (the job was torn down)
            raise KernelError(f"job interface {ifname} went while its link came up: {err}") from None
        if state in ("UP", "UNKNOWN"):
            return
        time.sleep(0.01)


def _set_family(record: JobRecord, family: int, address: str | None, gateway: str | None) -> None:
    if family == 4:
        record.ipv4, record.host_ipv4 = address, gateway
    else:
        record.ipv6, record.host_ipv6 = address, gateway


def _fall_back(ctx: AttachContext, record: JobRecord, index: int, missing: list[int],
               reserved: dict[int, tuple[str | None, str | None]], timeout: float) -> None:
    from lark.addressing import dhcp, slaac

    what = {4: "no DHCPv4 lease", 6: "no IPv6 address from router advertisements (SLAAC)"}
    if ctx.config.addressing_fallback == "static" and all(reserved[f][0] for f in missing):
        if 4 in missing:
            dhcp.stop_client(ctx.config.state_dir, record.token)  # it would add a late lease's address
            record.dhcp_client_id = None
        if 6 in missing:  # a late advertisement's address would be one the job may not use
            slaac.accept_router_adverts(record.netns, record.job_ifname or "", False)
        assert ctx.job is not None
        for family in missing:
            address, gateway = reserved[family]
            assert address is not None
            _set_family(record, family, address, gateway)
            add_address(ctx.job, index, ipaddress.ip_interface(address), record.job_ifname or "")
            if gateway:
                add_default_route(ctx.job, ipaddress.ip_address(gateway.partition("/")[0]), index)
        return
    reason = " and ".join(what[f] for f in missing)
    client = f" (DHCP client id {record.dhcp_client_id})" if 4 in missing else ""
    pools = " or ".join(f"IPv{f}" for f in missing if not reserved[f][0])
    fallback = f"LARK_ADDRESSING_FALLBACK = static, but there is no {pools} pool to fall back on" \
        if ctx.config.addressing_fallback == "static" else "LARK_ADDRESSING_FALLBACK = hold"
    raise AddressingTimeout(f"{reason} on {record.parent} within {timeout:g} s (LARK_ADDRESSING_TIMEOUT)"
                            f"{client}; {fallback}")
