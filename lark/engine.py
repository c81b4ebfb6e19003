"""The per-job network engine: ``up``, ``down``, ``counters``, ``sweep`` and ``check``.

Order of ``up`` (every step recorded before it touches the kernel, so a crash at any point is
undone by ``sweep``): record (status ``setting-up``) -> namespace (created when Lark owns it,
else pinned) -> addresses and ports from IPAM -> attachment -> bandwidth limits and the user's
share of the uplink (:mod:`lark.sharetree`, when ``LARK_SHARES_UPLINK`` is set) -> the job-side
firewall batch (counters and policy, inside the job's namespace) -> the host-side batch
(masquerade, port forwards) -> status ``up``. ``down`` reverses it from the record alone and is
idempotent. A job addressed by the site's network (DHCP, SLAAC) is saved again once its interface
is up, waits for its addresses off the kernel thread (see "threads" below), and only then gets its
firewall, which names those addresses.

A namespace Lark does not own (the wrapper's ``/proc/<pid>/ns/net``) is pinned at
``/run/netns/<prefix>-<token>`` for the job's life: when the job's processes die (a killed
wrapper included) the namespace, and with it the job's counters, stays readable until the
teardown, which reads the final counters first (``sweep(on_final=...)``, ``final_counters``).

Reconciliation (``sweep``, ``check``, ``restore_host_rules``) is :mod:`lark.reconcile`. The
engine asks each job's attachment mode (:mod:`lark.attach`) for its facts and behaviour.

The engine keeps one netlink socket in the host namespace and opens a short-lived one in each
job's namespace (see :mod:`lark.netns`); it never forks. All kernel work runs on one worker thread
per engine: pyroute2 0.9 ties each socket's transport to the thread that first used it (and closes
the socket when that thread's event loop goes away), so sharing sockets across a broker's request
threads is unsafe; one thread also serialises the 6-10 ms of kernel work per job. Waiting is not
kernel work: a job that waits for a DHCP lease or a SLAAC address (up to LARK_ADDRESSING_TIMEOUT)
does so on the thread that called ``up``, between two turns on the kernel thread, so the other
jobs' set-ups and teardowns go on meanwhile; a teardown that comes during the wait wins, and the
waiting ``up`` then fails and undoes whatever is left. Several processes may run engines at once
(IPAM is file-locked).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from lark import names, netns
from lark.attach import AttachContext, Mode, mode
from lark.attach.base import AddressWait
from lark.config import LarkConfig, SiteAttachment
from lark.errors import KernelError, LarkError, NotFound
from lark.firewall import make_backend
from lark.firewall.base import (
    FirewallBackend,
    FirewallJob,
    JobCounters,
    PortForward,
    firewall_job_from_dict,
    firewall_job_to_dict,
    needs_host_part,
)
from lark.firewall.isolation import Isolation
from lark.ipam import PortPool, release_allocation
from lark.locks import file_lock
from lark.netlink import link_index, link_names, write_sysctl
from lark.policy import JobRequest
from lark.reconcile import FinalCallback, Reconciler, SweepReport, netns_matches, on_kernel_thread, open_job_netns
from lark.sharetree import ShareTree
from lark.state import JobRecord, StateStore, process_start_time

if TYPE_CHECKING:
    from pyroute2 import IPRoute

__all__ = ["STEP_HOOK", "Engine", "FinalCallback", "SweepReport", "detect_public_ipv4"]
# Called with the name of each step of ``up`` as it completes (None: nothing). Tests set it to kill
# the process at an exact step, which a timer cannot do on a machine of unknown speed.
STEP_HOOK: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(name)


log = logging.getLogger("lark.engine")


class Engine(Reconciler):
    def __init__(self, config: LarkConfig, host_netns: str | None = None) -> None:
        self.config = config
        self.prefix = config.name_prefix
        self.host_netns = host_netns
        self.store = StateStore(config.state_dir)
        self._host: IPRoute | None = None
        self._firewall: FirewallBackend | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lark-kernel")
        self._side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lark-jobside")  # see _build
        self._worker_ident = self._worker.submit(threading.get_ident).result()
        self._forwarding_done = False
        self._public_ipv4: ipaddress.IPv4Address | None = config.public_address
        self._base_lock = config.state_dir / ".firewall-base.lock"
        # Last counters read per job: what a job-side table lost to a flush inside the job's
        # namespace is rebuilt from (the bytes since that read are lost, and logged as such).
        self._last_counters: dict[str, JobCounters] = {}
        self.isolation = Isolation(config.isolate_jobs, config.job_host_allow, config.job_to_job_allow)
        # per-user shares of the uplink (lark.sharetree); when off, it still sweeps an earlier tree
        self.shares = ShareTree(config.shares, self.prefix, config.state_dir, host_netns)

    # ---------------------------------------------------------------- resources

    @property
    def host(self) -> IPRoute:
        if self._host is None:
            self._host = netns.iproute_in(self.host_netns)
        return self._host

    @property
    def firewall(self) -> FirewallBackend:
        if self._firewall is None:
            backend = make_backend(self.config.firewall, self.prefix, self.host_netns, isolation=self.isolation)
            # An intact base stays as it is: the node's isolation is the broker's (its start
            # rewrites it: restore_host_rules(force=True)), not that of any engine opened later.
            backend.ensure_base(keep_existing=True)
            self._firewall = backend
        return self._firewall

    @on_kernel_thread
    def _close_sockets(self) -> None:
        if self._host is not None:
            self._host.close()
            self._host = None

    def close(self) -> None:
        self._close_sockets()
        self._worker.shutdown(wait=True)
        self._side.shutdown(wait=True)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def base_tables_in_use(self) -> Iterator[None]:
        """Keep the shared firewall tables in place while the block runs, as a job's set-up does.

        Any number of holders at once (a shared lock); ``release_if_idle`` in this or another
        process waits for all of them, since a job being set up may not be recorded yet.
        """
        with file_lock(self._base_lock, shared=True):
            yield

    # ---------------------------------------------------------------- up

    def up(self, request: JobRequest, netns_path: str | None = None, holder_pid: int | None = None,
           owner_uid: int | None = None, site: SiteAttachment | None = None,
           global_job_id: str | None = None, accounting_group: str | None = None) -> JobRecord:
        """Give a job its network. ``netns_path`` None: Lark creates (and later deletes) a named one.

        ``site``: the parent and pools of a network profile, instead of the node's ``LARK_<MODE>_*``.
        ``global_job_id``: the job's identity towards a DHCP server (its client identifier).
        ``accounting_group``: the job's HTCondor accounting group, for LARK_SHARES_WEIGHTS.

        The kernel work runs on the engine's kernel thread. A job addressed by the site's network
        (DHCP, SLAAC) waits for its addresses on the calling thread instead (a broker request
        worker, ``lark up``'s main thread), between two turns on the kernel thread, so that other
        jobs' set-ups and teardowns go on meanwhile (see :class:`lark.attach.base.AddressWait`).
        """
        record, pending = self._begin(request, netns_path, holder_pid, owner_uid, site, global_job_id,
                                      accounting_group)
        if pending is None:
            return record  # done in one turn on the kernel thread: every job with static addresses

        def cancelled() -> bool:  # torn down meanwhile (`lark down`, the broker, a sweep)
            return not self._setting_up(record.token)

        try:
            pending.start(cancelled)
            _step("waiting")
            pending.wait(cancelled)
            _step("addressed")
        except BaseException as err:
            removed = isinstance(err, LarkError) and cancelled()  # e.g. its namespace went with the teardown
            self._abandon(record)
            if removed:
                raise NotFound(f"job {record.job_id} was removed while it waited for its addresses") from err
            raise
        return self._complete(record, request, pending)

    @on_kernel_thread
    def _begin(self, request: JobRequest, netns_path: str | None, holder_pid: int | None, owner_uid: int | None,
               site: SiteAttachment | None, global_job_id: str | None,
               accounting_group: str | None) -> tuple[JobRecord, AddressWait | None]:
        """The whole set-up, or (a job waiting for the site's network) all of it up to that wait."""
        # shared: jobs set up side by side; ``release_if_idle`` takes it exclusively, so the shared
        # tables cannot be removed between this job's record and its rules
        with self.base_tables_in_use():
            record = self._new_record(request, netns_path, holder_pid, owner_uid)
            record.global_job_id = global_job_id
            _step("recorded")
            try:
                pending = self._build(record, request, site, accounting_group)
            except BaseException:
                self._teardown(record)
                raise
        return record, pending

    @on_kernel_thread
    def _complete(self, record: JobRecord, request: JobRequest, pending: AddressWait) -> JobRecord:
        """After the wait for the site's network: the addresses (or the fallback), the job's rules.

        The tables are held again; between the two turns the job's record kept ``release_if_idle``
        from removing them.
        """
        with self.base_tables_in_use():
            try:
                if not self._setting_up(record.token):
                    raise NotFound(f"job {record.job_id} was removed while it waited for its addresses")
                job_ipr = netns.iproute_in(record.netns)
                try:
                    pending.finish(AttachContext(self.config, self.host, job_ipr, None), record)
                finally:
                    job_ipr.close()
                attachment = mode(record.mode)
                self._finish(record, request, attachment, None)
            except BaseException:
                self._teardown(record)
                raise
        return record

    @on_kernel_thread
    def _abandon(self, record: JobRecord) -> None:
        """A set-up that failed while it waited: undo what it made (again, if a teardown was first)."""
        self._teardown(record)

    def _setting_up(self, token: str) -> bool:
        """The job's record is still that of a set-up in progress (no teardown came meanwhile)."""
        found = self.store.load(token)
        return found is not None and found.status == "setting-up"

    def _new_record(self, request: JobRequest, netns_path: str | None, holder_pid: int | None,
                    owner_uid: int | None) -> JobRecord:
        token = names.new_token()
        while self.store.load(token) is not None:
            token = names.new_token()
        owned = netns_path is None
        attachment = mode(request.network_type)
        record = JobRecord(
            # owned: created there; else the caller's namespace is pinned there (see _build)
            token=token, job_id=request.job_id, mode=request.network_type, status="setting-up",
            netns=str(netns.NETNS_RUN_DIR / names.netns_name(self.prefix, token)),
            netns_owned=owned, netns_source=netns_path, holder_pid=holder_pid,
            holder_start=process_start_time(holder_pid) if holder_pid else None,
            host_ifname=names.host_ifname(self.prefix, token) if attachment.host_interface else None,
            job_ifname=names.JOB_IFNAME if attachment.job_interface else None,
            bandwidth_in_mbit=request.bandwidth_in_mbit, bandwidth_out_mbit=request.bandwidth_out_mbit,
            firewall=self.config.firewall,
            firewall_job_side=attachment.job_side_firewall,
            owner_uid=owner_uid, creator_pid=os.getpid(), creator_start=process_start_time(os.getpid()),
        )
        self.store.save(record)  # before any kernel object: a crash from here on is swept
        return record

    def _build(self, record: JobRecord, request: JobRequest, site: SiteAttachment | None = None,
               accounting_group: str | None = None) -> AddressWait | None:
        """Everything, or up to the wait for the site's network (then the wait is returned)."""
        attachment = mode(record.mode)
        if record.netns_owned:
            netns.create_named(os.path.basename(record.netns))
        elif record.netns_source is not None:
            netns.pin(record.netns_source, os.path.basename(record.netns))
        record.netns_inode = netns.inode(record.netns)
        _step("namespace")
        config = self.config if site is None else replace(
            self.config, site_attachments={**self.config.site_attachments, record.mode: site})
        attachment.allocate(config, record)
        if request.inbound_ports and attachment.port_forwarding:
            ports, alloc = PortPool(self.config.state_dir, self.config.inbound_port_range).allocate(
                record.token, request.inbound_ports)
            record.ports = ports
            record.allocations.append(alloc)
            record.public_ipv4 = str(self.public_ipv4())
        elif request.inbound_ports and record.ipv4:
            # a job on a site segment is addressable itself: it may listen on any port
            first = self.config.inbound_port_range[0]
            record.ports = first, first + request.inbound_ports - 1
            record.public_ipv4 = record.ipv4_address
        # No save here: allocations are files named by this job's token, and a sweep frees the
        # ones whose token has no live record, so the first and last saves are enough (a job that
        # waits for the site's network is saved once more, before its wait: see below).
        _step("allocated")

        if attachment.routed and self.config.enable_forwarding:
            self._ensure_forwarding()
        # Addresses the site's network gives (DHCP, SLAAC) are known only once the interface is up:
        # such a job's rules (anti-spoofing names them) are built after it.
        late = record.addressing != "static"
        spec = self._firewall_job(record, request, attachment) if attachment.job_interface and not late else None
        # The job side's batch (~1 ms of libnftables work, most of it outside the GIL) runs while
        # the interfaces are made: its rules match the job's interface by name, so they need not
        # wait for it, and they are in place before the job runs. Its namespace goes with the job.
        job_side = None if spec is None else self._side.submit(self._backend_for(record).add_job, spec)
        try:
            job_ipr = netns.iproute_in(record.netns)
            fd = os.open(record.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ctx = AttachContext(self.config, self.host, job_ipr, fd)
                pending = attachment.up(ctx, record)
                _step("attached")
                self._apply_limits(ctx, record, attachment)
                if self.shares.settings.enabled and attachment.shaping and attachment.job_interface:
                    self.shares.join(self.host, self.store, record, ctx.job, accounting_group)
                _step("limited")
            finally:
                os.close(fd)
                job_ipr.close()
        finally:
            if job_side is not None:
                wait([job_side])  # awaited either way; a failure above stays the one reported
        if job_side is not None:
            job_side.result()  # its own failure fails the job too
        if pending is not None:
            # What exists so far, for a teardown that comes while the job waits (allocations,
            # share, client id); the wait's DHCP client is found by its pidfile, named by token.
            self.store.save(record)
            return pending
        self._finish(record, request, attachment, spec)
        return None

    def _finish(self, record: JobRecord, request: JobRequest, attachment: Mode, spec: FirewallJob | None) -> None:
        """The rest once the job's addresses are known: rules built now (``spec`` None), host part, up."""
        if record.addressing != "static" and attachment.job_interface:
            spec = self._firewall_job(record, request, attachment)
            self._backend_for(record).add_job(spec)
        if spec is not None:
            record.firewall_spec = firewall_job_to_dict(spec)
            if needs_host_part(spec):
                self._add_host_part(spec)  # orphaned elements are swept by token, like allocations
            _step("firewall")
        record.status = "up"
        self.store.save(record)

    def _apply_limits(self, ctx: AttachContext, record: JobRecord, attachment: Mode) -> None:
        """Two egress qdiscs: the host end shapes what the job receives, the job end what it sends.

        The job's end sits in its namespace, which belongs to the initial user namespace, so the
        unprivileged job cannot remove the qdisc. macvlan/ipvlan have only the job end: its
        ingress is policed instead.
        """
        if not (record.bandwidth_in_mbit or record.bandwidth_out_mbit) or not attachment.shaping:
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

    def _firewall_job(self, record: JobRecord, request: JobRequest, attachment: Mode) -> FirewallJob:
        addresses = tuple(ipaddress.ip_interface(a).ip for a in (record.ipv4, record.ipv6) if a)
        forward = None
        if record.ports and attachment.port_forwarding:
            forward = PortForward(record.ports[0], record.ports[1],
                                  ipaddress.IPv4Interface(record.ipv4).ip if record.ipv4 else None,
                                  ipaddress.IPv6Interface(record.ipv6).ip if record.ipv6 else None)
        return FirewallJob(
            token=record.token,
            ifname=(record.job_ifname if record.firewall_job_side else record.host_ifname) or "",
            addresses=addresses,
            masquerade_ipv4=attachment.masquerade,
            masquerade_ipv6=attachment.masquerade and self.config.nat_ipv6_masquerade,
            anti_spoof=self.config.anti_spoof,
            allow=request.allow,
            deny=tuple(request.deny) + tuple(self.config.deny),
            classes=self.config.traffic_classes,
            port_forward=forward,
        )

    def _add_host_part(self, spec: FirewallJob) -> None:
        try:
            self.firewall.add_job(spec)
        except KernelError:
            # Only a missing base is mended here: someone removed the shared tables under us
            # (an admin's `nft flush ruleset`). Any other failure is the job's own and stands.
            if self.firewall.base_present():
                raise
            self.firewall.ensure_base()
            self.firewall.add_job(spec)

    def _backend_for(self, record: JobRecord) -> FirewallBackend:
        """Where the job's counters and policy live (its namespace; the host for old records)."""
        if record.firewall_job_side:
            return make_backend(record.firewall, self.prefix, record.netns, job_side=True)
        return self._host_backend_for(record)

    def _host_backend_for(self, record: JobRecord) -> FirewallBackend:
        if record.firewall != self.config.firewall:
            return make_backend(record.firewall, self.prefix, self.host_netns, isolation=self.isolation)
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

    @on_kernel_thread
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
        ns_alive = netns_matches(record)
        self._last_counters.pop(record.token, None)
        # Only the host part is removed. The job-side table is left in place: the job's interface
        # goes below, and the table goes with the namespace once its last process is gone (pin
        # removed). Deleting it would cost 6-17 ms per job end (an nf_tables delete waits for the
        # kernel's deferred cleanup); a later job in the same namespace replaces it (add_job).
        spec = firewall_job_from_dict(record.firewall_spec) if record.firewall_spec else None
        # A job's DHCP client (found by its pidfile); its RELEASE goes out while the link still exists.
        # Only a record addressed by the network can have one: it is saved with its addressing before
        # the client starts, and a client whose set-up died earlier has no record and is the sweep's.
        if record.addressing != "static":
            from lark.addressing.dhcp import stop_client

            stop_client(self.config.state_dir, record.token)
        if spec is not None and (needs_host_part(spec) or not record.firewall_job_side):
            try:
                self._host_backend_for(record).remove_job(spec)
            except LarkError as err:
                errors.append(str(err))
        if record.share:
            try:
                self.shares.leave(self.host, self.store, record)
            except LarkError as err:
                errors.append(str(err))
        if record.netns_owned:
            # fast path: the kernel removes the veth (or macvlan) with the namespace
            netns.delete_named(record.netns)
        else:
            job_ipr = open_job_netns(record) if ns_alive else None
            try:
                mode(record.mode).down(AttachContext(self.config, self.host, job_ipr, None), record)
            except LarkError as err:
                errors.append(str(err))
            finally:
                if job_ipr is not None:
                    job_ipr.close()
            if record.netns_source is not None:
                try:
                    netns.delete_named(record.netns)  # the pin; idempotent
                except LarkError as err:
                    errors.append(str(err))
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

    @on_kernel_thread
    def counters(self, job: str) -> JobCounters:
        record = self.find(job)
        if not mode(record.mode).job_interface:
            return JobCounters()  # nothing to count
        found = self._backend_for(record).counters(record.token)
        self._last_counters[record.token] = found
        return found

    @on_kernel_thread
    def final_counters(self, job: str) -> JobCounters | None:
        """The job's counters right before ``down`` (None when they cannot be read any more).

        Readable after the job's processes are gone: its namespace is pinned until teardown.
        """
        record = self.store.find(job)
        return None if record is None else self._read_final(record)

    def _read_final(self, record: JobRecord) -> JobCounters | None:
        if not mode(record.mode).job_interface:
            return JobCounters()
        if record.firewall_job_side and not netns_matches(record):
            return None
        try:
            return self._backend_for(record).counters(record.token)
        except LarkError as err:
            log.warning("job %s (%s): final counters unreadable: %s", record.job_id, record.token, err)
            return None

    @on_kernel_thread
    def all_counters(self) -> dict[str, JobCounters]:
        """Counters of every job that is up: one raw netlink dump in each job's namespace.

        A job whose job-side table vanished (someone flushed the ruleset inside its namespace)
        gets its rules back here, counting on from the last value read.
        """
        out: dict[str, JobCounters] = {}
        records = [r for r in self.store.all() if r.status == "up" and _counted(r)]
        if any(not r.firewall_job_side for r in records):  # records from before job-side counting
            out.update(self.firewall.all_counters())
        inside = [r for r in records if r.firewall_job_side and netns_matches(r)]
        read: dict[str, JobCounters | BaseException] = {}
        # nftables: one thread visits every job's namespace (a thread per job cost 0.4 ms each)
        nft = [r for r in inside if r.firewall == "nftables"]
        if nft:
            from lark.firewall.nftables import job_side_counters

            read.update(job_side_counters(self.prefix, [(r.token, r.netns) for r in nft]))
        for record in inside:
            if record.token not in read:
                try:
                    read[record.token] = self._backend_for(record).counters(record.token)
                except LarkError as err:
                    read[record.token] = err
        for record in inside:
            found = read[record.token]
            if isinstance(found, JobCounters):
                out[record.token] = found
            elif isinstance(found, NotFound) and netns_matches(record):  # the table went, not the job
                restored = self._restore_job_side(record, self._backend_for(record))
                if restored is not None:
                    out[record.token] = restored
        self._last_counters.update(out)
        return out

    def _restore_job_side(self, record: JobRecord, backend: FirewallBackend) -> JobCounters | None:
        if not record.firewall_spec:
            return None
        last = self._last_counters.get(record.token, JobCounters())
        try:
            backend.add_job(firewall_job_from_dict(record.firewall_spec), carry=last)
        except LarkError as err:
            log.error("job %s (%s): its firewall table inside its namespace is gone and could not be "
                      "restored: %s", record.job_id, record.token, err)
            return None
        log.warning("job %s (%s): its firewall table inside its namespace was gone (flushed?); restored, "
                    "counting on from the last value read (%d bytes in, %d out); bytes since then are lost",
                    record.job_id, record.token, last.bytes_in, last.bytes_out)
        return last

    @on_kernel_thread
    def destroy_base(self) -> None:
        """Remove the shared firewall tables (uninstall, end of a test run)."""
        self.firewall.destroy()

    @on_kernel_thread
    def release_if_idle(self) -> bool:
        """Remove the shared tables when no job is recorded (``lark run`` on a node without a broker)."""
        with file_lock(self._base_lock):  # waits for jobs being set up (they hold it shared)
            if self.store.all():
                return False
            self.firewall.destroy()
            self._firewall = None
            return True

    @on_kernel_thread
    def prefixed_links(self) -> list[str]:
        """Host interfaces that carry this engine's job naming (for tests and leak checks)."""
        return [n for n in link_names(self.host) if names.token_of_ifname(self.prefix, n)]


# -------------------------------------------------------------------- helpers


def _counted(record: JobRecord) -> bool:
    """Whether the job's mode has an interface to count on (a record of an unknown mode: no)."""
    try:
        return mode(record.mode).job_interface
    except LarkError:
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

