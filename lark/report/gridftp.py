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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from lark.report.transfers import Transfer

DATA_TYPES = frozenset({"RETR", "ERET", "STOR", "ESTO"})
LISTING_TYPES = frozenset({"LIST", "NLST", "MLSD"})
# Fields that may follow FILE. A token with another key is also accepted if well formed (newer servers
# add fields), but a repeated key ends the tail: the earlier one belongs to the file name.
TAIL_KEYS = ("BUFFER", "BLOCK", "NBYTES", "VOLUME", "STREAMS", "STRIPES", "DEST", "TYPE", "CODE", "TASKID",
             "retrans")
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


_HOUR_CACHE: dict[str, int] = {}


def parse_timestamp(text: str) -> tuple[float, bool]:
    """``YYYYmmddHHMMSS[.frac]`` (UTC) -> (epoch seconds, fraction was shorter than 6 digits).

    The fraction is a microsecond *count*: ``.2102`` is 2102 us (unpadded pre-2009 servers).
    """
    whole, dot, frac = text.partition(".")
    if len(whole) != 14 or not whole.isdigit():
        raise MalformedLine(f"timestamp {text!r} is not YYYYmmddHHMMSS[.us]")
    if dot and (not frac or len(frac) > 6 or not frac.isdigit()):
        raise MalformedLine(f"timestamp {text!r} has a bad microsecond part")
    hour = _HOUR_CACHE.get(whole[:10])
    if hour is None:
        try:
            d = _dt.datetime(int(whole[0:4]), int(whole[4:6]), int(whole[6:8]), int(whole[8:10]))
        except ValueError:
            raise MalformedLine(f"timestamp {text!r} is not a valid date") from None
        hour = _HOUR_CACHE[whole[:10]] = calendar.timegm(d.timetuple())
    minute, second = int(whole[10:12]), int(whole[12:14])
    if minute > 59 or second > 60:  # 60: a leap second
        raise MalformedLine(f"timestamp {text!r} has an invalid minute or second")
    micro = int(frac) if frac else 0
    return hour + minute * 60 + second + micro / 1e6, bool(dot) and len(frac) < 6


def _remote(dest: str) -> str:
    """``[ip]``, ``1[ip]``, ``2[ip,ip]`` or a bare address -> the first address, or 'unknown'."""
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


def parse_line(text: str, line: int = 0, stats: LineStats | None = None) -> Transfer | str:
    """One log line -> a :class:`Transfer`, or a string naming why it is not a data transfer
    (``"blank"``, ``"not_transfer"``, ``"other_event"``, ``"listing"``, ``"failed"``).

    Raises :class:`MalformedLine` when the line is a transfer record that cannot be used.
    ``stats`` (optional) counts the informational quirks (unpadded microseconds, unknown remote).
    """
    text = text.rstrip("\r\n")
    if not text.strip():
        return "blank"
    if "DATE=" not in text:
        return "not_transfer"
    f = split_fields(text)
    event = f.get("NL.EVNT")
    if event is not None and event != "FTP_INFO":
        return "other_event"
    kind = f.get("TYPE", "")
    if kind in LISTING_TYPES:
        return "listing"
    code = f.get("CODE")
    if code is not None and code != "226":
        return "failed"
    for key in ("START", "NBYTES"):
        if key not in f:
            raise MalformedLine(f"no {key}= field")
    end, unpadded_end = parse_timestamp(f["DATE"])
    start, unpadded_start = parse_timestamp(f["START"])
    if end < start:
        raise MalformedLine("DATE (the end) is before START")
    nbytes_text = f["NBYTES"]
    if not nbytes_text.isdigit():
        raise MalformedLine(f"NBYTES {nbytes_text!r} is not a byte count")
    remote = _remote(f.get("DEST", "[0.0.0.0]"))

    def small_int(key: str) -> int | None:
        v = f.get(key)
        return int(v) if v is not None and v.isdigit() else None

    if stats is not None:
        if unpadded_end or unpadded_start:
            stats.unpadded_microseconds += 1
        if remote == UNKNOWN_REMOTE:
            stats.unknown_remote += 1
    taskid = f.get("TASKID")
    return Transfer(start=start, end=end, nbytes=int(nbytes_text), user=f.get("USER") or "(unknown)",
                    server=f.get("HOST") or "(unknown)", remote=remote, kind=kind or "UNKNOWN",
                    file=f.get("FILE", ""), streams=small_int("STREAMS"), stripes=small_int("STRIPES"),
                    taskid=None if taskid in (None, "none") else taskid, line=line)


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
