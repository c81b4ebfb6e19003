"""The spider's configuration: one YAML file, validated once at load, plus a few LARK_SPIDER_* knobs.

Every error names the file, the line, the dotted key and what would have been accepted, e.g.
``/etc/lark/spider.yaml:12: quality.max_loss: expected a number between 0 and 1, got 'two'``.
Unknown keys are errors too (a typo must not silently fall back to a default).

HTCondor knobs (``condor_config.d``) that the spider reads, from the environment first and then, when
the HTCondor bindings are importable, from the HTCondor configuration:

``LARK_SPIDER_CONFIG``      path of the YAML file (default ``/etc/lark/spider.yaml``)
``LARK_SPIDER_INTERVAL``    seconds between crawls; overrides ``spider.interval``
``LARK_SPIDER_LOG``         log file; overrides ``spider.log``
``LARK_SPIDER_STATE_FILE``  state file; overrides ``spider.state_file`` (not used without a YAML file)
``LARK_SPIDER_COLLECTOR``   collector ``host[:port]``; overrides ``collector.address``
``LARK_SPIDER_TOKEN_DIR``   IDTOKENS directory; overrides ``collector.token_dir``
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from lark.knobs import ConfigReader
from lark.links.knobs import KNOBS as LINK_PIPELINE_KNOBS
from lark.links.knobs import SPIDER_CONFIG, SPIDER_OVERRIDES, parse_spider_value
from lark.values import parse_listen_address as listen_address
from lark.yamlfile import YamlLimits, line_of, load, read_text
from perfsonar.discovery import ArchiveRef, LookupSettings, MeshSource
from perfsonar.errors import ConfigError
from perfsonar.esmond import ReadSettings
from perfsonar.http import HttpSettings
from perfsonar.model import ARCHIVE_APIS, LATENCY, RTT, TEST_KINDS, THROUGHPUT
from perfsonar.normalise import canonical_ip, parse_iso_duration
from perfsonar.pool import PoolSettings
from perfsonar.quality import DEFAULT_INTERVALS, QualityPolicy
from perfsonar.registries import OSG_SITE_KEYS, REGISTRY_TYPES
from perfsonar.sites import DomainRule, SiteRule

DEFAULT_CONFIG_PATH = Path("/etc/lark/spider.yaml")
DEFAULT_WINDOWS = {THROUGHPUT: 86400.0, LATENCY: 1800.0, RTT: 3600.0}
DEFAULT_LOOKBACK = 7 * 86400.0
DEFAULT_STALE_REFRESH = 3600.0
MESH_FORMATS = ("auto", "psconfig", "meshconfig")
# Bounds on the YAML file (lark.yamlfile): a real one is a few KiB nested 6 levels deep; these leave
# room for thousands of sites.hosts entries and refuse what would stall the spider's start.
LIMITS = YamlLimits(what="the spider's configuration", max_bytes=4 << 20, max_nesting=20, max_values=500_000,
                    usual_nesting=6, usual_values="a few hundred")

# The LARK_SPIDER_* knobs are declared with the link pipeline's (lark.links.knobs), so that Lark's
# one knob registry lists them; each overrides one key of the YAML file.
KNOBS: dict[str, str] = {k.name: k.doc for k in (SPIDER_CONFIG, *SPIDER_OVERRIDES)}
_KNOB_PATHS = {k.name: path for k, path in SPIDER_OVERRIDES.items()}


@dataclass(frozen=True)
class RegistrySource:
    kind: str
    path: Path | None
    site_key: str = "resource_group"
    url: str | None = None

    @property
    def where(self) -> str:
        return self.url or str(self.path)


@dataclass(frozen=True)
class CollectorSettings:
    address: str | None = None
    token_dir: str | None = None
    ad_lifetime: int | None = None  # None: three crawl intervals
    publish_unknown: bool = False
    publish_stale: bool = True
    status_ad: bool = True


@dataclass(frozen=True)
class SpiderConfig:
    source: str
    interval: float = 600.0
    state_file: Path | None = None
    log_file: str | None = None
    concurrency: int = 16
    keep_state_for: float = 7 * 86400.0
    name: str = "lark-spider"
    metrics_address: tuple[str, int] | None = None  # spider.metrics_address: Prometheus endpoint
    metrics_textfile: Path | None = None  # spider.metrics_textfile: for node_exporter
    http: HttpSettings = field(default_factory=HttpSettings)
    publishers: tuple[str, ...] = ()
    meshes: tuple[MeshSource, ...] = ()
    derive_opensearch: bool = False
    restrict_to_mesh: bool = False
    lookup: LookupSettings = field(default_factory=LookupSettings)
    archives: tuple[ArchiveRef, ...] = ()
    archive_preference: tuple[str, ...] = ("opensearch", "esmond")
    read: ReadSettings = field(default_factory=lambda: ReadSettings(windows=dict(DEFAULT_WINDOWS),
                                                                    lookback=DEFAULT_LOOKBACK,
                                                                    stale_refresh=DEFAULT_STALE_REFRESH))
    quality: QualityPolicy = field(default_factory=QualityPolicy)
    site_rules: tuple[SiteRule, ...] = ()
    registries: tuple[RegistrySource, ...] = ()
    static_hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    site_domains: tuple[DomainRule, ...] = ()
    pool: PoolSettings = field(default_factory=PoolSettings)
    resolve_dns: bool = True
    sites_refresh: float = 86400.0
    collector: CollectorSettings = field(default_factory=CollectorSettings)

    @property
    def ad_lifetime(self) -> int:
        return self.collector.ad_lifetime or int(max(3 * self.interval, 300))


# --------------------------------------------------------------------------------------------
# Locating errors in the file


class _Checker:
    """Typed accessors over the decoded YAML that raise ConfigError with file, line and key."""

    def __init__(self, source: str, root: yaml.Node | None) -> None:
        self.source = source
        self.root = root

    def fail(self, path: Sequence[str | int], message: str) -> ConfigError:
        knob = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        return ConfigError(knob or "(top level)", message, self.source, line_of(self.root, path))

    def section(self, data: Mapping[str, Any], path: tuple[str | int, ...], allowed: Sequence[str]) -> dict[str, Any]:
        value = data.get(path[-1]) if path else data
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping with keys {', '.join(allowed)}, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail((*path, str(key)), f"unknown key (accepted: {', '.join(allowed)})")
        return dict(value)

    def number(self, data: Mapping[str, Any], path: tuple[str | int, ...], default: float,
               minimum: float | None = None, maximum: float | None = None) -> float:
        value = data.get(path[-1], default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number{_range(minimum, maximum)}, got {value!r}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.fail(path, f"expected a number{_range(minimum, maximum)}, got {value!r}")
        return float(value)

    def integer(self, data: Mapping[str, Any], path: tuple[str | int, ...], default: int, minimum: int = 0,
                maximum: int | None = None) -> int:
        value = data.get(path[-1], default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected a whole number{_range(minimum, maximum)}, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            raise self.fail(path, f"expected a whole number{_range(minimum, maximum)}, got {value!r}")
        return value

    def duration(self, data: Mapping[str, Any], path: tuple[str | int, ...], default: float | None,
                 minimum: float = 0.0) -> float | None:
        value = data.get(path[-1], default)
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds is None or seconds < minimum:
            raise self.fail(path, f"expected a duration >= {minimum:g} s (seconds, '10m', '4h', '1d' or ISO-8601 "
                                  f"like 'PT4H'), got {value!r}")
        return seconds

    def boolean(self, data: Mapping[str, Any], path: tuple[str | int, ...], default: bool) -> bool:
        value = data.get(path[-1], default)
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {value!r}")
        return value

    def string(self, data: Mapping[str, Any], path: tuple[str | int, ...], default: str | None,
               choices: Sequence[str] | None = None) -> str | None:
        value = data.get(path[-1], default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return value.strip()

    def url(self, value: Any, path: tuple[str | int, ...]) -> str:
        if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value.strip()):
            raise self.fail(path, f"expected an http:// or https:// URL, got {value!r}")
        return value.strip()

    def str_list(self, data: Mapping[str, Any], path: tuple[str | int, ...]) -> list[str]:
        value = data.get(path[-1], [])
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(path, f"expected a list of strings, got {value!r}")
        return [v.strip() for v in value]


def _range(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" between {minimum:g} and {maximum:g}"
    if minimum is not None:
        return f" >= {minimum:g}"
    return ""


def parse_duration(value: Any) -> float | None:
    """Seconds from ``600``, ``"600"``, ``"10m"``, ``"4h"``, ``"1d"`` or ``"PT4H"``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text, flags=re.IGNORECASE)
    if m:
        return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()]
    return parse_iso_duration(text)


# --------------------------------------------------------------------------------------------


TOP_KEYS = ("spider", "http", "discovery", "archives", "measurements", "quality", "sites", "collector")


def parse_config(data: Any, source: str = "<config>", root: yaml.Node | None = None) -> SpiderConfig:
    """Validate a decoded YAML document and build the :class:`SpiderConfig`."""
    c = _Checker(source, root)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise c.fail((), "the file must be a YAML mapping with sections " + ", ".join(TOP_KEYS))
    for key in data:
        if key not in TOP_KEYS:
            raise c.fail((str(key),), f"unknown section (accepted: {', '.join(TOP_KEYS)})")

    sp = c.section(data, ("spider",), ("interval", "state_file", "log", "concurrency", "keep_state_for", "name",
                                       "metrics_address", "metrics_textfile"))
    interval = c.duration(sp, ("spider", "interval"), 600.0, minimum=10.0)
    state_file = c.string(sp, ("spider", "state_file"), "/var/lib/lark/spider-state.json")
    log_file = c.string(sp, ("spider", "log"), None)
    concurrency = c.integer(sp, ("spider", "concurrency"), 16, 1, 512)
    keep = c.duration(sp, ("spider", "keep_state_for"), 7 * 86400.0, minimum=0.0)
    name = c.string(sp, ("spider", "name"), "lark-spider")
    metrics_text = c.string(sp, ("spider", "metrics_address"), None)
    try:
        metrics_address = listen_address(metrics_text or "")
    except ValueError as err:
        raise c.fail(("spider", "metrics_address"), str(err)) from None
    metrics_textfile = c.string(sp, ("spider", "metrics_textfile"), None)

    h = c.section(data, ("http",), ("timeout", "connect_timeout", "retries", "backoff", "max_response_bytes",
                                    "per_host_connections", "verify_tls", "ca_bundle"))
    http = HttpSettings(
        timeout=c.number(h, ("http", "timeout"), 10.0, 0.05, 600.0),
        connect_timeout=c.number(h, ("http", "connect_timeout"), 5.0, 0.05, 600.0),
        retries=c.integer(h, ("http", "retries"), 2, 0, 10),
        backoff=c.number(h, ("http", "backoff"), 0.5, 0.0, 60.0),
        max_bytes=c.integer(h, ("http", "max_response_bytes"), 64 * 1024 * 1024, 1024),
        per_host_connections=c.integer(h, ("http", "per_host_connections"), 4, 1, 64),
        verify_tls=c.boolean(h, ("http", "verify_tls"), True),
        ca_bundle=c.string(h, ("http", "ca_bundle"), None),
    )

    d = c.section(data, ("discovery",), ("publishers", "meshes", "derive_opensearch", "restrict_to_mesh",
                                         "lookup_service"))
    publishers = tuple(c.url(u, ("discovery", "publishers", i))
                       for i, u in enumerate(c.str_list(d, ("discovery", "publishers"))))
    meshes: list[MeshSource] = []
    raw_meshes = d.get("meshes") or []
    if not isinstance(raw_meshes, list):
        raise c.fail(("discovery", "meshes"), "expected a list of URLs or {url, format} mappings")
    for i, m in enumerate(raw_meshes):
        p: tuple[str | int, ...] = ("discovery", "meshes", i)
        if isinstance(m, str):
            meshes.append(MeshSource(c.url(m, p)))
        elif isinstance(m, Mapping):
            mm = c.section({i: m}, (i,), ("url", "format"))  # type: ignore[dict-item]
            meshes.append(MeshSource(c.url(mm.get("url"), (*p, "url")),
                                     c.string(mm, (*p, "format"), "auto", MESH_FORMATS) or "auto"))
        else:
            raise c.fail(p, f"expected a URL or a mapping with url and format, got {m!r}")
    ls = c.section(d, ("discovery", "lookup_service"), ("enabled", "bootstrap", "timeout", "communities",
                                                         "allow_private_addresses"))
    lookup = LookupSettings(
        enabled=c.boolean(ls, ("discovery", "lookup_service", "enabled"), False),
        bootstrap=c.url(ls.get("bootstrap", LookupSettings.bootstrap), ("discovery", "lookup_service", "bootstrap")),
        timeout=c.number(ls, ("discovery", "lookup_service", "timeout"), 5.0, 0.05, 120.0),
        communities=tuple(c.str_list(ls, ("discovery", "lookup_service", "communities"))),
        allow_private=c.boolean(ls, ("discovery", "lookup_service", "allow_private_addresses"), False),
    )

    a = c.section(data, ("archives",), ("endpoints", "prefer", "page_size", "max_metadata_pages", "max_data_pages",
                                        "max_docs_per_pair"))
    prefer = c.str_list(a, ("archives", "prefer")) or ["opensearch", "esmond"]
    for i, api in enumerate(prefer):
        if api not in ARCHIVE_APIS:
            raise c.fail(("archives", "prefer", i), f"expected one of {', '.join(ARCHIVE_APIS)}, got {api!r}")
    endpoints: list[ArchiveRef] = []
    raw_eps = a.get("endpoints") or []
    if not isinstance(raw_eps, list):
        raise c.fail(("archives", "endpoints"), "expected a list of {url, type} mappings")
    for i, ep in enumerate(raw_eps):
        p = ("archives", "endpoints", i)
        if not isinstance(ep, Mapping):
            raise c.fail(p, f"expected a mapping with url and type, got {ep!r}")
        e = c.section({i: ep}, (i,), ("url", "type", "verify_tls", "ca_bundle"))  # type: ignore[dict-item]
        url = c.url(e.get("url"), (*p, "url"))
        api = c.string(e, (*p, "type"), None, ARCHIVE_APIS)
        if api is None:
            raise c.fail((*p, "type"), f"missing; expected one of {', '.join(ARCHIVE_APIS)}")
        verify = c.boolean(e, (*p, "verify_tls"), http.verify_tls) if "verify_tls" in e else None
        if api == "esmond" and not url.endswith("/"):
            url += "/"
        endpoints.append(ArchiveRef(url, api, "config", verify, c.string(e, (*p, "ca_bundle"), None)))

    ms = c.section(data, ("measurements",), ("tests", "windows", "lookback", "stale_refresh"))
    tests = c.str_list(ms, ("measurements", "tests")) or list(TEST_KINDS)
    for i, t in enumerate(tests):
        if t not in TEST_KINDS:
            raise c.fail(("measurements", "tests", i), f"expected one of {', '.join(TEST_KINDS)}, got {t!r}")
    w = c.section(ms, ("measurements", "windows"), TEST_KINDS)
    windows = {t: c.duration(w, ("measurements", "windows", t), DEFAULT_WINDOWS[t], minimum=60.0) or 0.0
               for t in TEST_KINDS}
    read = ReadSettings(
        windows=windows, tests=tuple(dict.fromkeys(tests)),
        page_size=c.integer(a, ("archives", "page_size"), 1000, 10, 10000),
        max_metadata_pages=c.integer(a, ("archives", "max_metadata_pages"), 200, 1),
        max_data_pages=c.integer(a, ("archives", "max_data_pages"), 20, 1),
        max_docs_per_pair=c.integer(a, ("archives", "max_docs_per_pair"), 100, 1, 10000),
        lookback=c.duration(ms, ("measurements", "lookback"), DEFAULT_LOOKBACK) or 0.0,
        stale_refresh=c.duration(ms, ("measurements", "stale_refresh"), DEFAULT_STALE_REFRESH) or 0.0,
    )
    if read.lookback and read.lookback < max(windows.values()):
        raise c.fail(("measurements", "lookback"), f"expected 0 (off) or at least the longest window "
                                                   f"({max(windows.values()):g} s), got {ms.get('lookback')!r}")

    q = c.section(data, ("quality",), ("stale_after_intervals", "min_stale_seconds", "min_samples",
                                       "min_success_ratio", "max_loss", "max_rtt_loss", "min_throughput_mbps",
                                       "max_relative_spread", "max_retransmits", "default_intervals"))
    di = c.section(q, ("quality", "default_intervals"), TEST_KINDS)
    spread = q.get("max_relative_spread")
    retrans = q.get("max_retransmits")
    policy = QualityPolicy(
        stale_after_intervals=c.number(q, ("quality", "stale_after_intervals"), 3.0, 1.0, 1000.0),
        min_stale_seconds=c.duration(q, ("quality", "min_stale_seconds"), 900.0) or 0.0,
        min_samples=c.integer(q, ("quality", "min_samples"), 1, 1, 100000),
        min_success_ratio=c.number(q, ("quality", "min_success_ratio"), 0.5, 0.0, 1.0),
        max_loss=c.number(q, ("quality", "max_loss"), 0.02, 0.0, 1.0),
        max_rtt_loss=c.number(q, ("quality", "max_rtt_loss"), 0.02, 0.0, 1.0),
        min_throughput_mbps=c.number(q, ("quality", "min_throughput_mbps"), 0.0, 0.0, 4e6),
        max_relative_spread=None if spread is None else c.number(q, ("quality", "max_relative_spread"), 0, 0.0),
        max_retransmits=None if retrans is None else c.number(q, ("quality", "max_retransmits"), 0, 0.0, 1.0),
        default_intervals={t: c.duration(di, ("quality", "default_intervals", t), DEFAULT_INTERVALS[t], 1.0) or 1.0
                           for t in TEST_KINDS},
    )

    s = c.section(data, ("sites",), ("rules", "registries", "hosts", "domains", "pool", "resolve_dns",
                                     "refresh_interval"))
    rules: list[SiteRule] = []
    raw_rules = s.get("rules") or []
    if not isinstance(raw_rules, list):
        raise c.fail(("sites", "rules"), "expected a list of {site, cidrs, hosts} mappings")
    for i, r in enumerate(raw_rules):
        p = ("sites", "rules", i)
        if not isinstance(r, Mapping):
            raise c.fail(p, f"expected a mapping with site, cidrs and/or hosts, got {r!r}")
        rr = c.section({i: r}, (i,), ("site", "cidrs", "hosts"))  # type: ignore[dict-item]
        site = c.string(rr, (*p, "site"), None)
        if site is None:
            raise c.fail((*p, "site"), "missing; every rule names the site it assigns")
        nets = []
        for j, text in enumerate(c.str_list(rr, (*p, "cidrs"))):
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise c.fail((*p, "cidrs", j), f"not a CIDR prefix: {text!r} (e.g. 192.0.2.0/24, 2001:db8::/48)") \
                    from None
        patterns = c.str_list(rr, (*p, "hosts"))
        for j, pat in enumerate(patterns):
            if pat.startswith("re:"):
                try:
                    re.compile(pat[3:])
                except re.error as err:
                    raise c.fail((*p, "hosts", j), f"bad regular expression: {err}") from None
        if not nets and not patterns:
            raise c.fail(p, "a rule needs cidrs, hosts, or both")
        rules.append(SiteRule(site, tuple(nets), tuple(patterns), f"sites.rules[{i}]"))
    registries: list[RegistrySource] = []
    raw_regs = s.get("registries") or []
    if not isinstance(raw_regs, list):
        raise c.fail(("sites", "registries"), "expected a list of {type, path} mappings")
    base_dir = Path(source).parent if source and not source.startswith("<") else Path.cwd()
    for i, r in enumerate(raw_regs):
        p = ("sites", "registries", i)
        if not isinstance(r, Mapping):
            raise c.fail(p, f"expected a mapping with type and path, got {r!r}")
        rr = c.section({i: r}, (i,), ("type", "path", "url", "site_name"))  # type: ignore[dict-item]
        kind = c.string(rr, (*p, "type"), None, REGISTRY_TYPES)
        path = c.string(rr, (*p, "path"), None)
        url = c.url(rr["url"], (*p, "url")) if rr.get("url") is not None else None
        if kind is None or (path is None) == (url is None):
            raise c.fail(p, f"needs type ({', '.join(REGISTRY_TYPES)}) and either path or url")
        site_key = c.string(rr, (*p, "site_name"), "resource_group", OSG_SITE_KEYS) or "resource_group"
        full = None
        if path is not None:
            full = Path(path) if Path(path).is_absolute() else base_dir / path
            if not full.exists():
                raise c.fail((*p, "path"), f"no such file or directory: {full}")
        registries.append(RegistrySource(kind, full, site_key, url))
    hosts_raw = s.get("hosts") or {}
    if not isinstance(hosts_raw, Mapping):
        raise c.fail(("sites", "hosts"), "expected a mapping of host name -> list of addresses")
    static_hosts: dict[str, tuple[str, ...]] = {}
    for host_name, addrs in hosts_raw.items():
        p = ("sites", "hosts", str(host_name))
        addrs_list = c.str_list({str(host_name): addrs}, (str(host_name),)) if addrs is not None else []
        for j, addr in enumerate(addrs_list):
            if canonical_ip(addr) is None:
                raise c.fail((*p, j), f"not an IP address: {addr!r}")
        static_hosts[str(host_name).lower().rstrip(".")] = tuple(addrs_list)

    domains_raw = s.get("domains") or {}
    if not isinstance(domains_raw, Mapping):
        raise c.fail(("sites", "domains"), "expected a mapping of DNS domain -> site, e.g. {unl.edu: UNL}")
    domains: list[DomainRule] = []
    for dom, site_name in domains_raw.items():
        p = ("sites", "domains", str(dom))
        text = str(dom).strip().lower().removeprefix("*.").strip(".")
        if not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+", text):
            raise c.fail(p, f"expected a DNS domain of at least two labels, e.g. unl.edu, got {dom!r}")
        if not isinstance(site_name, str) or not site_name.strip():
            raise c.fail(p, f"expected a site name, got {site_name!r}")
        domains.append(DomainRule(text, site_name.strip(), f"sites.domains.{text}"))
    pl = c.section(s, ("sites", "pool"), ("enabled", "collector", "constraint"))
    pool = PoolSettings(
        enabled=c.boolean(pl, ("sites", "pool", "enabled"), False),
        collector=c.string(pl, ("sites", "pool", "collector"), None),
        constraint=c.string(pl, ("sites", "pool", "constraint"), PoolSettings.constraint) or PoolSettings.constraint,
    )

    col = c.section(data, ("collector",), ("address", "token_dir", "ad_lifetime", "publish_unknown", "publish_stale",
                                           "status_ad"))
    lifetime = c.duration(col, ("collector", "ad_lifetime"), None, minimum=10.0)
    collector = CollectorSettings(
        address=c.string(col, ("collector", "address"), None),
        token_dir=c.string(col, ("collector", "token_dir"), None),
        ad_lifetime=None if lifetime is None else int(lifetime),
        publish_unknown=c.boolean(col, ("collector", "publish_unknown"), False),
        publish_stale=c.boolean(col, ("collector", "publish_stale"), True),
        status_ad=c.boolean(col, ("collector", "status_ad"), True),
    )

    if not publishers and not meshes and not endpoints:
        raise c.fail(("discovery",), "no source of measurements: give discovery.publishers, discovery.meshes or "
                                     "archives.endpoints (the Lookup Service alone is not enough: it is unreliable "
                                     "as a query service)")
    return SpiderConfig(
        source=source, interval=interval or 600.0, state_file=Path(state_file) if state_file else None,
        log_file=log_file, concurrency=concurrency, keep_state_for=keep or 0.0, name=name or "lark-spider",
        metrics_address=metrics_address, metrics_textfile=Path(metrics_textfile) if metrics_textfile else None,
        http=http, publishers=publishers, meshes=tuple(meshes),
        derive_opensearch=c.boolean(d, ("discovery", "derive_opensearch"), False),
        restrict_to_mesh=c.boolean(d, ("discovery", "restrict_to_mesh"), False),
        lookup=lookup, archives=tuple(endpoints), archive_preference=tuple(dict.fromkeys(prefer)), read=read,
        quality=policy, site_rules=tuple(rules), registries=tuple(registries), static_hosts=static_hosts,
        site_domains=tuple(domains), pool=pool,
        resolve_dns=c.boolean(s, ("sites", "resolve_dns"), True),
        sites_refresh=c.duration(s, ("sites", "refresh_interval"), 86400.0, minimum=60.0) or 86400.0,
        collector=collector,
    )


def knob_lookup_default(name: str) -> str | None:
    """A LARK_SPIDER_* knob from the environment, else through Lark's one reader (HTCondor's
    configuration when the bindings import, else the config files)."""
    value = os.environ.get(name)
    if value:
        return value
    try:
        found = _condor_knobs()(name)
    except Exception:  # noqa: BLE001 - a broken condor_config must not stop the spider from reading its YAML
        return None
    return found or None


@functools.cache
def _condor_knobs() -> Callable[[str], str | None]:
    return ConfigReader().lookup(LINK_PIPELINE_KNOBS)


def config_path(explicit: str | None, lookup: Callable[[str], str | None] = knob_lookup_default) -> Path:
    if explicit:
        return Path(explicit)
    from_knob = lookup("LARK_SPIDER_CONFIG")
    return Path(from_knob) if from_knob else DEFAULT_CONFIG_PATH


def load_spider_config(path: Path, knobs: Callable[[str], str | None] | None = knob_lookup_default,
                overrides: Callable[[dict[str, Any]], None] | None = None, missing_ok: bool = False) -> SpiderConfig:
    """Read, validate and return the config at ``path``, with LARK_SPIDER_* knob overrides applied.

    ``overrides`` edits the decoded document before validation (the command line's ``--psconfig``,
    ``--site`` and friends); with ``missing_ok`` a missing file counts as an empty one, so a crawl can
    be described on the command line alone. Such a crawl uses no state file (not even
    ``LARK_SPIDER_STATE_FILE``): it is a one-off that must neither read the daemon's last links nor
    write over them.
    """
    text = ""
    try:
        text = read_text(path, LIMITS)  # a file too large or not UTF-8 raises a ConfigError naming it
    except FileNotFoundError:
        if not missing_ok:
            raise ConfigError("LARK_SPIDER_CONFIG", f"cannot read {path}: no such file (give --config, or "
                                                    "--psconfig/--esmond/--opensearch URLs)") from None
    except OSError as err:
        raise ConfigError("LARK_SPIDER_CONFIG", f"cannot read {path}: {err.strerror or err}") from None
    document, data = load(text, str(path), LIMITS)  # syntax, nesting, alias bombs: "FILE:LINE: message"
    if data is None:
        data = {}
    if knobs is not None and isinstance(data, dict):
        for knob, (section, key) in _KNOB_PATHS.items():
            value = knobs(knob)
            if value:
                data.setdefault(section, {})
                if not isinstance(data[section], dict):
                    continue
                data[section][key] = parse_spider_value(value)
    if overrides is not None and isinstance(data, dict):
        overrides(data)
    config = parse_config(data, str(path) if text else "<command line>", document.root)
    if missing_ok and not text and not path.exists():
        config = replace(config, state_file=None)
    return config


