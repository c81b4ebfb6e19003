"""SLAAC for a job: router advertisements are accepted on the job's interface only when asked.

A new namespace's interfaces accept RAs by default (``accept_ra=1``, ``autoconf=1``), so a job on a
segment with an IPv6 router would configure itself whatever Lark said. Lark sets both per job
interface, before the link goes up (its first router solicitation follows the link coming up):
on for ``slaac`` / ``dhcp+slaac`` jobs, off for every other site-segment job. The knobs live in
the job's namespace, owned by root in the initial user namespace: the job's user cannot change them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lark import netns
from lark.netlink import write_sysctl

if TYPE_CHECKING:
    from pyroute2 import IPRoute

__all__ = ["accept_router_adverts", "wait_for_address"]

_TENTATIVE = 0x40  # IFA_F_TENTATIVE: duplicate address detection still running
_OPTIMISTIC = 0x04  # ... but usable meanwhile (RFC 4429)
_DADFAILED = 0x08


def accept_router_adverts(netns_path: str, ifname: str, accept: bool) -> None:
    value = "1" if accept else "0"

    def apply() -> None:
        write_sysctl(f"net.ipv6.conf.{ifname}.accept_ra", value)
        write_sysctl(f"net.ipv6.conf.{ifname}.autoconf", value)
        if accept:
            # Solicit at once rather than after up to 1 s, and use the address while duplicate
            # detection runs (optimistic DAD, RFC 4429; a duplicate still removes it): a job's
            # start waits ~0.1 s instead of 2-3 s for its SLAAC address.
            write_sysctl(f"net.ipv6.conf.{ifname}.router_solicitation_delay", "0")
            write_sysctl(f"net.ipv6.conf.{ifname}.optimistic_dad", "1")

    netns.call_in(netns_path, apply)


def global_address(ipr: IPRoute, index: int) -> str | None:
    """A usable global IPv6 address of the interface (DAD done, or optimistic), with its prefix length."""
    for msg in ipr.get_addr(family=10, index=index):
        flags = msg.get("IFA_FLAGS") or msg["flags"]
        if msg["scope"] != 0 or flags & _DADFAILED or (flags & _TENTATIVE and not flags & _OPTIMISTIC):
            continue
        return f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}"
    return None


def wait_for_address(ipr: IPRoute, index: int, deadline: float,
                     cancelled: Callable[[], bool] = lambda: False) -> str | None:
    """The address SLAAC gave the interface, or None once ``deadline`` (time.monotonic) has passed
    (or ``cancelled()`` says the job is gone)."""
    while True:
        found = global_address(ipr, index)
        if found is not None or time.monotonic() >= deadline or cancelled():
            return found
        time.sleep(0.05)
