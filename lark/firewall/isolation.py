"""What a NAT job may reach on its own node: the isolation knobs, parsed (pure, no kernel).

By default (``LARK_ISOLATE_JOBS = True``) a job reaches neither the execute host's own services
(any of the host's addresses, the host end of its veth included) nor another job on the node
(directly, or through another job's forwarded ports on the host's address). Replies to
connections the host opened to the job (conntrack established/related) always pass, and so does
IPv6 neighbour discovery, without which nothing works. The backends turn an :class:`Isolation`
into a few base rules on the host side (see the nftables and iptables module docstrings).

``LARK_JOB_HOST_ALLOW`` opens holes towards the host: a comma-separated list of ``tcp/PORT``,
``udp/PORT``, ``tcp/FIRST-LAST``, a CIDR of host addresses (every port), or ``CIDR tcp/PORT``.
``LARK_JOB_TO_JOB_ALLOW`` is False, True, or a CIDR list of job addresses other jobs may reach.

This module imports only :mod:`lark.values` from Lark, so :mod:`lark.config` can use its parsers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lark.values import IPNetwork

PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class HostAllow:
    """One hole from jobs to the host: addresses (None: every host address) and ports (None: all)."""

    network: IPNetwork | None = None
    protocol: str | None = None  # "tcp" | "udp"; None with a network: every protocol
    first: int | None = None
    last: int | None = None

    def __str__(self) -> str:
        ports = "" if self.protocol is None else (
            f"{self.protocol}/{self.first}" if self.first == self.last else f"{self.protocol}/{self.first}-{self.last}")
        return " ".join(p for p in (str(self.network) if self.network else "", ports) if p)


@dataclass(frozen=True)
class Isolation:
    """The node's isolation policy for jobs with a host-side veth (``nat``)."""

    enabled: bool = True
    host_allow: tuple[HostAllow, ...] = ()
    # False: no job reaches another; True: every job reaches every other; a tuple: only job
    # addresses inside these networks are reachable from other jobs.
    job_to_job: bool | tuple[IPNetwork, ...] = False


def _ports(text: str, item: str) -> HostAllow:
    m = re.fullmatch(r"(tcp|udp)/(\d{1,5})(?:-(\d{1,5}))?", text.strip().lower())
    if not m:
        raise ValueError(f"{item!r}: expected tcp/PORT, udp/PORT or tcp/FIRST-LAST")
    first = int(m.group(2))
    last = int(m.group(3)) if m.group(3) else first
    if not 0 < first <= last <= 65535:
        raise ValueError(f"{item!r}: ports must be 1-65535 with FIRST <= LAST")
    return HostAllow(protocol=m.group(1), first=first, last=last)


def _network(text: str, item: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{item!r}: not a CIDR prefix (e.g. 192.0.2.1/32) nor tcp/PORT, udp/PORT") from None


def parse_host_allow(text: str) -> tuple[HostAllow, ...]:
    """``LARK_JOB_HOST_ALLOW``: ``tcp/53, udp/53, 10.0.0.1/32, 192.0.2.0/24 tcp/8000-8100``."""
    out: list[HostAllow] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        words = item.split()
        if len(words) == 1:
            word = words[0]
            out.append(_ports(word, item) if "/" in word and word.split("/", 1)[0].lower() in PROTOCOLS
                       else HostAllow(network=_network(word, item)))
        elif len(words) == 2:
            ports = _ports(words[1], item)
            out.append(HostAllow(_network(words[0], item), ports.protocol, ports.first, ports.last))
        else:
            raise ValueError(f"{item!r}: expected 'tcp/PORT', 'CIDR' or 'CIDR tcp/PORT' (separate items with commas)")
    return tuple(out)


def parse_job_to_job(text: str) -> bool | tuple[IPNetwork, ...]:
    """``LARK_JOB_TO_JOB_ALLOW``: True/False, or a CIDR list of job addresses reachable from jobs."""
    low = text.strip().lower()
    if low in ("", "false", "no", "0", "off"):
        return False
    if low in ("true", "yes", "1", "on"):
        return True
    nets = []
    for item in re.split(r"[\s,]+", text.strip()):
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"expected True, False or a CIDR list, got {item!r}") from None
    return tuple(nets)
