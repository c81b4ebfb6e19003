"""Waiting for a condition instead of sleeping a fixed time (a fixed sleep races a loaded machine)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(what: str, predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something true, and return that.

    ``what`` names the condition for the TimeoutError raised after ``timeout`` seconds, so a failure
    says what never happened ("timed out after 10 s waiting for the sink to listen"), not where.
    The predicate runs once more at the deadline, so a condition met during the last sleep counts.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
