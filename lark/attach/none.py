"""``none``: loopback only. The job's namespace keeps just ``lo``, brought up so local IPC works."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lark.attach.base import AttachContext, Mode, bring_up_loopback
from lark.netlink import link_names

if TYPE_CHECKING:
    from lark.nodeconfig import LarkConfig
    from lark.state import JobRecord


def allocate(config: LarkConfig, record: JobRecord) -> None:
    """Nothing to allocate."""


def up(ctx: AttachContext, record: JobRecord) -> None:
    bring_up_loopback(ctx)


def down(ctx: AttachContext, record: JobRecord) -> None:
    """Nothing to remove: the namespace holds only loopback."""


def check(ctx: AttachContext, record: JobRecord) -> list[str]:
    if ctx.job is None:
        return [f"job namespace {record.netns} is gone"]
    unexpected = [name for name in link_names(ctx.job) if name != "lo"]
    return [f"job has unexpected interfaces: {', '.join(unexpected)}"] if unexpected else []


MODE = Mode(
    name="none", rank=90,
    summary="loopback only: no interface, nothing to count, police or shape",
    allocate=allocate, up=up, down=down, check=check,
    job_interface=False, job_side_firewall=False, shaping=False,
)
