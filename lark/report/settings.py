"""Report settings: charge per GB per traffic class, session gap, circuit thresholds, top-N.

Sources, later ones winning: built-in defaults; ``LARK_REPORT_*`` knobs read by Lark's one reader
(:class:`lark.knobs.ConfigReader`: the ``lark --config`` paths or ``$LARK_CONFIG``, else HTCondor's
configuration, else ``/etc/condor/config.d``; ``-D`` overrides); a YAML file given with
``--report-config`` (same names, lower case, without the ``LARK_REPORT_`` prefix); command-line options.

The knobs, with their defaults and meanings, are declared once in :data:`KNOBS` below (docs/report.md
lists them, and a unit test holds that table to these declarations).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lark.errors import ConfigError
from lark.knobs import ConfigReader, Knob, expand
from lark.yamlfile import YamlFileError, YamlLimits, line_of, load, read_text

PREFIX = "LARK_REPORT_"
OWNER = "lark report"
RATE_BASES = ("transfers", "sessions")
# A --report-config file holds a handful of settings; the bounds only stop a stray file early.
YAML_LIMITS = YamlLimits(what="a report settings file", max_bytes=1 << 20, max_nesting=10, max_values=10_000,
                         usual_nesting=3, usual_values="a dozen")
DEFAULT_CLASS = "default"
UNCLASSIFIED = "(unclassified)"


def class_key(name: str) -> str:
    """Class names compare without case and underscores: off_campus == OffCampus (the attribute form)."""
    return name.replace("_", "").lower()


@dataclass(frozen=True)
class ReportConfig:
    charge_per_gb: Mapping[str, float] = field(default_factory=dict)  # "wan", "wan:in", "default", ...
    currency: str = ""
    session_gap: float = 60.0
    circuit_min_bytes: float = 100e6
    circuit_min_seconds: float = 600.0
    circuit_rate_basis: str = "transfers"
    top: int = 10

    def rate(self, cls: str, direction: str) -> float:
        """Price per GB of class ``cls`` (a name, or UNCLASSIFIED) in direction "in" or "out"."""
        rates = self.charge_per_gb
        if not rates:
            return 0.0
        key = DEFAULT_CLASS if cls == UNCLASSIFIED else class_key(cls)
        for k in (f"{key}:{direction}", key, f"{DEFAULT_CLASS}:{direction}", DEFAULT_CLASS):
            if k in rates:
                return rates[k]
        return 0.0

    @property
    def charging(self) -> bool:
        return any(v for v in self.charge_per_gb.values())

    def as_dict(self) -> dict[str, Any]:
        return {"charge_per_gb": dict(self.charge_per_gb), "currency": self.currency,
                "session_gap_seconds": self.session_gap, "circuit_min_bytes": self.circuit_min_bytes,
                "circuit_min_seconds": self.circuit_min_seconds, "circuit_rate_basis": self.circuit_rate_basis,
                "top": self.top}


def parse_rates(value: Any, knob: str = "LARK_REPORT_CHARGE_PER_GB", source: str | None = None,
                line: int | None = None) -> dict[str, float]:
    """``"default=0.01, wan=0.05, wan:in=0"`` or a YAML mapping -> {"default": 0.01, "wan": 0.05, ...}."""
    if isinstance(value, Mapping):
        pairs = [(str(k), v) for k, v in value.items()]
    else:
        text = str(value or "").strip()
        pairs = []
        for item in (i for i in re.split(r"[,\s]+", text) if i):
            k, sep, v = item.partition("=")
            if not sep:
                raise ConfigError(knob, f"expected CLASS=RATE, got {item!r}", source, line)
            pairs.append((k, v))
    out: dict[str, float] = {}
    for k, v in pairs:
        name, _, direction = k.strip().partition(":")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or direction not in ("", "in", "out"):
            raise ConfigError(knob, f"bad class {k!r}: expected NAME, NAME:in or NAME:out", source, line)
        try:
            rate = float(v)
        except (TypeError, ValueError):
            raise ConfigError(knob, f"rate for {k!r} is not a number: {v!r}", source, line) from None
        if rate < 0 or not math.isfinite(rate):
            raise ConfigError(knob, f"rate for {k!r} must be >= 0, got {v!r}", source, line)
        out[class_key(name) + (f":{direction}" if direction else "")] = rate
    return out


def _positive(knob: str, value: Any, source: str | None, line: int | None, minimum: float = 0.0,
              integer: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(knob, f"expected a number, got {value!r}", source, line) from None
    if not math.isfinite(number) or number < minimum or (integer and number != int(number)):
        kind = "a whole number" if integer else "a number"
        raise ConfigError(knob, f"expected {kind} >= {minimum:g}, got {value!r}", source, line)
    return number


def apply(config: ReportConfig, values: Mapping[str, Any], source: str | None = None,
          lines: Mapping[str, int] | None = None) -> ReportConfig:
    """Apply {KNOB_SUFFIX: value} (e.g. {"SESSION_GAP": "30"}) on top of ``config``, validating each."""
    changes: dict[str, Any] = {}
    for raw_name, value in values.items():
        name = raw_name.upper()
        knob = PREFIX + name
        line = (lines or {}).get(raw_name)
        if name not in KNOB_NAMES:
            raise ConfigError(knob, f"unknown report setting (known: {', '.join(PREFIX + k for k in KNOB_NAMES)})",
                              source, line)
        if name == "CHARGE_PER_GB":
            changes["charge_per_gb"] = parse_rates(value, knob, source, line)
        elif name == "CURRENCY":
            changes["currency"] = str(value or "").strip()
        elif name == "SESSION_GAP":
            changes["session_gap"] = _positive(knob, value, source, line)
        elif name == "CIRCUIT_MIN_MB":
            changes["circuit_min_bytes"] = _positive(knob, value, source, line) * 1e6
        elif name == "CIRCUIT_MIN_MINUTES":
            changes["circuit_min_seconds"] = _positive(knob, value, source, line) * 60.0
        elif name == "CIRCUIT_RATE":
            basis = str(value).strip().lower()
            if basis not in RATE_BASES:
                raise ConfigError(knob, f"expected one of {', '.join(RATE_BASES)}, got {value!r}", source, line)
            changes["circuit_rate_basis"] = basis
        elif name == "TOP":
            changes["top"] = int(_positive(knob, value, source, line, 1, integer=True))
    return replace(config, **changes)


def _checked(suffix: str) -> Callable[[str], ReportConfig]:
    """The knob's parser: the report's own validation (``apply``), as the ValueError a Knob raises."""

    def parse(text: str) -> ReportConfig:
        try:
            return apply(ReportConfig(), {suffix: text})
        except ConfigError as err:
            raise ValueError(err.detail) from None

    return parse


_DOCS = {
    "CHARGE_PER_GB": ("", "class=rate list, rate per GB (10^9 bytes) in and out; class:in= / class:out= set one "
                          "direction; default prices unclassified bytes and classes without a rate (empty: no "
                          "charges)."),
    "CURRENCY": ("", "Label printed next to charges."),
    "SESSION_GAP": ("60", "Seconds between two transfers that still belong to one session."),
    "CIRCUIT_MIN_MB": ("100", "Smallest session (MB = 10^6 bytes) considered for a circuit."),
    "CIRCUIT_MIN_MINUTES": ("10", "A session 'needs a circuit' above this duration."),
    "CIRCUIT_RATE": ("transfers", "Q3 of transfers or sessions throughput."),
    "TOP": ("10", "Rows per table, top jobs and sessions."),
}
KNOBS: tuple[Knob[object], ...] = tuple(Knob(PREFIX + suffix, default, _checked(suffix), doc, OWNER)
                                        for suffix, (default, doc) in _DOCS.items())
KNOB_NAMES = tuple(_DOCS)


def read_knobs(paths: Iterable[Path] | None) -> tuple[dict[str, str], dict[str, tuple[str, int | None]]]:
    """LARK_REPORT_* settings (by suffix, expanded) and where each was set, through Lark's one reader.

    Only these knobs are looked at: the rest belongs to HTCondor and to other Lark components, whose
    own validation must not stop an accounting report.
    """
    reader = ConfigReader(paths)
    values: dict[str, str] = {}
    where: dict[str, tuple[str, int | None]] = {}
    for name, setting in reader.settings.items():
        if name.startswith(PREFIX):
            values[name[len(PREFIX):]] = expand(name, reader.settings, reader.external)
            where[name[len(PREFIX):]] = (setting.source or "", setting.line)
    return values, where


def load_report_config(knob_paths: Iterable[Path] | None = None, overrides: Iterable[str] = (),
                       yaml_path: Path | None = None) -> ReportConfig:
    """Defaults <- knobs (files) <- ``-D LARK_REPORT_X=..`` overrides <- YAML file."""
    config = ReportConfig()
    values, where = read_knobs(knob_paths or None)
    for name, value in values.items():
        src, line = where[name]
        config = apply(config, {name: value}, src, {name: line} if line else None)
    for item in overrides:
        knob, sep, value = item.partition("=")
        knob = knob.strip().upper()
        if sep and knob.startswith(PREFIX):
            config = apply(config, {knob[len(PREFIX):]: value.strip()}, "-D")
    if yaml_path is not None:
        config = apply_yaml(config, yaml_path)
    return config


def apply_yaml(config: ReportConfig, path: Path) -> ReportConfig:
    """``config`` with the settings of the YAML file at ``path`` applied; errors say ``FILE:LINE``."""
    source = str(path)
    try:
        text = read_text(Path(path), YAML_LIMITS)
        document, data = load(text, source, YAML_LIMITS)
    except OSError as err:
        raise ConfigError("--report-config", f"cannot read: {err.strerror or err}", source) from err
    except YamlFileError as err:  # too large, not UTF-8, not valid YAML: keep its line, name the option
        raise ConfigError("--report-config", err.detail, err.source, err.line) from None
    if data is None:
        return config
    if not isinstance(data, Mapping):
        raise ConfigError("--report-config", "expected a mapping of settings at the top level", source,
                          document.line(document.root))
    lines = {str(k): line for k in data if (line := line_of(document.root, [str(k)])) is not None}
    return apply(config, {str(k): v for k, v in data.items()}, source, lines)
