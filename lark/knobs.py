"""Knobs: the one registry type and the one reader of HTCondor configuration.

Every component declares its ``LARK_*`` knobs as :class:`Knob` values next to the code that uses
them (core: :mod:`lark.config`; each attachment mode: its :mod:`lark.attach` module; links cron:
:mod:`lark.links.knobs`; report: :mod:`lark.report.settings`; spider: :mod:`lark.links.knobs`, beside the cron's);
:func:`lark.config.all_knobs` gathers them, so "every knob" is one lookup and the unknown-knob
check and the admin guide's tables derive from it.

Values come from one reader, :class:`ConfigReader`:

* explicit files (``--config``, ``$LARK_CONFIG``, a test's paths): read here, each value keeping
  the file and line it came from, so a bad value is reported as ``file:line: KNOB: why``;
* otherwise HTCondor's own lookup (``htcondor2.param``: the whole configuration HTCondor reads,
  its macros expanded) when the bindings import;
* otherwise ``/etc/condor/config.d`` read as files.

Only ``LARK_*`` assignments are read from files; the rest belongs to HTCondor. ``$(LARK_X)``
references are expanded here; other macros (``$(LOG)``) through ``htcondor2.param`` when present.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from lark.errors import ConfigError

T = TypeVar("T")
Lookup = Callable[[str], "str | None"]
DEFAULT_SOURCES = (Path("/etc/condor/config.d"),)
FROM_HTCONDOR = "HTCondor"  # the source of a value HTCondor's own lookup gave
FROM_DEFAULT = "default"


@dataclass(frozen=True)
class Knob(Generic[T]):
    """One ``LARK_*`` knob: its default text, its typed parser, a one-line doc and its owner.

    ``pattern``: a family of knobs (``LARK_TRAFFIC_CLASS_<NAME>``) matches this regular
    expression instead of the name.
    """

    name: str
    default: str
    parse: Callable[[str], T]
    doc: str
    owner: str
    pattern: str | None = None

    def matches(self, name: str) -> bool:
        return name == self.name if self.pattern is None else re.fullmatch(self.pattern, name) is not None


@dataclass(frozen=True)
class Setting:
    """One knob's raw text and where it came from (None for built-in defaults)."""

    value: str
    source: str | None = None
    line: int | None = None

    @property
    def where(self) -> str:
        """``file:line``, "HTCondor", "override" or "default"."""
        if self.source is None:
            return FROM_DEFAULT
        return f"{self.source}:{self.line}" if self.line else self.source


def condor_param(name: str) -> str | None:
    """HTCondor's own macros ($(LOG), $(EXECUTE)) when the bindings and a config are present."""
    try:
        import htcondor2

        value = htcondor2.param.get(name)
    except Exception:  # no bindings, or no HTCondor configuration on this machine
        return None
    return None if value is None else str(value)


def _htcondor_lark_settings() -> dict[str, Setting] | None:
    """Every LARK_* macro HTCondor's configuration defines, expanded; None without the bindings."""
    try:
        import htcondor2

        names = [k for k in htcondor2.param.keys() if k.upper().startswith("LARK_")]
        values = {k.upper(): str(htcondor2.param[k]) for k in names}
    except Exception:  # no bindings, or no readable HTCondor configuration
        return None
    located = _htcondor_file_settings()
    out = {}
    for name, value in values.items():
        found = located.get(name)
        try:
            same = found is not None and expand(name, located, condor_param) == value
        except ConfigError:
            same = False
        # The bindings give values, not places. The last assignment in HTCondor's own files is the
        # place when it expands to the value HTCondor has (an environment override does not).
        out[name] = Setting(value, found.source, found.line) if same and found else Setting(value, FROM_HTCONDOR)
    return out


def _htcondor_file_settings() -> dict[str, Setting]:
    """The LARK_* assignments of HTCondor's configuration files, in the order HTCondor reads them
    (the main file, then LOCAL_CONFIG_DIR in lexical order, then LOCAL_CONFIG_FILE): last one wins."""
    main = os.environ.get("CONDOR_CONFIG") or "/etc/condor/condor_config"
    files: list[Path] = [Path(main)]
    for knob in ("LOCAL_CONFIG_DIR", "LOCAL_CONFIG_FILE"):
        for entry in re.split(r"[\s,]+", condor_param(knob) or ""):
            path = Path(entry)
            if entry and path.is_dir():
                files.extend(sorted(p for p in path.iterdir() if p.is_file() and not p.name.endswith(("~", ".swp"))))
            elif entry:
                files.append(path)
    settings: dict[str, Setting] = {}
    for path in files:
        try:
            settings.update(read_settings(path))
        except ConfigError:  # unreadable: HTCondor itself would have said so
            continue
    return settings


# --------------------------------------------------------------------------------------------
# HTCondor-style files


def config_files(sources: Iterable[Path]) -> list[Path]:
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
            out[name] = Setting(value.strip(), str(path), start + 1)
    return out


def explicit_sources(sources: Iterable[Path | str] | None) -> list[Path] | None:
    """The files the caller chose: ``sources``, else ``$LARK_CONFIG`` (``:``-separated), else None."""
    if sources is not None:
        return [Path(s) for s in sources]
    env = os.environ.get("LARK_CONFIG")
    return [Path(p) for p in env.split(":") if p] if env else None


_MACRO = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.]*)(?::([^)]*))?\)")


def expand(name: str, settings: Mapping[str, Setting], external: Lookup | None, seen: tuple[str, ...] = ()) -> str:
    """The text of ``name`` with ``$(MACRO)`` and ``$(MACRO:default)`` references replaced."""
    setting = settings[name]
    if name in seen:
        raise ConfigError(name, "refers to itself through $(...)", setting.source, setting.line)

    def sub(m: re.Match[str]) -> str:
        ref, default = m.group(1).upper(), m.group(2)
        if ref in settings:
            return expand(ref, settings, external, (*seen, name))
        if external is not None:
            found = external(ref)
            if found is not None:
                return found
        if default is not None:
            return default
        raise ConfigError(name, f"refers to $({ref}), which is not defined", setting.source, setting.line)

    return _MACRO.sub(sub, setting.value)


# --------------------------------------------------------------------------------------------
# The reader


class ConfigReader:
    """The knobs' raw settings from one place (see the module docstring), read once.

    ``overrides`` (``-D KNOB=VALUE``, tests) win over everything; ``external`` resolves non-Lark
    macros. ``settings`` holds only what is set somewhere; :meth:`with_defaults` adds the
    declared defaults of the given knobs, and :func:`parse_setting` turns one into its value.
    """

    def __init__(self, sources: Iterable[Path | str] | None = None, overrides: Mapping[str, str] | None = None,
                 external: Lookup | None = condor_param, use_htcondor: bool = True) -> None:
        self.external = external
        self.settings: dict[str, Setting] = {}
        files = explicit_sources(sources)
        from_condor = _htcondor_lark_settings() if files is None and use_htcondor else None
        if from_condor is not None:
            self.settings.update(from_condor)
        else:
            for path in config_files(files if files is not None else [p for p in DEFAULT_SOURCES if p.exists()]):
                self.settings.update(read_settings(path))
        for name, value in (overrides or {}).items():
            self.settings[name.upper()] = Setting(value, "override")

    def with_defaults(self, knobs: Iterable[Knob[object]]) -> dict[str, Setting]:
        out = {k.name: Setting(k.default) for k in knobs if k.pattern is None}
        out.update(self.settings)
        return out

    def lookup(self, knobs: Iterable[Knob[object]] = ()) -> Lookup:
        """A ``param``-like function over these settings (what the cron and the spider take)."""
        merged = self.with_defaults(knobs)
        return lambda name: expand(name, merged, self.external) if name in merged else self._foreign(name)

    def _foreign(self, name: str) -> str | None:
        return None if name.upper().startswith("LARK_") or self.external is None else self.external(name)


def parse_setting(knob: Knob[T], settings: Mapping[str, Setting], external: Lookup | None, name: str | None = None
                  ) -> T:
    """Expand and parse one knob (``name``: a member of a knob family); errors name file, line, knob."""
    name = name or knob.name
    setting = settings[name]
    try:
        return knob.parse(expand(name, settings, external))
    except ValueError as err:
        # HTCondor's lookup does not say where a value came from; its own tool does
        hint = f" (condor_config_val -v {name} shows where it is set)" if setting.source == FROM_HTCONDOR else ""
        raise ConfigError(name, f"{err}{hint}", setting.source, setting.line) from None


@dataclass(frozen=True)
class EffectiveKnob:
    """What ``lark config`` shows for one knob: its expanded value and where it came from."""

    knob: Knob[object]
    name: str  # the knob's name (a family member's own name, e.g. LARK_TRAFFIC_CLASS_CAMPUS)
    value: str | None  # None: the text could not be expanded (error says why)
    where: str  # "file:line", "HTCondor", "override" or "default"
    error: str | None = None


def effective_knobs(knobs: Iterable[Knob[object]], reader: ConfigReader) -> list[EffectiveKnob]:
    """Per knob (and per member of a knob family that is set): expanded value and its origin."""
    known = list(knobs)
    merged = reader.with_defaults(known)
    out: list[EffectiveKnob] = []
    for knob in known:
        names = [knob.name] if knob.pattern is None else sorted(n for n in reader.settings if knob.matches(n))
        for name in names:
            setting = merged[name]
            try:
                out.append(EffectiveKnob(knob, name, expand(name, merged, reader.external), setting.where))
            except ConfigError as err:
                out.append(EffectiveKnob(knob, name, None, setting.where, err.detail))
    return out
