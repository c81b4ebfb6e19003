"""``ipvlan``: like macvlan, but children share the parent's MAC (for NICs/switches that limit MACs).

Needs the kernel's ipvlan driver; on a kernel without it ``up`` fails with a clear error.
"""

from __future__ import annotations

from lark.attach import macvlan
from lark.attach.base import AttachContext
from lark.config import LarkConfig
from lark.errors import KernelError, UnsupportedFeature
from lark.state import JobRecord

mode = "ipvlan"


def allocate(config: LarkConfig, record: JobRecord) -> None:
    macvlan.allocate(config, record)


def up(ctx: AttachContext, record: JobRecord) -> None:
    try:
        macvlan.up(ctx, record)
    except KernelError as err:
        if "Operation not supported" in str(err) or "Unknown device type" in str(err):
            raise UnsupportedFeature("this kernel has no ipvlan driver (CONFIG_IPVLAN); use macvlan") from None
        raise


down = macvlan.down
check = macvlan.check
