"""iptables backend (python-iptables / libiptc) for hosts without nftables.

Per-packet cost: the host's filter chains hold no per-job rule any more (counting and policy
moved into each job's namespace, one job per chain set there), so a flow's packets no longer walk
every job's jump rules (2 per job in FORWARD before; ~4 ns per rule with legacy x_tables, ~15 ns
with the nf_tables-based iptables, docs/baselines.md §2). What stays linear in the
number of jobs is the nat table, which only the first packet of each connection walks (one
MASQUERADE rule per job address, DNAT rules per forwarded range), and setup and teardown
(libiptc replaces whole tables, and finding a job's rules scans them in Python). Prefer the
nftables backend wherever ``nft`` exists (NAT as set elements: flat).

The same split as the nftables backend (see its docstring for why): counting and policy inside
each job's namespace, masquerade, port forwards and isolation on the host.

Inside a job's namespace (``job_side=True``, every mode; ``filter``, per address family)::

    INPUT  -> <prefix>-INPUT:   -i <if> -j <prefix>-<token>-in
    OUTPUT -> <prefix>-OUTPUT:  -o <if> -j <prefix>-<token>-out
    <prefix>-<token>-out: RA/redirect DROP, ND RETURN (IPv6); -j ...-src (anti-spoof); deny DROP; -j ...-dst
                          (allow list); counter "total"; class counters (-d net ... -j RETURN)
    <prefix>-<token>-in:  ND RETURN (IPv6); counter "total"; class counters keyed on the source

In the host namespace (per address family)::

    filter INPUT   -> <prefix>-INPUT:   -i <prefix>h+ -j <prefix>-JOBHOST          (isolation)
    filter FORWARD -> <prefix>-FORWARD: -i <prefix>h+ -o <prefix>h+ -j <prefix>-JOBJOB
    <prefix>-JOBHOST: ctstate ESTABLISHED,RELATED RETURN; ND RETURN; <LARK_JOB_HOST_ALLOW> RETURN; DROP
    <prefix>-JOBJOB:  ctstate ESTABLISHED,RELATED RETURN; -d <LARK_JOB_TO_JOB_ALLOW> RETURN; DROP
    nat <prefix>-POSTROUTING: -s <job> ! -o <prefix>h+ -j MASQUERADE
    nat <prefix>-PREROUTING / <prefix>-OUTPUT: -m addrtype --dst-type LOCAL -p tcp|udp --dport a:b -j DNAT

The host's filter chains hold no per-job rule: ``ensure_base`` flushes and refills them. The
plans (which rule goes into which chain) are pure and live in :mod:`lark.firewall.iptplans`.

Every rule Lark puts into a shared chain carries ``-m comment --comment <token>``; counters carry
"total" or "class:<name>". Per table, one libiptc commit applies a job atomically; the four
tables (filter/nat x IPv4/IPv6) are committed one after the other, and a failure part-way
removes what was committed.

python-iptables pitfalls handled here:
* its ``Table`` objects are process-wide singletons whose libiptc handle (and socket) belong to
  the namespace of the thread that last refreshed them; every use therefore refreshes inside the
  target namespace (``call_in``), under one lock, and closes the handles before leaving;
* with iptables 1.8.9 an extension library with IPv4 and IPv6 variants (libxt_NAT: DNAT,
  MASQUERADE; libxt_addrtype) registers only the family active when it is first loaded, so the
  other family's targets are "not found"; see :func:`_load_iptc` for the workaround.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from lark import netns as _netns
from lark.errors import KernelError, NotFound
from lark.firewall.base import FirewallBackend, FirewallJob, JobCounters
from lark.firewall.iptplans import (
    RuleSpec,
    Sums,
    base_plans,
    check_token,
    counter_sums,
    job_chain,
    job_counters,
    job_plans,
    merge_sums,
    parse_job_chain,
    sum_counters,
)
from lark.firewall.isolation import Isolation

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# python-iptables (side effects)

_lock = threading.Lock()
_iptc: ModuleType | None = None
_keep: list[ctypes.CDLL] = []  # copies of extension libraries loaded for IPv6 (never unloaded)
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
# Extension libraries that register separate IPv4 and IPv6 variants, and one name in each.
_DUAL_FAMILY_EXTENSIONS = (("target", "MASQUERADE", "libxt_NAT.so"), ("match", "addrtype", "libxt_addrtype.so"))


def _load_iptc() -> ModuleType:
    """Import python-iptables once (slow: ~225 ms) and make its dual-family extensions work for
    IPv6 too. Must be called with ``_lock`` held, before anything else uses python-iptables.

    libxtables 1.8.9 registers only the variants of the family active when a library's
    constructor runs, and a second registration of the same structures makes it exit() the
    process. So each such library is loaded normally for IPv4, and a private in-memory copy
    (other inode, hence other static structures) is loaded with IPv6 active. The IPv6 name must
    not be looked up before that: a failed lookup keeps failing afterwards.
    """
    global _iptc
    if _iptc is not None:
        return _iptc
    import iptc
    import iptc.xtables as xt

    for kind, name, libname in _DUAL_FAMILY_EXTENSIONS:
        if not getattr(xt.xtables(NFPROTO_IPV4), f"find_{kind}")(name):
            continue  # not installed: rules that need it fail with a clear error
        fd = os.memfd_create(f"lark-{libname}")
        try:
            with open(os.path.join(xt._xtables_libdir, libname), "rb") as src:
                os.write(fd, src.read())
            xt.xtables._xtables_set_nfproto(NFPROTO_IPV6)
            _keep.append(ctypes.CDLL(f"/proc/self/fd/{fd}"))
        finally:
            os.close(fd)
        if not getattr(xt.xtables(NFPROTO_IPV6), f"find_{kind}")(name):
            raise KernelError(f"iptables: cannot load the IPv6 {kind} {name} from {libname}")
    _iptc = iptc
    return iptc


def _existing_tables(family: int) -> set[str]:
    """Legacy tables present in this thread's namespace (reading does not create them)."""
    name = "ip_tables_names" if family == 4 else "ip6_tables_names"
    try:
        with open(f"/proc/thread-self/net/{name}") as f:
            return {line.strip() for line in f if line.strip()}
    except FileNotFoundError:
        return set()


class _Tables:
    """The libiptc handles opened in one namespace thread; nothing is kept past ``close``."""

    def __init__(self, iptc: ModuleType) -> None:
        self.iptc = iptc
        self.open: dict[tuple[int, str], Any] = {}

    def get(self, family: int, name: str) -> Any:
        key = (family, name)
        if key not in self.open:
            cls = self.iptc.Table if family == 4 else self.iptc.Table6
            table = cls(name, autocommit=False)
            table.refresh()  # binds a fresh handle (and socket) to this thread's namespace
            self.open[key] = table
        return self.open[key]

    def commit(self, family: int, name: str) -> None:
        """Commit one table (a no-op in libiptc when nothing changed) and drop its handle, which
        is not reliable after a commit; the next ``get`` reads the table afresh."""
        table = self.open.pop((family, name))
        try:
            table.commit()
        except self.iptc.IPTCError as err:
            raise KernelError(f"iptables: commit of IPv{family} {name} failed: {err}") from None
        finally:
            table.close()

    def close(self) -> None:
        for table in self.open.values():
            try:
                table.close()  # autocommit is off: frees the handle, discards anything uncommitted
            except Exception:  # noqa: BLE001 - closing must not mask the real error
                pass
        self.open.clear()

    def rule(self, family: int, spec: RuleSpec, counters: tuple[int, int] | None = None) -> Any:
        rule = self.iptc.Rule() if family == 4 else self.iptc.Rule6()
        for attr in ("src", "dst", "protocol"):
            if getattr(spec, attr) is not None:
                setattr(rule, attr, getattr(spec, attr))
        if spec.in_iface is not None:
            rule.in_interface = spec.in_iface
        if spec.out_iface is not None:
            rule.out_interface = spec.out_iface
        for name, params in spec.matches:
            match = rule.create_match(name)
            for key, value in params:
                setattr(match, key, value)
        if spec.comment is not None:
            rule.create_match("comment").comment = spec.comment
        if spec.target in self.iptc.Target.STANDARD_TARGETS:
            target = rule.create_target(spec.target)
        else:
            # A jump to a chain: python-iptables would look the chain up in every table through
            # its process-wide Table objects (opening handles, or crashing on closed ones), so
            # build a plain standard target and name the chain; libiptc resolves it on append.
            target = rule.create_target("")
            target.standard_target = spec.target
        for key, value in spec.target_args:
            setattr(target, key, value)
        if counters is not None:
            rule.counters = counters
        return rule


XT_MATCH_HEADER = 32  # struct xt_entry_match: u16 size, char name[29], u8 revision
XT_TARGET_NAME = slice(2, 31)  # struct xt_entry_target: u16 size, char name[29], u8 revision


def _entry_comment(raw: bytes, header: int, target_offset: int) -> str | None:
    """The ``-m comment`` text of a raw ipt_entry/ip6t_entry, read without python-iptables.

    python-iptables builds Match objects (each parsed through libxtables) for every rule it
    lists, ~1 ms a rule here; reading comments and counters straight from the entries keeps
    polls and sweeps cheap.
    """
    pos = header
    while pos + XT_MATCH_HEADER <= target_offset:
        size = int.from_bytes(raw[pos:pos + 2], "little")
        name = raw[pos + 2:pos + 31].split(b"\0", 1)[0]
        if name == b"comment":
            return raw[pos + XT_MATCH_HEADER:pos + size].split(b"\0", 1)[0].decode(errors="replace")
        if size < XT_MATCH_HEADER:
            break
        pos += size
    return None


@dataclass(frozen=True)
class Row:
    """One rule as listed from libiptc: comment, target or jump chain, counters."""

    comment: str | None
    target: str
    packets: int
    bytes: int


def _rows(table: Any, chain: str) -> list[Row]:
    rows = []
    entry = table.first_rule(chain)
    while entry:
        raw = ctypes.string_at(ctypes.addressof(entry), entry.next_offset)
        header = ctypes.sizeof(type(entry))
        jump = table.get_target(entry)  # chain name (or verdict) for standard targets
        target = jump.decode() if isinstance(jump, bytes) else (jump or "")
        if not target:
            target = raw[entry.target_offset:][XT_TARGET_NAME].split(b"\0", 1)[0].decode()
        rows.append(Row(_entry_comment(raw, header, entry.target_offset), target,
                        entry.counters.pcnt, entry.counters.bcnt))
        entry = table.next_rule(entry)
    return rows


def _delete_num(table: Any, chain: str, index: int) -> None:
    """Delete rule ``index`` (0-based) of ``chain``: exact, where python-iptables' delete_rule
    compares rule contents."""
    if not table._iptc.iptc_delete_num_entry(chain.encode(), index, table._handle):
        raise KernelError(f"iptables: cannot delete rule {index} of {chain}: {table.strerror()}")


class IptablesBackend(FirewallBackend):
    name = "iptables"

    def __init__(self, prefix: str, netns: str | None = None, job_side: bool = False,
                 isolation: Isolation | None = None) -> None:
        super().__init__(prefix, netns, job_side, isolation)
        self._base_ready = False

    # -- plumbing

    def _run(self, fn: Callable[[_Tables], T]) -> T:
        def work() -> T:
            with _lock:
                iptc = _load_iptc()
                tables = _Tables(iptc)
                try:
                    return fn(tables)
                except (iptc.IPTCError, iptc.xtables.XTablesError) as err:
                    raise KernelError(f"iptables: {err}") from None
                finally:
                    tables.close()

        return _netns.call_in(self.netns, work)

    def _ensure_base(self, tables: _Tables) -> None:
        for plan in base_plans(self.prefix, self.job_side, self.isolation):
            table = tables.get(plan.family, plan.table)
            for chain in plan.chains:
                if not table.is_chain(chain):
                    table.create_chain(chain)
            for chain in plan.rewrite:  # the host's filter chains hold only base rules
                table.flush_entries(chain)
            for spec in plan.fill:
                tables.iptc.Chain(table, spec.chain).append_rule(tables.rule(plan.family, spec))
            for spec in plan.rules:
                if not any(r.target == spec.target for r in _rows(table, spec.chain)):
                    # First, so accounting sees job traffic whatever the host's own rules do;
                    # Lark's chains only RETURN or DROP, so the host's rules still apply after.
                    tables.iptc.Chain(table, spec.chain).insert_rule(tables.rule(plan.family, spec), 0)
            tables.commit(plan.family, plan.table)

    def _scan(self, tables: _Tables, family: int, name: str) -> tuple[Any, dict[tuple[str, str], list[int]], set[str]]:
        """(table, (shared chain, token) -> rule indexes, job chains) of one table."""
        table = tables.get(family, name)
        owned: dict[tuple[str, str], list[int]] = {}
        job_chains: set[str] = set()
        for chain in table.chains:
            cname = chain.name
            if parse_job_chain(self.prefix, cname) is not None:
                job_chains.add(cname)
                continue
            if not cname.startswith(self.prefix + "-"):
                continue
            for index, row in enumerate(_rows(table, cname)):
                token = parse_job_chain(self.prefix, row.target) or row.comment
                if token:
                    owned.setdefault((cname, token), []).append(index)
        return table, owned, job_chains

    def _remove_tokens(self, tables: _Tables, tokens: set[str], commit: bool = True) -> set[str]:
        """Delete the rules and chains of ``tokens`` in every table present; return tokens seen."""
        seen: set[str] = set()
        for family in (4, 6):
            present = _existing_tables(family)
            for name in ("filter", "nat"):
                if name not in present:
                    continue
                table, owned, job_chains = self._scan(tables, family, name)
                changed = False
                doomed_rules: dict[str, list[int]] = {}
                for (cname, token), indexes in owned.items():
                    if token in tokens:
                        seen.add(token)
                        doomed_rules.setdefault(cname, []).extend(indexes)
                for cname, indexes in doomed_rules.items():
                    for index in sorted(indexes, reverse=True):  # from the end: lower indexes stay valid
                        _delete_num(table, cname, index)
                    changed = True
                doomed = [c for c in job_chains if parse_job_chain(self.prefix, c) in tokens]
                for cname in doomed:  # flush all first: -out jumps to -src/-dst
                    table.flush_entries(cname)
                for cname in doomed:
                    table.delete_chain(cname)
                    seen.add(parse_job_chain(self.prefix, cname) or "")
                    changed = True
                if changed and commit:
                    tables.commit(family, name)
        seen.discard("")
        return seen

    def _job_sums(self, tables: _Tables, token: str | None) -> dict[str, tuple[Sums, Sums]]:
        """token -> (in sums, out sums) over both families, for one token or all."""
        result: dict[str, tuple[Sums, Sums]] = {}
        for family in (4, 6):
            if "filter" not in _existing_tables(family):
                continue
            table = tables.get(family, "filter")
            for chain in table.chains:
                found = parse_job_chain(self.prefix, chain.name)
                if found is None or (token is not None and found != token):
                    continue
                direction = chain.name.rsplit("-", 1)[1]
                if direction not in ("in", "out"):
                    continue
                rows = [(r.comment, r.packets, r.bytes) for r in _rows(table, chain.name)]
                sin, sout = result.get(found, ({}, {}))
                if direction == "in":
                    sin = merge_sums(sin, sum_counters(rows))
                else:
                    sout = merge_sums(sout, sum_counters(rows))
                result[found] = (sin, sout)
        return result

    # -- interface

    def ensure_base(self, keep_existing: bool = False) -> None:
        if not (keep_existing and self.base_present()):
            self._run(self._ensure_base)
        self._base_ready = True

    def base_present(self) -> bool:
        def check(tables: _Tables) -> bool:
            for plan in base_plans(self.prefix, self.job_side, self.isolation):
                if plan.table not in _existing_tables(plan.family):
                    return False
                table = tables.get(plan.family, plan.table)
                if not all(table.is_chain(chain) for chain in plan.chains):
                    return False
                if not all(any(r.target == spec.target for r in _rows(table, spec.chain)) for spec in plan.rules):
                    return False  # a built-in chain lost its jump (an admin's `iptables -F`)
            return True

        return self._run(check)

    def add_job(self, job: FirewallJob, carry: JobCounters | None = None) -> None:
        plans = job_plans(self.prefix, job, self.job_side)
        start = counter_sums(carry) if carry is not None else ({}, {})

        def apply(tables: _Tables) -> None:
            if not self._base_ready:
                self._ensure_base(tables)
            # Re-applying keeps the job's counts: read them, then replace the job's rules.
            sums = self._job_sums(tables, job.token)
            sin, sout = sums.get(job.token, start)
            carry = {job_chain(self.prefix, job.token, "in"): dict(sin),
                     job_chain(self.prefix, job.token, "out"): dict(sout)}
            doomed = {job.token}
            if self.job_side:
                # another job's rules left in this namespace (teardown leaves job-side rules to
                # die with the namespace) must not police or count this job
                doomed |= self._tokens(tables)
            self._remove_tokens(tables, doomed, commit=False)
            for plan in plans:
                table = tables.get(plan.family, plan.table)
                for chain in plan.chains:
                    table.create_chain(chain)
                for spec in plan.rules:
                    # The families' counters were summed; the first rule with the comment gets it.
                    counts = carry.get(spec.chain, {}).pop(spec.comment, None) if spec.comment else None
                    tables.iptc.Chain(table, spec.chain).append_rule(tables.rule(plan.family, spec, counts))
            # Nothing reaches the kernel until every rule was built; then one commit per table.
            committed: list[tuple[int, str]] = []
            try:
                for key in sorted(tables.open, key=lambda k: (k[1] != "filter", k[0])):
                    tables.commit(*key)
                    committed.append(key)
            except Exception:
                if committed:
                    tables.close()
                    self._remove_tokens(tables, {job.token})
                raise

        self._run(apply)
        self._base_ready = True

    def remove_job(self, job: FirewallJob) -> None:
        token = check_token(self.prefix, job.token)
        self._run(lambda tables: self._remove_tokens(tables, {token}))

    def counters(self, token: str) -> JobCounters:
        sums = self._run(lambda tables: self._job_sums(tables, token))
        if token not in sums:
            raise NotFound(f"no iptables rules for job {token} (prefix {self.prefix})")
        return job_counters(*sums[token])

    def all_counters(self) -> dict[str, JobCounters]:
        sums = self._run(lambda tables: self._job_sums(tables, None))
        return {token: job_counters(*pair) for token, pair in sorted(sums.items())}

    def _tokens(self, tables: _Tables) -> set[str]:
        tokens: set[str] = set()
        for family in (4, 6):
            present = _existing_tables(family)
            for name in ("filter", "nat"):
                if name in present:
                    _, owned, job_chains = self._scan(tables, family, name)
                    tokens |= {token for _, token in owned}
                    tokens |= {t for c in job_chains if (t := parse_job_chain(self.prefix, c))}
        return tokens

    def job_tokens(self) -> set[str]:
        return self._run(self._tokens)

    def remove_orphans(self, keep: set[str]) -> set[str]:
        def sweep(tables: _Tables) -> set[str]:
            orphans = self._tokens(tables) - set(keep)
            tables.close()  # _tokens opened handles; start the removal from fresh ones
            if orphans:
                self._remove_tokens(tables, orphans)
            return orphans

        return self._run(sweep)

    def destroy(self) -> None:
        def drop(tables: _Tables) -> None:
            for family in (4, 6):
                present = _existing_tables(family)
                for name in ("filter", "nat"):
                    if name not in present:
                        continue
                    table = tables.get(family, name)
                    ours = [c.name for c in table.chains if c.name.startswith(self.prefix + "-")]
                    if not ours:
                        continue
                    for chain in table.chains:
                        if chain.name in ours or not table.builtin_chain(chain.name):
                            continue
                        rows = _rows(table, chain.name)
                        for index in range(len(rows) - 1, -1, -1):
                            if rows[index].target in ours:
                                _delete_num(table, chain.name, index)
                    for cname in ours:
                        table.flush_entries(cname)
                    for cname in ours:
                        table.delete_chain(cname)
                    tables.commit(family, name)

        self._run(drop)
        self._base_ready = False
