"""Network profiles: strict validation with precise errors, the examples that ship, jobs, CPUs, the CLI."""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import classad2
import pytest

from lark.classads import job_attributes
from lark.cli import profiles as cli
from lark.config import load_config
from lark.errors import ConfigError, RequestError
from lark.policy import request_from_attributes
from lark.profiles import (
    ACCEPTED,
    Catalog,
    CatalogCache,
    CpuHint,
    Profile,
    ProfileError,
    ResolvedRequest,
    authorize,
    build_catalog,
    format_cpulist,
    load_profiles,
    node_advertisement,
    numa_node,
    parse_cpulist,
    parse_profiles,
    profile_dir,
    request_for_job,
    resolve_cpus,
    resolve_request,
    user_and_groups,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "profiles.md"
EXAMPLES = ROOT / "condor_config.d" / "profiles.d"
ETC = Path("/etc/condor/profiles.d")


def doc_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def config():
    return load_config([])


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """A two-socket machine: ens1f0 on node 1, a VLAN on it, a NIC without NUMA info, a veth."""
    root = tmp_path / "sys"

    def put(rel: str, text: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")

    put("class/net/ens1f0/device/numa_node", "1")
    put("class/net/eno1/device/numa_node", "-1")
    (root / "class/net/veth0").mkdir(parents=True)
    (root / "class/net/ens1f0.100").mkdir(parents=True)
    os.symlink("../ens1f0", root / "class/net/ens1f0.100/lower_ens1f0")
    put("devices/system/node/node0/cpulist", "0-15,32-47")
    put("devices/system/node/node1/cpulist", "16-31,48-63")
    put("devices/system/cpu/online", "0-47")  # 48-63 are offline
    return root


def errors_of(text: str, source: str = "dtn.yaml") -> list[str]:
    profiles, errors = parse_profiles(text, source)
    assert not (profiles and errors) or all(e.profile not in {p.name for p in profiles} for e in errors)
    return [str(e) for e in errors]


def macvlan(extra: str = "", name: str = "dtn") -> str:
    return f"profiles:\n  {name}:\n    attach: macvlan\n    parent: ens1f0\n    ipv4_pool: 198.51.100.0/24\n{extra}"


# ------------------------------------------------------------------------------------------------
# The catalogue of bad profiles: each with its precise error (file, line, profile, key, accepted values)

BAD = [
    ("unknown key", macvlan("    bandwith_mbit: 100\n"),
     f"dtn.yaml:6: profile 'dtn': key 'bandwith_mbit' is not known; did you mean 'bandwidth_mbit'? (accepted: "
     f"{ACCEPTED})"),
    ("unknown key, nothing close", macvlan("    privileged: true\n"),
     f"dtn.yaml:6: profile 'dtn': key 'privileged' is not known (accepted: {ACCEPTED})"),
    ("wrong type", macvlan("    inbound_ports: ten\n"),
     "dtn.yaml:6: profile 'dtn': key 'inbound_ports' must be a whole number 1..65535 (leave the key out for no "
     "inbound ports), got 'ten'"),
    ("bad CIDR", "profiles:\n  dtn:\n    attach: bridge\n    parent: br0\n    ipv4_pool: 198.51.100.0/33\n",
     "dtn.yaml:5: profile 'dtn': key 'ipv4_pool' is not valid: not a CIDR prefix: '198.51.100.0/33' (e.g. "
     "192.0.2.0/24 or 2001:db8::/48); write 'CIDR' or 'CIDR FIRST-LAST', e.g. 198.51.100.0/24 "
     "198.51.100.10-198.51.100.99"),
    ("IPv6 prefix as ipv4_pool", "profiles:\n  dtn:\n    attach: ipvlan\n    parent: ens1f0\n"
     "    ipv4_pool: 2001:db8::/64\n",
     "dtn.yaml:5: profile 'dtn': key 'ipv4_pool' is not valid: 2001:db8::/64 is not an IPv4 prefix; write 'CIDR' or "
     "'CIDR FIRST-LAST', e.g. 198.51.100.0/24 198.51.100.10-198.51.100.99"),
    ("range outside pool", "profiles:\n  dtn:\n    attach: macvlan\n    parent: ens1f0\n"
     "    ipv4_pool: 198.51.100.0/24 198.51.100.10-198.51.101.5\n",
     "dtn.yaml:5: profile 'dtn': key 'ipv4_pool' is not valid: range 198.51.100.10-198.51.101.5 must lie inside "
     "198.51.100.0/24 with first <= last; write 'CIDR' or 'CIDR FIRST-LAST', e.g. 198.51.100.0/24 "
     "198.51.100.10-198.51.100.99"),
    ("bad mode", "profiles:\n  dtn:\n    attach: wifi\n",
     "dtn.yaml:3: profile 'dtn': key 'attach' must be one of nat, bridge, macvlan, ipvlan, none, got 'wifi'"),
    ("no mode", "profiles:\n  dtn:\n    parent: ens1f0\n",
     "dtn.yaml:2: profile 'dtn': key 'attach' is required (accepted: nat, bridge, macvlan, ipvlan, none)"),
    ("missing parent for macvlan", "profiles:\n  dtn:\n    attach: macvlan\n    ipv4_pool: 198.51.100.0/24\n",
     "dtn.yaml:2: profile 'dtn': key 'parent' is required for attach 'macvlan' (the interface the macvlan children "
     "hang off, e.g. ens1f0)"),
    ("missing bridge", "profiles:\n  lab:\n    attach: bridge\n    ipv4_pool: 198.51.100.0/24\n",
     "dtn.yaml:2: profile 'lab': key 'parent' is required for attach 'bridge' (the bridge jobs join, e.g. "
     "br-data)"),
    ("no pool", "profiles:\n  dtn:\n    attach: macvlan\n    parent: ens1f0\n",
     "dtn.yaml:2: profile 'dtn': key 'ipv4_pool' or ipv6_pool is required for attach 'macvlan' (the addresses jobs "
     "get), unless addressing is dhcp, slaac or dhcp+slaac"),
    ("bad addressing", macvlan("    addressing: bootp\n"),
     "dtn.yaml:6: profile 'dtn': key 'addressing' is not valid: expected one of static, dhcp, slaac, dhcp+slaac, "
     "got 'bootp'"),
    ("addressing for a pools-only mode", macvlan("    addressing: dhcp\n").replace("macvlan", "ipvlan"),
     "dtn.yaml:6: profile 'dtn': key 'addressing' does not apply to attach 'ipvlan' (its jobs take addresses from "
     "the pools only; the network addresses bridge and macvlan jobs)"),
    ("addressing for nat", "profiles:\n  dtn:\n    attach: nat\n    addressing: dhcp\n",
     "dtn.yaml:4: profile 'dtn': key 'addressing' does not apply to attach 'nat' (nat jobs get their addresses from "
     "LARK_NAT_IPV4_POOL/LARK_NAT_IPV6_POOL)"),
    ("interface name too long", macvlan().replace("ens1f0", "a-very-long-interface0"),
     "dtn.yaml:4: profile 'dtn': key 'parent' must be an interface name of at most 15 characters without '/', ':' "
     "or spaces, got 'a-very-long-interface0'"),
    ("invalid env name", macvlan("    environment:\n      9LIVES: x\n"),
     "dtn.yaml:7: profile 'dtn': key 'environment' has a bad entry: '9LIVES' is not a valid environment variable "
     "name (letters, digits and _, not starting with a digit)"),
    ("reserved LARK_ prefix", macvlan("    environment:\n      LARK_PORT_RANGE: x\n"),
     "dtn.yaml:7: profile 'dtn': key 'environment' has a bad entry: 'LARK_PORT_RANGE' starts with LARK_, which is "
     "reserved for Lark"),
    ("reserved _CONDOR_ prefix, any case", macvlan("    environment:\n      _condor_STARTD_DEBUG: x\n"),
     "dtn.yaml:7: profile 'dtn': key 'environment' has a bad entry: '_condor_STARTD_DEBUG' starts with _CONDOR_, "
     "which is reserved for HTCondor"),
    ("env value over two lines", macvlan('    environment:\n      MOTD: "two\\nlines"\n'),
     "dtn.yaml:7: profile 'dtn': key 'environment' has a bad entry: must be one line without tabs, repeated spaces "
     "or spaces at either end (the job wrapper receives it as one KEY=VALUE line)"),
    ("env value YAML reads as a boolean", macvlan("    environment:\n      DEBUG: yes\n"),
     "dtn.yaml:7: profile 'dtn': key 'environment' has a bad entry: DEBUG must be a string or a whole number, got "
     "the boolean true (quote it if you mean a string)"),
    ("env var also set from the port range", macvlan("    inbound_ports: 10\n    environment:\n"
                                                     "      GLOBUS_TCP_PORT_RANGE: '50000,50100'\n"),
     "dtn.yaml:8: profile 'dtn': key 'environment' has a bad entry: GLOBUS_TCP_PORT_RANGE is set from the job's "
     "port range (port_range_env); set it in one place"),
    ("negative bandwidth", macvlan("    bandwidth_in_mbit: -5\n"),
     "dtn.yaml:6: profile 'dtn': key 'bandwidth_in_mbit' must be a whole number 0..34359 (0 = unlimited; one TBF "
     "qdisc goes up to 34 Gbit/s), got -5"),
    ("bandwidth beyond one qdisc", macvlan("    bandwidth_mbit: 40000\n"),
     "dtn.yaml:6: profile 'dtn': key 'bandwidth_mbit' must be a whole number 0..34359 (0 = unlimited; one TBF "
     "qdisc goes up to 34 Gbit/s), got 40000"),
    ("port range size 0", macvlan("    inbound_ports: 0\n"),
     "dtn.yaml:6: profile 'dtn': key 'inbound_ports' must be a whole number 1..65535 (leave the key out for no "
     "inbound ports), got 0"),
    ("port range too big", macvlan("    inbound_ports: 70000\n"),
     "dtn.yaml:6: profile 'dtn': key 'inbound_ports' must be a whole number 1..65535 (leave the key out for no "
     "inbound ports), got 70000"),
    ("ports on a macvlan profile without IPv4",
     "profiles:\n  dtn:\n    attach: macvlan\n    parent: ens1f0\n    ipv6_pool: 2001:db8::/64\n"
     "    inbound_ports: 10\n",
     "dtn.yaml:6: profile 'dtn': key 'inbound_ports' needs an ipv4_pool for attach 'macvlan' (the port range is "
     "advertised with the job's IPv4 address)"),
    ("unknown template field", macvlan("    inbound_ports: 10\n    port_range_env:\n"
                                       "      HPSS_PORT_RANGE: '{start}-{end}'\n"),
     "dtn.yaml:8: profile 'dtn': key 'port_range_env' has a bad entry: template '{start}-{end}' uses {start}; "
     "accepted fields: {first}, {last}, {public_address}"),
    ("template without a field", macvlan("    inbound_ports: 10\n    port_range_env:\n"
                                         "      HPSS_PORT_RANGE: fixed\n"),
     "dtn.yaml:8: profile 'dtn': key 'port_range_env' has a bad entry: template 'fixed' uses none of {first}, "
     "{last}, {public_address}"),
    ("port variables without ports", macvlan("    port_range_env:\n      HPSS_PORT_RANGE: '{first}-{last}'\n"),
     "dtn.yaml:6: profile 'dtn': key 'port_range_env' needs inbound_ports (there is no port range to export)"),
    ("bad cpulist", macvlan("    cpus: 0-x\n"),
     "dtn.yaml:6: profile 'dtn': key 'cpus' must be 'network', 'none' or a CPU list like '0-7,16-23': '0-x' is not "
     "a CPU number or range N-M"),
    ("backwards cpulist", macvlan("    cpus: 7-3\n"),
     "dtn.yaml:6: profile 'dtn': key 'cpus' must be 'network', 'none' or a CPU list like '0-7,16-23': range 7-3 "
     "runs backwards"),
    ("cpus: network without a NIC", "profiles:\n  dtn:\n    attach: nat\n    cpus: network\n",
     "dtn.yaml:4: profile 'dtn': key 'cpus' is 'network', which needs a parent (the NIC whose NUMA node gives the "
     "CPUs)"),
    ("gateway outside the pool", macvlan("    ipv4_gateway: 203.0.113.1\n"),
     "dtn.yaml:6: profile 'dtn': key 'ipv4_gateway' is outside ipv4_pool's prefix 198.51.100.0/24 (got "
     "203.0.113.1); the gateway must be on the jobs' own subnet"),
    ("gateway of the wrong family", macvlan("    ipv4_gateway: 2001:db8::1\n"),
     "dtn.yaml:6: profile 'dtn': key 'ipv4_gateway' must be an IPv4 address, got 2001:db8::1"),
    ("gateway without its pool", "profiles:\n  dtn:\n    attach: macvlan\n    parent: ens1f0\n"
     "    ipv6_pool: 2001:db8::/64\n    ipv4_gateway: 198.51.100.1\n",
     "dtn.yaml:6: profile 'dtn': key 'ipv4_gateway' needs ipv4_pool (a gateway for addresses this profile does not "
     "hand out)"),
    ("bad allow entry", macvlan("    allow: [198.51.100.0/24, example.org]\n"),
     "dtn.yaml:6: profile 'dtn': key 'allow' has 'example.org', which is not an address or CIDR prefix (e.g. "
     "198.51.100.0/24, 2001:db8::/32)"),
    ("allow as a string", macvlan("    allow: 198.51.100.0/24\n"),
     "dtn.yaml:6: profile 'dtn': key 'allow' must be a list of strings, e.g. [198.51.100.0/24, 2001:db8::/32], got "
     "'198.51.100.0/24'"),
    ("empty allow", macvlan("    allow: []\n"),
     "dtn.yaml:6: profile 'dtn': key 'allow' is an empty list; leave the key out to allow every destination"),
    ("user YAML reads as a boolean", macvlan("    users: [alice, no]\n"),
     "dtn.yaml:6: profile 'dtn': key 'users' must be a list of strings, e.g. [alice, bob], but has the boolean false "
     "(quote it if you mean a string)"),
    ("pool on a nat profile", "profiles:\n  dtn:\n    attach: nat\n    ipv4_pool: 198.51.100.0/24\n",
     "dtn.yaml:4: profile 'dtn': key 'ipv4_pool' does not apply to attach 'nat' (nat jobs get their addresses from "
     "LARK_NAT_IPV4_POOL/LARK_NAT_IPV6_POOL)"),
    ("bandwidth on a none profile", "profiles:\n  dtn:\n    attach: none\n    bandwidth_mbit: 10\n",
     "dtn.yaml:4: profile 'dtn': key 'bandwidth_mbit' does not apply to attach 'none' (the job has no network to "
     "limit)"),
    ("key written twice", macvlan("    parent: ens1f1\n"),
     "dtn.yaml:6: profile 'dtn': key 'parent' appears twice in the profile (first at line 4); YAML would silently "
     "keep the last one"),
    ("profile written twice in a file", "profiles:\n  dtn:\n    attach: nat\n  dtn:\n    attach: none\n",
     "dtn.yaml:4: profile 'dtn': name appears twice in this file (first at line 2)"),
    ("bad profile name", "profiles:\n  DTN 1:\n    attach: nat\n",
     "dtn.yaml:2: profile 'DTN 1': name must be 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a "
     "letter or digit (jobs match it with stringListMember in LarkProfiles)"),
    ("profile is not a mapping", "profiles:\n  dtn: macvlan\n",
     f"dtn.yaml:2: profile 'dtn': must be a mapping of settings (accepted keys: {ACCEPTED})"),
    ("unknown top-level key", "profile:\n  dtn:\n    attach: nat\n",
     "dtn.yaml:1: key 'profile' is not known at the top level (accepted: profiles)"),
    ("empty file", "", "dtn.yaml: must be a mapping with one key, 'profiles', that maps profile names to settings"),
    ("YAML syntax error", "profiles:\n  dtn:\n    attach: nat\n    allow: [198.51.100.0/24\n    deny: []\n",
     "dtn.yaml:5: is not valid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence started at "
     "line 4)"),
    ("YAML indentation error", "profiles:\n  dtn:\n    attach: nat\n   parent: x\n",
     "dtn.yaml:4: is not valid YAML: expected <block end>, but found '<block mapping start>' (while parsing a block "
     "mapping started at line 2)"),
    ("two YAML documents", "profiles:\n  a:\n    attach: nat\n---\nprofiles: {}\n",
     "dtn.yaml:4: is not valid YAML: but found another document (expected a single document in the stream started "
     "at line 1)"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_profile_gives_its_precise_error(text: str, expected: str) -> None:
    profiles, errors = parse_profiles(text, "dtn.yaml")
    assert [str(e) for e in errors] == [expected]
    assert profiles == []  # a profile with an error is never offered


def test_every_problem_of_a_file_is_reported_and_good_profiles_survive() -> None:
    text = ("profiles:\n  good:\n    attach: nat\n  bad:\n    attach: macvlan\n    parent: ens1f0\n"
            "    ipv4_pool: 10.0.0.0/8\n    bandwith_mbit: 5\n    cpus: 9-1\n")
    profiles, errors = parse_profiles(text, "x.yaml")
    assert [p.name for p in profiles] == ["good"]
    assert [(e.line, e.profile, e.key) for e in errors] == [(8, "bad", "bandwith_mbit"), (9, "bad", "cpus")]


def test_errors_are_config_errors_naming_file_line_profile_and_key() -> None:
    (err,) = parse_profiles(macvlan("    bandwidth_mbit: fast\n"), "/etc/condor/profiles.d/dtn.yaml")[1]
    assert isinstance(err, ProfileError) and isinstance(err, ConfigError)
    assert (err.source, err.line, err.profile, err.key) == ("/etc/condor/profiles.d/dtn.yaml", 6, "dtn",
                                                            "bandwidth_mbit")
    assert str(err).startswith("/etc/condor/profiles.d/dtn.yaml:6: profile 'dtn': key 'bandwidth_mbit' must be")


def test_doc_error_examples_are_real_messages() -> None:
    produced = {e for _, _, e in BAD}
    examples = [b for b in doc_blocks("text") if b.startswith("dtn.yaml:")]
    assert examples, "docs/profiles.md lost its block of example errors"
    for line in examples[0].splitlines():
        assert line in produced


# ------------------------------------------------------------------------------------------------
# Across files: unique names, pools, the node's knobs


def test_duplicate_names_across_files_hide_both_copies() -> None:
    catalog = build_catalog([("a.yaml", "profiles:\n  dtn:\n    attach: nat\n  other:\n    attach: none\n"),
                             ("b.yaml", "profiles:\n\n  dtn:\n    attach: none\n")])
    assert catalog.names == ("other",)
    assert [str(e) for e in catalog.errors] == [
        "b.yaml:3: profile 'dtn': name is also defined at a.yaml:2 (profile names must be unique across "
        "LARK_PROFILE_DIR; neither is offered)"]
    with pytest.raises(RequestError, match="defined on this node but has errors"):
        catalog.select("dtn")


def test_a_faulty_copy_also_hides_the_good_one() -> None:
    catalog = build_catalog([("a.yaml", "profiles:\n  dtn:\n    attach: wifi\n"),
                             ("b.yaml", "profiles:\n  dtn:\n    attach: nat\n")])
    assert catalog.profiles == ()
    assert str(catalog.errors[1]) == ("b.yaml:2: profile 'dtn': name is also defined, with errors, at a.yaml:3 "
                                      "(profile names must be unique across LARK_PROFILE_DIR)")


def test_overlapping_pools_are_refused_identical_ones_shared() -> None:
    lab = ("profiles:\n  {name}:\n    attach: {mode}\n    parent: br-lab\n"
           "    ipv4_pool: 192.0.2.0/24 {range}\n")
    catalog = build_catalog([
        ("a.yaml", lab.format(name="lab", mode="bridge", range="192.0.2.100-192.0.2.199")),
        ("b.yaml", lab.format(name="lab2", mode="bridge", range="192.0.2.100-192.0.2.199")),  # same: shared
        ("c.yaml", lab.format(name="lab3", mode="bridge", range="192.0.2.150-192.0.2.160")),  # overlaps
        ("d.yaml", lab.format(name="lab4", mode="macvlan", range="192.0.2.100-192.0.2.199")),  # other mode
        ("e.yaml", lab.format(name="lab5", mode="macvlan", range="192.0.2.200-192.0.2.250")),  # disjoint
        ("f.yaml", lab.format(name="lab6", mode="bridge", range="192.0.2.100-192.0.2.199")
         + "    ipv4_gateway: 192.0.2.1\n"),  # same range, but a gateway lab does not keep back
    ])
    assert catalog.names == ("lab", "lab2", "lab5")
    assert [str(e) for e in catalog.errors] == [
        "c.yaml:5: profile 'lab3': key 'ipv4_pool' 192.0.2.0/24 192.0.2.150-192.0.2.160 overlaps as profile 'lab' "
        "(a.yaml:2) (192.0.2.0/24 192.0.2.100-192.0.2.199, attach 'bridge'); pools must be identical with the same "
        "attach mode and gateway, or disjoint, or two jobs could get the same address",
        "d.yaml:5: profile 'lab4': key 'ipv4_pool' 192.0.2.0/24 192.0.2.100-192.0.2.199 is the same range as profile "
        "'lab' (a.yaml:2) (192.0.2.0/24 192.0.2.100-192.0.2.199, attach 'bridge'); pools must be identical with the "
        "same attach mode and gateway, or disjoint, or two jobs could get the same address",
        "f.yaml:5: profile 'lab6': key 'ipv4_pool' 192.0.2.0/24 192.0.2.100-192.0.2.199 is the same range with "
        "another gateway (192.0.2.1 vs none) as profile 'lab' (a.yaml:2) (192.0.2.0/24 192.0.2.100-192.0.2.199, "
        "attach 'bridge'); pools must be identical with the same attach mode and gateway, or disjoint, or two jobs "
        "could get the same address"]


def test_pool_overlapping_the_node_knobs_is_refused() -> None:
    config = load_config([], {"LARK_MACVLAN_IPV4_POOL": "198.51.100.0/24 198.51.100.10-198.51.100.20"})
    catalog = build_catalog([("a.yaml", macvlan())], config)
    assert catalog.profiles == ()
    assert "overlaps as LARK_MACVLAN_IPV4_POOL (198.51.100.0/24 198.51.100.10-198.51.100.20" in str(catalog.errors[0])
    same = load_config([], {"LARK_MACVLAN_IPV4_POOL": "198.51.100.0/24"})
    assert build_catalog([("a.yaml", macvlan())], same).names == ("dtn",)


def test_port_range_larger_than_the_node_range_is_refused(config) -> None:
    text = "profiles:\n  wide:\n    attach: nat\n\n    inbound_ports: 6000\n"
    assert build_catalog([("a.yaml", text)]).names == ("wide",)  # without a node, only 1..65535 is checked
    catalog = build_catalog([("a.yaml", text)], config)
    assert [str(e) for e in catalog.errors] == [
        "a.yaml:5: profile 'wide': key 'inbound_ports' asks for 6000 ports per job, more than this node's "
        "LARK_INBOUND_PORT_RANGE (40000-44999) holds (5000)"]


# ------------------------------------------------------------------------------------------------
# The good profiles: docs and shipped examples


def test_every_yaml_block_in_the_docs_loads_cleanly(config) -> None:
    blocks = doc_blocks("yaml")
    assert len(blocks) >= 3
    for i, block in enumerate(blocks):
        profiles, errors = parse_profiles(block, f"docs/profiles.md block {i}")
        assert errors == [] and profiles
    catalog = build_catalog([(f"block{i}", b) for i, b in enumerate(blocks)], config)
    assert catalog.errors == () and set(catalog.names) == {"dtn", "nat-callback", "lab", "lab-pinned"}


def test_shipped_examples_load_cleanly_and_match_the_docs(config) -> None:
    catalog = load_profiles(EXAMPLES, config)
    assert catalog.errors == ()
    assert catalog.names == ("dtn", "nat-callback")
    docs = build_catalog([(f"block{i}", b) for i, b in enumerate(doc_blocks("yaml"))])
    for profile in catalog.profiles:
        documented = docs.get(profile.name)
        assert documented is not None
        assert {**documented.as_dict(), "source": None} == {**profile.as_dict(), "source": None}


def test_the_dtn_example_in_detail(config) -> None:
    dtn = load_profiles(EXAMPLES, config).get("dtn")
    assert dtn is not None and dtn.attach == "macvlan" and dtn.parent == "ens1f0"
    assert dtn.ipv4_pool is not None and (str(dtn.ipv4_pool.first), str(dtn.ipv4_pool.last)) == (
        "198.51.100.64", "198.51.100.95")
    assert str(dtn.ipv4_gateway) == "198.51.100.1" and str(dtn.ipv6_gateway) == "2001:db8:100::1"
    assert dtn.site is not None and dtn.site.parent == "ens1f0" and dtn.site.ipv6 == dtn.ipv6_pool
    assert (dtn.inbound_ports, dtn.bandwidth_in_mbit, dtn.bandwidth_out_mbit) == (100, 25000, 25000)
    assert [(v.name, v.render(40000, 40099)) for v in dtn.port_range_env] == [
        ("GLOBUS_TCP_PORT_RANGE", "40000,40099"), ("HPSS_PORT_RANGE", "40000-40099")]
    assert dtn.deny == (ipaddress.ip_network("198.51.100.0/28"),) and dtn.allow == ()
    assert dtn.cpus == CpuHint("network")
    assert dtn.environment == (("GLOBUS_TCP_SOURCE_RANGE", "50000,51000"),)
    assert (dtn.users, dtn.groups) == (("xfer",), ("dtnops",))


def test_port_range_env_defaults_to_gridftp_and_can_be_emptied() -> None:
    (p,), _ = parse_profiles("profiles:\n  a:\n    attach: nat\n    inbound_ports: 4\n", "a.yaml")
    assert [(v.name, v.template) for v in p.port_range_env] == [("GLOBUS_TCP_PORT_RANGE", "{first},{last}")]
    (p,), _ = parse_profiles("profiles:\n  a:\n    attach: nat\n    inbound_ports: 4\n    port_range_env: {}\n",
                             "a.yaml")
    assert p.port_range_env == ()
    (p,), _ = parse_profiles("profiles:\n  a:\n    attach: nat\n", "a.yaml")
    assert p.port_range_env == () and p.inbound_ports == 0


def test_merge_keys_reuse_a_profile_and_explicit_keys_win() -> None:
    text = ("profiles:\n  a: &a\n    attach: nat\n    bandwidth_mbit: 100\n"
            "  b:\n    <<: *a\n    bandwidth_out_mbit: 10\n    description: b\n")
    profiles, errors = parse_profiles(text, "m.yaml")
    assert errors == []
    b = profiles[1]
    assert (b.attach, b.bandwidth_in_mbit, b.bandwidth_out_mbit, b.description) == ("nat", 100, 10, "b")


def test_directory_reading_skips_backups_hidden_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("profiles:\n  a:\n    attach: nat\n")
    (tmp_path / "b.yml").write_text("profiles:\n  b:\n    attach: none\n")
    (tmp_path / "a.yaml~").write_text("garbage: [")
    (tmp_path / ".c.yaml").write_text("garbage: [")
    (tmp_path / "README").write_text("not yaml")
    (tmp_path / "off.yaml.disabled").write_text("garbage: [")
    (tmp_path / "latin1.yaml").write_bytes(b"profiles:\n  d:\n    description: caf\xe9\n")
    catalog = load_profiles(tmp_path)
    assert catalog.names == ("a", "b")
    assert len(catalog.errors) == 1 and "latin1.yaml: cannot be read:" in str(catalog.errors[0])


def test_missing_directory(tmp_path: Path) -> None:
    assert load_profiles(tmp_path / "nope", missing_ok=True) == Catalog(tmp_path / "nope")
    (err,) = load_profiles(tmp_path / "nope").errors
    assert str(err) == f"{tmp_path / 'nope'}: is not a directory (set LARK_PROFILE_DIR to the directory of profile " \
                       "files)"


def test_profile_dir_comes_from_the_node_config(tmp_path: Path) -> None:
    assert profile_dir(None) == Path("/etc/condor/profiles.d")
    assert profile_dir(load_config([])) == Path("/etc/condor/profiles.d")
    conf = tmp_path / "50-lark.conf"
    conf.write_text("LARK_STATE_DIR = /srv/lark\nLARK_PROFILE_DIR = $(LARK_STATE_DIR)/profiles\n")
    assert profile_dir(load_config([conf])) == Path("/srv/lark/profiles")


def test_catalog_cache_reloads_when_a_file_changes(tmp_path: Path) -> None:
    seen: list[Catalog] = []
    cache = CatalogCache(tmp_path, on_reload=seen.append)
    assert cache.get().names == () and len(seen) == 1
    assert cache.get() is seen[0] and len(seen) == 1  # unchanged: no re-read
    (tmp_path / "a.yaml").write_text("profiles:\n  a:\n    attach: nat\n")
    assert cache.get().names == ("a",) and len(seen) == 2
    (tmp_path / "a.yaml").write_text("profiles:\n  a:\n    attach: nat\n    inbound_ports: 5\n")
    os.utime(tmp_path / "a.yaml", ns=(1, 1))  # a changed size is enough even when mtime goes backwards
    assert cache.get().get("a").inbound_ports == 5  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------
# Jobs: advertisement, authorisation, resolution


@pytest.fixture
def shipped(config) -> Catalog:
    return load_profiles(EXAMPLES, config)


def test_node_advertisement(shipped: Catalog) -> None:
    assert node_advertisement(shipped) == "dtn,nat-callback"
    assert node_advertisement(reversed(shipped.profiles)) == "dtn,nat-callback"
    assert node_advertisement(Catalog(None)) == ""


def test_authorize(shipped: Catalog) -> None:
    dtn, everyone = shipped.get("dtn"), shipped.get("nat-callback")
    assert dtn is not None and everyone is not None
    authorize(everyone, "bob", [])
    authorize(dtn, "xfer", [])
    authorize(dtn, "carol", ["users", "dtnops"])
    with pytest.raises(RequestError) as info:
        authorize(dtn, "bob", ["users"])
    assert info.value.attribute == "LarkNetworkProfile"
    assert str(info.value) == ("LarkNetworkProfile: user 'bob' may not use profile 'dtn' (allowed: users xfer; "
                               "members of dtnops); ask the node's admin for access or choose another profile")


def test_select_unknown_profile(shipped: Catalog) -> None:
    assert shipped.select(" DTN ").name == "dtn"
    with pytest.raises(RequestError) as info:
        shipped.select("dtm")
    assert str(info.value) == ("LarkNetworkProfile: profile 'dtm' is not offered on this node (offered: dtn, "
                               "nat-callback); require it with Requirements = stringListMember(\"dtm\", LarkProfiles)")


def test_resolve_takes_the_profile_as_is(shipped: Catalog, sysfs: Path) -> None:
    dtn = shipped.get("dtn")
    assert dtn is not None
    resolved = resolve_request({"LarkNetworkProfile": "dtn"}, dtn, "7.0", sysfs)
    req = resolved.request
    assert (req.job_id, req.network_type, req.bandwidth_in_mbit, req.bandwidth_out_mbit) == ("7.0", "macvlan",
                                                                                            25000, 25000)
    assert (req.inbound_ports, req.allow, req.deny) == (100, (), dtn.deny)
    assert resolved.site == dtn.site
    extras = resolved.extras
    assert extras is not None and extras.cpus == tuple(range(16, 32))
    assert extras.job_environment((40000, 40099), "198.51.100.70") == {
        "LARK_NETWORK_PROFILE": "dtn", "LARK_CPUS": "16-31", "GLOBUS_TCP_SOURCE_RANGE": "50000,51000",
        "GLOBUS_TCP_PORT_RANGE": "40000,40099", "HPSS_PORT_RANGE": "40000-40099"}
    assert "GLOBUS_TCP_PORT_RANGE" not in extras.job_environment(None, None)


def test_a_job_may_narrow_its_profile(shipped: Catalog, sysfs: Path) -> None:
    dtn = shipped.get("dtn")
    assert dtn is not None
    attrs = {"LarkNetworkType": "MACVLAN", "LarkBandwidthMbit": 1000, "LarkBandwidthOutMbit": 2000,
             "LarkInboundPorts": 10, "LarkAllow": "203.0.113.0/24", "LarkDeny": "198.51.100.0/28, 192.0.2.0/24"}
    resolved = resolve_request(attrs, dtn, "1.0", sysfs)
    req = resolved.request
    assert (req.bandwidth_in_mbit, req.bandwidth_out_mbit) == (1000, 2000)  # out overrides the both-ways 1000
    assert req.inbound_ports == 10 and resolved.extras is not None
    assert resolved.extras.port_range_env == dtn.port_range_env
    unset = resolve_request({"LarkBandwidthMbit": 1000}, dtn, "1.0", sysfs).request
    assert (unset.bandwidth_in_mbit, unset.bandwidth_out_mbit, unset.inbound_ports) == (1000, 1000, 100)
    assert req.allow == (ipaddress.ip_network("203.0.113.0/24"),)
    assert req.deny == (ipaddress.ip_network("198.51.100.0/28"), ipaddress.ip_network("192.0.2.0/24"))


def test_a_job_may_not_widen_its_profile(shipped: Catalog) -> None:
    dtn, nat = shipped.get("dtn"), shipped.get("nat-callback")
    assert dtn is not None and nat is not None
    walled = Profile(name="walled", source="w.yaml", line=2, attach="nat",
                     allow=(ipaddress.ip_network("198.51.100.0/24"),))
    none = Profile(name="quiet", source="q.yaml", line=2, attach="nat")
    cases = [
        ({"LarkNetworkType": "nat"}, dtn, "LarkNetworkType: 'nat' conflicts with LarkNetworkProfile 'dtn', which "
                                          "attaches by macvlan; leave LarkNetworkType out"),
        ({"LarkBandwidthMbit": 40000}, dtn, "LarkBandwidthMbit: 40000 Mbit/s is above the share of profile 'dtn' "
                                            "(25000 Mbit/s)"),
        ({"LarkBandwidthInMbit": 2000}, nat, "LarkBandwidthInMbit: 2000 Mbit/s is above the share of profile "
                                             "'nat-callback' (1000 Mbit/s)"),
        ({"LarkInboundPorts": 500}, dtn, "LarkInboundPorts: 500 ports asked; profile 'dtn' offers 100"),
        ({"LarkInboundPorts": 1}, none, "LarkInboundPorts: 1 ports asked; profile 'quiet' offers no inbound ports"),
        ({"LarkAllow": "198.51.100.0/25, 10.0.0.0/8"}, walled,
         "LarkAllow: 10.0.0.0/8 is outside what profile 'walled' allows (198.51.100.0/24)"),
        ({"LarkBandwidthMbit": -1}, dtn, "LarkBandwidthMbit: must not be negative, got -1; write a whole number "
                                         "of Mbit/s up to the share of profile 'dtn' (25000 Mbit/s), or leave the "
                                         "attribute out for that share"),
    ]
    for attrs, profile, message in cases:
        with pytest.raises(RequestError) as info:
            resolve_request(attrs, profile, "1.0")
        assert str(info.value) == message


def test_request_for_job(shipped: Catalog, config) -> None:
    looked_up: list[str] = []

    def catalog() -> Catalog:
        looked_up.append("catalog")
        return shipped

    def resolve(attrs: dict[str, object], groups: tuple[str, ...] = ()) -> ResolvedRequest:
        def who() -> tuple[str, tuple[str, ...]]:
            looked_up.append("user database")
            return "bob", groups
        return request_for_job(attrs, catalog, config, "3.0", who)

    plain = resolve({"LarkBandwidthMbit": 5})
    assert plain.request == request_from_attributes({"LarkBandwidthMbit": 5}, config, "3.0")
    assert plain.extras is None and plain.site is None
    # LarkNetworkProfile = undefined is ClassAd for "not set" (condor_qedit's way to clear it)
    assert resolve(job_attributes(classad2.parseOne("[LarkNetworkProfile = undefined]"))).extras is None
    assert looked_up == []  # no profile: neither the catalogue nor the user database on the job's start path
    nat = resolve({"LarkNetworkProfile": '"nat-callback"'})
    assert nat.request.network_type == "nat" and nat.request.inbound_ports == 20 and nat.site is None
    assert looked_up == ["catalog"]  # nat-callback is open to everyone: no user lookup
    with pytest.raises(RequestError, match="may not use profile 'dtn'"):
        resolve({"LarkNetworkProfile": "dtn"})
    assert resolve({"LarkNetworkProfile": "dtn"}, ("dtnops",)).site
    assert looked_up.count("user database") == 2


def test_a_profiles_limits_replace_the_node_knobs() -> None:
    # the node caps jobs at 100 Mbit/s and forwards no ports; the admin's profile gives more
    node = load_config([], {"LARK_MAX_BANDWIDTH_MBIT": "100", "LARK_MAX_INBOUND_PORTS": "0"})
    text = "profiles:\n  wide:\n    attach: nat\n    bandwidth_out_mbit: 5000\n    inbound_ports: 8\n" \
           "    deny: [192.0.2.0/24]\n"
    catalog = build_catalog([("w.yaml", text)], node)
    wide = catalog.get("wide")
    assert catalog.errors == () and wide is not None
    asked = {"LarkBandwidthOutMbit": 2000, "LarkInboundPorts": 8}
    with pytest.raises(RequestError, match="2000 Mbit/s is above this node's maximum of 100 Mbit/s"):
        request_for_job(asked, lambda: catalog, node, "1.0", lambda: ("bob", ()))
    req = request_for_job({**asked, "LarkNetworkProfile": "wide"}, lambda: catalog, node, "1.0",
                          lambda: ("bob", ())).request
    # in: the profile sets no share, so no limit (not the node's 100); out: what the job asked, under the share
    assert (req.bandwidth_in_mbit, req.bandwidth_out_mbit, req.inbound_ports) == (0, 2000, 8)
    assert req.deny == wide.deny and req.network_type == "nat"
    limits = wide.request_limits()
    assert (limits.network_types, limits.bandwidth_cap_mbit, limits.max_inbound_ports, limits.profile) == (
        ("nat",), (0, 5000), 8, "wide")


def test_a_job_without_a_profile_does_not_load_the_yaml_parser(tmp_path: Path) -> None:
    # the PREPARE_JOB hook imports lark.profiles for every job; only a job naming a profile reads files
    (tmp_path / "profiles.d").mkdir()
    (tmp_path / "profiles.d" / "dtn.yaml").write_text("profiles:\n  dtn:\n    attach: nat\n")
    conf = tmp_path / "lark.conf"
    conf.write_text(f"LARK_PROFILE_DIR = {tmp_path / 'profiles.d'}\n")
    probe = ("import sys\n"
             "from lark.hooks.prepare import hook_output\n"
             "out, code = hook_output('ClusterId = 1\\nProcId = 0\\nLarkBandwidthMbit = 10\\n')\n"
             "print(code, 'yaml' in sys.modules)\n"
             "hook_output('ClusterId = 1\\nProcId = 0\\nLarkNetworkProfile = \"dtn\"\\n')\n"
             "print('yaml' in sys.modules)\n")
    env = {**os.environ, "LARK_CONFIG": str(conf)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "False", "True"]


def test_hold_messages_in_the_docs_are_real(shipped: Catalog) -> None:
    dtn = shipped.get("dtn")
    assert dtn is not None
    calls = [lambda: authorize(dtn, "bob", ["users"]), lambda: shipped.select("dtm"),
             lambda: resolve_request({"LarkBandwidthMbit": 40000}, dtn, "1"),
             lambda: resolve_request({"LarkNetworkType": "nat"}, dtn, "1")]
    produced = []
    for call in calls:
        with pytest.raises(RequestError) as info:
            call()
        produced.append(f"Lark: {info.value}")
    block = next(b for b in doc_blocks("text") if b.startswith("Lark: "))
    assert block.splitlines() == produced


def test_user_and_groups_of_root() -> None:
    user, groups = user_and_groups(0)
    assert user == "root" and "root" in groups
    assert user_and_groups(2**31 - 7) == (str(2**31 - 7), ())


# ------------------------------------------------------------------------------------------------
# CPU affinity from sysfs


def cpus_profile(parent: str | None, cpus: str, attach: str = "nat") -> Profile:
    (p,), errors = parse_profiles(f"profiles:\n  p:\n    attach: {attach}\n"
                                  + (f"    parent: {parent}\n" if parent else "") + f"    cpus: '{cpus}'\n", "p.yaml")
    assert errors == []
    return p


def test_cpulist_parse_and_format() -> None:
    assert parse_cpulist("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist(" 5 , 1-2 ,2 ") == (1, 2, 5)
    assert format_cpulist((11, 0, 1, 2, 3, 8, 10)) == "0-3,8,10-11"
    for bad in ("", "1,,2", "a", "3-1", "9000"):
        with pytest.raises(ValueError):
            parse_cpulist(bad)


def test_network_hint_uses_the_nics_numa_node(sysfs: Path) -> None:
    placement = resolve_cpus(cpus_profile("ens1f0", "network"), sysfs)
    assert placement.cpus == tuple(range(16, 32))  # node 1 lists 16-31 and 48-63; 48-63 are offline
    assert placement.note == "16-31 (NUMA node 1 of ens1f0)"


def test_network_hint_follows_a_vlan_to_its_nic(sysfs: Path) -> None:
    assert numa_node("ens1f0.100", sysfs) == 1
    assert resolve_cpus(cpus_profile("ens1f0.100", "network", "nat"), sysfs).cpus == tuple(range(16, 32))


@pytest.mark.parametrize(("parent", "note"), [
    ("eno1", "not pinned: eno1 reports no NUMA node (virtual device or single-node machine)"),
    ("veth0", "not pinned: veth0 reports no NUMA node (virtual device or single-node machine)"),
    ("ens9", "not pinned: interface 'ens9' does not exist on this node"),
])
def test_network_hint_without_an_answer_does_not_pin(sysfs: Path, parent: str, note: str) -> None:
    assert resolve_cpus(cpus_profile(parent, "network"), sysfs).__dict__ == {"cpus": None, "note": note}


def test_explicit_and_no_hint(sysfs: Path) -> None:
    assert resolve_cpus(cpus_profile(None, "40-50"), sysfs).cpus == tuple(range(40, 48))  # only online ones
    placement = resolve_cpus(cpus_profile(None, "60-63"), sysfs)
    assert placement.cpus is None and placement.note == "not pinned: none of CPUs 60-63 is online (online: 0-47)"
    assert resolve_cpus(cpus_profile(None, "none"), sysfs).cpus is None
    assert resolve_cpus(cpus_profile(None, "3"), sysfs).cpus == (3,)


# ------------------------------------------------------------------------------------------------
# The CLI


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[int, str]:
    conf = tmp_path / "empty.conf"
    conf.write_text("")
    monkeypatch.setenv("LARK_CONFIG", str(conf))  # the built-in defaults, whatever this machine has
    parser = argparse.ArgumentParser(prog="lark")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["profiles", *argv])
    out = io.StringIO()
    code = args.func(args, out)
    return code, out.getvalue()


def test_cli_check_ok(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, out = run_cli(["check", str(EXAMPLES)], monkeypatch, tmp_path)
    assert (code, out) == (0, f"ok: 2 profile(s) in {EXAMPLES}: dtn, nat-callback\n")


def test_cli_check_transcript_in_the_docs(config) -> None:
    site = ("profiles:\n  dtn:\n    attach: nat\n  lab:\n    attach: macvlan\n    parent: ens1f1\n"
            "    ipv4_pool: 198.51.100.0/24 198.51.100.90-198.51.100.120\n    bandwith_mbit: 100\n"
            "  campus:\n    attach: bridge\n    parent: br-campus\n"
            "    ipv4_pool: 198.51.100.0/24 198.51.100.90-198.51.100.120\n    inbound_ports: 6000\n")
    texts = [(str(ETC / p.name), p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
    catalog = build_catalog([*texts, (str(ETC / "site.yaml"), site)], config, ETC)
    out = io.StringIO()
    assert cli.check(catalog, out) == 1
    block = next(b for b in doc_blocks("text") if b.startswith("$ lark profiles check"))
    assert out.getvalue().splitlines() == block.splitlines()[1:]


def test_cli_list_transcript_in_the_docs(config, sysfs: Path) -> None:
    texts = [(str(ETC / p.name), p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
    out = io.StringIO()
    assert cli.show(build_catalog(texts, config, ETC), sysfs, False, out) == 0
    block = next(b for b in doc_blocks("text") if b.startswith("$ lark profiles list"))
    assert out.getvalue().splitlines() == block.splitlines()[1:]


def test_cli_check_and_list_with_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sysfs: Path) -> None:
    d = tmp_path / "profiles.d"
    d.mkdir()
    (d / "a.yaml").write_text("profiles:\n  good:\n    attach: nat\n    cpus: 1\n  bad:\n    attach: nat\n"
                              "    bandwidth: 5\n")
    code, out = run_cli(["check", str(d)], monkeypatch, tmp_path)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{d / 'a.yaml'}:7: profile 'bad': key 'bandwidth' is not known; did you mean")
    assert lines[1] == f"1 error(s) in {d}; offered: good"
    code, out = run_cli(["list", str(d), "--sysfs", str(sysfs)], monkeypatch, tmp_path)
    assert code == 1
    assert "good: nat" in out and "  cpus: 1 -> 1 (CPUs 1)" in out
    assert out.splitlines()[-1] == "1 error(s), not offered: bad (see 'lark profiles check')"
    code, out = run_cli(["list", str(d), "--json", "--sysfs", str(sysfs)], monkeypatch, tmp_path)
    data = json.loads(out)
    assert code == 1 and [p["name"] for p in data["profiles"]] == ["good"]
    assert data["profiles"][0]["cpus_resolved"] == [1] and len(data["errors"]) == 1


def test_cli_list_json_of_the_examples(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sysfs: Path) -> None:
    code, out = run_cli(["list", str(EXAMPLES), "--json", "--sysfs", str(sysfs)], monkeypatch, tmp_path)
    data = json.loads(out)
    assert code == 0 and data["errors"] == []
    dtn = data["profiles"][0]
    assert dtn["name"] == "dtn" and dtn["attach"] == "macvlan" and dtn["parent"] == "ens1f0"
    assert dtn["ipv4_pool"] == "198.51.100.0/24 198.51.100.64-198.51.100.95"
    assert dtn["inbound_ports"] == 100 and dtn["bandwidth_in_mbit"] == 25000
    assert dtn["users"] == ["xfer"] and dtn["groups"] == ["dtnops"]
    assert dtn["cpus"] == "network" and dtn["cpus_resolved"] == list(range(16, 32))


def test_cli_advertise(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, out = run_cli(["advertise", str(EXAMPLES)], monkeypatch, tmp_path)
    assert (code, out) == (0, 'LarkProfiles = "dtn,nat-callback"\n')


def test_cli_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, out = run_cli(["check", str(tmp_path / "nope")], monkeypatch, tmp_path)
    assert code == 1 and out.startswith(f"{tmp_path / 'nope'}: is not a directory")
    monkeypatch.setattr("lark.cli.profiles.profile_dir", lambda config, external=None: tmp_path / "absent")
    code, out = run_cli(["list"], monkeypatch, tmp_path)  # the node's default dir may be absent
    assert (code, out) == (0, f"no profiles offered (directory: {tmp_path / 'absent'})\n")
    code, out = run_cli(["check"], monkeypatch, tmp_path)  # says so, not "ok: 0 profile(s) in ..."
    assert (code, out) == (0, f"ok: no profiles ({tmp_path / 'absent'} does not exist; set LARK_PROFILE_DIR if "
                              "they are elsewhere)\n")
    code, out = run_cli(["check", "--json"], monkeypatch, tmp_path)
    assert (code, json.loads(out)) == (0, {"directory": str(tmp_path / "absent"), "directory_exists": False,
                                           "profiles": [], "errors": []})


def test_cli_check_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    d = tmp_path / "profiles.d"
    d.mkdir()
    (d / "a.yaml").write_text("profiles:\n  good:\n    attach: nat\n  bad:\n    attach: nat\n    cpus: 7-3\n")
    code, out = run_cli(["check", str(d), "--json"], monkeypatch, tmp_path)
    message = "must be 'network', 'none' or a CPU list like '0-7,16-23': range 7-3 runs backwards"
    assert (code, json.loads(out)) == (1, {
        "directory": str(d), "directory_exists": True, "profiles": ["good"],
        "errors": [{"source": str(d / "a.yaml"), "line": 6, "profile": "bad", "key": "cpus", "message": message,
                    "text": f"{d / 'a.yaml'}:6: profile 'bad': key 'cpus' {message}"}]})
    code, out = run_cli(["check", str(EXAMPLES), "--json"], monkeypatch, tmp_path)
    assert (code, json.loads(out)["profiles"], json.loads(out)["errors"]) == (0, ["dtn", "nat-callback"], [])
