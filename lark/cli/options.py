"""What every ``lark`` sub-command shares: reading the knobs the way the node's daemons do."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from lark.config import LarkConfig, condor_param, effective_knob_values, load_config
from lark.errors import LarkError
from lark.knobs import EffectiveKnob


def load(args: argparse.Namespace, external: Callable[[str], str | None] | None = condor_param) -> LarkConfig:
    """The knobs from --config and -D KNOB=VALUE (either may be absent from ``args``); ``external``
    looks up HTCondor's own macros (``$(LOG)``, ``$(EXECUTE)``) as the broker does, so the admin
    commands read the node's drop-ins exactly as ``lark-netd`` does (see ``load_config``)."""
    return load_config(getattr(args, "config", None), overrides(args), external=external)


def overrides(args: argparse.Namespace) -> dict[str, str]:
    """The -D KNOB=VALUE options as a mapping (later ones win)."""
    out = {}
    for item in getattr(args, "overrides", None) or []:
        knob, sep, value = item.partition("=")
        if not sep:
            raise LarkError(f"-D expects KNOB=VALUE, got {item!r}")
        if not knob.strip().upper().startswith("LARK_"):
            raise LarkError(f"-D sets a LARK_* knob, got {item!r}")
        out[knob.strip()] = value.strip()
    return out


def knob_values(args: argparse.Namespace, external: Callable[[str], str | None] | None = condor_param
                ) -> list[EffectiveKnob]:
    """For ``lark config``: every knob of every component, its expanded value and where it came
    from ("file:line", "HTCondor", "override" or "default"), read as :func:`load` reads them."""
    return effective_knob_values(getattr(args, "config", None), overrides(args), external=external)
