"""What a profile is: its keys, the frozen :class:`Profile` the parser builds, and its errors. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from lark.attach import mode, mode_names, modes
from lark.config import AddressPool, IPNetwork, SiteAttachment
from lark.policy import MAX_MBIT, MAX_PORTS, RequestLimits
from lark.profiles.values import format_cpulist
from lark.yamlfile import YamlFileError, YamlLimits

PROFILE_DIR_KNOB = "LARK_PROFILE_DIR"
DEFAULT_PROFILE_DIR = Path("/etc/condor/profiles.d")
ADVERTISED_ATTR = "LarkProfiles"  # slot attribute
PROFILE_SUFFIXES = (".yaml", ".yml")
DEFAULT_PORT_RANGE_ENV = (("GLOBUS_TCP_PORT_RANGE", "{first},{last}"),)
# Bounds on what the loader reads, so a stray or hostile file cannot stall `lark profiles check` or
# the broker (which reloads the directory on a job's start path). Real profile files are a few KiB
# with a handful of profiles nested 5 levels deep.
MAX_FILE_BYTES = 1 << 20  # per file, checked before reading
MAX_PROFILES = 256  # per node: LarkProfiles lists every name in each slot ad
MAX_NESTING = 10  # mappings and lists inside each other
MAX_VALUES = 50_000  # per file, every alias (*name) and merge key (<<) expanded
LIMITS = YamlLimits(what="a profile file", max_bytes=MAX_FILE_BYTES, max_nesting=MAX_NESTING,
                    max_values=MAX_VALUES, usual_nesting=5, usual_values="a few hundred",
                    too_large_advice="not read, so none of its profiles is offered (split it into several files)")

# Every key a profile accepts, in the order the docs and error messages list them.
KEYS: dict[str, str] = {
    "description": "one line shown by `lark profiles list`",
    "attach": f"attachment mode: {', '.join(mode_names())} (required)",
    "parent": "parent interface (macvlan, ipvlan) or bridge (bridge); for nat only the NIC `cpus: network` "
              "refers to",
    "ipv4_pool": "jobs' IPv4 addresses: 'CIDR' or 'CIDR FIRST-LAST' "
                 f"({', '.join(m.name for m in modes() if m.site is not None)})",
    "ipv4_gateway": "jobs' default IPv4 gateway, inside ipv4_pool's prefix (never handed out)",
    "ipv6_pool": "jobs' IPv6 addresses: 'CIDR' or 'CIDR FIRST-LAST'",
    "ipv6_gateway": "jobs' default IPv6 gateway",
    "addressing": "where jobs' addresses come from: static (the pools, default), dhcp, slaac or dhcp+slaac "
                  "(bridge, macvlan)",
    "inbound_ports": f"size of each job's inbound port range, 1..{MAX_PORTS} (leave out for none)",
    "port_range_env": "variables that tell movers the port range: NAME: template with {first}, {last}, "
                      "{public_address} (default GLOBUS_TCP_PORT_RANGE: '{first},{last}')",
    "bandwidth_mbit": f"limit in both directions, Mbit/s, 0 (unlimited)..{MAX_MBIT}",
    "bandwidth_in_mbit": "limit of what the job receives (overrides bandwidth_mbit)",
    "bandwidth_out_mbit": "limit of what the job sends (overrides bandwidth_mbit)",
    "allow": "list of CIDR prefixes: the only destinations jobs may reach",
    "deny": "list of CIDR prefixes jobs may never reach (on top of LARK_DENY)",
    "cpus": "CPU affinity hint: none (default), network (CPUs of the parent NIC's NUMA node) or a list "
            "like '0-7,16-23'",
    "environment": "extra variables for the job: NAME: value",
    "users": "users who may use the profile (with groups: empty or left out = everyone)",
    "groups": "Unix groups whose members may use the profile",
}
ACCEPTED = ", ".join(KEYS)


class ProfileError(YamlFileError):
    """One problem in a profile file: ``FILE:LINE: profile 'NAME': key 'KEY' <message>``."""

    def __init__(self, source: str, line: int | None, message: str, profile: str | None = None,
                 key: str | None = None) -> None:
        text = (f"profile '{profile}': " if profile else "") + (f"key '{key}' " if key else "") + message
        super().__init__(source, line, text, knob=key or PROFILE_DIR_KNOB)
        self.detail = message
        self.profile = profile
        self.key = key


@dataclass(frozen=True)
class PortRangeVariable:
    """An environment variable that tells a mover the job's port range, e.g. ``HPSS_PORT_RANGE``."""

    name: str
    template: str  # e.g. "{first},{last}"

    def render(self, first: int, last: int, public_address: str | None = None) -> str:
        return self.template.format(first=first, last=last, public_address=public_address or "")


@dataclass(frozen=True)
class CpuHint:
    """``none``, ``network`` (resolved on the node from sysfs) or an explicit list of CPUs."""

    kind: str  # "none" | "network" | "list"
    cpus: tuple[int, ...] = ()

    def __str__(self) -> str:
        return format_cpulist(self.cpus) if self.kind == "list" else self.kind


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    line: int
    attach: str
    description: str = ""
    parent: str | None = None
    ipv4_pool: AddressPool | None = None
    ipv4_gateway: ipaddress.IPv4Address | None = None
    ipv6_pool: AddressPool | None = None
    ipv6_gateway: ipaddress.IPv6Address | None = None
    addressing: str = "static"  # lark.addressing
    inbound_ports: int = 0
    port_range_env: tuple[PortRangeVariable, ...] = ()
    bandwidth_in_mbit: int = 0  # 0: unlimited
    bandwidth_out_mbit: int = 0
    allow: tuple[IPNetwork, ...] = ()  # empty: every destination
    deny: tuple[IPNetwork, ...] = ()
    cpus: CpuHint = CpuHint("none")
    environment: tuple[tuple[str, str], ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    key_lines: tuple[tuple[str, int], ...] = field(default=(), compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def line_of(self, key: str) -> int:
        """The line a key was written on (the profile's own line when it was left out)."""
        return dict(self.key_lines).get(key, self.line)

    @property
    def site(self) -> SiteAttachment | None:
        """The parent and pools the engine allocates from (bridge, macvlan, ipvlan), else None."""
        if mode(self.attach).site is None:  # not a mode that puts jobs on an existing L2 segment
            return None
        assert self.parent is not None
        return SiteAttachment(self.parent, self.ipv4_pool, self.ipv4_gateway, self.ipv6_pool, self.ipv6_gateway,
                              self.addressing)

    def request_limits(self) -> RequestLimits:
        """What a job of this profile may ask for: the profile is the ceiling and the default.

        Its limits replace LARK_MAX_BANDWIDTH_MBIT and LARK_MAX_INBOUND_PORTS for its jobs: the
        admin wrote both. A job may narrow them (lark.policy reads the request).
        """
        return RequestLimits(network_types=(self.attach,), default_network_type=self.attach,
                             bandwidth_cap_mbit=(self.bandwidth_in_mbit, self.bandwidth_out_mbit),
                             default_bandwidth_mbit=None, max_inbound_ports=self.inbound_ports,
                             default_inbound_ports=self.inbound_ports, allow=self.allow, deny=self.deny,
                             profile=self.name)

    def pools(self) -> tuple[tuple[str, AddressPool], ...]:
        return tuple((key, pool) for key, pool in (("ipv4_pool", self.ipv4_pool), ("ipv6_pool", self.ipv6_pool))
                     if pool is not None)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (``lark profiles list --json``)."""
        return {
            "name": self.name, "source": self.where, "description": self.description, "attach": self.attach,
            "parent": self.parent, "ipv4_pool": format_pool(self.ipv4_pool),
            "ipv4_gateway": str(self.ipv4_gateway) if self.ipv4_gateway else None,
            "ipv6_pool": format_pool(self.ipv6_pool), "ipv6_gateway": str(self.ipv6_gateway) if self.ipv6_gateway
            else None,
            "addressing": self.addressing,
            "inbound_ports": self.inbound_ports, "port_range_env": {v.name: v.template for v in self.port_range_env},
            "bandwidth_in_mbit": self.bandwidth_in_mbit, "bandwidth_out_mbit": self.bandwidth_out_mbit,
            "allow": [str(n) for n in self.allow], "deny": [str(n) for n in self.deny], "cpus": str(self.cpus),
            "environment": dict(self.environment), "users": list(self.users), "groups": list(self.groups),
        }


def format_pool(pool: AddressPool | None) -> str | None:
    return None if pool is None else f"{pool.network} {pool.first}-{pool.last}"
