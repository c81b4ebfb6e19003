"""TCP throughput of a container-universe job on a macvlan profile vs the same transfer over a plain veth pair.

End to end on the real pool (tests/pool/harness.py): HTCondor 25.x from the cached image, in its own
overlay and network namespace ``larkc<x>-pool``, configured as a Lark execute node (the drop-ins
``50-lark-execute.conf`` and ``60-lark-submit.conf`` as the tests use them). Two paths, measured in
alternation::

    Lark:   container job (apptainer, in the job's Lark ns) --macvlan child of mvpar0-- [veth] -- data ns (iperf3 -s)
    plain:  ns A (iperf3 -c) --veth-- ns B (iperf3 -s)

The Lark path is a real ``universe = container`` job with ``+LarkNetworkProfile = "bench-dtn"``: the
wrapper asks the broker for the network, the broker creates a macvlan child of ``mvpar0`` in the
job's namespace with job-side accounting, and apptainer runs ``iperf3 -c`` from a SIF built here from
a directory (static busybox + the pool's iperf3 and its libraries). ``mvpar0`` is a veth in the pool's
namespace (the kernel has no dummy driver) whose peer holds the data server in a namespace of its own.
The plain path is two namespaces joined by one veth pair, with the same iperf3 binary (the pool's).

One TCP stream, the client on CPU 0 (the profile's ``cpus: 0``, applied by lark-wrap; ``taskset`` for
the plain path), the server on CPU 1; the rate is the receiver's. As in nat_throughput.py the rate per
CPU-second of the sender (iperf3's own utime+stime) is printed too, which other load on the machine
cannot skew. Each container run also reports the job's accounted ``LarkBytesOut`` from
condor_history against the bytes iperf3 sent.

Everything is created in namespaces this script makes (the pool's, the data server's, the two plain
ones) and removed in ``finally``; processes are killed by PID.

    .venv/bin/python -m benchmarks.container_throughput [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from benchmarks import _sandbox as sb
from benchmarks._sandbox import median, table
from lark import netns
from tests.pool.harness import Pool, PoolError, raise_interrupt, unused_pool
from tests.pool.larkpool import DataSegment, build_sif, container_submit, wait_for_sif
from tests.support import iperf3_json, received_mbit, wait_listening, wait_until

ROOT = Path(__file__).resolve().parent.parent

GOAL = 0.9  # "near-native" has no agreed number; printed against 0.9
IMAGE = "/srv/lark-img/iperf3.sif"
SERVER, PLAIN_A, PLAIN_B = "10.77.0.1", "10.78.0.1", "10.78.0.2"
PORT = 5201
PROFILE = f"""\
profiles:
  bench-dtn:
    description: benchmark data plane, macvlan on mvpar0, client on CPU 0
    attach: macvlan
    parent: mvpar0
    ipv4_pool: 10.77.0.0/24 10.77.0.10-10.77.0.20
    ipv4_gateway: {SERVER}
    cpus: "0"
"""
JOB = '#!/bin/sh\n# $1 server, $2 port, $3 seconds\nexec /usr/bin/iperf3 -c "$1" -p "$2" -t "$3" -J\n'


def configure(pool: Pool) -> None:
    """Lark as an execute + submit node (as the lark_pool test fixture does), the profile, the image."""
    for name in ("50-lark-execute.conf", "60-lark-submit.conf"):
        pool.add_config(name, (ROOT / "condor_config.d" / name).read_text())
    pool.add_config("70-lark-bench.conf", f"""
LARK_BIN = /usr/local/bin
LARK_NAME_PREFIX = {pool.prefix}
LARK_NETWORK_TYPES = nat, none
LARK_SWEEP_INTERVAL = 2
LARK_ACCOUNTING_INTERVAL = 2
MASTER_BACKOFF_CONSTANT = 1
""")
    pool.write("/etc/condor/profiles.d/bench.yaml", PROFILE, owner="root")
    checked = pool.run(["lark", "profiles", "check"], check=False)
    if checked.returncode:
        raise PoolError(f"profile rejected: {checked.stdout}{checked.stderr}")
    pool.reconfig()
    pool.restart_daemon("startd")  # NO_JOB_NETWORKING is only fully applied at startd start
    build_sif(pool, IMAGE, binaries=["/usr/bin/iperf3"])
    wait_for_sif(pool)
    try:
        wait_until("lark-netd's socket", (pool.root / "run/lark/netd.sock").exists, 30, 0.2)
    except TimeoutError as err:
        raise PoolError(str(err)) from None


def server(pool: Pool, netns_path: str, address: str) -> subprocess.Popen[bytes]:
    """The pool's iperf3 as a server on CPU 1 in ``netns_path`` (same binary as every client)."""
    proc = subprocess.Popen(["taskset", "-c", "1", "nsenter", f"--net={netns_path}", "chroot", str(pool.root),
                             "iperf3", "-s", "-B", address, "-p", str(PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(netns_path, PORT)
    return proc


def plain_run(pool: Pool, client_ns: str, seconds: float) -> dict[str, object]:
    out = subprocess.run(["taskset", "-c", "0", "nsenter", f"--net={client_ns}", "chroot", str(pool.root), "iperf3",
                          "-c", PLAIN_B, "-p", str(PORT), "-t", str(seconds), "-J"],
                         capture_output=True, text=True, timeout=seconds + 30)
    return iperf3_json(out.stdout, out.stderr)


def container_run(pool: Pool, seconds: float) -> tuple[dict[str, object], dict[str, object]]:
    """One container job; its iperf3 JSON and its history ad."""
    submit = container_submit(IMAGE, f"{SERVER} {PORT} {seconds:g}", "bench-dtn")
    cluster = pool.submit(submit, files={"job.sh": JOB})
    pool.wait(cluster, timeout=seconds + 120)
    ad = pool.history(cluster, ["Iwd", "ExitCode", "LarkBytesOut", "LarkNetworkType"])[0]
    iwd = pool.root / str(ad["Iwd"]).lstrip("/")
    return iperf3_json((iwd / "out.0.txt").read_text(), (iwd / "err.0.txt").read_text()), ad


def sender_cpu(data: dict[str, object]) -> float:
    return float(data["end"].get("cpu_utilization_percent", {}).get("host_total", float("nan")))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sb.require_root()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, raise_interrupt)  # KeyboardInterrupt: every finally below runs
    pool = unused_pool("larkc")
    segment: DataSegment | None = None
    plain: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.monotonic()
        pool.start()
        configure(pool)
        print(f"== container_throughput: iperf3 TCP, container job on a macvlan profile vs plain veth ==  "
              f"({time.strftime('%Y-%m-%d %H:%M')}, kernel {os.uname().release}, {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.2f}, pool {pool.prefix})")
        print(f"   {args.runs} runs x {args.seconds:g} s per path, alternating; medians. Pool ready and configured "
              f"in {time.monotonic() - t0:.0f} s.", flush=True)
        segment = DataSegment(pool, f"{pool.prefix}-bdat", server_address=SERVER)
        servers.append(server(pool, segment.netns_path, SERVER))
        for role in ("bva", "bvb"):
            plain.append(str(netns.create_named(f"{pool.prefix}-{role}")))
        a, b = (os.path.basename(p) for p in plain)
        subprocess.run(["ip", "link", "add", "veth0", "netns", a, "type", "veth", "peer", "name", "veth0", "netns", b],
                       check=True)
        for ns, addr in ((a, PLAIN_A), (b, PLAIN_B)):
            sb.ip(ns, "addr", "add", f"{addr}/24", "dev", "veth0")
            sb.ip(ns, "link", "set", "veth0", "up")
            sb.ip(ns, "link", "set", "lo", "up")
        servers.append(server(pool, plain[1], PLAIN_B))

        rates: dict[str, list[float]] = {"container macvlan": [], "plain veth": []}
        per_cpu: dict[str, list[float]] = {name: [] for name in rates}
        cpu: dict[str, list[float]] = {name: [] for name in rates}
        accounted: list[float] = []
        job_seconds: list[float] = []
        for run in range(args.runs):
            order = list(rates) if run % 2 == 0 else list(reversed(rates))
            for name in order:
                t = time.monotonic()
                if name == "plain veth":
                    data = plain_run(pool, plain[0], args.seconds)
                else:
                    data, ad = container_run(pool, args.seconds)
                    job_seconds.append(time.monotonic() - t)
                    sent = data["end"]["sum_sent"]["bytes"]  # type: ignore[index]
                    if ad.get("ExitCode") != 0 or ad.get("LarkNetworkType") != "macvlan":
                        raise RuntimeError(f"container job did not run as expected: {ad}")
                    accounted.append(int(ad["LarkBytesOut"]) / int(sent))  # type: ignore[call-overload]
                rate = received_mbit(data)
                rates[name].append(rate)
                cpu[name].append(sender_cpu(data))
                per_cpu[name].append(rate / (cpu[name][-1] / 100) if cpu[name][-1] > 0 else float("nan"))
            print(f"   run {run + 1}/{args.runs}: " + ", ".join(f"{n} {rates[n][-1] / 1000:.2f}" for n in rates)
                  + " Gbit/s", flush=True)

        ref, ref_cpu = median(rates["plain veth"]), median(per_cpu["plain veth"])
        rows = [[name, median(v) / 1000, min(v) / 1000, max(v) / 1000, median(cpu[name]),
                 median(per_cpu[name]) / 1000, median(v) / ref, median(per_cpu[name]) / ref_cpu]
                for name, v in rates.items()]
        print()
        print(table(["path", "Gbit/s median", "min", "max", "sender CPU %", "Gbit/s per sender CPU",
                     "wall ratio to plain", "per-CPU ratio to plain"], rows))
        print()
        print(f"   container jobs: submit -> history {median(job_seconds):.1f} s median (iperf3 itself "
              f"{args.seconds:g} s); LarkBytesOut / iperf3 bytes sent: "
              + ", ".join(f"{r:.4f}" for r in accounted) + " (headers included, so slightly above 1)")
        wall = median(rates["container macvlan"]) / ref
        norm = median(per_cpu["container macvlan"]) / ref_cpu
        sb.summary("container_throughput", "TCP container macvlan / plain veth (wall)", wall, f">= {GOAL}",
                   wall >= GOAL)
        sb.summary("container_throughput", "TCP container macvlan / plain veth (per sender CPU)", norm,
                   f">= {GOAL}", norm >= GOAL)
    finally:
        with contextlib.ExitStack() as cleanup:  # every step runs even when one before it fails (last in, first out)
            cleanup.callback(pool.teardown)
            if segment is not None:
                cleanup.callback(segment.close)
            for path in plain:
                cleanup.callback(netns.delete_named, os.path.basename(path))
            for proc in servers:
                cleanup.callback(proc.wait)
                cleanup.callback(proc.kill)


if __name__ == "__main__":
    main()
