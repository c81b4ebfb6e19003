"""Waiting for a condition instead of sleeping a fixed time (a fixed sleep races a loaded machine).

The tests wait the way the product's own pool code does (:func:`lark.pool.util.wait_until`): the
predicate is called every ``interval`` seconds until it returns something true, which is returned;
after ``timeout`` seconds a TimeoutError names ``what`` never happened, not where. The predicate
runs once more at the deadline, so a condition met during the last sleep counts.
"""

from __future__ import annotations

from lark.pool.util import wait_until

__all__ = ["wait_until"]
