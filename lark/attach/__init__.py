"""Attachment modes, one module each, all with ``allocate``/``up``/``down``/``check``."""

from __future__ import annotations

from types import ModuleType


def module_for(mode: str) -> ModuleType:
    from lark.attach import bridge, ipvlan, macvlan, nat, none

    modules = {"nat": nat, "bridge": bridge, "macvlan": macvlan, "ipvlan": ipvlan, "none": none}
    return modules[mode]
