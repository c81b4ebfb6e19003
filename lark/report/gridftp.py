"""GridFTP server transfer logs (``log_transfer`` / "Transfer stats:" lines) -> :class:`Transfer`.

Line format written by globus-gridftp-server (``globus_i_gfs_log_transfer``)::

    DATE=%Y%m%d%H%M%S.%06d HOST=.. PROG=globus-gridftp-server NL.EVNT=FTP_INFO START=.. USER=.. FILE=..
    BUFFER=.. BLOCK=.. NBYTES=.. VOLUME=/ STREAMS=.. STRIPES=.. DEST=[ip] TYPE=RETR CODE=226 TASKID=..
    [retrans=..]

Traps handled here (see the peers-janus-gridftp reference note, section D.1):

* ``DATE`` is the transfer's **end** time and ``START`` its start, both UTC. Lines are written at
  completion, so a log is ordered by end, not start (sessions re-sort).
* Servers before 2009 printed microseconds unpadded: ``.2102`` means 2102 us, not 0.2102 s. The
  fraction is therefore always read as an integer count of microseconds (a padded ``.002102`` is the
  same 2102 us).
* ``FILE`` may contain spaces and ``=``. It runs from ``FILE=`` up to the longest suffix of distinct
  well-formed ``KEY=value`` fields that ends the line, stopping once ``BUFFER`` (the first field after
  FILE) is consumed; so ``FILE=/a b=c BUFFER=..`` gives ``/a b=c``.
* ``DEST=[0.0.0.0]`` means the remote address was unknown; older logs write ``DEST=1[ip]`` (a count
  before the bracket). Unknown remotes are kept and counted, and group together per user and server.
* The same line may appear in the server's main log after a ``Transfer stats:`` prefix; anything
  before ``DATE=`` is ignored, and lines without ``DATE=`` are other log lines (ignored, counted).
* Only successful transfers are logged (``CODE=226``); a different CODE is counted as failed and left
  out. ``LIST``/``NLST``/``MLSD`` lines are directory listings, counted and left out of transfer
  statistics. Striped transfers appear once (stripe node 0 writes the line).
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from lark.report.transfers import Transfer

LISTING_TYPES = frozenset({"LIST", "NLST", "MLSD"})  # directory listings, not data transfers
UNKNOWN_REMOTE = "unknown"


class MalformedLine(ValueError):
    """A line that looks like a transfer record but cannot be used; the message is the reason."""


@dataclass
class LineStats:
    """What a reader saw. Line numbers of malformed lines are kept for the first ``max_examples``."""

    lines: int = 0
    transfers: int = 0
    listings: int = 0
    failed: int = 0
    other_events: int = 0
    not_transfer: int = 0
    outside_period: int = 0
    malformed: int = 0
    unpadded_microseconds: int = 0
    unknown_remote: int = 0
    zero_duration: int = 0
    examples: list[tuple[str, int, str]] = field(default_factory=list)
    max_examples: int = 50

    def bad(self, source: str, line: int, reason: str) -> None:
        self.malformed += 1
        if len(self.examples) < self.max_examples:
            self.examples.append((source, line, reason))

    def as_dict(self) -> dict[str, object]:
        return {"lines": self.lines, "transfers": self.transfers, "listings": self.listings,
                "failed": self.failed, "other_events": self.other_events, "not_transfer_lines": self.not_transfer,
                "outside_period": self.outside_period, "malformed": self.malformed,
                "malformed_examples": [{"source": s, "line": n, "reason": r} for s, n, r in self.examples],
                "unpadded_microseconds": self.unpadded_microseconds, "unknown_remote": self.unknown_remote,
                "zero_duration": self.zero_duration}


_MINUTE_CACHE: dict[str, int] = {}  # "YYYYmmddHHMM" -> epoch seconds; lines share minutes


def _minute(prefix: str, text: str) -> int:
    if not (prefix.isascii() and prefix.isdigit()):
        raise MalformedLine(f"timestamp {text!r} is not YYYYmmddHHMMSS[.us]")
    try:
        d = _dt.datetime(int(prefix[0:4]), int(prefix[4:6]), int(prefix[6:8]), int(prefix[8:10]),
                         int(prefix[10:12]))
    except ValueError:
        raise MalformedLine(f"timestamp {text!r} is not a valid date and time") from None
    if len(_MINUTE_CACHE) > 500_000:  # bounded: a year of minutes
        _MINUTE_CACHE.clear()
    epoch = _MINUTE_CACHE[prefix] = calendar.timegm(d.timetuple())
    return epoch


def parse_gridftp_time(text: str) -> tuple[float, bool]:
    """``YYYYmmddHHMMSS[.frac]`` (UTC) -> (epoch seconds, fraction was shorter than 6 digits).

    The fraction is a microsecond *count*: ``.2102`` is 2102 us (unpadded pre-2009 servers).
    """
    whole, dot, frac = text.partition(".")
    if len(whole) != 14:
        raise MalformedLine(f"timestamp {text!r} is not YYYYmmddHHMMSS[.us]")
    minute = _MINUTE_CACHE.get(whole[:12])
    if minute is None:
        minute = _minute(whole[:12], text)
    sec = whole[12:14]
    if not (sec.isascii() and sec.isdigit()) or int(sec) > 60:  # 60: a leap second
        raise MalformedLine(f"timestamp {text!r} has an invalid second")
    if not dot:
        return float(minute + int(sec)), False
    if not 0 < len(frac) <= 6 or not (frac.isascii() and frac.isdigit()):
        raise MalformedLine(f"timestamp {text!r} has a bad microsecond part")
    return minute + int(sec) + int(frac) / 1e6, len(frac) < 6


def _remote(dest: str) -> str:
    """``[ip]``, ``1[ip]``, ``2[ip,ip]`` or a bare address -> the first address, or 'unknown'."""
    if dest[:1] == "[" and dest[-1:] == "]" and "," not in dest and " " not in dest:
        inner = dest[1:-1]
        return inner if inner and inner != "0.0.0.0" and inner != "::" else UNKNOWN_REMOTE
    if "[" in dest:
        count, _, rest = dest.partition("[")
        if not rest.endswith("]") or (count and not count.isdigit()):
            raise MalformedLine(f"DEST {dest!r} is not [address]")
        dest = rest[:-1]
    first = dest.replace(" ", ",").split(",")[0].strip()
    if not first or first in ("0.0.0.0", "::"):
        return UNKNOWN_REMOTE
    return first


def _key_ok(key: str) -> bool:
    return bool(key) and key[0].isalpha() and key.replace(".", "").replace("_", "").isalnum()


def split_fields(text: str) -> dict[str, str]:
    """Split one transfer line into its fields (FILE kept whole, see the module docstring)."""
    pos = text.find("DATE=")
    while pos > 0 and text[pos - 1] not in " \t:":
        pos = text.find("DATE=", pos + 1)
    if pos < 0:
        raise MalformedLine("no DATE= field")
    text = text[pos:]
    fields: dict[str, str] = {}
    fpos = text.find(" FILE=")
    head = text if fpos < 0 else text[:fpos]
    for tok in head.split():
        key, eq, value = tok.partition("=")
        if not eq:
            raise MalformedLine(f"field {tok!r} is not KEY=value")
        fields[key] = value
    if fpos < 0:
        return fields
    tokens = text[fpos + 6:].split(" ")
    j = len(tokens)
    tail: dict[str, str] = {}
    while j > 1:
        key, eq, value = tokens[j - 1].partition("=")
        if not eq or not _key_ok(key) or key in tail:
            break
        tail[key] = value
        j -= 1
        if key == "BUFFER":
            break
    fields["FILE"] = " ".join(tokens[:j])
    fields.update(tail)
    return fields


# The layout every globus-gridftp-server since 2016 writes (TASKID, optional retrans). FILE is greedy, so
# the match backtracks to the last " BUFFER=" after which the whole standard tail fits: the same FILE as
# the general rule. Anything else (older servers, extra fields) takes the general path.
_STANDARD = re.compile(
    r"DATE=(\S*) HOST=(\S*) PROG=\S* NL\.EVNT=(\S*) START=(\S*) USER=(\S*) FILE=(.*) BUFFER=\S* BLOCK=\S* "
    r"NBYTES=(\S*) VOLUME=\S* STREAMS=(\S*) STRIPES=(\S*) DEST=(\S*) TYPE=(\S*) CODE=(\S*)"
    r"(?: TASKID=(\S*))?(?: retrans=\S*)?[ \t]*$")
_FIELD_ORDER = ("DATE", "HOST", "NL.EVNT", "START", "USER", "FILE", "NBYTES", "STREAMS", "STRIPES", "DEST", "TYPE",
                "CODE", "TASKID")


def _fields(text: str) -> tuple[str | None, ...]:
    pos = text.find("DATE=")
    if pos >= 0 and (pos == 0 or text[pos - 1] in " \t:"):
        m = _STANDARD.match(text, pos)
        if m is not None:
            return m.groups()
    f = split_fields(text)
    return tuple(f.get(k) for k in _FIELD_ORDER)


def parse_line(text: str, line: int = 0, stats: LineStats | None = None) -> Transfer | str:
    """One log line -> a :class:`Transfer`, or a string naming why it is not a data transfer
    (``"blank"``, ``"not_transfer"``, ``"other_event"``, ``"listing"``, ``"failed"``).

    Raises :class:`MalformedLine` when the line is a transfer record that cannot be used.
    ``stats`` (optional) counts the informational quirks (unpadded microseconds, unknown remote).
    """
    text = text.rstrip("\r\n")
    if "DATE=" not in text:
        return "not_transfer" if text.strip() else "blank"
    date, host, event, start_text, user, file, nbytes_text, streams, stripes, dest, kind, code, taskid = \
        _fields(text)
    if event is not None and event != "FTP_INFO":
        return "other_event"
    if kind in LISTING_TYPES:
        return "listing"
    if code is not None and code != "226":
        return "failed"
    if start_text is None:
        raise MalformedLine("no START= field")
    if nbytes_text is None:
        raise MalformedLine("no NBYTES= field")
    end, unpadded_end = parse_gridftp_time(date or "")
    start, unpadded_start = parse_gridftp_time(start_text)
    if end < start:
        raise MalformedLine("DATE (the end) is before START")
    if not nbytes_text.isdigit():
        raise MalformedLine(f"NBYTES {nbytes_text!r} is not a byte count")
    remote = _remote(dest or "[0.0.0.0]")
    if stats is not None:
        if unpadded_end or unpadded_start:
            stats.unpadded_microseconds += 1
        if remote == UNKNOWN_REMOTE:
            stats.unknown_remote += 1
    return Transfer(start, end, int(nbytes_text), user or "(unknown)", host or "(unknown)", remote,
                    kind or "UNKNOWN", file or "", int(streams) if streams and streams.isdigit() else None,
                    int(stripes) if stripes and stripes.isdigit() else None,
                    None if taskid in (None, "none") else taskid, line)


def iter_gridftp(stream: BinaryIO, source: str, stats: LineStats, start: float | None = None,
                 until: float | None = None, progress: object | None = None) -> Iterator[Transfer]:
    """Stream data transfers from a binary log stream, one line at a time (memory stays flat).

    Bytes that are not UTF-8 (file names from old servers) are replaced, not fatal. Transfers whose
    end (DATE) lies outside [start, until) are counted as outside the period and skipped.
    """
    tick = getattr(progress, "tick", None)
    lineno = 0
    for raw in stream:
        lineno += 1
        stats.lines += 1
        if tick is not None and not lineno & 0xFFF:
            tick(4096)
        try:
            result = parse_line(raw.decode("utf-8", "replace"), lineno, stats)
        except MalformedLine as err:
            stats.bad(source, lineno, str(err))
            continue
        if isinstance(result, str):
            if result == "listing":
                stats.listings += 1
            elif result == "failed":
                stats.failed += 1
            elif result == "other_event":
                stats.other_events += 1
            elif result == "not_transfer":
                stats.not_transfer += 1
            continue
        if (start is not None and result.end < start) or (until is not None and result.end >= until):
            stats.outside_period += 1
            continue
        if result.end == result.start:
            stats.zero_duration += 1
        stats.transfers += 1
        yield result
