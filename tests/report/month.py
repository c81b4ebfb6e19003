"""A month of accounting as an admin would have it: 200 jobs (6 users, 3 accounting groups, 6 execute
sites, two traffic classes plus unclassified bytes, a few jobs without counters) written as a schedd
history file by classad2, and a GridFTP log of 1,649 transfers on 3 servers in bursts (sessions) of
varying concurrency.

Every number is drawn from a seeded generator and kept in plain Python (:class:`MonthJob`), so tests
can compute the expected totals and charges on their own, without the report's code.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from .conftest import gridftp_line, make_ad, write_history

OCT = 1790812800  # 2026-10-01 00:00:00 UTC
DAYS = 31
USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
GROUP_OF = {"alice": "cms", "bob": "cms", "carol": "atlas", "dave": "atlas", "erin": "ligo", "frank": "ligo"}
GLIDEIN_SITES = ("UNL", "MIT", "UCSD", "FNAL")
HOST_SITES = {"wisc.edu": "slot1_3@wn{n}.wisc.edu", "purdue.edu": "slot1@cms-{n}.purdue.edu"}  # from LastRemoteHost
RATES = {"default": 0.01, "wan": 0.05, "wan:out": 0.08, "campus": 0.0}  # per GB = 10^9 bytes
CHARGE_ARGS = ["--charge", "default=0.01", "--charge", "wan=0.05", "--charge", "wan:out=0.08",
               "--charge", "campus=0", "--currency", "EUR"]
GB = 1e9
SERVERS = ("dtn1.example.org", "dtn2.example.org", "dtn3.example.org")
N_TRANSFERS = 1649


@dataclass(frozen=True)
class MonthJob:
    cluster: int
    user: str
    group: str
    site: str
    start: int
    end: int
    counters: bool
    wan_in: int = 0
    wan_out: int = 0
    campus_in: int = 0
    campus_out: int = 0
    rest_in: int = 0  # bytes in no class
    rest_out: int = 0

    @property
    def bytes_in(self) -> int:
        return self.wan_in + self.campus_in + self.rest_in

    @property
    def bytes_out(self) -> int:
        return self.wan_out + self.campus_out + self.rest_out

    @property
    def charge(self) -> float:
        """Worked out from RATES by hand: wan in 0.05, wan out 0.08, campus 0, the rest 0.01 (per GB)."""
        if not self.counters:
            return 0.0
        return (self.wan_in * 0.05 + self.wan_out * 0.08 + (self.rest_in + self.rest_out) * 0.01) / GB


def month_jobs(seed: int = 16) -> list[MonthJob]:
    rng = random.Random(seed)
    sites = [*GLIDEIN_SITES, *HOST_SITES]
    jobs = []
    for i in range(200):
        user = USERS[min(int(rng.expovariate(0.6)), len(USERS) - 1)]  # a few heavy users, a long tail
        start = OCT + rng.randrange((DAYS - 6) * 86400)
        # wall times from minutes to 5 days, so the wall column needs days, hours and minutes
        end = start + int(rng.choice((rng.uniform(300, 7200), rng.uniform(3600, 40 * 3600), rng.uniform(1, 5) * 86400)))
        counters = i % 40 != 7  # 5 jobs without any network counter
        big = 10 ** rng.uniform(8, 11)
        jobs.append(MonthJob(
            cluster=1000 + i, user=user, group=GROUP_OF[user], site=rng.choice(sites), start=start, end=end,
            counters=counters,
            wan_in=int(big * rng.uniform(0.2, 0.7)) if counters else 0,
            wan_out=int(big * rng.uniform(0.01, 0.2)) if counters else 0,
            campus_in=int(big * rng.uniform(0, 0.4)) if counters and i % 3 else 0,
            campus_out=int(big * rng.uniform(0, 0.05)) if counters and i % 3 else 0,
            rest_in=rng.randrange(10**6, 10**8) if counters else 0,
            rest_out=rng.randrange(10**5, 10**7) if counters else 0))
    return jobs


def job_ad(j: MonthJob, n: int):  # -> classad2.ClassAd
    attrs: dict[str, object] = {
        "ClusterId": j.cluster, "ProcId": 0, "Owner": j.user, "User": f"{j.user}@submit.example.org",
        "GlobalJobId": f"submit.example.org#{j.cluster}.0#{j.start - 600}", "JobCurrentStartDate": j.start,
        "CompletionDate": j.end, "LarkSourceSite": "FNAL" if n % 2 else "CERN", "BytesSent": float(n * 1000),
        "BytesRecvd": float(n * 50_000), "TransferInputSizeMB": n % 50,
    }
    # accounting group: AcctGroup on most jobs, only AccountingGroup (group.user) on some
    if n % 4:
        attrs["AcctGroup"] = j.group
    else:
        attrs["AccountingGroup"] = f"{j.group}.{j.user}"
    # completed jobs have LastRemoteHost and no RemoteHost
    if j.site in GLIDEIN_SITES:
        attrs["MachineAttrGLIDEIN_Site0"] = j.site
        attrs["LastRemoteHost"] = f"slot1@glidein-{n}.example.net"
    else:
        attrs["LastRemoteHost"] = HOST_SITES[j.site].format(n=n)
    if j.counters:
        attrs.update({"LarkNetworkType": "nat", "LarkBytesIn": j.bytes_in, "LarkBytesOut": j.bytes_out,
                      "LarkBytesInWan": j.wan_in, "LarkBytesOutWan": j.wan_out})
        if j.campus_in or j.campus_out:
            attrs.update({"LarkBytesInCampus": j.campus_in, "LarkBytesOutCampus": j.campus_out})
    return make_ad(attrs)


def write_month_history(path: Path, jobs: list[MonthJob]) -> Path:
    return write_history(path, [job_ad(j, n) for n, j in enumerate(jobs)])


def _stamp(t: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(int(t))) + f".{int(round((t % 1) * 1e6)) % 1000000:06d}"


def write_month_gridftp(path: Path, seed: int = 17) -> list[tuple[float, float, int, str, str]]:
    """1,649 transfers (start, end, bytes, user, server) in bursts; written in completion order."""
    rng = random.Random(seed)
    transfers: list[tuple[float, float, int, str, str, str]] = []
    # one short burst of 12 transfers at once on dtn2: a concurrency band with only a handful of transfers
    t0 = OCT + 20 * 86400 + 3600
    for k in range(12):
        size = int(10 ** rng.uniform(8, 9))
        transfers.append((t0 + k, t0 + 600 + 10 * k, size, "erin", SERVERS[1], "[198.51.100.77]"))
    while len(transfers) < N_TRANSFERS:
        user, server = rng.choice(USERS[:5]), rng.choice(SERVERS)
        remote = f"[198.51.100.{rng.randrange(1, 20)}]"
        t = OCT + rng.uniform(0, (DAYS - 1) * 86400)
        parallel = rng.choice((1, 1, 2, 4, 8))  # streams of transfers at once: the concurrency bands
        for _ in range(min(rng.randrange(1, 40), N_TRANSFERS - len(transfers))):
            size = int(10 ** rng.uniform(6, 10))
            dur = max(size / (10 ** rng.uniform(6.5, 8.3)) * (1 + 0.3 * parallel), 0.5)
            transfers.append((t, t + dur, size, user, server, remote))
            t += dur / parallel + rng.expovariate(1 / 15)
    transfers.sort(key=lambda x: x[1])
    path.write_text("\n".join(gridftp_line(_stamp(s), _stamp(e), b, user=u, host=h, dest=r,
                                           kind=rng.choice(("RETR", "RETR", "STOR")))
                              for s, e, b, u, h, r in transfers) + "\n")
    return [(s, e, b, u, h) for s, e, b, u, h, _ in transfers]
