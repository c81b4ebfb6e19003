"""The small values a profile holds, parsed and checked one at a time. Pure.

Each checker raises ``ValueError`` with the accepted form; the parser turns it into an error that
names the file, line, profile and key.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

MAX_CPU = 8191  # highest CPU number Linux builds (NR_CPUS) go up to
RESERVED_ENV_PREFIXES = ("LARK_", "_CONDOR_")
TEMPLATE_FIELDS = ("first", "last", "public_address")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # a profile name
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IFNAME_RE = re.compile(r"[^\s/:]{1,15}")
ACCOUNT_RE = re.compile(r"[^\s,:]{1,64}")  # a user or group name


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
    """A port-range template such as ``{first},{last}``: known fields only, one line once filled in."""
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


def describe_value(value: object) -> str:
    """A YAML value as an error message shows it: ``'fast'``, ``a list``, ``the boolean true ...``."""
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
