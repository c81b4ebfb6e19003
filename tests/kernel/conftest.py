"""Fixtures shared by the kernel tests of the broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kernel.brokerkit import BrokerLab


@pytest.fixture
def lab(sandbox_ns: str, run_prefix: str) -> Iterator[BrokerLab]:
    """Broker, drivers and lab directory go first; ``sandbox_ns`` (with the job links and the
    ``inet <prefix>`` table in it) goes after."""
    lab = BrokerLab(sandbox_ns, run_prefix)
    try:
        yield lab
    finally:
        lab.close()
