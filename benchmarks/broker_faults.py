"""The broker under load and under crashes: held connections, and ``kill -9`` while jobs come and go.

No HTCondor is needed: as in ``wrapper_latency``, a real ``lark-netd`` runs in a sandbox "host"
namespace (``larkb<xy>-host``, Lark prefix ``lb<xy>``) and the script plays the starters itself
(:mod:`tests.kernel.brokerkit`: a root-owned copy of the interpreter named ``condor_starter``, named
by ``-D LARK_STARTER``). A *job* here is: a fresh fork of that fake starter (a new starter pid, so a
new job: the broker gives a job one network) writes ``<execute>/dir_<pid>/scratch/.job.ad`` (owner
``--user``), forks a wrapper child that unshares an empty network namespace, drops to the user and
runs, in the same interpreter:

* part (a): one raw ``setup`` request, timed (the round trip on the wrapper's side), then ``finalize``;
* part (b): ``lark.wrap.main`` itself (its retry loop and exit codes), with ``SOCKET_PATH`` set as
  ``wrapper_latency`` does; the job is ``sleep`` of 50-300 ms. Only change: ``finalize`` is sent as a
  JSON request (not the wrapper's ``lines`` form) so that the final counters in the reply can be seen.

(a) **Held connections**: median and p95 of the setup round trip with and without 2,000 idle
    connections held open (``-D LARK_REQUEST_TIMEOUT=600`` so that they stay), in alternating blocks,
    and the broker's thread count while they are held. Goal: ratio of medians <= 2.
(b) **Crashes**: jobs start, run and end, ``--concurrency`` at a time, while the broker is killed with
    SIGKILL at ``--kills`` random moments (50-500 ms after it answered its first ping) and started
    again at once (as condor_master would, without its back-off). ``--kill-wrappers`` of the jobs
    (default 10 %) are removed the hard way meanwhile: their starter SIGKILLs the wrapper 50-500 ms
    after forking it (condor_rm), so no ``finalize`` comes. At the end the broker runs until its
    records are gone, is stopped, started once more for a final sweep, and stopped. Counted:
    leaked kernel objects of the prefix (host links, named namespaces, firewall job chains/sets,
    address allocations, job records); jobs that ended without running and without a reason (the
    wrapper's exit status 117 or 118 means "held": with a reason; a wrapper its starter killed has one
    too); jobs that ran (setup answered ok) whose final counters are in neither the finalize reply
    nor the accounting journal (``LARK_ACCOUNTING_JOURNAL``, an entry with the job's ``job_id`` and
    ``final``) -- for a killed wrapper only the journal can have them.

Figures are printed, never asserted. Everything (broker, drivers, namespaces, the lab directory
under /run) is removed in ``finally``; processes are ended by PID.

    .venv/bin/python -m benchmarks.broker_faults [--kills 100] [--idle 2000] [--rtt-jobs 40]
    .venv/bin/python -m benchmarks.broker_faults --kills 10 --skip-idle      # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pwd
import random
import subprocess
import sys
import time
from typing import Any

from benchmarks import _sandbox as sb
from lark import names, netns  # noqa: E402
from lark.config import load_config  # noqa: E402
from lark.engine import Engine  # noqa: E402
from lark.ipam import all_allocations  # noqa: E402
from tests.kernel.brokerkit import (  # noqa: E402
    SOURCE_ROOT,
    BrokerLab,
    idle_connections,
    raise_nofile,
    socket_count,
    thread_count,
)
from tests.support import links_left, wait_until

# lark-wrap's exit statuses that the submit transform turns into a hold (unreachable, refused)
HELD_STATUSES = (117, 118)

GOAL_RATIO = 2.0

# Jobs, run by the fake starter binary (standard library + lark.wrap). argv: CFG (JSON).
JOBS = r'''
import ctypes
import json
import os
import random
import shutil
import socket
import sys
import time

CFG = json.loads(sys.argv[1])
sys.path.insert(0, CFG["root"])
import lark.wrap as wrap  # imported once here; every wrapper is a fork of this process

wrap.SOCKET_PATH = CFG["socket"]
wrap.REQUESTS = {**wrap.REQUESTS, "finalize": b'{"op": "finalize"}\n'}  # JSON: the reply carries the counters
CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL(None, use_errno=True)
UID, GID = CFG["uid"], CFG["gid"]
EXECUTE = CFG["execute"]
RESULTS = CFG["results"]
marks = {}
MARK_FD = [None]  # the pipe to the starter: one JSON line per finished request, so a killed wrapper
                  # has told what it got


def mark(key, value):
    marks[key] = value
    if MARK_FD[0] is not None:
        os.write(MARK_FD[0], (json.dumps({key: value}) + "\n").encode())


def small(reply):
    out = {"ok": reply.get("ok")}
    if reply.get("error") is not None:
        out["error"] = str(reply.get("error"))[:300]
    if "accounting" in reply:
        out["accounting"] = reply["accounting"]
    return out


_parse = wrap.parse_reply


def parse_reply(text):
    if text.startswith("{"):
        try:
            return json.loads(text.splitlines()[0])
        except ValueError:
            pass
    return _parse(text)


wrap.parse_reply = parse_reply
_ask = wrap.ask


def timed_ask(op, retry_for, *rest):
    t0 = time.monotonic()
    reply = _ask(op, retry_for, *rest)
    mark(op, {"reply": small(reply), "s": round(time.monotonic() - t0, 4)})
    return reply


wrap.ask = timed_ask


def raw(op):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(CFG["socket"])
        sock.sendall(json.dumps({"op": op}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data) if data else {"ok": False, "error": "closed without a reply"}


def wrapper(w, scratch):
    code = 1
    MARK_FD[0] = w
    try:
        if LIBC.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        os.setgroups([])
        os.setgid(GID)
        os.setuid(UID)
        os.chdir(scratch)
        if CFG["mode"] == "rtt":
            t0 = time.perf_counter_ns()
            reply = raw("setup")
            mark("setup_ns", time.perf_counter_ns() - t0)
            mark("setup", {"reply": small(reply)})
            mark("finalize", {"reply": small(raw("finalize"))})
            code = 0 if reply.get("ok") else 117
        else:
            sleep = random.uniform(CFG["sleep_min"], CFG["sleep_max"])
            try:
                wrap.main(["/bin/sleep", f"{sleep:.3f}"])
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else 1
    except BaseException as err:  # noqa: BLE001
        mark("crash", repr(err)[:300])
    finally:
        os._exit(code)


def starter(index):
    """A new fake starter (fork: a new pid and start time) running one job."""
    job_dir = os.path.join(EXECUTE, f"dir_{os.getpid()}")
    scratch = os.path.join(job_dir, "scratch")
    random.seed(os.getpid() * 1000003 + time.time_ns())  # each fork its own draws
    result = {"index": index, "job": f"{CFG['cluster']}.{index}", "starter": os.getpid()}
    try:
        os.makedirs(scratch)
        os.chown(scratch, UID, GID)
        with open(os.path.join(scratch, ".job.ad"), "w") as fh:
            fh.write(f'ClusterId = {CFG["cluster"]}\nProcId = {index}\nOwner = "{CFG["user"]}"\n'
                     f'User = "{CFG["user"]}@lark.test"\n')
        os.chown(os.path.join(scratch, ".job.ad"), UID, GID)
        r, w = os.pipe()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            wrapper(w, scratch)
        os.close(w)
        killed, status = False, None
        if CFG["mode"] == "flow" and random.random() < CFG["kill_share"]:
            # condor_rm: the starter kills the wrapper (its child, not yet reaped: the pid is still ours)
            until = time.monotonic() + random.uniform(0.05, 0.5)
            while True:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
                    break
                if time.monotonic() >= until:
                    os.kill(pid, 9)
                    killed = True
                    break
                time.sleep(0.005)
        if status is None:
            _, status = os.waitpid(pid, 0)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.close(r)
        got = {}
        for line in data.decode(errors="replace").splitlines():
            try:
                got.update(json.loads(line))
            except ValueError:
                pass
        result.update(wrapper=pid, status=os.waitstatus_to_exitcode(status), wall=round(time.monotonic() - t0, 4),
                      marks=got, killed=killed)
    except BaseException as err:  # noqa: BLE001
        result["starter_error"] = repr(err)[:300]
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
        with open(os.path.join(RESULTS, f"{CFG['cluster']}.{index}.json"), "w") as fh:
            fh.write(json.dumps(result))
        os._exit(0)


def main():
    inflight = set()
    index = 0
    while True:
        stop = os.path.exists(CFG["stop"]) or (CFG["count"] and index >= CFG["count"])
        while not stop and len(inflight) < CFG["concurrency"]:
            index += 1
            pid = os.fork()
            if pid == 0:
                starter(index)
            inflight.add(pid)
            if CFG["count"] and index >= CFG["count"]:
                break
        if not inflight and stop:
            break
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            inflight.discard(pid)
        else:
            time.sleep(0.005)


main()
'''


class Jobs:
    """One run of :data:`JOBS` by the fake starter in the sandbox host."""

    def __init__(self, lab: BrokerLab, cluster: int, mode: str, count: int = 0, concurrency: int = 1,
                 sleep: tuple[float, float] = (0.05, 0.3), kill_share: float = 0.0) -> None:
        self.lab = lab
        self.cluster = cluster
        self.results = lab.dir / f"results-{cluster}"
        self.results.mkdir(mode=0o755)
        self.stop_file = lab.dir / f"stop-{cluster}"
        script = lab.dir / "jobs.py"
        if not script.exists():
            script.write_text(JOBS)
        cfg = {"root": str(SOURCE_ROOT), "socket": str(lab.socket), "execute": str(lab.execute), "uid": lab.uid,
               "gid": lab.gid, "user": lab.user, "results": str(self.results), "stop": str(self.stop_file),
               "mode": mode, "count": count, "concurrency": concurrency, "cluster": cluster,
               "sleep_min": sleep[0], "sleep_max": sleep[1], "kill_share": kill_share}
        self.log = open(lab.dir / f"jobs-{cluster}.log", "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(["nsenter", f"--net={lab.host_ns}", str(lab.starter), "-I", "-S", str(script),
                                      json.dumps(cfg)], stdout=self.log, stderr=self.log, cwd="/",
                                     env={"LANG": "C.UTF-8"})

    def stop(self) -> None:
        self.stop_file.touch()

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"   note: jobs run {self.cluster} still going after {timeout:.0f} s; killing it", file=sys.stderr)
            self.proc.kill()
            self.proc.wait()
        finally:
            self.log.close()
        out = []
        for path in sorted(self.results.glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except ValueError:
                continue
        return out


def ms(ns: float) -> float:
    return ns / 1e6


# ---------------------------------------------------------------- (a) held connections


def part_a(lab: BrokerLab, idle: int, rtt_jobs: int, block: int) -> None:
    print(f"\n-- (a) setup round trip with and without {idle} idle connections "
          f"({rtt_jobs} jobs each, alternating blocks of {block}) --")
    lab.start_broker(LARK_REQUEST_TIMEOUT="600")
    raise_nofile(idle + 256)
    without: list[float] = []
    with_idle: list[float] = []
    failed = {"without": 0, "with": 0}
    threads_seen: list[int] = []
    held_seen: list[int] = []
    cluster = 100
    Jobs(lab, cluster, "rtt", count=3).wait(60)  # warm-up
    blocks = max(1, rtt_jobs // block)
    died = ""
    for _ in range(blocks):
        for kind in ("without", "with"):
            cluster += 1
            if kind == "without":
                results = Jobs(lab, cluster, "rtt", count=block).wait(120)
            else:
                base = socket_count(lab.broker_pid)
                try:
                    with idle_connections(lab.socket, idle):
                        with contextlib.suppress(TimeoutError):  # how many it holds is reported
                            wait_until("the broker to hold the idle connections",
                                       lambda want=base + idle: socket_count(lab.broker_pid) >= want, 20)
                        held_seen.append(socket_count(lab.broker_pid) - base)
                        threads_seen.append(thread_count(lab.broker_pid))
                        results = Jobs(lab, cluster, "rtt", count=block).wait(120)
                        threads_seen.append(thread_count(lab.broker_pid))
                except OSError as err:  # the broker is gone (or never let them in)
                    results = []
                    died = f"holding the connections failed: {err}"
            for r in results:
                marks = r.get("marks", {})
                if marks.get("setup", {}).get("reply", {}).get("ok") and "setup_ns" in marks:
                    (without if kind == "without" else with_idle).append(ms(marks["setup_ns"]))
                else:
                    failed[kind] += 1
            time.sleep(0.3)  # an aborted broker has closed its sockets before it can be reaped
            if lab.broker is None or lab.broker.poll() is not None:
                exit_code = lab.broker.poll() if lab.broker else None
                crash = [line.strip() for line in lab.broker_log(4000).splitlines()
                         if "***" in line or "Fatal" in line or line.startswith("  File")]
                died = (f"lark-netd DIED (exit {exit_code}) during a block {kind} idle connections"
                        + (f" ({died})" if died else "") + "; its stderr: " + " | ".join(crash[:7]))
                break
        if died:
            break
    lab.stop_broker()
    rows = [["without idle connections", len(without), sb.median(without), sb.percentile(without, 95),
             min(without, default=float("nan")), failed["without"]],
            [f"with {idle} idle connections", len(with_idle), sb.median(with_idle), sb.percentile(with_idle, 95),
             min(with_idle, default=float("nan")), failed["with"]]]
    print(sb.table(["setup RTT, ms", "n", "median", "p95", "min", "failed"], rows))
    if died:
        print(f"   {died}")
    print(f"   connections the broker held: {min(held_seen, default=0)}-{max(held_seen, default=0)} of {idle}; "
          f"broker threads while held: {min(threads_seen, default=0)}-{max(threads_seen, default=0)}")
    ratio = sb.median(with_idle) / sb.median(without) if without and with_idle else float("nan")
    p95_ratio = (sb.percentile(with_idle, 95) / sb.percentile(without, 95)) if without and with_idle else float("nan")
    sb.summary("broker_faults", f"setup RTT with/without {idle} idle connections (medians)", ratio,
               f"<= {GOAL_RATIO:g}", ratio <= GOAL_RATIO if ratio == ratio else None)
    sb.summary("broker_faults", f"setup RTT with/without {idle} idle connections (p95)", p95_ratio, "-", None)
    sb.summary("broker_faults", f"broker threads with {idle} idle connections (max)",
               float(max(threads_seen, default=0)), "-", None)


# ---------------------------------------------------------------- (b) kill -9 while jobs run


def leaked_objects(lab: BrokerLab) -> dict[str, list[str]]:
    """Every object of the lab's prefix left in the sandbox host, its state dir and /run/netns."""
    config = load_config([], lab.knobs)
    engine = Engine(config, host_netns=lab.host_ns)
    try:
        return {
            "links": links_left(engine),
            "namespaces": [n for n in netns.list_named(lab.prefix + "-") if names.token_of_netns(lab.prefix, n)],
            "firewall": sorted(engine.firewall.job_tokens()),
            "allocations": [f"{a.pool}/{a.slot}" for a, _ in all_allocations(config.state_dir)],
            "records": [f"{r.token} ({r.job_id}, {r.status})" for r in engine.records()],
        }
    finally:
        engine.close()


def wait_records_gone(lab: BrokerLab, timeout: float) -> bool:
    try:
        wait_until("the broker to remove every job record", lambda: not lab.records(), timeout, 0.1)
    except TimeoutError:
        return False
    return True


def part_b(lab: BrokerLab, kills: int, concurrency: int, kill_share: float, rng: random.Random) -> None:
    print(f"\n-- (b) broker killed (SIGKILL) {kills} times while jobs start, run and end "
          f"({concurrency} at a time; {kill_share:.0%} of the wrappers SIGKILLed by their starter mid-job) --")
    lab.start_broker(**lab.base_knobs())  # default knobs again (part (a) held connections for 600 s)
    jobs = Jobs(lab, 500, "flow", concurrency=concurrency, kill_share=kill_share)
    restarts: list[float] = []
    t_start = time.monotonic()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.05, 0.5))
            lab.kill_broker()
            t0 = time.monotonic()
            lab.start_broker()
            restarts.append(time.monotonic() - t0)
            if jobs.proc.poll() is not None:
                print("   note: the job driver ended early", file=sys.stderr)
                break
    finally:
        jobs.stop()
    results = jobs.wait(timeout=180)
    elapsed = time.monotonic() - t_start
    # the broker that is up finishes its jobs (finalize, holder exit, sweep); then a final restart sweeps
    settled = wait_records_gone(lab, 40)
    lab.stop_broker()
    lab.start_broker()
    settled_after_restart = wait_records_gone(lab, 40)
    lab.stop_broker()
    leaks = leaked_objects(lab)

    journal: dict[str, list[dict]] = {}
    for entry in lab.journal_lines():
        journal.setdefault(str(entry.get("job_id")), []).append(entry)
    ran = [r for r in results if r.get("marks", {}).get("setup", {}).get("reply", {}).get("ok")]
    killed = [r for r in results if r.get("killed")]
    ran_killed = [r for r in ran if r.get("killed")]
    not_run = [r for r in results if r not in ran]
    removed_early = [r for r in not_run if r.get("killed")]  # killed before it had its setup reply
    held = [r for r in not_run if r.get("status") in HELD_STATUSES and not r.get("killed")]
    no_reason = [r for r in not_run if r.get("status") not in HELD_STATUSES and not r.get("killed")]
    crashed = [r for r in results if "crash" in r.get("marks", {}) or "starter_error" in r]
    ran_bad_status = [r for r in ran if r.get("status") != 0 and not r.get("killed")]
    in_reply = [r for r in ran if (r["marks"].get("finalize", {}).get("reply", {}).get("ok")
                                   and r["marks"]["finalize"]["reply"].get("accounting"))]
    in_journal = [r for r in ran if any(e.get("final", True) for e in journal.get(r["job"], []))]
    lost = [r for r in ran if r not in in_reply and r not in in_journal]
    lost_killed = [r for r in lost if r.get("killed")]
    journal_only = [r for r in ran if r not in in_reply and r in in_journal]
    duplicate_journal = sum(1 for r in ran if len(journal.get(r["job"], [])) > 1)
    refusals: dict[str, int] = {}
    for r in held + no_reason:
        err = str(r.get("marks", {}).get("setup", {}).get("reply", {}).get("error", r.get("marks", {}).get("crash")))
        key = err[:200] if "already" not in err else "... already had its network set up"
        refusals[key] = refusals.get(key, 0) + 1
    setup_s = [r["marks"]["setup"]["s"] * 1000 for r in ran if "s" in r["marks"]["setup"]]
    final_s = [r["marks"]["finalize"]["s"] * 1000 for r in ran if "s" in r["marks"].get("finalize", {})]

    n = max(1, len(results))
    print(f"   {len(restarts)} kills in {elapsed:.0f} s; restart to first answered ping: median "
          f"{sb.median(restarts) * 1000:.0f} ms, p95 {sb.percentile(restarts, 95) * 1000:.0f} ms")
    rows = [["jobs started", len(results), 1.0],
            ["  wrapper SIGKILLed by its starter (condor_rm)", len(killed), len(killed) / n],
            ["  ran (setup ok)", len(ran), len(ran) / n],
            ["    of which the wrapper was killed mid-job", len(ran_killed), len(ran_killed) / n],
            ["    not killed, but the wrapper's status was not 0", len(ran_bad_status), len(ran_bad_status) / n],
            ["    final counters in the finalize reply", len(in_reply), len(in_reply) / n],
            ["    final counters only in the journal", len(journal_only), len(journal_only) / n],
            ["    final counters in neither (LOST)", len(lost), len(lost) / n],
            ["      of which the wrapper was killed", len(lost_killed), len(lost_killed) / n],
            ["    more than one journal entry", duplicate_journal, duplicate_journal / n],
            ["  killed before its setup reply (removed while starting)", len(removed_early), len(removed_early) / n],
            ["  did not run, held (status 117/118)", len(held), len(held) / n],
            ["  did not run, WITHOUT a reason", len(no_reason), len(no_reason) / n],
            ["  wrapper or starter crashed", len(crashed), len(crashed) / n]]
    print(sb.table(["jobs", "count", "share"], rows))
    if refusals:
        print("   why jobs did not run: " + "; ".join(f"{k} x{v}" for k, v in sorted(refusals.items())))
    nan = float("nan")
    print(f"   wrapper's setup time (incl. retries) ms: median {sb.median(setup_s):.1f}, p95 "
          f"{sb.percentile(setup_s, 95):.1f}, max {max(setup_s, default=nan):.0f}; finalize: median "
          f"{sb.median(final_s):.1f}, p95 {sb.percentile(final_s, 95):.1f}, max {max(final_s, default=nan):.0f}")
    print(f"   records gone with the broker up: {'yes' if settled else 'NO'}; after a final restart: "
          f"{'yes' if settled_after_restart else 'NO'}")
    total_leaks = sum(len(v) for v in leaks.values())
    print("   leaked after the final sweep: " + ", ".join(f"{k} {len(v)}" for k, v in leaks.items())
          + (f"  e.g. {[x for v in leaks.values() for x in v][:5]}" if total_leaks else ""))
    log = lab.broker_log(tail=10**9)
    print(f"   broker log: {log.count('Traceback')} tracebacks, {log.count('internal error')} internal errors")
    for sample in (lost[:1] + no_reason[:1] + held[:1] + crashed[:1]):
        print(f"   e.g. {json.dumps(sample)[:500]}")
    sb.summary("broker_faults", "leaked kernel objects / records after the final sweep", float(total_leaks), "0",
               total_leaks == 0)
    sb.summary("broker_faults", "jobs that did not run and have no reason", float(len(no_reason)), "0",
               not no_reason)
    sb.summary("broker_faults", "finished jobs whose final counters are lost", float(len(lost)), "0", not lost)
    sb.summary("broker_faults", "jobs held / jobs started", len(held) / n, "-", None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs of the broker in part (b)")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs at a time in part (b)")
    parser.add_argument("--kill-wrappers", type=float, default=0.1, metavar="SHARE",
                        help="share of part (b)'s wrappers SIGKILLed mid-job by their starter (condor_rm)")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections held in part (a)")
    parser.add_argument("--rtt-jobs", type=int, default=40, help="setup round trips per side in part (a)")
    parser.add_argument("--block", type=int, default=10, help="jobs per alternating block in part (a)")
    parser.add_argument("--skip-idle", action="store_true", help="skip part (a)")
    parser.add_argument("--skip-kills", action="store_true", help="skip part (b)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments")
    parser.add_argument("--user", default="nobody", help="the job user")
    args = parser.parse_args()
    sb.require_root()
    sb.install_signal_handlers()
    pwd.getpwnam(args.user)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    sb.header("broker under held connections and kill -9", [
        f"broker: {sys.executable} -m lark.broker.main from {SOURCE_ROOT}; job user {args.user}; seed {seed}"])

    sandbox = sb.Sandbox()
    lab: BrokerLab | None = None
    try:
        host = sandbox.ns("host")
        lab = BrokerLab(host, sb.LARK_PREFIX, job_user=args.user)
        if not args.skip_idle:
            part_a(lab, args.idle, args.rtt_jobs, args.block)
        if not args.skip_kills:
            part_b(lab, args.kills, args.concurrency, args.kill_wrappers, random.Random(seed))
        return 0
    except BaseException:
        if lab is not None:
            print(f"broker stderr (tail):\n{lab.broker_log()}", file=sys.stderr)
        raise
    finally:
        if lab is not None:
            lab.close()
        sandbox.close()


if __name__ == "__main__":
    sys.exit(main())
