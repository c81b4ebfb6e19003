"""Fixtures shared by every test area.

Every kernel object a test creates carries the per-run prefix ``lark`` + two random characters
(e.g. ``larkq7``), so leftovers are recognisable and one run never collides with the
asynchronous teardown of an earlier one. ``sandbox_ns`` gives a test its own namespace to play
the execute host, so tests never touch the real host's interfaces, routes or firewall.
"""

from __future__ import annotations

import os
import random
import string
import subprocess
from collections.abc import Iterator

import pytest

from lark import netns


def _random_suffix() -> str:
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(2))


@pytest.fixture(scope="session")
def run_prefix() -> str:
    """``lark`` + 2 random characters: fits LARK_NAME_PREFIX (<= 6) and IFNAMSIZ budgets."""
    return "lark" + _random_suffix()


@pytest.fixture(scope="session")
def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root (CI runs as root); run the README test command as root")


class NamespaceFactory:
    """Creates named namespaces ``<prefix>-<name>`` and removes every one of them at teardown."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created: list[str] = []

    def __call__(self, name: str, lo_up: bool = True) -> str:
        full = f"{self.prefix}-{name}-{_random_suffix()}"
        path = str(netns.create_named(full))
        self.created.append(full)
        if lo_up:
            subprocess.run(["ip", "-n", full, "link", "set", "lo", "up"], check=True)
        return path

    def cleanup(self) -> None:
        for name in reversed(self.created):
            netns.delete_named(name)
        self.created.clear()


@pytest.fixture
def make_ns(require_root: None, run_prefix: str) -> Iterator[NamespaceFactory]:
    """``make_ns("host")`` -> path of a fresh namespace, deleted after the test whatever happens."""
    factory = NamespaceFactory(run_prefix)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def sandbox_ns(make_ns: NamespaceFactory) -> str:
    """A namespace that plays the execute host, with forwarding on (it is the test's own)."""
    path = make_ns("host")
    name = os.path.basename(path)
    for knob in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", knob], check=True)
    return path
