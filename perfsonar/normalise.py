"""Pure unit conversions and plausibility checks for perfSONAR values.

Archives disagree about types and units: esmond returns
numbers as strings, elmond and OpenSearch as numbers; RTT is milliseconds in esmond/elmond but
seconds in OpenSearch and ISO-8601 durations in pScheduler; pScheduler latency histograms are in
units of the test's bucket width. Everything here converts one value and either returns it in the
spider's fixed unit or ``None`` — a value that cannot be trusted is dropped, never guessed.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from perfsonar.model import M_LOSS, M_OWDELAY, M_RETRANSMITS, M_RTT, M_RTT_LOSS, M_THROUGHPUT, M_TP_LOSS

# Plausible ranges in fixed units. Outside them a value is garbage (wrong units, a broken tool,
# a corrupted archive), and publishing it would mislead the matchmaker.
BOUNDS: dict[str, tuple[float, float]] = {
    M_THROUGHPUT: (0.0, 4.0e12),  # 0 .. 4 Tbit/s: no perfSONAR host tests faster
    M_LOSS: (0.0, 1.0),
    M_TP_LOSS: (0.0, 1.0),
    M_RETRANSMITS: (0.0, 1.0),  # retransmitted segments per segment sent
    M_RTT_LOSS: (0.0, 1.0),
    M_OWDELAY: (0.0, 60_000.0),  # a negative delay is a clock error; > 60 s is not a network
    M_RTT: (0.0, 60_000.0),
}

# Samples stamped further in the future than this are from a host with a broken clock.
MAX_FUTURE_SKEW = 600.0

_ISO_DURATION = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def to_float(value: object) -> float | None:
    """A finite float from a number or a numeric string (esmond sends ``"30"``); else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def parse_iso_duration(text: object) -> float | None:
    """Seconds in an ISO-8601 duration (``PT4H``, ``PT0.0342S``, ``P1DT2H``); None if not one.

    Years and months are refused: their length in seconds is ambiguous and no perfSONAR schedule
    uses them.
    """
    if not isinstance(text, str):
        return None
    m = _ISO_DURATION.match(text.strip().upper())
    if not m or text.strip().upper() in ("P", "PT"):
        return None
    parts = {k: float(v) for k, v in m.groupdict().items() if v is not None}
    return (parts.get("w", 0.0) * 7 * 86400 + parts.get("d", 0.0) * 86400 + parts.get("h", 0.0) * 3600
            + parts.get("m", 0.0) * 60 + parts.get("s", 0.0))


def parse_seconds(value: object) -> float | None:
    """A duration given as seconds (number or numeric string) or as an ISO-8601 duration."""
    number = to_float(value)
    if number is not None:
        return number
    return parse_iso_duration(value)


def parse_archive_time(value: object) -> float | None:
    """UNIX seconds (UTC) from epoch seconds or milliseconds, or an ISO-8601 date-time.

    OpenSearch ``pscheduler.start_time`` carries the measuring host's UTC offset
    (``2025-05-02T10:00:03+02:00``); a string without an offset is taken as UTC.
    """
    number = to_float(value)
    if number is not None:
        # Epoch milliseconds (OpenSearch sort values, ps_* indices) are > 1e11 until the year 5138.
        return number / 1000.0 if number > 1e11 else number
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def plausible(metric: str, value: float | None) -> float | None:
    """The value if it lies inside the metric's bounds, else None."""
    if value is None or not math.isfinite(value):
        return None
    low, high = BOUNDS[metric]
    return value if low <= value <= high else None


def plausible_time(ts: float | None, now: float, oldest: float) -> float | None:
    """The timestamp if it lies between ``oldest`` and a little after ``now``."""
    if ts is None or not math.isfinite(ts):
        return None
    return ts if oldest <= ts <= now + MAX_FUTURE_SKEW else None


def owd_scale(tool_name: str | None, bucket_width: object) -> float:
    """Factor that turns a latency histogram key or latency statistic into milliseconds.

    pScheduler-produced data (tool ``pscheduler/...`` in esmond/elmond, all OpenSearch data) stores
    delay / bucket-width, so it is ms only for the default width 0.001 s; pre-pScheduler esmond data
    advertises 0.0001 although its buckets are already ms. So rescale only
    pScheduler data.
    """
    width = to_float(bucket_width)
    if tool_name is not None and not tool_name.startswith("pscheduler/") and tool_name != "pscheduler":
        return 1.0
    if width is None or width <= 0:
        return 1.0
    return width / 0.001


def histogram_median(histogram: object, scale: float = 1.0) -> float | None:
    """Weighted median of a ``{"<bucket>": count}`` histogram, times ``scale``; None if unusable."""
    if not isinstance(histogram, Mapping) or not histogram:
        return None
    buckets: list[tuple[float, float]] = []
    for key, count in histogram.items():
        k, c = to_float(key), to_float(count)
        if k is None or c is None or c < 0:
            return None  # one bad bucket makes the whole histogram suspect
        if c > 0:
            buckets.append((k, c))
    if not buckets:
        return None
    buckets.sort()
    total = sum(c for _, c in buckets)
    half = total / 2.0
    running = 0.0
    for i, (k, c) in enumerate(buckets):
        running += c
        if running > half:
            return k * scale
        if running == half:
            # Even split: the median lies between this bucket and the next one.
            nxt = buckets[i + 1][0] if i + 1 < len(buckets) else k
            return (k + nxt) / 2.0 * scale
    return buckets[-1][0] * scale


def ip_family(address: str | None) -> int | None:
    """4 or 6 for an IP literal (brackets allowed), None for a host name or garbage."""
    canon = canonical_ip(address)
    return None if canon is None else ipaddress.ip_address(canon).version


def canonical_ip(address: object) -> str | None:
    """The compressed canonical text of an IP literal, so IPv6 spellings compare equal and an
    IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, as dual-stack sockets report IPv4 peers) is its IPv4
    address."""
    if not isinstance(address, str):
        return None
    return _canonical_ip(address)


@functools.lru_cache(maxsize=1 << 16)
def _canonical_ip(address: str) -> str | None:
    # Cached: a crawl asks about the same few thousand addresses hundreds of thousands of times.
    text = address.strip().strip("[]")
    if "%" in text:
        text = text.split("%", 1)[0]  # zone ids never identify a remote host
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:10.1.0.10 is the IPv4 host 10.1.0.10
    return str(mapped or ip)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (0..100) of an already sorted, non-empty list."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac
