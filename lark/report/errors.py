"""Errors raised by ``lark report``; all are :class:`lark.errors.LarkError` so the CLI prints one line."""

from __future__ import annotations

from lark.errors import LarkError


class ReportError(LarkError):
    """A report cannot be produced (bad option, unreadable input, missing optional library)."""


class InputError(ReportError):
    """An input file or the schedd cannot be read at all. Bad *records* are counted, never raised."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")
