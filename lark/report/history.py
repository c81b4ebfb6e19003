"""Job history -> :class:`HistoryJob`: ``condor_history -json`` output, history files, a live schedd.

Three readers, all streamed (one ad in memory at a time):

* :func:`iter_json_ads` reads ``condor_history -json`` output (a JSON array of objects; concatenated
  arrays and one-object-per-line JSON are accepted too) with an incremental decoder, never
  ``json.load`` of the whole file.
* :func:`iter_history_ads` reads a schedd history file (ads in the "old" ClassAd syntax, each followed
  by a ``*** Offset = .. ClusterId = ..`` banner) or ``condor_history -l`` output (ads separated by blank
  lines). This module only finds where one ad ends; each ad's text is parsed by the real ClassAd
  library (``classad2.parseNext``). ``classad2.parseAds`` on a file is not used: it reads the whole
  file into one string first.
* :func:`iter_schedd_ads` asks a schedd through ``htcondor2.Schedd.history``. The bindings return a
  list per call, so with a period the query is split into windows of ``window`` seconds of
  ``CompletionDate`` to keep memory bounded by one window.

:func:`jobs_from_ads` turns any of those into :class:`HistoryJob` values, counting missing and invalid
attributes instead of failing. :func:`read_history_file`, :func:`read_history_json` and
:func:`read_schedd_history` open the input and chain the two steps (the public entry points).
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from lark.report.errors import InputError, ReportError
from lark.report.inputs import open_binary

# What the report reads from a job ad. condor_history -attributes / Schedd.history(projection=) use
# this list plus the per-class LarkBytesIn<Class>/LarkBytesOut<Class> names, which are discovered.
HISTORY_ATTRIBUTES: tuple[str, ...] = (
    "ClusterId", "ProcId", "GlobalJobId", "Owner", "User", "AcctGroup", "AccountingGroup",
    "LarkBytesIn", "LarkBytesOut", "LarkNetworkType", "LarkSourceSite",
    "BytesSent", "BytesRecvd", "TransferInputSizeMB", "JobCurrentStartDate", "CompletionDate",
    "RemoteHost", "LastRemoteHost", "MachineAttrGLIDEIN_Site0", "MachineAttrLarkSite0",
    "NetworkInputMb", "NetworkOutputMb",
)
# Attributes whose absence is worth telling the admin about (older or non-Lark jobs).
TRACKED_MISSING: tuple[str, ...] = (
    "Owner", "AcctGroup", "LarkBytesIn", "LarkBytesOut", "LarkNetworkType", "LarkSourceSite", "BytesSent",
    "BytesRecvd", "TransferInputSizeMB", "JobCurrentStartDate", "CompletionDate", "LastRemoteHost",
    "MachineAttrGLIDEIN_Site0", "NetworkInputMb", "NetworkOutputMb",
)
# Counted as missing only when the ad has neither: a completed job has LastRemoteHost and no RemoteHost
# (the schedd removes it when the job leaves the machine), a running one RemoteHost.
HOST_ATTRIBUTES = ("LastRemoteHost", "RemoteHost")
_WANTED = frozenset(a.lower() for a in HISTORY_ATTRIBUTES)
_IN_PREFIX = "larkbytesin"
_OUT_PREFIX = "larkbytesout"

UNKNOWN = "(unknown)"
NONE = "(none)"


class HistoryJob(NamedTuple):
    """The network facts of one finished job, from the history (a running job's kernel record is
    :class:`lark.state.JobRecord`). Bytes are None when the job has no network counters.

    A NamedTuple rather than a frozen dataclass: a million of these are built per report, and tuple
    construction is several times cheaper.
    """

    job: str
    user: str
    group: str = NONE
    execute_site: str = UNKNOWN
    source_site: str = UNKNOWN
    network_type: str = NONE
    bytes_in: int | None = None
    bytes_out: int | None = None
    counters: str = ""  # "lark", "docker" (NetworkInputMb/OutputMb) or "" (none)
    classes: tuple[tuple[str, int, int], ...] = ()  # (class, bytes in, bytes out) from LarkBytesIn<Class>
    sandbox_in: int = 0  # BytesRecvd: sandbox/remote I/O bytes the shadow sent to the job
    sandbox_out: int = 0  # BytesSent
    input_mb: float = 0.0  # TransferInputSizeMB
    start: float | None = None  # JobCurrentStartDate
    end: float | None = None  # CompletionDate

    @property
    def bytes_total(self) -> int | None:
        if self.bytes_in is None and self.bytes_out is None:
            return None
        return (self.bytes_in or 0) + (self.bytes_out or 0)

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None or self.end < self.start:
            return None
        return self.end - self.start


@dataclass
class HistoryStats:
    """What the history readers saw; malformed ads keep (source, line, reason) for the first few."""

    ads: int = 0
    jobs: int = 0
    malformed: int = 0
    partial: int = 0
    outside_period: int = 0
    no_completion_date: int = 0
    missing: Counter = field(default_factory=Counter)
    invalid: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)  # lark / docker / none
    examples: list[tuple[str, int, str]] = field(default_factory=list)
    max_examples: int = 50

    def bad(self, source: str, line: int, reason: str, partial: bool = False) -> None:
        if partial:
            self.partial += 1
        else:
            self.malformed += 1
        if len(self.examples) < self.max_examples:
            self.examples.append((source, line, reason))

    def as_dict(self) -> dict[str, object]:
        return {"ads": self.ads, "jobs": self.jobs, "malformed": self.malformed, "partially_parsed": self.partial,
                "malformed_examples": [{"source": s, "line": n, "reason": r} for s, n, r in self.examples],
                "outside_period": self.outside_period, "without_completion_date": self.no_completion_date,
                "missing_attributes": {a: self.missing.get(a, 0) for a in TRACKED_MISSING},
                "invalid_attributes": dict(sorted(self.invalid.items())),
                "network_counters": {k: self.counters.get(k, 0) for k in ("lark", "docker", "none")}}


# ------------------------------------------------------------------------------------------------
# Ads -> HistoryJob


def _classad_items(ad: Any) -> Iterator[tuple[str, Any]]:
    """(name, evaluated value) of the attributes the report uses, from a classad2.ClassAd."""
    import classad2

    for name in ad.keys():
        low = name.lower()
        if low in _WANTED or low.startswith("larkbytes"):
            value = ad.get(name)
            if isinstance(value, classad2.ExprTree):
                # e.g. LarkBytesIn = LarkBytesInCampus + LarkBytesInWan: evaluate in the ad's scope
                value = ad.eval(name)
            if isinstance(value, classad2.Value):  # Undefined / Error
                value = None
            yield name, value


def _number(name: str, value: Any, stats: HistoryStats) -> float | None:
    if value is None:
        return None
    t = type(value)
    if (t is int or t is float) and value >= 0:  # NaN fails >= 0 too
        return value
    if t is not bool and isinstance(value, int | float) and value >= 0:  # int/float subclasses
        return value
    # JSON renders unevaluated expressions as "/Expr(...)/" strings: not a number we can use
    stats.invalid[name] += 1
    return None


def _text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return str(value)


def _site_of_host(host: str) -> str:
    """slot1@node7.unl.edu -> unl.edu (the domain); a single-label or IP host is its own site."""
    host = host.rpartition("@")[2]
    if not host or re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", host):
        return host or UNKNOWN
    labels = host.split(".")
    return ".".join(labels[1:]) if len(labels) >= 3 else host


# How to read an ad with a given attribute-name sequence: which names are plain attributes (and their
# lower-case form), which are per-class counters, and which tracked attributes it lacks. Ads from one
# source nearly always share one sequence (condor_history prints a projection in a fixed order), so
# a plan is computed once and reused; this is most of the per-ad work saved on a million ads.
class _Plan(NamedTuple):
    plain: tuple[tuple[str, str], ...]  # (name as spelt, lower-case name)
    absent: tuple[str, ...]  # tracked attributes not in the ad
    tracked: tuple[tuple[str, str], ...]  # (tracked attribute, lower-case name) present in the ad
    # per class key, sorted: (class as spelt, in-counter name or None, out-counter name or None, and the
    # names to report an unusable value under)
    classes: tuple[tuple[str, str | None, str | None, str, str], ...] = ()


_PLANS: dict[tuple[str, ...], _Plan] = {}
_TRACKED_LOWER = tuple((a, a.lower()) for a in TRACKED_MISSING if a not in HOST_ATTRIBUTES)


def _plan(names: tuple[str, ...]) -> _Plan:
    plain, cls_in, cls_out = [], [], []
    for name in names:
        low = name.lower()
        if low.startswith(_OUT_PREFIX) and len(low) > len(_OUT_PREFIX):
            cls_out.append((name, low[len(_OUT_PREFIX):], name[len(_OUT_PREFIX):]))
        elif low.startswith(_IN_PREFIX) and len(low) > len(_IN_PREFIX):
            cls_in.append((name, low[len(_IN_PREFIX):], name[len(_IN_PREFIX):]))
        else:
            plain.append((name, low))
    lows = {low for _, low in plain}
    by_in = {key: (disp, name) for name, key, disp in cls_in}  # the last of two spellings wins
    by_out = {key: (disp, name) for name, key, disp in cls_out}
    classes = []
    for key in sorted(by_in.keys() | by_out.keys()):
        disp_in, name_in = by_in.get(key, ("", None))
        disp_out, name_out = by_out.get(key, ("", None))
        classes.append((disp_in or disp_out, name_in, name_out, "LarkBytesIn" + (disp_in or disp_out),
                        "LarkBytesOut" + (disp_out or disp_in)))
    plan = _Plan(tuple(plain),
                 tuple(a for a, low in _TRACKED_LOWER if low not in lows),
                 tuple((a, low) for a, low in _TRACKED_LOWER if low in lows), tuple(classes))
    if len(_PLANS) > 10_000:  # bounded: a source with ever-changing attribute sets must not grow it
        _PLANS.clear()
    _PLANS[names] = plan
    return plan


def job_from_mapping(ad: dict[str, Any], stats: HistoryStats, line: int = 0) -> HistoryJob:
    """Build a :class:`HistoryJob` from {attribute: value}; attribute names are case-insensitive."""
    names = tuple(ad)
    plan = _PLANS.get(names) or _plan(names)
    v = {low: ad[name] for name, low in plan.plain}
    missing = stats.missing
    for attr in plan.absent:
        missing[attr] += 1
    if None in v.values():  # an attribute present without a value (JSON null) counts as missing
        for attr, low in plan.tracked:
            if v[low] is None:
                missing[attr] += 1
    get = v.get
    # strings: the common case (a non-empty str) inline, anything else through _text
    x = get("owner")
    user = x if type(x) is str and x else _text(x) or _text(get("user")) or UNKNOWN
    x = get("acctgroup")
    group = x if type(x) is str and x else _text(x)
    if not group:
        acct = _text(get("accountinggroup"))
        group = (acct.rpartition(".")[0] or acct) if acct else NONE
    host = get("remotehost") or get("lastremotehost")
    if not host:
        missing["LastRemoteHost"] += 1  # see HOST_ATTRIBUTES
    x = get("machineattrglidein_site0")
    site = x if type(x) is str and x else _text(x) or _text(get("machineattrlarksite0"))
    if not site:
        host = _text(host)
        site = _site_of_host(host) if host else UNKNOWN

    cluster, proc = get("clusterid"), get("procid")
    jid = f"{cluster}.{proc}" if cluster is not None and proc is not None else f"(line {line})"
    gjid = get("globaljobid")
    if type(gjid) is str and "#" in gjid:
        jid = f"{gjid.partition('#')[0]}#{jid}"

    # numbers: the common case (a non-negative int or float) inline, anything else through _number,
    # which counts it as unusable; a million ads make the saved calls worth the repetition
    x = get("larkbytesin")
    b_in = x if (type(x) is int or type(x) is float) and x >= 0 else _number("LarkBytesIn", x, stats)
    x = get("larkbytesout")
    b_out = x if (type(x) is int or type(x) is float) and x >= 0 else _number("LarkBytesOut", x, stats)
    classes: list[tuple[str, int, int]] = []
    for disp, name_in, name_out, label_in, label_out in plan.classes:
        # the common case (a non-negative int) inline; anything else through _number, which counts it
        x = ad[name_in] if name_in is not None else None
        ci = x if type(x) is int and x >= 0 else _number(label_in, x, stats)
        x = ad[name_out] if name_out is not None else None
        co = x if type(x) is int and x >= 0 else _number(label_out, x, stats)
        if ci is not None or co is not None:
            classes.append((disp, int(ci or 0), int(co or 0)))
    if b_in is not None or b_out is not None:
        counters = "lark"
    elif classes:
        # per-class counters without totals: the totals are their sums
        counters = "lark"
        b_in = sum(c[1] for c in classes)
        b_out = sum(c[2] for c in classes)
    else:
        counters = ""
        mb_in = _number("NetworkInputMb", get("networkinputmb"), stats)
        mb_out = _number("NetworkOutputMb", get("networkoutputmb"), stats)
        if mb_in is not None or mb_out is not None:
            counters = "docker"  # docker universe, MB = 10^6 bytes
            b_in = round(mb_in * 1e6) if mb_in is not None else None
            b_out = round(mb_out * 1e6) if mb_out is not None else None
    stats.counters[counters or "none"] += 1

    x = get("jobcurrentstartdate")
    start = x if (type(x) is int or type(x) is float) and x >= 0 else _number("JobCurrentStartDate", x, stats)
    x = get("completiondate")
    end = x if (type(x) is int or type(x) is float) and x >= 0 else _number("CompletionDate", x, stats)
    # 0 means "never" in old ads and in jobs that did not complete: as good as missing
    if start == 0:
        missing["JobCurrentStartDate"] += 1
    if end == 0:
        missing["CompletionDate"] += 1
    x = get("bytesrecvd")
    recvd = x if (type(x) is int or type(x) is float) and x >= 0 else _number("BytesRecvd", x, stats)
    x = get("bytessent")
    sent = x if (type(x) is int or type(x) is float) and x >= 0 else _number("BytesSent", x, stats)
    x = get("transferinputsizemb")
    input_mb = x if (type(x) is int or type(x) is float) and x >= 0 else _number("TransferInputSizeMB", x, stats)
    x = get("larksourcesite")
    source = x if type(x) is str and x else _text(x) or UNKNOWN
    x = get("larknetworktype")
    net_type = x if type(x) is str and x else _text(x) or NONE
    return HistoryJob(  # positional: measurably cheaper than keywords at a million records
        jid, user, group, site, source, net_type,
        None if b_in is None else int(b_in), None if b_out is None else int(b_out), counters, tuple(classes),
        int(recvd) if recvd else 0, int(sent) if sent else 0, float(input_mb) if input_mb else 0.0,
        start or None, end or None,  # 0 means "never" in old ads
    )


def jobs_from_ads(ads: Iterable[tuple[int, Any]], stats: HistoryStats, start: float | None = None,
                  until: float | None = None) -> Iterator[HistoryJob]:
    """(line, ad) pairs (dicts from JSON or classad2.ClassAd) -> HistoryJob, filtered by CompletionDate
    in [start, until) when a period is given (jobs without a CompletionDate are then left out)."""
    dated = start is not None or until is not None
    for line, ad in ads:
        stats.ads += 1
        job = job_from_mapping(ad if isinstance(ad, dict) else dict(_classad_items(ad)), stats, line)
        if dated:
            if job.end is None:
                stats.no_completion_date += 1
                continue
            if (start is not None and job.end < start) or (until is not None and job.end >= until):
                stats.outside_period += 1
                continue
        stats.jobs += 1
        yield job


# ------------------------------------------------------------------------------------------------
# Readers


_SKIP = re.compile(r"[\s,]*")
_STRING_SLACK = 1 << 20  # an unterminated string this close to the buffer end may just be cut off
_TOKEN_SLACK = 64


def iter_json_ads(stream: BinaryIO, source: str, stats: HistoryStats, progress: Any = None,
                  chunk_size: int = 1 << 20) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream the objects of ``condor_history -json`` output: (line of the object's '{', object).

    The buffer holds one chunk plus the object being decoded. A syntax error is counted as a
    malformed ad with its line number, and reading resumes at the next line starting with '{'.
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    tick = getattr(progress, "tick", None)
    buf, pos, line, eof, count = "", 0, 1, False, 0

    def refill() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        data = stream.read(chunk_size)
        if not data:
            eof = True
            buf = buf[pos:] + utf8.decode(b"", final=True)
        else:
            buf = buf[pos:] + utf8.decode(data)
        pos = 0
        return True

    while True:
        m = _SKIP.match(buf, pos)
        end = m.end()
        line += buf.count("\n", pos, end)
        pos = end
        if pos >= len(buf):
            if not refill():
                return
            continue
        ch = buf[pos]
        if ch in "[]":  # array brackets; several arrays back to back are fine (concatenated outputs)
            pos += 1
            continue
        try:
            obj, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as err:
            slack = _STRING_SLACK if err.msg.startswith("Unterminated string") else _TOKEN_SLACK
            if len(buf) - err.pos < slack and refill():
                continue  # probably an object cut by the chunk boundary: read more and retry
            err_line = line + buf.count("\n", pos, err.pos)
            stats.bad(source, err_line, f"JSON syntax error: {err.msg}")
            # resynchronise on the next object, which condor_history starts on a line of its own
            search = pos + 1
            while True:
                nxt = buf.find("\n{", search)
                if nxt >= 0:
                    line += buf.count("\n", pos, nxt + 1)
                    pos = nxt + 1
                    break
                keep = max(len(buf) - 1, pos)  # the last character may be the "\n" of a "\n{"
                line += buf.count("\n", pos, keep)
                pos = keep
                if not refill():
                    return
                search = 0
            continue
        obj_line = line
        line += buf.count("\n", pos, end)
        pos = end
        if not isinstance(obj, dict):
            stats.bad(source, obj_line, f"expected a JSON object (an ad), got {type(obj).__name__}")
            continue
        count += 1
        if tick is not None and not count & 0xFFF:
            tick(4096)
        yield obj_line, obj


def iter_history_ads(stream: BinaryIO, source: str, stats: HistoryStats,
                     progress: Any = None) -> Iterator[tuple[int, Any]]:
    """Stream (first line, classad2.ClassAd) from a history file or ``condor_history -l`` output.

    An ad ends at a banner line (``***...``) or a blank line. Its text goes to ``classad2.parseNext``
    (the real parser). That parser silently stops at the first bad line, so an ad that yields fewer
    attributes than it has lines is counted as partially parsed (and still used); one that yields
    nothing is malformed. A last ad without its banner in a file that has banners is a write in
    progress and is left out.
    """
    import classad2

    old = classad2.ParserType.Old
    tick = getattr(progress, "tick", None)
    lines: list[bytes] = []
    first = 0
    banners = False
    count = 0

    def parse(chunk: list[bytes], at: int) -> Any:
        text = b"".join(chunk).decode("utf-8", "replace")
        try:
            ad = classad2.parseNext(text, old)
        except classad2.ClassAdException as err:
            stats.bad(source, at, f"ClassAd parse error: {err}")
            return None
        n_attr = sum(1 for raw in chunk if not raw.lstrip().startswith(b"#"))
        if ad is None or len(ad) == 0:
            stats.bad(source, at, "no ClassAd attribute could be parsed")
            return None
        if len(ad) < n_attr:
            stats.bad(source, at, f"only {len(ad)} of {n_attr} attribute lines parsed (syntax error)",
                      partial=True)
        return ad

    lineno = 0
    for raw in stream:
        lineno += 1
        if raw.startswith(b"***"):
            banners = True
        elif raw.strip():
            if not lines:
                first = lineno
            lines.append(raw)
            continue
        if lines:
            ad = parse(lines, first)
            lines = []
            if ad is not None:
                count += 1
                if tick is not None and not count & 0x3FF:
                    tick(1024)
                yield first, ad
    if lines:
        if banners:
            stats.bad(source, first, "last ad has no banner line (history file being written?); skipped")
        else:
            ad = parse(lines, first)
            if ad is not None:
                yield first, ad


def period_constraint(start: float | None, until: float | None) -> str | None:
    parts = []
    if start is not None:
        parts.append(f"CompletionDate >= {int(start)}")
    if until is not None:
        parts.append(f"CompletionDate < {int(math.ceil(until))}")
    return " && ".join(parts) or None


def _and(*clauses: str | None) -> str | None:
    live = [c for c in clauses if c]
    if not live:
        return None
    return " && ".join(f"({c})" for c in live) if len(live) > 1 else live[0]


def _history(schedd: Any, constraint: str | None, projection: Sequence[str], match: int,
             since: int | str | None) -> list[Any]:
    import htcondor2

    try:
        return schedd.history(constraint, list(projection), match, since)
    except htcondor2.HTCondorException as err:
        raise InputError("schedd", f"history query failed: {err}") from err


def iter_schedd_ads(schedd: Any, constraint: str | None = None, projection: Sequence[str] = HISTORY_ATTRIBUTES,
                    since: int | str | None = None, match: int = -1, start: float | None = None,
                    until: float | None = None, window: float | None = 86400.0) -> Iterator[tuple[int, Any]]:
    """(0, ClassAd) from ``schedd.history`` (an ``htcondor2.Schedd`` or anything with that method).

    With both ``start`` and ``until`` and a ``window``, one query per window of CompletionDate, so
    only one window's ads are held at a time (the bindings return whole lists). ``match`` limits the
    total. ``since`` is passed through: a cluster id, "cluster.proc", or an expression at which the
    schedd stops scanning backwards.
    """
    remaining = match
    if start is not None and until is not None and window:
        a = float(start)
        while a < until and remaining != 0:
            b = min(a + window, until)
            ads = _history(schedd, _and(constraint, period_constraint(a, b)), projection, remaining, since)
            for ad in ads:
                yield 0, ad
            if remaining > 0:
                remaining = max(0, remaining - len(ads))
            a = b
        return
    for ad in _history(schedd, _and(constraint, period_constraint(start, until)), projection, match, since):
        yield 0, ad


def discover_class_attributes(schedd: Any, constraint: str | None = None, sample: int = 50) -> list[str]:
    """Per-class counter names (``LarkBytesIn<Class>``/``LarkBytesOut<Class>``) seen in recent Lark jobs.

    A projection must name attributes, so the class names are learnt from a small unprojected sample.
    """
    names: set[str] = set()
    for ad in _history(schedd, _and(constraint, "LarkBytesIn =!= undefined"), [], sample, None):
        for name in ad.keys():
            low = name.lower()
            if (low.startswith(_IN_PREFIX) and len(low) > len(_IN_PREFIX)) or \
                    (low.startswith(_OUT_PREFIX) and len(low) > len(_OUT_PREFIX)):
                names.add(name)
    return sorted(names)


def class_attributes(classes: Iterable[str]) -> list[str]:
    """Class names (e.g. ``off_campus`` or ``OffCampus``) -> their LarkBytesIn/Out attribute pair."""
    out: list[str] = []
    for c in classes:
        suffix = "".join(p[:1].upper() + p[1:] for p in c.split("_") if p)
        out += [f"LarkBytesIn{suffix}", f"LarkBytesOut{suffix}"]
    return out


def locate_schedd(pool: str | None = None, name: str | None = None) -> Any:
    """The local schedd, or ``name`` located through the collector ``pool`` (host[:port])."""
    try:
        import htcondor2
    except ImportError as err:  # pragma: no cover - the bindings are a dependency
        raise ReportError("reading a schedd needs the htcondor Python bindings (htcondor2)") from err
    try:
        if pool is None and name is None:
            return htcondor2.Schedd()
        ad = htcondor2.Collector(pool).locate(htcondor2.DaemonType.Schedd, name)
        return htcondor2.Schedd(ad)
    except (htcondor2.HTCondorException, ValueError, OSError) as err:
        where = f"schedd {name or '(the only one)'} via collector {pool or '(local pool)'}" if pool or name \
            else "local schedd"
        raise InputError(where, f"cannot locate: {err}") from err


# ------------------------------------------------------------------------------------------------
# Public one-call entry points (open + parse + convert)


def read_history_file(path: str | Path, stats: HistoryStats | None = None, start: float | None = None,
                      until: float | None = None, progress: Any = None) -> Iterator[HistoryJob]:
    """HistoryJobs from a schedd history file (banner format; .gz/.bz2/.xz ok; "-" = stdin)."""
    stats = stats if stats is not None else HistoryStats()
    with open_binary(path, progress) as (stream, label):
        yield from jobs_from_ads(iter_history_ads(stream, label, stats, progress), stats, start, until)


def read_history_json(path: str | Path, stats: HistoryStats | None = None, start: float | None = None,
                      until: float | None = None, progress: Any = None) -> Iterator[HistoryJob]:
    """HistoryJobs from ``condor_history -json`` output (a file, or "-" for stdin)."""
    stats = stats if stats is not None else HistoryStats()
    with open_binary(path, progress) as (stream, label):
        yield from jobs_from_ads(iter_json_ads(stream, label, stats, progress), stats, start, until)


def read_schedd_history(schedd: Any = None, constraint: str | None = None, since: int | str | None = None,
                        match: int = -1, start: float | None = None, until: float | None = None,
                        classes: Iterable[str] = (), stats: HistoryStats | None = None,
                        window: float | None = 86400.0, discover: bool = True) -> Iterator[HistoryJob]:
    """HistoryJobs from a live schedd (default: the local one) via ``htcondor2.Schedd.history``."""
    stats = stats if stats is not None else HistoryStats()
    if schedd is None:
        schedd = locate_schedd()
    projection = list(HISTORY_ATTRIBUTES) + class_attributes(classes)
    if discover:
        projection += [a for a in discover_class_attributes(schedd, constraint) if a not in projection]
    ads = iter_schedd_ads(schedd, constraint, projection, since, match, start, until, window)
    yield from jobs_from_ads(ads, stats, start, until)
