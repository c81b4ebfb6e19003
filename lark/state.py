"""Persisted job records: what Lark created for each job, so it can be removed after any crash.

A record is written *before* the first kernel object is created (status ``setting-up``) and
updated to ``up`` when everything is in place. Removal reads only the record, never the request,
so a broker restart, a killed ``lark up`` or a vanished job all end in the same idempotent
``down``. One JSON file per job under ``<state>/jobs``, replaced atomically.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from lark.ipam import Allocation

# setting-up: written before the first kernel object (a crash from here on is swept);
# up: everything in place; tearing-down: a teardown failed part-way, the next sweep retries it
JobStatus = Literal["setting-up", "up", "tearing-down"]
# What the previous record format kept in its ``extra`` dict, now typed fields of the same names.
_FORMER_EXTRA = ("creator_pid", "creator_start", "starter_pid", "starter_start", "chirp", "global_job_id",
                 "carried", "profile_env")


def _address(text: str | None) -> str | None:
    """``10.250.0.2/30`` -> ``10.250.0.2`` (a gateway recorded without a prefix length stays as it is)."""
    return text.partition("/")[0] if text else None


@dataclass
class JobRecord:
    token: str
    job_id: str
    mode: str  # an attachment mode's name (lark.attach)
    status: JobStatus
    netns: str  # path of the job's namespace
    netns_owned: bool  # Lark created it (lark run / lark up) and deletes it on down
    # The path the caller gave (``/proc/<pid>/ns/net``) when Lark pinned that namespace at
    # ``netns`` (``/run/netns/<prefix>-<token>``): the pin keeps the job's counters readable
    # after its processes are gone; liveness still follows the source (see Engine.is_alive).
    netns_source: str | None = None
    netns_inode: int = 0
    holder_pid: int | None = None  # the process whose life bounds the job (wrapper, lark run)
    holder_start: int | None = None  # its start time in clock ticks, so a reused pid is not taken for it
    host_ifname: str | None = None
    job_ifname: str | None = None
    parent: str | None = None  # bridge or parent interface
    ipv4: str | None = None  # job address with prefix length, e.g. "10.250.0.2/30"
    ipv6: str | None = None
    host_ipv4: str | None = None  # host end / gateway
    host_ipv6: str | None = None
    public_ipv4: str | None = None  # where inbound ports are reachable
    ports: tuple[int, int] | None = None
    bandwidth_in_mbit: int = 0
    bandwidth_out_mbit: int = 0
    firewall: str = "nftables"
    firewall_job_side: bool = False
    firewall_spec: dict[str, object] = field(default_factory=dict)  # FirewallJob as JSON
    allocations: list[Allocation] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    owner_uid: int | None = None
    # The process that writes the record while it is setting up (a dead creator: swept).
    creator_pid: int | None = None
    creator_start: int | None = None
    # Set by the broker for HTCondor jobs: the job's starter (one network per starter at a time),
    # its chirp address, its GlobalJobId, earlier runs' totals and the profile's extra environment.
    starter_pid: int | None = None
    starter_start: int | None = None
    chirp: dict[str, object] | None = None  # lark.broker.condor.ChirpAddress.to_dict()
    global_job_id: str | None = None
    carried: dict[str, int | float] = field(default_factory=dict)  # accounting attribute -> earlier total
    profile_env: dict[str, str] = field(default_factory=dict)
    # Where the addresses come from (lark.addressing): "static" (Lark's pools), "dhcp", "slaac",
    # "dhcp+slaac". A DHCP job's lease facts follow, kept up to date by the broker from the client's
    # event log (lease_events_seen of its lines read so far).
    addressing: str = "static"
    dhcp_client_id: str | None = None  # option 61 as hex
    lease_server: str | None = None
    lease_expires: float | None = None  # seconds since the epoch
    lease_renewals: int = 0
    lease_expiries: int = 0  # leases that ran out unrenewed while the job ran (server gone)
    lease_events_seen: int = 0
    # Per-user shares (lark.sharetree): user, accounting group, HTB class ids, uplink; empty: none.
    share: dict[str, object] = field(default_factory=dict)

    @property
    def ipv4_address(self) -> str | None:
        return _address(self.ipv4)

    @property
    def ipv6_address(self) -> str | None:
        return _address(self.ipv6)

    @property
    def host_ipv4_address(self) -> str | None:
        """The host end's (NAT) or the gateway's (site modes) IPv4 address, without a prefix length."""
        return _address(self.host_ipv4)

    @property
    def host_ipv6_address(self) -> str | None:
        return _address(self.host_ipv6)

    def to_json(self) -> str:
        data = asdict(self)
        data["allocations"] = [[a.pool, a.slot] for a in self.allocations]
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobRecord:
        """A record of this format, or of the previous one (its ``extra`` dict): state survives an upgrade."""
        data = json.loads(text)
        data["allocations"] = [Allocation(p, s) for p, s in data.get("allocations", [])]
        if data.get("ports") is not None:
            data["ports"] = tuple(data["ports"])
        extra = data.pop("extra", None)
        if isinstance(extra, dict):
            for name in _FORMER_EXTRA:
                if extra.get(name) is not None and data.get(name) is None:
                    data[name] = extra[name]
        for name in ("carried", "profile_env"):
            if not isinstance(data.get(name), dict):
                data.pop(name, None)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir
        self.jobs_dir = state_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, token: str) -> Path:
        return self.jobs_dir / f"{token}.json"

    def save(self, record: JobRecord) -> None:
        tmp = self.jobs_dir / f".{record.token}.{os.getpid()}.tmp"
        tmp.write_text(record.to_json())
        os.replace(tmp, self.path(record.token))

    def load(self, token: str) -> JobRecord | None:
        try:
            return JobRecord.from_json(self.path(token).read_text())
        except FileNotFoundError:
            return None

    def delete(self, token: str) -> None:
        self.path(token).unlink(missing_ok=True)

    def all(self) -> list[JobRecord]:
        out = []
        for p in sorted(self.jobs_dir.glob("*.json")):
            try:
                out.append(JobRecord.from_json(p.read_text()))
            except (FileNotFoundError, json.JSONDecodeError, TypeError):
                continue  # a half-written file cannot exist (atomic replace); a foreign one is ignored
        return out

    def find(self, job_id_or_token: str) -> JobRecord | None:
        rec = self.load(job_id_or_token) if len(job_id_or_token) == 6 else None
        if rec:
            return rec
        for rec in self.all():
            if rec.job_id == job_id_or_token:
                return rec
        return None


def process_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def holder_alive(record: JobRecord) -> bool:
    if record.holder_pid is None:
        return True  # no holder: lives until an explicit down (lark up)
    return process_start_time(record.holder_pid) == record.holder_start
