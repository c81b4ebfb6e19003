"""Lark's exception hierarchy.

Callers catch :class:`LarkError` subclasses, never ``OSError`` or pyroute2's ``NetlinkError`` from
deep inside. Every message is one readable line that names the cause, so the admin CLI can print
``str(err)`` and a job's HoldReason can carry it unchanged.
"""

from __future__ import annotations


class LarkError(Exception):
    """Base class of every error Lark raises on purpose."""


class ConfigError(LarkError):
    """A bad configuration value. Names the file, line and knob when they are known."""

    def __init__(self, knob: str, message: str, source: str | None = None, line: int | None = None) -> None:
        self.knob = knob
        self.source = source
        self.line = line
        self.detail = message
        where = f"{source}:{line}: " if source and line else (f"{source}: " if source else "")
        super().__init__(f"{where}{knob}: {message}")


class RequestError(LarkError):
    """A job's network request is invalid or not allowed on this node (user-fixable)."""

    def __init__(self, attribute: str, message: str) -> None:
        self.attribute = attribute
        super().__init__(f"{attribute}: {message}")


class AddressExhausted(LarkError):
    """An address pool has no free slot left."""


class KernelError(LarkError):
    """The kernel refused an operation (netlink, nftables, tc). The message names the object."""


class NotPermitted(LarkError):
    """The caller may not do this (not root, not the owner of the job, ...)."""


class UnsupportedFeature(LarkError):
    """The running kernel or host lacks something a mode needs (e.g. no ipvlan driver)."""


class NotFound(LarkError):
    """A job, namespace or interface that was asked for does not exist."""
