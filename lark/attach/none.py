"""``none``: loopback only. The job's namespace keeps just ``lo``, brought up so local IPC works."""

from __future__ import annotations

from lark.attach.base import AttachContext, bring_up_loopback
from lark.config import LarkConfig
from lark.netlink import link_names
from lark.state import JobRecord

mode = "none"


def allocate(config: LarkConfig, record: JobRecord) -> None:
    """Nothing to allocate."""


def up(ctx: AttachContext, record: JobRecord) -> None:
    bring_up_loopback(ctx)


def down(ctx: AttachContext, record: JobRecord) -> None:
    """Nothing to remove: the namespace holds only loopback."""


def check(ctx: AttachContext, record: JobRecord) -> list[str]:
    if ctx.job is None:
        return [f"job namespace {record.netns} is gone"]
    extra = [name for name in link_names(ctx.job) if name != "lo"]
    return [f"job has unexpected interfaces: {', '.join(extra)}"] if extra else []
