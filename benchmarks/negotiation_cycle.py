"""Negotiation cycle time on the real HTCondor negotiator with and without Lark's matchmaking policy.

    .venv/bin/python benchmarks/negotiation_cycle.py [--slots 1000] [--jobs 1000] [--sites 100]
                     [--cycles 3] [--rounds 2] [--variants A,B,Bs,Ba,C,D,D10,F]

Goal (issue): with >= 1,000 slots and >= 1,000 idle jobs the cycle with Lark's attributes and policy
takes <= 1.1 x the cycle without them. Needs root; about 8 minutes with the defaults.

**Pool.** The real-pool harness (tests/pool/harness.py): HTCondor 25.x from the cached image, in its
own overlay and network namespace ``larkn<x>-pool`` (``<x>``: one random character per run). One
startd with ``--slots`` static 1-core slots, ``UPDATE_INTERVAL = 60``, ``COLLECTOR.CLASSAD_LIFETIME =
900`` (the harness's base config sets 20 s for its spider tests, which would expire slot ads refreshed
every 60 s), ``NEGOTIATE_ALL_JOBS_IN_CLUSTER = True``, ``SCHEDD_ENABLE_PER_USER_MATCH_LIMITS = False``,
``NEGOTIATOR_UPDATE_INTERVAL = 5``, ``NEGOTIATOR_DEBUG = D_MATCH D_SUB_SECOND`` (millisecond
timestamps), ``MAX_NEGOTIATOR_LOG = 200 Mb`` (rotation is handled anyway). The harness's base
config (with ``ENABLE_KERNEL_TUNING = False``) is left as it is.

**Worst case on every cycle.** ``--jobs`` idle jobs that can never match, each its own autocluster
and its own request (``NEGOTIATE_ALL_JOBS_IN_CLUSTER``, ``NEGOTIATOR_RESOURCE_REQUEST_LIST_SIZE =
5000``: with the default 200 the schedd stopped after 979 of 1000 jobs). The negotiator evaluates the
slot's Requirements (``START && WithinResourceLimits``) first and the job's only if those hold
(``symmetricMatch = RIGHT.requirements && LEFT.requirements``; checked: with the failing clause in
START the jobs' Requirements cost nothing). So the failing clause is the job's: its Requirements are
condor_submit's defaults, then (D only) the job-side Lark clause, then ``(MY.LarkBenchId =?= -1 -
$(Process))``, false for every job and textually different per job. Everything else is true for every
job x slot pair (checked with classad2 on the live ads before the first measurement): the slot's
Requirements with the Lark clause in full, and the job's Requirements up to that last clause. Each
request scans every slot and every pair evaluates both sides in full: ``jobs x slots`` per cycle.

**Variants** (config files after the drop-in order; jobs are submitted once, on hold, and released
per variant):

* ``A``  baseline: plain START, no Lark attributes in slots, jobs without Lark attributes.
* ``B``  the drop-in ``condor_config.d/70-lark-matchmaking.conf`` verbatim; its ``lark-links`` cron
  replaced by a static cron that prints ``lark.links.records.cron_output()`` for ``--sites`` remote
  sites (exactly what the real cron publishes: ``LarkSite``, the nested ``LarkLinks`` record with
  Mbps/Loss/MeasuredAt/Quality, ``LarkLinksUpdatedAt``, ``LarkLinksCount``). Jobs carry
  ``LarkSourceSite`` (spread over the sites) and ``LarkInputBytes`` of 2-20 GB, above
  ``LARK_SMALL_INPUT_BYTES``, on good links: the breaker takes its link-lookup branch every time.
* ``Bs`` as B with 1 MB-1 GB inputs: the breaker returns at its first clause (typical small jobs).
* ``Ba`` attributes only: B's slot data and jobs, but START without the Lark clause (what carrying
  the record costs by itself).
* ``C``  design alternative, precomputed limit: the cron publishes one flat record
  ``LarkMaxInputBytes = [ <site> = <bytes>; ... ]`` (the largest input the breaker lets through
  from that site: max(LARK_SMALL_INPUT_BYTES, Mbps * 1e6 / 8 * LARK_MAX_TRANSFER_SECONDS) for a good
  link, LARK_SMALL_INPUT_BYTES for a stale, lossy or too old one, 1e30 for the local site) and no
  ``LarkLinks``; ``LarkInputTransferOK`` is one lookup, and the rank helper reads the same record.
* ``D``  design alternative, job side: flat slot attributes ``LarkMaxInputBytes_<site>`` and the
  breaker moved into the job's Requirements as the submit transform would write it,
  ``(TARGET.LarkMaxInputBytes_<site> ?: 1.0e30) >= MY.LarkInputBytes``; START has no Lark clause.
* ``D10`` D with only the 10 slowest links published; jobs from the other sites get the fallback
  (``LARK_UNKNOWN_LINK_POLICY = allow``), as if the cron published only the links that restrict.
* ``F``  floor of a START-side policy: A plus one trivial START clause reading a job attribute,
  ``((TARGET.LarkInputBytes ?: 0) >= 0)``, and no Lark data in slots.

The semantics of C and D are checked against the shipped breaker on synthetic links (good, stale,
lossy, old, zero throughput, unknown and local sites) and job sizes around every threshold.

**Measurement.** Variants are visited ``--rounds`` times, in ABBA order (the second round reversed)
so drift cancels; on each visit the collector and the startd are restarted (clean RSS, no attributes
left from the previous variant), the script waits until every slot shows the variant's data, and
then times ``--cycles`` negotiation cycles that start after that point and carry a request for every
job. Per cycle: wall time from the NegotiatorLog's sub-second timestamps (Started/Finished lines,
phase 1 = ads from the collector, phase 4 = matchmaking), and the negotiator's CPU time (from
/proc, read when the Started and Finished lines appear). The figure is the median over all cycles
of a variant; the ratio is median(variant) / median(A), with a 90 % bootstrap interval. The
negotiator ad's ``LastNegotiationCycleDuration0`` is whole seconds, so the log is used instead.
RSS of the startd and collector is read after each visit. On the 2-core VM single cycles of one
variant vary by up to 2x even on an idle machine (the negotiator's CPU time varies with the wall
time), so the table shows each variant's range too.

Everything lives in the pool (config files, cron script, jobs) and :meth:`Pool.teardown` removes it
in ``finally``, also on Ctrl-C or SIGTERM; only processes of this pool are ended, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import random
import re
import signal
import statistics
import string
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import classad2  # noqa: E402

from lark.links.records import cron_output  # noqa: E402
from tests.pool.harness import (  # noqa: E402
    IDLE,
    Pool,
    PoolError,
    ensure_image,
    raise_interrupt,
    sweep_stale,
)

DROPIN = ROOT / "condor_config.d" / "70-lark-matchmaking.conf"
LOCAL_SITE = "BenchLocal"
CRON_SCRIPT = "/usr/local/libexec/lark-bench-links"
CRON_OUTPUT = "/etc/lark-bench/links.out"
HUGE = 1.0e30  # "no limit" (local site, unknown link with policy allow)
# false for every job (LarkBenchId = $(Process)); its text differs per job, so each job is its own autocluster
NEVER = "(MY.LarkBenchId =?= -1 - $(Process))"
GOAL = 1.1

SCALE_CONFIG = """\
# benchmarks/negotiation_cycle.py: {slots} static slots, cycles timed from the NegotiatorLog
NUM_CPUS = {slots}
MEMORY = {memory}
SLOT_TYPE_1 = cpus=1, mem=128
SLOT_TYPE_1_PARTITIONABLE = false
NUM_SLOTS_TYPE_1 = {slots}
UPDATE_INTERVAL = 60
# the base config's 20 s would expire slot ads that are refreshed every 60 s
COLLECTOR.CLASSAD_LIFETIME = 900
NEGOTIATOR_UPDATE_INTERVAL = 5
NEGOTIATOR_DEBUG = D_MATCH D_SUB_SECOND
MAX_NEGOTIATOR_LOG = 200 Mb
NEGOTIATOR_MAX_TIME_PER_SUBMITTER = 1200
NEGOTIATOR_MAX_TIME_PER_SCHEDD = 1200
NEGOTIATOR_MAX_TIME_PER_CYCLE = 1200
SCHEDD_ENABLE_PER_USER_MATCH_LIMITS = False
NEGOTIATE_ALL_JOBS_IN_CLUSTER = True
# one resource request list per cycle (default 200): with 5 lists the schedd stopped at 979 of 1000 jobs
NEGOTIATOR_RESOURCE_REQUEST_LIST_SIZE = 5000
"""
CRON_JOB = f"""\
STARTD_CRON_LARKLINKS_EXECUTABLE = {CRON_SCRIPT}
LARK_SITE = {LOCAL_SITE}
"""
# design alternative C: one flat record, one lookup (the rank helper reads the same record)
ALT_C = CRON_JOB + """\
LARK_MAX_INPUT = MY.LarkMaxInputBytes[TARGET.LarkSourceSite]
LarkInputTransferOK = (TARGET.LarkInputBytes ?: 0) <= ($(LARK_MAX_INPUT) ?: \\
   ifThenElse(stringListIMember("$(LARK_UNKNOWN_LINK_POLICY)", "allow,true,yes"), 1.0e30, $(LARK_SMALL_INPUT_BYTES)))
LarkLinkRank = $(LARK_MAX_INPUT) ?: 0
LARK_PRE_JOB_RANK = $(LARK_MAX_INPUT) ?: 0
"""
# design alternative D: flat slot attributes, the breaker in the job's Requirements (also: the cron alone, for Ba)
ALT_D = CRON_JOB + """\
STARTD_CRON_JOBLIST = $(STARTD_CRON_JOBLIST) LARKLINKS
STARTD_CRON_LARKLINKS_MODE = Periodic
STARTD_CRON_LARKLINKS_PERIOD = 60s
"""
FLOOR = """\
START = ($(START)) && ((TARGET.LarkInputBytes ?: 0) >= 0)
"""
JOB_SUBMIT = """\
universe = vanilla
executable = /bin/true
request_cpus = 1
request_memory = 1
request_disk = 1
should_transfer_files = NO
hold = true
+LarkBenchId = $(Process)
"""


# ---------------------------------------------------------------------------------------------------------------
# links, cron outputs and the alternatives' limits


@dataclass(frozen=True)
class Knobs:
    small: int
    seconds: float
    max_loss: float
    max_age: float
    unknown_allow: bool

    @classmethod
    def from_dropin(cls, text: str) -> Knobs:
        def knob(name: str) -> str:
            m = re.search(rf"^{name}\s*=\s*(\S+)\s*$", text, re.MULTILINE)
            if not m:
                raise SystemExit(f"{DROPIN}: no {name}")
            return m.group(1)

        return cls(int(knob("LARK_SMALL_INPUT_BYTES")), float(knob("LARK_MAX_TRANSFER_SECONDS")),
                   float(knob("LARK_MAX_LOSS")), float(knob("LARK_MAX_LINK_AGE")),
                   knob("LARK_UNKNOWN_LINK_POLICY").lower() in ("allow", "true", "yes"))


def site_names(n: int) -> list[str]:
    return [f"Site{i:03d}" for i in range(n)]


def good_links(sites: Sequence[str], now: int, rnd: random.Random) -> dict[str, dict[str, object]]:
    """Links as the spider grades them "good": 200-9400 Mbps, loss < 1 %, measured in the last 2 h."""
    return {s: {"Mbps": round(rnd.uniform(200, 9400), 1), "Loss": round(rnd.uniform(0, 0.01), 5),
                "MeasuredAt": now - rnd.randrange(60, 7200), "Quality": "good"} for s in sites}


def max_input_bytes(rec: Mapping[str, object], knobs: Knobs, now: float) -> float:
    """The largest input the shipped breaker lets through over this link (what C and D publish)."""
    mbps = rec.get("Mbps")
    loss = rec.get("Loss", 0)
    measured = rec.get("MeasuredAt", 0)
    assert isinstance(mbps, (int, float)) and isinstance(loss, (int, float)) and isinstance(measured, (int, float))
    if rec.get("Quality") == "stale" or loss > knobs.max_loss or now - measured > knobs.max_age or mbps <= 0:
        return float(knobs.small)
    return max(float(knobs.small), mbps * 1e6 / 8 * knobs.seconds)


def _render(attrs: Mapping[str, object]) -> str:
    ad = classad2.ClassAd()
    for k, v in attrs.items():
        ad[k] = classad2.ClassAd(dict(v)) if isinstance(v, Mapping) else v
    return ad.printOld() + "- update:true\n"


def cron_c(site: str, links: Mapping[str, Mapping[str, object]], knobs: Knobs, now: int) -> str:
    limits = {name: max_input_bytes(rec, knobs, now) for name, rec in links.items()}
    limits[site] = HUGE
    return _render({"LarkSite": site, "LarkMaxInputBytes": limits, "LarkLinksUpdatedAt": now,
                    "LarkLinksCount": len(links)})


def flat_name(site: str) -> str:
    return "LarkMaxInputBytes_" + re.sub(r"[^A-Za-z0-9_]", "_", site)


def cron_d(site: str, links: Mapping[str, Mapping[str, object]], knobs: Knobs, now: int) -> str:
    attrs: dict[str, object] = {"LarkSite": site, flat_name(site): HUGE}
    attrs.update({flat_name(name): max_input_bytes(rec, knobs, now) for name, rec in links.items()})
    attrs.update({"LarkLinksUpdatedAt": now, "LarkLinksCount": len(links)})
    return _render(attrs)


def slowest(links: Mapping[str, Mapping[str, object]], n: int) -> dict[str, Mapping[str, object]]:
    """The ``n`` links with the lowest throughput: the ones whose limit a job is likeliest to hit."""
    return dict(sorted(links.items(), key=lambda kv: float(str(kv[1]["Mbps"])))[:n])


def job_clause_d(site: str) -> str:
    return f"(TARGET.{flat_name(site)} ?: 1.0e30) >= MY.LarkInputBytes"


# ---------------------------------------------------------------------------------------------------------------
# ClassAd evaluation (classad2, the same library as the negotiator)


def parse_ads(text: str) -> list[classad2.ClassAd]:
    return list(classad2.parseAds(text))


class Probe:
    """Evaluates ``expr`` with MY = a copy of ``my`` and TARGET = a given ad; True only for true."""

    def __init__(self, my: classad2.ClassAd, expr: str) -> None:
        self.ad = classad2.parseOne(my.printOld())
        self.ad["Requirements"] = classad2.ExprTree(f"({expr}) =?= true")

    def __call__(self, target: classad2.ClassAd) -> bool:
        return bool(target.matches(self.ad))


def equivalence(live: Mapping[str, classad2.ClassAd], knobs: Knobs) -> list[str]:
    """Compare the shipped breaker (live B slot ad) with C and D on synthetic links and jobs."""
    if "B" not in live:
        return []
    now = int(time.time())
    rnd = random.Random(7)
    links: dict[str, dict[str, object]] = {}
    for i in range(48):
        rec: dict[str, object] = {"Mbps": round(rnd.choice([1.0, 5.0, 22.3, 100.0, 940.0, 9400.0]), 1),
                                  "Loss": rnd.choice([0.0, 0.0001, 0.019, 0.021, 0.2]),
                                  "MeasuredAt": now - rnd.choice([60, 3600, 86000, 90000, 10 ** 6]),
                                  "Quality": rnd.choice(["good", "good", "poor", "stale"])}
        if i % 11 == 0:
            rec["Mbps"] = 0.0
        if i % 7 == 0:
            del rec["Loss"]
        links[f"Syn{i:02d}"] = rec
    small = knobs.small
    sizes: list[int | None] = [None, 1000, small, small + 1, 5 * 10 ** 9, 5 * 10 ** 10, 5 * 10 ** 11, 5 * 10 ** 13]
    jobs: list[tuple[str | None, int | None]] = [(s, b) for s in [*links, "NoSuchSite", LOCAL_SITE, None]
                                                  for b in sizes]
    b_slot = classad2.parseOne(cron_output(LOCAL_SITE, links, now).replace("- update:true\n", ""))
    shipped = Probe(b_slot, str(live["B"].lookup("LarkInputTransferOK")))
    out = []
    checks: list[tuple[str, Callable[[str | None, int | None, classad2.ClassAd], bool]]] = []
    if "C" in live:
        c_slot = classad2.parseOne(cron_c(LOCAL_SITE, links, knobs, now).replace("- update:true\n", ""))
        c_probe = Probe(c_slot, str(live["C"].lookup("LarkInputTransferOK")))
        checks.append(("C", lambda _s, _b, job: c_probe(job)))
    if "D" in live:
        d_slot = classad2.parseOne(cron_d(LOCAL_SITE, links, knobs, now).replace("- update:true\n", ""))

        def d_eval(site: str | None, size: int | None, job: classad2.ClassAd) -> bool:
            if site is None or size is None:  # the transform adds no clause without a source site or size
                return True
            return Probe(job, job_clause_d(site))(d_slot)

        checks.append(("D", d_eval))
    for name, fn in checks:
        agree = 0
        diffs = []
        for site, size in jobs:
            job = classad2.ClassAd()
            if site is not None:
                job["LarkSourceSite"] = site
            if size is not None:
                job["LarkInputBytes"] = size
            a, b = shipped(job), fn(site, size, job)
            agree += a == b
            if a != b:
                diffs.append(f"{site}/{size}: shipped {a}, {name} {b}")
        note = "" if not diffs else f"; differs: {', '.join(diffs[:4])}"
        out.append(f"{name} agrees with the shipped breaker on {agree}/{len(jobs)} synthetic site x size cases "
                   f"({len(links)} links incl. stale/lossy/old/zero-Mbps, unknown, local and no site){note}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# the NegotiatorLog and /proc


_LINE = re.compile(r"^(\d\d/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}) (.*)$")


@dataclass
class Cycle:
    start: float
    cpu0: float
    requests: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    end: float = 0.0
    cpu: float = 0.0

    @property
    def wall(self) -> float:
        return self.end - self.start

    @property
    def phase1(self) -> float:
        return self.phases.get("Phase 2", self.end) - self.start

    @property
    def phase4(self) -> float:
        return self.end - self.phases.get("Phase 4.1", self.end)


class LogTail:
    """Follows the NegotiatorLog across rotation (the open file is read to its end first)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh: IO[str] | None = None
        self.buf = ""

    def _open(self) -> None:
        self.fh = open(self.path, errors="replace")

    def lines(self) -> list[str]:
        if self.fh is None:
            if not self.path.exists():
                return []
            self._open()
        assert self.fh is not None
        data = self.fh.read()
        if not data:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino != os.fstat(self.fh.fileno()).st_ino:
                    data = self.fh.read()
                    self.fh.close()
                    self._open()
        self.buf += data
        *done, self.buf = self.buf.split("\n")
        return done

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------------------------
# the pool


@dataclass
class Variant:
    key: str
    title: str
    jobs: str  # job set: plain, big, small, jobside
    files: dict[str, str]  # config.d files besides the scale and never-match ones
    cron: str | None = None  # static cron output
    cycles: list[Cycle] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=dict)
    ad_bytes: int = 0
    check: str = ""


class Bench:
    def __init__(self, pool: Pool, args: argparse.Namespace) -> None:
        self.pool = pool
        self.args = args
        self.tail = LogTail(pool.root / "var/log/condor/NegotiatorLog")
        self.clusters: dict[str, int] = {}
        self.ours: set[str] = set()
        self.defaults = ""

    # -- processes
    def pid_of(self, daemon: str) -> int | None:
        for pid in self.pool.processes():
            with contextlib.suppress(OSError):
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                if os.path.basename(argv0) == f"condor_{daemon}":
                    return pid
        return None

    def restart(self, daemons: Sequence[str]) -> None:
        """condor_off the daemons (in order), wait until their processes are gone, condor_on in reverse order."""
        for d in daemons:
            self.pool.run(["condor_off", "-daemon", d])
        deadline = time.monotonic() + 60
        while any(self.pid_of(d) for d in daemons):
            if time.monotonic() > deadline:
                raise PoolError(f"{daemons} did not stop")
            time.sleep(0.1)
        for d in reversed(daemons):
            self.pool.run(["condor_on", "-daemon", d])
            if d == "collector":
                self.wait_for("the collector", lambda: self.pool.run(
                    ["condor_status", "-collector", "-af", "Name"], check=False, timeout=20).stdout.strip() != "", 60)

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise PoolError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.3)

    def count_slots(self, constraint: str) -> int:
        out = self.pool.run(["condor_status", "-constraint", f'MyType == "Machine" && ({constraint})',
                             "-af", "SlotID"], check=False, timeout=30).stdout
        return len(out.split())

    # -- set-up
    def configure_base(self) -> None:
        slots = self.args.slots
        self.pool.add_config("20-bench-negotiation.conf", SCALE_CONFIG.format(slots=slots, memory=slots * 128 + 1024))
        self.pool.write(CRON_SCRIPT, f"#!/bin/sh\nexec cat {CRON_OUTPUT}\n", owner="root")
        self.pool.reconfig()
        self.restart(["startd"])
        self.defaults = self.default_requirements()

    def default_requirements(self) -> str:
        """The Requirements condor_submit writes for these jobs (one held probe job, removed again)."""
        cluster = self.pool.submit(JOB_SUBMIT + "queue 1\n")
        text = self.pool.run(["condor_q", str(cluster), "-af:r", "Requirements"]).stdout.strip()
        self.pool.run(["condor_rm", str(cluster)])
        if not text or "Arch" not in text:
            raise PoolError(f"unexpected default Requirements {text!r}")
        return text

    def submit_jobs(self, kind: str, sites: Sequence[str], rnd: random.Random) -> int:
        """Held jobs whose Requirements are condor_submit's defaults, the job-side Lark clause (D) and,
        last, the clause that fails: the negotiator evaluates the slot's Requirements (START) first."""
        n = self.args.jobs
        clauses = [self.defaults, *([job_clause_d("$(site)")] if kind == "jobside" else []), NEVER]
        text = JOB_SUBMIT + "requirements = " + " && ".join(f"({c})" for c in clauses) + "\n"
        if kind == "plain":
            return self.pool.submit(text + f"queue {n}\n")
        lo, hi = (2 * 10 ** 9, 2 * 10 ** 10) if kind in ("big", "jobside") else (10 ** 6, 10 ** 9)
        items = "".join(f"{sites[i % len(sites)]},{rnd.randrange(lo, hi)}\n" for i in range(n))
        text += '+LarkSourceSite = "$(site)"\n+LarkInputBytes = $(bytes)\n'
        return self.pool.submit(text + "queue site, bytes from items.txt\n", files={"items.txt": items})

    # -- one visit
    def activate(self, v: Variant, variants: Iterable[Variant]) -> float:
        """Config, cron output and jobs of ``v``; restart the collector and startd; wait for every slot."""
        t0 = time.monotonic()
        conf_d = self.pool.root / "etc/condor/config.d"
        for name in self.ours - set(v.files):
            (conf_d / name).unlink(missing_ok=True)
        for name, text in v.files.items():
            self.pool.add_config(name, text)
        self.ours |= set(v.files)
        if v.cron is not None:
            self.pool.write(CRON_OUTPUT, v.cron, owner="root")
        self.pool.reconfig()
        for other in {w.jobs for w in variants} - {v.jobs}:
            self.pool.run(["condor_hold", str(self.clusters[other])], check=False)
        self.pool.run(["condor_release", str(self.clusters[v.jobs])], check=False)
        self.restart(["startd", "collector"])
        marker = "LarkLinksUpdatedAt =!= undefined" if v.cron is not None else "LarkLinksUpdatedAt =?= undefined"
        self.wait_for(f"{self.args.slots} slots of variant {v.key}",
                      lambda: self.count_slots(marker) == self.args.slots, 120)
        idle = self.pool.q(f"ClusterId == {self.clusters[v.jobs]} && JobStatus == {IDLE}", ["ProcId"])
        if len(idle) != self.args.jobs:
            raise PoolError(f"variant {v.key}: {len(idle)} idle jobs, expected {self.args.jobs}")
        return time.monotonic() - t0

    def check(self, v: Variant, knobs: Knobs) -> classad2.ClassAd:
        """Every pair passes the slot's Requirements (START, with the Lark clause) and the job's Requirements up
        to their last clause, which fails: so every clause is evaluated for every job x slot pair."""
        text = self.pool.run(["condor_status", "-long", "-constraint", 'MyType == "Machine" && SlotID == 1']).stdout
        slot = parse_ads(text)[0]
        v.ad_bytes = len(text.encode())
        jobs = parse_ads(self.pool.run(["condor_q", "-long", str(self.clusters[v.jobs])], timeout=120).stdout)
        n = len(jobs)
        slot_req = Probe(slot, str(slot.lookup("Requirements")))
        parts = [f"{sum(slot_req(job) for job in jobs)}/{n} jobs pass the slot's Requirements"]
        if slot.get("LarkInputTransferOK") is not None:
            lark = Probe(slot, "MY.LarkInputTransferOK")
            parts.append(f"{sum(lark(job) for job in jobs)}/{n} LarkInputTransferOK")
            if v.key in ("B", "Bs"):
                short = Probe(slot, f"((TARGET.LarkInputBytes ?: 0) <= {knobs.small}) || "
                                    "(TARGET.LarkSourceSite =?= MY.LarkSite)")
                parts.append(f"{n - sum(short(job) for job in jobs)}/{n} reach the link lookup")
        cut = 0
        for job in jobs:  # with LarkBenchId = -1 - ProcId the never-match clause holds, then everything else must too
            probe = classad2.parseOne(job.printOld())
            probe["LarkBenchId"] = -1 - int(job["ProcId"])
            cut += bool(slot.matches(probe))
        parts.append(f"{cut}/{n} pass their own Requirements but for the never-match clause")
        parts.append(f"{sum(bool(slot.matches(job)) for job in jobs)}/{n} match")
        v.check = ", ".join(parts)
        return slot

    def measure(self, v: Variant, n: int) -> list[Cycle]:
        """Time the next ``n`` complete cycles that start from now on and carry a request for every job."""
        neg = self.pid_of("negotiator")
        if neg is None:
            raise PoolError("no condor_negotiator")
        self.tail.lines()  # what was logged so far belongs to earlier cycles
        got: list[Cycle] = []
        cur: Cycle | None = None
        skipped = 0
        deadline = time.monotonic() + self.args.visit_timeout
        while len(got) < n:
            if time.monotonic() > deadline:
                raise PoolError(f"variant {v.key}: only {len(got)} full cycles in {self.args.visit_timeout} s "
                                f"({skipped} skipped with fewer requests)")
            for line in self.tail.lines():
                m = _LINE.match(line)
                if not m:
                    continue
                ts = datetime.datetime.strptime(m.group(1), "%m/%d/%y %H:%M:%S.%f").timestamp()
                msg = m.group(2)
                if "Started Negotiation Cycle" in msg:
                    cur = Cycle(start=ts, cpu0=proc_cpu(neg))
                elif cur is None:
                    continue
                elif msg.startswith("Phase "):
                    cur.phases.setdefault(msg.split(":")[0], ts)
                elif msg.lstrip().startswith("Request "):
                    cur.requests += 1
                elif "Finished Negotiation Cycle" in msg:
                    cur.end, cur.cpu = ts, proc_cpu(neg) - cur.cpu0
                    if cur.requests >= self.args.jobs:
                        got.append(cur)
                    else:
                        skipped += 1
                    cur = None
            time.sleep(0.02)
        for d in ("startd", "collector", "negotiator", "schedd"):
            v.rss.setdefault(d, []).append(proc_rss_mb(self.pid_of(d)))
        return got


# ---------------------------------------------------------------------------------------------------------------
# output


def med(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else float("nan")


def fmt(x: float, digits: int = 2) -> str:
    return "-" if x != x else f"{x:.{digits}f}"


def report(variants: Sequence[Variant], args: argparse.Namespace) -> None:
    base = next((v for v in variants if v.key == "A"), None)
    a_wall = med(c.wall for c in base.cycles) if base else float("nan")
    a_cpu = med(c.cpu for c in base.cycles) if base else float("nan")
    a_p4 = med(c.phase4 for c in base.cycles) if base else float("nan")
    pairs = args.jobs * args.slots
    head = ["variant", "n", "cycle s", "min-max s", "phase1 s", "phase4 s", "neg CPU s", "wall/A", "CPU/A",
            "+us/pair", "slot ad B", "startd MB", "coll MB"]
    rows = []
    for v in variants:
        wall, cpu, p4 = med(c.wall for c in v.cycles), med(c.cpu for c in v.cycles), med(c.phase4 for c in v.cycles)
        walls = [c.wall for c in v.cycles] or [float("nan")]
        rows.append([v.key, str(len(v.cycles)), fmt(wall), f"{fmt(min(walls))}-{fmt(max(walls))}",
                     fmt(med(c.phase1 for c in v.cycles)), fmt(p4), fmt(cpu), fmt(wall / a_wall), fmt(cpu / a_cpu),
                     fmt((p4 - a_p4) / pairs * 1e6), str(v.ad_bytes), fmt(med(v.rss.get("startd", [])), 0),
                     fmt(med(v.rss.get("collector", [])), 0)])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print()
    for r in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    print("(medians over all cycles of a variant; wall/A and CPU/A: ratio of medians to A; +us/pair: phase-4 "
          "time over A per job x slot pair; slot ad B: condor_status -long of one slot; RSS after each visit, median)")
    for v in variants:
        print(f"  {v.key:2s} {v.title}")
    print()
    for v in variants:
        if v.key == "A" or not v.cycles or base is None:
            continue
        ratio, cpu_ratio = med(c.wall for c in v.cycles) / a_wall, med(c.cpu for c in v.cycles) / a_cpu
        lo, hi = bootstrap([c.wall for c in v.cycles], [c.wall for c in base.cycles])
        verdict = "met" if ratio <= GOAL else "NOT met"
        print(f"SUMMARY negotiation_cycle {v.key}: cycle time ratio {v.key}/A = {ratio:.2f} (90% CI {lo:.2f}-{hi:.2f}, "
              f"negotiator CPU {cpu_ratio:.2f}) (goal <= {GOAL}) -> goal {verdict}")


def bootstrap(xs: Sequence[float], ys: Sequence[float], n: int = 2000) -> tuple[float, float]:
    """90 % bootstrap interval of median(xs) / median(ys), resampling the cycles of each variant."""
    rnd = random.Random(0)
    ratios = sorted(statistics.median(rnd.choices(xs, k=len(xs))) / statistics.median(rnd.choices(ys, k=len(ys)))
                    for _ in range(n))
    return ratios[int(0.05 * n)], ratios[int(0.95 * n) - 1]


# ---------------------------------------------------------------------------------------------------------------


def build_variants(keys: Sequence[str], sites: Sequence[str], knobs: Knobs, now: int,
                   rnd: random.Random) -> list[Variant]:
    dropin = DROPIN.read_text()
    links = good_links(sites, now, rnd)
    shipped = cron_output(LOCAL_SITE, links, now)
    lark = {"70-lark-matchmaking.conf": dropin, "71-bench-links.conf": CRON_JOB}
    catalog = {
        "A": Variant("A", "baseline: plain START, no Lark attributes, jobs without Lark attributes", "plain", {}),
        "B": Variant("B", f"shipped drop-in, {len(sites)}-site LarkLinks, 2-20 GB inputs (breaker looks up the link)",
                     "big", lark, shipped),
        "Bs": Variant("Bs", "shipped drop-in, 1 MB-1 GB inputs (breaker stops at its first clause)", "small", lark,
                      shipped),
        "Ba": Variant("Ba", "Lark attributes only: shipped LarkLinks in slots, Lark job attributes, plain START",
                      "big", {"71-bench-links.conf": ALT_D}, shipped),
        "C": Variant("C", "alternative: flat LarkMaxInputBytes record (precomputed by the cron), one lookup",
                     "big", {"70-lark-matchmaking.conf": dropin, "71-bench-links.conf": ALT_C},
                     cron_c(LOCAL_SITE, links, knobs, now)),
        "D": Variant("D", "alternative: flat LarkMaxInputBytes_<site> slot attributes, breaker in job Requirements",
                     "jobside", {"71-bench-links.conf": ALT_D}, cron_d(LOCAL_SITE, links, knobs, now)),
        "D10": Variant("D10", "D publishing only the 10 slowest links (other sites: LARK_UNKNOWN_LINK_POLICY)",
                       "jobside", {"71-bench-links.conf": ALT_D}, cron_d(LOCAL_SITE, slowest(links, 10), knobs, now)),
        "F": Variant("F", "floor: A + one START clause reading a job attribute, no Lark data", "big",
                     {"79-bench-floor.conf": FLOOR}),
    }
    unknown = [k for k in keys if k not in catalog]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(catalog)}")
    return [catalog[k] for k in keys]


def condor_version(pool: Pool) -> str:
    m = re.search(r"CondorVersion: (\S+)", pool.condor_version)
    return m.group(1) if m else pool.condor_version


def start_pool() -> Pool:
    image = ensure_image()
    sweep_stale()
    for _ in range(10):
        pool = Pool("larkn" + random.choice(string.ascii_lowercase + string.digits), image=image)
        if pool.run_dir.exists() or pool.lock_path.exists():
            continue
        return pool
    raise SystemExit("no free pool prefix larkn<x>")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--sites", type=int, default=100, help="remote sites in the slots' link data")
    ap.add_argument("--cycles", type=int, default=3, help="cycles timed per visit")
    ap.add_argument("--rounds", type=int, default=2, help="visits per variant (ABBA order)")
    ap.add_argument("--variants", default="A,B,Bs,Ba,C,D,D10,F", help="A is the baseline; see the module docstring")
    ap.add_argument("--visit-timeout", type=float, default=300, help="seconds allowed per visit")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (the pool runs in its own chroot and network namespace)")
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    if "A" not in keys:
        keys.insert(0, "A")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, raise_interrupt)
    t_run = time.monotonic()
    now = int(time.time())
    rnd = random.Random(1)
    knobs = Knobs.from_dropin(DROPIN.read_text())
    sites = site_names(args.sites)
    variants = build_variants(keys, sites, knobs, now, rnd)
    pool = start_pool()
    bench: Bench | None = None
    try:
        pool.start()
        print(f"== negotiation cycle: {args.slots} static slots x {args.jobs} idle jobs (each its own autocluster), "
              f"{args.sites} sites ==  ({time.strftime('%Y-%m-%d %H:%M')}, HTCondor {condor_version(pool)}, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, pool {pool.prefix})")
        bench = Bench(pool, args)
        bench.configure_base()
        for kind in dict.fromkeys(v.jobs for v in variants):
            t = time.monotonic()
            bench.clusters[kind] = bench.submit_jobs(kind, sites, rnd)
            print(f"submitted {args.jobs} {kind} jobs (held) as cluster {bench.clusters[kind]} "
                  f"in {time.monotonic() - t:.1f} s")
        order: list[Variant] = []
        for r in range(args.rounds):
            order += variants if r % 2 == 0 else variants[::-1]
        live: dict[str, classad2.ClassAd] = {}
        for i, v in enumerate(order):
            switch = bench.activate(v, variants)
            if v.key not in live:
                live[v.key] = bench.check(v, knobs)
            cycles = bench.measure(v, args.cycles)
            v.cycles += cycles
            print(f"[{i + 1}/{len(order)}] {v.key:2s} switch {switch:4.1f} s; cycles "
                  + " ".join(f"{c.wall:.2f}" for c in cycles) + " s; negotiator CPU "
                  + " ".join(f"{c.cpu:.2f}" for c in cycles) + f" s; requests {cycles[0].requests}; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            if v.check and len(v.cycles) == len(cycles):
                print(f"      check {v.key}: {v.check}")
        for line in equivalence(live, knobs):
            print("semantics: " + line)
        report(variants, args)
        print(f"total {time.monotonic() - t_run:.0f} s")
    finally:
        if bench is not None:
            bench.tail.close()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the teardown
        try:
            if pool._lock_fd is not None:  # never tear down a pool whose lock another run holds
                pool.teardown()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    main()
