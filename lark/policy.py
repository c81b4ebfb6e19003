"""A job's network request, validated against the node's policy. Pure functions only.

The same validation runs in the PREPARE_JOB hook (so a bad request holds the job before it starts,
with a message the user can act on) and again in the broker (which never trusts the hook).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from lark.config import NETWORK_TYPES, IPNetwork, LarkConfig, parse_list
from lark.errors import RequestError

# Submit attributes a user may set (documented in docs/user-guide.md).
ATTR_TYPE = "LarkNetworkType"
ATTR_BANDWIDTH = "LarkBandwidthMbit"
ATTR_BANDWIDTH_IN = "LarkBandwidthInMbit"
ATTR_BANDWIDTH_OUT = "LarkBandwidthOutMbit"
ATTR_ALLOW = "LarkAllow"
ATTR_DENY = "LarkDeny"
ATTR_INBOUND = "LarkInboundPorts"
MAX_LIST_ENTRIES = 256


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    network_type: str
    bandwidth_in_mbit: int = 0  # 0: unlimited
    bandwidth_out_mbit: int = 0
    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    inbound_ports: int = 0


def _is_missing(value: object) -> bool:
    # classad2 hands back classad2.Value.Undefined for undefined attributes
    return value is None or str(value) in ("Undefined", "undefined", "Value.Undefined")


def _int_attr(attrs: Mapping[str, object], name: str) -> int | None:
    value = attrs.get(name)
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        raise RequestError(name, f"must be a whole number, got {value}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        try:
            number = int(str(value).strip().strip('"'))
        except ValueError:
            raise RequestError(name, f"must be a whole number, got {value!r}") from None
    if number < 0:
        raise RequestError(name, f"must not be negative, got {number}")
    return number


def _networks_attr(attrs: Mapping[str, object], name: str) -> tuple[IPNetwork, ...]:
    value = attrs.get(name)
    if _is_missing(value):
        return ()
    items = parse_list(str(value).strip().strip('"'))
    if len(items) > MAX_LIST_ENTRIES:
        raise RequestError(name, f"has {len(items)} entries; at most {MAX_LIST_ENTRIES} are accepted")
    nets = []
    for item in items:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise RequestError(name, f"{item!r} is not an address or CIDR prefix "
                                     "(write e.g. \"198.51.100.0/24, 2001:db8::/32\")") from None
    return tuple(nets)


def request_from_attributes(attrs: Mapping[str, object], config: LarkConfig, job_id: str) -> JobRequest:
    """Turn a job's ``Lark*`` attributes into a request this node will serve, or raise RequestError."""
    raw_type = attrs.get(ATTR_TYPE)
    network_type = config.default_network_type if _is_missing(raw_type) else str(raw_type).strip().lower()
    if network_type not in NETWORK_TYPES:
        raise RequestError(ATTR_TYPE, f"unknown network type {raw_type!r}; use one of {', '.join(NETWORK_TYPES)}")
    if network_type not in config.network_types:
        raise RequestError(ATTR_TYPE, f"{network_type!r} is not offered on this node (offered: "
                                      f"{', '.join(config.network_types)}); require it with "
                                      f"Requirements = stringListMember(\"{network_type}\", LarkNetworkTypes)")

    cap = config.max_bandwidth_mbit
    above = f"this node's maximum of {cap} Mbit/s"
    bw_in = bandwidth_within(asked_bandwidth(attrs, ATTR_BANDWIDTH_IN, config.default_bandwidth_mbit), cap, above)
    bw_out = bandwidth_within(asked_bandwidth(attrs, ATTR_BANDWIDTH_OUT, config.default_bandwidth_mbit), cap, above)

    inbound = _int_attr(attrs, ATTR_INBOUND) or 0
    if inbound > config.max_inbound_ports:
        raise RequestError(ATTR_INBOUND, f"{inbound} ports asked, this node allows at most "
                                         f"{config.max_inbound_ports} per job")
    if inbound and network_type == "none":
        raise RequestError(ATTR_INBOUND, "a job with LarkNetworkType = \"none\" cannot receive connections")

    allow = _networks_attr(attrs, ATTR_ALLOW)
    deny = _networks_attr(attrs, ATTR_DENY)
    return JobRequest(job_id=job_id, network_type=network_type, bandwidth_in_mbit=bw_in,
                      bandwidth_out_mbit=bw_out, allow=allow, deny=deny, inbound_ports=inbound)


def asked_bandwidth(attrs: Mapping[str, object], attr: str, default: int | None) -> tuple[str, int | None]:
    """(attribute that said it, Mbit/s) for one direction: ``attr`` > LarkBandwidthMbit > ``default``."""
    both = _int_attr(attrs, ATTR_BANDWIDTH)  # parsed first, even when unused: a malformed value is refused
    explicit = _int_attr(attrs, attr)
    if explicit is not None:
        return attr, explicit
    return ATTR_BANDWIDTH, both if both is not None else default


def bandwidth_within(asked: tuple[str, int | None], cap: int, above: str) -> int:
    """The limit for one direction under ``cap`` (0: none); 0 means unlimited.

    Under a cap, a job that asks for nothing (or 0) gets the cap; one asking for more is refused,
    not silently capped, so the user learns the limit (``above`` describes it in the message).
    """
    name, value = asked
    if cap and value and value > cap:
        raise RequestError(name, f"{value} Mbit/s is above {above}")
    return value or cap
