"""The interface every firewall backend implements (nftables, iptables).

A backend is bound to one network namespace, and every job has a part in two of them:

* **job side** (``job_side=True``, inside the job's own namespace, every mode): the job's
  counters and policy (router-advert drop, anti-spoofing, deny, allow, total and class
  counters), hooked on input/output of the job's interface. This is the job's boundary: every
  byte that enters or leaves the job passes there once, whatever path it took on the host
  (forwarded, DNATed by the host's own output, to or from the host itself), and the job cannot
  change it (its namespace belongs to the initial user namespace; the job has no CAP_NET_ADMIN
  there). An admin's ``nft flush ruleset`` on the host does not reach it either.
* **host side**: only what must live there, the job's masquerade and port forwards, plus the
  shared isolation rules (:mod:`lark.firewall.isolation`).

Direction is always seen from the job: "in" is traffic delivered to the job, "out" is traffic the
job sends.
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from lark.firewall.isolation import Isolation
from lark.values import IPAddress, IPNetwork, TrafficClass


@dataclass(frozen=True)
class PortForward:
    """DNAT host ports ``first..last`` (TCP and UDP, same port numbers) to the job's addresses."""

    first: int
    last: int
    job_ipv4: ipaddress.IPv4Address | None
    job_ipv6: ipaddress.IPv6Address | None


@dataclass(frozen=True)
class FirewallJob:
    """Everything a backend needs to install (and later remove) one job's rules.

    ``token`` is the job's unique short name; every kernel object for the job carries it.
    ``ifname`` is the job's own interface (inside its namespace), which the job-side rules match on.
    """

    token: str
    ifname: str
    addresses: tuple[IPAddress, ...]
    masquerade_ipv4: bool = False
    masquerade_ipv6: bool = False
    anti_spoof: bool = True
    allow: tuple[IPNetwork, ...] = ()  # empty: every destination not denied
    deny: tuple[IPNetwork, ...] = ()
    classes: tuple[TrafficClass, ...] = ()
    port_forward: PortForward | None = None


@dataclass
class ClassCounters:
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0


@dataclass
class JobCounters:
    """Totals plus one entry per traffic class (a packet is counted in at most one class)."""

    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    classes: dict[str, ClassCounters] = field(default_factory=dict)


class FirewallBackend(ABC):
    """One firewall implementation. All methods are idempotent.

    ``prefix`` names every table/chain/set the backend creates (``LARK_NAME_PREFIX``, or a
    per-test-run prefix). ``netns`` is a namespace path (``/run/netns/x``, ``/proc/<pid>/ns/net``)
    or None for the namespace of the calling thread. ``job_side`` selects hooks for a backend that
    lives inside the job's namespace (counting and policy on input/output of the job's
    interface) instead of the host's (masquerade, port forwards, isolation). ``isolation`` is the
    host side's policy for traffic from jobs to the host and to other jobs (None: none).
    """

    name: str = "abstract"

    def __init__(self, prefix: str, netns: str | None = None, job_side: bool = False,
                 isolation: Isolation | None = None) -> None:
        self.prefix = prefix
        self.netns = netns
        self.job_side = job_side
        self.isolation = isolation

    @abstractmethod
    def ensure_base(self, keep_existing: bool = False) -> None:
        """Create the shared tables, maps, sets and hook chains if they are missing, and (re)write
        the hook chains' rules (isolation included). ``keep_existing``: leave a complete base as
        it is (an admin's ``lark run`` must not rewrite the node's isolation with its own knobs)."""

    @abstractmethod
    def base_present(self) -> bool:
        """Whether the shared tables and hook chains ``ensure_base`` creates are all there."""

    @abstractmethod
    def add_job(self, job: FirewallJob, carry: JobCounters | None = None) -> None:
        """Install this side's part of the job in one atomic step (job side: counters and policy;
        host side: masquerade and port forwards). Re-applying keeps the counts already there;
        ``carry`` gives the counts to start from when the job's rules are gone (a lost table)."""

    @abstractmethod
    def remove_job(self, job: FirewallJob) -> None:
        """Remove everything ``add_job`` installed. Succeeds when it is already gone."""

    @abstractmethod
    def counters(self, token: str) -> JobCounters:
        """Current counters of one job (raises lark.errors.NotFound if the job has no rules)."""

    @abstractmethod
    def all_counters(self) -> dict[str, JobCounters]:
        """Counters of every job present, read in one listing (flat cost per poll)."""

    @abstractmethod
    def job_tokens(self) -> set[str]:
        """Tokens of the jobs whose rules are present in the kernel (for sweep and check)."""

    @abstractmethod
    def remove_orphans(self, keep: set[str]) -> set[str]:
        """Remove the rules of every job whose token is not in ``keep``; return the removed tokens."""

    @abstractmethod
    def destroy(self) -> None:
        """Remove every object of this prefix (uninstall; end of a test run)."""


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


def needs_host_part(job: FirewallJob) -> bool:
    """Whether the job has anything on the host side (masquerade or port forwards)."""
    return bool(job.masquerade_ipv4 or job.masquerade_ipv6 or job.port_forward)
