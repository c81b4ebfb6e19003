"""nftables rules (pure): the JSON batches Lark applies and the parsing of what it lists.

The table layout these build, and why, is drawn in :mod:`lark.firewall.nftables`, whose backend
runs them through :mod:`lark.firewall.libnft`. Nothing here touches the kernel, so every builder
is unit-tested without root.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lark.firewall.base import ClassCounters, FirewallJob, JobCounters
from lark.firewall.isolation import Isolation
from lark.values import IPNetwork

JsonObj = dict[str, Any]
FAMILY = "inet"

TOKEN_RE = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
# Job chains are job-<token>-in/out; base chains never start with "job-".
JOB_CHAIN_RE = re.compile(r"^job-([A-Za-z0-9_.]{1,64})-(in|out)$")

TOTAL = "total"
SHARED_SET_PREFIX = "net"  # net4_<hash>, net6_<hash>: network lists shared by jobs
CLASS_PREFIX = "class:"
# Link upkeep, never job traffic: router solicitation, neighbour solicitation/advertisement, and
# multicast listener queries/reports (the job's kernel sends MLD reports when its link comes up).
ND_TYPES = ("nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert", "mld-listener-query",
            "mld-listener-report", "mld-listener-done", "mld2-listener-report")
ROUTER_ONLY = ("nd-router-advert", "nd-redirect")
LINK_LOCAL6 = ipaddress.IPv6Network("fe80::/10")
UNSPECIFIED6 = ipaddress.IPv6Network("::/128")

# Base chain -> (type, hook, priority). Filter at 0; DNAT at dstnat (-100), SNAT at srcnat (100).
HOST_BASE_CHAINS = {
    "filter_forward": ("filter", "forward", 0),
    "filter_input": ("filter", "input", 0),
    "nat_prerouting": ("nat", "prerouting", -100),
    "nat_output": ("nat", "output", -100),
    "nat_postrouting": ("nat", "postrouting", 100),
}
JOB_SIDE_BASE_CHAINS = {
    "filter_input": ("filter", "input", 0),
    "filter_output": ("filter", "output", 0),
}
ISOLATION_CHAINS = ("jobs_to_host", "jobs_to_jobs")  # regular chains of the host table


def check_token(token: str) -> str:
    if not TOKEN_RE.match(token):
        raise ValueError(f"job token {token!r} must be 1-64 characters of [A-Za-z0-9_.] "
                         "(no '-': object names are split on it)")
    return token


def chain_name(token: str, direction: str) -> str:
    return f"job-{token}-{direction}"


# --------------------------------------------------------------------------------------------
# JSON expression helpers (libnftables-json(5))


def _meta(key: str) -> JsonObj:
    return {"meta": {"key": key}}


def _payload(protocol: str, fieldname: str) -> JsonObj:
    return {"payload": {"protocol": protocol, "field": fieldname}}


def _match(left: JsonObj, right: Any, op: str = "==") -> JsonObj:
    return {"match": {"op": op, "left": left, "right": right}}


def _net(net: IPNetwork) -> Any:
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _split(nets: Iterable[IPNetwork]) -> tuple[list[IPNetwork], list[IPNetwork]]:
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    return v4, v6


def _host_nets(addrs: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> list[IPNetwork]:
    return [ipaddress.ip_network(a) for a in addrs]


def _rule(prefix: str, chain: str, expr: list[JsonObj], comment: str | None = None) -> JsonObj:
    rule: JsonObj = {"family": FAMILY, "table": prefix, "chain": chain, "expr": expr}
    if comment:
        rule["comment"] = comment
    return {"add": {"rule": rule}}


def _elem(value: Any, token: str) -> JsonObj:
    return {"elem": {"val": value, "comment": token}}


def _ports(first: int, last: int) -> Any:
    return first if first == last else {"range": [first, last]}


# --------------------------------------------------------------------------------------------
# Batches (pure)


def base_batch(prefix: str, job_side: bool, isolation: Isolation | None = None) -> list[JsonObj]:
    """Create the table, maps, sets and hook chains; (re)write the hook chains' rules.

    Every ``add`` of an existing object is a no-op, and the hook chains are flushed and refilled
    in the same transaction, so the batch is idempotent and packets never see a half-built table.
    ``isolation`` (host side only; None: nothing isolated) fills ``jobs_to_host``/``jobs_to_jobs``.
    """
    t = {"family": FAMILY, "table": prefix}
    batch: list[JsonObj] = [{"add": {"table": {"family": FAMILY, "name": prefix}}}]
    batch.append({"add": {"set": {**t, "name": "nd", "type": "icmpv6_type", "elem": list(ND_TYPES)}}})
    if job_side:
        for name in ("jobs_out", "jobs_in"):
            batch.append({"add": {"map": {**t, "name": name, "type": "ifname", "map": "verdict"}}})
        batch.append({"add": {"set": {**t, "name": "router_only", "type": "icmpv6_type",
                                      "elem": list(ROUTER_ONLY)}}})
    else:
        batch += [
            {"add": {"set": {**t, "name": "nat4", "type": "ipv4_addr"}}},
            {"add": {"set": {**t, "name": "nat6", "type": "ipv6_addr"}}},
            {"add": {"map": {**t, "name": "fwd4", "type": "inet_service", "map": "ipv4_addr", "flags": ["interval"]}}},
            {"add": {"map": {**t, "name": "fwd6", "type": "inet_service", "map": "ipv6_addr", "flags": ["interval"]}}},
        ]
    chains = JOB_SIDE_BASE_CHAINS if job_side else HOST_BASE_CHAINS
    for name, (ctype, hook, prio) in chains.items():
        batch.append({"add": {"chain": {**t, "name": name, "type": ctype, "hook": hook, "prio": prio,
                                        "policy": "accept"}}})
        batch.append({"flush": {"chain": {**t, "name": name}}})

    def vmap(key: str, mapname: str) -> list[JsonObj]:
        return [{"vmap": {"key": _meta(key), "data": f"@{mapname}"}}]

    if job_side:
        batch.append(_rule(prefix, "filter_input", vmap("iifname", "jobs_in")))
        batch.append(_rule(prefix, "filter_output", vmap("oifname", "jobs_out")))
        return batch
    batch += isolation_rules(prefix, isolation)

    l4 = _match(_meta("l4proto"), {"set": ["tcp", "udp"]})
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    for fam, proto, mapname, loopback in (("ipv4", "ip", "fwd4", "127.0.0.0/8"), ("ipv6", "ip6", "fwd6", "::1")):
        dnat = {"dnat": {"family": proto, "addr": {"map": {"key": _payload("th", "dport"), "data": f"@{mapname}"}}}}
        nfproto = _match(_meta("nfproto"), fam)
        batch.append(_rule(prefix, "nat_prerouting", [nfproto, local, l4, dnat]))
        # Connections the host opens to its own address reach the job too; loopback destinations
        # are left alone (DNAT from 127/8 to a remote address would need route_localnet).
        not_lo = _match(_payload(proto, "daddr"), _net(ipaddress.ip_network(loopback)), "!=")
        batch.append(_rule(prefix, "nat_output", [nfproto, not_lo, local, l4, dnat]))
    for proto, setname in (("ip", "nat4"), ("ip6", "nat6")):
        # Job-to-job traffic (out through another Lark interface) keeps its source.
        batch.append(_rule(prefix, "nat_postrouting", [
            _match(_payload(proto, "saddr"), f"@{setname}"),
            _match(_meta("oifname"), f"{prefix}h*", "!="),  # job veths are <prefix>h<token>
            {"masquerade": None},
        ]))
    return batch


def isolation_rules(prefix: str, isolation: Isolation | None) -> list[JsonObj]:
    """The host side of isolation: two regular chains, each behind one jump from a hook chain.

    Only packets from a job veth take the jump, so the host's own traffic pays one interface
    comparison. ``accept`` ends only this table's evaluation (the admin's own tables still see
    the packet); ``drop`` is final. Replies to what the host or a peer opened (established,
    related: also ICMP errors) and neighbour discovery always pass.
    """
    t = {"family": FAMILY, "table": prefix}
    batch: list[JsonObj] = []
    for name in ISOLATION_CHAINS:
        batch.append({"add": {"chain": {**t, "name": name}}})
        batch.append({"flush": {"chain": {**t, "name": name}}})
    if isolation is None or not isolation.enabled:
        return batch
    from_job = _match(_meta("iifname"), f"{prefix}h*")
    established = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
    nd = _match(_payload("icmpv6", "type"), "@nd")
    batch.append(_rule(prefix, "filter_input", [from_job, {"jump": {"target": "jobs_to_host"}}]))
    batch.append(_rule(prefix, "jobs_to_host", [established, {"accept": None}]))
    batch.append(_rule(prefix, "jobs_to_host", [nd, {"accept": None}]))
    for hole in isolation.host_allow:
        expr: list[JsonObj] = []
        if hole.network is not None:
            expr.append(_match(_payload("ip" if hole.network.version == 4 else "ip6", "daddr"), _net(hole.network)))
        if hole.protocol is not None and hole.first is not None and hole.last is not None:
            expr.append(_match(_meta("l4proto"), hole.protocol))
            expr.append(_match(_payload("th", "dport"), _ports(hole.first, hole.last)))
        batch.append(_rule(prefix, "jobs_to_host", [*expr, {"accept": None}]))
    batch.append(_rule(prefix, "jobs_to_host", [{"drop": None}]))
    if isolation.job_to_job is True:
        return batch
    to_job = _match(_meta("oifname"), f"{prefix}h*")
    batch.append(_rule(prefix, "filter_forward", [from_job, to_job, {"jump": {"target": "jobs_to_jobs"}}]))
    batch.append(_rule(prefix, "jobs_to_jobs", [established, {"accept": None}]))
    for net in isolation.job_to_job or ():
        batch.append(_rule(prefix, "jobs_to_jobs", [
            _match(_payload("ip" if net.version == 4 else "ip6", "daddr"), _net(net)), {"accept": None}]))
    batch.append(_rule(prefix, "jobs_to_jobs", [{"drop": None}]))
    return batch


Rule = tuple[list[JsonObj], str | None]  # expressions, counter comment (None: no counter)
SharedSets = dict[str, tuple[str, list[Any]]]  # set name -> (type, elements)


def _nets(nets: Iterable[IPNetwork], sets: SharedSets) -> Any:
    """The right-hand side matching ``nets``: a plain value for one network, else a named set.

    Per-job rules never contain anonymous sets: nft 1.0.6 fetches every set's elements with a
    request of its own on each run (even ``list tables``), so one anonymous set per job made every
    add, list and delete linear in the number of jobs (~100 ms at 500 jobs). Lists of networks
    (deny, allow, class) are instead named sets shared by all jobs with the same list, named by a
    hash of their content, so their content never changes under a name.
    """
    collapsed = sorted(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
    if len(collapsed) == 1:
        return _net(collapsed[0])
    version = collapsed[0].version
    digest = hashlib.sha1(" ".join(str(n) for n in collapsed).encode()).hexdigest()[:12]
    name = f"{SHARED_SET_PREFIX}{version}_{digest}"
    sets[name] = ("ipv4_addr" if version == 4 else "ipv6_addr", [_net(n) for n in collapsed])
    return f"@{name}"


def out_rules(job: FirewallJob, sets: SharedSets) -> list[Rule]:
    """Expressions (and counter comment) of the job's "out" chain, in evaluation order."""
    rules: list[Rule] = []
    # A job is never a router: its router advertisements and redirects could otherwise give a
    # host that accepts RAs (accept_ra=2 with forwarding) a default route through the job.
    rules.append(([_match(_payload("icmpv6", "type"), "@router_only"), {"drop": None}], None))
    # Neighbour discovery is link-local and needed before anything works (DAD from ::, NS/NA
    # from fe80::); it must not be caught by the allow list or counted as job traffic.
    rules.append(([_match(_payload("icmpv6", "type"), "@nd"), {"return": None}], None))
    if job.anti_spoof:
        # A chain of != comparisons (drop if the source is none of them): no set lookup.
        own4, own6 = _split(_host_nets(job.addresses))
        if own4:
            rules.append(([*(_match(_payload("ip", "saddr"), _net(n), "!=") for n in own4), {"drop": None}], None))
        else:
            rules.append(([_match(_meta("nfproto"), "ipv4"), {"drop": None}], None))
        own6 = [LINK_LOCAL6, UNSPECIFIED6, *own6]
        rules.append(([*(_match(_payload("ip6", "saddr"), _net(n), "!=") for n in own6), {"drop": None}], None))
    deny4, deny6 = _split(job.deny)
    for proto, nets in (("ip", deny4), ("ip6", deny6)):
        if nets:
            rules.append(([_match(_payload(proto, "daddr"), _nets(nets, sets)), {"drop": None}], None))
    if job.allow:
        allow4, allow6 = _split(job.allow)
        for proto, fam, nets in (("ip", "ipv4", allow4), ("ip6", "ipv6", allow6)):
            if nets:
                rules.append(([_match(_payload(proto, "daddr"), _nets(nets, sets), "!="), {"drop": None}], None))
            else:  # an allow list without this family allows none of it
                rules.append(([_match(_meta("nfproto"), fam), {"drop": None}], None))
    rules += _counter_rules(job, "daddr", sets)
    return rules


def in_rules(job: FirewallJob, sets: SharedSets) -> list[Rule]:
    # Neighbour discovery towards the job is link upkeep, not job traffic (as on the way out):
    # without this a job's counter would exceed its connections' wire count by a few ND packets.
    nd: list[Rule] = [([_match(_payload("icmpv6", "type"), "@nd"), {"return": None}], None)]
    return nd + _counter_rules(job, "saddr", sets)


def _counter_rules(job: FirewallJob, field_: str, sets: SharedSets) -> list[Rule]:
    """A total counter, then one counter per class (first match wins: each ends with return)."""
    rules: list[Rule] = [([], TOTAL)]
    for cls in job.classes:
        v4, v6 = _split(cls.networks)
        for proto, nets in (("ip", v4), ("ip6", v6)):
            if nets:
                rules.append(([_match(_payload(proto, field_), _nets(nets, sets))], CLASS_PREFIX + cls.name))
    return rules


Initial = dict[tuple[str, str], tuple[int, int]]  # (chain, counter comment) -> (packets, bytes)


def job_batch(prefix: str, job: FirewallJob, job_side: bool, initial: Initial | None = None) -> list[JsonObj]:
    """Everything for one job in one transaction; applying it again replaces the job's rules.

    Job side (inside the job's namespace, every mode): the job's chains, counters and policy.
    Host side: only what must live there, the masquerade set and port-forward map elements.

    ``initial`` carries the counter values read just before a re-apply (policy change, broker
    restart, a table lost to a flush), so the job's accounting continues. Counters are anonymous
    rule counters on purpose: named counter objects would be fetched into nft's cache by every
    later batch (~1.7 us each, 4 per job), while rules are not.
    """
    check_token(job.token)
    return _job_side_batch(prefix, job, initial) if job_side else host_batch(prefix, job)


def _job_side_batch(prefix: str, job: FirewallJob, initial: Initial | None) -> list[JsonObj]:
    t = {"family": FAMILY, "table": prefix}
    # A class's IPv4 and IPv6 rules were summed into one value: the first rule carries it.
    carry = dict(initial or {})
    batch: list[JsonObj] = []
    sets: SharedSets = {}
    chains = (("out", out_rules(job, sets)), ("in", in_rules(job, sets)))
    for name, (settype, elems) in sorted(sets.items()):
        # Adding an existing set with the same elements is a no-op (the name is their hash).
        batch.append({"add": {"set": {**t, "name": name, "type": settype, "flags": ["interval"], "elem": elems}}})
    for direction, rules in chains:
        name = chain_name(job.token, direction)
        batch.append({"add": {"chain": {**t, "name": name}}})
        batch.append({"flush": {"chain": {**t, "name": name}}})
        for expr, comment in rules:
            if comment is None:
                batch.append(_rule(prefix, name, expr))
                continue
            packets, nbytes = carry.pop((name, comment), (0, 0))
            counted = [*expr, {"counter": {"packets": packets, "bytes": nbytes}}]
            if comment != TOTAL:
                counted.append({"return": None})
            batch.append(_rule(prefix, name, counted, comment))
    # input consults jobs_in, output jobs_out (see base_batch); one element each, keyed on the
    # job's own interface: the vmap keeps the same layout for any interface name.
    for mapname, direction in (("jobs_out", "out"), ("jobs_in", "in")):
        elem = [_elem(job.ifname, job.token), {"jump": {"target": chain_name(job.token, direction)}}]
        batch.append({"add": {"element": {**t, "name": mapname, "elem": [elem]}}})
    return batch


def host_batch(prefix: str, job: FirewallJob) -> list[JsonObj]:
    """The job's elements in the host table: masqueraded sources and forwarded port ranges."""
    t = {"family": FAMILY, "table": prefix}
    batch: list[JsonObj] = []
    v4 = [a for a in job.addresses if a.version == 4]
    v6 = [a for a in job.addresses if a.version == 6 and a not in LINK_LOCAL6]
    for setname, addrs, wanted in (("nat4", v4, job.masquerade_ipv4), ("nat6", v6, job.masquerade_ipv6)):
        if wanted and addrs:
            elems = [_elem(str(a), job.token) for a in addrs]
            batch.append({"add": {"element": {**t, "name": setname, "elem": elems}}})
    pf = job.port_forward
    if pf is not None:
        if not 0 < pf.first <= pf.last <= 65535:
            raise ValueError(f"bad port range {pf.first}-{pf.last}")
        for mapname, addr in (("fwd4", pf.job_ipv4), ("fwd6", pf.job_ipv6)):
            if addr is not None:
                elem = [_elem(_ports(pf.first, pf.last), job.token), str(addr)]
                batch.append({"add": {"element": {**t, "name": mapname, "elem": [elem]}}})
    return batch


def initial_from_counters(token: str, counters: JobCounters) -> Initial:
    """Counter values to start a job's rebuilt rules from (its table was lost, e.g. flushed)."""
    c_in, c_out = chain_name(token, "in"), chain_name(token, "out")
    out: Initial = {(c_in, TOTAL): (counters.packets_in, counters.bytes_in),
                    (c_out, TOTAL): (counters.packets_out, counters.bytes_out)}
    for name, cls in counters.classes.items():
        out[(c_in, CLASS_PREFIX + name)] = (cls.packets_in, cls.bytes_in)
        out[(c_out, CLASS_PREFIX + name)] = (cls.packets_out, cls.bytes_out)
    return out


# --------------------------------------------------------------------------------------------
# Listings (pure)

SETS = ("nat4", "nat6")


@dataclass
class TableState:
    """What the listings say about jobs."""

    chains: set[str] = field(default_factory=set)
    sets: set[str] = field(default_factory=set)  # named sets and maps
    # set/map name -> [(key as listed, owning token or None)]
    elements: dict[str, list[tuple[Any, str | None]]] = field(default_factory=dict)

    def tokens(self) -> set[str]:
        found = {m.group(1) for c in self.chains if (m := JOB_CHAIN_RE.match(c))}
        found |= {tok for elems in self.elements.values() for _, tok in elems if tok}
        return found


def _unwrap_elem(key: Any) -> tuple[Any, str | None]:
    if isinstance(key, dict) and "elem" in key:
        return key["elem"]["val"], key["elem"].get("comment")
    return key, None


def parse_objects(objects: Iterable[JsonObj], prefix: str, state: TableState | None = None) -> TableState:
    """Fold listed objects of table ``inet <prefix>`` into ``state`` (other tables are ignored)."""
    state = state or TableState()
    for obj in objects:
        kind = next(iter(obj))
        body = obj[kind]
        if not isinstance(body, dict) or body.get("family") != FAMILY or body.get("table") != prefix:
            continue
        if kind == "chain":
            state.chains.add(body["name"])
        elif kind in ("set", "map"):
            state.sets.add(body["name"])
            if "elem" not in body:
                continue
            entries = state.elements.setdefault(body["name"], [])
            for item in body["elem"]:
                is_pair = isinstance(item, list)
                key, token = _unwrap_elem(item[0] if is_pair else item)
                if is_pair and token is None:
                    # A verdict map element without comment still names its owner by its target.
                    target = item[1].get("jump", {}).get("target", "") if isinstance(item[1], dict) else ""
                    if m := JOB_CHAIN_RE.match(target):
                        token = m.group(1)
                entries.append((key, token))
    return state


def removal_batch(prefix: str, state: TableState, tokens: set[str]) -> list[JsonObj]:
    """Delete what ``state`` shows of ``tokens``: elements first (a chain cannot go while a
    verdict map element jumps to it), then the chains."""
    t = {"family": FAMILY, "table": prefix}
    batch: list[JsonObj] = []
    for name, elems in sorted(state.elements.items()):
        keys = [key for key, tok in elems if tok in tokens]
        if keys:
            batch.append({"delete": {"element": {**t, "name": name, "elem": keys}}})
    for chain in sorted(state.chains):
        if (m := JOB_CHAIN_RE.match(chain)) and m.group(1) in tokens:
            batch.append({"flush": {"chain": {**t, "name": chain}}})
            batch.append({"delete": {"chain": {**t, "name": chain}}})
    return batch


def shared_sets(state: TableState) -> list[str]:
    return sorted(n for n in state.sets if n.startswith((f"{SHARED_SET_PREFIX}4_", f"{SHARED_SET_PREFIX}6_")))


Row = tuple[str, str, int, int]  # chain, counter comment, packets, bytes


def job_counters_from(rows: Iterable[Row]) -> dict[str, JobCounters]:
    """Group rule counters of ``job-<token>-<in|out>`` chains into JobCounters by token."""
    result: dict[str, JobCounters] = {}
    for chain, comment, packets, nbytes in rows:
        m = JOB_CHAIN_RE.match(chain)
        if not m or not (comment == TOTAL or comment.startswith(CLASS_PREFIX)):
            continue
        jc = result.setdefault(m.group(1), JobCounters())
        target: JobCounters | ClassCounters = (
            jc if comment == TOTAL else jc.classes.setdefault(comment[len(CLASS_PREFIX):], ClassCounters()))
        if m.group(2) == "in":
            target.packets_in += packets
            target.bytes_in += nbytes
        else:
            target.packets_out += packets
            target.bytes_out += nbytes
    for jc in result.values():
        jc.classes = dict(sorted(jc.classes.items()))
    return result


def initial_counters(rows: Iterable[Row]) -> Initial:
    """(chain, comment) -> summed (packets, bytes), to carry counts across a re-apply."""
    out: Initial = {}
    for chain, comment, packets, nbytes in rows:
        p, b = out.get((chain, comment), (0, 0))
        out[(chain, comment)] = (p + packets, b + nbytes)
    return out
