"""The interface every firewall backend implements (nftables, iptables).

A backend is bound to one network namespace: the host's (veth-based modes: accounting, NAT,
policy and port forwards keyed on the job's host-side interface) or a job's own (macvlan/ipvlan,
which leave no per-job interface on the host, so counting and policy happen inside the job's
namespace where the unprivileged job cannot change them).

Direction is always seen from the job: "in" is traffic delivered to the job, "out" is traffic the
job sends.
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from lark.config import IPAddress, IPNetwork, TrafficClass


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
    ``ifname`` is the interface the rules match on: the host end of the job's veth in the host
    namespace, or the job's own interface when the backend lives in the job's namespace.
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
    lives inside the job's namespace (input/output on the job's interface) instead of the host's
    (forward/input/output keyed on the job's host-side interface).
    """

    name: str = "abstract"

    def __init__(self, prefix: str, netns: str | None = None, job_side: bool = False) -> None:
        self.prefix = prefix
        self.netns = netns
        self.job_side = job_side

    @abstractmethod
    def ensure_base(self) -> None:
        """Create the shared tables, maps, sets and hook chains if they are missing."""

    @abstractmethod
    def base_present(self) -> bool:
        """Whether the shared tables and hook chains ``ensure_base`` creates are all there."""

    @abstractmethod
    def add_job(self, job: FirewallJob) -> None:
        """Install the job's counters, policy, NAT and port forward in one atomic step."""

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


def make_backend(kind: str, prefix: str, netns: str | None = None, job_side: bool = False) -> FirewallBackend:
    """Construct the backend named by ``LARK_FIREWALL``; imports lazily (python-iptables is slow)."""
    if kind == "nftables":
        from lark.firewall.nftables import NftablesBackend

        return NftablesBackend(prefix, netns, job_side)
    if kind == "iptables":
        from lark.firewall.iptables import IptablesBackend

        return IptablesBackend(prefix, netns, job_side)
    raise ValueError(f"unknown firewall backend {kind!r} (accepted: nftables, iptables)")
