"""The per-job network engine: ``up``, ``down``, ``counters``, ``sweep`` and ``check``.

Order of ``up`` (every step recorded before it touches the kernel, so a crash at any point is
undone by ``sweep``): record (status ``setting-up``) -> namespace (when Lark owns it) -> addresses
and ports from IPAM -> attachment -> bandwidth limits -> one firewall batch -> status ``up``.
``down`` reverses it from the record alone and is idempotent.

The engine keeps one netlink socket in the host namespace and opens a short-lived one in each
job's namespace (see :mod:`lark.netns`); it never forks. All kernel work runs on one worker thread
per engine: pyroute2 0.9 ties each socket's transport to the thread that first used it (and closes
the socket when that thread's event loop goes away), so sharing sockets across a broker's request
threads is unsafe; one thread also serialises the 6-10 ms of kernel work per job. Several processes
may run engines at once (IPAM is file-locked).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from lark import names, netns
from lark.attach import module_for
from lark.attach.base import AttachContext
from lark.config import IPNetwork, LarkConfig, SiteAttachment, TrafficClass
from lark.errors import KernelError, LarkError, NotFound
from lark.firewall.base import FirewallBackend, FirewallJob, JobCounters, PortForward, make_backend
from lark.ipam import PortPool, all_allocations, release_allocation
from lark.locks import file_lock
from lark.netlink import delete_link, link_index, link_names, write_sysctl
from lark.policy import JobRequest
from lark.state import JobRecord, StateStore, holder_alive, process_start_time

if TYPE_CHECKING:
    from pyroute2 import IPRoute

VETH_MODES = ("nat", "bridge")
F = TypeVar("F", bound=Callable[..., Any])


def _on_kernel_thread(method: F) -> F:
    """Run an Engine method on the engine's single kernel thread (directly when already on it)."""

    @functools.wraps(method)
    def wrapper(self: Engine, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == self._worker_ident:
            return method(self, *args, **kwargs)
        return self._worker.submit(method, self, *args, **kwargs).result()

    return wrapper  # type: ignore[return-value]
# Bridged traffic reaches the host's inet hooks with the *bridge* as interface, and macvlan leaves
# no host-side interface at all: these modes count and police inside the job's own namespace.
JOB_SIDE_FIREWALL_MODES = ("bridge", "macvlan", "ipvlan")


@dataclass
class SweepReport:
    removed_jobs: list[str] = field(default_factory=list)
    removed_links: list[str] = field(default_factory=list)
    removed_netns: list[str] = field(default_factory=list)
    removed_firewall: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not any((self.removed_jobs, self.removed_links, self.removed_netns, self.removed_firewall,
                        self.released))


class Engine:
    def __init__(self, config: LarkConfig, host_netns: str | None = None) -> None:
        self.config = config
        self.prefix = config.name_prefix
        self.host_netns = host_netns
        self.store = StateStore(config.state_dir)
        self._host: IPRoute | None = None
        self._firewall: FirewallBackend | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lark-kernel")
        self._worker_ident = self._worker.submit(threading.get_ident).result()
        self._forwarding_done = False
        self._public_ipv4: ipaddress.IPv4Address | None = config.public_address
        self._base_lock = config.state_dir / ".firewall-base.lock"

    # ---------------------------------------------------------------- resources

    @property
    def host(self) -> IPRoute:
        if self._host is None:
            self._host = netns.iproute_in(self.host_netns)
        return self._host

    @property
    def firewall(self) -> FirewallBackend:
        if self._firewall is None:
            backend = make_backend(self.config.firewall, self.prefix, self.host_netns)
            backend.ensure_base()
            self._firewall = backend
        return self._firewall

    @_on_kernel_thread
    def _close_sockets(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None

    def close(self) -> None:
        self._close_sockets()
        self._worker.shutdown(wait=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- up

    @_on_kernel_thread
    def up(self, request: JobRequest, netns_path: str | None = None, holder_pid: int | None = None,
           owner_uid: int | None = None, site: SiteAttachment | None = None) -> JobRecord:
        """Give a job its network. ``netns_path`` None: Lark creates (and later deletes) a named one.

        ``site``: the parent and pools of a network profile, instead of the node's ``LARK_<MODE>_*``.
        """
        # shared: jobs set up side by side; ``release_if_idle`` takes it exclusively, so the shared
        # tables cannot be removed between this job's record and its rules
        with file_lock(self._base_lock, shared=True):
            record = self._new_record(request, netns_path, holder_pid, owner_uid)
            try:
                self._build(record, request, site)
            except BaseException:
                self._teardown(record)
                raise
        return record

    def _new_record(self, request: JobRequest, netns_path: str | None, holder_pid: int | None,
                    owner_uid: int | None) -> JobRecord:
        token = names.new_token()
        while self.store.load(token) is not None:
            token = names.new_token()
        owned = netns_path is None
        record = JobRecord(
            token=token, job_id=request.job_id, mode=request.network_type, status="setting-up",
            netns=str(netns.NETNS_RUN_DIR / names.netns_name(self.prefix, token)) if owned else netns_path,
            netns_owned=owned, holder_pid=holder_pid,
            holder_start=process_start_time(holder_pid) if holder_pid else None,
            host_ifname=names.host_ifname(self.prefix, token) if request.network_type in VETH_MODES else None,
            job_ifname=names.JOB_IFNAME if request.network_type != "none" else None,
            bandwidth_in_mbit=request.bandwidth_in_mbit, bandwidth_out_mbit=request.bandwidth_out_mbit,
            firewall=self.config.firewall,
            firewall_job_side=request.network_type in JOB_SIDE_FIREWALL_MODES,
            owner_uid=owner_uid,
            extra={"creator_pid": os.getpid(), "creator_start": process_start_time(os.getpid())},
        )
        self.store.save(record)  # before any kernel object: a crash from here on is swept
        return record

    def _build(self, record: JobRecord, request: JobRequest, site: SiteAttachment | None = None) -> None:
        mode = module_for(record.mode)
        if record.netns_owned:
            netns.create_named(os.path.basename(record.netns))
        record.netns_inode = netns.inode(record.netns)
        config = self.config if site is None else replace(
            self.config, site_attachments={**self.config.site_attachments, record.mode: site})
        mode.allocate(config, record)
        if request.inbound_ports and record.mode == "nat":
            ports, alloc = PortPool(self.config.state_dir, self.config.inbound_port_range).allocate(
                record.token, request.inbound_ports)
            record.ports = ports
            record.allocations.append(alloc)
            record.public_ipv4 = str(self.public_ipv4())
        elif request.inbound_ports and record.ipv4:
            # bridge/macvlan jobs are addressable themselves: they may listen on any port
            first = self.config.inbound_port_range[0]
            record.ports = first, first + request.inbound_ports - 1
            record.public_ipv4 = record.ipv4.split("/")[0]
        # No save here: allocations are files named by this job's token, and a sweep frees the
        # ones whose token has no live record, so the first and last saves are enough.

        if record.mode == "nat" and self.config.enable_forwarding:
            self._ensure_forwarding()
        job_ipr = netns.iproute_in(record.netns)
        fd = os.open(record.netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ctx = AttachContext(self.config, self.host, job_ipr, fd)
            mode.up(ctx, record)
            self._apply_limits(ctx, record)
        finally:
            os.close(fd)
            job_ipr.close()
        if record.mode != "none":
            spec = self._firewall_job(record, request)
            record.firewall_spec = firewall_job_to_dict(spec)
            backend = self._backend_for(record)
            try:
                backend.add_job(spec)  # orphaned rules are swept by token, like allocations
            except KernelError:
                # Only a missing base is mended here: someone removed the shared tables under us
                # (an admin's `nft flush ruleset`). Any other failure is the job's own and stands.
                if backend.base_present():
                    raise
                backend.ensure_base()
                backend.add_job(spec)
        record.status = "up"
        self.store.save(record)

    def _apply_limits(self, ctx: AttachContext, record: JobRecord) -> None:
        """Two egress qdiscs: the host end shapes what the job receives, the job end what it sends.

        The job's end sits in its namespace, which belongs to the initial user namespace, so the
        unprivileged job cannot remove the qdisc. macvlan/ipvlan have only the job end: its
        ingress is policed instead.
        """
        if not (record.bandwidth_in_mbit or record.bandwidth_out_mbit) or record.mode == "none":
            return
        from lark import shaping

        assert ctx.job is not None and record.job_ifname
        job_index = link_index(ctx.job, record.job_ifname)
        assert job_index is not None
        if record.bandwidth_out_mbit:
            shaping.limit_egress(ctx.job, job_index, record.bandwidth_out_mbit)
        if record.bandwidth_in_mbit:
            if record.host_ifname:
                host_index = link_index(ctx.host, record.host_ifname)
                assert host_index is not None
                shaping.limit_egress(ctx.host, host_index, record.bandwidth_in_mbit)
            else:
                shaping.police_ingress(ctx.job, job_index, record.bandwidth_in_mbit)

    def _firewall_job(self, record: JobRecord, request: JobRequest) -> FirewallJob:
        addresses = tuple(ipaddress.ip_interface(a).ip for a in (record.ipv4, record.ipv6) if a)
        forward = None
        if record.ports and record.mode == "nat":
            forward = PortForward(record.ports[0], record.ports[1],
                                  ipaddress.IPv4Interface(record.ipv4).ip if record.ipv4 else None,
                                  ipaddress.IPv6Interface(record.ipv6).ip if record.ipv6 else None)
        return FirewallJob(
            token=record.token,
            ifname=(record.job_ifname if record.firewall_job_side else record.host_ifname) or "",
            addresses=addresses,
            masquerade_ipv4=record.mode == "nat",
            masquerade_ipv6=record.mode == "nat" and self.config.nat_ipv6_masquerade,
            anti_spoof=self.config.anti_spoof,
            allow=request.allow,
            deny=tuple(request.deny) + tuple(self.config.deny),
            classes=self.config.traffic_classes,
            port_forward=forward,
        )

    def _backend_for(self, record: JobRecord) -> FirewallBackend:
        if record.firewall_job_side:
            return make_backend(record.firewall, self.prefix, record.netns, job_side=True)
        if record.firewall != self.config.firewall:
            return make_backend(record.firewall, self.prefix, self.host_netns)
        return self.firewall

    def _ensure_forwarding(self) -> None:
        if self._forwarding_done:
            return

        def enable() -> None:
            write_sysctl("net.ipv4.ip_forward", "1")
            if self.config.nat_ipv6_pool is not None:
                # forwarding=1 makes the kernel ignore router advertisements where accept_ra=1;
                # 2 keeps a SLAAC-configured host's own interfaces working. Only existing uplinks
                # are changed: "all"/"default" stay, so job veths created later never accept RAs.
                for conf in os.listdir("/proc/sys/net/ipv6/conf"):
                    if conf in ("all", "default") or names.token_of_ifname(self.prefix, conf):
                        continue
                    knob = f"net.ipv6.conf.{conf}.accept_ra"
                    try:
                        if open("/proc/sys/" + knob.replace(".", "/")).read().strip() == "1":
                            write_sysctl(knob, "2")
                    except OSError:
                        continue
                write_sysctl("net.ipv6.conf.all.forwarding", "1")

        netns.call_in(self.host_netns, enable)
        self._forwarding_done = True

    def public_ipv4(self) -> ipaddress.IPv4Address:
        """Where inbound ports are reachable: LARK_PUBLIC_ADDRESS, else the default route's source."""
        if self._public_ipv4 is None:
            self._public_ipv4 = detect_public_ipv4(self.host, self.prefix)
        return self._public_ipv4

    # ---------------------------------------------------------------- down

    @_on_kernel_thread
    def down(self, job: str) -> bool:
        """Remove a job's network by job id or token. False if Lark has no such job."""
        record = self.store.find(job)
        if record is None:
            return False
        self._teardown(record)
        return True

    def _teardown(self, record: JobRecord) -> None:
        """Remove everything the record names. Every step tolerates "already gone"."""
        errors: list[str] = []
        ns_alive = _netns_matches(record)
        if record.firewall_spec and not (record.firewall_job_side and (record.netns_owned or not ns_alive)):
            try:
                self._backend_for(record).remove_job(firewall_job_from_dict(record.firewall_spec))
            except LarkError as err:
                errors.append(str(err))
        if record.netns_owned:
            # fast path: the kernel removes the veth (or macvlan) with the namespace
            netns.delete_named(record.netns)
        else:
            job_ipr = _open_job_netns(record) if ns_alive else None
            try:
                module_for(record.mode).down(AttachContext(self.config, self.host, job_ipr, None), record)
            except LarkError as err:
                errors.append(str(err))
            finally:
                if job_ipr is not None:
                    job_ipr.close()
        for alloc in record.allocations:
            release_allocation(self.config.state_dir, alloc, record.token)
        if errors:
            # keep the record so that the next sweep tries again
            record.status = "tearing-down"
            self.store.save(record)
            raise KernelError(f"job {record.job_id}: " + "; ".join(errors))
        self.store.delete(record.token)

    # ---------------------------------------------------------------- reading

    def records(self) -> list[JobRecord]:
        return self.store.all()

    def find(self, job: str) -> JobRecord:
        record = self.store.find(job)
        if record is None:
            raise NotFound(f"no Lark job {job!r}")
        return record

    @_on_kernel_thread
    def counters(self, job: str) -> JobCounters:
        record = self.find(job)
        if record.mode == "none":
            return JobCounters()
        return self._backend_for(record).counters(record.token)

    @_on_kernel_thread
    def all_counters(self) -> dict[str, JobCounters]:
        """Counters of every host-side job in one listing, plus job-side ones individually."""
        out = self.firewall.all_counters()
        for record in self.store.all():
            if record.firewall_job_side and record.status == "up" and _netns_matches(record):
                try:
                    out[record.token] = self._backend_for(record).counters(record.token)
                except LarkError:
                    continue
        return out

    # ---------------------------------------------------------------- sweep and check

    def is_alive(self, record: JobRecord) -> bool:
        if record.status == "tearing-down":
            return False
        if record.status == "setting-up":
            creator = record.extra.get("creator_pid")
            if isinstance(creator, int) and process_start_time(creator) != record.extra.get("creator_start"):
                return False
            return True  # still being built by a live process
        return holder_alive(record) and _netns_matches(record)

    @_on_kernel_thread
    def sweep(self) -> SweepReport:
        """Remove dead jobs, then every prefixed kernel object and allocation no record owns."""
        report = SweepReport()
        for record in self.store.all():
            if not self.is_alive(record):
                try:
                    self._teardown(record)
                    report.removed_jobs.append(record.token)
                except LarkError:
                    continue
        live = {r.token for r in self.store.all()}
        for ifname in link_names(self.host):
            token = names.token_of_ifname(self.prefix, ifname)
            if token and token not in live:
                if delete_link(self.host, ifname):
                    report.removed_links.append(ifname)
        for name in netns.list_named(self.prefix + "-"):
            token = names.token_of_netns(self.prefix, name)
            if token and token not in live:
                netns.delete_named(name)
                report.removed_netns.append(name)
        report.removed_firewall = sorted(self.firewall.remove_orphans(live))
        for alloc, owner in all_allocations(self.config.state_dir):
            if owner not in live and release_allocation(self.config.state_dir, alloc, owner):
                report.released.append(f"{alloc.pool}/{alloc.slot}")
        return report

    @_on_kernel_thread
    def check(self) -> list[str]:
        """Drift between the records and the kernel, one message per problem (empty: all good)."""
        problems: list[str] = []
        records = self.store.all()
        fw_tokens = self.firewall.job_tokens()
        for record in records:
            label = f"job {record.job_id} ({record.token})"
            if not self.is_alive(record):
                problems.append(f"{label}: dead (holder or namespace gone); run 'lark sweep'")
                continue
            if record.status != "up":
                continue
            job_ipr = _open_job_netns(record)
            try:
                ctx = AttachContext(self.config, self.host, job_ipr, None)
                problems += [f"{label}: {p}" for p in module_for(record.mode).check(ctx, record)]
            finally:
                if job_ipr is not None:
                    job_ipr.close()
            if record.mode != "none" and not record.firewall_job_side and record.token not in fw_tokens:
                problems.append(f"{label}: firewall rules are missing")
        live = {r.token for r in records}
        for ifname in link_names(self.host):
            token = names.token_of_ifname(self.prefix, ifname)
            if token and token not in live:
                problems.append(f"orphan interface {ifname} (no record)")
        for name in netns.list_named(self.prefix + "-"):
            token = names.token_of_netns(self.prefix, name)
            if token and token not in live:
                problems.append(f"orphan namespace {name} (no record)")
        for token in sorted(fw_tokens - live):
            problems.append(f"orphan firewall rules for {token} (no record)")
        return problems

    @_on_kernel_thread
    def destroy_base(self) -> None:
        """Remove the shared firewall tables (uninstall, end of a test run)."""
        self.firewall.destroy()

    @_on_kernel_thread
    def release_if_idle(self) -> bool:
        """Remove the shared tables when no job is recorded (``lark run`` on a node without a broker)."""
        with file_lock(self._base_lock):  # waits for jobs being set up (they hold it shared)
            if self.store.all():
                return False
            self.firewall.destroy()
            self._firewall = None
            return True

    @_on_kernel_thread
    def prefixed_links(self) -> list[str]:
        """Host interfaces that carry this engine's job naming (for tests and leak checks)."""
        return [n for n in link_names(self.host) if names.token_of_ifname(self.prefix, n)]


# -------------------------------------------------------------------- helpers


def _open_job_netns(record: JobRecord) -> IPRoute | None:
    """A socket in the job's namespace, or None when it vanished meanwhile (the job just exited)."""
    try:
        return netns.iproute_in(record.netns)
    except (NotFound, KernelError):
        return None


def _netns_matches(record: JobRecord) -> bool:
    try:
        return netns.inode(record.netns) == record.netns_inode
    except NotFound:
        return False


def detect_public_ipv4(ipr: IPRoute, prefix: str) -> ipaddress.IPv4Address:
    """The source address the host uses towards its default gateway (no packet is sent)."""
    from pyroute2 import NetlinkError

    try:
        for route in ipr.get_routes(family=2, table=254):
            gateway = route.get("RTA_GATEWAY")
            if route["dst_len"] == 0 and gateway:
                src = ipr.route("get", dst=gateway)[0].get("RTA_PREFSRC")
                if src:
                    return ipaddress.IPv4Address(src)
    except NetlinkError:
        pass
    raise KernelError("cannot tell the host's public IPv4 address (no IPv4 default route); set LARK_PUBLIC_ADDRESS")


def firewall_job_to_dict(job: FirewallJob) -> dict[str, object]:
    return {
        "token": job.token, "ifname": job.ifname, "addresses": [str(a) for a in job.addresses],
        "masquerade_ipv4": job.masquerade_ipv4, "masquerade_ipv6": job.masquerade_ipv6,
        "anti_spoof": job.anti_spoof, "allow": [str(n) for n in job.allow], "deny": [str(n) for n in job.deny],
        "classes": [[c.name, [str(n) for n in c.networks]] for c in job.classes],
        "port_forward": None if job.port_forward is None else {
            "first": job.port_forward.first, "last": job.port_forward.last,
            "job_ipv4": str(job.port_forward.job_ipv4) if job.port_forward.job_ipv4 else None,
            "job_ipv6": str(job.port_forward.job_ipv6) if job.port_forward.job_ipv6 else None},
    }


def firewall_job_from_dict(data: dict[str, object]) -> FirewallJob:
    def nets(items: object) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(n) for n in items)  # type: ignore[union-attr]

    pf = data.get("port_forward")
    forward = None
    if isinstance(pf, dict):
        forward = PortForward(int(pf["first"]), int(pf["last"]),
                              ipaddress.IPv4Address(pf["job_ipv4"]) if pf.get("job_ipv4") else None,
                              ipaddress.IPv6Address(pf["job_ipv6"]) if pf.get("job_ipv6") else None)
    return FirewallJob(
        token=str(data["token"]), ifname=str(data["ifname"]),
        addresses=tuple(ipaddress.ip_address(a) for a in data["addresses"]),  # type: ignore[union-attr]
        masquerade_ipv4=bool(data["masquerade_ipv4"]), masquerade_ipv6=bool(data["masquerade_ipv6"]),
        anti_spoof=bool(data["anti_spoof"]), allow=nets(data["allow"]), deny=nets(data["deny"]),
        classes=tuple(TrafficClass(name, nets(ns)) for name, ns in data["classes"]),  # type: ignore[union-attr]
        port_forward=forward,
    )


def wait_links_gone(engine: Engine, timeout: float = 3.0) -> list[str]:
    """Prefixed host links still present after the kernel's asynchronous namespace cleanup."""
    deadline = time.monotonic() + timeout
    while True:
        left = engine.prefixed_links()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)
