"""Firewall backends: one module per backend behind :class:`lark.firewall.base.FirewallBackend`.

:func:`make_backend` is here, above the backends, so that the interface module never imports the
modules that implement it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nothing at import time: lark.config imports lark.firewall.isolation through here
    from lark.firewall.base import FirewallBackend
    from lark.firewall.isolation import Isolation


def make_backend(kind: str, prefix: str, netns: str | None = None, job_side: bool = False,
                 isolation: Isolation | None = None) -> FirewallBackend:
    """Construct the backend named by ``LARK_FIREWALL``; imports lazily (python-iptables is slow)."""
    if kind == "nftables":
        from lark.firewall.nftables import NftablesBackend

        return NftablesBackend(prefix, netns, job_side, isolation=isolation)
    if kind == "iptables":
        from lark.firewall.iptables import IptablesBackend

        return IptablesBackend(prefix, netns, job_side, isolation)
    raise ValueError(f"unknown firewall backend {kind!r} (accepted: nftables, iptables)")
