"""Per-user shares of a node's uplink: the policy (who gets what) as pure functions.

Users share the uplink, each user's jobs share that user's part, and what an idle user or job
does not use flows to the active ones. This is an HTB tree (see :mod:`lark.sharetree` for the
kernel side)::

    1:      htb root qdisc on the uplink (upload) and on the download IFB
    1:1     the uplink: rate = ceil = LARK_SHARES_UPLINK_MBIT (or _DOWNLINK_MBIT)
    1:U     one class per user with jobs on the node: rate = uplink x weight / sum of the weights
            of the users present, ceil = LARK_SHARES_USER_CEILING_MBIT (else the uplink)
    1:J     one leaf per job under its user: rate = the user's rate / the user's jobs,
            ceil = the job's own cap (else the user's ceiling)

Why the rates are recomputed whenever a user arrives or leaves: HTB guarantees each class its
``rate`` and lends what a class leaves unused to its siblings in proportion to their ``quantum``.
With the present users' rates adding up to the uplink, each user is guaranteed exactly its
weighted share while all are busy, whatever the lending does; ``quantum`` proportional to the rate
makes the lending of an idle user's part weighted too. The tree is rebuilt from the job records,
so it is the same after a broker restart.

Packets reach their job's class without any per-packet rule walk: HTB takes ``skb->priority``
as the class id when it names one of its classes, and nftables sets it from a map keyed on the
job's interface (:mod:`lark.firewall.shares`).

Weights (``LARK_SHARES_WEIGHTS``) name users (login or uid) or HTCondor accounting groups
(``group:<name>``); a user's own weight wins over its group's; everyone else weighs 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lark.errors import LarkError

if TYPE_CHECKING:
    from lark.state import JobRecord

HZ = 250
FRAME = 1514  # an Ethernet frame (HTB accounts L2 bytes)
# Class ids (minor numbers under 1:): users and jobs in disjoint ranges, so a class's role is
# visible in `tc class show` and a job never takes a user's id.
ROOT_MINOR = 0x1
USER_MINORS = range(0x10, 0x1000)
JOB_MINORS = range(0x1000, 0xFFFF)
HTB_MAJOR = 0x1
GROUP_PREFIX = "group:"
MAX_QUANTUM = 200_000  # the kernel's own upper hint for HTB quantum
ACTIVE = ("setting-up", "up")  # record statuses whose jobs hold their class


@dataclass(frozen=True)
class ShareSettings:
    """The share knobs, validated (lark.config builds it). ``uplink`` empty: shares are off."""

    uplink: str = ""
    uplink_mbit: int = 0
    downlink_mbit: int = 0  # 0: downloads are not shared (each job keeps only its own cap)
    weights: tuple[tuple[str, float], ...] = ()
    user_ceiling_mbit: int = 0  # 0: a user alone may take the whole link

    @property
    def enabled(self) -> bool:
        return bool(self.uplink)

    def weight(self, user: str, group: str | None) -> float:
        table = dict(self.weights)
        if user in table:
            return table[user]
        if group and GROUP_PREFIX + group in table:
            return table[GROUP_PREFIX + group]
        return 1.0

    def summary(self) -> str:
        """One line for the node's ad and `lark list`: ``eth0 up 1000/down 1000 Mbit; weights alice=2``."""
        if not self.enabled:
            return "off"
        down = f"{self.downlink_mbit}" if self.downlink_mbit else "unshared"
        text = f"{self.uplink} up {self.uplink_mbit}/down {down} Mbit"
        if self.user_ceiling_mbit:
            text += f"; user ceiling {self.user_ceiling_mbit} Mbit"
        if self.weights:
            text += "; weights " + ", ".join(f"{name}={_number(w)}" for name, w in self.weights)
        return text


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


_WEIGHT_NAME = re.compile(r"(group:)?[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


def parse_weights(text: str) -> tuple[tuple[str, float], ...]:
    """``alice=2, 1001=0.5, group:group_physics=3`` -> ((name, weight), ...); errors say which entry."""
    out: dict[str, float] = {}
    for entry in (e.strip() for e in text.replace("\n", ",").split(",")):
        if not entry:
            continue
        name, sep, value = (part.strip() for part in entry.partition("="))
        if not sep:
            raise ValueError(f"entry {entry!r} is not NAME=WEIGHT (e.g. alice=2 or group:physics=3)")
        if not _WEIGHT_NAME.fullmatch(name):
            raise ValueError(f"entry {entry!r}: {name!r} is not a user name, uid or group:<accounting group>")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"entry {entry!r}: weight {value!r} is not a number") from None
        if not (0 < weight <= 1000) or math.isnan(weight):
            raise ValueError(f"entry {entry!r}: weight must be above 0 and at most 1000")
        if name in out:
            raise ValueError(f"{name!r} is given twice")
        out[name] = weight
    return tuple(out.items())


# --------------------------------------------------------------------------------------------
# Who is on the tree, and which class ids they hold


@dataclass(frozen=True)
class ShareMember:
    """One job on the tree, as its record has it."""

    token: str
    user: str
    group: str | None
    user_class: int  # minor of its user's class
    job_class: int  # minor of its own leaf
    cap_up_mbit: int = 0  # the job's own caps (0: none)
    cap_down_mbit: int = 0


def allocate_classes(members: Iterable[ShareMember], user: str) -> tuple[int, int]:
    """(user class, job class) for a new job of ``user``: its user's class if it has one already,
    else the lowest free user id; the lowest free job id."""
    members = list(members)
    user_class = next((m.user_class for m in members if m.user == user), None)
    if user_class is None:
        taken = {m.user_class for m in members}
        user_class = next((c for c in USER_MINORS if c not in taken), None)
        if user_class is None:
            raise LarkError(f"more than {len(USER_MINORS)} users hold shares on this node")
    taken_jobs = {m.job_class for m in members}
    job_class = next((c for c in JOB_MINORS if c not in taken_jobs), None)
    if job_class is None:
        raise LarkError(f"more than {len(JOB_MINORS)} jobs hold shares on this node")
    return user_class, job_class


def classid(minor: int) -> int:
    """The 32-bit tc handle ``1:<minor>``."""
    return (HTB_MAJOR << 16) | minor


def classid_text(minor: int) -> str:
    return f"{HTB_MAJOR:x}:{minor:x}"


# --------------------------------------------------------------------------------------------
# The tree: every class with its rates


@dataclass(frozen=True)
class HtbClass:
    minor: int
    parent: int  # minor of the parent class (0: the qdisc itself)
    rate: int  # bytes per second guaranteed
    ceil: int  # bytes per second at most
    quantum: int  # bytes lent per round when borrowing (proportional to the rate)
    burst: int
    cburst: int
    label: str  # "uplink", "user alice", "job <token>"

    @property
    def rate_mbit(self) -> float:
        return self.rate * 8 / 1_000_000


def _bytes(mbit: float) -> int:
    return max(1, int(mbit * 1_000_000 / 8))


def _bucket(rate: int) -> int:
    # One jiffy at the rate (the qdisc watchdog's granularity under load), at least a few frames,
    # like lark.shaping's TBF: enough to keep the link busy, small enough not to overshoot.
    return max(math.ceil(rate / HZ), 4 * FRAME)


def _quantum(rate: int, link: int) -> int:
    # Proportional to the rate (so borrowing follows the weights): the link's share of the largest
    # quantum the kernel accepts without warning, at least one frame. Set explicitly: HTB's default
    # (rate / r2q) warns at high rates and is not proportional once clamped.
    return max(FRAME, MAX_QUANTUM * rate // link)


def _klass(minor: int, parent: int, rate: int, ceil: int, label: str, link: int) -> HtbClass:
    rate = min(rate, ceil)
    return HtbClass(minor, parent, rate, ceil, _quantum(rate, link), _bucket(rate), _bucket(ceil), label)


def plan_tree(link_mbit: int, settings: ShareSettings, members: Iterable[ShareMember],
              direction: str) -> list[HtbClass]:
    """Every class of one direction's tree (``up`` or ``down``), parents before children.

    Worked example (1000 Mbit, alice weight 2 with 1 job, bob weight 1 with 2 jobs, no caps):
    alice 1000 x 2/3 = 666.7, bob 333.3, bob's jobs 166.7 each; every ceil 1000.
    """
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
    link = _bytes(link_mbit)
    user_ceil = min(_bytes(settings.user_ceiling_mbit), link) if settings.user_ceiling_mbit else link
    by_user: dict[int, list[ShareMember]] = {}
    for member in sorted(members, key=lambda m: (m.user_class, m.job_class)):
        by_user.setdefault(member.user_class, []).append(member)
    weights = {c: settings.weight(jobs[0].user, jobs[0].group) for c, jobs in by_user.items()}
    total_weight = sum(weights.values())
    out = [_klass(ROOT_MINOR, 0, link, link, "uplink" if direction == "up" else "downlink", link)]
    for user_class, jobs in by_user.items():
        user = _klass(user_class, ROOT_MINOR, max(1, int(link * weights[user_class] / total_weight)), user_ceil,
                      f"user {jobs[0].user}", link)
        out.append(user)
        for job in jobs:
            cap = job.cap_up_mbit if direction == "up" else job.cap_down_mbit
            ceil = min(_bytes(cap), user_ceil) if cap else user_ceil
            out.append(_klass(job.job_class, user_class, max(1, user.rate // len(jobs)), ceil, f"job {job.token}",
                              link))
    return out


# --------------------------------------------------------------------------------------------
# From the job records (the tree is rebuilt from them; `lark list` and the metrics read them)


def accounting_group(ad: Mapping[str, object]) -> str | None:
    """The job's HTCondor accounting group (``AcctGroup``, set from ``accounting_group`` at submit),
    for ``group:<name>`` weights; None when the job has none."""
    value = ad.get("AcctGroup")
    return value.strip() or None if isinstance(value, str) else None


def member_of(record: JobRecord) -> ShareMember | None:
    """The record's place on the tree; None when it holds none (or its share is not readable)."""
    share = record.share
    if not isinstance(share, dict) or not share or record.status not in ACTIVE:
        return None
    user, group, user_class, job_class = (share.get(k) for k in ("user", "group", "user_class", "job_class"))
    if not isinstance(user, str) or not isinstance(user_class, int) or not isinstance(job_class, int):
        return None
    return ShareMember(record.token, user, group if isinstance(group, str) and group else None, user_class,
                       job_class, record.bandwidth_out_mbit, record.bandwidth_in_mbit)


def members_of(records: Iterable[JobRecord]) -> list[ShareMember]:
    return [m for m in (member_of(r) for r in records) if m is not None]


def share_rows(settings: ShareSettings, records: Iterable[JobRecord]) -> dict[str, dict[str, object]]:
    """Per job token: its user, its user's class and its leaf's guaranteed rate and ceiling in
    Mbit/s (upload), as the tree is built from the same records (for `lark list`)."""
    members = members_of(records)
    if not settings.enabled or not members:
        return {}
    classes = {c.minor: c for c in plan_tree(settings.uplink_mbit, settings, members, "up")}
    return {m.token: {"user": m.user, "class": classid_text(m.user_class), "job_class": classid_text(m.job_class),
                      "rate_mbit": round(classes[m.job_class].rate_mbit, 1),
                      "ceil_mbit": round(classes[m.job_class].ceil * 8 / 1_000_000, 1),
                      "user_rate_mbit": round(classes[m.user_class].rate_mbit, 1)} for m in members}
