"""The session-scoped ``pool`` fixture: a real HTCondor 25.x pool in a cached chroot and its own netns.

See tests/pool/harness.py and docs/testing.md. The first run builds the image (about a minute, needs the Debian
mirror and PyPI); a build or start failure FAILS every pool test with the reason, it never skips.
"""

from __future__ import annotations

import atexit
import signal
import time
from collections.abc import Iterator

import pytest

from tests.pool.harness import Pool, PoolError, ensure_image, raise_interrupt, sweep_stale
from tests.pool.larkpool import lark_pool  # noqa: F401  (a fixture shared by the pool test modules)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of the bare pool first: the ``lark_pool`` fixture turns the shared pool into a Lark
    execute node for the rest of the session. A stable sort keeps the order within each group."""
    items.sort(key=lambda item: "lark_pool" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def pool(require_root: None, run_prefix: str) -> Iterator[Pool]:
    """A running pool; torn down at the end of the session, on Ctrl-C/SIGTERM, and at interpreter exit."""
    t0 = time.monotonic()
    try:
        image = ensure_image()
    except PoolError as exc:
        pytest.fail(f"cannot build the HTCondor test pool image: {exc}", pytrace=False)
    build_seconds = time.monotonic() - t0
    try:
        sweep_stale()
    except PoolError as exc:
        pytest.fail(f"cannot clean up a pool left by an earlier run: {exc}", pytrace=False)
    the_pool = Pool(run_prefix, image=image)
    atexit.register(the_pool.teardown)
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, raise_interrupt)  # pytest then runs the finalizers
    the_pool.timings["image"] = build_seconds
    try:
        try:
            the_pool.start()
        except (PoolError, TimeoutError, OSError) as exc:
            pytest.fail(f"cannot start the HTCondor test pool: {exc}", pytrace=False)
        yield the_pool
    finally:
        try:
            the_pool.teardown()
        finally:
            atexit.unregister(the_pool.teardown)
            if previous in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
