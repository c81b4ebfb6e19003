"""iptables plans (pure): which rules go into which table, and counter arithmetic.

The layout they describe, and why, is in :mod:`lark.firewall.iptables`, which applies them with
python-iptables. Nothing here touches the kernel, so it is unit-tested without root.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from lark.firewall.base import ClassCounters, FirewallJob, JobCounters
from lark.firewall.isolation import Isolation
from lark.values import IPNetwork

TOTAL = "total"
CLASS_PREFIX = "class:"
# Link upkeep, never job traffic: router solicitation, neighbour solicitation/advertisement, and
# multicast listener queries/reports (MLD; the job's kernel reports when its link comes up).
ND_TYPES = ("133", "135", "136", "130", "131", "132", "143")
ROUTER_ONLY = ("134", "137")  # router advertisement, redirect
SUFFIXES = ("in", "out", "src", "dst")
MAX_CHAIN = 28  # XT_EXTENSION_MAXNAMELEN - 1
TOKEN_RE = re.compile(r"^[A-Za-z0-9_.]+$")  # as for nftables: no "-", names are split on it

HOST_FILTER_HOOKS = ("FORWARD", "INPUT")
JOB_FILTER_HOOKS = ("INPUT", "OUTPUT")
ISOLATION_CHAINS = ("JOBHOST", "JOBJOB")  # host filter chains behind <prefix>-INPUT / -FORWARD
NAT_HOOKS = ("PREROUTING", "OUTPUT", "POSTROUTING")


# --------------------------------------------------------------------------------------------
# Plans (pure): what goes into which table


@dataclass(frozen=True)
class RuleSpec:
    """One iptables rule, as python-iptables attributes. ``target`` "" only counts."""

    chain: str
    target: str = ""
    src: str | None = None  # "!addr/len" negates, as python-iptables expects
    dst: str | None = None
    in_iface: str | None = None
    out_iface: str | None = None
    protocol: str | None = None
    matches: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    target_args: tuple[tuple[str, str], ...] = ()
    comment: str | None = None


@dataclass(frozen=True)
class TablePlan:
    family: int  # 4 or 6
    table: str  # "filter" or "nat"
    chains: tuple[str, ...]  # chains to create (job chains, or the shared base chains)
    rules: tuple[RuleSpec, ...]
    # base plans only: chains flushed and refilled with ``fill`` by every ensure_base
    rewrite: tuple[str, ...] = ()
    fill: tuple[RuleSpec, ...] = ()


def check_token(prefix: str, token: str) -> str:
    if not TOKEN_RE.match(token):
        raise ValueError(f"job token {token!r} must consist of [A-Za-z0-9_.]")
    longest = len(job_chain(prefix, token, "out"))
    if longest > MAX_CHAIN:
        raise ValueError(f"job token {token!r} is too long for iptables chain names "
                         f"({longest} > {MAX_CHAIN} characters with prefix {prefix!r})")
    return token


def job_chain(prefix: str, token: str, suffix: str) -> str:
    return f"{prefix}-{token}-{suffix}"


def base_chain(prefix: str, hook: str) -> str:
    return f"{prefix}-{hook}"


def parse_job_chain(prefix: str, name: str) -> str | None:
    """The token of a job chain name, None for anything else (base chains are upper case)."""
    if not name.startswith(prefix + "-"):
        return None
    rest = name[len(prefix) + 1:]
    token, _, suffix = rest.rpartition("-")
    return token if token and suffix in SUFFIXES else None


def _net(net: IPNetwork) -> str:
    return f"{net.network_address}/{net.prefixlen}"


def _fam(nets: Iterable[IPNetwork], family: int) -> list[IPNetwork]:
    return [n for n in nets if n.version == family]


def base_plans(prefix: str, job_side: bool, isolation: Isolation | None = None) -> list[TablePlan]:
    """The shared chains, and the jumps from the built-in chains into them (inserted first)."""
    hooks = JOB_FILTER_HOOKS if job_side else HOST_FILTER_HOOKS
    plans = []
    for family in (4, 6):
        chains = tuple(base_chain(prefix, h) for h in hooks)
        jumps = tuple(RuleSpec(h, base_chain(prefix, h)) for h in hooks)
        if job_side:
            plans.append(TablePlan(family, "filter", chains, jumps))
        else:
            extra = tuple(base_chain(prefix, c) for c in ISOLATION_CHAINS)
            plans.append(TablePlan(family, "filter", chains + extra, jumps, rewrite=chains + extra,
                                   fill=tuple(isolation_rules(prefix, isolation, family))))
        if not job_side:
            plans.append(TablePlan(family, "nat", tuple(base_chain(prefix, h) for h in NAT_HOOKS),
                                   tuple(RuleSpec(h, base_chain(prefix, h)) for h in NAT_HOOKS)))
    return plans


def isolation_rules(prefix: str, isolation: Isolation | None, family: int) -> list[RuleSpec]:
    """The host's isolation rules of one family (RETURN: on to the host's own rules; DROP: final)."""
    if isolation is None or not isolation.enabled:
        return []
    jobs = f"{prefix}h+"
    to_host, to_jobs = base_chain(prefix, "JOBHOST"), base_chain(prefix, "JOBJOB")
    established = (("conntrack", (("ctstate", "ESTABLISHED,RELATED"),)),)
    rules = [RuleSpec(base_chain(prefix, "INPUT"), to_host, in_iface=jobs),
             RuleSpec(to_host, "RETURN", matches=established)]
    if family == 6:
        rules += [RuleSpec(to_host, "RETURN", protocol="58", matches=(("icmp6", (("icmpv6_type", nd),)),))
                  for nd in ND_TYPES]
    for hole in isolation.host_allow:
        if hole.network is not None and hole.network.version != family:
            continue
        where = {"dst": _net(hole.network)} if hole.network is not None else {}
        if hole.protocol is not None:
            ports = str(hole.first) if hole.first == hole.last else f"{hole.first}:{hole.last}"
            rules.append(RuleSpec(to_host, "RETURN", protocol=hole.protocol,
                                  matches=((hole.protocol, (("dport", ports),)),), **where))
        else:
            rules.append(RuleSpec(to_host, "RETURN", **where))
    rules.append(RuleSpec(to_host, "DROP"))
    if isolation.job_to_job is True:
        return rules
    rules += [RuleSpec(base_chain(prefix, "FORWARD"), to_jobs, in_iface=jobs, out_iface=jobs),
              RuleSpec(to_jobs, "RETURN", matches=established)]
    rules += [RuleSpec(to_jobs, "RETURN", dst=_net(n)) for n in _fam(isolation.job_to_job or (), family)]
    rules.append(RuleSpec(to_jobs, "DROP"))
    return rules


def _counter_rules(chain: str, job: FirewallJob, family: int, key: str) -> list[RuleSpec]:
    rules = [RuleSpec(chain, comment=TOTAL)]
    for cls in job.classes:
        for net in _fam(cls.networks, family):
            where = {"src": _net(net)} if key == "src" else {"dst": _net(net)}
            rules.append(RuleSpec(chain, "RETURN", comment=CLASS_PREFIX + cls.name, **where))
    return rules


def job_plans(prefix: str, job: FirewallJob, job_side: bool) -> list[TablePlan]:
    """This side's share of one job, per table in commit order (IPv4 before IPv6): job side,
    the filter chains (counters and policy); host side, the nat rules."""
    token = check_token(prefix, job.token)
    c_in, c_out = job_chain(prefix, token, "in"), job_chain(prefix, token, "out")
    c_src, c_dst = job_chain(prefix, token, "src"), job_chain(prefix, token, "dst")
    if not job_side:
        return _nat_plans(prefix, job, token)
    plans: list[TablePlan] = []
    for family in (4, 6):
        chains = [c_in, c_out]
        rules: list[RuleSpec] = [
            RuleSpec(base_chain(prefix, "INPUT"), c_in, in_iface=job.ifname, comment=token),
            RuleSpec(base_chain(prefix, "OUTPUT"), c_out, out_iface=job.ifname, comment=token)]
        if family == 6:
            # A job is never a router: drop its router advertisements and redirects (a host
            # accepting RAs would otherwise route through the job).
            for icmp in ROUTER_ONLY:
                rules.append(RuleSpec(c_out, "DROP", protocol="58", matches=(("icmp6", (("icmpv6_type", icmp),)),)))
            # Neighbour discovery is link-local and must work before anything else; it is not
            # job traffic and must not be caught by the allow list.
            for chain in (c_out, c_in):
                for nd in ND_TYPES:
                    rules.append(RuleSpec(chain, "RETURN", protocol="58",  # ipv6-icmp
                                          matches=(("icmp6", (("icmpv6_type", nd),)),)))
        if job.anti_spoof:
            chains.append(c_src)
            rules.append(RuleSpec(c_out, c_src))
            own = [ipaddress.ip_network(a) for a in job.addresses if a.version == family]
            if family == 6:
                own = [ipaddress.IPv6Network("fe80::/10"), ipaddress.IPv6Network("::/128"), *own]
            rules += [RuleSpec(c_src, "RETURN", src=_net(n)) for n in own]
            rules.append(RuleSpec(c_src, "DROP"))
        rules += [RuleSpec(c_out, "DROP", dst=_net(n)) for n in _fam(job.deny, family)]
        if job.allow:
            chains.append(c_dst)
            rules.append(RuleSpec(c_out, c_dst))
            rules += [RuleSpec(c_dst, "RETURN", dst=_net(n)) for n in _fam(job.allow, family)]
            rules.append(RuleSpec(c_dst, "DROP"))
        rules += _counter_rules(c_out, job, family, "dst")
        rules += _counter_rules(c_in, job, family, "src")
        plans.append(TablePlan(family, "filter", tuple(chains), tuple(rules)))
    return plans


def _nat_plans(prefix: str, job: FirewallJob, token: str) -> list[TablePlan]:
    plans: list[TablePlan] = []
    for family in (4, 6):
        nat: list[RuleSpec] = []
        masq = job.masquerade_ipv4 if family == 4 else job.masquerade_ipv6
        if masq:
            for addr in job.addresses:
                if addr.version == family and not addr.is_link_local:
                    nat.append(RuleSpec(base_chain(prefix, "POSTROUTING"), "MASQUERADE",
                                        src=_net(ipaddress.ip_network(addr)), out_iface=f"!{prefix}h+",
                                        comment=token))
        pf = job.port_forward
        target = None if pf is None else (pf.job_ipv4 if family == 4 else pf.job_ipv6)
        if pf is not None and target is not None:
            if not 0 < pf.first <= pf.last <= 65535:
                raise ValueError(f"bad port range {pf.first}-{pf.last}")
            ports = str(pf.first) if pf.first == pf.last else f"{pf.first}:{pf.last}"
            loopback = "!127.0.0.0/8" if family == 4 else "!::1/128"
            for proto in ("tcp", "udp"):
                for hook, dst in (("PREROUTING", None), ("OUTPUT", loopback)):
                    nat.append(RuleSpec(
                        base_chain(prefix, hook), "DNAT", dst=dst, protocol=proto,
                        matches=(("addrtype", (("dst_type", "LOCAL"),)), (proto, (("dport", ports),))),
                        target_args=(("to_destination", str(target)),), comment=token))
        if nat:
            plans.append(TablePlan(family, "nat", (), tuple(nat)))
    return plans


Sums = dict[str, tuple[int, int]]  # counter comment -> (packets, bytes)


def sum_counters(rows: Iterable[tuple[str | None, int, int]]) -> Sums:
    """(comment, packets, bytes) rows of one chain -> comment -> summed (packets, bytes)."""
    sums: dict[str, tuple[int, int]] = {}
    for comment, packets, nbytes in rows:
        if comment:
            p, b = sums.get(comment, (0, 0))
            sums[comment] = (p + packets, b + nbytes)
    return sums


def job_counters(sin: Sums, sout: Sums) -> JobCounters:
    """Combine the "in" and "out" chains' sums (both families already added up)."""
    zero = (0, 0)
    result = JobCounters(packets_in=sin.get(TOTAL, zero)[0], bytes_in=sin.get(TOTAL, zero)[1],
                         packets_out=sout.get(TOTAL, zero)[0], bytes_out=sout.get(TOTAL, zero)[1])
    for name in sorted({c[len(CLASS_PREFIX):] for c in (*sin, *sout) if c.startswith(CLASS_PREFIX)}):
        pin, bin_ = sin.get(CLASS_PREFIX + name, zero)
        pout, bout = sout.get(CLASS_PREFIX + name, zero)
        result.classes[name] = ClassCounters(bytes_in=bin_, bytes_out=bout, packets_in=pin, packets_out=pout)
    return result


def counter_sums(counters: JobCounters) -> tuple[Sums, Sums]:
    """The (in, out) sums a job's rebuilt chains start from (the inverse of :func:`job_counters`)."""
    sin: Sums = {TOTAL: (counters.packets_in, counters.bytes_in)}
    sout: Sums = {TOTAL: (counters.packets_out, counters.bytes_out)}
    for name, cls in counters.classes.items():
        sin[CLASS_PREFIX + name] = (cls.packets_in, cls.bytes_in)
        sout[CLASS_PREFIX + name] = (cls.packets_out, cls.bytes_out)
    return sin, sout


def merge_sums(a: Sums, b: Sums) -> Sums:
    out = dict(a)
    for k, (p, n) in b.items():
        q, m = out.get(k, (0, 0))
        out[k] = (q + p, m + n)
    return out
