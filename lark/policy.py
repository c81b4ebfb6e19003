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

from lark.attach import mode_names
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
# The request of a job without a profile (lark.profiles applies a profile on top of the readers)


def request_from_attributes(attrs: Mapping[str, object], config: LarkConfig, job_id: str) -> JobRequest:
    """Turn a job's ``Lark*`` attributes into a request this node will serve, or raise RequestError."""
    offered = ", ".join(config.network_types)
    known = ", ".join(f'"{t}"' for t in mode_names())
    type_accepted = (f"write one of {known} (this node offers: {offered}), or leave the attribute out for "
                     f"the default ({config.default_network_type})")
    text = string_attr(attrs, ATTR_TYPE, "a network type", type_accepted)
    network_type = config.default_network_type if text is None else text.lower()
    if network_type not in mode_names():
        raise RequestError(ATTR_TYPE, f"unknown network type {classad_text(text)}; {type_accepted}")
    if network_type not in config.network_types:
        raise RequestError(ATTR_TYPE, f"{network_type!r} is not offered on this node (offered: "
                                      f"{offered}); require it with "
                                      f"Requirements = stringListMember(\"{network_type}\", LarkNetworkTypes)")

    cap = config.max_bandwidth_mbit
    ceiling = min(cap, MAX_MBIT) if cap else MAX_MBIT
    above = f"this node's maximum of {cap} Mbit/s" if cap and cap <= MAX_MBIT else \
        f"the largest limit Lark can set ({MAX_MBIT} Mbit/s)"
    given = bandwidth_within(config.default_bandwidth_mbit, cap)  # what a job that asks nothing gets
    unlimited = f"this node's default ({given} Mbit/s)" if given else "no limit"
    bw_in, bw_out = bandwidth_attrs(attrs, ((ceiling, above), (ceiling, above)), config.default_bandwidth_mbit,
                                    f"write a whole number of Mbit/s from 1 to {ceiling}, or leave the attribute "
                                    f"out for {unlimited}")

    ports = config.max_inbound_ports
    if ports:
        ports_accepted = (f"ask for 1 to {ports} ports (this node's LARK_MAX_INBOUND_PORTS), or leave the "
                          "attribute out for none")
    else:
        ports_accepted = "this node forwards no ports (LARK_MAX_INBOUND_PORTS = 0); leave the attribute out"
    too_many = f"this node allows at most {ports} per job (LARK_MAX_INBOUND_PORTS)" if ports else \
        "this node forwards no ports (LARK_MAX_INBOUND_PORTS = 0)"
    inbound = whole_number_attr(attrs, ATTR_INBOUND, ports, "{value} ports asked; " + too_many, ports_accepted) or 0
    if inbound and network_type == "none":
        raise RequestError(ATTR_INBOUND, "a job with LarkNetworkType = \"none\" cannot receive connections")

    allow = networks_attr(attrs, ATTR_ALLOW) or ()
    deny = networks_attr(attrs, ATTR_DENY) or ()
    return JobRequest(job_id=job_id, network_type=network_type, bandwidth_in_mbit=bandwidth_within(bw_in, cap),
                      bandwidth_out_mbit=bandwidth_within(bw_out, cap), allow=allow, deny=deny,
                      inbound_ports=inbound)


def bandwidth_within(asked: int | None, cap: int) -> int:
    """The limit for one direction under ``cap`` (0: none); 0 means unlimited.

    Under a cap, a job that asks for nothing gets the cap; one asking for more was refused by
    :func:`whole_number_attr`, not silently capped, so the user learns the limit.
    """
    return asked or cap
