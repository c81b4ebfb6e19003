"""The look-back listings (tests with no run in the window), reused between crawls.

Finding the pairs an archive still lists but did not run in the measurement window takes a query
over ``measurements.lookback`` (7 days): OpenSearch's stale-pair aggregation, esmond's metadata
search widened to that range. Those answers list nearly every pair again and cost the archive more
than the crawl's own query. Staleness changes slowly, so each archive's listing for each test kind
is refreshed at most every ``measurements.stale_refresh`` and reused in between; only what a crawl
needs from it is kept — the pairs that had no run in the window when it was made, in a compact form —
never the answer itself.

Between refreshes every crawl still reads the window, so a cached stale pair that runs again is
fresh at once (fresh data always wins), and its age keeps growing from the newest run the listing
saw. A pair that stops running after a refresh has its last values carried over from the state
file, graded stale with their age (:func:`perfsonar.quality.carry_forward`), until the next
refresh lists it. A failed refresh keeps the last listing (the warning gives its age) and is tried
again at the next crawl. A one-off run (``--once``, ``--dry-run``) starts with no listing, so it
makes one.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Listing:
    """One archive's look-back result for one test kind: what is kept of it, and when it was made."""

    made_at: float
    window: float
    lookback: float
    entries: tuple[Any, ...]  # reader-specific compact entries (only pairs with no run in the window)
    due_at: float = 0.0  # when it is to be replaced (see :func:`due_at`)


class LookbackCache:
    """Listings by (archive URL, test kind); one per Spider, so it lives as long as the daemon."""

    def __init__(self) -> None:
        self._listings: dict[tuple[str, str], Listing] = {}
        self._lock = threading.Lock()

    def get(self, archive: str, test: str) -> Listing | None:
        with self._lock:
            return self._listings.get((archive, test))

    def put(self, archive: str, test: str, listing: Listing) -> None:
        with self._lock:
            self._listings[(archive, test)] = listing

    def keep_only(self, archives: Iterable[str]) -> None:
        """Forget the listings of archives no longer discovered."""
        wanted = set(archives)
        with self._lock:
            for key in [k for k in self._listings if k[0] not in wanted]:
                del self._listings[key]

    def __len__(self) -> int:
        return len(self._listings)


def due_at(archive: str, test: str, now: float, refresh: float, first: bool) -> float:
    """When a listing made ``now`` is to be refreshed: after ``refresh``, except that a daemon's first
    listing of each archive and test kind lasts 1 to 1.5 x ``refresh`` (a fixed share per archive), so
    the refreshes of hundreds of archives are spread over the crawls of an interval instead of all
    falling into one crawl every ``refresh``."""
    if not first or refresh <= 0:
        return now + refresh
    return now + refresh * (1.0 + 0.5 * (zlib.crc32(f"{archive} {test}".encode()) % 1000) / 1000.0)


def usable(listing: Listing | None, now: float, window: float, lookback: float) -> bool:
    """Whether ``listing`` may be reused instead of asking the archive again."""
    return (listing is not None and listing.window == window and listing.lookback == lookback
            and listing.made_at <= now < listing.due_at)
