"""One profile file's text -> its profiles and every error in it. Pure.

The file is composed into a YAML node tree within :data:`lark.profiles.model.LIMITS`
(:mod:`lark.yamlfile`), then walked key by key, so each error names the file, the line, the profile,
the key and what is accepted. Reading goes on after an error, so one pass shows all of a file's
problems; a profile with an error is dropped, the others of the file survive.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections import Counter
from collections.abc import Mapping, Sequence

import yaml

from lark.addressing import parse_addressing
from lark.attach import mode, mode_names
from lark.config import IPNetwork, parse_address, parse_pool
from lark.policy import MAX_MBIT, MAX_PORTS
from lark.profiles.model import (
    ACCEPTED,
    ADVERTISED_ATTR,
    DEFAULT_PORT_RANGE_ENV,
    KEYS,
    LIMITS,
    CpuHint,
    PortRangeVariable,
    Profile,
    ProfileError,
)
from lark.profiles.values import (
    ACCOUNT_RE,
    IFNAME_RE,
    NAME_RE,
    check_env_name,
    check_env_value,
    check_template,
    describe_value,
    parse_cpulist,
)
from lark.yamlfile import MERGE_TAG, YamlDocument, YamlFileError, compose, error_text


class _FileReader:
    """Walks one file's YAML node tree, keeping every node's line for the error messages."""

    def __init__(self, document: YamlDocument) -> None:
        self.document = document
        self.source = document.source
        self.errors: list[ProfileError] = []

    def error(self, node: yaml.Node | None, message: str, profile: str | None = None,
              key: str | None = None) -> None:
        self.errors.append(ProfileError(self.source, self.document.line(node), message, profile, key))

    def construct(self, node: yaml.Node, profile: str | None, key: str | None) -> tuple[bool, object]:
        try:
            return True, self.document.construct(node)
        except yaml.YAMLError as err:
            self.error(node, f"cannot be read: {error_text(err)}", profile, key)
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
            if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
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
            self.document.flatten(node)
        except yaml.YAMLError as err:
            self.error(node, f"has a bad merge key (<<): {error_text(err)}", profile)
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
    try:
        document = compose(text, source, LIMITS)
    except YamlFileError as err:
        return [], [ProfileError(source, err.line, err.detail)]
    reader = _FileReader(document)
    root = document.root
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
            self.error(key, f"must be a non-empty string, got {describe_value(value)}")
            return None
        return value.strip()

    def integer(self, key: str, lo: int, hi: int, accepted: str) -> int | None:
        if key not in self.values:
            return None
        value = self.values[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"must be a whole number {lo}..{hi} ({accepted}), got {describe_value(value)}")
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
            self.error(key, f"must be a list of strings, e.g. {example}, got {describe_value(value)}")
            return None
        wrong = [v for v in value if not isinstance(v, str)]
        if wrong:
            self.error(key, f"must be a list of strings, e.g. {example}, but has {describe_value(wrong[0])}")
            return None
        return [v.strip() for v in value]

    def mapping(self, key: str, example: str) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
        if key not in self.values:
            return None
        node = self.nodes[key]
        if not isinstance(node, yaml.MappingNode):
            self.error(key, f"must be a mapping of NAME: value, e.g. {example}, got {describe_value(self.values[key])}")
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
            self.error("attach", f"is required (accepted: {', '.join(mode_names())})", on_name=True)
            return None
        value = self.values["attach"]
        name = value.strip().lower() if isinstance(value, str) else None
        if name not in mode_names():
            self.error("attach", f"must be one of {', '.join(mode_names())}, got {describe_value(value)}")
            return None
        return name

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
        facts = mode(attach) if attach is not None else None
        if facts is not None and not facts.job_interface:
            self._not_for(attach, ["parent", "ipv4_pool", "ipv4_gateway", "ipv6_pool", "ipv6_gateway", "addressing"],
                          "the job has only loopback")
            return s
        s["parent"] = parent
        pool_keys = ("ipv4_pool", "ipv4_gateway", "ipv6_pool", "ipv6_gateway", "addressing")
        if facts is not None and facts.site is None:
            self._not_for(attach, pool_keys, f"{attach} jobs get their addresses from {facts.address_source}")
            return s
        addressing = self._addressing_choice(attach)
        s["addressing"] = addressing
        if facts is not None and facts.site is not None and parent is None and "parent" not in self.values:
            self.error("parent", f"is required for attach '{attach}' ({facts.site.parent_hint})", on_name=True)
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
        if attach is not None and "ipv4_pool" not in self.values and "ipv6_pool" not in self.values \
                and addressing == "static":
            self.error("ipv4_pool", f"or ipv6_pool is required for attach '{attach}' (the addresses jobs get), "
                                    "unless addressing is dhcp, slaac or dhcp+slaac", on_name=True)
        return s

    def _addressing_choice(self, attach: str | None) -> str:
        """The ``addressing`` key: static (default), dhcp, slaac, dhcp+slaac, for modes that offer it."""
        text = self.text("addressing")
        if text is None:
            return "static"
        site = mode(attach).site if attach is not None else None
        if site is not None and site.addressing is None:
            self.error("addressing", f"does not apply to attach '{attach}' (its jobs take addresses from the pools "
                                     "only; the network addresses bridge and macvlan jobs)")
            return "static"
        try:
            return parse_addressing(text)
        except ValueError as err:
            self.error("addressing", f"is not valid: {err}")
            return "static"

    def _ports(self, attach: str | None) -> dict[str, object]:
        s: dict[str, object] = {}
        if attach is not None and not mode(attach).job_interface:
            self._not_for(attach, ["inbound_ports", "port_range_env"], "nothing can connect to the job")
            return s
        ports = self.integer("inbound_ports", 1, MAX_PORTS, "leave the key out for no inbound ports")
        if ports is not None and attach is not None and mode(attach).site is not None \
                and "ipv4_pool" not in self.values:
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
                                         f"{describe_value(template)}")
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
        if attach is not None and not mode(attach).job_interface:
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
            self.error("cpus", f"must be {accepted}, got {describe_value(value)}")
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
                    raise ValueError(f"{var} must be a string or a whole number, got {describe_value(value)}")
                check_env_value(str(value))
            except ValueError as err:
                self.failed.add("environment")
                self.reader.error(key_node, f"has a bad entry: {err}", self.name, "environment")
                continue
            out.append((var, str(value)))
        return tuple(out)
