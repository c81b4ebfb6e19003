"""The test suite's view of the personal pool: :mod:`lark.pool` re-exported under the old names.

The pool itself is product code now (``lark/pool/``: image.py builds and caches the image, node.py runs a
node, sites.py the multi-site pool, install.py installs Lark by the admin guide); see docs/testing.md.

Command line, for debugging by hand (as root, from the project root)::

    .venv/bin/python -m tests.pool.harness build [--force]   # build or reuse the image
    .venv/bin/python -m tests.pool.harness up                # start a pool and keep it until Ctrl-C
    .venv/bin/python -m tests.pool.harness sweep             # tear down pools and builds left by dead runs
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence

from lark.pool.image import (
    CACHE_ROOT,
    CONDOR_PATH,
    CONSOLE_SCRIPTS,
    EXTRA_PACKAGES,
    MASTER_PID,
    PACKAGES,
    PIP_OPTIONAL,
    PIP_PACKAGES,
    REPO,
    SAFETY_CONFIG,
    SRC,
    SUITE,
    TOKENS,
    USER,
    USER_ID,
    VENV,
    console_scripts,
    ensure_image,
    image_info,
    image_key,
    image_path,
    plain_scripts,
)
from lark.pool.node import (
    BASE_CONFIG,
    BASE_CONFIG_NAME,
    COMPLETED,
    HELD,
    IDLE,
    REMOVED,
    RUNNING,
    WATCHED_SYSCTLS,
    Pool,
    host_sysctls,
    raise_interrupt,
    running_pool,
    sweep_stale,
    unused_pool,
)
from lark.pool.util import HOST_PATH, JobHeld, PoolError
from lark.pool.util import mounts_under as _mounts_under

__all__ = [
    "BASE_CONFIG", "BASE_CONFIG_NAME", "CACHE_ROOT", "COMPLETED", "CONDOR_PATH", "CONSOLE_SCRIPTS", "EXTRA_PACKAGES",
    "HELD", "HOST_PATH", "IDLE", "MASTER_PID", "PACKAGES", "PIP_OPTIONAL", "PIP_PACKAGES", "REMOVED", "REPO",
    "RUNNING", "SAFETY_CONFIG", "SRC", "SUITE", "TOKENS", "USER", "USER_ID", "VENV", "WATCHED_SYSCTLS", "JobHeld",
    "Pool", "PoolError", "_mounts_under", "console_scripts", "ensure_image", "host_sysctls", "image_info",
    "image_key", "image_path", "main", "plain_scripts", "raise_interrupt", "running_pool", "sweep_stale",
    "unused_pool",
]


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.pool.harness", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) the cached image")
    b.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    sub.add_parser("up", help="start a pool and keep it running until Ctrl-C")
    sub.add_parser("sweep", help="tear down pools and builds left by dead runs")
    sub.add_parser("key", help="print the image path for the current recipe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cmd == "key":
        print(image_path())
    elif args.cmd == "build":
        t0 = time.monotonic()
        image = ensure_image(force=args.force)
        print(f"{image} ({time.monotonic() - t0:.1f} s)\n{json.dumps(image_info(image), indent=1)}")
    elif args.cmd == "sweep":
        print("swept:", sweep_stale())
    elif args.cmd == "up":
        for sig in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored)
            signal.signal(sig, raise_interrupt)
        with running_pool() as pool:
            print(f"pool {pool.prefix} up ({pool.timings}); root {pool.chroot}, netns {pool.netns_path}\n"
                  f"  nsenter --net={pool.netns_path} chroot {pool.chroot} condor_q -allusers\n"
                  f"  logs: {pool.chroot}/var/log/condor/\nCtrl-C tears it down.")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
