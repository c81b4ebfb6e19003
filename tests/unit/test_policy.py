"""A job's Lark attributes against node policy: what is accepted and what the user is told."""

from __future__ import annotations

import ipaddress

import pytest

from lark.config import load_config
from lark.errors import RequestError
from lark.policy import request_from_attributes


@pytest.fixture
def config():
    return load_config([], {"LARK_MAX_BANDWIDTH_MBIT": "1000", "LARK_MAX_INBOUND_PORTS": "20"})


def test_defaults_when_the_job_asks_nothing(config) -> None:
    req = request_from_attributes({}, config, "1.0")
    assert req.network_type == "nat"
    assert (req.bandwidth_in_mbit, req.bandwidth_out_mbit) == (1000, 1000)  # capped at the node maximum
    assert req.allow == () and req.inbound_ports == 0


def test_full_request(config) -> None:
    req = request_from_attributes({"LarkNetworkType": "NONE", "LarkBandwidthMbit": 100,
                                   "LarkBandwidthOutMbit": "20", "LarkAllow": "198.51.100.7, 2001:db8::/32",
                                   "LarkDeny": "203.0.113.0/24"}, config, "7.3")
    assert req.network_type == "none"
    assert (req.bandwidth_in_mbit, req.bandwidth_out_mbit) == (100, 20)
    assert req.allow == (ipaddress.ip_network("198.51.100.7/32"), ipaddress.ip_network("2001:db8::/32"))
    assert req.deny == (ipaddress.ip_network("203.0.113.0/24"),)


@pytest.mark.parametrize(("attrs", "attribute", "fragment"), [
    ({"LarkNetworkType": "wifi"}, "LarkNetworkType", "unknown network type"),
    ({"LarkNetworkType": "bridge"}, "LarkNetworkType", "not offered on this node"),
    ({"LarkBandwidthMbit": 5000}, "LarkBandwidthMbit", "above this node's maximum of 1000"),
    ({"LarkBandwidthInMbit": "fast"}, "LarkBandwidthInMbit", "whole number"),
    ({"LarkBandwidthMbit": -1}, "LarkBandwidthMbit", "must not be negative"),
    # a malformed both-ways limit is refused even when both directions are given explicitly
    ({"LarkBandwidthMbit": "lots", "LarkBandwidthInMbit": 5, "LarkBandwidthOutMbit": 5}, "LarkBandwidthMbit",
     "whole number"),
    ({"LarkAllow": "198.51.100.0/24, not-a-net"}, "LarkAllow", '"not-a-net" is not an address'),
    ({"LarkInboundPorts": 50}, "LarkInboundPorts", "at most 20"),
    ({"LarkNetworkType": "none", "LarkInboundPorts": 2}, "LarkInboundPorts", "cannot receive"),
])
def test_bad_requests_are_refused_with_an_actionable_message(config, attrs, attribute, fragment) -> None:
    with pytest.raises(RequestError) as info:
        request_from_attributes(attrs, config, "1.0")
    assert info.value.attribute == attribute
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{attribute}: ")
