"""A job's network request, validated against the node's policy. Pure functions only.

The same validation runs in the PREPARE_JOB hook (so a bad request holds the job before it starts,
with a message the user can act on) and again in the broker (which never trusts the hook). Both
call the readers below, so the same bad input gets the same message on either path.

Every refusal names the attribute, shows the value in ClassAd terms (:func:`classad_text`: what
the user could have written, never a Python repr or a 300-digit number) and says what is
accepted. Anything that is not plainly a valid value is refused rather than read as "not set":
an allow list that silently became "no restriction", or a port count that silently became none,
would run the job with a network it did not ask for.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import classad2

from lark.attach import mode, mode_names
from lark.classads import Unevaluated, classad_text
from lark.config import IPNetwork, LarkConfig, parse_list
from lark.errors import RequestError
from lark.shaping import MAX_TBF_BYTES_PER_S

# Submit attributes a user may set (documented in docs/user-guide.md).
ATTR_TYPE = "LarkNetworkType"
ATTR_BANDWIDTH = "LarkBandwidthMbit"
ATTR_BANDWIDTH_IN = "LarkBandwidthInMbit"
ATTR_BANDWIDTH_OUT = "LarkBandwidthOutMbit"
ATTR_ALLOW = "LarkAllow"
ATTR_DENY = "LarkDeny"
ATTR_INBOUND = "LarkInboundPorts"
ATTR_PROFILE = "LarkNetworkProfile"
MAX_LIST_ENTRIES = 256
MAX_MBIT = MAX_TBF_BYTES_PER_S * 8 // 1_000_000  # 34359: what one TBF qdisc can express
MAX_PORTS = 65535
CIDR_EXAMPLE = '"198.51.100.0/24, 2001:db8::/32"'
# condor_submit itself (25.x) stores an integer literal outside the 64-bit range as 0, so a
# LarkInboundPorts of 99999999999999999999 reaches Lark as 0. That is why 0 is refused.
ZERO_NOTE = "(condor_submit also turns a whole number beyond 9223372036854775807 into 0)"
_DIGITS_RE = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    network_type: str
    bandwidth_in_mbit: int = 0  # 0: unlimited
    bandwidth_out_mbit: int = 0
    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    inbound_ports: int = 0


# ------------------------------------------------------------------------------------------------
# Readers: one per kind of attribute. ``None`` (absent) means "not set"; anything else is judged.


def string_attr(attrs: Mapping[str, object], name: str, what: str, accepted: str) -> str | None:
    """A non-empty string attribute, stripped, or None when absent.

    ``what`` names the kind of value (``a network type``), ``accepted`` says what to write instead;
    both go into the refusal. An empty string is refused: the user wrote the attribute, so leaving
    it out was not what they meant.
    """
    value = attrs.get(name)
    if value is None:
        return None
    if not isinstance(value, str):  # undefined, error, numbers, lists, ads
        raise RequestError(name, f"{classad_text(value)} is not {what}; {accepted}")
    # a value handed over as ClassAd text ("\"nat\"") loses its quotes, as it always did
    text = value.strip().strip('"').strip()
    if not text:
        raise RequestError(name, f"{classad_text(value)} is empty; {accepted}")
    return text


def whole_number_attr(attrs: Mapping[str, object], name: str, hi: int, too_big: str, accepted: str) -> int | None:
    """A whole number 1..``hi`` or None when absent.

    ``too_big`` is the refusal above ``hi``, with ``{value}`` where the value goes; ``accepted``
    ends every other refusal.

    0 is refused with the rest: it means the same as leaving the attribute out, and it is also what
    condor_submit makes of an overflowing literal (:data:`ZERO_NOTE`), which must not run silently.
    Reals are accepted when whole (100.0). Messages show the value as written (``1e+308``), never
    its 309-digit conversion. A string of digits is accepted as it always was.
    """
    value = attrs.get(name)
    if value is None:
        return None
    shown = classad_text(value)
    number: int | None = None
    if isinstance(value, Unevaluated | bool | classad2.Value):  # classad2.Value is an IntEnum: not a number
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)  # exact and cheap even for 1e308; the message shows ``shown``, not this
    elif isinstance(value, str) and _DIGITS_RE.fullmatch(digits := value.strip().strip('"').strip()):
        # int() of thousands of digits is slow (and refused past 4300); anything this long is too big
        number = int(digits) if len(digits) <= 20 else (-1 if digits[0] == "-" else hi + 1)
    if number is None:
        raise RequestError(name, f"{shown} is not a whole number; {accepted}")
    if number == 0:
        raise RequestError(name, f"0 is not accepted {ZERO_NOTE}; {accepted}")
    if number < 0:
        raise RequestError(name, f"must not be negative, got {shown}; {accepted}")
    if number > hi:
        raise RequestError(name, too_big.format(value=shown))
    return number


def networks_attr(attrs: Mapping[str, object], name: str, unset: str | None = None) -> tuple[IPNetwork, ...] | None:
    """A non-empty CIDR list (one string, entries separated by commas or spaces), or None when absent.

    ``unset`` says what leaving the attribute out gives (default: no restriction, or nothing denied
    beyond LARK_DENY); a profile gives its own lists.

    An empty list is refused for both attributes. For LarkAllow it would mean "no restriction":
    the opposite of what a user who wrote the attribute asked for. For LarkDeny it would be
    harmless, but refusing it too keeps the two alike and catches a mistyped expression.
    """
    value = attrs.get(name)
    if value is None:
        return None
    meaning = "the only destinations the job may reach" if name == ATTR_ALLOW else \
        "destinations the job may never reach"
    # an empty allow list means "no restriction" only where nothing else restricts the job
    why = " (an empty allow list would let the job reach every destination)" if name == ATTR_ALLOW and \
        unset is None else ""
    if unset is None:
        unset = "no restriction" if name == ATTR_ALLOW else "only the node's own LARK_DENY"
    accepted = f"write {meaning} as one string, e.g. {CIDR_EXAMPLE}, or leave the attribute out for {unset}"
    if not isinstance(value, str):
        raise RequestError(name, f"{classad_text(value)} is not a list of destinations; {accepted}")
    items = parse_list(value.strip().strip('"'))
    if not items:
        raise RequestError(name, f"{classad_text(value)} lists no destination{why}; {accepted}")
    if len(items) > MAX_LIST_ENTRIES:
        raise RequestError(name, f"has {len(items)} entries; at most {MAX_LIST_ENTRIES} are accepted")
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise RequestError(name, f"{classad_text(item)} is not an address or CIDR prefix "
                                     f"(write e.g. {CIDR_EXAMPLE})") from None
    return tuple(nets)


def bandwidth_attrs(attrs: Mapping[str, object], ceilings: tuple[tuple[int, str], tuple[int, str]],
                    default: int | None, accepted: str) -> tuple[int | None, int | None]:
    """(in, out) Mbit/s the job asked for: ``...InMbit``/``...OutMbit`` > LarkBandwidthMbit > ``default``.

    ``ceilings`` holds, for in and out, the largest accepted value and what it is (``this node's
    maximum of 1000 Mbit/s``). Every attribute present is checked, LarkBandwidthMbit too when both
    directions override it: a malformed value is refused wherever it is.
    """
    top, top_above = max(ceilings)
    both = whole_number_attr(attrs, ATTR_BANDWIDTH, top, "{value} Mbit/s is above " + top_above, accepted)
    limits: list[int | None] = []
    for name, (ceiling, above) in zip((ATTR_BANDWIDTH_IN, ATTR_BANDWIDTH_OUT), ceilings, strict=True):
        explicit = whole_number_attr(attrs, name, ceiling, "{value} Mbit/s is above " + above, accepted)
        if explicit is None and both is not None and both > ceiling:  # within one direction's ceiling only
            raise RequestError(ATTR_BANDWIDTH, f"{classad_text(attrs[ATTR_BANDWIDTH])} Mbit/s is above {above}")
        limits.append(explicit if explicit is not None else both if both is not None else default)
    return limits[0], limits[1]


# ------------------------------------------------------------------------------------------------
# A job's request within limits: the node's knobs, or the profile the job chose


@dataclass(frozen=True)
class RequestLimits:
    """What a job may ask for, and what it gets when it asks for nothing.

    A node's limits come from its knobs (:func:`node_limits`). A profile supplies its own
    (``Profile.request_limits``): one mode, its bandwidth shares and port block as the ceiling and
    the default, its allow list as the widest a job may ask for and its deny list as the least it
    gets. The admin wrote both, so a profile's limits replace the node's for its jobs.
    """

    network_types: tuple[str, ...]  # the modes a job may ask for; a profile offers exactly one
    default_network_type: str
    bandwidth_cap_mbit: tuple[int, int]  # in, out; 0: no cap
    default_bandwidth_mbit: int | None  # None: the cap (a profile's share)
    max_inbound_ports: int
    default_inbound_ports: int = 0
    allow: tuple[IPNetwork, ...] = ()  # empty: any destination; else a job may only narrow it
    deny: tuple[IPNetwork, ...] = ()  # denied whatever the job asks
    profile: str | None = None  # the profile these limits come from; None: the node's knobs


def node_limits(config: LarkConfig) -> RequestLimits:
    """The limits of a job without a profile: LARK_NETWORK_TYPES, LARK_MAX_BANDWIDTH_MBIT and friends."""
    cap = config.max_bandwidth_mbit
    return RequestLimits(network_types=config.network_types, default_network_type=config.default_network_type,
                         bandwidth_cap_mbit=(cap, cap), default_bandwidth_mbit=config.default_bandwidth_mbit,
                         max_inbound_ports=config.max_inbound_ports)


def request_from_attributes(attrs: Mapping[str, object], config: LarkConfig, job_id: str) -> JobRequest:
    """Turn the ``Lark*`` attributes of a job without a profile into a request this node will serve."""
    return request_within(attrs, node_limits(config), job_id)


def request_within(attrs: Mapping[str, object], limits: RequestLimits, job_id: str) -> JobRequest:
    """Turn a job's ``Lark*`` attributes into a request within ``limits``, or raise RequestError.

    The one reading of a job's request, with or without a profile. The limits are the ceiling: a
    job may ask for less (a lower bandwidth, fewer ports, a narrower ``LarkAllow``, more
    ``LarkDeny``), and asking for more is refused with the limit, never silently capped.
    """
    owner = repr(limits.profile) if limits.profile is not None else None
    network_type = _network_type(attrs, limits, owner)
    bw_in, bw_out = _bandwidth(attrs, limits, owner)
    inbound = _inbound_ports(attrs, limits, owner)
    if inbound and not mode(network_type).job_interface:
        raise RequestError(ATTR_INBOUND, f"a job with LarkNetworkType = \"{network_type}\" cannot receive connections")
    allow = networks_attr(attrs, ATTR_ALLOW, f"what profile {owner} allows" if limits.allow else None) or ()
    for net in allow if limits.allow else ():
        if not any(net.version == p.version and net.subnet_of(p) for p in limits.allow):  # type: ignore[arg-type]
            raise RequestError(ATTR_ALLOW, f"{net} is outside what profile {owner} allows "
                                           f"({', '.join(str(p) for p in limits.allow)})")
    denied = networks_attr(attrs, ATTR_DENY, f"what profile {owner} and LARK_DENY deny" if limits.deny else None)
    deny = limits.deny + tuple(n for n in denied or () if n not in limits.deny)
    return JobRequest(job_id=job_id, network_type=network_type, bandwidth_in_mbit=bw_in, bandwidth_out_mbit=bw_out,
                      allow=allow or limits.allow, deny=deny, inbound_ports=inbound)


def _network_type(attrs: Mapping[str, object], limits: RequestLimits, owner: str | None) -> str:
    if owner is not None:  # a profile attaches one way; the job may repeat it, not change it
        mode = limits.default_network_type
        leave_out = f"leave {ATTR_TYPE} out"
        text = string_attr(attrs, ATTR_TYPE, "a network type",
                           f"{leave_out} ({ATTR_PROFILE} {owner} attaches by {mode})")
        if text is not None and text.lower() != mode:
            shown = repr(text.lower()) if text.lower() in mode_names() else classad_text(text)
            raise RequestError(ATTR_TYPE, f"{shown} conflicts with {ATTR_PROFILE} {owner}, which attaches by "
                                          f"{mode}; {leave_out}")
        return mode
    offered = ", ".join(limits.network_types)
    known = ", ".join(f'"{t}"' for t in mode_names())
    type_accepted = (f"write one of {known} (this node offers: {offered}), or leave the attribute out for "
                     f"the default ({limits.default_network_type})")
    text = string_attr(attrs, ATTR_TYPE, "a network type", type_accepted)
    network_type = limits.default_network_type if text is None else text.lower()
    if network_type not in mode_names():
        raise RequestError(ATTR_TYPE, f"unknown network type {classad_text(text)}; {type_accepted}")
    if network_type not in limits.network_types:
        raise RequestError(ATTR_TYPE, f"{network_type!r} is not offered on this node (offered: "
                                      f"{offered}); require it with "
                                      f"Requirements = stringListMember(\"{network_type}\", LarkNetworkTypes)")
    return network_type


def _bandwidth(attrs: Mapping[str, object], limits: RequestLimits, owner: str | None) -> tuple[int, int]:
    def ceiling(cap: int) -> tuple[int, str]:
        # without a cap (0), a job still cannot go past what one TBF qdisc expresses
        if cap and cap <= MAX_MBIT:
            return cap, (f"the share of profile {owner} ({cap} Mbit/s)" if owner else
                         f"this node's maximum of {cap} Mbit/s")
        return MAX_MBIT, f"the largest limit Lark can set ({MAX_MBIT} Mbit/s)"

    caps = limits.bandwidth_cap_mbit
    if owner is not None and any(caps):
        def mbit(share: int) -> str:
            return f"{share} Mbit/s" if share else "no limit"
        shares = mbit(caps[0]) if caps[0] == caps[1] else f"in {mbit(caps[0])}, out {mbit(caps[1])}"
        accepted = (f"write a whole number of Mbit/s up to the share of profile {owner} ({shares}), or leave "
                    "the attribute out for that share")
    else:
        given = bandwidth_within(limits.default_bandwidth_mbit, caps[0])  # what a job that asks nothing gets
        unlimited = f"this node's default ({given} Mbit/s)" if given else "no limit"
        accepted = (f"write a whole number of Mbit/s from 1 to {ceiling(caps[0])[0]}, or leave the attribute "
                    f"out for {unlimited}")
    bw_in, bw_out = bandwidth_attrs(attrs, (ceiling(caps[0]), ceiling(caps[1])), limits.default_bandwidth_mbit,
                                    accepted)
    return bandwidth_within(bw_in, caps[0]), bandwidth_within(bw_out, caps[1])


def _inbound_ports(attrs: Mapping[str, object], limits: RequestLimits, owner: str | None) -> int:
    ports = limits.max_inbound_ports
    if owner is not None:
        offers = f"offers {ports}" if ports else "offers no inbound ports"
        too_many = f"profile {owner} {offers}"
        accepted = (f"ask for 1 to {ports} ports (what profile {owner} offers), or leave the attribute out for "
                    f"all {ports}") if ports else f"profile {owner} offers no inbound ports; leave the attribute out"
    elif ports:
        too_many = f"this node allows at most {ports} per job (LARK_MAX_INBOUND_PORTS)"
        accepted = (f"ask for 1 to {ports} ports (this node's LARK_MAX_INBOUND_PORTS), or leave the attribute "
                    "out for none")
    else:
        too_many = "this node forwards no ports (LARK_MAX_INBOUND_PORTS = 0)"
        accepted = "this node forwards no ports (LARK_MAX_INBOUND_PORTS = 0); leave the attribute out"
    inbound = whole_number_attr(attrs, ATTR_INBOUND, ports, "{value} ports asked; " + too_many, accepted)
    return limits.default_inbound_ports if inbound is None else inbound


def bandwidth_within(asked: int | None, cap: int) -> int:
    """The limit for one direction under ``cap`` (0: none); 0 means unlimited.

    Under a cap, a job that asks for nothing gets the cap; one asking for more was refused by
    :func:`whole_number_attr`, not silently capped, so the user learns the limit.
    """
    return asked or cap
