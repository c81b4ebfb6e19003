"""The multi-site network of a personal pool: who sits where, and the namespaces, links and shaping.

The plan (:func:`plan`, pure) names every node and namespace after the pool's prefix and gives every
address; :func:`build_network` makes it in the kernel, :func:`network_namespaces` lists what
:func:`remove_network` deletes. The layout::

    cm (10.100.0.2) ─┐                         ┌─ r1 (site router, data server 10.10.1.10) ── site1 (10.10.1.2)
    submit (10.100.1.2) ─ wan (router, shaped) ─┼─ r2 ... ── site2 (10.10.2.2)
                                               └─ rN ... ── siteN (10.10.N.2)

Each site's link to the WAN has its own capacity, shaped with ``tc tbf`` in both directions (the router's
``wan0`` egress is the site's upload, the WAN's ``site<i>`` egress its download; the kernel here has no netem,
so only capacities). Traffic between a site's execute node and its own data server stays on the site LAN
(campus); everything else crosses the WAN (offcampus). All links live only inside the pool's own namespaces.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from lark.pool.node import QUICK_DAEMONS
from lark.pool.util import PoolError

#: site link capacities in Mbit/s, site1 first; more sites repeat the cycle. The last is the thin site.
DEFAULT_CAPACITIES_MBIT = (1000, 100, 10)
DEFAULT_SITES = 3
DEFAULT_SLOTS = 2
MAX_SITES = 9
DOMAIN = "lark.test"
CM_ADDRESS = "10.100.0.2"
SUBMIT_ADDRESS = "10.100.1.2"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,9}")


@dataclass(frozen=True)
class Site:
    """Site ``index`` (1-based): its execute node, its router and data server, and its WAN capacity."""

    index: int
    mbit: int

    @property
    def name(self) -> str:
        return f"SITE{self.index}"

    @property
    def lan(self) -> str:
        return f"10.10.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        return f"10.10.{self.index}.1"

    @property
    def execute_address(self) -> str:
        return f"10.10.{self.index}.2"

    @property
    def data_address(self) -> str:
        """The site's data server: a second address of the site router, on the site LAN."""
        return f"10.10.{self.index}.10"

    @property
    def wan_address(self) -> str:
        return f"10.101.{self.index}.2"

    @property
    def wan_peer(self) -> str:
        return f"10.101.{self.index}.1"


@dataclass(frozen=True)
class Node:
    """One HTCondor node: ``role`` is ``cm``, ``submit`` or ``execute`` (then ``site`` is set)."""

    name: str
    role: str
    address: str
    gateway: str
    site: Site | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}.{DOMAIN}"


@dataclass(frozen=True)
class Plan:
    """Everything a pool named ``name`` consists of; ``prefix`` starts every namespace and run directory."""

    name: str
    sites: tuple[Site, ...]
    slots: int

    @property
    def prefix(self) -> str:
        return f"lkp-{self.name}"

    @property
    def nodes(self) -> tuple[Node, ...]:
        core = (Node("cm", "cm", CM_ADDRESS, "10.100.0.1"), Node("submit", "submit", SUBMIT_ADDRESS, "10.100.1.1"))
        return core + tuple(Node(f"site{s.index}", "execute", s.execute_address, s.gateway, s) for s in self.sites)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise PoolError(f"pool {self.name} has no node {name!r} (it has {', '.join(n.name for n in self.nodes)})")

    def netns(self, what: str) -> str:
        """Namespace name of a node (``cm``, ``site1``), the WAN (``wan``) or a site router (``r1``)."""
        return f"{self.prefix}-{what}"

    @property
    def wan_netns(self) -> str:
        return self.netns("wan")

    def router_netns(self, site: Site) -> str:
        return self.netns(f"r{site.index}")


def validate_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise PoolError(f"pool name {name!r}: use 1-10 lower-case letters and digits, starting with a letter")
    return name


def plan(name: str, sites: int = DEFAULT_SITES, slots: int = DEFAULT_SLOTS,
         capacities_mbit: Sequence[int] = DEFAULT_CAPACITIES_MBIT) -> Plan:
    """The pool ``name`` with ``sites`` execute sites of ``slots`` slots each."""
    validate_name(name)
    if not 1 <= sites <= MAX_SITES:
        raise PoolError(f"--sites must be 1..{MAX_SITES}, not {sites}")
    if slots < 1:
        raise PoolError(f"--slots must be at least 1, not {slots}")
    if not capacities_mbit or min(capacities_mbit) < 1:
        raise PoolError(f"site capacities must be positive Mbit/s: {list(capacities_mbit)}")
    return Plan(name, tuple(Site(i, capacities_mbit[(i - 1) % len(capacities_mbit)]) for i in range(1, sites + 1)),
                slots)


# ---------------------------------------------------------------------------------------------------------------
# what goes into each node (pure)

COMMON_CONFIG = """\
# Lark personal pool (lark pool up): node {hostname}, role {role}
CONDOR_HOST = {cm}
NETWORK_INTERFACE = {address}
NETWORK_HOSTNAME = {hostname}
BIND_ALL_INTERFACES = False
ENABLE_IPV6 = False
UID_DOMAIN = {domain}
# each node its own file system: jobs transfer their files
FILESYSTEM_DOMAIN = {hostname}
TRUST_UID_DOMAIN = True
# MANDATORY: else the root master rewrites host sysctls (pid_max, port range, ...) through /proc/sys
ENABLE_KERNEL_TUNING = False
""" + QUICK_DAEMONS + """\
# the perfSONAR spider advertises generic ads with an IDTOKEN for this identity
COLLECTOR.ALLOW_DAEMON = $(ALLOW_DAEMON) lark@{domain}
CONDOR_Q_ONLY_MY_JOBS = False
"""

ROLE_CONFIG = {
    "cm": "use ROLE: CentralManager\n",
    "submit": "use ROLE: Submit\n",
    "execute": "use ROLE: Execute\nNUM_CPUS = {slots}\n",
}


def node_config(p: Plan, node: Node) -> str:
    """The node's base configuration (``10-lark-testpool.conf``; the image's single-machine
    ``00-minicondor`` is removed from every node)."""
    text = COMMON_CONFIG.format(hostname=node.hostname, role=node.role, cm=CM_ADDRESS, address=node.address,
                                domain=DOMAIN)
    return text + ROLE_CONFIG[node.role].format(slots=p.slots)


def site_config(p: Plan, node: Node) -> str:
    """An execute node's own Lark settings (``70-lark-site.conf``), next to the guide's drop-ins: its site,
    and its traffic classes (its own site's LAN is campus, everything else offcampus)."""
    assert node.site is not None
    return f"""# Lark personal pool: this execute node's site
LARK_SITE = {node.site.name}
LARK_TRAFFIC_CLASSES = campus, offcampus
LARK_TRAFFIC_CLASS_CAMPUS = {node.site.lan}
LARK_TRAFFIC_CLASS_OFFCAMPUS = 0.0.0.0/0, ::/0
LARK_SWEEP_INTERVAL = 2
LARK_ACCOUNTING_INTERVAL = 2
STARTD_CRON_LARKNODE_PERIOD = 3s
MASTER_BACKOFF_CONSTANT = 1
MASTER_NEW_BINARY_RESTART = NEVER
"""


def hosts_file(p: Plan, node: Node, host_name: str) -> str:
    """Every node and data server by name; ``host_name`` (the machine's own, which the nodes share, as
    HTCondor's tools resolve it first) is the node itself."""
    lines = ["127.0.0.1 localhost"]
    lines += [f"{n.address} {n.hostname} {n.name}" + (f" {host_name}" if n == node else "") for n in p.nodes]
    lines += [f"{s.data_address} data.site{s.index}.{DOMAIN} data.site{s.index}" for s in p.sites]
    return "\n".join(lines) + "\n"


def tbf(dev: str, mbit: int) -> list[str]:
    """``tc`` arguments shaping ``dev``'s egress to ``mbit`` Mbit/s; the bucket holds at least 10 ms of
    traffic (and one 64 KiB TSO burst) so a fast link is not throttled below its rate."""
    burst = max(mbit * 1_000_000 // 8 // 100, 65536 + 1514)
    return ["qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit", "burst", str(burst),
            "latency", "100ms"]


def network_namespaces(p: Plan) -> list[str]:
    """The namespaces of the network itself (the nodes' own are made by :class:`lark.pool.node.Pool`)."""
    return [p.wan_netns, *(p.router_netns(s) for s in p.sites)]


# ---------------------------------------------------------------------------------------------------------------
# the kernel side


def _ip(netns: str, *args: str) -> None:
    run = subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise PoolError(f"ip -n {netns} {' '.join(args)}: {run.stderr.strip()}")


def _tc(netns: str, args: Sequence[str]) -> None:
    run = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "tc", *args], capture_output=True, text=True,
                         check=False)
    if run.returncode != 0:
        raise PoolError(f"tc {' '.join(args)} in {netns}: {run.stderr.strip()}")


def _forwarding(netns: str) -> None:
    # /proc/sys/net is the writer's own namespace's
    run = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise PoolError(f"ip_forward in {netns}: {run.stderr.strip()}")


def _veth(a_ns: str, a: str, b_ns: str, b: str) -> None:
    """A veth pair made directly in its two namespaces (it never exists in the host's)."""
    run = subprocess.run(["ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise PoolError(f"veth {a_ns}/{a} - {b_ns}/{b}: {run.stderr.strip()}")


def _up(netns: str, dev: str, *addresses: str) -> None:
    for address in addresses:
        _ip(netns, "addr", "add", address, "dev", dev)
    _ip(netns, "link", "set", dev, "up")


def build_network(p: Plan) -> None:
    """Make the WAN, the site routers and every node's link (the nodes' namespaces must exist)."""
    from lark import netns

    wan = p.wan_netns
    for name in network_namespaces(p):
        netns.create_named(name)
        _ip(name, "link", "set", "lo", "up")
        _forwarding(name)
    for node in p.nodes:
        node_ns = p.netns(node.name)
        if node.site is None:  # the central manager and the submit node hang off the WAN, unshaped
            wan_dev = node.name
            _veth(node_ns, "eth0", wan, wan_dev)
            _up(wan, wan_dev, f"{node.gateway}/24")
        else:
            site, router = node.site, p.router_netns(node.site)
            _veth(node_ns, "eth0", router, "lan0")
            _up(router, "lan0", f"{site.gateway}/24", f"{site.data_address}/24")
            _veth(router, "wan0", wan, f"site{site.index}")
            _up(router, "wan0", f"{site.wan_address}/24")
            _up(wan, f"site{site.index}", f"{site.wan_peer}/24")
            _ip(router, "route", "add", "default", "via", site.wan_peer)
            _ip(wan, "route", "add", site.lan, "via", site.wan_address)
            _tc(router, tbf("wan0", site.mbit))  # upload
            _tc(wan, tbf(f"site{site.index}", site.mbit))  # download
        _up(node_ns, "eth0", f"{node.address}/24")
        _ip(node_ns, "route", "add", "default", "via", node.gateway)


def remove_network(p: Plan) -> list[str]:
    """Delete the WAN and the routers (their links go with them). Returns the errors, if any."""
    from lark import netns

    errors = []
    for name in network_namespaces(p):
        try:
            netns.delete_named(name)
        except Exception as exc:  # keep deleting the others
            errors.append(f"{name}: {exc}")
    return errors
