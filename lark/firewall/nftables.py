"""nftables backend: per-job accounting and policy at the job's boundary, NAT and port forwards
on the host with flat per-packet cost, and isolation of jobs from the host and from each other.

Inside each job's namespace (``job_side=True``, every mode), ``table inet <prefix>``::

    map jobs_out { type ifname : verdict }   map jobs_in { type ifname : verdict }   # lark0 -> job chains
    set nd { type icmpv6_type }  set router_only { type icmpv6_type }    # RS/NS/NA/MLD; RA/redirect
    set net4_<hash>, net6_<hash> { flags interval }   # network lists (deny, allow, classes)
    chain filter_input  { hook input;  iifname vmap @jobs_in }
    chain filter_output { hook output; oifname vmap @jobs_out }
    chain job-<token>-out { icmpv6 type @router_only drop; icmpv6 type @nd return; anti-spoof drop;
                            deny drop; allow drop;
                            counter "total"; <class match> counter return "class:<name>" ... }
    chain job-<token>-in  { icmpv6 type @nd return; counter "total"; class counters keyed on the source }

In the host namespace (``job_side=False``)::

    set nat4 { type ipv4_addr }  set nat6 { type ipv6_addr }       # masqueraded job sources
    map fwd4 { type inet_service : ipv4_addr; flags interval }     # host port range -> job
    map fwd6 { type inet_service : ipv6_addr; flags interval }
    set nd { type icmpv6_type }
    chain filter_input   { hook input;   iifname "<prefix>h*" jump jobs_to_host }
    chain filter_forward { hook forward; iifname "<prefix>h*" oifname "<prefix>h*" jump jobs_to_jobs }
    chain jobs_to_host   { ct state established,related accept; icmpv6 type @nd accept;
                           <LARK_JOB_HOST_ALLOW> accept; drop }
    chain jobs_to_jobs   { ct state established,related accept; <LARK_JOB_TO_JOB_ALLOW> accept; drop }
    chain nat_prerouting  { fib daddr type local meta l4proto {tcp, udp} dnat ip to th dport map @fwd4 ... }
    chain nat_output      { the same for connections the host opens to its own addresses }
    chain nat_postrouting { ip saddr @nat4 oifname != "<prefix>h*" masquerade; ip6 ... @nat6 ... }

Why count inside the job (kernel fact): in the host's LOCAL_OUT hook ``meta oifname`` is the
device of the *original* route (lo for a local destination) even after a ``nat_output`` DNAT
rerouted the packet to a job, so host-side chains keyed on the job's veth missed every
connection the host opened to a job's forwarded port. At the job's own interface every byte in
or out passes exactly once, whatever path it took; inbound DNAT changes only the destination, so
classes still see the real peer, and masquerade happens later, on the host. The table belongs to
a namespace the job cannot administer, and a host ``nft flush ruleset`` does not touch it.

Why this shape otherwise (docs/baselines.md §1, §2 and §5): on the host, a packet does at
most a set/map lookup whatever the number of jobs, and adding or removing a job is only element
operations, which need no rule handles (handle echo made setup grow linearly with N). NAT and
port forwards are set/map elements, never per-job rules. Isolation is a few base rules behind
one jump that only packets from a job veth take.

Control-plane cost with nft 1.0.6 (measured on the machine of docs/baselines.md §0): every nft
run first copies the table's chains, sets and objects into its cache (~2 us each), and every
anonymous set's elements with one request each, and most listings (even ``list tables``) parse every rule too.
Hence: per-job rules hold no anonymous set (single values, ``!=`` chains, or shared named sets),
counters are anonymous rule counters (named counter objects would be copied by every batch), and
the frequent reads (table present, chains, sets, rule counters) use raw netlink dumps
(:mod:`lark.firewall.libnft`) instead of nft listings. ``add_job`` is one batch; re-applying a job
keeps its counts (read first, written back as initial counter values).

Set and map elements carry the job's token as their comment, so removal (and the orphan sweep)
deletes only elements that belong to the job even if an address or port range was reused since.
A job-side table holds one job only, so removing a job there drops the whole table.
nft 1.0.6 has no ``destroy`` command, so removal lists first and deletes what exists, in one batch.

The functions that build batches and parse listings are pure and unit-tested without root
(:mod:`lark.firewall.nftrules`); this module only runs them through :mod:`lark.firewall.libnft`
in the backend's namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from lark import netns as _netns
from lark.errors import NotFound
from lark.firewall import libnft
from lark.firewall.base import FirewallBackend, FirewallJob, JobCounters
from lark.firewall.isolation import Isolation
from lark.firewall.nftrules import (
    FAMILY,
    SETS,
    JsonObj,
    Row,
    TableState,
    base_batch,
    chain_name,
    check_token,
    host_batch,
    initial_counters,
    initial_from_counters,
    job_batch,
    job_counters_from,
    parse_objects,
    removal_batch,
    shared_sets,
)

T = TypeVar("T")


def job_side_counters(prefix: str, jobs: Iterable[tuple[str, str]]) -> dict[str, JobCounters | BaseException]:
    """Counters of many jobs, each read inside its own namespace (``(token, netns path)`` pairs),
    with one thread for all of them (:func:`lark.netns.call_in_each`). A job whose table or
    chains are gone maps to :class:`NotFound`, a namespace that vanished to its error."""
    pairs = list(jobs)
    token_at = {path: check_token(token) for token, path in pairs}

    def read(path: str) -> list[Row]:  # runs inside the namespace at ``path``
        chains = [chain_name(token_at[path], d) for d in ("in", "out")]
        return [r for c in chains for r in libnft.read_rule_counters(prefix, FAMILY, chain=c)]

    rows = _netns.call_in_each([path for _, path in pairs], read)
    out: dict[str, JobCounters | BaseException] = {}
    for (token, _), found in zip(pairs, rows, strict=True):
        if isinstance(found, BaseException):
            out[token] = found
            continue
        counters = job_counters_from(found).get(token)
        out[token] = counters if counters is not None else NotFound(
            f"no nftables counters for job {token} in table {FAMILY} {prefix}")
    return out


# --------------------------------------------------------------------------------------------
# The backend (side effects only)


class NftablesBackend(FirewallBackend):
    name = "nftables"

    def __init__(self, prefix: str, netns: str | None = None, job_side: bool = False,
                 use_library: bool = True, isolation: Isolation | None = None) -> None:
        super().__init__(prefix, netns, job_side, isolation)
        self.use_library = use_library
        self._base_ready = False

    # -- helpers (the _-functions taking a session run inside the backend's namespace thread)

    def _session(self, fn: Callable[[libnft.Session], T]) -> T:
        # the host's backend lives as long as the broker: keep its context (see libnft._persistent)
        return libnft.with_session(self.netns, fn, use_library=self.use_library, persistent=not self.job_side)

    def _base_batch(self) -> list[JsonObj]:
        return base_batch(self.prefix, self.job_side, self.isolation)

    def _state(self, session: libnft.Session, element_sets: Iterable[str]) -> TableState | None:
        """Chains and named sets (raw netlink: no nft cache fill), plus the elements of
        ``element_sets`` (``list set``/``list map`` stay cheap in nft). None: no table."""
        if not libnft.table_exists(self.prefix, FAMILY):
            return None
        state = TableState(chains=libnft.chain_names(self.prefix, FAMILY), sets=libnft.set_names(self.prefix, FAMILY))
        for name in element_sets:
            if name in state.sets:
                kind = "set" if name in SETS else "map"
                parse_objects(session.list(f"list {kind} {FAMILY} {self.prefix} {name}"), self.prefix, state)
        return state

    def _all_element_sets(self) -> tuple[str, ...]:
        # jobs_out/jobs_in on the host side only in a table from before job-side counting
        return ("jobs_out", "jobs_in") if self.job_side else ("jobs_out", "jobs_in", "fwd4", "fwd6", *SETS)

    def _remove(self, session: libnft.Session, state: TableState | None, doomed: set[str],
                shared: Iterable[str]) -> None:
        if state is None or not doomed:
            return
        session.apply(removal_batch(self.prefix, state, doomed))
        for name in shared:
            if name in state.sets:
                # A set still used by another job's rule refuses deletion (EBUSY): the kernel
                # does the reference check that would otherwise need every rule parsed.
                try:
                    session.apply([{"delete": {"set": {"family": FAMILY, "table": self.prefix, "name": name}}}])
                except libnft.NftError:
                    pass

    # -- interface

    def ensure_base(self, keep_existing: bool = False) -> None:
        if not (keep_existing and self.base_present()):
            libnft.run_batch(self._base_batch(), self.netns, use_library=self.use_library)
        self._base_ready = True

    def base_present(self) -> bool:
        # Raw netlink only (three small dumps, no nft cache fill): cheap enough for the broker's
        # periodic flush check. An `nft flush ruleset` removes the whole table.
        wanted: dict[str, set[str]] = {"chain": set(), "set": set()}
        for command in self._base_batch():
            for kind, obj in command.get("add", {}).items():
                if kind in ("chain", "set", "map"):
                    wanted["set" if kind == "map" else kind].add(obj["name"])

        def check() -> bool:
            if not libnft.table_exists(self.prefix, FAMILY):
                return False
            return (wanted["chain"] <= libnft.chain_names(self.prefix, FAMILY)
                    and wanted["set"] <= libnft.set_names(self.prefix, FAMILY))

        return _netns.call_in(self.netns, check)

    def add_job(self, job: FirewallJob, carry: JobCounters | None = None) -> None:
        chains = [chain_name(check_token(job.token), d) for d in ("in", "out")]
        if not self.job_side:
            if not self._base_ready:
                self.ensure_base()
            batch = host_batch(self.prefix, job)
            self._session(lambda session: session.apply(batch))
            return

        def apply(session: libnft.Session) -> None:
            # One transaction in the job's namespace: the base (a fresh namespace has no table)
            # and the job's chains. Usually nothing to carry (a new job); when re-applying, the
            # counts are read first (raw read of two chains, ~0.1 ms).
            present = libnft.table_exists(self.prefix, FAMILY)
            rows = [r for c in chains for r in libnft.read_rule_counters(self.prefix, FAMILY, chain=c)
                    if present]
            initial = initial_counters(rows) if rows else (
                initial_from_counters(job.token, carry) if carry is not None else None)
            batch = [] if present and self._base_ready else self._base_batch()
            if present and not rows:
                # Another job's table left in this namespace (teardown does not drop job-side
                # tables: they die with the namespace): start from a clean one.
                batch = [{"delete": {"table": {"family": FAMILY, "name": self.prefix}}}, *self._base_batch()]
            session.apply(batch + job_batch(self.prefix, job, True, initial))

        self._session(apply)
        self._base_ready = True

    def remove_job(self, job: FirewallJob) -> None:
        token = check_token(job.token)
        if self.job_side:
            # A job-side table belongs to one job (its own namespace): dropping it is one raw
            # netlink batch and leaves nothing (shared sets included).
            libnft.delete_table(self.prefix, FAMILY, self.netns)
            self._base_ready = False
            return
        # Only the sets and maps this job can have elements in are listed (and the legacy
        # verdict maps, whose elements only a table from before job-side counting holds).
        names = ["jobs_out", "jobs_in"]
        names += ["nat4"] * job.masquerade_ipv4 + ["nat6"] * job.masquerade_ipv6
        names += ["fwd4", "fwd6"] if job.port_forward is not None else []

        def remove(session: libnft.Session) -> None:
            state = self._state(session, names)
            self._remove(session, state, {token} & (state.tokens() if state else set()), ())

        self._session(remove)

    def counters(self, token: str) -> JobCounters:
        chains = [chain_name(check_token(token), d) for d in ("in", "out")]

        def read() -> list[Row]:
            return [r for c in chains for r in libnft.read_rule_counters(self.prefix, FAMILY, chain=c)]

        found = job_counters_from(_netns.call_in(self.netns, read)).get(token)
        if found is None:
            raise NotFound(f"no nftables counters for job {token} in table {FAMILY} {self.prefix}")
        return found

    def all_counters(self) -> dict[str, JobCounters]:
        return job_counters_from(libnft.read_rule_counters(self.prefix, FAMILY, self.netns))

    def job_tokens(self) -> set[str]:
        state = self._session(lambda session: self._state(session, self._all_element_sets()))
        return set() if state is None else state.tokens()

    def remove_orphans(self, keep: set[str]) -> set[str]:
        def sweep(session: libnft.Session) -> set[str]:
            state = self._state(session, self._all_element_sets())
            if state is None:
                return set()
            orphans = state.tokens() - set(keep)
            self._remove(session, state, orphans, shared_sets(state))
            return orphans

        return self._session(sweep)

    def destroy(self) -> None:
        def drop(session: libnft.Session) -> None:
            if libnft.table_exists(self.prefix, FAMILY):
                session.execute(f"delete table {FAMILY} {self.prefix}")

        self._session(drop)
        self._base_ready = False
        if not self.job_side:
            libnft.forget_session(self.netns)  # its socket would keep a deleted namespace alive
