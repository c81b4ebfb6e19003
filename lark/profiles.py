"""Network profiles: admin-written YAML bundles a job selects with ``LarkNetworkProfile = "name"``.

A profile names everything a data-transfer job needs from the node in one place: the attachment
mode and its parent interface, the address pools, a block of inbound ports and the environment
variables movers read it from (``GLOBUS_TCP_PORT_RANGE``, ``HPSS_PORT_RANGE``), a bandwidth share,
allowed and denied destinations, a CPU affinity hint, extra environment, and who may use it.

Profiles live in ``LARK_PROFILE_DIR`` (``*.yaml``/``*.yml``, one or more profiles per file under a
top-level ``profiles:`` mapping). They are validated once, when loaded, and strictly: unlike Janus,
whose pydantic models silently ignore stale keys, an unknown key is an error. Every error names
the file, the line, the profile, the key and what is accepted. A profile with an error is not
offered (a job asking for it is told so); the other profiles of the node still are.

Everything here is pure (text in, frozen dataclasses out) except the thin readers of the profile
directory, of sysfs (:func:`resolve_cpus`, which takes the sysfs root so tests use a fake tree)
and of the user database (:func:`user_and_groups`).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lark.classads import classad_text
from lark.config import (
    ATTACH_MODES_WITH_POOLS,
    NETWORK_TYPES,
    AddressPool,
    IPNetwork,
    LarkConfig,
    SiteAttachment,
    _expand,
    parse_address,
    parse_pool,
)
from lark.errors import ConfigError, RequestError
from lark.policy import (
    ATTR_ALLOW,
    ATTR_DENY,
    ATTR_INBOUND,
    ATTR_TYPE,
    MAX_MBIT,
    MAX_PORTS,
    JobRequest,
    bandwidth_attrs,
    bandwidth_within,
    networks_attr,
    request_from_attributes,
    string_attr,
    whole_number_attr,
)

PROFILE_DIR_KNOB = "LARK_PROFILE_DIR"
DEFAULT_PROFILE_DIR = Path("/etc/condor/profiles.d")
ATTR_PROFILE = "LarkNetworkProfile"  # job attribute
ADVERTISED_ATTR = "LarkProfiles"  # slot attribute
PROFILE_SUFFIXES = (".yaml", ".yml")
SITE_MODES = ATTACH_MODES_WITH_POOLS  # modes that put jobs on an existing L2 segment
RESERVED_ENV_PREFIXES = ("LARK_", "_CONDOR_")
DEFAULT_PORT_RANGE_ENV = (("GLOBUS_TCP_PORT_RANGE", "{first},{last}"),)
TEMPLATE_FIELDS = ("first", "last", "public_address")
MAX_CPU = 8191  # highest CPU number Linux builds (NR_CPUS) go up to
# Bounds on what the loader reads, so a stray or hostile file cannot stall `lark profiles check` or
# the broker (which reloads the directory on a job's start path): a 4.5 MB file took 19 s and
# 612 MB. Real profile files are a few KiB with a handful of profiles nested 5 levels deep.
MAX_FILE_BYTES = 1 << 20  # per file, checked before reading
MAX_PROFILES = 256  # per node: LarkProfiles lists every name in each slot ad
MAX_NESTING = 10  # mappings and lists inside each other; PyYAML's composer recurses per level
MAX_VALUES = 50_000  # per file, every alias (*name) and merge key (<<) expanded: no "billion laughs"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IFNAME_RE = re.compile(r"[^\s/:]{1,15}")
ACCOUNT_RE = re.compile(r"[^\s,:]{1,64}")

# Every key a profile accepts, in the order the docs and error messages list them.
KEYS: dict[str, str] = {
    "description": "one line shown by `lark profiles list`",
    "attach": "attachment mode: nat, bridge, macvlan, ipvlan or none (required)",
    "parent": "parent interface (macvlan, ipvlan) or bridge (bridge); for nat only the NIC `cpus: network` "
              "refers to",
    "ipv4_pool": "jobs' IPv4 addresses: 'CIDR' or 'CIDR FIRST-LAST' (bridge, macvlan, ipvlan)",
    "ipv4_gateway": "jobs' default IPv4 gateway, inside ipv4_pool's prefix (never handed out)",
    "ipv6_pool": "jobs' IPv6 addresses: 'CIDR' or 'CIDR FIRST-LAST'",
    "ipv6_gateway": "jobs' default IPv6 gateway",
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


# ------------------------------------------------------------------------------------------------
# Errors


class ProfileError(ConfigError):
    """One problem in a profile file: ``FILE:LINE: profile 'NAME': key 'KEY' <message>``."""

    def __init__(self, source: str, line: int | None, message: str, profile: str | None = None,
                 key: str | None = None) -> None:
        where = f"{source}:{line}: " if line else f"{source}: "
        text = where + (f"profile '{profile}': " if profile else "") + (f"key '{key}' " if key else "") + message
        Exception.__init__(self, text)
        self.knob = key or PROFILE_DIR_KNOB
        self.source = source
        self.line = line
        self.detail = message
        self.profile = profile
        self.key = key


# ------------------------------------------------------------------------------------------------
# The model


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
        if self.attach not in SITE_MODES:
            return None
        assert self.parent is not None
        return SiteAttachment(self.parent, self.ipv4_pool, self.ipv4_gateway, self.ipv6_pool, self.ipv6_gateway)

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
            "inbound_ports": self.inbound_ports, "port_range_env": {v.name: v.template for v in self.port_range_env},
            "bandwidth_in_mbit": self.bandwidth_in_mbit, "bandwidth_out_mbit": self.bandwidth_out_mbit,
            "allow": [str(n) for n in self.allow], "deny": [str(n) for n in self.deny], "cpus": str(self.cpus),
            "environment": dict(self.environment), "users": list(self.users), "groups": list(self.groups),
        }


def format_pool(pool: AddressPool | None) -> str | None:
    return None if pool is None else f"{pool.network} {pool.first}-{pool.last}"


@dataclass(frozen=True)
class Catalog:
    """The profiles a node offers, and the errors of the ones it does not."""

    directory: Path | None
    profiles: tuple[Profile, ...] = ()
    errors: tuple[ProfileError, ...] = ()
    broken: frozenset[str] = frozenset()  # defined, but dropped because of an error

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.profiles)

    def get(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)

    def select(self, name: str) -> Profile:
        """The profile a job asked for, or a RequestError the user can act on."""
        wanted = name.strip().lower()
        offered = ", ".join(self.names) or "none"
        if not NAME_RE.fullmatch(wanted):  # also keeps quotes out of the Requirements hint below
            raise RequestError(ATTR_PROFILE, f"{classad_text(name)} is not a profile name (1-64 characters of a-z, "
                                             f"0-9, '.', '_' or '-'); this node offers: {offered}")
        profile = self.get(wanted)
        if profile is not None:
            return profile
        if wanted in self.broken:
            raise RequestError(ATTR_PROFILE, f"profile {wanted!r} is defined on this node but has errors, so it is "
                                             "not offered; the node's admin can see them with 'lark profiles check'")
        raise RequestError(ATTR_PROFILE, f"profile {name!r} is not offered on this node (offered: {offered}); "
                                         f"require it with Requirements = stringListMember(\"{wanted}\", "
                                         f"{ADVERTISED_ATTR})")


# ------------------------------------------------------------------------------------------------
# Small value parsers (raise ValueError with the accepted form)


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Linux cpulist syntax: ``0-7,16-23`` -> (0, ..., 7, 16, ..., 23)."""
    cpus: set[int] = set()
    items = [item.strip() for item in text.strip().split(",")]
    if not text.strip() or any(not item for item in items):
        raise ValueError(f"empty item in CPU list {text!r}")
    for item in items:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise ValueError(f"{item!r} is not a CPU number or range N-M")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo > hi:
            raise ValueError(f"range {item} runs backwards")
        if hi > MAX_CPU:
            raise ValueError(f"CPU {hi} is above {MAX_CPU}")
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def format_cpulist(cpus: Iterable[int]) -> str:
    """(0, 1, 2, 3, 8) -> ``0-3,8``."""
    out: list[str] = []
    ordered = sorted(set(cpus))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def check_env_value(value: str) -> None:
    # The broker hands the wrapper KEY=VALUE lines and folds whitespace, so a value must survive that.
    if " ".join(value.split()) != value:
        raise ValueError("must be one line without tabs, repeated spaces or spaces at either end "
                         "(the job wrapper receives it as one KEY=VALUE line)")


def check_env_name(name: str) -> None:
    if not ENV_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid environment variable name (letters, digits and _, "
                         "not starting with a digit)")
    for prefix in RESERVED_ENV_PREFIXES:
        if name.upper().startswith(prefix):
            raise ValueError(f"{name!r} starts with {prefix}, which is reserved for "
                             f"{'Lark' if prefix == 'LARK_' else 'HTCondor'}")


def check_template(template: str) -> None:
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"template {template!r} is malformed ({err}); write e.g. '{{first}},{{last}}'") from None
    names = []
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(f"template {template!r} uses {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}}; accepted fields: "
                             f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
        names.append(name)
    if not names:
        raise ValueError(f"template {template!r} uses none of {{first}}, {{last}}, {{public_address}}")
    check_env_value(template.format(first=40000, last=40009, public_address="192.0.2.1"))


# ------------------------------------------------------------------------------------------------
# Reading one file


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _yaml_error_line(err: yaml.YAMLError, text: str) -> int | None:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(err, "position", None)  # ReaderError (control characters)
    if isinstance(position, int):
        return text.count("\n", 0, position) + 1
    return None


def _yaml_error_text(err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.MarkedYAMLError):
        text = str(err.problem or err.context or "syntax error")
        if err.context and err.problem:
            ctx, mark = err.context, err.context_mark
            if mark is not None and (err.problem_mark is None or mark.line != err.problem_mark.line):
                ctx += f" started at line {mark.line + 1}"
            text += f" ({ctx})"
        return text
    return str(err).splitlines()[0]


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses collections nested deeper than MAX_NESTING while composing.

    Without it a file of 100 000 '[' characters ends in a RecursionError, not a YAML error.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise yaml.composer.ComposerError(
                    None, None, f"collections are nested more than {MAX_NESTING} levels deep (a profile file "
                    "needs 5)", self.peek_event().start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def _too_big(root: yaml.Node) -> tuple[yaml.Node, str] | None:
    """The node where the tree, every alias expanded, passes MAX_VALUES values or refers to itself.

    PyYAML composes an alias as the very node it names, so a few lines of ``&a``/``*a`` (or of
    ``<<`` merges, which flattening copies) can stand for billions of values. A value containing
    itself (``&a [*a]``, ``&a {<<: *a}``) means nothing in a profile and cannot be counted, so it
    is refused too. Counted bottom-up with a memo and an explicit stack: aliases may chain deeper
    than Python's recursion limit.
    """
    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the path from the root: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children(node))
            if sizes[id(node)] > MAX_VALUES:
                return node, (f"holds more than {MAX_VALUES} values, counting what aliases (*name) and merge keys "
                              "(<<) repeat; a profile file needs a few hundred")
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            return node, "has a value that contains itself through an alias (*name)"
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in sizes)
    return None


def _size_text(size: int) -> str:
    return f"{size} bytes ({size / (1 << 20):.1f} MiB)" if size >= 1 << 20 else f"{size} bytes"


def too_large(size: int) -> str:
    """The refusal of a profile file of ``size`` bytes."""
    return (f"is {_size_text(size)}, more than the {MAX_FILE_BYTES} bytes (1 MiB) a profile file may hold; "
            "not read, so none of its profiles is offered (split it into several files)")


class _FileReader:
    """Walks one file's YAML node tree, keeping every node's line for the error messages."""

    def __init__(self, source: str, loader: yaml.SafeLoader) -> None:
        self.source = source
        self.loader = loader
        self.errors: list[ProfileError] = []

    def error(self, node: yaml.Node | None, message: str, profile: str | None = None,
              key: str | None = None) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.errors.append(ProfileError(self.source, line, message, profile, key))

    def construct(self, node: yaml.Node, profile: str | None, key: str | None) -> tuple[bool, object]:
        try:
            return True, self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as err:
            self.error(node, f"cannot be read: {_yaml_error_text(err)}", profile, key)
            return False, None

    def pairs(self, node: yaml.MappingNode, profile: str | None, what: str
              ) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
        """The mapping's (key, key node, value node) triples, ``<<`` merged; None if the merge fails.

        Every key written twice is an error (YAML would silently keep the last one) and so is every
        key that is not a plain name; both are reported and reading goes on, so one pass shows all
        of a file's problems.
        """
        seen: dict[str, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            if key in seen and what == "'profiles'":
                self.error(key_node, f"name appears twice in this file (first at line {seen[key]})", key)
            elif key in seen:
                self.error(key_node, f"appears twice in {what} (first at line {seen[key]}); YAML would silently "
                                     "keep the last one", profile, key)
            else:
                seen[key] = key_node.start_mark.line + 1
        try:
            self.loader.flatten_mapping(node)
        except yaml.YAMLError as err:
            self.error(node, f"has a bad merge key (<<): {_yaml_error_text(err)}", profile)
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(key_node, f"{what} has a key that is not a plain name", profile)
                continue
            out[str(key_node.value)] = (key_node, value_node)  # after flattening: explicit keys win
        return [(k, kn, vn) for k, (kn, vn) in out.items()]


def parse_profiles(text: str, source: str) -> tuple[list[Profile], list[ProfileError]]:
    """Every profile defined in one file's text, and every error in it. Pure."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        return [], [ProfileError(source, None, too_large(size))]
    try:
        loader = _BoundedLoader(text)
    except yaml.YAMLError as err:  # the reader refuses control characters up front
        return [], [ProfileError(source, _yaml_error_line(err, text), f"is not valid YAML: {_yaml_error_text(err)}")]
    reader = _FileReader(source, loader)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as err:
            line = _yaml_error_line(err, text)
            return [], [ProfileError(source, line, f"is not valid YAML: {_yaml_error_text(err)}")]
        if root is not None and (found := _too_big(root)) is not None:
            reader.error(found[0], found[1])
            return [], reader.errors
        if root is None or not isinstance(root, yaml.MappingNode):
            reader.error(root, "must be a mapping with one key, 'profiles', that maps profile names to settings")
            return [], reader.errors
        top = reader.pairs(root, None, "the file")
        if top is None:
            return [], reader.errors
        profiles_node: yaml.Node | None = None
        for key, key_node, value_node in top:
            if key == "profiles":
                profiles_node = value_node
            else:
                reader.error(key_node, f"key {key!r} is not known at the top level (accepted: profiles)")
        if profiles_node is None:
            if not reader.errors:
                reader.error(root, "has no 'profiles' mapping")
            return [], reader.errors
        if not isinstance(profiles_node, yaml.MappingNode) or not profiles_node.value:
            reader.error(profiles_node, "'profiles' must map profile names to their settings")
            return [], reader.errors
        entries = reader.pairs(profiles_node, None, "'profiles'")
        if entries is None:
            return [], reader.errors
        written = Counter(str(k.value) for k, _ in profiles_node.value if isinstance(k, yaml.ScalarNode))
        profiles = []
        for name, name_node, body in entries:
            if written[name] > 1:  # reported by pairs(); which copy was meant is anyone's guess
                continue
            profile = _parse_profile(reader, name, name_node, body)
            if profile is not None:
                profiles.append(profile)
        return profiles, reader.errors
    finally:
        loader.dispose()


def _parse_profile(reader: _FileReader, name: str, name_node: yaml.Node, body: yaml.Node) -> Profile | None:
    before = len(reader.errors)
    if not NAME_RE.fullmatch(name):
        reader.error(name_node, "name must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a "
                                f"letter or digit (jobs match it with stringListMember in {ADVERTISED_ATTR})", name)
        return None
    if not isinstance(body, yaml.MappingNode):
        reader.error(body, f"must be a mapping of settings (accepted keys: {ACCEPTED})", name)
        return None
    items = reader.pairs(body, name, "the profile")
    if items is None:
        return None
    nodes: dict[str, yaml.Node] = {}  # value nodes
    key_nodes: dict[str, yaml.Node] = {}
    values: dict[str, object] = {}
    for key, key_node, value_node in items:
        if key not in KEYS:
            close = difflib.get_close_matches(key, list(KEYS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            reader.error(key_node, f"is not known{hint} (accepted: {ACCEPTED})", name, key)
            continue
        ok, value = reader.construct(value_node, name, key)
        if ok:
            nodes[key], key_nodes[key] = value_node, key_node
            values[key] = value
    p = _ProfileBuilder(reader, name, name_node, nodes, key_nodes, values)
    settings = p.build()
    if len(reader.errors) > before or settings is None:
        return None
    lines = tuple((key, node.start_mark.line + 1) for key, node in key_nodes.items())
    return Profile(name=name, source=reader.source, line=name_node.start_mark.line + 1, key_lines=lines,
                   **settings)


class _ProfileBuilder:
    """Checks one profile's constructed values; each problem becomes an error naming its key."""

    def __init__(self, reader: _FileReader, name: str, name_node: yaml.Node, nodes: Mapping[str, yaml.Node],
                 key_nodes: Mapping[str, yaml.Node], values: Mapping[str, object]) -> None:
        self.reader = reader
        self.name = name
        self.name_node = name_node
        self.nodes = nodes
        self.key_nodes = key_nodes
        self.values = values
        self.failed: set[str] = set()

    def error(self, key: str, message: str, on_name: bool = False) -> None:
        self.failed.add(key)
        self.reader.error(self.name_node if on_name or key not in self.key_nodes else self.key_nodes[key], message,
                          self.name, key)

    # -- typed getters: None when absent or wrong (the error is recorded)

    def text(self, key: str) -> str | None:
        if key not in self.values:
            return None
        value = self.values[key]
        if not isinstance(value, str) or not value.strip():
            self.error(key, f"must be a non-empty string, got {_describe(value)}")
            return None
        return value.strip()

    def integer(self, key: str, lo: int, hi: int, accepted: str) -> int | None:
        if key not in self.values:
            return None
        value = self.values[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"must be a whole number {lo}..{hi} ({accepted}), got {_describe(value)}")
            return None
        if not lo <= value <= hi:
            self.error(key, f"must be a whole number {lo}..{hi} ({accepted}), got {value}")
            return None
        return value

    def strings(self, key: str, example: str) -> list[str] | None:
        if key not in self.values:
            return None
        value = self.values[key]
        if not isinstance(value, list):
            self.error(key, f"must be a list of strings, e.g. {example}, got {_describe(value)}")
            return None
        wrong = [v for v in value if not isinstance(v, str)]
        if wrong:
            self.error(key, f"must be a list of strings, e.g. {example}, but has {_describe(wrong[0])}")
            return None
        return [v.strip() for v in value]

    def mapping(self, key: str, example: str) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
        if key not in self.values:
            return None
        node = self.nodes[key]
        if not isinstance(node, yaml.MappingNode):
            self.error(key, f"must be a mapping of NAME: value, e.g. {example}, got {_describe(self.values[key])}")
            return None
        pairs = self.reader.pairs(node, self.name, f"key '{key}'")
        if pairs is None:
            self.failed.add(key)
        return pairs

    # -- the profile

    def build(self) -> dict[str, object] | None:
        s: dict[str, object] = {}
        if "description" in self.values:
            s["description"] = self.text("description") or ""
        # an unknown attach still gets every key type-checked (only what depends on the mode is not),
        # so one run of `lark profiles check` shows all of a profile's errors
        attach = self._attach()
        s["attach"] = attach
        s.update(self._addressing(attach))
        s.update(self._ports(attach))
        s.update(self._limits(attach))
        s["cpus"] = self._cpus(s.get("parent"))
        s["environment"] = self._environment(s.get("port_range_env", ()))
        for key, example in (("users", "[alice, bob]"), ("groups", "[dtnops]")):
            names = self.strings(key, example) or []
            for n in names:
                if not ACCOUNT_RE.fullmatch(n):
                    self.error(key, f"has {n!r}, which is not a user or group name")
            s[key] = tuple(names)
        return None if self.failed or attach is None else s

    def _attach(self) -> str | None:
        if "attach" not in self.values:
            self.error("attach", f"is required (accepted: {', '.join(NETWORK_TYPES)})", on_name=True)
            return None
        value = self.values["attach"]
        mode = value.strip().lower() if isinstance(value, str) else None
        if mode not in NETWORK_TYPES:
            self.error("attach", f"must be one of {', '.join(NETWORK_TYPES)}, got {_describe(value)}")
            return None
        return mode

    def _not_for(self, attach: str | None, keys: Sequence[str], why: str) -> None:
        for key in keys:
            if key in self.values:
                self.error(key, f"does not apply to attach '{attach}' ({why})")

    def _addressing(self, attach: str | None) -> dict[str, object]:
        s: dict[str, object] = {}
        parent = self.text("parent")
        if parent is not None and not IFNAME_RE.fullmatch(parent):
            self.error("parent", f"must be an interface name of at most 15 characters without '/', ':' or spaces, "
                                 f"got {parent!r}")
        if attach == "none":
            self._not_for(attach, ["parent", "ipv4_pool", "ipv4_gateway", "ipv6_pool", "ipv6_gateway"],
                          "the job has only loopback")
            return s
        s["parent"] = parent
        pool_keys = ("ipv4_pool", "ipv4_gateway", "ipv6_pool", "ipv6_gateway")
        if attach == "nat":
            self._not_for(attach, pool_keys, "NAT jobs get their subnets from LARK_NAT_IPV4_POOL/LARK_NAT_IPV6_POOL")
            return s
        if attach is not None and parent is None and "parent" not in self.values:
            what = "the bridge jobs join, e.g. br-data" if attach == "bridge" else \
                f"the interface the {attach} children hang off, e.g. ens1f0"
            self.error("parent", f"is required for attach '{attach}' ({what})", on_name=True)
        for family in (4, 6):
            pool_key, gw_key = f"ipv{family}_pool", f"ipv{family}_gateway"
            pool = gateway = None
            text = self.text(pool_key)
            if text is not None:
                try:
                    pool = parse_pool(text, family)
                except ValueError as err:
                    example = "198.51.100.0/24 198.51.100.10-198.51.100.99" if family == 4 else "2001:db8:1::/64"
                    self.error(pool_key, f"is not valid: {err}; write 'CIDR' or 'CIDR FIRST-LAST', e.g. {example}")
            gw_text = self.text(gw_key)
            if gw_text is not None:
                try:
                    gateway = parse_address(gw_text)
                except ValueError as err:
                    self.error(gw_key, f"is not valid: {err}")
                else:
                    if gateway.version != family:
                        self.error(gw_key, f"must be an IPv{family} address, got {gateway}")
                        gateway = None
                    elif pool_key not in self.values:
                        self.error(gw_key, f"needs {pool_key} (a gateway for addresses this profile does not hand out)")
                    elif pool is not None and gateway not in pool.network:
                        self.error(gw_key, f"is outside {pool_key}'s prefix {pool.network} (got {gateway}); the "
                                           "gateway must be on the jobs' own subnet")
            s[pool_key], s[gw_key] = pool, gateway
        if attach is not None and "ipv4_pool" not in self.values and "ipv6_pool" not in self.values:
            self.error("ipv4_pool", f"or ipv6_pool is required for attach '{attach}' (the addresses jobs get)",
                       on_name=True)
        return s

    def _ports(self, attach: str | None) -> dict[str, object]:
        s: dict[str, object] = {}
        if attach == "none":
            self._not_for(attach, ["inbound_ports", "port_range_env"], "nothing can connect to the job")
            return s
        ports = self.integer("inbound_ports", 1, MAX_PORTS, "leave the key out for no inbound ports")
        if ports is not None and attach in SITE_MODES and "ipv4_pool" not in self.values:
            self.error("inbound_ports", f"needs an ipv4_pool for attach '{attach}' (the port range is advertised "
                                        "with the job's IPv4 address)")
        s["inbound_ports"] = ports or 0
        variables: list[PortRangeVariable] = []
        pairs = self.mapping("port_range_env", "{HPSS_PORT_RANGE: '{first}-{last}'}")
        if pairs is not None:
            if "inbound_ports" not in self.values:
                self.error("port_range_env", "needs inbound_ports (there is no port range to export)")
            for var, key_node, value_node in pairs:
                ok, template = self.reader.construct(value_node, self.name, "port_range_env")
                if not ok:
                    self.failed.add("port_range_env")
                    continue
                try:
                    check_env_name(var)
                    if not isinstance(template, str):
                        raise ValueError(f"{var}: the template must be a string, e.g. '{{first}},{{last}}', got "
                                         f"{_describe(template)}")
                    check_template(template)
                except ValueError as err:
                    self.failed.add("port_range_env")
                    self.reader.error(key_node, f"has a bad entry: {err}", self.name, "port_range_env")
                    continue
                variables.append(PortRangeVariable(var, template))
        elif "inbound_ports" in self.values:
            variables = [PortRangeVariable(n, t) for n, t in DEFAULT_PORT_RANGE_ENV]
        s["port_range_env"] = tuple(variables)
        return s

    def _limits(self, attach: str | None) -> dict[str, object]:
        s: dict[str, object] = {}
        limit_keys = ("bandwidth_mbit", "bandwidth_in_mbit", "bandwidth_out_mbit", "allow", "deny")
        if attach == "none":
            self._not_for(attach, limit_keys, "the job has no network to limit")
            return s
        accepted = "0 = unlimited; one TBF qdisc goes up to 34 Gbit/s"
        both = self.integer("bandwidth_mbit", 0, MAX_MBIT, accepted) or 0
        for direction in ("in", "out"):
            value = self.integer(f"bandwidth_{direction}_mbit", 0, MAX_MBIT, accepted)
            s[f"bandwidth_{direction}_mbit"] = both if value is None else value
        for key in ("allow", "deny"):
            items = self.strings(key, "[198.51.100.0/24, 2001:db8::/32]")
            nets: list[IPNetwork] = []
            if items is not None and not items:
                self.error(key, "is an empty list; leave the key out "
                                + ("to allow every destination" if key == "allow" else "to deny nothing"))
            for item in items or []:
                try:
                    nets.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    self.error(key, f"has {item!r}, which is not an address or CIDR prefix (e.g. 198.51.100.0/24, "
                                    "2001:db8::/32)")
            s[key] = tuple(nets)
        return s

    def _cpus(self, parent: object) -> CpuHint:
        if "cpus" not in self.values:
            return CpuHint("none")
        value = self.values["cpus"]
        accepted = "'network', 'none' or a CPU list like '0-7,16-23'"
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.error("cpus", f"must be {accepted}, got {_describe(value)}")
            return CpuHint("none")
        text = str(value).strip()
        if text.lower() in ("none", "network"):
            if text.lower() == "network" and not parent:
                self.error("cpus", "is 'network', which needs a parent (the NIC whose NUMA node gives the CPUs)")
            return CpuHint(text.lower())
        try:
            return CpuHint("list", parse_cpulist(text))
        except ValueError as err:
            self.error("cpus", f"must be {accepted}: {err}")
            return CpuHint("none")

    def _environment(self, port_vars: object) -> tuple[tuple[str, str], ...]:
        pairs = self.mapping("environment", "{SCRATCH: /data/transfer}")
        if pairs is None:
            return ()
        from_ports = {v.name for v in port_vars} if isinstance(port_vars, tuple) else set()
        out: list[tuple[str, str]] = []
        for var, key_node, value_node in pairs:
            ok, value = self.reader.construct(value_node, self.name, "environment")
            if not ok:
                self.failed.add("environment")
                continue
            try:
                check_env_name(var)
                if var in from_ports:
                    raise ValueError(f"{var} is set from the job's port range (port_range_env); set it in one place")
                if isinstance(value, bool) or not isinstance(value, str | int):
                    raise ValueError(f"{var} must be a string or a whole number, got {_describe(value)}")
                check_env_value(str(value))
            except ValueError as err:
                self.failed.add("environment")
                self.reader.error(key_node, f"has a bad entry: {err}", self.name, "environment")
                continue
            out.append((var, str(value)))
        return tuple(out)


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()} (quote it if you mean a string)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return repr(value)
    return f"{type(value).__name__} {value!r}"


# ------------------------------------------------------------------------------------------------
# A directory of files -> Catalog


def profile_files(directory: Path) -> list[Path]:
    """``*.yaml``/``*.yml`` in lexical order; hidden files and editor backups are skipped."""
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix in PROFILE_SUFFIXES and not p.name.startswith("."))


def load_profiles(directory: Path | str | None, config: LarkConfig | None = None, *,
                  missing_ok: bool = False) -> Catalog:
    """Read and validate every profile file of ``directory``.

    Never raises for a bad profile: the catalog holds the good profiles and one error per problem
    (``lark profiles check`` prints them; the broker logs them). With ``config``, profiles are also
    checked against the node's knobs (port-range size, address pools). A missing directory is an
    error unless ``missing_ok`` (a node with no profiles).
    """
    if directory is None:
        return Catalog(None)
    directory = Path(directory)
    if not directory.is_dir():
        if missing_ok and not directory.exists():
            return Catalog(directory)
        return Catalog(directory, errors=(ProfileError(str(directory), None, "is not a directory (set "
                                                       f"{PROFILE_DIR_KNOB} to the directory of profile files)"),))
    texts = []
    errors: list[ProfileError] = []
    for path in profile_files(directory):
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                # refused by its size before a byte is read; the bounded read covers a file still growing
                data = f.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
            if size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
                errors.append(ProfileError(str(path), None, too_large(max(size, len(data)))))
                continue
            texts.append((str(path), data.decode("utf-8")))
        except (OSError, UnicodeDecodeError) as err:
            errors.append(ProfileError(str(path), None, f"cannot be read: {err}"))
    return build_catalog(texts, config, directory, errors)


def build_catalog(texts: Iterable[tuple[str, str]], config: LarkConfig | None = None,
                  directory: Path | None = None, errors: Iterable[ProfileError] = ()) -> Catalog:
    """The cross-file checks (unique names, non-overlapping pools, node limits) over parsed files. Pure."""
    all_errors = list(errors)
    parsed: list[Profile] = []
    broken: dict[str, str] = {}  # name -> where its first faulty definition is
    for source, text in texts:
        profiles, errs = parse_profiles(text, source)
        parsed.extend(profiles)
        all_errors.extend(errs)
        for e in errs:
            if e.profile:
                broken.setdefault(e.profile, f"{e.source}:{e.line}" if e.line else e.source or "")

    by_name: dict[str, list[Profile]] = {}
    for profile in parsed:
        by_name.setdefault(profile.name, []).append(profile)
    unique = f"profile names must be unique across {PROFILE_DIR_KNOB}"
    for name, copies in by_name.items():
        if name in broken:  # a faulty copy elsewhere: neither is offered
            for p in copies:
                all_errors.append(ProfileError(p.source, p.line, f"name is also defined, with errors, at "
                                               f"{broken[name]} ({unique})", name))
        elif len(copies) > 1:
            for p in copies[1:]:
                all_errors.append(ProfileError(p.source, p.line, f"name is also defined at {copies[0].where} "
                                               f"({unique}; neither is offered)", name))
            broken[name] = copies[0].where
    good = [p for p in parsed if p.name not in broken]

    dropped: set[str] = set()
    if len(good) > MAX_PROFILES:  # in file and line order, so the same ones are offered on every reload
        good.sort(key=lambda p: (p.source, p.line))
        over = good[MAX_PROFILES:]
        names = ", ".join(p.name for p in over[:3]) + (", ..." if len(over) > 3 else "")
        all_errors.append(ProfileError(over[0].source, over[0].line, f"is past the {MAX_PROFILES} profiles a node "
                                       f"offers at most ({len(good)} are defined); the last {len(over)} ({names}) "
                                       "are not offered", over[0].name))
        dropped.update(p.name for p in over)
        good = good[:MAX_PROFILES]
    for p, key, message in _pool_conflicts(good, config) + _node_conflicts(good, config):
        all_errors.append(ProfileError(p.source, p.line_of(key), message, p.name, key))
        dropped.add(p.name)
    all_errors.sort(key=lambda e: (e.source or "", e.line or 0))
    return Catalog(directory, tuple(p for p in good if p.name not in dropped), tuple(all_errors),
                   frozenset(broken) | dropped)


def _overlaps(a: AddressPool, b: AddressPool) -> bool:
    return a.family == b.family and int(a.first) <= int(b.last) and int(b.first) <= int(a.last)


def _pool_conflicts(profiles: Sequence[Profile], config: LarkConfig | None) -> list[tuple[Profile, str, str]]:
    """Two pools either are the same (same mode and gateway: one shared allocation) or do not
    overlap at all.

    Lark records allocations per (mode, first, last) and keeps back only its own gateway, so
    overlapping pools, or the same pool with two gateways, would hand one address to two jobs or a
    job the other's router address.
    """
    Gateway = ipaddress.IPv4Address | ipaddress.IPv6Address | None
    taken: list[tuple[str, str, AddressPool, Gateway]] = []  # (owner description, mode, pool, gateway)
    if config is not None:
        for mode, site in config.site_attachments.items():
            for family, pool, gateway in ((4, site.ipv4, site.ipv4_gateway), (6, site.ipv6, site.ipv6_gateway)):
                if pool is not None:
                    taken.append((f"LARK_{mode.upper()}_IPV{family}_POOL", mode, pool, gateway))
    out = []
    for p in profiles:
        for key, pool in p.pools():
            gateway = p.ipv4_gateway if key == "ipv4_pool" else p.ipv6_gateway
            for owner, mode, other, other_gateway in taken:
                if not _overlaps(pool, other) or (mode == p.attach and pool == other and gateway == other_gateway):
                    continue
                same = "is the same range" if pool == other else "overlaps"
                if pool == other and mode == p.attach:
                    same = f"is the same range with another gateway ({gateway or 'none'} vs {other_gateway or 'none'})"
                out.append((p, key, f"{format_pool(pool)} {same} as {owner} ({format_pool(other)}, attach "
                                    f"'{mode}'); pools must be identical with the same attach mode and gateway, "
                                    "or disjoint, or two jobs could get the same address"))
                break
            else:
                taken.append((f"profile '{p.name}' ({p.where})", p.attach, pool, gateway))
    return out


def _node_conflicts(profiles: Sequence[Profile], config: LarkConfig | None) -> list[tuple[Profile, str, str]]:
    if config is None:
        return []
    first, last = config.inbound_port_range
    size = last - first + 1
    return [(p, "inbound_ports", f"asks for {p.inbound_ports} ports per job, more than this node's "
                                 f"LARK_INBOUND_PORT_RANGE ({first}-{last}) holds ({size})")
            for p in profiles if p.inbound_ports > size]


def profile_dir(config: LarkConfig | None, external: Callable[[str], str | None] | None = None) -> Path:
    """``LARK_PROFILE_DIR`` from the node's config files (``$(...)`` expanded), else the default."""
    if config is None or PROFILE_DIR_KNOB not in config.settings:
        return DEFAULT_PROFILE_DIR
    value = _expand(PROFILE_DIR_KNOB, config.settings, external).strip()
    return Path(value) if value else DEFAULT_PROFILE_DIR


class CatalogCache:
    """The catalog of a directory, re-read when a file in it changes (cheap: one stat per file)."""

    def __init__(self, directory: Path | None, config: LarkConfig | None = None,
                 on_reload: Callable[[Catalog], None] | None = None) -> None:
        self.directory = directory
        self.config = config
        self.on_reload = on_reload
        self._stamp: object = None
        self._catalog = Catalog(directory)

    def _fingerprint(self) -> object:
        if self.directory is None or not self.directory.is_dir():
            return None
        stamp: list[tuple[object, ...]] = [(self.directory.stat().st_mtime_ns,)]
        for path in profile_files(self.directory):
            st = path.stat()
            stamp.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(stamp)

    def get(self) -> Catalog:
        try:
            stamp = self._fingerprint()
        except OSError:
            stamp = ("unreadable",)
        if stamp != self._stamp or self._stamp is None:
            self._catalog = load_profiles(self.directory, self.config, missing_ok=True)
            self._stamp = stamp
            if self.on_reload is not None:
                self.on_reload(self._catalog)
        return self._catalog


# ------------------------------------------------------------------------------------------------
# Jobs


def node_advertisement(profiles: Catalog | Iterable[Profile]) -> str:
    """The value of the ``LarkProfiles`` slot attribute: the offered names, comma-separated."""
    items = profiles.profiles if isinstance(profiles, Catalog) else profiles
    return ",".join(sorted(p.name for p in items))


def profile_name(attrs: Mapping[str, object], offered: Callable[[], str]) -> str | None:
    """The profile a job names, None when it names none; anything but a non-empty string is refused.

    ``offered()`` lists the node's profiles for the refusal. It is only called when the job names
    a profile (which needs the catalogue anyway): a job without one never makes the node read its
    profile directory.
    """
    if attrs.get(ATTR_PROFILE) is None:
        return None
    accepted = f"write the name of a profile this node offers ({offered()}), or leave the attribute out for none"
    return string_attr(attrs, ATTR_PROFILE, "a profile name", accepted)


def authorize(profile: Profile, user: str, groups: Iterable[str]) -> None:
    """Raise RequestError unless ``user`` (or one of ``groups``) may use ``profile``."""
    if not profile.users and not profile.groups:
        return
    if user in profile.users or not set(groups).isdisjoint(profile.groups):
        return
    allowed = "; ".join(part for part in (
        f"users {', '.join(profile.users)}" if profile.users else "",
        f"members of {', '.join(profile.groups)}" if profile.groups else "") if part)
    raise RequestError(ATTR_PROFILE, f"user {user!r} may not use profile {profile.name!r} (allowed: {allowed}); "
                                     "ask the node's admin for access or choose another profile")


def user_and_groups(uid: int) -> tuple[str, tuple[str, ...]]:
    """The user name and group names of ``uid`` from the user database (for :func:`authorize`)."""
    import grp
    import pwd

    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return str(uid), ()
    names = []
    for gid in os.getgrouplist(pw.pw_name, pw.pw_gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return pw.pw_name, tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class CpuPlacement:
    """Where a hint resolved on this node: CPUs to pin to (None: do not pin) and why."""

    cpus: tuple[int, ...] | None
    note: str


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def numa_node(ifname: str, sysfs: Path = Path("/sys"), _depth: int = 0) -> int | None:
    """NUMA node of a NIC; VLANs, bonds and bridges inherit it from their lower devices when they agree."""
    base = sysfs / "class" / "net" / ifname
    text = _read(base / "device" / "numa_node")
    if text is not None:
        try:
            node = int(text)
        except ValueError:
            return None
        return node if node >= 0 else None
    if _depth >= 4 or not base.is_dir():
        return None
    lowers = sorted(p.name[len("lower_"):] for p in base.iterdir() if p.name.startswith("lower_"))
    nodes = {numa_node(lower, sysfs, _depth + 1) for lower in lowers}
    return nodes.pop() if len(nodes) == 1 else None


def resolve_cpus(profile: Profile, sysfs: Path = Path("/sys")) -> CpuPlacement:
    """Turn the profile's ``cpus`` hint into CPUs of this node. A hint never fails a job: when sysfs
    cannot answer, the job is simply not pinned, and the note says why."""
    hint = profile.cpus
    if hint.kind == "none":
        return CpuPlacement(None, "not pinned")
    online_text = _read(sysfs / "devices" / "system" / "cpu" / "online")
    try:
        online = set(parse_cpulist(online_text)) if online_text else None
    except ValueError:
        online = None
    if hint.kind == "list":
        wanted, origin = hint.cpus, f"CPUs {format_cpulist(hint.cpus)}"
    else:
        parent = profile.parent or ""
        if not (sysfs / "class" / "net" / parent).exists():
            return CpuPlacement(None, f"not pinned: interface {parent!r} does not exist on this node")
        node = numa_node(parent, sysfs)
        if node is None:
            return CpuPlacement(None, f"not pinned: {parent} reports no NUMA node (virtual device or single-node "
                                      "machine)")
        text = _read(sysfs / "devices" / "system" / "node" / f"node{node}" / "cpulist")
        try:
            wanted = parse_cpulist(text) if text else ()
        except ValueError:
            wanted = ()
        if not wanted:
            return CpuPlacement(None, f"not pinned: NUMA node {node} of {parent} lists no CPUs")
        origin = f"NUMA node {node} of {parent}"
    cpus = tuple(c for c in wanted if online is None or c in online)
    if not cpus:
        return CpuPlacement(None, f"not pinned: none of {origin} is online (online: {online_text})")
    return CpuPlacement(cpus, f"{format_cpulist(cpus)} ({origin})")


@dataclass(frozen=True)
class JobExtras:
    """What a profile adds beyond the engine's JobRequest: environment and CPU placement for the wrapper."""

    profile: str
    environment: tuple[tuple[str, str], ...] = ()
    port_range_env: tuple[PortRangeVariable, ...] = ()
    cpus: tuple[int, ...] | None = None

    def job_environment(self, ports: tuple[int, int] | None, public_address: str | None) -> dict[str, str]:
        """Variables to export next to the engine's LARK_* ones, once the port range is known."""
        env = {"LARK_NETWORK_PROFILE": self.profile}
        if self.cpus:
            env["LARK_CPUS"] = format_cpulist(self.cpus)
        env.update(self.environment)
        if ports:
            for var in self.port_range_env:
                env[var.name] = var.render(ports[0], ports[1], public_address)
        return env


@dataclass(frozen=True)
class ResolvedRequest:
    """A job's request with its profile applied: what the engine does, and what the wrapper exports."""

    request: JobRequest
    site: SiteAttachment | None = None  # the profile's parent and pools (bridge, macvlan, ipvlan)
    extras: JobExtras | None = None  # None: the job asked for no profile


def resolve_request(attrs: Mapping[str, object], profile: Profile, job_id: str,
                    sysfs: Path = Path("/sys")) -> ResolvedRequest:
    """Apply ``profile`` to a job's attributes. The profile is the ceiling; the job may only narrow it.

    The profile sets the mode (a different ``LarkNetworkType`` is refused). The job may ask for a
    lower bandwidth, fewer inbound ports, a narrower ``LarkAllow`` (inside the profile's allow
    list) and more ``LarkDeny``; asking for more than the profile gives is refused with the
    profile's value. A profile's limits replace LARK_MAX_BANDWIDTH_MBIT and LARK_MAX_INBOUND_PORTS
    for its jobs: the admin wrote both.
    """
    name = repr(profile.name)
    leave_out = f"leave {ATTR_TYPE} out"
    text = string_attr(attrs, ATTR_TYPE, "a network type",
                       f"{leave_out} ({ATTR_PROFILE} {name} attaches by {profile.attach})")
    if text is not None and text.lower() != profile.attach:
        shown = repr(text.lower()) if text.lower() in NETWORK_TYPES else classad_text(text)
        raise RequestError(ATTR_TYPE, f"{shown} conflicts with {ATTR_PROFILE} {name}, which attaches by "
                                      f"{profile.attach}; {leave_out}")

    def ceiling(share: int) -> tuple[int, str]:
        # a profile without a share (0) still cannot go past what one TBF qdisc expresses
        if share:
            return share, f"the share of profile {name} ({share} Mbit/s)"
        return MAX_MBIT, f"the largest limit Lark can set ({MAX_MBIT} Mbit/s)"

    shares = (profile.bandwidth_in_mbit, profile.bandwidth_out_mbit)
    def mbit(share: int) -> str:
        return f"{share} Mbit/s" if share else "no limit"

    share_text = mbit(shares[0]) if shares[0] == shares[1] else f"in {mbit(shares[0])}, out {mbit(shares[1])}"
    bw_accepted = (f"write a whole number of Mbit/s up to the share of profile {name} ({share_text}), or leave "
                   "the attribute out for that share") if any(shares) else \
        f"write a whole number of Mbit/s from 1 to {MAX_MBIT}, or leave the attribute out for no limit"
    bw_in, bw_out = bandwidth_attrs(attrs, (ceiling(shares[0]), ceiling(shares[1])), None, bw_accepted)

    offer = profile.inbound_ports
    if offer:
        offers = f"offers {offer}"
        ports_accepted = (f"ask for 1 to {offer} ports (what profile {name} offers), or leave the attribute out for "
                          f"all {offer}")
    else:
        offers = "offers no inbound ports"
        ports_accepted = f"profile {name} offers no inbound ports; leave the attribute out"
    inbound = whole_number_attr(attrs, ATTR_INBOUND, offer, f"{{value}} ports asked; profile {name} {offers}",
                                ports_accepted)
    if inbound is None:
        inbound = offer

    allow = networks_attr(attrs, ATTR_ALLOW, f"what profile {name} allows" if profile.allow else None) or ()
    if allow and profile.allow:
        for net in allow:
            if not any(net.version == p.version and net.subnet_of(p) for p in profile.allow):  # type: ignore[arg-type]
                raise RequestError(ATTR_ALLOW, f"{net} is outside what profile {name} allows "
                                               f"({', '.join(str(p) for p in profile.allow)})")
    denied = networks_attr(attrs, ATTR_DENY, f"what profile {name} and LARK_DENY deny" if profile.deny else None)
    deny = profile.deny + tuple(n for n in denied or () if n not in profile.deny)
    request = JobRequest(job_id=job_id, network_type=profile.attach,
                         bandwidth_in_mbit=bandwidth_within(bw_in, shares[0]),
                         bandwidth_out_mbit=bandwidth_within(bw_out, shares[1]), allow=allow or profile.allow,
                         deny=deny, inbound_ports=inbound)
    extras = JobExtras(profile.name, profile.environment, profile.port_range_env if inbound else (),
                       resolve_cpus(profile, sysfs).cpus)
    return ResolvedRequest(request, profile.site, extras)


def request_for_job(attrs: Mapping[str, object], catalog: Callable[[], Catalog], config: LarkConfig, job_id: str,
                    who: Callable[[], tuple[str, Iterable[str]]], sysfs: Path = Path("/sys")) -> ResolvedRequest:
    """The one call for the prepare hook and the broker: a job with or without ``LarkNetworkProfile``.

    On every job's start path, so the catalogue (``catalog()``) and the user database (``who()``:
    user name and groups) are only consulted when the job names a profile, and the user database
    only when that profile restricts its users."""
    loaded: list[Catalog] = []  # read once, and only for a job that names a profile

    def offered() -> Catalog:
        if not loaded:
            loaded.append(catalog())
        return loaded[0]

    name = profile_name(attrs, lambda: ", ".join(offered().names) or "none")
    if name is None:
        return ResolvedRequest(request_from_attributes(attrs, config, job_id))
    profile = offered().select(name)
    if profile.users or profile.groups:
        authorize(profile, *who())
    return resolve_request(attrs, profile, job_id, sysfs)

