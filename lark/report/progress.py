"""A one-line progress indicator on stderr for long inputs (records read, rate, share of the file)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Readers call :meth:`tick` every few thousand records; output is throttled to ``interval``."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True, interval: float = 0.5) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.label = ""
        self.records = 0
        self.total_bytes: int | None = None
        self.position: Callable[[], int] | None = None
        self._t0 = time.monotonic()
        self._last = 0.0
        self._shown = False

    def start(self, label: str, total_bytes: int | None = None, position: Callable[[], int] | None = None) -> None:
        self.label, self.total_bytes, self.position = label, total_bytes, position
        self.records = 0
        self._t0 = time.monotonic()

    def tick(self, n: int = 1) -> None:
        self.records += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = self.records / max(now - self._t0, 1e-9)
        share = ""
        if self.total_bytes and self.position is not None:
            try:
                share = f" {100.0 * self.position() / self.total_bytes:5.1f}%"
            except (OSError, ValueError):
                share = ""
        self.stream.write(f"\r{self.label}: {self.records:,} records, {rate:,.0f}/s{share}   ")
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def wanted(flag: bool | None, stream: TextIO | None = None) -> bool:
    """--progress / --no-progress win; otherwise only when stderr is a terminal."""
    if flag is not None:
        return flag
    s = stream if stream is not None else sys.stderr
    try:
        return s.isatty()
    except (AttributeError, ValueError):
        return False
