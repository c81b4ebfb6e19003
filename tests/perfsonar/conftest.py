"""Fixtures for the spider tests: real loopback perfSONAR servers, torn down after each test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.perfsonar.fakeps import FakePerfSONAR, ipv6_available


@pytest.fixture
def server() -> Iterator[FakePerfSONAR]:
    srv = FakePerfSONAR("127.0.0.1").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server6() -> Iterator[FakePerfSONAR]:
    if not ipv6_available():
        pytest.skip("no IPv6 loopback (::1) on this host")
    srv = FakePerfSONAR("::1").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def now() -> float:
    # Whole seconds: esmond timestamps are integers, so tests compare exactly.
    return float(int(time.time()))


@pytest.fixture(autouse=True)
def _restore_spider_logger() -> Iterator[None]:
    """``lark-spider``'s main() points the spider logger at a file; undo that after each test."""
    import logging

    logger = logging.getLogger("lark.spider")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]
