"""Reconciliation: the engine's sweep, drift check, liveness and restoring of host rules.

A mixin of :class:`lark.engine.Engine`, apart because it is the other half of the engine's life:
``up``/``down`` (engine.py) make and remove one job from its record; this module compares every
record with the kernel (``check``), removes what no live record owns (``sweep``) and puts back
host rules someone flushed (``restore_host_rules``). Every method runs on the engine's kernel
thread (:func:`on_kernel_thread`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from lark import names, netns
from lark.attach import AttachContext, mode
from lark.errors import KernelError, LarkError, NotFound
from lark.firewall import make_backend
from lark.firewall.base import JobCounters, firewall_job_from_dict, needs_host_part
from lark.ipam import all_allocations, release_allocation
from lark.locks import file_lock
from lark.netlink import delete_link, link_names
from lark.state import JobRecord, holder_alive, process_start_time

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from pyroute2 import IPRoute

    from lark.config import LarkConfig
    from lark.firewall.base import FirewallBackend
    from lark.firewall.isolation import Isolation
    from lark.sharetree import ShareTree
    from lark.state import StateStore

F = TypeVar("F", bound=Callable[..., Any])
FinalCallback = Callable[[JobRecord, JobCounters | None], None]
log = logging.getLogger("lark.engine")


def on_kernel_thread(method: F) -> F:
    """Run an Engine method on the engine's single kernel thread (directly when already on it)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == self._worker_ident:
            return method(self, *args, **kwargs)
        return self._worker.submit(method, self, *args, **kwargs).result()

    return wrapper  # type: ignore[return-value]


@dataclass
class SweepReport:
    removed_jobs: list[str] = field(default_factory=list)
    removed_links: list[str] = field(default_factory=list)
    removed_netns: list[str] = field(default_factory=list)
    removed_firewall: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    stopped_clients: list[str] = field(default_factory=list)  # tokens of DHCP clients no record owned

    def empty(self) -> bool:
        return not any((self.removed_jobs, self.removed_links, self.removed_netns, self.removed_firewall,
                        self.released, self.stopped_clients))


class Reconciler:
    """What the engine provides to reconciliation (declared for the type checker)."""

    if TYPE_CHECKING:
        config: LarkConfig
        prefix: str
        host_netns: str | None
        store: StateStore
        isolation: Isolation
        shares: ShareTree
        _firewall: FirewallBackend | None
        _worker: ThreadPoolExecutor
        _worker_ident: int
        _base_lock: Path

        @property
        def host(self) -> IPRoute: ...

        @property
        def firewall(self) -> FirewallBackend: ...

        def _teardown(self, record: JobRecord) -> None: ...

        def _read_final(self, record: JobRecord) -> JobCounters | None: ...

        def _backend_for(self, record: JobRecord) -> FirewallBackend: ...

        def _host_backend_for(self, record: JobRecord) -> FirewallBackend: ...

    @on_kernel_thread
    def restore_host_rules(self, force: bool = False) -> list[str]:
        """Re-apply the host-side rules when the host's Lark table was removed (an admin's
        ``nft flush ruleset``, a firewall service restart); returns the tokens re-applied.

        Cheap when nothing is missing (a few raw netlink requests with nftables), so the broker
        calls it every ``LARK_FIREWALL_CHECK_INTERVAL`` seconds; ``force`` re-applies every job's
        host part even so (a broker starting up cannot know what happened while it was down).
        Counters are not affected: they live in the jobs' own namespaces. Connections already
        translated keep their NAT (conntrack holds it); new ones need the restored elements.
        """
        with file_lock(self._base_lock, shared=True):  # not while release_if_idle removes the tables
            # Not self.firewall: its first use builds the base, which would hide what is missing.
            firewall = self._firewall or make_backend(self.config.firewall, self.prefix, self.host_netns,
                                                      isolation=self.isolation)
            if firewall.base_present() and not force:
                return []
            if not force:
                log.warning("firewall: the host's Lark rules (table %s) are gone; restoring them", self.prefix)
            firewall.ensure_base()
            self._firewall = firewall
            restored: list[str] = []
            for record in self.store.all():
                if record.status != "up" or not record.firewall_spec:
                    continue
                spec = firewall_job_from_dict(record.firewall_spec)
                if not needs_host_part(spec) and record.firewall_job_side:
                    continue
                try:
                    self._host_backend_for(record).add_job(spec)
                except LarkError as err:
                    log.error("job %s (%s): host rules not restored: %s", record.job_id, record.token, err)
                    continue
                restored.append(record.token)
            log.log(logging.INFO if force else logging.WARNING, "firewall: re-applied the host rules of %d jobs: %s",
                    len(restored), " ".join(restored) or "-")
            return restored

    # ---------------------------------------------------------------- sweep and check

    def is_alive(self, record: JobRecord) -> bool:
        if record.status == "tearing-down":
            return False
        if record.status == "setting-up":
            creator = record.creator_pid
            if creator is not None and process_start_time(creator) != record.creator_start:
                return False
            return True  # still being built by a live process
        if record.netns_source is not None:
            # The pin keeps the namespace whatever happens to the job: liveness follows the path
            # it was pinned from (the holder's /proc/<pid>/ns/net: the holder still in it).
            return holder_alive(record) and path_matches(record.netns_source, record.netns_inode)
        return holder_alive(record) and netns_matches(record)

    @on_kernel_thread
    def sweep(self, on_final: FinalCallback | None = None) -> SweepReport:
        """Remove dead jobs, then every prefixed kernel object and allocation no record owns.

        ``on_final(record, counters)`` is called for every dead job that was up, with its
        counters read just before its teardown (None when unreadable); its exceptions are
        logged and do not stop the sweep.
        """
        report = SweepReport()
        for record in self.store.all():
            if not self.is_alive(record):
                if on_final is not None and record.status == "up":
                    counters = self._read_final(record)
                    try:
                        on_final(record, counters)
                    except Exception:  # noqa: BLE001 - the callback's failure must not stop the sweep
                        log.exception("job %s (%s): final-counters callback failed", record.job_id, record.token)
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
        # classes of jobs gone without a teardown; the whole tree with the last one (or shares off)
        try:
            self.shares.sync(self.host, self.store.all())
        except LarkError as err:  # e.g. the uplink is gone: the rest of the sweep still runs
            log.error("shares: %s", err)
        for alloc, owner in all_allocations(self.config.state_dir):
            if owner not in live and release_allocation(self.config.state_dir, alloc, owner):
                report.released.append(f"{alloc.pool}/{alloc.slot}")
        self._stop_orphan_clients(live, report)
        return report

    def _stop_orphan_clients(self, live: set[str], report: SweepReport) -> None:
        """DHCP clients whose job has no record. A job's client is started by the thread that waits
        for its lease, off the kernel thread: a teardown can come between its record's last look and
        the start, and a process killed right then leaves a client no teardown will find."""
        from lark.addressing import dhcp

        for token in dhcp.client_tokens(self.config.state_dir):
            # looked up again: a job of another process recorded since ``live`` was read is not an orphan
            if token in live or self.store.load(token) is not None:
                continue
            log.warning("sweep: stopping the DHCP client of job %s, which has no record", token)
            dhcp.stop_client(self.config.state_dir, token)
            report.stopped_clients.append(token)

    @on_kernel_thread
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
            job_ipr = open_job_netns(record)
            try:
                ctx = AttachContext(self.config, self.host, job_ipr, None)
                problems += [f"{label}: {p}" for p in mode(record.mode).check(ctx, record)]
            finally:
                if job_ipr is not None:
                    job_ipr.close()
            if not record.firewall_spec:  # a mode without an interface has none
                continue
            if (needs_host_part(firewall_job_from_dict(record.firewall_spec)) or not record.firewall_job_side) \
                    and record.token not in fw_tokens:
                problems.append(f"{label}: host firewall rules (masquerade, port forwards) are missing")
            if record.firewall_job_side:
                try:
                    self._backend_for(record).counters(record.token)
                except NotFound:
                    problems.append(f"{label}: firewall rules inside the job's namespace are missing")
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
        problems += self.shares.check(self.host, records)
        return problems


def open_job_netns(record: JobRecord) -> IPRoute | None:
    """A socket in the job's namespace, or None when it vanished meanwhile (the job just exited)."""
    try:
        return netns.iproute_in(record.netns)
    except (NotFound, KernelError):
        return None


def netns_matches(record: JobRecord) -> bool:
    return path_matches(record.netns, record.netns_inode)


def path_matches(path: str, inode: int) -> bool:
    try:
        return netns.inode(path) == inode
    except NotFound:
        return False
