"""A node's profile directory -> the :class:`Catalog` of the profiles it offers.

Reads every ``*.yaml``/``*.yml`` file of ``LARK_PROFILE_DIR`` within the size limit, parses each
(:mod:`lark.profiles.parsing`) and runs the checks that span files: unique names, pools that are
either identical or disjoint (across profiles and the node's own LARK_<MODE>_IPV*_POOL knobs), the
node's port range and the number of profiles a node advertises. Pure except the readers of the
directory (:func:`load_profiles`, :class:`CatalogCache`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lark.classads import classad_text
from lark.config import AddressPool, LarkConfig
from lark.errors import RequestError
from lark.knobs import expand
from lark.policy import ATTR_PROFILE
from lark.profiles.model import (
    ADVERTISED_ATTR,
    DEFAULT_PROFILE_DIR,
    LIMITS,
    MAX_PROFILES,
    PROFILE_DIR_KNOB,
    PROFILE_SUFFIXES,
    Profile,
    ProfileError,
    format_pool,
)
from lark.profiles.values import NAME_RE
from lark.yamlfile import YamlFileError, read_text


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
            texts.append((str(path), read_text(path, LIMITS)))  # a file too large is refused unread
        except YamlFileError as err:
            errors.append(ProfileError(str(path), err.line, err.detail))
        except OSError as err:
            errors.append(ProfileError(str(path), None, f"cannot be read: {err}"))
    return build_catalog(texts, config, directory, errors)


def build_catalog(texts: Iterable[tuple[str, str]], config: LarkConfig | None = None,
                  directory: Path | None = None, errors: Iterable[ProfileError] = ()) -> Catalog:
    """The cross-file checks (unique names, non-overlapping pools, node limits) over parsed files. Pure."""
    # imported here, not with the module: parsing needs PyYAML, which a job without a profile never does
    from lark.profiles.parsing import parse_profiles

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
    value = expand(PROFILE_DIR_KNOB, config.settings, external).strip()
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
# What the node advertises


def node_advertisement(profiles: Catalog | Iterable[Profile]) -> str:
    """The value of the ``LarkProfiles`` slot attribute: the offered names, comma-separated."""
    items = profiles.profiles if isinstance(profiles, Catalog) else profiles
    return ",".join(sorted(p.name for p in items))
