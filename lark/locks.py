"""Advisory ``flock`` locks on files in the state directory, shared by every process using it.

The broker's threads, an admin's ``lark up``/``lark run`` and the sweeper may all act on the same
state at once; a lock file per resource (an address pool, the shared firewall tables) orders them.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold ``path`` (created if missing) locked; ``shared`` lets holders of shared locks overlap."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
