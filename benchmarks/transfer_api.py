"""lark-transferd's API against bare HTCondor: POST latency under 10 concurrent clients, GET over 10,000 transfers.

On the real pool (tests/pool/harness.py, HTCondor 25.x from the cached image, in its own overlay and
network namespace ``larkt<x>-pool``), with the startd told not to start jobs (``START = False``), so
what is timed is "request in, job in the queue" and nothing runs beside it. The service runs in the
pool as an admin would run it (``lark-transferd`` from the pool's venv, FastAPI and uvicorn installed
there from wheels), as root, submitting with the user's IDTOKEN.

1. **POST**: ``--clients`` (10) client processes, each with its own keep-alive session as a portal
   keeps (threads of one Python would time their own GIL contention), start together and each send
   ``--posts`` (default 20) ``POST /v1/transfers``, each with a new ``submission_id`` (so the service
   also looks for an earlier one in the queue and the history), timing each request until the answer
   (the job is then in the queue). The user's token was used once before (``GET /v1/endpoints``), so
   its worker is running, as for any user who has called the service in the last minute. Baseline in
   the same run: the same number of concurrent ``condor_submit -terse`` of the same job, as the user
   (``nsenter``+``chroot`` of each costs a few ms, which the baseline's figure includes).
2. **GET**: ``--jobs`` (10,000) transfer jobs of the user are put in the queue with one
   ``condor_submit`` (``queue N`` of the same description), then ``GET /v1/transfers`` (the first page,
   100, and a full page, 1,000) is timed ``--gets`` times. Baseline: ``condor_q -json`` of the same
   constraint, projection and limit, as the user
   for what the service adds.

Goals printed beside the figures: POST p95 <= 100 ms, GET <= 300 ms. The machine may be shared: run it
on a quiet one for figures to quote.

    .venv/bin/python -m benchmarks.transfer_api [--short]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from benchmarks._sandbox import median, percentile, table
from lark.pool.util import in_parallel
from tests.pool.harness import CACHE_ROOT, USER, Pool, image_info, raise_interrupt, unused_pool
from tests.support import wait_until

PORT = 8642
POST_GOAL_MS, GET_GOAL_MS = 100.0, 300.0
ENDPOINTS = """\
endpoints:
  web:
    protocol: https
    url: http://127.0.0.1:9/
    site: BENCH
"""


def install_service(pool: Pool) -> None:
    """FastAPI and uvicorn into the pool's venv, from wheels for its Python downloaded on the host."""
    python = str(image_info(pool.image)["python"])
    tag = "cp" + python.replace(".", "")
    cache = CACHE_ROOT / f"wheelhouse-{tag}"
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--dest", str(cache), "--only-binary=:all:",
                    "--python-version", python, "--implementation", "cp", "--abi", tag, "--abi", "abi3", "--abi",
                    "none", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "any", "fastapi", "uvicorn"],
                   check=True, timeout=600)
    inside = "/root/transfer-wheels"
    subprocess.run(["cp", "-r", str(cache), str(pool.host_path(inside))], check=True)
    pool.run(["/opt/lark/venv/bin/pip", "install", "-q", "--no-index", "--find-links", inside, "fastapi", "uvicorn"],
             timeout=300)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def concurrently(clients: int, per_client: int, one: Callable[[int, int], float]) -> list[float]:
    """``one(client, i)`` ``per_client`` times in each of ``clients`` threads; every latency (ms)."""
    results: list[float] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        for i in range(per_client):
            ms = one(number, i)
            with lock:
                results.append(ms)

    in_parallel([functools.partial(client, c) for c in range(clients)])
    return results


# One client: a process of its own (10 threads of one Python would time their own GIL contention), with
# a keep-alive session as a portal keeps; it prints each POST's latency (ms), request sent to answer read.
CLIENT = """
import json, sys, time, uuid, requests
base, token, client, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
session = requests.Session()
session.headers["Authorization"] = "Bearer " + token
sys.stdin.readline()  # all clients start together
out = []
for i in range(count):
    body = {"verb": "get", "source": "web:bench/file", "destination": "/tmp/bench-%d-%d" % (client, i),
            "submission_id": str(uuid.uuid4())}
    t0 = time.perf_counter()
    r = session.post(base + "/v1/transfers", json=body, timeout=60)
    out.append((time.perf_counter() - t0) * 1000)
    if r.status_code != 201:
        sys.exit("POST answered %d: %s" % (r.status_code, r.text[:300]))
print(json.dumps(out))
"""


def post_clients(netns_path: str, base: str, token: str, clients: int, per_client: int) -> list[float]:
    """``clients`` client processes in the pool's network namespace, each POSTing ``per_client`` times."""
    procs = [subprocess.Popen(["nsenter", f"--net={netns_path}", sys.executable, "-c", CLIENT, base, token, str(c),
                               str(per_client)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for c in range(clients)]
    time.sleep(1.0)  # let every client import requests before any starts
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    latencies: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"a POST client failed (exit {proc.returncode})")
        latencies += json.loads(out)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--posts", type=int, default=20, help="POSTs per client")
    parser.add_argument("--jobs", type=int, default=10_000, help="transfers in the queue for the GET test")
    parser.add_argument("--gets", type=int, default=20)
    parser.add_argument("--short", action="store_true", help="5 POSTs per client, 2,000 jobs, 5 GETs")
    args = parser.parse_args()
    if args.short:
        args.posts, args.jobs, args.gets = 5, 2000, 5
    if os.geteuid() != 0:
        sys.exit("run as root (the benchmark starts an HTCondor pool in a namespace of its own)")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, raise_interrupt)
    import requests

    from lark.transfer.endpoints import parse_endpoints
    from lark.transfer.jobs import PROJECTION, submit_description, submit_text
    from lark.transfer.model import validate

    pool = unused_pool("larkt")
    daemon: subprocess.Popen[str] | None = None
    try:
        pool.start()
        pool.add_config("60-transfer-bench.conf", "START = False\nMAX_JOBS_SUBMITTED = 100000\n"
                                                  "MAX_JOBS_PER_OWNER = 100000\n")
        pool.reconfig()
        install_service(pool)
        pool.write("/etc/lark/endpoints.yaml", ENDPOINTS, owner="root")
        token = pool.run(["condor_token_create", "-identity", f"{USER}@lark.test"]).stdout.strip()
        daemon = subprocess.Popen(
            ["nsenter", f"--net={pool.netns_path}", "chroot", str(pool.root), "/usr/bin/env", "-i",
             "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "/opt/lark/venv/bin/python", "-m",
             "lark.transfer.daemon", "--endpoints", "/etc/lark/endpoints.yaml", "--port", str(PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        base = f"http://127.0.0.1:{PORT}"

        def up() -> bool:
            try:
                return pool.call_in_netns(lambda: session.get(f"{base}/v1/endpoints", timeout=30)).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until("lark-transferd", up, 60, 0.3)
        print(f"pool {pool.prefix}, HTCondor {pool.condor_version}, load {os.getloadavg()[0]:.2f} "
              f"(the machine may be shared: figures are indicative)")

        # 0. the first call of a token the service has not seen: its worker starts (a process, the
        # bindings, an authentication); a warm token's call for comparison
        def first_call(fresh: str) -> float:
            def call() -> None:
                r = requests.get(f"{base}/v1/endpoints", headers={"Authorization": f"Bearer {fresh}"}, timeout=60)
                assert r.status_code == 200, r.text
            return pool.call_in_netns(lambda: timed(call))

        fresh_tokens = [pool.run(["condor_token_create", "-identity", f"{USER}@lark.test", "-lifetime",
                                  str(3600 + n)]).stdout.strip() for n in range(args.gets)]
        cold_ms = [first_call(t) for t in fresh_tokens]
        warm_ms = [first_call(token) for _ in range(args.gets)]

        # 1. POST under concurrency, and the bare condor_submit of the same job
        def posts(clients: int, per_client: int) -> list[float]:
            return post_clients(pool.netns_path, base, token, clients, per_client)

        endpoints = {e.name: e for e in parse_endpoints(ENDPOINTS, "bench")[0]}
        request = validate({"verb": "get", "source": "web:bench/file", "destination": "/tmp/bench"}, endpoints, USER)
        one_job = submit_text(submit_description(request, f"{pool.home(USER)}/bench"))
        pool.write("bench.sub", one_job, owner=USER)

        def bare(client: int, i: int) -> float:
            return timed(lambda: pool.run(["condor_submit", "-terse", "bench.sub"], user=USER))

        post_ms = posts(args.clients, args.posts)
        bare_ms = concurrently(args.clients, args.posts, bare)

        # 2. GET over N transfers in the queue
        many = one_job.replace("queue 1\n", f"queue {args.jobs}\n")
        pool.write("many.sub", many, owner=USER)
        pool.run(["condor_submit", "-terse", "many.sub"], user=USER, timeout=600)
        total = args.jobs + 2 * args.clients * args.posts

        def get(limit: int) -> float:
            def call() -> None:
                r = session.get(f"{base}/v1/transfers", params={"limit": limit}, timeout=120)
                assert r.status_code == 200 and r.json()["count"] == limit, r.text[:300]
            return pool.call_in_netns(lambda: timed(call))

        def bare_q(limit: int) -> float:
            where = f'Owner == "{USER}" && LarkTransferVerb isnt undefined'
            return timed(lambda: pool.run(["condor_q", "-json", "-limit", str(limit + 1), "-constraint", where,
                                           "-attributes", ",".join(PROJECTION)], user=USER, timeout=120))

        get_rows = []
        for limit in (100, 1000):
            service_ms = [get(limit) for _ in range(args.gets)]
            bare_ms_q = [bare_q(limit) for _ in range(args.gets)]
            get_rows.append((limit, service_ms, bare_ms_q))

        print(f"\nPOST /v1/transfers, {args.clients} concurrent clients x {args.posts}, vs condor_submit (ms):")
        print(table(["path", "n", "p50", "p95", "max", "goal p95"], [
            ("lark-transferd POST", len(post_ms), median(post_ms), percentile(post_ms, 95), max(post_ms),
             POST_GOAL_MS),
            ("bare condor_submit", len(bare_ms), median(bare_ms), percentile(bare_ms, 95), max(bare_ms), ""),
        ]))
        print(f"ratio p95 service / condor_submit: {percentile(post_ms, 95) / percentile(bare_ms, 95):.2f}")
        print(f"\nGET /v1/endpoints: a token's first call (its worker starts), a known token's (ms, {args.gets} each):")
        print(table(["call", "p50", "p95", "max"], [
            ("first call of a new token", median(cold_ms), percentile(cold_ms, 95), max(cold_ms)),
            ("call of a known token", median(warm_ms), percentile(warm_ms, 95), max(warm_ms)),
        ]))
        print(f"\nGET /v1/transfers with {total} of the user's transfers in the queue (ms, {args.gets} each):")
        rows = []
        for limit, ms, q_ms in get_rows:
            rows.append((f"GET limit={limit}", median(ms), percentile(ms, 95), max(ms), GET_GOAL_MS))
            rows.append((f"condor_q -json -limit {limit + 1}", median(q_ms), percentile(q_ms, 95), max(q_ms), ""))
        print(table(["path", "p50", "p95", "max", "goal"], rows))
    except Exception:
        log = pool.root / "var/log/condor/SchedLog"
        if log.exists():
            print("SchedLog, last lines:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        raise
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        pool.teardown()


if __name__ == "__main__":
    main()
