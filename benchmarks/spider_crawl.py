"""Crawl an OSG-scale perfSONAR deployment on loopback; print crawl time and peak RSS.

    .venv/bin/python -m benchmarks.spider_crawl [--sites 301] [--opensearch-fraction 0.5] [--crawls 2]
        [--history-fraction 1.0] [--stale-fraction 0.05] [--code DIR]

Generates a full throughput mesh over ``--sites`` sites (301 sites -> 90,300 directed pairs), one
perfSONAR host and one archive per site, each archive on its own loopback port (so the spider sees
as many archive hosts as sites). Each archive holds the tests its site ran as source: a fraction is
perfSONAR 5 OpenSearch, the rest alternates legacy esmond and elmond. Four runs per pair per day
(cadence PT6H), ~5 % of pairs with a failed run. Archives keep history, as real ones do: a share of
the pairs (``--history-fraction``, default all) also has one run a day 2 to 6 days back, and a share
(``--stale-fraction``, default 5 %) has only those older runs and none in the 1-day window, so the
look-back for stale pairs (OpenSearch's second query, esmond's 7-day metadata listing) has real
work to do. Sites are mapped through a generated GOCDB-style
registry and a static address table (no DNS). The archives are served by a separate process with an
asyncio HTTP/1.1 keep-alive server, so the spider's own RSS is measured alone. ``--code DIR`` imports
the spider from another checkout (e.g. a ``git worktree`` of an older commit) while the archives
and their data stay this script's, for side-by-side measurements.

Per crawl it prints the wall time, the spider's CPU, the peak RSS so far and the crawl's own peak RSS
(the kernel's high-water mark, reset before each crawl through ``/proc/self/clear_refs``); at the end
the medians of the first crawl and of the later ones (a daemon's steady state) separately.

The timed crawl covers discovery, reading every archive, site mapping, grading, merging with the
state file, and building every ClassAd in the publisher's batches (without a collector). The
goal is <= 60 s and <= 300 MB on the 2-CPU machine of docs/baselines.md; this script prints figures and never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# The archive emulator always comes from this tree; with --code DIR the spider is imported from DIR,
# so two versions of the spider are measured against the same archives.
from tests.perfsonar.fakeps import (
    EsmondApp,
    EsmondTest,
    OpenSearchApp,
    StaticApp,
    esmond_archiver,
    http_archive,
    os_doc,
    pub_config_list,
)


def _code_dir(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--code" and i + 1 < len(argv):
            return str(Path(argv[i + 1]).resolve())
        if arg.startswith("--code="):
            return str(Path(arg.split("=", 1)[1]).resolve())
    return None


CODE = _code_dir(sys.argv)
if CODE:
    sys.path.insert(0, CODE)

from perfsonar.config import parse_config  # noqa: E402
from perfsonar.crawl import Spider  # noqa: E402
from perfsonar.log import setup_logging  # noqa: E402


def host_of(i: int) -> str:
    return f"ps-bw.site{i:03d}.example"


def ip_of(i: int) -> str:
    return f"10.{i // 250}.{i % 250}.10"


def kind_of(i: int, opensearch_fraction: float, sites: int) -> str:
    if i < round(opensearch_fraction * sites):
        return "opensearch"
    return "esmond" if i % 2 == 0 else "elmond"


# ------------------------------------------------------------------------------------------------
# The archive side (child process)


async def _serve_app(app: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mount: str = "") -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            method, target, _ = line.decode("latin-1").split(" ", 2)
            length = 0
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            parts = urlsplit(target)
            path = parts.path[len(mount):] if mount and parts.path.startswith(mount) else parts.path
            status, payload, ctype = app.handle(method, path, parse_qs(parts.query), body, "")
            data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n\r\n"
                         .encode() + data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def _share(i: int, j: int, salt: int, fraction: float) -> bool:
    """A deterministic pseudo-random ``fraction`` of the pairs (different pairs for each ``salt``)."""
    return ((i * 7919 + j * 104729 + salt * 15485863) % 1000) < fraction * 1000


def _archives(sites: int, fraction: float, now: float, history: float = 1.0, stale: float = 0.05) -> list[Any]:
    apps: list[Any] = []
    t = int(now)
    for i in range(sites):
        kind = kind_of(i, fraction, sites)
        app: Any = OpenSearchApp() if kind == "opensearch" else EsmondApp(kind)
        for j in range(sites):
            if i == j:
                continue
            is_stale = _share(i, j, 1, stale)
            runs = [] if is_stale else [(t - 3600 - 21600 * k, 9.4e9 - 1e7 * ((i * 7 + j * 3 + k) % 100))
                                        for k in range(4)]
            if is_stale or _share(i, j, 2, history):  # one run a day, 2 to 6 days back (oldest first below)
                runs += [(t - 86400 * d - 3600, 9.3e9 - 1e7 * ((i + j + d) % 50)) for d in range(2, 7)]
            runs.sort()
            failed = not is_stale and (i * 31 + j * 17) % 20 == 0
            if kind == "opensearch":
                for ts, bps in runs:
                    app.add(os_doc("throughput", (host_of(i), ip_of(i)), (host_of(j), ip_of(j)), 4, ts,
                                   throughput=bps, repeat=21600.0))
                if failed:
                    app.add(os_doc("throughput", (host_of(i), ip_of(i)), (host_of(j), ip_of(j)), 4, t - 30000,
                                   succeeded=False, error="iperf3: connection refused", repeat=21600.0))
            else:
                points: dict[str, list[tuple[int, Any]]] = {"throughput": runs}  # type: ignore[dict-item]
                if failed:
                    points["failures"] = [(t - 30000, {"error": "iperf3: connection refused"})]
                app.add(EsmondTest("throughput", ip_of(i), ip_of(j), host_of(i), host_of(j), points=points))
        apps.append(app)
    return apps


def serve(sites: int, fraction: float, now: float, conn: Any, history: float = 1.0, stale: float = 0.05) -> None:
    async def main() -> None:
        apps = _archives(sites, fraction, now, history, stale)
        ports: list[int] = []
        servers = []
        for app in apps:
            mount = "/opensearch" if isinstance(app, OpenSearchApp) else ""
            srv = await asyncio.start_server(lambda r, w, a=app, m=mount: _serve_app(a, r, w, m), "127.0.0.1", 0,
                                             backlog=256)
            servers.append(srv)
            ports.append(srv.sockets[0].getsockname()[1])
        pub = StaticApp()
        srv = await asyncio.start_server(lambda r, w: _serve_app(pub, r, w), "127.0.0.1", 0)
        pub_port = srv.sockets[0].getsockname()[1]
        archives: dict[str, Any] = {}
        hosts: dict[str, Any] = {}
        for i, port in enumerate(ports):
            base = f"http://127.0.0.1:{port}"
            if kind_of(i, fraction, sites) == "opensearch":
                archives[f"a{i}"] = http_archive(f"{base}/logstash", None)
            else:
                archives[f"a{i}"] = esmond_archiver(f"{base}/esmond/perfsonar/archive/")
            hosts[host_of(i)] = {"archives": [f"a{i}"]}
        mesh = {"_meta": {"display-name": "OSG-scale throughput"}, "archives": archives,
                "addresses": {host_of(i): {"address": host_of(i)} for i in range(sites)},
                "groups": {"all": {"type": "mesh", "addresses": [{"name": host_of(i)} for i in range(sites)]}},
                "tests": {"bw": {"type": "throughput", "spec": {"source": "{% address[0] %}",
                                                                "dest": "{% address[1] %}"}}},
                "schedules": {"6h": {"repeat": "PT6H", "slip": "PT6H", "sliprand": True}},
                "tasks": {"bw": {"group": "all", "test": "bw", "schedule": "6h"}},
                "hosts": hosts}
        pub.put("/pub/config/osg-bw", mesh)
        pub.put("/pub/config", pub_config_list([f"http://127.0.0.1:{pub_port}/pub/config/osg-bw"]))
        conn.send(pub_port)
        await asyncio.Event().wait()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------
# The spider side (this process)


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of another process (the archive server) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM), so each crawl's own peak can be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=301)
    ap.add_argument("--opensearch-fraction", type=float, default=0.5)
    ap.add_argument("--crawls", type=int, default=2, help="crawls to time (the second reuses the state file)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--history-fraction", type=float, default=1.0,
                    help="share of pairs with one run a day 2-6 days back, before the 1-day window")
    ap.add_argument("--stale-fraction", type=float, default=0.05,
                    help="share of pairs with only those older runs (published as stale)")
    ap.add_argument("--code", metavar="DIR", help="import the spider from this checkout (default: this one)")
    args = ap.parse_args()

    now = time.time()
    parent, child = multiprocessing.get_context("fork").Pipe()
    t0 = time.monotonic()
    proc = multiprocessing.get_context("fork").Process(target=serve, args=(args.sites, args.opensearch_fraction,
                                                                           now, child, args.history_fraction,
                                                                           args.stale_fraction), daemon=True)
    proc.start()
    pub_port = parent.recv()
    setup = time.monotonic() - t0
    pairs = args.sites * (args.sites - 1)

    with tempfile.TemporaryDirectory(prefix="lark-spider-bench-") as tmp:
        registry = Path(tmp) / "gocdb.json"
        registry.write_text(json.dumps([{"HOSTNAME": host_of(i), "SERVICE_TYPE": "net.perfSONAR.Bandwidth",
                                         "SITENAME": f"SITE{i:03d}", "IN_PRODUCTION": "Y"}
                                        for i in range(args.sites)]))
        cfg = parse_config({
            "spider": {"state_file": f"{tmp}/state.json", "concurrency": args.concurrency},
            "http": {"timeout": 30, "retries": 1, "per_host_connections": 2},
            "discovery": {"publishers": [f"http://127.0.0.1:{pub_port}/pub/config"], "derive_opensearch": True},
            "measurements": {"tests": ["throughput"]},
            "sites": {"registries": [{"type": "gocdb", "path": str(registry)}],
                      "hosts": {host_of(i): [ip_of(i)] for i in range(args.sites)}, "resolve_dns": False},
            "collector": {"status_ad": False},
        }, f"{tmp}/spider.yaml")
        print(f"mesh: {args.sites} sites, {pairs} directed pairs, {args.sites} archive hosts on loopback "
              f"({round(args.opensearch_fraction * args.sites)} OpenSearch, the rest esmond/elmond); "
              f"history 2-6 days back for {args.history_fraction:.0%} of pairs, {args.stale_fraction:.0%} stale; "
              f"archive data generated in {setup:.1f} s")
        setup_logging(f"{tmp}/LarkSpiderLog")
        spider = Spider(cfg)
        print(f"spider code: {CODE or Path(__file__).resolve().parent.parent}")
        figures: list[tuple[float, float, float]] = []  # (wall, spider CPU, this crawl's peak RSS) per crawl
        for n in range(1, args.crawls + 1):
            per_crawl_peak = reset_peak()
            t = time.monotonic()
            cpu0 = os.times()
            server0 = cpu_of(proc.pid)
            result = spider.crawl()
            crawled = time.monotonic() - t
            ads = 0
            for batch in spider.ad_batches(result):  # what the daemon hands to the collector, batch by batch
                ads += len(batch)
            total = time.monotonic() - t
            cpu1 = os.times()
            cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            server_cpu = cpu_of(proc.pid) - server0
            s = result.stats
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in s.phases.items())
            print(f"crawl {n}: {total:.1f} s total ({crawled:.1f} s crawl [{phases}] + {total - crawled:.1f} s "
                  f"building {ads} ads); CPU: spider {cpu:.1f} s, archive server {server_cpu:.1f} s; "
                  f"{s.requests} HTTP requests, {s.series} series, {s.samples} samples, {s.links} links "
                  f"({dict(s.grades)}), {s.archives_failed} archives failed, {s.errors} errors; "
                  f"peak RSS so far {rss_mb():.0f} MB"
                  + (f", this crawl {peak_mb():.0f} MB" if per_crawl_peak else ""))
            figures.append((total, cpu, peak_mb() if per_crawl_peak else rss_mb()))
            del result  # as the daemon does: a crawl's result is dropped once its ads are published
        spider.close()
        print("spider log (last line):", Path(f"{tmp}/LarkSpiderLog").read_text().splitlines()[-1], sep="\n  ")
    proc.kill()
    proc.join()
    for label, part in (("first crawl", figures[:1]), ("later crawls (steady state)", figures[1:])):
        if part:
            wall, cpu, peak = (statistics.median(f[i] for f in part) for i in range(3))
            print(f"median of {label} ({len(part)}): wall {wall:.1f} s, spider CPU {cpu:.1f} s, peak RSS {peak:.0f} MB")
    print(f"goal: <= 60 s per crawl and <= 300 MB peak RSS; peak RSS {rss_mb():.0f} MB "
          f"(pid {os.getpid()}, archives served by pid {proc.pid})")


if __name__ == "__main__":
    main()
