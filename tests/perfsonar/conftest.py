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
