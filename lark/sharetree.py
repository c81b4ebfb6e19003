"""The kernel side of the per-user shares (:mod:`lark.shares`): HTB trees and the download IFB.

What Lark creates while at least one job holds a share, and removes with the last one:

* an HTB root qdisc ``1:`` on the uplink (``LARK_SHARES_UPLINK``) with the upload tree; packets
  without a Lark class (the host's own traffic) go HTB's direct queue, unshaped;
* with ``LARK_SHARES_DOWNLINK_MBIT``, an IFB device ``<prefix>-shdown`` carrying the download tree:
  each veth job's host end gets a ``clsact`` egress filter redirecting what the job receives to
  it; the IFB hands every packet back to the veth afterwards (its own download cap still applies);
* the classification maps (:mod:`lark.firewall.shares`), and for jobs without a host-side
  interface (macvlan) one rule inside the job's namespace.

The uplink's qdisc is Lark's only while ``<state>/shares.json`` says so (written before the
qdisc is put there), so a sweep after a crash removes it and never an admin's own.

Every change rebuilds the whole tree from the job records (:meth:`ShareTree.sync`), under a lock:
the rates of every class depend on who is present, and a rebuild is a handful of netlink
messages. Class ids and the user each job belongs to are in its record (``JobRecord.share``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lark.errors import KernelError
from lark.firewall import shares as classify
from lark.journal import user_name as account_name
from lark.locks import file_lock
from lark.shares import (
    HTB_MAJOR,
    HtbClass,
    ShareSettings,
    allocate_classes,
    classid,
    classid_text,
    member_of,
    members_of,
    plan_tree,
)

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from lark.state import JobRecord, StateStore

log = logging.getLogger("lark.shares")
TC_H_ROOT = 0xFFFFFFFF
CLSACT_HANDLE = 0xFFFF0000
CLSACT_EGRESS = 0xFFFFFFF3
ETH_P_ALL = 0x0003
IFB_TXQUEUELEN = 1000  # an IFB with txqueuelen 0 drops under load


def ifb_name(prefix: str) -> str:
    return f"{prefix}-shdown"


def _tc_error(err: Exception, what: str) -> KernelError:
    code = getattr(err, "code", None)
    return KernelError(f"shares: {what}: {errno.errorcode.get(code, str(code)) if isinstance(code, int) else err}")


class ShareTree:
    """Joins jobs to the tree, removes them, and rebuilds it from the records (engine's kernel thread)."""

    def __init__(self, settings: ShareSettings, prefix: str, state_dir: Path, host_netns: str | None) -> None:
        self.settings = settings
        self.prefix = prefix
        self.host_netns = host_netns
        self.state_file = state_dir / "shares.json"
        self.lock = state_dir / ".shares.lock"

    # ---------------------------------------------------------------- engine hooks

    def join(self, host: IPRoute, store: StateStore, record: JobRecord, job: IPRoute | None,
             group: str | None = None) -> None:
        """Give ``record``'s job a leaf under its user's class (created with the user's first job)."""
        with file_lock(self.lock):
            everyone = store.all()
            others_records = [r for r in everyone if r.token != record.token]
            others = members_of(others_records)
            # the login (what HTCondor calls the Owner), else the uid; root for Lark's own jobs
            user = account_name(record.owner_uid or 0) or str(record.owner_uid)
            user_class, job_class = allocate_classes(others, user)
            record.share = {"user": user, "group": group or "", "user_class": user_class, "job_class": job_class,
                            "uplink": self.settings.uplink}
            store.save(record)  # recorded before the kernel has it: a crash from here on is swept
            if record.host_ifname is None and job is not None and record.job_ifname:
                classify.apply_job_side(self.prefix, record.job_ifname, classid_text(job_class), record.netns)
            self._sync(host, [*others_records, record], previous=others_records)

    def leave(self, host: IPRoute, store: StateStore, record: JobRecord) -> None:
        """Take the job off the tree (its user's class goes with the user's last job)."""
        if not record.share:
            return
        with file_lock(self.lock):
            rest = [r for r in store.all() if r.token != record.token]
            self._sync(host, rest, previous=[*rest, record])

    def sync(self, host: IPRoute, records: Iterable[JobRecord]) -> None:
        """Rebuild from ``records`` against the kernel (the sweep: dead jobs' classes go, a crash's
        leftovers too, a flushed classification comes back)."""
        with file_lock(self.lock):
            self._sync(host, records)

    # ---------------------------------------------------------------- the rebuild

    def _sync(self, host: IPRoute, records: Iterable[JobRecord], previous: list[JobRecord] | None = None) -> None:
        """Make the kernel hold the tree of ``records``. With ``previous`` (the records the kernel
        holds already: a job joining or leaving) only the classes and map elements that differ are
        written (its user's classes, its own elements); without, the kernel is read and everything
        rewritten."""
        records = [r for r in records if member_of(r) is not None]
        members = members_of(records)
        if not members or not self.settings.enabled:
            self._remove_all(host)
            return
        state = self._read_state()
        if state is not None and state != self._state():
            # the configuration changed under running jobs (another uplink, downloads switched
            # on or off): take the old tree down and build the new one whole
            for record in records:
                if record.host_ifname:
                    self._stop_redirect(host, record.host_ifname)
            self._remove_all(host)
            state, previous = None, None
        before = members_of(previous) if previous is not None else None
        if state != self._state():  # read above: written only when it says something new
            self._write_state()
        if self.settings.downlink_mbit:  # every veth job's downloads to the IFB: new jobs, or all of a new tree
            known = {r.token for r in previous or ()} if state is not None else set()
            for record in records:
                if record.host_ifname and record.token not in known and (previous is not None or state is None):
                    self._redirect_downloads(host, record.host_ifname)
        uplink = self._uplink_index(host)
        for index, mbit, direction in self._trees(host, uplink):
            old = plan_tree(mbit, self.settings, before, direction) if before else None
            self._apply(host, index, plan_tree(mbit, self.settings, members, direction), old)
        down = bool(self.settings.downlink_mbit)
        now = [classify.Classified(r.host_ifname, classid_text(int(r.share["job_class"])), down)  # type: ignore[call-overload]
               for r in records if r.host_ifname]
        if before:
            had = [classify.Classified(r.host_ifname, classid_text(int(r.share["job_class"])), down)  # type: ignore[call-overload]
                   for r in previous or () if r.host_ifname and member_of(r) is not None]
            classify.update_host(self.prefix, had, now, self.host_netns)
        else:
            classify.apply_host(self.prefix, now, self.host_netns)

    def _trees(self, host: IPRoute, uplink: int) -> list[tuple[int, int, str]]:
        trees = [(uplink, self.settings.uplink_mbit, "up")]
        if self.settings.downlink_mbit:
            trees.append((self._ensure_ifb(host), self.settings.downlink_mbit, "down"))
        return trees

    def _uplink_index(self, host: IPRoute) -> int:
        found = host.link_lookup(ifname=self.settings.uplink)
        if not found:
            raise KernelError(f"shares: the uplink {self.settings.uplink!r} (LARK_SHARES_UPLINK) does not exist")
        return int(found[0])

    def _state(self) -> dict[str, Any]:
        return {"uplink": self.settings.uplink, "ifb": ifb_name(self.prefix) if self.settings.downlink_mbit else None}

    def _write_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state()))
        os.replace(tmp, self.state_file)

    def _read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def _apply(self, host: IPRoute, index: int, classes: list[HtbClass], old: list[HtbClass] | None) -> None:
        """Put ``classes`` on ``index``; ``old``: what is there already (None: read the kernel)."""
        from pyroute2.netlink.exceptions import NetlinkError

        if old is None and not _is_lark_htb(host, index):
            try:
                host.tc("replace", "htb", index, HTB_MAJOR << 16, default=0, r2q=10)
            except NetlinkError as err:
                raise _tc_error(err, f"HTB root on ifindex {index}") from None
        wanted = {c.minor for c in classes}
        current = class_stats(host, index) if old is None else \
            {c.minor: {"rate": c.rate, "ceil": c.ceil, "quantum": c.quantum} for c in old}
        present = set(current)
        # leaves before their users: HTB refuses to delete a class that still has children
        for minor in sorted(present - wanted, reverse=True):
            try:
                host.tc("del-class", index=index, handle=classid(minor))
            except NetlinkError as err:
                if err.code not in (errno.ENOENT, errno.EINVAL):
                    raise _tc_error(err, f"remove class {classid_text(minor)}") from None
        for c in classes:
            have = current.get(c.minor)
            if have is not None and (have.get("rate"), have.get("ceil"), have.get("quantum")) == \
                    (c.rate, c.ceil, c.quantum):
                continue  # unchanged (a job of a user already present changes only that user's leaves)
            parent = classid(c.parent) if c.parent else HTB_MAJOR << 16
            try:
                host.tc("replace-class", "htb", index, classid(c.minor), parent=parent, rate=c.rate, ceil=c.ceil,
                        burst=c.burst, cburst=c.cburst, quantum=c.quantum)
            except NetlinkError as err:
                raise _tc_error(err, f"class {classid_text(c.minor)} ({c.label})") from None

    def _ensure_ifb(self, host: IPRoute) -> int:
        from pyroute2.netlink.exceptions import NetlinkError

        name = ifb_name(self.prefix)
        found = host.link_lookup(ifname=name)
        if found:
            return int(found[0])  # made (and brought up) by an earlier job
        try:
            host.link("add", ifname=name, kind="ifb", txqlen=IFB_TXQUEUELEN)
        except NetlinkError as err:
            if err.code != errno.EEXIST:
                raise _tc_error(err, f"create {name}") from None
        index = int(host.link_lookup(ifname=name)[0])
        host.link("set", index=index, state="up", txqlen=IFB_TXQUEUELEN)
        return index

    def _redirect_downloads(self, host: IPRoute, host_ifname: str) -> None:
        """What the host end sends to the job goes through the download IFB first (clsact egress)."""
        from pyroute2.netlink.exceptions import NetlinkError

        ifb = self._ensure_ifb(host)
        found = host.link_lookup(ifname=host_ifname)
        if not found:
            raise KernelError(f"shares: job interface {host_ifname} vanished")
        try:
            host.tc("add", "clsact", found[0])
        except NetlinkError as err:
            if err.code == errno.EEXIST:
                return  # redirected already (the clsact qdisc is Lark's: the veth is the job's)
            raise _tc_error(err, f"clsact on {host_ifname}") from None
        try:
            host.tc("add-filter", "u32", found[0], parent=CLSACT_EGRESS, prio=1, protocol=ETH_P_ALL,
                    keys=["0x0/0x0+0"], target=1,
                    action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": ifb})
        except NetlinkError as err:
            raise _tc_error(err, f"redirect {host_ifname}'s downloads to {ifb_name(self.prefix)}") from None

    def _stop_redirect(self, host: IPRoute, host_ifname: str) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        found = host.link_lookup(ifname=host_ifname)
        if found:
            try:
                host.tc("del", "clsact", found[0])
            except NetlinkError as err:
                if err.code not in (errno.ENOENT, errno.EINVAL):
                    raise _tc_error(err, f"remove the clsact of {host_ifname}") from None

    def _remove_all(self, host: IPRoute) -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        state = self._read_state()
        if state is None:  # written before any part of the tree: nothing of Lark's is there
            return
        classify.remove_host(self.prefix, self.host_netns)
        found = host.link_lookup(ifname=str(state.get("uplink") or ""))
        if found and _is_lark_htb(host, found[0]):
            try:
                host.tc("del", index=found[0], parent=TC_H_ROOT)
            except NetlinkError as err:
                if err.code not in (errno.ENOENT, errno.EINVAL):
                    raise _tc_error(err, "remove the uplink's HTB") from None
        if state.get("ifb"):
            found = host.link_lookup(ifname=str(state["ifb"]))
            if found:
                host.link("del", index=found[0])
        self.state_file.unlink(missing_ok=True)

    # ---------------------------------------------------------------- reading

    def check(self, host: IPRoute, records: Iterable[JobRecord]) -> list[str]:
        """Drift: the classes the records call for and the classification, against the kernel."""
        members = members_of(records)
        if not members or not self.settings.enabled:
            return []
        problems: list[str] = []
        found = host.link_lookup(ifname=self.settings.uplink)
        if not found:
            return [f"shares: uplink {self.settings.uplink} is missing"]
        have = class_minors(host, found[0])
        for c in plan_tree(self.settings.uplink_mbit, self.settings, members, "up"):
            if c.minor not in have:
                problems.append(f"shares: class {classid_text(c.minor)} ({c.label}) is missing on "
                                f"{self.settings.uplink}")
        return problems


def _is_lark_htb(host: IPRoute, index: int) -> bool:
    for msg in host.get_qdiscs(index=index):
        if msg["parent"] == TC_H_ROOT:
            return msg.get_attr("TCA_KIND") == "htb" and msg["handle"] == HTB_MAJOR << 16
    return False


def class_minors(host: IPRoute, index: int) -> set[int]:
    """Minors of the HTB classes under ``1:`` on ``index``."""
    return {msg["handle"] & 0xFFFF for msg in host.get_classes(index=index)
            if msg.get_attr("TCA_KIND") == "htb" and msg["handle"] >> 16 == HTB_MAJOR}


def class_stats(host: IPRoute, index: int) -> dict[int, dict[str, int]]:
    """Bytes and packets sent per class (tests and the benchmark read the counters)."""
    out: dict[int, dict[str, int]] = {}
    for msg in host.get_classes(index=index):
        if msg.get_attr("TCA_KIND") != "htb" or msg["handle"] >> 16 != HTB_MAJOR:
            continue
        basic = msg.get_attr("TCA_STATS2")
        counts = basic.get_attr("TCA_STATS_BASIC") if basic is not None else None
        stats = msg.get_attr("TCA_STATS")
        if counts is not None:
            out[msg["handle"] & 0xFFFF] = {"bytes": counts["bytes"], "packets": counts["packets"]}
        elif stats is not None:
            out[msg["handle"] & 0xFFFF] = {"bytes": stats["bytes"], "packets": stats["packets"]}
        parms = msg.get_attr("TCA_OPTIONS")
        htb = parms.get_attr("TCA_HTB_PARMS") if parms is not None else None
        if htb is not None:
            out.setdefault(msg["handle"] & 0xFFFF, {"bytes": 0, "packets": 0})
            out[msg["handle"] & 0xFFFF].update(rate=htb["rate"], ceil=htb["ceil"], quantum=htb["quantum"])
    return out
