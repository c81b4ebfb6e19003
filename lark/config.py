"""Lark's configuration: ``LARK_*`` knobs read from HTCondor-style config files.

Admins set Lark's knobs in ``condor_config.d/`` drop-ins next to HTCondor's own. Lark reads those
files itself (rather than through ``condor_config_val``) so that a bad value can be reported with
the file, the line and the knob. Only ``LARK_*`` lines are interpreted; everything else in the
files belongs to HTCondor and is skipped. ``$(LARK_X)`` references are expanded; a reference to a
non-Lark macro (e.g. ``$(LOG)``) is resolved through an optional lookup (``htcondor2.param`` when
Lark runs under HTCondor).

Every knob is declared once in :data:`KNOBS` with its default and a one-line description; the
defaults work on a fresh execute node and are what ``lark run`` uses when no file is given.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lark.errors import ConfigError
from lark.firewall.isolation import HostAllow, IPNetwork, parse_host_allow, parse_job_to_job

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NETWORK_TYPES = ("nat", "bridge", "macvlan", "ipvlan", "none")
FIREWALL_BACKENDS = ("nftables", "iptables")

DEFAULT_SOURCES = (Path("/etc/condor/config.d"),)


@dataclass(frozen=True)
class Knob:
    name: str
    default: str
    doc: str


KNOBS: dict[str, Knob] = {
    k.name: k
    for k in (
        Knob("LARK_NAME_PREFIX", "lark", "Prefix of every kernel object Lark creates (2-6 characters, [a-z0-9])."),
        Knob("LARK_STATE_DIR", "/var/lib/lark", "Where jobs and address allocations are recorded."),
        Knob("LARK_SOCKET", "/run/lark/netd.sock", "Pathname of the broker's Unix socket."),
        Knob("LARK_FIREWALL", "nftables", "Firewall backend: nftables or iptables."),
        Knob("LARK_NETWORK_TYPES", "nat, none", "Attachment modes this node offers to jobs."),
        Knob("LARK_DEFAULT_NETWORK_TYPE", "nat", "Mode of a job that asks for none."),
        Knob("LARK_NAT_IPV4_POOL", "10.250.0.0/16", "Prefix that NAT jobs' IPv4 subnets are cut from."),
        Knob("LARK_NAT_IPV4_SUBNET_LENGTH", "30", "Prefix length of each NAT job's IPv4 subnet (host .1, job .2)."),
        Knob("LARK_NAT_IPV6_POOL", "fd6c:6172:6b00::/48", "Prefix that NAT jobs' IPv6 subnets are cut from; empty "
             "disables IPv6 for NAT jobs."),
        Knob("LARK_NAT_IPV6_SUBNET_LENGTH", "64", "Prefix length of each NAT job's IPv6 subnet."),
        Knob("LARK_NAT_IPV6_MASQUERADE", "True", "NAT66 (masquerade) the NAT jobs' IPv6 traffic; False routes it."),
        Knob("LARK_ENABLE_FORWARDING", "True", "Turn on IPv4/IPv6 forwarding in the host namespace when a "
             "routed job is set up (IPv6: keeps accept_ra working by setting it to 2 where it was 1)."),
        Knob("LARK_BRIDGE", "", "Name of an existing Linux bridge that bridge-mode jobs join."),
        Knob("LARK_BRIDGE_IPV4_POOL", "", "Bridge jobs' IPv4 addresses: CIDR of the bridged LAN, optionally "
             "followed by a range 'first-last' inside it."),
        Knob("LARK_BRIDGE_IPV4_GATEWAY", "", "Default IPv4 gateway of bridge jobs (empty: none)."),
        Knob("LARK_BRIDGE_IPV6_POOL", "", "Bridge jobs' IPv6 addresses (CIDR, optional range)."),
        Knob("LARK_BRIDGE_IPV6_GATEWAY", "", "Default IPv6 gateway of bridge jobs."),
        Knob("LARK_MACVLAN_PARENT", "", "Parent interface of macvlan jobs."),
        Knob("LARK_MACVLAN_IPV4_POOL", "", "macvlan jobs' IPv4 addresses (CIDR, optional range)."),
        Knob("LARK_MACVLAN_IPV4_GATEWAY", "", "Default IPv4 gateway of macvlan jobs."),
        Knob("LARK_MACVLAN_IPV6_POOL", "", "macvlan jobs' IPv6 addresses (CIDR, optional range)."),
        Knob("LARK_MACVLAN_IPV6_GATEWAY", "", "Default IPv6 gateway of macvlan jobs."),
        Knob("LARK_IPVLAN_PARENT", "", "Parent interface of ipvlan jobs."),
        Knob("LARK_IPVLAN_IPV4_POOL", "", "ipvlan jobs' IPv4 addresses (CIDR, optional range)."),
        Knob("LARK_IPVLAN_IPV4_GATEWAY", "", "Default IPv4 gateway of ipvlan jobs."),
        Knob("LARK_IPVLAN_IPV6_POOL", "", "ipvlan jobs' IPv6 addresses (CIDR, optional range)."),
        Knob("LARK_IPVLAN_IPV6_GATEWAY", "", "Default IPv6 gateway of ipvlan jobs."),
        Knob("LARK_TRAFFIC_CLASSES", "", "Names of traffic classes counted apart, each defined by "
             "LARK_TRAFFIC_CLASS_<NAME> = CIDR list. First match wins."),
        Knob("LARK_MAX_BANDWIDTH_MBIT", "0", "Largest per-job bandwidth limit a job may ask for (0: no maximum)."),
        Knob("LARK_DEFAULT_BANDWIDTH_MBIT", "0", "Limit of a job that asks for none (0: unlimited)."),
        Knob("LARK_ANTI_SPOOF", "True", "Drop job packets whose source is not one of the job's addresses."),
        Knob("LARK_INBOUND_PORT_RANGE", "40000-44999", "Host ports handed out to jobs that ask for inbound ports."),
        Knob("LARK_MAX_INBOUND_PORTS", "100", "Most inbound ports one job may ask for."),
        Knob("LARK_PUBLIC_ADDRESS", "", "Host IPv4 address jobs are told to advertise for inbound ports "
             "(empty: the source address of the host's default route)."),
        Knob("LARK_DENY", "", "Destinations no job may reach (CIDR list), on top of each job's own LarkDeny."),
        Knob("LARK_SWEEP_INTERVAL", "30", "Seconds between the broker's reconciliation sweeps."),
        Knob("LARK_ACCOUNTING_INTERVAL", "10", "Seconds between periodic counter pushes into running jobs' ads."),
        Knob("LARK_LOG", "$(LOG:/var/log/condor)/LarkNetdLog", "The broker's log file (HTCondor's line format)."),
        Knob("LARK_PROFILE_DIR", "/etc/condor/profiles.d", "Directory of network profile files (docs/profiles.md)."),
        Knob("LARK_EXECUTE_DIR", "$(EXECUTE:/var/lib/condor/execute)", "HTCondor's EXECUTE directory, where the "
             "broker finds each job's ad and chirp config (derived from the starter's pid, never from the job)."),
        Knob("LARK_STARTER", "$(STARTER:/usr/sbin/condor_starter)", "The condor_starter executable: the broker "
             "serves only processes whose parent runs exactly this root-owned file as root or condor."),
        Knob("LARK_REQUEST_TIMEOUT", "5", "Seconds a client has to send its whole request line (one deadline "
             "per request, not per read); slower connections are dropped."),
        Knob("LARK_BROKER_BACKLOG", "256", "Listen backlog of the broker's socket (burst of job starts it absorbs)."),
        Knob("LARK_BROKER_WORKERS", "8", "Threads that serve complete requests; waiting connections cost no thread."),
        Knob("LARK_BROKER_MAX_CONNECTIONS", "4096", "Open client connections the broker holds at once; "
             "beyond that new ones are closed at once."),
        Knob("LARK_ISOLATE_JOBS", "True", "NAT jobs reach neither the execute host's own services nor other "
             "jobs on the node, except where LARK_JOB_HOST_ALLOW / LARK_JOB_TO_JOB_ALLOW open a hole "
             "(replies to connections the host opened always pass)."),
        Knob("LARK_JOB_HOST_ALLOW", "", "Host services NAT jobs may reach: comma list of tcp/PORT, udp/PORT, "
             "tcp/FIRST-LAST, a CIDR of host addresses (every port), or 'CIDR tcp/PORT'."),
        Knob("LARK_JOB_TO_JOB_ALLOW", "False", "Whether NAT jobs reach each other: False, True, or a CIDR list of "
             "job addresses other jobs may reach."),
        Knob("LARK_FIREWALL_CHECK_INTERVAL", "5", "Seconds between the broker's checks that the host's Lark "
             "firewall table is intact (an admin's 'nft flush ruleset'); missing rules are restored."),
        Knob("LARK_METRICS_ADDRESS", "", "HOST:PORT where lark-netd serves Prometheus metrics (e.g. 127.0.0.1:9810); "
             "empty: no endpoint."),
        Knob("LARK_METRICS_TEXTFILE", "", "File lark-netd rewrites with its Prometheus metrics every "
             "LARK_ACCOUNTING_INTERVAL, for node_exporter's textfile collector; empty: none."),
        Knob("LARK_ACCOUNTING_JOURNAL", "$(LARK_STATE_DIR)/accounting.jsonl", "Durable journal (JSON lines) of "
             "every job's final counters, kept even when the job ad could not be updated (read by lark report)."),
    )
}

DYNAMIC_KNOB = re.compile(r"^LARK_TRAFFIC_CLASS_[A-Z0-9_]+$")
ATTACH_MODES_WITH_POOLS = ("bridge", "macvlan", "ipvlan")


@dataclass(frozen=True)
class Setting:
    """One knob's raw value and where it came from (None for built-in defaults)."""

    value: str
    source: str | None = None
    line: int | None = None


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


@dataclass(frozen=True)
class TrafficClass:
    name: str
    networks: tuple[IPNetwork, ...]

    @property
    def attribute_suffix(self) -> str:
        """CamelCase form used in ClassAd attributes: ``off_campus`` -> ``OffCampus``."""
        return "".join(part.capitalize() for part in self.name.split("_"))


@dataclass(frozen=True)
class LarkConfig:
    name_prefix: str
    state_dir: Path
    socket_path: Path
    firewall: str
    network_types: tuple[str, ...]
    default_network_type: str
    nat_ipv4_pool: IPNetwork
    nat_ipv4_subnet_length: int
    nat_ipv6_pool: IPNetwork | None
    nat_ipv6_subnet_length: int
    nat_ipv6_masquerade: bool
    enable_forwarding: bool
    site_attachments: Mapping[str, SiteAttachment]
    traffic_classes: tuple[TrafficClass, ...]
    max_bandwidth_mbit: int
    default_bandwidth_mbit: int
    anti_spoof: bool
    inbound_port_range: tuple[int, int]
    max_inbound_ports: int
    public_address: ipaddress.IPv4Address | None
    deny: tuple[IPNetwork, ...]
    sweep_interval: float
    accounting_interval: float
    log_path: Path
    execute_dir: Path
    starter_path: Path = Path("/usr/sbin/condor_starter")
    request_timeout: float = 5.0
    broker_backlog: int = 256
    broker_workers: int = 8
    broker_max_connections: int = 4096
    journal_path: Path = Path("/var/lib/lark/accounting.jsonl")
    metrics_address: tuple[str, int] | None = None
    metrics_textfile: Path | None = None
    isolate_jobs: bool = True
    job_host_allow: tuple[HostAllow, ...] = ()
    job_to_job_allow: bool | tuple[IPNetwork, ...] = False
    firewall_check_interval: float = 5.0
    settings: Mapping[str, Setting] = field(repr=False, default_factory=dict)


def condor_param(name: str) -> str | None:
    """HTCondor's own macros ($(LOG), $(EXECUTE)) when the bindings and a config are present."""
    try:
        import htcondor2

        value = htcondor2.param.get(name)
    except Exception:  # no bindings, or no HTCondor configuration on this machine
        return None
    return None if value is None else str(value)


# --------------------------------------------------------------------------------------------
# Reading HTCondor-style files


def _config_files(sources: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            # HTCondor reads LOCAL_CONFIG_DIR in lexical order and skips editor backups.
            files.extend(sorted(p for p in src.iterdir() if p.is_file() and not p.name.endswith(("~", ".swp"))))
        elif src.is_file():
            files.append(src)
        else:
            raise ConfigError("LARK_CONFIG", f"no such config file or directory: {src}")
    return files


_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*(=|@=\s*(\S+))\s*(.*)$")


def read_settings(path: Path) -> dict[str, Setting]:
    """Return the LARK_* assignments in one HTCondor config file, with their line numbers."""
    out: dict[str, Setting] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise ConfigError("LARK_CONFIG", f"cannot read {path}: {err.strerror}") from err
    i = 0
    while i < len(lines):
        start = i
        text = lines[i]
        i += 1
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        while stripped.endswith("\\") and i < len(lines):
            stripped = stripped[:-1] + " " + lines[i].strip()
            i += 1
        m = _ASSIGN.match(stripped)
        if not m:
            continue  # use/include/if/... belong to HTCondor
        name, op, tag, value = m.group(1), m.group(2), m.group(3), m.group(4)
        if op.startswith("@="):
            body = []
            while i < len(lines) and lines[i].strip() != f"@{tag}":
                body.append(lines[i])
                i += 1
            i += 1
            value = "\n".join(body)
        name = name.upper()
        if name.startswith("LARK_"):
            if name not in KNOBS and not DYNAMIC_KNOB.match(name) and not _is_foreign_lark_knob(name):
                raise ConfigError(name, _unknown_knob(name), str(path), start + 1)
            out[name] = Setting(value.strip(), str(path), start + 1)
    return out


def _is_foreign_lark_knob(name: str) -> bool:
    """Knobs read by other Lark components (spider, links cron, policy, hooks), not the engine."""
    return name in ("LARK_BIN", "LARK_NETD", "LARK_NETD_ARGS") or name.startswith((
        "LARK_SPIDER", "LARK_LINKS_", "LARK_HOOK_", "LARK_PRE_JOB_RANK", "LARK_PROFILE", "LARK_SITE",
        "LARK_MAX_TRANSFER_SECONDS", "LARK_SMALL_INPUT_BYTES", "LARK_UNKNOWN_LINK_POLICY", "LARK_MAX_LOSS",
        "LARK_MAX_LINK_AGE", "LARK_REPORT_"))


_MACRO = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.]*)(?::([^)]*))?\)")


def _expand(name: str, settings: Mapping[str, Setting], external: Callable[[str], str | None] | None,
            seen: tuple[str, ...] = ()) -> str:
    setting = settings[name]
    if name in seen:
        raise ConfigError(name, "refers to itself through $(...)", setting.source, setting.line)

    def sub(m: re.Match[str]) -> str:
        ref, default = m.group(1).upper(), m.group(2)
        if ref in settings:
            return _expand(ref, settings, external, (*seen, name))
        if external is not None:
            found = external(ref)
            if found is not None:
                return found
        if default is not None:
            return default
        raise ConfigError(name, f"refers to $({ref}), which is not defined", setting.source, setting.line)

    return _MACRO.sub(sub, setting.value)


# --------------------------------------------------------------------------------------------
# Value parsers. Each raises ValueError with a message that names the accepted values.


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
        if first not in net or last not in net or first > last:  # type: ignore[operator]
            raise ValueError(f"range {parts[1]} must lie inside {net} with first <= last")
    else:
        hosts = list(_ends(net))
        first, last = hosts[0], hosts[1]
    return AddressPool(net, first, last)


def _ends(net: IPNetwork) -> tuple[IPAddress, IPAddress]:
    if net.version == 4 and net.prefixlen <= 30:
        return net.network_address + 1, net.broadcast_address - 1
    if net.version == 6 and net.prefixlen <= 126:
        return net.network_address + 1, net.broadcast_address
    return net.network_address, net.broadcast_address


# --------------------------------------------------------------------------------------------


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


def _unknown_knob(name: str) -> str:
    """The message for a LARK_ name Lark does not know: a likely typo first, then every knob."""
    close = difflib.get_close_matches(name, list(KNOBS), n=1, cutoff=0.8)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown Lark knob ({hint}known: {', '.join(sorted(KNOBS))})"


def load_config(sources: Iterable[Path] | None = None, overrides: Mapping[str, str] | None = None,
                external: Callable[[str], str | None] | None = None) -> LarkConfig:
    """Read the knobs from ``sources`` (files or config.d directories) on top of the defaults.

    With ``sources=None`` the ``LARK_CONFIG`` environment variable (a ``:``-separated list) is used,
    else ``/etc/condor/config.d`` when it exists, else only the built-in defaults. ``overrides`` wins
    over everything (used by tests and the CLI).
    """
    if sources is None:
        env = os.environ.get("LARK_CONFIG")
        if env:
            sources = [Path(p) for p in env.split(":") if p]
        else:
            sources = [p for p in DEFAULT_SOURCES if p.exists()]
    settings: dict[str, Setting] = {name: Setting(k.default) for name, k in KNOBS.items()}
    for path in _config_files(Path(s) for s in sources):
        settings.update(read_settings(path))
    for name, value in (overrides or {}).items():
        name = name.upper()
        if name not in KNOBS and not DYNAMIC_KNOB.match(name):
            raise ConfigError(name, _unknown_knob(name))
        settings[name] = Setting(value, "override")
    return build_config(settings, external)


def build_config(settings: Mapping[str, Setting], external: Callable[[str], str | None] | None = None
                 ) -> LarkConfig:
    """Validate every knob; the first bad one raises :class:`ConfigError` naming file, line and knob."""

    def get(name: str, parse: Callable[[str], object]) -> object:
        setting = settings[name]
        try:
            return parse(_expand(name, settings, external))
        except ValueError as err:
            raise ConfigError(name, str(err), setting.source, setting.line) from None

    def fail(name: str, message: str) -> ConfigError:
        s = settings.get(name, Setting(""))
        return ConfigError(name, message, s.source, s.line)

    def optional(parse: Callable[[str], object]) -> Callable[[str], object]:
        return lambda text: parse(text) if text.strip() else None

    prefix = str(get("LARK_NAME_PREFIX", str)).strip()
    if not re.fullmatch(r"[a-z][a-z0-9]{1,5}", prefix):
        raise fail("LARK_NAME_PREFIX", f"must be 2-6 characters [a-z0-9] starting with a letter, got {prefix!r} "
                   "(interface names must fit in 15 characters)")
    firewall = str(get("LARK_FIREWALL", str)).strip().lower()
    if firewall not in FIREWALL_BACKENDS:
        raise fail("LARK_FIREWALL", f"expected one of {', '.join(FIREWALL_BACKENDS)}, got {firewall!r}")
    types = tuple(t.lower() for t in parse_list(str(get("LARK_NETWORK_TYPES", str))))
    for t in types:
        if t not in NETWORK_TYPES:
            raise fail("LARK_NETWORK_TYPES", f"unknown network type {t!r} (accepted: {', '.join(NETWORK_TYPES)})")
    default_type = str(get("LARK_DEFAULT_NETWORK_TYPE", str)).strip().lower()
    if default_type not in types:
        raise fail("LARK_DEFAULT_NETWORK_TYPE", f"{default_type!r} is not in LARK_NETWORK_TYPES ({', '.join(types)})")

    v4pool = get("LARK_NAT_IPV4_POOL", parse_network)
    v4len = int(get("LARK_NAT_IPV4_SUBNET_LENGTH", lambda t: parse_int(t, 8, 31)))  # type: ignore[arg-type]
    if v4pool.version != 4:  # type: ignore[union-attr]
        raise fail("LARK_NAT_IPV4_POOL", f"{v4pool} is not an IPv4 prefix")
    if v4len < v4pool.prefixlen:  # type: ignore[union-attr]
        raise fail("LARK_NAT_IPV4_SUBNET_LENGTH", f"/{v4len} is larger than the pool {v4pool}")
    if v4len > 30:
        raise fail("LARK_NAT_IPV4_SUBNET_LENGTH", "must be at most 30 (a job subnet needs a host and a job address)")
    v6pool = get("LARK_NAT_IPV6_POOL", optional(parse_network))
    v6len = int(get("LARK_NAT_IPV6_SUBNET_LENGTH", lambda t: parse_int(t, 16, 126)))  # type: ignore[arg-type]
    if v6pool is not None:
        if v6pool.version != 6:  # type: ignore[union-attr]
            raise fail("LARK_NAT_IPV6_POOL", f"{v6pool} is not an IPv6 prefix")
        if v6len < v6pool.prefixlen:  # type: ignore[union-attr]
            raise fail("LARK_NAT_IPV6_SUBNET_LENGTH", f"/{v6len} is larger than the pool {v6pool}")

    sites: dict[str, SiteAttachment] = {}
    for mode in ATTACH_MODES_WITH_POOLS:
        up = mode.upper()
        parent_knob = "LARK_BRIDGE" if mode == "bridge" else f"LARK_{up}_PARENT"
        parent = str(get(parent_knob, str)).strip()
        v4 = get(f"LARK_{up}_IPV4_POOL", optional(lambda t: parse_pool(t, 4)))
        v6 = get(f"LARK_{up}_IPV6_POOL", optional(lambda t: parse_pool(t, 6)))
        gw4 = get(f"LARK_{up}_IPV4_GATEWAY", optional(parse_address))
        gw6 = get(f"LARK_{up}_IPV6_GATEWAY", optional(parse_address))
        if mode in types:
            if not parent:
                raise fail(parent_knob, f"network type {mode!r} is offered (LARK_NETWORK_TYPES) but no "
                           f"{'bridge' if mode == 'bridge' else 'parent interface'} is configured")
            if v4 is None and v6 is None:
                raise fail(f"LARK_{up}_IPV4_POOL", f"network type {mode!r} is offered but has no address pool")
        for knob, gw, fam in ((f"LARK_{up}_IPV4_GATEWAY", gw4, 4), (f"LARK_{up}_IPV6_GATEWAY", gw6, 6)):
            if gw is not None and gw.version != fam:  # type: ignore[union-attr]
                raise fail(knob, f"{gw} is not an IPv{fam} address")
        sites[mode] = SiteAttachment(parent, v4, gw4, v6, gw6)  # type: ignore[arg-type]

    classes: list[TrafficClass] = []
    for name in parse_list(str(get("LARK_TRAFFIC_CLASSES", str))):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,30}", name):
            raise fail("LARK_TRAFFIC_CLASSES", f"class name {name!r} must be a letter followed by letters, "
                       "digits or _ (it becomes part of an attribute name)")
        knob = f"LARK_TRAFFIC_CLASS_{name.upper()}"
        if knob not in settings:
            raise fail("LARK_TRAFFIC_CLASSES", f"class {name!r} is listed but {knob} is not set")
        nets = get(knob, parse_networks)
        if not nets:
            raise fail(knob, "is empty; give at least one CIDR prefix")
        classes.append(TrafficClass(name.lower(), nets))  # type: ignore[arg-type]

    public = get("LARK_PUBLIC_ADDRESS", optional(parse_address))
    if public is not None and public.version != 4:  # type: ignore[union-attr]
        raise fail("LARK_PUBLIC_ADDRESS", f"{public} is not an IPv4 address")

    return LarkConfig(
        name_prefix=prefix,
        state_dir=Path(str(get("LARK_STATE_DIR", str)).strip()),
        socket_path=Path(str(get("LARK_SOCKET", str)).strip()),
        firewall=firewall,
        network_types=types,
        default_network_type=default_type,
        nat_ipv4_pool=v4pool,  # type: ignore[arg-type]
        nat_ipv4_subnet_length=v4len,
        nat_ipv6_pool=v6pool,  # type: ignore[arg-type]
        nat_ipv6_subnet_length=v6len,
        nat_ipv6_masquerade=bool(get("LARK_NAT_IPV6_MASQUERADE", parse_bool)),
        enable_forwarding=bool(get("LARK_ENABLE_FORWARDING", parse_bool)),
        site_attachments=sites,
        traffic_classes=tuple(classes),
        max_bandwidth_mbit=int(get("LARK_MAX_BANDWIDTH_MBIT", parse_int)),  # type: ignore[arg-type]
        default_bandwidth_mbit=int(get("LARK_DEFAULT_BANDWIDTH_MBIT", parse_int)),  # type: ignore[arg-type]
        anti_spoof=bool(get("LARK_ANTI_SPOOF", parse_bool)),
        inbound_port_range=get("LARK_INBOUND_PORT_RANGE", parse_port_range),  # type: ignore[arg-type]
        max_inbound_ports=int(get("LARK_MAX_INBOUND_PORTS", lambda t: parse_int(t, 0, 65535))),  # type: ignore[arg-type]
        public_address=public,  # type: ignore[arg-type]
        deny=get("LARK_DENY", parse_networks),  # type: ignore[arg-type]
        sweep_interval=float(get("LARK_SWEEP_INTERVAL", lambda t: parse_int(t, 1))),  # type: ignore[arg-type]
        accounting_interval=float(get("LARK_ACCOUNTING_INTERVAL", lambda t: parse_int(t, 1))),  # type: ignore[arg-type]
        log_path=Path(str(get("LARK_LOG", str)).strip()),
        execute_dir=Path(str(get("LARK_EXECUTE_DIR", str)).strip()),
        starter_path=get("LARK_STARTER", parse_absolute_path),  # type: ignore[arg-type]
        request_timeout=float(get("LARK_REQUEST_TIMEOUT", lambda t: parse_float(t, 0.1, 3600))),  # type: ignore[arg-type]
        broker_backlog=int(get("LARK_BROKER_BACKLOG", lambda t: parse_int(t, 1, 65535))),  # type: ignore[arg-type]
        broker_workers=int(get("LARK_BROKER_WORKERS", lambda t: parse_int(t, 1, 256))),  # type: ignore[arg-type]
        broker_max_connections=int(get("LARK_BROKER_MAX_CONNECTIONS",  # type: ignore[arg-type]
                                       lambda t: parse_int(t, 16, 1_000_000))),
        journal_path=get("LARK_ACCOUNTING_JOURNAL", parse_absolute_path),  # type: ignore[arg-type]
        metrics_address=get("LARK_METRICS_ADDRESS", parse_listen_address),  # type: ignore[arg-type]
        metrics_textfile=get("LARK_METRICS_TEXTFILE", optional(parse_absolute_path)),  # type: ignore[arg-type]
        isolate_jobs=bool(get("LARK_ISOLATE_JOBS", parse_bool)),
        job_host_allow=get("LARK_JOB_HOST_ALLOW", parse_host_allow),  # type: ignore[arg-type]
        job_to_job_allow=get("LARK_JOB_TO_JOB_ALLOW", parse_job_to_job),  # type: ignore[arg-type]
        firewall_check_interval=float(get("LARK_FIREWALL_CHECK_INTERVAL",  # type: ignore[arg-type]
                                          lambda t: parse_float(t, 0.1, 3600))),
        settings=dict(settings),
    )
