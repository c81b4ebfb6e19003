"""``lark pool`` itself: several pools side by side, and ``down`` leaves nothing behind.

Bare pools (HTCondor only, one site): what is tested here is the pool's life cycle, not Lark in it
(tests/pool/test_sites.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lark.pool.node import sweep_stale
from lark.pool.personal import PersonalPool, personal_pool, state_path, sweep_pools
from tests.pool.larkpool import host_links

pytestmark = pytest.mark.pool


def _run_dirs(pool: PersonalPool) -> list[Path]:
    return [node.run_dir for node in pool.nodes.values() if node.run_dir.exists()]


def test_two_pools_run_side_by_side_and_down_removes_one_completely(require_root: None, run_prefix: str) -> None:
    """Pool a through the command line (``up`` detaches a keeper), pool b through the API; ``down a``
    leaves nothing of a and everything of b."""
    lark = [sys.executable, "-m", "lark.cli.main"]
    name_a, name_b = f"{run_prefix}a", f"{run_prefix}b"
    before = host_links()
    up = subprocess.run([*lark, "pool", "up", "--name", name_a, "--sites", "1", "--slots", "1", "--no-lark"],
                        capture_output=True, text=True, timeout=300, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    pool_a = PersonalPool.load(name_a)
    try:
        assert pool_a.keeper() is not None
        # another run's sweep (of pools whose owner died) leaves a pool with a live keeper alone
        assert pool_a.plan.prefix + "-cm" not in sweep_stale() and name_a not in sweep_pools()
        assert pool_a.leftovers() and pool_a.in_use()
        with personal_pool(name_b, sites=1, slots=1, lark=False) as pool_b:
            for pool in (pool_a, pool_b):
                cluster = pool.submit.submit("executable = /bin/true\nlog = log\nshould_transfer_files = YES\nqueue\n")
                pool.submit.wait(cluster, timeout=120)
            listed = subprocess.run([*lark, "pool", "list"], capture_output=True, text=True, check=True).stdout
            assert name_a in listed and name_b in listed
            down = subprocess.run([*lark, "pool", "down", name_a], capture_output=True, text=True, timeout=120,
                                  check=False)
            assert down.returncode == 0, down.stdout + down.stderr
            assert pool_a.leftovers() == []
            assert _run_dirs(pool_a) == []
            assert not [n for n in os.listdir("/run/netns") if n.startswith(pool_a.plan.prefix + "-")]
            assert not state_path(name_a).exists()
            # b is untouched: its nodes run and take jobs
            assert all(node.master_pid and os.path.exists(f"/proc/{node.master_pid}") for node in pool_b.nodes.values())
            cluster = pool_b.submit.submit("executable = /bin/true\nlog = log\nshould_transfer_files = YES\nqueue\n")
            pool_b.submit.wait(cluster, timeout=120)
        assert pool_b.leftovers() == []
        assert host_links() == before
    finally:
        if state_path(name_a).exists():
            PersonalPool.load(name_a).down()
