"""Waiting out the kernel's asynchronous removal of a job's host-side links."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.support.waiting import wait_until

if TYPE_CHECKING:
    from lark.engine import Engine


def links_left(engine: Engine, timeout: float = 3.0) -> list[str]:
    """The engine's prefixed host links still present after up to ``timeout`` seconds ([] when none).

    Deleting a namespace frees its veth ends asynchronously (the kernel's cleanup_net work queue), so
    a leak check that looked once, right after teardown, would blame Lark for the kernel's lag.
    """
    try:
        wait_until(f"the host links of prefix {engine.prefix} to go", lambda: not engine.prefixed_links(),
                   timeout, 0.02)
    except TimeoutError:
        return engine.prefixed_links()
    return []
