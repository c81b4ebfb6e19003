"""Config knobs: defaults work, bad values name file, line and knob."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lark.config import load_config
from lark.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "50-lark.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_build_a_working_config() -> None:
    config = load_config([])
    assert config.name_prefix == "lark"
    assert config.firewall == "nftables"
    assert config.nat_ipv4_pool == ipaddress.ip_network("10.250.0.0/16")
    assert config.default_network_type in config.network_types


def test_knobs_from_a_config_dir_with_macros_and_continuations(tmp_path: Path) -> None:
    write(tmp_path, "# HTCondor's own lines are left alone\nNUM_CPUS = 4\nuse feature : foo\n"
          "LARK_TRAFFIC_CLASSES = campus, off_campus\n"
          "LARK_CAMPUS_NETS = 129.93.0.0/16\n".replace("LARK_CAMPUS_NETS", "LARK_TRAFFIC_CLASS_CAMPUS")
          + "LARK_TRAFFIC_CLASS_OFF_CAMPUS = 0.0.0.0/0, \\\n   ::/0\n"
          "lark_max_bandwidth_mbit = 500\n")
    write(tmp_path, "LARK_DENY = $(LARK_TRAFFIC_CLASS_CAMPUS)\n", "60-more.conf")
    config = load_config([tmp_path])
    assert [c.name for c in config.traffic_classes] == ["campus", "off_campus"]
    assert config.traffic_classes[1].attribute_suffix == "OffCampus"
    assert config.traffic_classes[1].networks == (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    assert config.max_bandwidth_mbit == 500
    assert config.deny == (ipaddress.ip_network("129.93.0.0/16"),)


@pytest.mark.parametrize(("text", "knob", "line", "fragment"), [
    ("\n\nLARK_NAT_IPV4_POOL = 10.0.0.0/33\n", "LARK_NAT_IPV4_POOL", 3, "not a CIDR prefix"),
    ("LARK_FIREWALL = pf\n", "LARK_FIREWALL", 1, "nftables, iptables"),
    ("LARK_NAME_PREFIX = much-too-long\n", "LARK_NAME_PREFIX", 1, "15 characters"),
    ("LARK_NETWORK_TYPES = nat, wifi\n", "LARK_NETWORK_TYPES", 1, "unknown network type 'wifi'"),
    ("LARK_NETWORK_TYPES = nat, bridge\n", "LARK_BRIDGE", None, "no bridge is configured"),
    ("LARK_ANTI_SPOOF = maybe\n", "LARK_ANTI_SPOOF", 1, "True or False"),
    ("LARK_INBOUND_PORT_RANGE = 5000-4000\n", "LARK_INBOUND_PORT_RANGE", 1, "first <= last"),
    ("LARK_TRAFFIC_CLASSES = campus\n", "LARK_TRAFFIC_CLASSES", 1, "LARK_TRAFFIC_CLASS_CAMPUS is not set"),
    ("LARK_NAT_IPV4_SUBNET_LENGTH = 12\n", "LARK_NAT_IPV4_SUBNET_LENGTH", 1, "larger than the pool"),
    ("LARK_BRIDGE_IPV4_POOL = 198.51.100.0/24 198.51.100.10-198.51.101.5\n", "LARK_BRIDGE_IPV4_POOL", 1,
     "must lie inside"),
    ("LARK_DENY = $(NOT_DEFINED_ANYWHERE)\n", "LARK_DENY", 1, "not defined"),
    ("LARK_MAX_BANDWIDTH = 5\n", "LARK_MAX_BANDWIDTH", 1, "unknown Lark knob"),
    ("LARK_FIREWAL = nftables\n", "LARK_FIREWAL", 1, "unknown Lark knob (did you mean LARK_FIREWALL?"),
])
def test_bad_values_name_file_line_and_knob(tmp_path: Path, text: str, knob: str, line: int | None,
                                            fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config([path])
    err = info.value
    assert err.knob == knob
    assert fragment in str(err)
    if line is not None:
        assert err.source == str(path) and err.line == line
        assert str(err).startswith(f"{path}:{line}: {knob}: ")


def test_pool_with_range_and_gateway(tmp_path: Path) -> None:
    path = write(tmp_path, "LARK_NETWORK_TYPES = nat, bridge\nLARK_BRIDGE = larkbr0\n"
                 "LARK_BRIDGE_IPV4_POOL = 198.51.100.0/24 198.51.100.10-198.51.100.20\n"
                 "LARK_BRIDGE_IPV4_GATEWAY = 198.51.100.1\n")
    site = load_config([path]).site_attachments["bridge"]
    assert site.parent == "larkbr0"
    assert site.ipv4 is not None and str(site.ipv4.first) == "198.51.100.10" and str(site.ipv4.last) == "198.51.100.20"
    assert str(site.ipv4_gateway) == "198.51.100.1"


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config([tmp_path / "absent.conf"])


@pytest.mark.parametrize("knob", ["LARK_STARTER", "LARK_ACCOUNTING_JOURNAL", "LARK_METRICS_TEXTFILE"])
def test_path_knobs_must_be_absolute(knob: str) -> None:
    # an empty or relative journal path would fail only later, at each job's end
    with pytest.raises(ConfigError, match=f"{knob}: expected an absolute path"):
        load_config([], {knob: "relative/file"})
