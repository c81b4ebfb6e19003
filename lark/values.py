"""Value types, parsers and formats shared by the configuration, IPAM and the attachment modes (pure, no I/O).

This module sits below everything that reads knobs: :mod:`lark.config`, :mod:`lark.ipam`, the
firewall and the modes in :mod:`lark.attach` all import it, and it imports nothing of Lark's.
Every parser raises ``ValueError`` with a message naming what it accepts; the knob reader adds
file, line and knob.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = [
    "AddressPool", "IPAddress", "IPNetwork", "SiteAttachment", "TrafficClass", "parse_absolute_path",
    "parse_address", "parse_bool", "parse_float", "parse_int", "parse_list", "parse_listen_address",
    "parse_network", "parse_networks", "parse_port_range", "parse_pool", "parse_text",
]


@dataclass(frozen=True)
class AddressPool:
    """A prefix plus an optional first..last range inside it that Lark may hand out."""

    network: IPNetwork
    first: IPAddress
    last: IPAddress

    @property
    def family(self) -> int:
        return self.network.version


@dataclass(frozen=True)
class SiteAttachment:
    """Pools and parent of a mode that puts jobs on an existing L2 segment (bridge, macvlan, ipvlan)."""

    parent: str
    ipv4: AddressPool | None
    ipv4_gateway: ipaddress.IPv4Address | None
    ipv6: AddressPool | None
    ipv6_gateway: ipaddress.IPv6Address | None
    addressing: str = "static"  # lark.addressing: static, dhcp, slaac, dhcp+slaac


@dataclass(frozen=True)
class TrafficClass:
    name: str
    networks: tuple[IPNetwork, ...]

    @property
    def attribute_suffix(self) -> str:
        """CamelCase form used in ClassAd attributes: ``off_campus`` -> ``OffCampus``."""
        return "".join(part.capitalize() for part in self.name.split("_"))


def parse_text(text: str) -> str:
    return text.strip()


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "yes", "1", "on"):
        return True
    if low in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected True or False, got {text!r}")


def parse_int(text: str, minimum: int = 0, maximum: int | None = None) -> int:
    # digits only (Python's int() would also take "1_000" and "+5", which ClassAd and HTCondor do not)
    if not re.fullmatch(r"-?[0-9]+", text.strip()):
        raise ValueError(f"expected a whole number, got {text!r}")
    value = int(text.strip())
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"expected a number {bound}, got {value}")
    return value


def parse_float(text: str, minimum: float = 0.0, maximum: float = float("inf")) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not minimum <= value <= maximum:  # NaN fails too
        raise ValueError(f"expected a number from {minimum:g} to {maximum:g}, got {text.strip()}")
    return value


def parse_list(text: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", text.strip()) if item]


def parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not a CIDR prefix: {text.strip()!r} (e.g. 192.0.2.0/24 or 2001:db8::/48)") from None


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    return tuple(parse_network(item) for item in parse_list(text))


def parse_address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"not an IP address: {text.strip()!r}") from None


def parse_port_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"expected a port range FIRST-LAST, got {text!r}")
    first, last = int(m.group(1)), int(m.group(2))
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"port range {first}-{last} must satisfy 1 <= first <= last <= 65535")
    return first, last


def parse_pool(text: str, family: int) -> AddressPool:
    """``CIDR`` or ``CIDR first-last``: the addresses of the prefix Lark may hand out."""
    parts = text.split()
    if not parts or len(parts) > 2:
        raise ValueError(f"expected 'CIDR' or 'CIDR FIRST-LAST', got {text!r}")
    net = parse_network(parts[0])
    if net.version != family:
        raise ValueError(f"{parts[0]} is not an IPv{family} prefix")
    if len(parts) == 2:
        lo, sep, hi = parts[1].partition("-")
        if not sep:
            raise ValueError(f"expected a range FIRST-LAST after the prefix, got {parts[1]!r}")
        first, last = parse_address(lo), parse_address(hi)
        if first not in net or last not in net or first.version != last.version or int(first) > int(last):
            raise ValueError(f"range {parts[1]} must lie inside {net} with first <= last")
    else:
        first, last = _ends(net)
    return AddressPool(net, first, last)


def _ends(net: IPNetwork) -> tuple[IPAddress, IPAddress]:
    if net.version == 4 and net.prefixlen <= 30:
        return net.network_address + 1, net.broadcast_address - 1
    if net.version == 6 and net.prefixlen <= 126:
        return net.network_address + 1, net.broadcast_address
    return net.network_address, net.broadcast_address


def parse_absolute_path(text: str) -> Path:
    if not text.strip().startswith("/"):
        raise ValueError(f"expected an absolute path, got {text.strip()!r}")
    return Path(text.strip())


def parse_listen_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT``; empty: None (off)."""
    text = text.strip()
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9810 or [::1]:9810), got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def human_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``5.2 h``, ``3.1 d`` — for reasons people read."""
    s = abs(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"
