"""Where a site-segment job's addresses come from: Lark's pools, the site's DHCP server, router adverts.

A bridge or macvlan job sits on an existing L2 segment. By default (``static``) Lark hands it an
address from the mode's pools; with ``dhcp`` the broker asks the site's DHCPv4 server for one (the
client runs as root inside the job's namespace, never as the job's user, see
:mod:`lark.addressing.dhcp`); with ``slaac`` the job's interface accepts router advertisements and
configures itself (:mod:`lark.addressing.slaac`); ``dhcp+slaac`` does both. Everything here is
pure: the choice, the client identifier and host name a job presents, and the lease facts read back
from the client's event log.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

Addressing = Literal["static", "dhcp", "slaac", "dhcp+slaac"]
ADDRESSING_CHOICES: tuple[Addressing, ...] = ("static", "dhcp", "slaac", "dhcp+slaac")
# What happens to a job whose DHCP lease / SLAAC address does not come within the bounded wait.
Fallback = Literal["hold", "static"]
FALLBACK_CHOICES: tuple[Fallback, ...] = ("hold", "static")

__all__ = ["ADDRESSING_CHOICES", "FALLBACK_CHOICES", "Addressing", "Fallback", "LeaseEvent", "LeaseNews",
           "client_id", "dhcp_hostname", "follow_lease", "latest_lease", "parse_addressing", "parse_events",
           "parse_fallback", "wants_dhcp", "wants_slaac"]


def parse_addressing(text: str) -> Addressing:
    value = text.strip().lower().replace(" ", "")
    for choice in ADDRESSING_CHOICES:
        if value == choice:
            return choice
    if value == "slaac+dhcp":
        return "dhcp+slaac"
    raise ValueError(f"expected one of {', '.join(ADDRESSING_CHOICES)}, got {text.strip()!r}")


def parse_fallback(text: str) -> Fallback:
    value = text.strip().lower()
    for choice in FALLBACK_CHOICES:
        if value == choice:
            return choice
    raise ValueError(f"expected one of {', '.join(FALLBACK_CHOICES)}, got {text.strip()!r}")


def wants_dhcp(addressing: str) -> bool:
    return addressing in ("dhcp", "dhcp+slaac")


def wants_slaac(addressing: str) -> bool:
    return addressing in ("slaac", "dhcp+slaac")


# DHCP option 61 carries at most 255 bytes: a type byte and the identifier (RFC 2132 9.14).
_MAX_CLIENT_ID = 254


def client_id(job: str, ifname: str) -> bytes:
    """Option 61 for a job's interface: type 0 (not a hardware address) + ``<job>/<ifname>``.

    ``job`` is the GlobalJobId when there is one: a restarted or re-run job presents the same
    identifier, so a server that keys on it (dnsmasq, ISC, Kea) hands back the same lease. An
    identifier too long for the option keeps its head and ends in a hash of the whole.
    """
    ident = f"{job}/{ifname}".encode()
    if len(ident) > _MAX_CLIENT_ID:
        digest = hashlib.sha256(ident).hexdigest()[:16].encode()
        ident = ident[: _MAX_CLIENT_ID - len(digest) - 1] + b"#" + digest
    return b"\x00" + ident


def dhcp_hostname(job_id: str, token: str) -> str:
    """The host name option (12) a job sends: ``job-<cluster>-<proc>`` (or Lark's token), a DNS label."""
    label = re.sub(r"[^a-z0-9-]+", "-", f"job-{job_id}".lower()).strip("-")[:63].rstrip("-")
    return label if re.fullmatch(r"job-[a-z0-9-]*[a-z0-9]", label) else f"job-{token.lower()}"


@dataclass(frozen=True)
class LeaseEvent:
    """One line of a DHCP client's event log (written by the client's hook, see lark.addressing.dhcp)."""

    time: float  # seconds since the epoch when the hook ran
    event: str  # bound, renew, deconfig, leasefail, nak
    address: str | None = None  # "192.0.2.10/24" on bound/renew
    router: str | None = None
    server: str | None = None
    lease_seconds: int | None = None

    @property
    def expires(self) -> float | None:
        return self.time + self.lease_seconds if self.lease_seconds is not None else None

    @property
    def holds_lease(self) -> bool:
        return self.event in ("bound", "renew") and self.address is not None


def _event(line: str) -> LeaseEvent | None:
    parts = line.split()
    if len(parts) < 2:
        return None
    try:
        when = float(parts[0])
    except ValueError:
        return None
    fields = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
    ip, mask = fields.get("ip") or "", fields.get("mask") or ""
    lease = fields.get("lease") or ""
    address = f"{ip}/{mask}" if ip and mask.isdigit() else None
    return LeaseEvent(when, parts[1], address, fields.get("router") or None, fields.get("server") or None,
                      int(lease) if lease.isdigit() else None)


def parse_events(text: str) -> list[LeaseEvent]:
    """The events of a log; a torn or foreign line is skipped."""
    return [e for e in (_event(line) for line in text.splitlines()) if e is not None]


def latest_lease(events: list[LeaseEvent]) -> LeaseEvent | None:
    """The last event that (re)granted a lease."""
    return next((e for e in reversed(events) if e.holds_lease), None)


@dataclass(frozen=True)
class LeaseNews:
    """What a DHCP job's client did since the broker last looked (see :func:`follow_lease`)."""

    renewals: int = 0  # leases extended (renew, or the same address bound again after a lapse)
    expiries: int = 0  # leases that ran out unrenewed (the client went back to discovering)
    latest: LeaseEvent | None = None  # the newest grant, if any
    changed_address: str | None = None  # a grant of another address than the job's (rules name the old one)
    failures: int = 0  # discovery rounds without an answer, NAKs


def follow_lease(new: list[LeaseEvent], held: str | None) -> LeaseNews:
    """Classify a job's new client events; ``held`` is the address the job has (with prefix length)."""
    renewals = expiries = failures = 0
    latest: LeaseEvent | None = None
    changed: str | None = None
    for event in new:
        if event.holds_lease:
            latest = event
            if event.address == held:
                renewals += 1
            else:
                changed = event.address
        elif event.event == "deconfig":
            expiries += 1
        elif event.event in ("leasefail", "nak"):
            failures += 1
    return LeaseNews(renewals, expiries, latest, changed, failures)
