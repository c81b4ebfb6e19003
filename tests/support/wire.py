"""The independent oracle for byte accounting: an nft counter at the far end of a connection."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from tests.support.netns import in_ns


@contextmanager
def wire_count(netns: str, table: str, match: str | Sequence[str], hook: str = "input"
               ) -> Iterator[Callable[[], int]]:
    """Count, in an nft table ``table`` of the test's own in ``netns``, the IP bytes of packets that
    ``match`` (an nft expression, e.g. ``tcp dport 9000``, or several, any of which counts) on ``hook``;
    yields a function returning the count so far. The table goes when the block ends.

    This is the ground truth a job's accounted bytes are compared with (:func:`same_bytes`): on a
    loaded machine TCP retransmits, so the payload size alone cannot bound what the wire carried.
    """
    rules = "\n    ".join(f"{m} counter name seen" for m in ([match] if isinstance(match, str) else match))
    script = f"""table inet {table} {{
  counter seen {{ }}
  chain count {{
    type filter hook {hook} priority 0;
    {rules}
  }}
}}"""
    subprocess.run(in_ns(netns, ["nft", "-f", "-"]), input=script, text=True, check=True)

    def seen() -> int:
        out = subprocess.run(in_ns(netns, ["nft", "-j", "list", "counter", "inet", table, "seen"]),
                             capture_output=True, text=True, check=True).stdout
        return next(item["counter"]["bytes"] for item in json.loads(out)["nftables"] if "counter" in item)

    try:
        yield seen
    finally:
        subprocess.run(in_ns(netns, ["nft", "delete", "table", "inet", table]), capture_output=True)


def same_bytes(accounted: int, wire: int) -> bool:
    """A job's own counter against the wire count of its connections taken at the other end.

    Equal through NAT (measured to the byte); a bridged or macvlan job's counter also holds its own
    IPv6 neighbour and router discovery packets, which a per-connection count does not see (76-272
    bytes measured), hence the allowance.
    """
    return wire <= accounted <= wire + 1024
