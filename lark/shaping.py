"""Per-job bandwidth limits with tc (pyroute2), on the host end and the job end of a job's link.

A veth job is shaped in both directions with two egress qdiscs: the host end's egress is what
the job receives (download), the job end's egress (inside the job's namespace, which belongs to
the initial user namespace, so the unprivileged job cannot remove it) is what it sends (upload).
Devices with only one controllable end (macvlan/ipvlan: the job's interface) get their ingress
limited by :func:`police_ingress`: a policer when the kernel has ``act_police``, otherwise an IFB
device that receives the redirected ingress traffic and shapes it as egress.

Sizing (:func:`tbf_parameters`), so that a TCP transfer's measured rate stays within ~5% of the
cap while the cap is still reached:

* TBF accounts in L2 bytes (Ethernet header included) and charges a GSO super-packet for all
  of its segments, so payload throughput is always below the configured rate; the only way to
  exceed the cap is the bucket itself: a full bucket lets ``burst`` bytes through at line rate,
  i.e. ``burst / (rate x T)`` of overshoot over a transfer of T seconds.
* The burst must still cover the time between two dequeues. The qdisc watchdog is an hrtimer,
  but softirq and scheduling latency on a loaded host are of the order of a jiffy (HZ=250 here:
  4 ms), so the bucket holds one jiffy's worth of bytes (``rate / HZ``): 0.4% overshoot on a 1 s
  transfer, and no starvation at high rates (1 Gbit/s: 500 KB).
* At low rates one jiffy is less than a 64 KB GSO packet; TBF then segments GSO packets larger
  than the bucket (``tbf_segment``), so the burst only needs to hold a few MTU-sized packets.
* The queue (``limit``) holds ~50 ms at the rate (at least a few packets): enough for TCP to
  keep the link busy, short enough not to add seconds of delay.
"""

from __future__ import annotations

import errno
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lark.errors import KernelError, UnsupportedFeature

if TYPE_CHECKING:
    from pyroute2 import IPRoute

HZ = 250
MTU = 1500
ETH_HLEN = 14
GSO_MAX = 65536
QUEUE_SECONDS = 0.05
MAX_TBF_BYTES_PER_S = 2**32 - 1  # TCA_TBF_PARMS.rate is 32 bits (~34 Gbit/s); no rate64 here
TC_H_ROOT = 0xFFFFFFFF
INGRESS_HANDLE = 0xFFFF0000
ROOT_HANDLE = 0x10000
ETH_P_ALL = 0x0003
IFB_ALIAS = "lark-ingress:{index}"


@dataclass(frozen=True)
class TbfParameters:
    rate: int  # bytes per second
    burst: int  # bytes
    limit: int  # bytes queued at most


def tbf_parameters(mbit: float, mtu: int = MTU, hz: int = HZ) -> TbfParameters:
    """Token bucket for a cap of ``mbit`` Mbit/s (see the module docstring for the reasoning)."""
    if mbit <= 0:
        raise ValueError(f"bandwidth limit must be positive, not {mbit}")
    rate = int(mbit * 1_000_000 / 8)
    if rate > MAX_TBF_BYTES_PER_S:
        raise ValueError(f"{mbit} Mbit/s is above what a TBF qdisc can express (34359 Mbit/s)")
    frame = mtu + ETH_HLEN
    burst = max(math.ceil(rate / hz), 4 * frame)
    limit = max(int(rate * QUEUE_SECONDS), burst + 4 * frame)
    return TbfParameters(rate, burst, limit)


def police_parameters(mbit: float, mtu: int = MTU, hz: int = HZ) -> TbfParameters:
    """A policer drops instead of queueing, so TCP needs a larger bucket to reach the cap: one
    jiffy is too little; ~5 jiffies (20 ms) or a few GSO packets, whichever is larger. ``limit``
    is unused by a policer."""
    base = tbf_parameters(mbit, mtu, hz)
    burst = max(base.burst * 5, 2 * GSO_MAX)
    return TbfParameters(base.rate, burst, 0)


def _netlink_error(err: Exception, what: str) -> KernelError:
    code = getattr(err, "code", None)
    reason = errno.errorcode.get(code, str(code)) if isinstance(code, int) else str(err)
    return KernelError(f"tc: {what}: {reason} ({err})")


def _ignore_missing(fn: Any, *args: Any, **kwargs: Any) -> bool:
    """Run a delete; True if it removed something, False if there was nothing to remove."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        fn(*args, **kwargs)
        return True
    except NetlinkError as err:
        if err.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            return False
        raise _netlink_error(err, "delete") from None


def limit_egress(ipr: IPRoute, ifindex: int, mbit: float) -> TbfParameters:
    """Replace the root qdisc of ``ifindex`` with a TBF at ``mbit`` Mbit/s. Idempotent."""
    from pyroute2.netlink.exceptions import NetlinkError

    params = tbf_parameters(mbit)
    try:
        ipr.tc("replace", "tbf", ifindex, ROOT_HANDLE, rate=params.rate, burst=params.burst, limit=params.limit)
    except NetlinkError as err:
        raise _netlink_error(err, f"TBF {mbit} Mbit/s on ifindex {ifindex}") from None
    return params


def police_ingress(ipr: IPRoute, ifindex: int, mbit: float, method: str = "auto",
                   ifb_name: str | None = None) -> str:
    """Limit what arrives on ``ifindex`` to ``mbit`` Mbit/s; returns the method used.

    ``method``: "police" (act_police: drops above the rate, no extra device), "ifb" (redirect to
    an IFB device in the same namespace and shape it with TBF: queues, kinder to TCP), or "auto"
    (police if the kernel has it, else ifb). ``ifb_name`` defaults to ``ifb<ifindex>``; the IFB
    device is tagged with an alias so :func:`clear` finds it.
    """
    if method not in ("auto", "police", "ifb"):
        raise ValueError(f"unknown ingress method {method!r} (accepted: auto, police, ifb)")
    clear_ingress(ipr, ifindex)
    if method in ("auto", "police"):
        try:
            _police(ipr, ifindex, mbit)
            return "police"
        except UnsupportedFeature:
            clear_ingress(ipr, ifindex)
            if method == "police":
                raise
    _ifb(ipr, ifindex, mbit, ifb_name or f"ifb{ifindex}")
    return "ifb"


def _add_ingress_qdisc(ipr: IPRoute, ifindex: int) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.tc("add", "ingress", ifindex, INGRESS_HANDLE)
    except NetlinkError as err:
        raise _netlink_error(err, f"ingress qdisc on ifindex {ifindex}") from None


def _match_all_filter(ipr: IPRoute, ifindex: int, action: dict[str, Any] | list[dict[str, Any]]) -> None:
    # u32 with an all-zero key matches every packet (cls_matchall is not built on every kernel).
    ipr.tc("add-filter", "u32", ifindex, parent=INGRESS_HANDLE, prio=1, protocol=ETH_P_ALL,
           keys=["0x0/0x0+0"], target=1, action=action)  # target (classid) is required by pyroute2, unused


def _police(ipr: IPRoute, ifindex: int, mbit: float) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    params = police_parameters(mbit)
    _add_ingress_qdisc(ipr, ifindex)
    # mtu: without it the kernel derives the largest conforming packet from the rate table
    # (~2 KB) and drops every GRO super-packet.
    action = {"kind": "police", "rate": params.rate, "burst": params.burst, "mtu": 4 * GSO_MAX,
              "action": "drop"}
    try:
        _match_all_filter(ipr, ifindex, action)
    except NetlinkError as err:
        if err.code in (errno.ENOENT, errno.EOPNOTSUPP):
            raise UnsupportedFeature("tc: this kernel has no police action (CONFIG_NET_ACT_POLICE)") from None
        raise _netlink_error(err, f"policer on ifindex {ifindex}") from None


def _ifb(ipr: IPRoute, ifindex: int, mbit: float, ifb_name: str) -> int:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        ipr.link("add", ifname=ifb_name, kind="ifb")
    except NetlinkError as err:
        if err.code == errno.EOPNOTSUPP:
            raise UnsupportedFeature("tc: this kernel has no ifb driver (CONFIG_IFB)") from None
        if err.code != errno.EEXIST:
            raise _netlink_error(err, f"create ifb {ifb_name}") from None
    found = ipr.link_lookup(ifname=ifb_name)
    if not found:
        raise KernelError(f"tc: ifb device {ifb_name} vanished after creation")
    ifb_index = found[0]
    try:
        ipr.link("set", index=ifb_index, ifalias=IFB_ALIAS.format(index=ifindex), state="up")
        limit_egress(ipr, ifb_index, mbit)
        _add_ingress_qdisc(ipr, ifindex)
        _match_all_filter(ipr, ifindex, {"kind": "mirred", "direction": "egress", "action": "redirect",
                                         "ifindex": ifb_index})
    except NetlinkError as err:
        _ignore_missing(ipr.link, "del", index=ifb_index)
        raise _netlink_error(err, f"redirect ingress of ifindex {ifindex} to {ifb_name}") from None
    except KernelError:
        _ignore_missing(ipr.link, "del", index=ifb_index)
        raise
    return ifb_index


def _ifb_devices(ipr: IPRoute, ifindex: int) -> list[int]:
    alias = IFB_ALIAS.format(index=ifindex)
    return [link["index"] for link in ipr.get_links() if link.get_attr("IFLA_IFALIAS") == alias]


def clear_ingress(ipr: IPRoute, ifindex: int) -> None:
    """Remove the ingress limit of ``ifindex`` (ingress qdisc and its IFB device). Idempotent."""
    _ignore_missing(ipr.tc, "del", "ingress", ifindex, INGRESS_HANDLE)
    for index in _ifb_devices(ipr, ifindex):
        _ignore_missing(ipr.link, "del", index=index)


def clear(ipr: IPRoute, ifindex: int) -> None:
    """Remove every limit Lark put on ``ifindex`` (root qdisc back to the default). Idempotent."""
    _ignore_missing(ipr.tc, "del", index=ifindex, parent=TC_H_ROOT)
    clear_ingress(ipr, ifindex)


def root_qdisc(ipr: IPRoute, ifindex: int) -> dict[str, Any] | None:
    """Kind and TBF parameters of the root qdisc (for ``check`` and tests)."""
    for msg in ipr.get_qdiscs(index=ifindex):
        if msg["parent"] != TC_H_ROOT:
            continue
        out: dict[str, Any] = {"kind": msg.get_attr("TCA_KIND")}
        opts = msg.get_attr("TCA_OPTIONS")
        parms = opts.get_attr("TCA_TBF_PARMS") if opts is not None and out["kind"] == "tbf" else None
        if parms is not None:
            out["rate"] = parms["rate"]
            out["limit"] = parms["limit"]
        return out
    return None
