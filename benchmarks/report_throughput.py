"""Throughput and peak memory of ``lark report`` on large inputs. Prints figures; never asserts.

1. 1,000,000 projected history ads as ``condor_history -json -attributes <lark report --print-attributes>``
   prints them (goal: <= 30 s and <= 200 MB peak RSS);
2. 1,000,000 GridFTP transfer-log lines (same goal), with the documented quirks mixed in;
3. full, unprojected history-file ads (~110 attributes, banner format) parsed by classad2: rate only.

Each report runs as its own process (``python -m lark.report ... --json -o /dev/null``) so its peak RSS
(``wait4`` ru_maxrss) is its own, not the generator's. Inputs are generated into a temporary directory
first (not timed). Usage: ``.venv/bin/python -m benchmarks.report_throughput [--ads N] [--lines N]
[--full-ads N] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import classad2

ROOT = Path(__file__).resolve().parents[1]
T0 = 1790812800  # 2026-10-01 00:00:00 UTC
MONTH = 31 * 86400
SITES = [f"SITE_{i:02d}" for i in range(30)]
SOURCES = ["FNAL", "BNL", "CERN", "UNL", "UCSD", "MIT", "UW", "UC", "SLAC", "KIT"]
USERS = [f"user{i:03d}" for i in range(200)]
GROUPS = [f"group_{i:02d}" for i in range(20)]


def json_ad(rng: random.Random, cluster: int) -> str:
    """One ad in the layout classad2/condor_history -json use (2-space indent, one attribute a line)."""
    user = rng.choice(USERS)
    start = T0 + rng.randrange(MONTH - 7200)
    end = start + rng.randrange(60, 7200)
    wan_in = int(rng.lognormvariate(20, 2))
    campus_in = int(rng.lognormvariate(18, 2))
    wan_out = int(rng.lognormvariate(17, 2))
    lines = [
        f'  "ClusterId": {cluster}', '  "ProcId": 0', f'  "GlobalJobId": "submit.example.org#{cluster}.0#{start - 60}"',
        f'  "Owner": "{user}"', f'  "User": "{user}@example.org"', f'  "AcctGroup": "{rng.choice(GROUPS)}"',
        f'  "LarkBytesIn": {wan_in + campus_in + 1000}', f'  "LarkBytesOut": {wan_out + 500}',
        f'  "LarkBytesInWan": {wan_in}', f'  "LarkBytesOutWan": {wan_out}', f'  "LarkBytesInCampus": {campus_in}',
        '  "LarkBytesOutCampus": 0', '  "LarkNetworkType": "nat"', f'  "LarkSourceSite": "{rng.choice(SOURCES)}"',
        f'  "BytesSent": {rng.randrange(10**6)}.0', f'  "BytesRecvd": {rng.randrange(10**7)}.0',
        f'  "TransferInputSizeMB": {rng.randrange(2000)}', f'  "JobCurrentStartDate": {start}',
        f'  "CompletionDate": {end}',
        f'  "LastRemoteHost": "slot1_{rng.randrange(64)}@wn{rng.randrange(900)}.site.edu"',
        f'  "MachineAttrGLIDEIN_Site0": "{rng.choice(SITES)}"',
    ]
    return "{\n" + ",\n".join(lines) + "\n}"


def write_json_history(path: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i in range(n):
            if i:
                f.write("\n,\n")
            f.write(json_ad(rng, 1000 + i))
        f.write("\n]\n")


def gridftp_lines(path: Path, n: int, seed: int = 2) -> None:
    """Bursty transfers (sessions) from 100 users on 4 servers to 500 remotes, written in DATE order per
    burst like a server would, with unpadded microseconds, unknown DEST, spaces in FILE and listings."""
    rng = random.Random(seed)
    servers = [f"dtn{i}.example.org" for i in range(4)]
    remotes = [f"198.51.{i // 250}.{i % 250 + 1}" for i in range(500)]
    users = [f"u{i:03d}" for i in range(100)]

    def stamp(t: float, unpadded: bool = False) -> str:
        whole = time.strftime("%Y%m%d%H%M%S", time.gmtime(int(t)))
        us = int(round((t - int(t)) * 1e6)) % 1000000
        return f"{whole}.{us}" if unpadded else f"{whole}.{us:06d}"

    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < n:
            user, server, remote = rng.choice(users), rng.choice(servers), rng.choice(remotes)
            t = T0 + rng.uniform(0, MONTH)
            burst = []
            for _ in range(min(int(rng.expovariate(1 / 20)) + 1, n - written)):
                size = int(rng.lognormvariate(18, 2.5))
                rate = rng.lognormvariate(17.5, 1.0)  # ~40 MB/s median
                dur = max(size / rate, 0.001)
                burst.append((t, t + dur, size))
                t += dur * rng.choice([0.2, 1.0, 1.0]) + rng.expovariate(1 / 20)
            for start, end, size in sorted(burst, key=lambda b: b[1]):
                r = rng.random()
                dest = "[0.0.0.0]" if r < 0.01 else f"[{remote}]"
                name = f"/data/run {rng.randrange(9999)}/file=x{rng.randrange(10**6)}.root" if r < 0.05 else \
                    f"/data/{user}/f{rng.randrange(10**6)}.root"
                kind = "LIST" if r > 0.995 else rng.choice(["RETR", "RETR", "STOR"])
                unpadded = r < 0.02
                f.write(f"DATE={stamp(end, unpadded)} HOST={server} PROG=globus-gridftp-server NL.EVNT=FTP_INFO "
                        f"START={stamp(start, unpadded)} USER={user} FILE={name} BUFFER=0 BLOCK=262144 "
                        f"NBYTES={size} VOLUME=/ STREAMS=4 STRIPES=1 DEST={dest} TYPE={kind} CODE=226 "
                        f"TASKID=none\n")
                written += 1


def full_template() -> str:
    """A realistic ~110-attribute job ad printed by classad2, with {placeholders} for what varies."""
    ad = classad2.ClassAd()
    plain = {
        "Arguments": "-n 100 --seed 42", "BufferBlockSize": 32768, "BufferSize": 524288, "CommittedSlotTime": 3600,
        "CommittedSuspensionTime": 0, "CommittedTime": 3600, "CondorPlatform": "$CondorPlatform: X86_64-Debian_12 $",
        "CondorVersion": "$CondorVersion: 25.14.1 2026-10-01 $", "CoreSize": 0, "CpusProvisioned": 1,
        "CumulativeRemoteSysCpu": 12.0, "CumulativeRemoteUserCpu": 3500.0, "CumulativeSlotTime": 3600.0,
        "CumulativeSuspensionTime": 0, "CurrentHosts": 0, "DiskProvisioned": 1048576, "DiskUsage": 75,
        "DiskUsage_RAW": 72, "EncryptExecuteDirectory": False, "Environment": "OMP_NUM_THREADS=1 HOME=/home/u",
        "Err": "job.err", "ExecutableSize": 75, "ExecutableSize_RAW": 72, "ExitBySignal": False, "ExitCode": 0,
        "ExitStatus": 0, "ImageSize": 250000, "ImageSize_RAW": 243120, "In": "/dev/null",
        "Iwd": "/home/user/work/run", "JobCurrentStartExecutingDate": 0, "JobFinishedHookDone": 0,
        "JobLeaseDuration": 2400, "JobNotification": 0, "JobPrio": 0, "JobRunCount": 1, "JobStartDate": 0,
        "JobStatus": 4, "JobUniverse": 5, "LastJobLeaseRenewal": 0, "LastJobStatus": 2, "LastMatchTime": 0,
        "LastSuspensionTime": 0, "LeaveJobInQueue": False, "LocalSysCpu": 0.0, "LocalUserCpu": 0.0,
        "MachineAttrCpus0": 1, "MachineAttrSlotWeight0": 1, "MaxHosts": 1, "MemoryProvisioned": 2048,
        "MinHosts": 1, "MyType": "Job", "NumCkpts": 0, "NumJobCompletions": 1, "NumJobMatches": 1,
        "NumJobStarts": 1, "NumRestarts": 0, "NumShadowStarts": 1, "NumSystemHolds": 0, "OnExitHold": False,
        "OnExitRemove": True, "OrigMaxHosts": 1, "Out": "job.out", "PeriodicHold": False, "PeriodicRelease": False,
        "PeriodicRemove": False, "QDate": 0, "Rank": 0.0, "RemoteSysCpu": 12.0, "RemoteUserCpu": 3500.0,
        "RemoteWallClockTime": 3600.0, "RequestCpus": 1, "RequestDisk": 1048576, "RequestMemory": 2048,
        "ResidentSetSize": 190000, "ResidentSetSize_RAW": 184320, "RootDir": "/", "ServerTime": 0,
        "ShouldTransferFiles": "YES", "StartdPrincipal": "execute-side@matchsession/10.0.0.7", "StreamErr": False,
        "StreamOut": False, "TargetType": "Machine", "TerminationPending": True, "TotalSuspensions": 0,
        "TransferIn": False, "TransferInputSizeMB": 0, "UserLog": "/home/user/work/run/job.log",
        "WantCheckpoint": False, "WantIOProxy": True, "WantJobNetworking": False, "WantRemoteIO": True,
        "WantRemoteSyscalls": False, "WhenToTransferOutput": "ON_EXIT", "Cmd": "/home/user/work/run/sim.sh",
        "LarkNetworkType": "nat", "NumJobReconnects": 0, "JobBatchName": "sim", "DAGManJobId": 0,
        "ClusterId": 0, "ProcId": 0, "Owner": "x", "User": "x", "AcctGroup": "x", "GlobalJobId": "x",
        "LarkBytesIn": 0, "LarkBytesOut": 0, "LarkBytesInWan": 0, "LarkBytesOutWan": 0, "LarkSourceSite": "x",
        "BytesSent": 0.0, "BytesRecvd": 0.0, "JobCurrentStartDate": 0, "CompletionDate": 0,
        "LastRemoteHost": "x", "MachineAttrGLIDEIN_Site0": "x", "EnteredCurrentStatus": 0,
    }
    for k, v in plain.items():
        ad[k] = v
    exprs = {
        "MemoryUsage": "((ResidentSetSize + 1023) / 1024)",
        "Requirements": '(TARGET.Arch == "X86_64") && (TARGET.OpSys == "LINUX") && (TARGET.Disk >= RequestDisk) && '
                        "(TARGET.Memory >= RequestMemory) && (TARGET.HasFileTransfer) && "
                        "(TARGET.WantJobNetworking =?= false || MY.WantJobNetworking =?= false)",
        "TransferInputStats": "[ CedarFilesCount = 2; CedarSizeBytes = 4096; HttpFilesCount = 1 ]",
        "TransferOutputStats": "[ CedarFilesCount = 1; CedarSizeBytes = 1024 ]",
        "PeriodicRemoveCheck": "JobStatus == 5 && (time() - EnteredCurrentStatus) > 86400",
    }
    for k, text in exprs.items():
        ad[k] = classad2.ExprTree(text)
    varying = {"ClusterId": "{cluster}", "Owner": '"{user}"', "User": '"{user}@example.org"',
               "AcctGroup": '"{group}"', "GlobalJobId": '"submit.example.org#{cluster}.0#{qdate}"',
               "LarkBytesIn": "{b_in}", "LarkBytesOut": "{b_out}", "LarkBytesInWan": "{w_in}",
               "LarkBytesOutWan": "{w_out}", "LarkSourceSite": '"{source}"', "BytesSent": "{sent}.0",
               "BytesRecvd": "{recvd}.0", "JobCurrentStartDate": "{start}", "CompletionDate": "{end}",
               "EnteredCurrentStatus": "{end}", "QDate": "{qdate}", "LastRemoteHost": '"slot1@wn{node}.site.edu"',
               "MachineAttrGLIDEIN_Site0": '"{site}"', "TransferInputSizeMB": "{input_mb}"}
    out = []
    for line in ad.printOld().splitlines():
        name = line.split(" = ", 1)[0]
        if name in varying:
            out.append(f"{name} = {varying[name]}")
        else:
            out.append(line.replace("{", "{{").replace("}", "}}"))
    return "\n".join(out) + "\n*** Offset = {offset} ClusterId = {cluster} ProcId = 0 Owner = \"{user}\" " \
        "CompletionDate = {end}\n"


def write_full_history(path: Path, n: int, seed: int = 3) -> int:
    rng = random.Random(seed)
    template = full_template()
    offset = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            start = T0 + rng.randrange(MONTH - 7200)
            w_in, w_out = int(rng.lognormvariate(20, 2)), int(rng.lognormvariate(17, 2))
            text = template.format(cluster=5000 + i, user=rng.choice(USERS), group=rng.choice(GROUPS),
                                   qdate=start - 60, b_in=w_in + 1000, b_out=w_out + 10, w_in=w_in, w_out=w_out,
                                   source=rng.choice(SOURCES), sent=rng.randrange(10**6), recvd=rng.randrange(10**7),
                                   start=start, end=start + rng.randrange(60, 7200), node=rng.randrange(900),
                                   site=rng.choice(SITES), input_mb=rng.randrange(2000), offset=offset)
            offset += len(text)
            f.write(text)
    return len(template.splitlines()) - 1


def run_report(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one `python -m lark.report` process.

    CPU time is printed too because other work on a shared machine stretches wall time."""
    cmd = [sys.executable, "-m", "lark.report", "--no-progress", "--json", "-o", os.devnull, *args]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        print(f"  report failed ({status}): {err.strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ads", type=int, default=1_000_000)
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--full-ads", type=int, default=50_000)
    p.add_argument("--keep", type=Path, help="generate into this directory and keep the files")
    p.add_argument("--reuse", action="store_true", help="with --keep: reuse inputs generated by an earlier run")
    a = p.parse_args()
    work = a.keep or Path(tempfile.mkdtemp(prefix="lark-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        jpath, gpath, hpath = work / "history.json", work / "gridftp.log", work / "history.full"
        t = time.perf_counter()
        if a.reuse and a.keep and jpath.exists() and gpath.exists() and hpath.exists():
            print(f"reusing the inputs in {work}", flush=True)
            n_attrs = len(full_template().splitlines()) - 1
        else:
            print(f"generating inputs in {work} (not timed) ...", flush=True)
            write_json_history(jpath, a.ads)
            gridftp_lines(gpath, a.lines)
            n_attrs = write_full_history(hpath, a.full_ads)
        print(f"  {time.perf_counter() - t:.0f} s: {jpath.stat().st_size / 1e6:.0f} MB json, "
              f"{gpath.stat().st_size / 1e6:.0f} MB gridftp, {hpath.stat().st_size / 1e6:.0f} MB history "
              f"({n_attrs} attributes per full ad)\n")
        rows = []
        for label, n, args, goal in (
            ("condor_history -json, projected ads", a.ads, ["--history-json", str(jpath)], True),
            ("GridFTP transfer-log lines", a.lines, ["--gridftp", str(gpath)], True),
            ("history file, full ads (classad2)", a.full_ads, ["--history", str(hpath)], False),
        ):
            wall, cpu, rss = run_report(args)
            rows.append((label, n, wall, cpu, rss, goal))
        print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall time includes waiting)")
        print(f"{'input':38} {'records':>10} {'wall s':>7} {'CPU s':>6} {'records/s':>10} {'peak RSS':>9}  "
              "goal (<= 30 s, <= 200 MB)")
        for label, n, wall, cpu, rss, goal in rows:
            verdict = ("met" if wall <= 30 and rss <= 200 else "MISSED") if goal and n >= 1_000_000 else \
                ("(scaled run)" if goal else "(rate only)")
            print(f"{label:38} {n:>10,} {wall:>7.1f} {cpu:>6.1f} {n / wall:>10,.0f} {rss:>7.0f} MB  {verdict}")
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
