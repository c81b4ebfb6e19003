"""Host -> site mapping from rules and registries, with a static resolver (no DNS traffic)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml

from perfsonar.errors import RegistryError
from perfsonar.registries import (
    RegistryEntry,
    load_registry,
    parse_cric,
    parse_gocdb,
    parse_osg_resource_group,
    parse_registry,
)
from perfsonar.sites import SiteMap, SiteRule, registry_claims, resolve_names, static_resolver


def osg_resource_group(resources: dict[str, tuple[str, str | None, bool]], accounting: str | None = None) -> dict:
    """An OSG Topology resource-group document; resources: name -> (fqdn, perfSONAR service, active)."""
    out: dict = {"GroupDescription": "test", "GroupID": 1, "Production": True, "Resources": {}}
    for name, (fqdn, service, active) in resources.items():
        res: dict = {"Active": active, "Description": name, "FQDN": fqdn, "ID": 1,
                     "Services": {service or "CE": {"Description": "svc", "Details": {"hidden": False}}}}
        if service:
            res["Services"][service]["Details"] = {"endpoint": fqdn}
        if accounting:
            res["WLCGInformation"] = {"AccountingName": accounting, "InteropAccounting": True}
        out["Resources"][name] = res
    return out


def test_osg_topology_tree(tmp_path: Path) -> None:
    site_dir = tmp_path / "University of Michigan" / "AGLT2"
    site_dir.mkdir(parents=True)
    doc = osg_resource_group({
        "US-AGLT2 BW": ("psmsu02.aglt2.org", "net.perfSONAR.Bandwidth", True),
        "US-AGLT2 LAT": ("psmsu01.aglt2.org", "net.perfSONAR.Latency", True),
        "AGLT2_CE": ("gate01.aglt2.org", None, True),
        "OLD LAT": ("old.aglt2.org", "net.perfSONAR.Latency", False),
    }, accounting="US-AGLT2")
    (site_dir / "AGLT2.yaml").write_text(yaml.safe_dump(doc))
    (site_dir / "AGLT2_downtime.yaml").write_text("- ID: 1\n")
    (site_dir / "SITE.yaml").write_text("ID: 1\n")
    entries = load_registry("osg-topology", tmp_path)
    assert {(e.site, e.host, e.flavour) for e in entries} == {
        ("AGLT2", "psmsu02.aglt2.org", "net.perfSONAR.Bandwidth"),
        ("AGLT2", "psmsu01.aglt2.org", "net.perfSONAR.Latency"),
    }
    assert {e.site for e in load_registry("osg-topology", tmp_path, "wlcg")} == {"US-AGLT2"}
    assert {e.site for e in load_registry("osg-topology", tmp_path, "site")} == {"AGLT2"}


def test_osg_disabled_resources_and_groups_and_yml_files(tmp_path: Path) -> None:
    # Topology's "Disable: true" means deleted (resource or whole group); files may end in .yml.
    site_dir = tmp_path / "Facility" / "SITEA"
    site_dir.mkdir(parents=True)
    doc = osg_resource_group({"BW": ("ps-bw.a.example", "net.perfSONAR.Bandwidth", True),
                              "GONE": ("gone.a.example", "net.perfSONAR.Latency", True)})
    doc["Resources"]["GONE"]["Disable"] = True
    (site_dir / "RG-A.yml").write_text(yaml.safe_dump(doc))
    dead = osg_resource_group({"BW": ("ps-bw.b.example", "net.perfSONAR.Bandwidth", True)})
    dead["Disable"] = True
    (site_dir / "RG-B.yaml").write_text(yaml.safe_dump(dead))
    (site_dir / "RG-A_downtime.yml").write_text("- ID: 1\n")
    assert [(e.site, e.host) for e in load_registry("osg-topology", tmp_path)] == [("RG-A", "ps-bw.a.example")]
    assert [(e.site, e.host) for e in load_registry("osg-topology", site_dir / "RG-A.yml")] == [
        ("RG-A", "ps-bw.a.example")]


def test_osg_endpoint_wins_over_fqdn() -> None:
    doc = osg_resource_group({"BW": ("node.example", "net.perfSONAR.Bandwidth", True)})
    doc["Resources"]["BW"]["Services"]["net.perfSONAR.Bandwidth"]["Details"] = {"endpoint": "ps-bw.example:443"}
    assert [e.host for e in parse_osg_resource_group(doc, "f", "RG")] == ["ps-bw.example"]
    with pytest.raises(RegistryError):
        parse_osg_resource_group(["not", "a", "mapping"], "f", "RG")


def test_gocdb_xml_and_json() -> None:
    xml = """<?xml version="1.0" encoding="UTF-8"?><results>
      <SERVICE_ENDPOINT PRIMARY_KEY="1"><HOSTNAME>perfsonar-bw.cern.ch</HOSTNAME>
        <SERVICE_TYPE>net.perfSONAR.Bandwidth</SERVICE_TYPE><SITENAME>CERN-PROD</SITENAME>
        <IN_PRODUCTION>Y</IN_PRODUCTION></SERVICE_ENDPOINT>
      <SERVICE_ENDPOINT PRIMARY_KEY="2"><HOSTNAME>ce.cern.ch</HOSTNAME>
        <SERVICE_TYPE>CREAM-CE</SERVICE_TYPE><SITENAME>CERN-PROD</SITENAME></SERVICE_ENDPOINT>
      <SERVICE_ENDPOINT PRIMARY_KEY="3"><HOSTNAME>ps-test.cern.ch</HOSTNAME>
        <SERVICE_TYPE>net.perfSONAR.Latency</SERVICE_TYPE><SITENAME>CERN-PROD</SITENAME>
        <IN_PRODUCTION>N</IN_PRODUCTION></SERVICE_ENDPOINT></results>"""
    assert [(e.site, e.host) for e in parse_gocdb(xml, "g.xml")] == [("CERN-PROD", "perfsonar-bw.cern.ch")]
    js = json.dumps([{"HOSTNAME": "PS-LAT.IN2P3.FR", "SERVICE_TYPE": "net.perfSONAR.Latency",
                      "SITENAME": "IN2P3-CC", "IN_PRODUCTION": "Y"}])
    assert [(e.site, e.host) for e in parse_gocdb(js, "g.json")] == [("IN2P3-CC", "ps-lat.in2p3.fr")]
    with pytest.raises(RegistryError):
        parse_gocdb("<results><unclosed>", "bad.xml")


def test_cric_object_and_agis_list() -> None:
    cric = {"ps-bw.example.ch": {"endpoint": "ps-bw.example.ch", "flavour": "bandwidth", "rcsite": "CH-SITE",
                                 "state": "ACTIVE", "type": "PerfSonar"},
            "gone": {"endpoint": "old.example.ch", "flavour": "latency", "rcsite": "CH-SITE", "state": "DISABLED"},
            "ce": {"endpoint": "ce.example.ch", "rcsite": "CH-SITE", "type": "CE", "state": "ACTIVE"}}
    assert [(e.site, e.host, e.flavour) for e in parse_cric(json.dumps(cric), "c")] == [
        ("CH-SITE", "ps-bw.example.ch", "bandwidth")]
    agis = [{"endpoint": "ps.example.us:8085", "flavour": "latency", "rc_site": "US-SITE", "status": "production"}]
    assert [(e.site, e.host) for e in parse_cric(json.dumps(agis), "a")] == [("US-SITE", "ps.example.us")]
    with pytest.raises(RegistryError):
        parse_cric("{not json", "c")


def test_missing_registry_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="nope.json"):
        load_registry("gocdb", tmp_path / "nope.json")


def test_bad_osg_yaml_names_file_and_line(tmp_path: Path) -> None:
    site_dir = tmp_path / "Facility" / "Site"
    site_dir.mkdir(parents=True)
    (site_dir / "RG-A.yaml").write_text("Resources:\n  BW: {FQDN: [a\n")
    with pytest.raises(RegistryError, match=r"RG-A.yaml:3: is not valid YAML: expected ',' or '\]'"):
        load_registry("osg-topology", tmp_path)
    (site_dir / "RG-A.yaml").write_bytes(b"Resources: \xff\n")
    with pytest.raises(RegistryError, match=r"RG-A.yaml: cannot be read: 'utf-8' codec"):
        load_registry("osg-topology", tmp_path)
    with pytest.raises(RegistryError, match=r"^rg.yaml:1: has a value that contains itself through an alias"):
        parse_registry("osg-topology", "Resources: &r {x: *r}\n", "rg.yaml")


def test_site_map_precedence_and_resolution() -> None:
    rules = [
        SiteRule("UNL", networks=(ipaddress.ip_network("129.93.0.0/16"),)),
        SiteRule("UNL-HCC", networks=(ipaddress.ip_network("129.93.5.0/24"),)),  # longer prefix wins
        SiteRule("FNAL", patterns=("*.fnal.gov",)),
        SiteRule("CALTECH", patterns=(r"re:^perfsonar\d+\.ultralight\.org$",)),
    ]
    entries = [RegistryEntry("AGLT2", "psmsu02.aglt2.org", "topology"),
               RegistryEntry("AGLT2", "psum01.aglt2.org", "topology")]
    table = {"psmsu02.aglt2.org": ["192.41.236.32", "2001:48a8:68f7:1::32"],
             "psum01.aglt2.org": ["192.41.230.59"],
             "ps-mesh.fnal.gov": ["131.225.205.12"]}
    addresses = resolve_names(["psmsu02.aglt2.org", "psum01.aglt2.org", "ps-mesh.fnal.gov", "192.0.2.1"],
                              static_resolver(table))
    assert "192.0.2.1" not in addresses  # literals are not resolved
    smap = SiteMap(rules, registry_claims(entries), addresses=addresses)
    assert smap.site_of(None, "129.93.1.1") == "UNL"
    assert smap.site_of(None, "129.93.5.7") == "UNL-HCC"
    assert smap.site_of("PS-MESH.FNAL.GOV.", None) == "FNAL"
    # Measured by IP only: the IP belongs to a mesh host name that a pattern matches.
    assert smap.site_of(None, "131.225.205.12") == "FNAL"
    assert smap.site_of("perfsonar7.ultralight.org", None) == "CALTECH"
    assert smap.site_of("perfsonar.ultralight.org", None) is None
    # Registry host resolved to all its addresses, IPv6 in any spelling.
    assert smap.site_of(None, "192.41.236.32") == "AGLT2"
    assert smap.site_of(None, "2001:48a8:68f7:0001:0000:0000:0000:0032") == "AGLT2"
    assert smap.site_of("psum01.aglt2.org", "192.41.230.59") == "AGLT2"
    # Unknown stays unknown: no guessing from similar names.
    assert smap.site_of("psmsu03.aglt2.org", "192.0.2.50") is None
    assert smap.site_of("192.41.236.32", None) == "AGLT2"  # a name field holding an IP literal


def test_conflicting_registries_keep_first_and_report() -> None:
    entries = [RegistryEntry("A", "ps.example", "one"), RegistryEntry("B", "ps.example", "two")]
    smap = SiteMap((), registry_claims(entries), addresses={"ps.example": ["192.0.2.7"]})
    assert smap.site_of(None, "192.0.2.7") == "A"
    assert smap.conflicts and "ps.example is A (registry one) and B (registry two); keeping A" in smap.conflicts[0]
