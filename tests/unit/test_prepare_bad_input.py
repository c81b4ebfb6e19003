"""Bad input that used to slip through: every one is held with a clear reason.

Each job ad is text as the starter hands it to the PREPARE_JOB hook, attribute values written the
way a user writes them after ``+`` in a submit file; classad2 parses it exactly as condor_submit
did (which, for instance, already turns 99999999999999999999 into 0). The hook's HoldReason must
name the attribute, show the value in ClassAd terms and say what is accepted: no Python repr
(``<Value.Undefined: 2>``, ``['nat']``), no 300-digit number. The broker reads the same ad with
plain ``eval`` and must refuse the same input through the same function.
"""

from __future__ import annotations

import re
from pathlib import Path

import classad2
import pytest

from lark.config import load_config
from lark.errors import RequestError
from lark.hooks.prepare import HOLD_CODE, hook_output
from lark.profiles import load_profiles, request_for_job

NODE = """\
LARK_MAX_BANDWIDTH_MBIT = 1000
LARK_MAX_INBOUND_PORTS = 20
LARK_PROFILE_DIR = {profiles}
"""
PROFILES = """\
profiles:
  dtn:
    attach: nat
    inbound_ports: 10
    bandwidth_mbit: 500
    allow: [198.51.100.0/24]
"""

PLAIN = "20 ports (this node's LARK_MAX_INBOUND_PORTS)"  # "ask for 1 to 20 ports (...)"
MBIT = "from 1 to 1000"  # LARK_MAX_BANDWIDTH_MBIT
TYPES = '"nat", "bridge", "macvlan", "ipvlan", "none"'
ALLOW = 'e.g. "198.51.100.0/24, 2001:db8::/32"'

# (what the submit file says after '+', the attribute refused, what the message must also contain)
BAD = [
    # a literal past 64 bits: condor_submit stores 0, so 0 must not mean "no ports, no hold"
    ("LarkInboundPorts = 99999999999999999999", "LarkInboundPorts", [PLAIN, "9223372036854775807 into 0"]),
    ("LarkInboundPorts = -99999999999999999999", "LarkInboundPorts", [PLAIN]),
    ("LarkInboundPorts = 1e308", "LarkInboundPorts", ["1e+308 ports asked; this node allows at most 20 per job "
                                                     "(LARK_MAX_INBOUND_PORTS)"]),
    ("LarkInboundPorts = 1e309", "LarkInboundPorts", ['real("INF")', PLAIN]),
    ('LarkInboundPorts = real("NaN")', "LarkInboundPorts", ['real("NaN")', PLAIN]),
    ("LarkInboundPorts = foo.bar", "LarkInboundPorts", ["foo.bar", "undefined", PLAIN]),
    ("LarkInboundPorts = {1, 2}", "LarkInboundPorts", ["{ 1, 2 }", PLAIN]),
    ("LarkInboundPorts = true", "LarkInboundPorts", ["true", PLAIN]),
    ("LarkInboundPorts = 2.5", "LarkInboundPorts", ["2.5", PLAIN]),
    ('LarkInboundPorts = ""', "LarkInboundPorts", ['""', PLAIN]),
    ("LarkInboundPorts = -3", "LarkInboundPorts", ["-3", PLAIN]),
    # classad2's Undefined and Error are IntEnums: they used to pass as 2 and 1 Mbit/s
    ("LarkBandwidthMbit = foo.bar", "LarkBandwidthMbit", ["foo.bar", "undefined", MBIT]),
    ('LarkBandwidthInMbit = "a" + 1', "LarkBandwidthInMbit", ['"a" + 1', "error", MBIT]),
    ("LarkBandwidthOutMbit = error", "LarkBandwidthOutMbit", ["error", MBIT]),
    ("LarkBandwidthMbit = 1e308", "LarkBandwidthMbit", ["1e+308 Mbit/s is above this node's maximum of 1000"]),
    ("LarkBandwidthMbit = 99999999999999999999", "LarkBandwidthMbit", [MBIT, "into 0"]),
    ("LarkBandwidthOutMbit = -1e308", "LarkBandwidthOutMbit", ["-1e+308", MBIT]),
    ('LarkBandwidthInMbit = real("NaN")', "LarkBandwidthInMbit", ['real("NaN")', MBIT]),
    ("LarkBandwidthMbit = 0", "LarkBandwidthMbit", [MBIT]),
    ("LarkNetworkType = foo.bar", "LarkNetworkType", ["foo.bar", "undefined", TYPES]),
    ("LarkNetworkType = error", "LarkNetworkType", ["error", TYPES]),
    ('LarkNetworkType = {"nat"}', "LarkNetworkType", ['{ "nat" }', TYPES]),
    ("LarkNetworkType = 5", "LarkNetworkType", ["5", TYPES]),
    ('LarkNetworkType = ""', "LarkNetworkType", ['""', TYPES]),
    # an empty allow list would mean "every destination": the opposite of what was asked
    ('LarkAllow = ""', "LarkAllow", ["every destination", ALLOW]),
    ('LarkAllow = ",,, "', "LarkAllow", ['",,, "', ALLOW]),
    ("LarkAllow = foo.bar", "LarkAllow", ["foo.bar", "undefined", ALLOW]),  # was read as the string "2"
    ("LarkAllow = 5", "LarkAllow", ["5 is not a list of destinations", ALLOW]),  # was read as the string "5"
    ('LarkAllow = {"198.51.100.0/24"}', "LarkAllow", ['{ "198.51.100.0/24" }', ALLOW]),
    ('LarkDeny = ""', "LarkDeny", ["lists no destination", ALLOW]),
    ("LarkDeny = true", "LarkDeny", ["true", ALLOW]),
    ('LarkNetworkProfile = ""', "LarkNetworkProfile", ["offers (dtn)"]),  # ran without its profile
    ("LarkNetworkProfile = foo.bar", "LarkNetworkProfile", ["foo.bar", "undefined", "offers (dtn)"]),
    ('LarkNetworkProfile = {"dtn"}', "LarkNetworkProfile", ['{ "dtn" }', "offers (dtn)"]),
    # with a profile: the same readers, the profile's limits
    ('LarkNetworkProfile = "dtn"\nLarkInboundPorts = 99999999999999999999', "LarkInboundPorts",
     ["1 to 10 ports (what profile 'dtn' offers)"]),
    ('LarkNetworkProfile = "dtn"\nLarkBandwidthMbit = 1e308', "LarkBandwidthMbit",
     ["1e+308 Mbit/s is above the share of profile 'dtn' (500 Mbit/s)"]),
    ('LarkNetworkProfile = "dtn"\nLarkNetworkType = foo.bar', "LarkNetworkType",
     ["foo.bar", "leave LarkNetworkType out"]),
    ('LarkNetworkProfile = "dtn"\nLarkAllow = ""', "LarkAllow", ['"" lists no destination', ALLOW,
                                                               "out for what profile 'dtn' allows"]),
]

GOOD = [
    'LarkNetworkType = "NAT"\nLarkBandwidthMbit = 100\nLarkInboundPorts = 5\nLarkAllow = "198.51.100.0/24"',
    "LarkBandwidthInMbit = 100.0\nLarkBandwidthOutMbit = 1000",
    "LarkNetworkType = undefined\nLarkAllow = undefined",  # ClassAd for "not set" (condor_qedit's way to clear)
    'LarkDeny = "203.0.113.0/24 2001:db8::/32"',
    'LarkNetworkProfile = "dtn"\nLarkInboundPorts = 10\nLarkBandwidthOutMbit = 500\nLarkAllow = "198.51.100.0/25"',
]


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    profiles = tmp_path / "profiles.d"
    profiles.mkdir()
    (profiles / "dtn.yaml").write_text(PROFILES)
    conf = tmp_path / "lark.conf"
    conf.write_text(NODE.format(profiles=profiles))
    monkeypatch.setenv("LARK_CONFIG", str(conf))
    return conf


def job_ad(lines: str) -> str:
    return f"ClusterId = 7\nProcId = 0\nOwner = \"alice\"\n{lines}\n"


def hold_reason(lines: str) -> str:
    out, code = hook_output(job_ad(lines))
    assert code == HOLD_CODE, out
    return str(classad2.parseOne(out, classad2.ParserType.Old).eval("HookStatusMessage"))


def assert_clear(message: str, attribute: str, fragments: list[str]) -> None:
    assert message.startswith(f"{attribute}: "), message
    assert "Value." not in message and "<" not in message and "['" not in message, message
    assert not re.search(r"\d{21,}", message), message  # never a 300-digit rendering of 1e308
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(("lines", "attribute", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_the_hook_holds_bad_input_with_a_clear_reason(node: Path, lines: str, attribute: str,
                                                      fragments: list[str]) -> None:
    reason = hold_reason(lines)
    assert reason.startswith("Lark: ")
    assert_clear(reason.removeprefix("Lark: "), attribute, fragments)


@pytest.mark.parametrize(("lines", "attribute", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_the_broker_refuses_the_same_input_the_same_way(node: Path, lines: str, attribute: str,
                                                        fragments: list[str]) -> None:
    # the broker (lark/broker/condor.py) evaluates every attribute itself, without the expressions
    # the hook keeps: an undefined or error value is still refused, shown as the ClassAd keyword
    ad = classad2.parseOne(job_ad(lines), classad2.ParserType.Old)
    attrs = {key: ad.eval(key) for key in ad.keys()}
    config = load_config()
    with pytest.raises(RequestError) as info:
        request_for_job(attrs, lambda: load_profiles(node.parent / "profiles.d", config), config, "7.0",
                        lambda: ("alice", ()))
    message = str(info.value)
    plain_values = not any(isinstance(v, classad2.Value) for v in attrs.values())
    if plain_values:  # nothing lost in evaluation: word for word what the hook said
        assert f"Lark: {message}" == hold_reason(lines)
    assert_clear(message, attribute, [f for f in fragments if "foo.bar" not in f and '"a" + 1' not in f])


@pytest.mark.parametrize("lines", GOOD)
def test_good_input_still_runs(node: Path, lines: str) -> None:
    assert hook_output(job_ad(lines)) == ("", 0)
