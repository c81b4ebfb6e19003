"""Logging in HTCondor's daemon-log line format, so the spider's log reads like the others.

HTCondor daemons write ``MM/DD/YY HH:MM:SS message`` (``DEBUG_TIME_FORMAT``'s default) and rotate a
log to ``<name>.old`` when it reaches ``MAX_<SUBSYS>_LOG``; the spider does the same.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time

TIME_FORMAT = "%m/%d/%y %H:%M:%S"


class CondorFormatter(logging.Formatter):
    """``05/02/25 10:15:01 message``; warnings and errors carry their level, as HTCondor's ERROR lines do."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime(TIME_FORMAT, time.localtime(record.created))
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname}: {message}"
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        return f"{stamp} {message}"


def setup_logging(path: str | None, verbose: bool = False, max_bytes: int = 10 * 1024 * 1024) -> None:
    """Log to ``path`` (rotated to ``path.old``) or, with None or ``-``, to stderr."""
    logger = logging.getLogger("lark.spider")
    logger.handlers.clear()
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    handler: logging.Handler
    if path and path != "-":
        rotating = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=1, encoding="utf-8")
        rotating.namer = lambda name: name[:-2] + ".old" if name.endswith(".1") else name
        handler = rotating
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CondorFormatter())
    logger.addHandler(handler)
