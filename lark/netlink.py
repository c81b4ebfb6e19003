"""Thin netlink helpers shared by every attachment mode (pyroute2 underneath).

Each helper turns pyroute2's NetlinkError into a KernelError that names the object and the
operation, so the CLI and HoldReasons say "adding 10.250.0.1/30 to larkhab12cd: File exists"
instead of a traceback.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from lark.errors import KernelError

if TYPE_CHECKING:
    from pyroute2 import IPRoute

T = TypeVar("T")
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _netlink(what: str, call: Callable[[], T]) -> T:
    from pyroute2 import NetlinkError

    try:
        return call()
    except NetlinkError as err:
        raise KernelError(f"{what}: {err.args[1] if len(err.args) > 1 else err}") from None


def link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def require_link(ipr: IPRoute, name: str, role: str) -> int:
    index = link_index(ipr, name)
    if index is None:
        raise KernelError(f"{role} {name!r} does not exist on this host")
    return index


def add_veth_into(ipr: IPRoute, host_name: str, job_name: str, job_netns_fd: int) -> int:
    """Create a veth whose peer is born inside the job's namespace (moving it costs ~15 ms)."""
    _netlink(f"creating veth {host_name}", lambda: ipr.link(
        "add", ifname=host_name, kind="veth", peer={"ifname": job_name, "net_ns_fd": job_netns_fd}))
    return require_link(ipr, host_name, "veth")


def create_link(ipr: IPRoute, what: str, **spec: object) -> None:
    """``ip link add`` with pyroute2's keywords (``kind``, ``link``, ``net_ns_fd``); ``what`` names it in errors."""
    _netlink(what, lambda: ipr.link("add", **spec))


def add_address(ipr: IPRoute, index: int, iface: Interface, ifname: str) -> None:
    kwargs: dict[str, object] = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    if iface.version == 6:
        # IFA_F_NODAD: usable at once instead of ~1-2 s of duplicate address detection
        kwargs["flags"] = 0x02
    _netlink(f"adding {iface} to {ifname}", lambda: ipr.addr("add", **kwargs))


def set_up(ipr: IPRoute, index: int, ifname: str, **extra: object) -> None:
    _netlink(f"bringing {ifname} up", lambda: ipr.link("set", index=index, state="up", **extra))


def add_default_route(ipr: IPRoute, gateway: ipaddress.IPv4Address | ipaddress.IPv6Address, index: int) -> None:
    family = 2 if gateway.version == 4 else 10
    _netlink(f"adding default route via {gateway}", lambda: ipr.route(
        "add", dst="default", gateway=str(gateway), oif=index, family=family))


def delete_link(ipr: IPRoute, name: str) -> bool:
    """Delete an interface if it exists; True when something was deleted. Idempotent."""
    from pyroute2 import NetlinkError

    index = link_index(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as err:
        if err.code == errno.ENODEV:
            return False
        raise KernelError(f"deleting {name}: {err.args[1] if len(err.args) > 1 else err}") from None
    return True


def link_names(ipr: IPRoute) -> list[str]:
    return [link.get("ifname") for link in ipr.get_links()]


def addresses_of(ipr: IPRoute, index: int) -> set[str]:
    return {f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)}


def write_sysctl(name: str, value: str) -> str | None:
    """Write /proc/sys/<name> in the calling thread's namespace; returns the previous value."""
    path = "/proc/sys/" + name.replace(".", "/")
    try:
        with open(path, encoding="ascii") as fh:
            previous = fh.read().strip()
        if previous != value:
            with open(path, "w", encoding="ascii") as fh:
                fh.write(value)
        return previous
    except FileNotFoundError:
        return None
