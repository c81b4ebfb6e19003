"""What every ``lark`` sub-command shares: reading the knobs the way the node's daemons do."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from lark.config import LarkConfig, condor_param, load_config
from lark.errors import LarkError


def load(args: argparse.Namespace, external: Callable[[str], str | None] | None = condor_param) -> LarkConfig:
    """The knobs from --config and -D KNOB=VALUE (either may be absent from ``args``); ``external``
    looks up HTCondor's own macros (``$(LOG)``, ``$(EXECUTE)``) as the broker does, so the admin
    commands read the node's drop-ins exactly as ``lark-netd`` does (see ``load_config``)."""
    overrides = {}
    for item in getattr(args, "overrides", None) or []:
        knob, sep, value = item.partition("=")
        if not sep:
            raise LarkError(f"-D expects KNOB=VALUE, got {item!r}")
        overrides[knob.strip()] = value.strip()
    return load_config(getattr(args, "config", None), overrides, external=external)
