"""Attachment modes: the registry of :class:`~lark.attach.base.Mode` objects, one module per mode.

Everything that lists modes (the configuration's checks of ``LARK_NETWORK_TYPES`` and of the
per-mode knobs, the job attribute ``LarkNetworkType``, the CLI's choices, docs/modes.md) asks this
registry; the engine asks the mode object for its facts. Adding a mode is one new module in this
package that declares a ``MODE``: the registry collects every module's ``MODE`` at import (a test or
a site plug-in outside the package uses :func:`register`).
"""

from __future__ import annotations

import importlib
import pkgutil

from lark.attach.base import AttachContext, Mode, SitePools
from lark.errors import LarkError

__all__ = ["AttachContext", "Mode", "SitePools", "UnknownMode", "facts_table", "mode", "mode_names", "modes",
           "register", "unregister"]



def _collect() -> dict[str, Mode]:
    """Every module of this package that declares a ``MODE``, in the order messages and docs list
    them (``Mode.rank``, then name)."""
    found: list[Mode] = []
    for module in pkgutil.iter_modules(__path__):
        if module.name == "base":
            continue
        declared = getattr(importlib.import_module(f"{__name__}.{module.name}"), "MODE", None)
        if isinstance(declared, Mode):
            found.append(declared)
    return {m.name: m for m in sorted(found, key=lambda m: (m.rank, m.name))}


_MODES: dict[str, Mode] = _collect()


class UnknownMode(LarkError):
    """A mode name the registry does not know (a record written by a Lark with more modes)."""


def mode(name: str) -> Mode:
    try:
        return _MODES[name]
    except KeyError:
        raise UnknownMode(f"unknown attachment mode {name!r} (known: {', '.join(_MODES)})") from None


def modes() -> tuple[Mode, ...]:
    return tuple(_MODES.values())


def mode_names() -> tuple[str, ...]:
    return tuple(_MODES)


def register(new: Mode, replace: bool = False) -> None:
    """Add a mode at run time (a test's toy mode; a site plug-in). Its name must be new, unless
    ``replace``: then it takes the place of the registered mode of that name (a benchmark timing
    a mode's steps wraps them with ``dataclasses.replace(mode("nat"), up=timed_up)``)."""
    if (new.name in _MODES) != replace:
        state = "already registered" if new.name in _MODES else "not registered, nothing to replace"
        raise ValueError(f"attachment mode {new.name!r} is {state}")
    if not new.name.isidentifier() or new.name.lower() != new.name:
        raise ValueError(f"mode name {new.name!r} must be a lower-case identifier")
    _MODES[new.name] = new


def unregister(name: str) -> None:
    _MODES.pop(name, None)


def facts_table() -> str:
    """The registry's facts as the Markdown table of docs/modes.md (a test keeps the two equal)."""
    columns = list(modes()[0].facts()) if modes() else []
    lines = ["| mode | " + " | ".join(columns) + " | its knobs |", "|---|" + "---|" * (len(columns) + 1)]
    for m in modes():
        facts = m.facts()
        knobs = ", ".join(f"`{k.name}`" for k in m.knobs)
        lines.append(f"| `{m.name}` | " + " | ".join("yes" if facts[c] else "no" for c in columns) + f" | {knobs} |")
    return "\n".join(lines)
