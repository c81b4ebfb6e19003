"""Negotiation cycle time on the real HTCondor negotiator with and without Lark's matchmaking policy.

    .venv/bin/python -m benchmarks.negotiation_cycle [--slots 1000] [--jobs 1000] [--sites 100]
                     [--cycles 3] [--rounds 2] [--variants A,B,Bs,F,J]

Goal: with >= 1,000 slots and >= 1,000 idle jobs the cycle with Lark's attributes and policy
takes <= 1.1 x the cycle without them. Needs root; about 6 minutes with the defaults.

**What is measured: the shipped design** (docs/matchmaking.md). The links cron judges the links once
a minute and publishes flat limits in every slot ad (``LarkMaxInputBytes_<site>``,
``LarkUnknownLinkMaxInputBytes``, ``LarkBrokenLinkSites``, ...); the schedd's ``LarkLink`` job
transform (``condor_config.d/60-lark-submit.conf``) appends, to the Requirements of every job with
more than ``LARK_SMALL_INPUT_BYTES`` of input, ``((TARGET.LarkMaxInputBytes_<site> ?:
TARGET.LarkUnknownLinkMaxInputBytes ?: 1.0e300) >= <size>)``, the size an integer rounded up to two
significant digits (copied to ``LarkInputTransferOK`` for people); START is left alone. Per job x slot
pair that is nothing for small jobs, and for large jobs one or two slot-attribute lookups and a
comparison.

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
START the jobs' Requirements cost nothing). Lark's clause is in the job's Requirements, appended by
the schedd's ``LarkLink`` transform; the failing clause comes after it, appended by a bench-only
transform that runs later (``99-bench-never.conf``): ``(MY.LarkBenchId =?= -1 - <ProcId>)``, false
for every job and textually different per job. So every pair evaluates Lark's clause in full.
Everything else is true for every job x slot pair, and the large jobs' compiled check looks up an
attribute the slot has (checked with classad2 on the live ads before the first measurement of each
variant; the run stops if not). Each request scans every slot and every pair evaluates both
sides in full: ``jobs x slots`` per cycle.

**Variants** (config files after the drop-in order; jobs are submitted once, on hold, and released
per variant; the rank helper is not enabled, as in the shipped config):

* ``A``  baseline: plain START, no Lark attributes in slots, jobs without Lark attributes.
* ``B``  shipped: ``condor_config.d/60-lark-submit.conf`` and ``70-lark-matchmaking.conf`` verbatim,
  the ``lark-links`` cron replaced by a static cron that prints ``lark.links.records.cron_output()``
  for ``--sites`` remote sites with good links (knobs read from the drop-in by the real cron's
  ``breaker_knobs``; some site names contain ``-``, so the transform's and the cron's renaming are
  both exercised). Jobs carry ``LarkSourceSite`` (spread over the sites) and ``LarkInputBytes`` of
  2-20 GB, all within their link's limit; the schedd's transform compiled their
  ``LarkInputTransferOK`` at submission (verified: every job has it, naming its own site's attribute).
* ``Bs`` as B with 1 MB-1 GB inputs: no compiled check (what typical small jobs cost).
* ``F``  floor of any START-side policy: A plus one trivial START clause reading a job attribute,
  ``((TARGET.LarkBenchId ?: -1) >= 0)``, no Lark data in slots, A's jobs.
* ``J``  floor of any job-side check: A's config, jobs whose Requirements have one more trivial
  clause reading a slot attribute, ``((TARGET.Cpus ?: 0) >= 0)``.

Jobs of A, F and J are submitted before ``60-lark-submit.conf`` is in the schedd's config, those of B
and Bs with it (the transform acts at submission only).

**Measurement.** Variants are visited ``--rounds`` times, in ABBA order (the second round reversed)
so drift cancels; on each visit the collector and the startd are restarted (clean RSS, no attributes
left from the previous variant), the script waits until every slot shows the variant's data, and
then times ``--cycles`` negotiation cycles that start after that point and carry a request for every
job. Per cycle: wall time from the NegotiatorLog's sub-second timestamps (Started/Finished lines,
phase 1 = ads from the collector, phase 4 = matchmaking), and the negotiator's CPU time (from
/proc, read when the Started and Finished lines appear). The figure is the median over all cycles
of a variant; the ratio is median(variant) / median(A), with a 90 % bootstrap interval. The
negotiator ad's ``LastNegotiationCycleDuration0`` is whole seconds, so the log is used instead.
RSS of the startd and collector is read after each visit. On a 2-core machine single cycles of one
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
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import classad2

from lark.config import read_settings
from lark.links.cron import breaker_knobs
from lark.links.records import BreakerKnobs, attribute_suffix, cron_output, judge, slot_limits
from tests.pool.harness import IDLE, Pool, PoolError, raise_interrupt, unused_pool
from tests.support import wait_until

ROOT = Path(__file__).resolve().parent.parent

SUBMIT_DROPIN = ROOT / "condor_config.d" / "60-lark-submit.conf"
DROPIN = ROOT / "condor_config.d" / "70-lark-matchmaking.conf"
LOCAL_SITE = "BenchLocal"
CRON_SCRIPT = "/usr/local/libexec/lark-bench-links"
CRON_OUTPUT = "/etc/lark-bench/links.out"
# false for every job (LarkBenchId = $(Process)); its text differs per job, so each job is its own autocluster.
# A job transform that runs after Lark's appends it, so it is the *last* clause: Lark's clause, which the
# LarkLink transform appends to the Requirements condor_submit wrote, is evaluated in full before it.
NEVER_TRANSFORM = """\
JOB_TRANSFORM_NAMES = $(JOB_TRANSFORM_NAMES) LarkBenchNever
JOB_TRANSFORM_LarkBenchNever @=end
   SET Requirements ($(MY.Requirements)) && (MY.LarkBenchId =?= -1 - $(MY.LarkBenchId))
@end
"""
NEVER_CONF = "99-bench-never.conf"  # read after 60-lark-submit.conf: its transform runs after LarkLink
# J's jobs: one trivial clause of the job's own, true for every slot (the floor of any job-side check)
JOB_FLOOR = "((TARGET.Cpus ?: 0) >= 0)"
GOAL = 1.1
BIG = (2 * 10 ** 9, 2 * 10 ** 10)  # B: above LARK_SMALL_INPUT_BYTES, below every good link's limit
SMALL = (10 ** 6, 10 ** 9)  # Bs: at most LARK_SMALL_INPUT_BYTES (1 GiB)
# the attribute a job's compiled check looks up in the slot (the transform writes TARGET.LarkMaxInputBytes_<site>)
_LOOKUP = re.compile(r"TARGET\.(LarkMaxInputBytes_\w+)")

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
# the drop-in's cron job, but running the static script (the real lark-links would need a spider)
CRON_JOB = f"""\
STARTD_CRON_LARKLINKS_EXECUTABLE = {CRON_SCRIPT}
LARK_SITE = {LOCAL_SITE}
"""
# always true for these jobs (LarkBenchId = $(Process) >= 0), so it costs an evaluation and decides nothing
FLOOR = """\
START = ($(START)) && ((TARGET.LarkBenchId ?: -1) >= 0)
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
# knobs, sites, links and the cron output


def shipped_knobs() -> BreakerKnobs:
    """The breaker knobs as the real cron reads them from the drop-in; the submit side's threshold must agree."""
    execute = {name: setting.value for name, setting in read_settings(DROPIN).items()}
    knobs = breaker_knobs(execute.get)
    submit_setting = read_settings(SUBMIT_DROPIN).get("LARK_SMALL_INPUT_BYTES")
    submit = submit_setting.value if submit_setting else None
    if submit is None or int(submit) != knobs.small_input_bytes:
        raise SystemExit(f"LARK_SMALL_INPUT_BYTES differs: {SUBMIT_DROPIN.name} {submit}, "
                         f"{DROPIN.name} {knobs.small_input_bytes}")
    if not SMALL[1] <= knobs.small_input_bytes < BIG[0]:
        raise SystemExit(f"LARK_SMALL_INPUT_BYTES = {knobs.small_input_bytes} does not separate "
                         f"the Bs inputs {SMALL} from the B inputs {BIG}")
    return knobs


def site_names(n: int) -> list[str]:
    # every fourth name has a "-", which the cron and the transform both turn into "_" in the attribute name
    return [f"Site-{i:03d}" if i % 4 == 3 else f"Site{i:03d}" for i in range(n)]


def good_links(sites: Sequence[str], now: int, rnd: random.Random) -> dict[str, dict[str, object]]:
    """Links as the spider grades them "good": 200-9400 Mbps, loss < 1 %, measured in the last 2 h."""
    return {s: {"Mbps": round(rnd.uniform(200, 9400), 1), "Loss": round(rnd.uniform(0, 0.01), 5),
                "MeasuredAt": now - rnd.randrange(60, 7200), "Quality": "good"} for s in sites}


def job_items(sites: Sequence[str], n: int, sizes: tuple[int, int], rnd: random.Random,
              limits: Mapping[str, float]) -> str:
    """``site,bytes`` lines for ``queue ... from``; every input must be within its link's limit (all jobs pass)."""
    lines = []
    for i in range(n):
        site = sites[i % len(sites)]
        size = rnd.randrange(*sizes)
        if size > limits["LarkMaxInputBytes_" + attribute_suffix(site)]:
            raise SystemExit(f"{site}: {size} bytes exceed the link's limit; the benchmark needs jobs that pass")
        lines.append(f"{site},{size}\n")
    return "".join(lines)


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
    jobs: str  # job set: plain (A, F), jfloor (J), big (B), small (Bs)
    files: dict[str, str]  # config.d files besides the scale one
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
        self.wait_for(f"{daemons} to stop", lambda: not any(self.pid_of(d) for d in daemons), 60, 0.1)
        for d in reversed(daemons):
            self.pool.run(["condor_on", "-daemon", d])
            if d == "collector":
                self.wait_for("the collector", lambda: self.pool.run(
                    ["condor_status", "-collector", "-af", "Name"], check=False, timeout=20).stdout.strip() != "", 60)

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.3) -> None:
        try:
            wait_until(what, predicate, timeout, interval)
        except TimeoutError as err:
            raise PoolError(str(err)) from None

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
        # after the probe: condor_submit's defaults must not contain the never-match clause
        self.pool.add_config(NEVER_CONF, NEVER_TRANSFORM)
        self.pool.reconfig()

    def default_requirements(self) -> str:
        """The Requirements condor_submit writes for these jobs (one held probe job, removed again)."""
        cluster = self.pool.submit(JOB_SUBMIT + "queue 1\n")
        text = self.pool.run(["condor_q", str(cluster), "-af:r", "Requirements"]).stdout.strip()
        self.pool.run(["condor_rm", str(cluster)])
        if not text or "Arch" not in text:
            raise PoolError(f"unexpected default Requirements {text!r}")
        return text

    def enable_submit_transforms(self) -> None:
        """Put the shipped submit drop-in into the schedd's config: its job transforms act at submission, so
        A's jobs are submitted before this and B's after (activate() takes it out again for A and F)."""
        name = SUBMIT_DROPIN.name
        self.pool.add_config(name, SUBMIT_DROPIN.read_text())
        self.ours.add(name)
        self.pool.reconfig()
        names = self.pool.config_val("JOB_TRANSFORM_NAMES")
        if not re.search(r"\bLarkLink\b", names):
            raise PoolError(f"JOB_TRANSFORM_NAMES = {names!r} with {name} in the config")

    def submit_jobs(self, kind: str, items: str) -> int:
        """Held jobs whose Requirements are condor_submit's defaults and, last, the clause that fails: the
        negotiator evaluates the slot's Requirements (START) first. Lark jobs name their
        input's site and size as a user would (+LarkSourceSite, +LarkInputBytes); the rest is the transform's."""
        n = self.args.jobs
        text = JOB_SUBMIT + f"requirements = {self.defaults}\n"
        if kind == "plain":
            return self.pool.submit(text + f"queue {n}\n")
        if kind == "jfloor":
            return self.pool.submit(JOB_SUBMIT + f"requirements = ({self.defaults}) && {JOB_FLOOR}\nqueue {n}\n")
        text += '+LarkSourceSite = "$(site)"\n+LarkInputBytes = $(bytes)\n'
        return self.pool.submit(text + "queue site, bytes from items.txt\n", files={"items.txt": items})

    def verify_transform(self, kind: str) -> str:
        """What the schedd's LarkLink transform wrote into the jobs at submission; PoolError if it is not the
        compiled check the design needs (B: every job, naming its own site's attribute; Bs: none)."""
        jobs = parse_ads(self.pool.run(["condor_q", "-long", str(self.clusters[kind])], timeout=120).stdout)
        n, bad, compiled, ranked = len(jobs), [], 0, 0
        for job in jobs:
            want = "LarkMaxInputBytes_" + attribute_suffix(str(job.get("LarkSourceSite")))
            ok_expr, rank_expr = job.get("LarkInputTransferOK"), job.get("LarkLinkRank")
            ranked += rank_expr is not None and _LOOKUP.findall(str(rank_expr)) == [want]
            if ok_expr is None:
                if kind == "big":
                    bad.append(f"job {job['ProcId']} ({job.get('LarkInputBytes')} bytes): no LarkInputTransferOK")
                continue
            compiled += 1
            text = str(ok_expr)
            requirements = str(job.get("Requirements"))
            # the check is compiled into Requirements, before the never-match clause the bench transform appends
            if (kind != "big" or _LOOKUP.findall(text) != [want] or "LarkUnknownLinkMaxInputBytes" not in text
                    or _LOOKUP.findall(requirements) != [want]
                    or requirements.find(want) > requirements.find("LarkBenchId")):
                bad.append(f"job {job['ProcId']} ({job.get('LarkSourceSite')}, {job.get('LarkInputBytes')} bytes): "
                           f"LarkInputTransferOK = {text}, Requirements = {requirements}")
        if ranked != n:
            bad.append(f"{n - ranked}/{n} jobs without LarkLinkRank naming their site's attribute")
        if bad or n != self.args.jobs:
            raise PoolError(f"the schedd's LarkLink transform did not compile the {kind} jobs as designed "
                            f"({n} jobs): " + "; ".join(bad[:5]))
        return f"{compiled}/{n} compiled LarkInputTransferOK, {ranked}/{n} LarkLinkRank"

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
        marker = (f"LarkLinksCount =?= {self.args.sites}" if v.cron is not None
                  else "LarkLinksUpdatedAt =?= undefined")
        self.wait_for(f"{self.args.slots} slots of variant {v.key}",
                      lambda: self.count_slots(marker) == self.args.slots, 120)
        idle = self.pool.q(f"ClusterId == {self.clusters[v.jobs]} && JobStatus == {IDLE}", ["ProcId"])
        if len(idle) != self.args.jobs:
            raise PoolError(f"variant {v.key}: {len(idle)} idle jobs, expected {self.args.jobs}")
        return time.monotonic() - t0

    def check(self, v: Variant) -> None:
        """Every pair passes the slot's Requirements (START) and the job's Requirements (with Lark's clause) up to
        their last clause, which fails: so every clause is evaluated for every job x slot pair. For B, every
        job's compiled check looks up an attribute the slot has (the full branch) and holds. PoolError if not."""
        text = self.pool.run(["condor_status", "-long", "-constraint", 'MyType == "Machine" && SlotID == 1']).stdout
        slot = parse_ads(text)[0]
        v.ad_bytes = len(text.encode())
        jobs = parse_ads(self.pool.run(["condor_q", "-long", str(self.clusters[v.jobs])], timeout=120).stdout)
        n = len(jobs)
        failed: list[str] = []

        def count(what: str, got: int, want: int) -> str:
            if got != want:
                failed.append(what)
            return f"{got}/{n} {what}"

        start = str(slot.lookup("START"))
        if ("Lark" in start) != (v.key == "F"):  # Lark leaves START alone; F adds its floor clause there
            failed.append("START as the variant needs it")
        slot_req = Probe(slot, str(slot.lookup("Requirements")))
        parts = [count("pass the slot's Requirements", sum(slot_req(job) for job in jobs), n)]
        if v.jobs in ("big", "small"):
            has = [job for job in jobs if job.get("LarkInputTransferOK") is not None]
            hits = sum(slot.get(m.group(1)) is not None for job in has
                       if (m := _LOOKUP.search(str(job["LarkInputTransferOK"]))))
            # the job's own expression with the job as MY (its LarkInputBytes) and the slot as TARGET
            passes = sum(Probe(job, "MY.LarkInputTransferOK")(slot) for job in has)
            parts.append(count("carry a compiled check", len(has), n if v.jobs == "big" else 0))
            if v.jobs == "big":  # small jobs carry no check: nothing to look up
                parts += [count("look up an attribute the slot has", hits, n),
                          count("have LarkInputTransferOK true", passes, n)]
        cut = 0
        for job in jobs:  # with LarkBenchId = -1 - ProcId the never-match clause holds, then everything else must too
            probe = classad2.parseOne(job.printOld())
            probe["LarkBenchId"] = -1 - int(job["ProcId"])
            cut += bool(slot.matches(probe))
        parts.append(count("pass their own Requirements but for the never-match clause", cut, n))
        parts.append(count("match", sum(bool(slot.matches(job)) for job in jobs), 0))
        v.check = ", ".join(parts) + f"; START = {start}"
        if failed or n != self.args.jobs:
            raise PoolError(f"variant {v.key}: the live ads do not give the worst case ({', '.join(failed)}): "
                            f"{v.check}")

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


def ratio_to(x: float, baseline: float) -> float:
    """x / baseline, NaN (printed "-") when the baseline is zero: a tiny run can use no measurable CPU."""
    return x / baseline if baseline else float("nan")


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
                     fmt(med(c.phase1 for c in v.cycles)), fmt(p4), fmt(cpu), fmt(ratio_to(wall, a_wall)),
                     fmt(ratio_to(cpu, a_cpu)),
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
        ratio = ratio_to(med(c.wall for c in v.cycles), a_wall)
        cpu_ratio = ratio_to(med(c.cpu for c in v.cycles), a_cpu)
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


def build_variants(keys: Sequence[str], sites: Sequence[str], shipped: str) -> list[Variant]:
    lark = {SUBMIT_DROPIN.name: SUBMIT_DROPIN.read_text(), DROPIN.name: DROPIN.read_text(),
            "71-bench-links.conf": CRON_JOB}
    catalog = {
        "A": Variant("A", "baseline: plain START, no Lark attributes, jobs without Lark attributes", "plain", {}),
        "B": Variant("B", f"shipped: 60-/70- drop-ins, {len(sites)} LarkMaxInputBytes_<site>, 2-20 GB inputs "
                     "(every job carries its compiled check)", "big", lark, shipped),
        "Bs": Variant("Bs", "shipped, 1 MB-1 GB inputs (no compiled check, only the larger slot ads)", "small",
                      lark, shipped),
        "F": Variant("F", "floor: A + one START clause reading a job attribute, no Lark data", "plain",
                     {"79-bench-floor.conf": FLOOR}),
        "J": Variant("J", f"floor: A + one clause in the jobs' Requirements, {JOB_FLOOR}, no Lark data",
                     "jfloor", {}),
    }
    unknown = [k for k in keys if k not in catalog]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(catalog)}")
    return [catalog[k] for k in keys]


def condor_version(pool: Pool) -> str:
    m = re.search(r"CondorVersion: (\S+)", pool.condor_version)
    return m.group(1) if m else pool.condor_version


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--sites", type=int, default=100, help="remote sites in the slots' link data")
    ap.add_argument("--cycles", type=int, default=3, help="cycles timed per visit")
    ap.add_argument("--rounds", type=int, default=2, help="visits per variant (ABBA order)")
    ap.add_argument("--variants", default="A,B,Bs,F,J", help="A is the baseline; see the module docstring")
    ap.add_argument("--visit-timeout", type=float, default=300, help="seconds allowed per visit")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (the pool runs in its own chroot and network namespace)")
    if args.sites < 1:
        sys.exit("--sites must be at least 1")
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    if "A" not in keys:
        keys.insert(0, "A")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, raise_interrupt)
    t_run = time.monotonic()
    now = int(time.time())
    rnd = random.Random(1)
    knobs = shipped_knobs()
    sites = site_names(args.sites)
    links = good_links(sites, now, rnd)
    limits = slot_limits(LOCAL_SITE, judge(links, knobs, now))
    variants = build_variants(keys, sites, cron_output(LOCAL_SITE, links, knobs, now))
    pool = unused_pool("larkn")
    bench: Bench | None = None
    try:
        pool.start()
        print(f"== negotiation cycle: {args.slots} static slots x {args.jobs} idle jobs (each its own autocluster), "
              f"{args.sites} sites ==  ({time.strftime('%Y-%m-%d %H:%M')}, HTCondor {condor_version(pool)}, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, pool {pool.prefix})")
        bench = Bench(pool, args)
        bench.configure_base()
        # plain jobs first, without the submit drop-in; Lark jobs with it, so its transforms act on them
        kinds = sorted(dict.fromkeys(v.jobs for v in variants), key=lambda k: k not in ("plain", "jfloor"))
        for kind in kinds:
            if kind in ("big", "small") and SUBMIT_DROPIN.name not in bench.ours:
                bench.enable_submit_transforms()
            t = time.monotonic()
            lark_jobs = kind in ("big", "small")
            items = job_items(sites, args.jobs, BIG if kind == "big" else SMALL, rnd, limits) if lark_jobs else ""
            bench.clusters[kind] = bench.submit_jobs(kind, items)
            note = "" if kind not in ("big", "small") else "; transform: " + bench.verify_transform(kind)
            print(f"submitted {args.jobs} {kind} jobs (held) as cluster {bench.clusters[kind]} "
                  f"in {time.monotonic() - t:.1f} s{note}")
        order: list[Variant] = []
        for r in range(args.rounds):
            order += variants if r % 2 == 0 else variants[::-1]
        checked: set[str] = set()
        for i, v in enumerate(order):
            switch = bench.activate(v, variants)
            if v.key not in checked:
                bench.check(v)
                checked.add(v.key)
            cycles = bench.measure(v, args.cycles)
            v.cycles += cycles
            print(f"[{i + 1}/{len(order)}] {v.key:2s} switch {switch:4.1f} s; cycles "
                  + " ".join(f"{c.wall:.2f}" for c in cycles) + " s; negotiator CPU "
                  + " ".join(f"{c.cpu:.2f}" for c in cycles) + f" s; requests {cycles[0].requests}; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            if v.check and len(v.cycles) == len(cycles):
                print(f"      check {v.key}: {v.check}")
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
