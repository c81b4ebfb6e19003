"""Lark's configuration: the core ``LARK_*`` knobs, every component's knobs gathered, and LarkConfig.

Admins set Lark's knobs in ``condor_config.d`` drop-ins next to HTCondor's own. They are read by
:class:`lark.knobs.ConfigReader` (files with file:line, or HTCondor's own lookup) and validated
here once; a bad value is reported with the file, the line and the knob.

Every knob is declared once as a :class:`~lark.knobs.Knob` with its default, typed parser, doc and
owner: the core knobs below, the attachment modes' own knobs in :mod:`lark.attach`, the link
pipeline's in :mod:`lark.links.knobs`, the report's in :mod:`lark.report.settings`.
:func:`all_knobs` gathers them; the unknown-knob check and the admin guide's tables derive from it.
The defaults work on a fresh execute node and are what ``lark run`` uses when no file is given.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from lark import attach
from lark.addressing import parse_fallback
from lark.errors import ConfigError
from lark.firewall.isolation import parse_host_allow, parse_job_to_job
from lark.knobs import (
    DEFAULT_SOURCES,
    ConfigReader,
    EffectiveKnob,
    Knob,
    Lookup,
    Setting,
    condor_param,
    effective_knobs,
    parse_setting,
    read_settings,
)
from lark.links.knobs import KNOBS as LINK_PIPELINE_KNOBS
from lark.nodeconfig import LarkConfig
from lark.shares import ShareSettings, parse_weights
from lark.values import (
    AddressPool,
    IPAddress,
    IPNetwork,
    SiteAttachment,
    TrafficClass,
    parse_absolute_path,
    parse_address,
    parse_bool,
    parse_float,
    parse_int,
    parse_list,
    parse_listen_address,
    parse_network,
    parse_networks,
    parse_pool,
    parse_port_range,
    parse_text,
)

__all__ = [  # re-exported for the modules that import them from here
    "DEFAULT_SOURCES", "AddressPool", "IPAddress", "IPNetwork", "Knob", "LarkConfig", "Setting", "SiteAttachment",
    "TrafficClass", "condor_param", "parse_absolute_path", "parse_address", "parse_bool", "parse_float",
    "parse_int", "parse_list", "parse_listen_address", "parse_network", "parse_networks", "parse_pool",
    "parse_port_range", "read_settings",
]

T = TypeVar("T")
FIREWALL_BACKENDS = ("nftables", "iptables")
CORE = "lark"  # owner of the knobs of lark-netd, the engine, the hook and the lark command
MACROS = "condor_config.d"  # knobs only HTCondor's own configuration uses (daemon paths, hooks)


def _optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    return lambda text: parse(text) if text.strip() else None


def _bounded_int(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    return lambda text: parse_int(text, minimum, maximum)


def _bounded_float(minimum: float, maximum: float) -> Callable[[str], float]:
    return lambda text: parse_float(text, minimum, maximum)


def parse_name_prefix(text: str) -> str:
    prefix = text.strip()
    if not re.fullmatch(r"[a-z][a-z0-9]{1,5}", prefix):
        raise ValueError(f"must be 2-6 characters [a-z0-9] starting with a letter, got {prefix!r} "
                         "(interface names must fit in 15 characters)")
    return prefix


def parse_firewall(text: str) -> str:
    backend = text.strip().lower()
    if backend not in FIREWALL_BACKENDS:
        raise ValueError(f"expected one of {', '.join(FIREWALL_BACKENDS)}, got {backend!r}")
    return backend


def parse_network_types(text: str) -> tuple[str, ...]:
    types = tuple(t.lower() for t in parse_list(text))
    for t in types:
        if t not in attach.mode_names():
            raise ValueError(f"unknown network type {t!r} (accepted: {', '.join(attach.mode_names())})")
    return types


def _prefix_of(version: int) -> Callable[[str], IPNetwork]:
    def parse(text: str) -> IPNetwork:
        net = parse_network(text)
        if net.version != version:
            raise ValueError(f"{net} is not an IPv{version} prefix")
        return net

    return parse


def parse_public_address(text: str) -> ipaddress.IPv4Address | None:
    if not text.strip():
        return None
    address = parse_address(text)
    if not isinstance(address, ipaddress.IPv4Address):
        raise ValueError(f"{address} is not an IPv4 address")
    return address


def _core(name: str, default: str, parse: Callable[[str], T], doc: str) -> Knob[T]:
    return Knob(name, default, parse, doc, CORE)


NAME_PREFIX = _core("LARK_NAME_PREFIX", "lark", parse_name_prefix,
                    "Prefix of every kernel object Lark creates (2-6 characters, [a-z0-9]).")
STATE_DIR = _core("LARK_STATE_DIR", "/var/lib/lark", parse_text, "Where jobs and address allocations are recorded.")
SOCKET = _core("LARK_SOCKET", "/run/lark/netd.sock", parse_text, "Pathname of the broker's Unix socket.")
FIREWALL = _core("LARK_FIREWALL", "nftables", parse_firewall, "Firewall backend: nftables or iptables.")
NETWORK_TYPES_KNOB = _core("LARK_NETWORK_TYPES", "nat, none", parse_network_types,
                           "Attachment modes this node offers to jobs (see docs/modes.md).")
DEFAULT_NETWORK_TYPE = _core("LARK_DEFAULT_NETWORK_TYPE", "nat", lambda t: t.strip().lower(),
                             "Mode of a job that asks for none.")
NAT_IPV4_POOL = _core("LARK_NAT_IPV4_POOL", "10.250.0.0/16", _prefix_of(4),
                      "Prefix that NAT jobs' IPv4 subnets are cut from.")
NAT_IPV4_SUBNET_LENGTH = _core("LARK_NAT_IPV4_SUBNET_LENGTH", "30", _bounded_int(8, 31),
                               "Prefix length of each NAT job's IPv4 subnet (host .1, job .2).")
NAT_IPV6_POOL = _core("LARK_NAT_IPV6_POOL", "fd6c:6172:6b00::/48", _optional(_prefix_of(6)),
                      "Prefix that NAT jobs' IPv6 subnets are cut from; empty disables IPv6 for NAT jobs.")
NAT_IPV6_SUBNET_LENGTH = _core("LARK_NAT_IPV6_SUBNET_LENGTH", "64", _bounded_int(16, 126),
                               "Prefix length of each NAT job's IPv6 subnet.")
NAT_IPV6_MASQUERADE = _core("LARK_NAT_IPV6_MASQUERADE", "True", parse_bool,
                            "NAT66 (masquerade) the NAT jobs' IPv6 traffic; False routes it.")
ENABLE_FORWARDING = _core("LARK_ENABLE_FORWARDING", "True", parse_bool,
                          "Turn on IPv4/IPv6 forwarding in the host namespace when a routed job is set up "
                          "(IPv6: keeps accept_ra working by setting it to 2 where it was 1).")
TRAFFIC_CLASSES = _core("LARK_TRAFFIC_CLASSES", "", parse_list, "Names of traffic classes counted apart, each "
                        "defined by LARK_TRAFFIC_CLASS_<NAME> = CIDR list. First match wins.")
TRAFFIC_CLASS = Knob("LARK_TRAFFIC_CLASS_<NAME>", "", parse_networks, "The CIDR list of one traffic class.",
                     CORE, pattern=r"LARK_TRAFFIC_CLASS_[A-Z0-9_]+")
MAX_BANDWIDTH_MBIT = _core("LARK_MAX_BANDWIDTH_MBIT", "0", parse_int,
                           "Largest per-job bandwidth limit a job may ask for (0: no maximum).")
DEFAULT_BANDWIDTH_MBIT = _core("LARK_DEFAULT_BANDWIDTH_MBIT", "0", parse_int,
                               "Limit of a job that asks for none (0: unlimited).")
ANTI_SPOOF = _core("LARK_ANTI_SPOOF", "True", parse_bool,
                   "Drop job packets whose source is not one of the job's addresses.")
INBOUND_PORT_RANGE = _core("LARK_INBOUND_PORT_RANGE", "40000-44999", parse_port_range,
                           "Host ports handed out to jobs that ask for inbound ports.")
MAX_INBOUND_PORTS = _core("LARK_MAX_INBOUND_PORTS", "100", _bounded_int(0, 65535),
                          "Most inbound ports one job may ask for.")
PUBLIC_ADDRESS = _core("LARK_PUBLIC_ADDRESS", "", parse_public_address, "Host IPv4 address jobs are told to "
                       "advertise for inbound ports (empty: the source address of the host's default route).")
DENY = _core("LARK_DENY", "", parse_networks,
             "Destinations no job may reach (CIDR list), on top of each job's own LarkDeny.")
SWEEP_INTERVAL = _core("LARK_SWEEP_INTERVAL", "30", _bounded_int(1),
                       "Seconds between the broker's reconciliation sweeps.")
ACCOUNTING_INTERVAL = _core("LARK_ACCOUNTING_INTERVAL", "10", _bounded_int(1),
                            "Seconds between periodic counter pushes into running jobs' ads.")
LOG = _core("LARK_LOG", "$(LOG:/var/log/condor)/LarkNetdLog", parse_text,
            "The broker's log file (HTCondor's line format).")
PROFILE_DIR = _core("LARK_PROFILE_DIR", "/etc/condor/profiles.d", parse_text,
                    "Directory of network profile files (docs/profiles.md).")
EXECUTE_DIR = _core("LARK_EXECUTE_DIR", "$(EXECUTE:/var/lib/condor/execute)", parse_text,
                    "HTCondor's EXECUTE directory, where the broker finds each job's ad and chirp config "
                    "(derived from the starter's pid, never from the job).")
STARTER = _core("LARK_STARTER", "$(STARTER:/usr/sbin/condor_starter)", parse_absolute_path,
                "The condor_starter executable: the broker serves only processes whose parent runs exactly "
                "this root-owned file as root or condor.")
REQUEST_TIMEOUT = _core("LARK_REQUEST_TIMEOUT", "5", _bounded_float(0.1, 3600),
                        "Seconds a client has to send its whole request line (one deadline per request, not per "
                        "read); slower connections are dropped.")
BROKER_BACKLOG = _core("LARK_BROKER_BACKLOG", "256", _bounded_int(1, 65535),
                       "Listen backlog of the broker's socket (burst of job starts it absorbs).")
BROKER_WORKERS = _core("LARK_BROKER_WORKERS", "8", _bounded_int(1, 256),
                       "Threads that serve complete requests; waiting connections cost no thread.")
BROKER_MAX_CONNECTIONS = _core("LARK_BROKER_MAX_CONNECTIONS", "4096", _bounded_int(16, 1_000_000),
                               "Open client connections the broker holds at once; beyond that new ones are "
                               "closed at once.")
ISOLATE_JOBS = _core("LARK_ISOLATE_JOBS", "True", parse_bool, "NAT jobs reach neither the execute host's own "
                     "services nor other jobs on the node, except where LARK_JOB_HOST_ALLOW / "
                     "LARK_JOB_TO_JOB_ALLOW open a hole (replies to connections the host opened always pass).")
JOB_HOST_ALLOW = _core("LARK_JOB_HOST_ALLOW", "", parse_host_allow, "Host services NAT jobs may reach: comma "
                       "list of tcp/PORT, udp/PORT, tcp/FIRST-LAST, a CIDR of host addresses (every port), or "
                       "'CIDR tcp/PORT'.")
JOB_TO_JOB_ALLOW = _core("LARK_JOB_TO_JOB_ALLOW", "False", parse_job_to_job, "Whether NAT jobs reach each other: "
                         "False, True, or a CIDR list of job addresses other jobs may reach.")
FIREWALL_CHECK_INTERVAL = _core("LARK_FIREWALL_CHECK_INTERVAL", "5", _bounded_float(0.1, 3600),
                                "Seconds between the broker's checks that the host's Lark firewall table is "
                                "intact (an admin's 'nft flush ruleset'); missing rules are restored.")
METRICS_ADDRESS = _core("LARK_METRICS_ADDRESS", "", parse_listen_address, "HOST:PORT where lark-netd serves "
                        "Prometheus metrics (e.g. 127.0.0.1:9810); empty: no endpoint.")
METRICS_TEXTFILE = _core("LARK_METRICS_TEXTFILE", "", _optional(parse_absolute_path), "File lark-netd rewrites "
                         "with its Prometheus metrics every LARK_ACCOUNTING_INTERVAL, for node_exporter's "
                         "textfile collector; empty: none.")
ACCOUNTING_JOURNAL = _core("LARK_ACCOUNTING_JOURNAL", "$(LARK_STATE_DIR)/accounting.jsonl", parse_absolute_path,
                           "Durable journal (JSON lines) of every job's final counters, kept even when the job "
                           "ad could not be updated (read by lark report).")
# Site-segment jobs addressed by the network (LARK_<MODE>_ADDRESSING = dhcp, slaac, dhcp+slaac)
ADDRESSING_TIMEOUT = _core("LARK_ADDRESSING_TIMEOUT", "10", _bounded_float(0.5, 600),
                           "Seconds a bridge/macvlan job's start waits for its DHCP lease and SLAAC address "
                           "(LARK_<MODE>_ADDRESSING) before LARK_ADDRESSING_FALLBACK applies.")
ADDRESSING_FALLBACK = _core("LARK_ADDRESSING_FALLBACK", "hold", parse_fallback,
                            "When the network gives a job no address in time: hold (the job's start fails "
                            "with the reason and HTCondor holds it) or static (the family's pool address, "
                            "reserved for the job's life).")
DYNAMIC_ADDRESSING_KNOBS: tuple[Knob[object], ...] = (ADDRESSING_TIMEOUT, ADDRESSING_FALLBACK)

# Per-user shares of the uplink (lark.shares); LARK_SHARES_UPLINK empty: off.
SHARES_UPLINK = _core("LARK_SHARES_UPLINK", "", parse_text, "Interface whose upload bandwidth users share "
                      "(HTB tree: one class per user, one leaf per job); empty: no shares.")
SHARES_UPLINK_MBIT = _core("LARK_SHARES_UPLINK_MBIT", "0", _bounded_int(0, 10_000_000),
                           "Upload capacity shared among users, Mbit/s (required with LARK_SHARES_UPLINK).")
SHARES_DOWNLINK_MBIT = _core("LARK_SHARES_DOWNLINK_MBIT", "0", _bounded_int(0, 10_000_000),
                             "Download capacity shared among users of veth jobs (nat, bridge), Mbit/s; "
                             "0: downloads are not shared.")
SHARES_WEIGHTS = _core("LARK_SHARES_WEIGHTS", "", parse_weights, "Weights of users (login or uid) and "
                       "accounting groups (group:NAME), e.g. 'alice=2, group:physics=3'; others weigh 1.")
SHARES_USER_CEILING_MBIT = _core("LARK_SHARES_USER_CEILING_MBIT", "0", _bounded_int(0, 10_000_000),
                                 "Most one user may take even when the link is idle, Mbit/s (0: the link).")
SHARE_KNOBS: tuple[Knob[object], ...] = (
    SHARES_UPLINK, SHARES_UPLINK_MBIT, SHARES_DOWNLINK_MBIT, SHARES_WEIGHTS, SHARES_USER_CEILING_MBIT)

CORE_KNOBS: tuple[Knob[object], ...] = (
    NAME_PREFIX, STATE_DIR, SOCKET, FIREWALL, NETWORK_TYPES_KNOB, DEFAULT_NETWORK_TYPE, NAT_IPV4_POOL,
    NAT_IPV4_SUBNET_LENGTH, NAT_IPV6_POOL, NAT_IPV6_SUBNET_LENGTH, NAT_IPV6_MASQUERADE, ENABLE_FORWARDING,
    TRAFFIC_CLASSES, TRAFFIC_CLASS, MAX_BANDWIDTH_MBIT, DEFAULT_BANDWIDTH_MBIT, ANTI_SPOOF,
    INBOUND_PORT_RANGE, MAX_INBOUND_PORTS, PUBLIC_ADDRESS, DENY, SWEEP_INTERVAL, ACCOUNTING_INTERVAL, LOG,
    PROFILE_DIR, EXECUTE_DIR, STARTER, REQUEST_TIMEOUT, BROKER_BACKLOG, BROKER_WORKERS, BROKER_MAX_CONNECTIONS,
    ISOLATE_JOBS, JOB_HOST_ALLOW, JOB_TO_JOB_ALLOW, FIREWALL_CHECK_INTERVAL, METRICS_ADDRESS, METRICS_TEXTFILE,
    ACCOUNTING_JOURNAL, *DYNAMIC_ADDRESSING_KNOBS,
) + SHARE_KNOBS
# Set in the shipped drop-ins for HTCondor's own use; Lark's programs do not read them.
MACRO_KNOBS: tuple[Knob[object], ...] = (
    Knob("LARK_BIN", "", parse_text, "Directory of Lark's executables (the drop-ins build paths from it).", MACROS),
    Knob("LARK_NETD", "", parse_text, "The broker's executable, for DAEMON_LIST (50-lark-execute.conf).", MACROS),
    # condor_master's own settings of the daemons Lark adds to DAEMON_LIST (LARK_NETD_ARGS,
    # LARK_SPIDER_ENVIRONMENT, ...): HTCondor reads them, Lark must not call them unknown.
    Knob("LARK_<DAEMON>_<SETTING>", "", parse_text, "HTCondor's per-daemon settings of lark-netd and "
         "lark-spider (ARGS, ENVIRONMENT, DEBUG, USERID, ...), read by condor_master.", MACROS,
         pattern=r"LARK_(NETD|SPIDER)_(ARGS|ENVIRONMENT|DEBUG|USERID|ADDRESS_FILE|DAEMON_AD_FILE|LOCK"
                 r"|LOG_KEEP_OPEN|NOT_RESPONDING_TIMEOUT|MAX_FILE_DESCRIPTORS|SETTABLE_ATTRS_[A-Z_]+)"),
    Knob("LARK_HOOK_PREPARE_JOB", "", parse_text, "The prepare-job hook's executable (50-lark-execute.conf).",
         MACROS),
    Knob("LARK_PRE_JOB_RANK", "", parse_text, "Rank expression preferring good links, for "
         "NEGOTIATOR_PRE_JOB_RANK (70-lark-matchmaking.conf).", MACROS),
)


def engine_knobs() -> tuple[Knob[object], ...]:
    """The knobs LarkConfig is built from: the core ones and every registered mode's own."""
    return CORE_KNOBS + tuple(k for m in attach.modes() for k in m.knobs)


def node_knobs() -> tuple[Knob[object], ...]:
    """The knobs of an execute node's programs and drop-ins: all but the report's."""
    return engine_knobs() + MACRO_KNOBS + LINK_PIPELINE_KNOBS


def all_knobs() -> tuple[Knob[object], ...]:
    """Every LARK_* knob any Lark component reads, each once."""
    # Imported here, not above: the report's package costs ~7 ms to import, and the prepare hook
    # reads the configuration at every job start; its knobs are needed only for a name no other
    # component declares (see check_known).
    from lark.report.settings import KNOBS as REPORT_KNOBS

    return node_knobs() + REPORT_KNOBS


def known_knob(name: str, knobs: Iterable[Knob[object]] | None = None) -> Knob[object] | None:
    return next((k for k in (all_knobs() if knobs is None else knobs) if k.matches(name)), None)


def _unknown_knob(name: str, knobs: Iterable[Knob[object]]) -> str:
    """The message for a LARK_ name Lark does not know: a likely typo first, then every knob."""
    names = sorted(k.name for k in knobs)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown Lark knob ({hint}known: {', '.join(names)})"


def check_known(settings: Mapping[str, Setting], knobs: Iterable[Knob[object]] | None = None) -> None:
    """Raise ConfigError (file, line, closest knob) for the first LARK_ name no component declares."""
    known = list(node_knobs() if knobs is None else knobs)
    for name, setting in settings.items():
        if not name.startswith("LARK_") or known_knob(name, known) is not None:
            continue
        if knobs is None:  # not a node knob: the report's, or unknown
            known = list(all_knobs())
            if known_knob(name, known) is not None:
                continue
        source = None if setting.source == "override" else setting.source
        raise ConfigError(name, _unknown_knob(name, known), source, setting.line)


# --------------------------------------------------------------------------------------------


def load_config(sources: Iterable[Path] | None = None, overrides: Mapping[str, str] | None = None,
                external: Lookup | None = None) -> LarkConfig:
    """Read the knobs from ``sources`` (files or config.d directories) on top of the defaults.

    With ``sources=None`` the ``LARK_CONFIG`` environment variable (a ``:``-separated list) is used,
    else HTCondor's own configuration when the bindings import, else ``/etc/condor/config.d`` when it
    exists, else only the built-in defaults. ``overrides`` wins over everything (tests, ``-D``).
    """
    reader = ConfigReader(sources, overrides, external)
    check_known(reader.settings)
    return build_config(reader.with_defaults(engine_knobs()), external)


def effective_knob_values(sources: Iterable[Path] | None = None, overrides: Mapping[str, str] | None = None,
                          external: Lookup | None = condor_param) -> list[EffectiveKnob]:
    """For ``lark config``: every knob's expanded value and where it came from ("file:line",
    "HTCondor", "override" or "default"), read exactly as :func:`load_config` reads them."""
    return effective_knobs(all_knobs(), ConfigReader(sources, overrides, external))


def build_config(settings: Mapping[str, Setting], external: Lookup | None = None) -> LarkConfig:
    """Validate every knob; the first bad one raises :class:`ConfigError` naming file, line and knob."""

    def get(knob: Knob[T]) -> T:
        return parse_setting(knob, settings, external)

    def fail(name: str, message: str) -> ConfigError:
        s = settings.get(name, Setting(""))
        return ConfigError(name, message, s.source, s.line)

    prefix = get(NAME_PREFIX)
    firewall = get(FIREWALL)
    types = get(NETWORK_TYPES_KNOB)
    default_type = get(DEFAULT_NETWORK_TYPE)
    if default_type not in types:
        raise fail("LARK_DEFAULT_NETWORK_TYPE", f"{default_type!r} is not in LARK_NETWORK_TYPES ({', '.join(types)})")

    v4pool, v4len = get(NAT_IPV4_POOL), get(NAT_IPV4_SUBNET_LENGTH)
    if v4len < v4pool.prefixlen:
        raise fail("LARK_NAT_IPV4_SUBNET_LENGTH", f"/{v4len} is larger than the pool {v4pool}")
    if v4len > 30:
        raise fail("LARK_NAT_IPV4_SUBNET_LENGTH", "must be at most 30 (a job subnet needs a host and a job address)")
    v6pool, v6len = get(NAT_IPV6_POOL), get(NAT_IPV6_SUBNET_LENGTH)
    if v6pool is not None and v6len < v6pool.prefixlen:
        raise fail("LARK_NAT_IPV6_SUBNET_LENGTH", f"/{v6len} is larger than the pool {v6pool}")

    sites: dict[str, SiteAttachment] = {}
    for mode in attach.modes():
        if mode.site is None:
            continue
        pools = mode.site
        parent = get(pools.parent)
        v4, v6 = get(pools.ipv4_pool), get(pools.ipv6_pool)
        gw4, gw6 = get(pools.ipv4_gateway), get(pools.ipv6_gateway)
        addressing = get(pools.addressing) if pools.addressing is not None else "static"
        if mode.name in types:
            if not parent:
                raise fail(pools.parent.name, f"network type {mode.name!r} is offered (LARK_NETWORK_TYPES) but no "
                           f"{pools.parent_what} is configured")
            if v4 is None and v6 is None and addressing == "static":
                raise fail(pools.ipv4_pool.name, f"network type {mode.name!r} is offered but has no address pool "
                           "(or set its addressing to dhcp, slaac or dhcp+slaac)")
        assert gw4 is None or isinstance(gw4, ipaddress.IPv4Address)  # the gateway parsers check the family
        assert gw6 is None or isinstance(gw6, ipaddress.IPv6Address)
        sites[mode.name] = SiteAttachment(parent, v4, gw4, v6, gw6, addressing)

    classes: list[TrafficClass] = []
    for name in get(TRAFFIC_CLASSES):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,30}", name):
            raise fail("LARK_TRAFFIC_CLASSES", f"class name {name!r} must be a letter followed by letters, "
                       "digits or _ (it becomes part of an attribute name)")
        knob = f"LARK_TRAFFIC_CLASS_{name.upper()}"
        if knob not in settings:
            raise fail("LARK_TRAFFIC_CLASSES", f"class {name!r} is listed but {knob} is not set")
        nets = parse_setting(TRAFFIC_CLASS, settings, external, knob)
        if not nets:
            raise fail(knob, "is empty; give at least one CIDR prefix")
        classes.append(TrafficClass(name.lower(), nets))

    shares = _share_settings(get, fail)

    return LarkConfig(
        name_prefix=prefix,
        state_dir=Path(get(STATE_DIR)),
        socket_path=Path(get(SOCKET)),
        firewall=firewall,
        network_types=types,
        default_network_type=default_type,
        nat_ipv4_pool=v4pool,
        nat_ipv4_subnet_length=v4len,
        nat_ipv6_pool=v6pool,
        nat_ipv6_subnet_length=v6len,
        nat_ipv6_masquerade=get(NAT_IPV6_MASQUERADE),
        enable_forwarding=get(ENABLE_FORWARDING),
        site_attachments=sites,
        traffic_classes=tuple(classes),
        max_bandwidth_mbit=get(MAX_BANDWIDTH_MBIT),
        default_bandwidth_mbit=get(DEFAULT_BANDWIDTH_MBIT),
        anti_spoof=get(ANTI_SPOOF),
        inbound_port_range=get(INBOUND_PORT_RANGE),
        max_inbound_ports=get(MAX_INBOUND_PORTS),
        public_address=get(PUBLIC_ADDRESS),
        deny=get(DENY),
        sweep_interval=float(get(SWEEP_INTERVAL)),
        accounting_interval=float(get(ACCOUNTING_INTERVAL)),
        log_path=Path(get(LOG)),
        execute_dir=Path(get(EXECUTE_DIR)),
        starter_path=get(STARTER),
        request_timeout=get(REQUEST_TIMEOUT),
        broker_backlog=get(BROKER_BACKLOG),
        broker_workers=get(BROKER_WORKERS),
        broker_max_connections=get(BROKER_MAX_CONNECTIONS),
        journal_path=get(ACCOUNTING_JOURNAL),
        metrics_address=get(METRICS_ADDRESS),
        metrics_textfile=get(METRICS_TEXTFILE),
        isolate_jobs=get(ISOLATE_JOBS),
        job_host_allow=get(JOB_HOST_ALLOW),
        job_to_job_allow=get(JOB_TO_JOB_ALLOW),
        firewall_check_interval=get(FIREWALL_CHECK_INTERVAL),
        addressing_timeout=get(ADDRESSING_TIMEOUT),
        addressing_fallback=get(ADDRESSING_FALLBACK),
        shares=shares,
        settings=dict(settings),
    )


def _share_settings(get: Callable[[Knob[T]], T], fail: Callable[[str, str], ConfigError]) -> ShareSettings:
    uplink = get(SHARES_UPLINK).strip()
    up_mbit, down_mbit = get(SHARES_UPLINK_MBIT), get(SHARES_DOWNLINK_MBIT)
    if uplink and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,15}", uplink):
        raise fail("LARK_SHARES_UPLINK", f"{uplink!r} is not an interface name")
    if uplink and not up_mbit:
        raise fail("LARK_SHARES_UPLINK_MBIT", "is 0 but LARK_SHARES_UPLINK is set; give the uplink's capacity")
    if not uplink and (up_mbit or down_mbit):
        name = "LARK_SHARES_UPLINK_MBIT" if up_mbit else "LARK_SHARES_DOWNLINK_MBIT"
        raise fail(name, "is set but LARK_SHARES_UPLINK is empty (shares are off)")
    return ShareSettings(uplink, up_mbit, down_mbit, get(SHARES_WEIGHTS), get(SHARES_USER_CEILING_MBIT))
