"""Where a host's site comes from: every source in its documented order, each decision explained.

Registry fixtures are written in the registries' public export formats (see docs/spider.md, "Site
mapping"): OSG Topology's ``rgsummary/xml`` (the XML its ``resourcegroup_yaml_to_xml`` converter
emits), GOCDB's ``get_service_endpoint`` XML and CRIC's ``service/query/?json`` object.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from perfsonar.config import parse_config
from perfsonar.crawl import Spider
from perfsonar.meshes import meta_site, parse_meshconfig, parse_psconfig
from perfsonar.model import SiteClaim
from perfsonar.pool import pool_knowledge
from perfsonar.registries import parse_registry
from perfsonar.sites import DomainRule, SiteMap, SiteRule, registry_claims, site_key
from tests.perfsonar.fakeps import FakePerfSONAR, Fault, StaticApp, meshconfig_mesh, psconfig_mesh

OSG_RGSUMMARY = """<?xml version="1.0" encoding="utf-8"?>
<ResourceSummary xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
                 xsi:schemaLocation="https://my.opensciencegrid.org/schema/rgsummary.xsd">
  <ResourceGroup>
    <GridType>OSG Production Resource</GridType>
    <GroupID>391</GroupID>
    <GroupName>AGLT2</GroupName>
    <Disable>false</Disable>
    <Facility><ID>10029</ID><Name>University of Michigan</Name></Facility>
    <Site><ID>10031</ID><Name>AGLT2</Name></Site>
    <SupportCenter><ID>12</ID><Name>USATLAS</Name></SupportCenter>
    <GroupDescription>ATLAS Great Lakes Tier 2</GroupDescription>
    <Resources>
      <Resource>
        <ID>1090</ID><Name>US-AGLT2_MSU BW</Name><Active>true</Active><Disable>false</Disable>
        <Services><Service><ID>130</ID><Name>net.perfSONAR.Bandwidth</Name><Description>BW</Description>
          <Details><endpoint>psmsu02.aglt2.org</endpoint></Details></Service></Services>
        <Description>perfSONAR bandwidth</Description><FQDN>psmsu02.aglt2.org</FQDN>
        <WLCGInformation><InteropBDII>false</InteropBDII><AccountingName>US-AGLT2</AccountingName>
          <TapeCapacity>0</TapeCapacity></WLCGInformation>
      </Resource>
      <Resource>
        <ID>1091</ID><Name>US-AGLT2_UM LAT</Name><Active>false</Active><Disable>false</Disable>
        <Services><Service><ID>131</ID><Name>net.perfSONAR.Latency</Name><Description>LAT</Description>
          <Details><endpoint>psum01.aglt2.org</endpoint></Details></Service></Services>
        <FQDN>psum01.aglt2.org</FQDN>
      </Resource>
    </Resources>
  </ResourceGroup>
</ResourceSummary>
"""

GOCDB_XML = """<?xml version="1.0" encoding="UTF-8"?>
<results>
  <SERVICE_ENDPOINT PRIMARY_KEY="7513G0">
    <PRIMARY_KEY>7513G0</PRIMARY_KEY>
    <HOSTNAME>perfsonar-bw.example.ac.uk</HOSTNAME>
    <GOCDB_PORTAL_URL>https://goc.egi.eu/portal/index.php?Page_Type=Service&amp;id=7513</GOCDB_PORTAL_URL>
    <BETA>N</BETA>
    <SERVICE_TYPE>net.perfSONAR.Bandwidth</SERVICE_TYPE>
    <CORE>N</CORE>
    <IN_PRODUCTION>Y</IN_PRODUCTION>
    <NODE_MONITORED>Y</NODE_MONITORED>
    <SITENAME>UKI-EXAMPLE</SITENAME>
    <COUNTRY_NAME>United Kingdom</COUNTRY_NAME>
    <ROC_NAME>NGI_UK</ROC_NAME>
    <SCOPES><SCOPE>EGI</SCOPE><SCOPE>wlcg</SCOPE></SCOPES>
  </SERVICE_ENDPOINT>
</results>
"""

CRIC_JSON = {"UKI-EXAMPLE_LAT": {"name": "UKI-EXAMPLE_LAT", "type": "PerfSonar", "flavour": "latency",
                                 "endpoint": "perfsonar-lat.example.ac.uk", "rcsite": "UKI-EXAMPLE",
                                 "state": "ACTIVE", "status": "production"}}


def test_registries_from_urls_in_their_export_formats(server: FakePerfSONAR, tmp_path: Path) -> None:
    exports = StaticApp()
    server.mount("/reg", exports)
    exports.put_raw("/rgsummary/xml", OSG_RGSUMMARY, "text/xml")
    exports.put_raw("/gocdbpi/public", GOCDB_XML, "application/xml")
    exports.put("/cric", CRIC_JSON)
    cfg = parse_config({
        "discovery": {"meshes": [server.url("/reg/none")]},
        "spider": {"state_file": str(tmp_path / "s.json")},
        "sites": {"resolve_dns": False, "registries": [
            {"type": "osg-topology", "url": server.url("/reg/rgsummary/xml"), "site_name": "wlcg"},
            {"type": "gocdb", "url": server.url("/reg/gocdbpi/public")},
            {"type": "cric", "url": server.url("/reg/cric")}]},
    }, str(tmp_path / "spider.yaml"))
    result = Spider(cfg).crawl(persist=False)
    smap = result.site_map
    assert smap is not None
    assert smap.explain("psmsu02.aglt2.org", None).site == "US-AGLT2"
    assert "rgsummary/xml" in smap.explain("psmsu02.aglt2.org", None).source
    assert smap.site_of("psum01.aglt2.org", None) is None  # an inactive resource
    assert smap.site_of("perfsonar-bw.example.ac.uk", None) == "UKI-EXAMPLE"
    lat = smap.explain("perfsonar-lat.example.ac.uk", None)
    assert lat.site == "UKI-EXAMPLE" and "(latency)" in lat.source
    assert not [e for e in result.errors if "registry" in e]


def test_a_registry_outage_keeps_its_last_entries_and_is_retried_next_crawl(server: FakePerfSONAR,
                                                                           tmp_path: Path) -> None:
    exports = StaticApp()
    server.mount("/reg", exports)
    exports.put("/cric", CRIC_JSON)
    exports.put_raw("/gocdbpi/public", GOCDB_XML, "application/xml")
    cfg = parse_config({"discovery": {"meshes": [server.url("/reg/none")]}, "http": {"retries": 0},
                        "spider": {"state_file": str(tmp_path / "s.json")},
                        "sites": {"resolve_dns": False, "registries": [
                            {"type": "cric", "url": server.url("/reg/cric")},
                            {"type": "gocdb", "url": server.url("/reg/gocdbpi/public")}]}},
                       str(tmp_path / "spider.yaml"))
    clock = [1_800_000_000.0]
    spider = Spider(cfg, clock=lambda: clock[0])
    lat, bw = "perfsonar-lat.example.ac.uk", "perfsonar-bw.example.ac.uk"  # from CRIC, from GOCDB

    def crawl() -> tuple[str | None, str | None, list[str]]:
        result = spider.crawl(persist=False)
        assert result.site_map is not None
        return result.site_map.site_of(lat, None), result.site_map.site_of(bw, None), result.errors

    # CRIC is down at the first crawl: GOCDB's entries are used, CRIC is asked again 10 minutes later.
    server.fault("/reg/cric", Fault("status", 503, times=1))
    first = crawl()
    assert first[:2] == (None, "UKI-EXAMPLE") and any("/reg/cric" in e and "503" in e for e in first[2])
    clock[0] += 600
    assert crawl()[:2] == ("UKI-EXAMPLE", "UKI-EXAMPLE")
    # A day later (the refresh), CRIC fails again: its entries from the last good read stay.
    clock[0] += 86401
    server.fault("/reg/cric", Fault("status", 503, times=1))
    asked = server.requests_to("/reg/gocdbpi")
    third = crawl()
    assert third[:2] == ("UKI-EXAMPLE", "UKI-EXAMPLE") and any("last good read" in e for e in third[2])
    assert server.requests_to("/reg/gocdbpi") == asked + 1  # GOCDB was refreshed as usual
    clock[0] += 600
    cric, gocdb = server.requests_to("/reg/cric"), server.requests_to("/reg/gocdbpi")
    assert crawl()[:2] == ("UKI-EXAMPLE", "UKI-EXAMPLE")
    assert server.requests_to("/reg/cric") == cric + 1  # CRIC was retried ...
    assert server.requests_to("/reg/gocdbpi") == gocdb  # ... GOCDB, read 10 minutes ago, was not


def test_osg_rgsummary_site_name_choices() -> None:
    assert [(e.site, e.host) for e in parse_registry("osg-topology", OSG_RGSUMMARY, "x")] == [
        ("AGLT2", "psmsu02.aglt2.org")]
    assert parse_registry("osg-topology", OSG_RGSUMMARY, "x", "site")[0].site == "AGLT2"
    assert parse_registry("osg-topology", OSG_RGSUMMARY, "x", "wlcg")[0].site == "US-AGLT2"
    # <Disable>true</Disable> on the resource or on its group: deleted.
    assert parse_registry("osg-topology", OSG_RGSUMMARY.replace(
        "<Active>true</Active><Disable>false</Disable>", "<Active>true</Active><Disable>true</Disable>"), "x") == []
    assert parse_registry("osg-topology", OSG_RGSUMMARY.replace(
        "<Disable>false</Disable>\n    <Facility>", "<Disable>true</Disable>\n    <Facility>"), "x") == []


def test_sources_in_documented_order_each_decision_explained() -> None:
    host = "ps.site.example"
    claims = [SiteClaim("FROM-MESH", host, "mesh m: addresses.x._meta.display-name", "psconfig"),
              SiteClaim("FROM-MESHCONFIG", host, "mesh m: organizations[0].sites[0].description", "meshconfig"),
              SiteClaim("FROM-REGISTRY", host, "registry r", "registry"),
              SiteClaim("FROM-POOL", host, "pool: LarkPerfSONARHosts", "pool")]
    domains = [DomainRule("site.example", "FROM-DOMAIN", "sites.domains.site.example")]
    rule = SiteRule("FROM-RULE", patterns=("ps.*",), source="sites.rules[0]")
    addresses = {host: ["192.0.2.7"]}
    order = ["FROM-RULE", "FROM-POOL", "FROM-REGISTRY", "FROM-MESHCONFIG", "FROM-MESH", "FROM-DOMAIN"]
    for i, expected in enumerate(order):
        # each round drops the source that won the previous one
        smap = SiteMap([rule] if i == 0 else [], claims[:5 - max(i, 1)], domains, addresses=addresses)
        decision = smap.explain(None, "192.0.2.7")  # measured by address only
        assert decision.site == expected, (i, decision)
    explained = SiteMap([rule], claims, domains, addresses=addresses).explain(host, None)
    assert explained.source == "sites.rules[0] host pattern 'ps.*'"
    by_ip = SiteMap([], claims[:1], addresses=addresses).explain(None, "192.0.2.7")
    assert by_ip.source == "mesh m: addresses.x._meta.display-name, by address 192.0.2.7 of ps.site.example"


def test_domain_rules_last_and_by_reverse_dns() -> None:
    smap = SiteMap([], [], [DomainRule("unl.edu", "UNL", "sites.domains.unl.edu")],
                   reverse={"129.93.5.7": "perfsonar2.hcc.unl.edu."}.get)
    assert smap.site_of("ps.unl.edu", None) == "UNL"
    decision = smap.explain(None, "129.93.5.7")
    assert decision.site == "UNL" and "(reverse DNS)" in decision.source
    assert smap.site_of("ps.notunl.edu", None) is None and smap.site_of(None, "192.0.2.1") is None


def test_site_names_are_normalised_once_as_matchmaking_sees_them() -> None:
    claims = [SiteClaim("  Nebraska   Omaha ", "a.example", "r", "registry"),
              SiteClaim("nebraska omaha", "b.example", "m", "psconfig"),
              SiteClaim("Nebraska_Omaha", "c.example", "m", "psconfig")]
    smap = SiteMap([], claims)
    # One site, spelled as the highest-precedence source spells it (space and "_" are one attribute name).
    assert {smap.site_of(h, None) for h in ("a.example", "b.example", "c.example")} == {"Nebraska Omaha"}
    assert site_key("Nebraska Omaha") == site_key("NEBRASKA_OMAHA") == "nebraska_omaha"


def test_pool_knowledge_from_slot_ads() -> None:
    ads = [{"Machine": "node1.unl.edu", "LarkSite": "UNL", "LarkPerfSONARHosts": "ps-bw.unl.edu, ps-lat.unl.edu"},
           {"Machine": "node2.unl.edu", "LarkSite": "UNL"},
           {"Machine": "glidein7.shared.example", "GLIDEIN_Site": "SiteA"},
           {"Machine": "glidein8.shared.example", "GLIDEIN_Site": "SiteB"},  # a domain of two sites: no rule
           {"Machine": "bare", "LarkSite": "X"}, {"Machine": "node3.other.edu"}]
    claims, domains = pool_knowledge(ads)
    assert [(c.site, c.host, c.kind) for c in claims] == [("UNL", "ps-bw.unl.edu", "pool"),
                                                          ("UNL", "ps-lat.unl.edu", "pool")]
    assert [(d.domain, d.site) for d in domains] == [("unl.edu", "UNL")]
    assert "2 execute nodes of UNL in unl.edu" in domains[0].source


def test_pool_source_in_a_crawl_is_optional_and_fakeable(server: FakePerfSONAR, tmp_path: Path) -> None:
    pub = StaticApp()
    server.mount("/pub", pub)
    pub.put("/m", psconfig_mesh("M", "throughput", ["ps-bw.unl.edu", "ps.fnal.gov"], "PT6H", {}))
    cfg = parse_config({"discovery": {"meshes": [server.url("/pub/m")]}, "sites": {"resolve_dns": False}},
                       str(tmp_path / "spider.yaml"))
    slots = [{"Machine": "node1.fnal.gov", "LarkSite": "FNAL"},
             {"Machine": "node9.unl.edu", "LarkSite": "UNL", "LarkPerfSONARHosts": ["ps-bw.unl.edu"]}]
    result = Spider(cfg, pool_source=lambda: slots).crawl(persist=False)
    assert result.site_map is not None
    assert result.site_map.explain("ps-bw.unl.edu", None).source == "pool: LarkPerfSONARHosts of execute nodes of UNL"
    fnal = result.site_map.explain("ps.fnal.gov", None)
    assert fnal.site == "FNAL" and "1 execute node of FNAL in fnal.gov" in fnal.source
    assert Spider(cfg).pool_source is None  # off unless sites.pool.enabled


def test_psconfig_meta_site_keys_and_display_names() -> None:
    assert meta_site({"display-name": "UNL"}, "ps.unl.edu") == ("UNL", "display-name")
    assert meta_site({"display-name": "University of Nebraska", "site": "T2_US_Nebraska"}, "h") == (
        "T2_US_Nebraska", "site")
    # A display name that is only the host itself (or any host name or address) says nothing about a site.
    assert meta_site({"display-name": "ps.unl.edu"}, "ps.unl.edu") is None
    assert meta_site({"display-name": "perfsonar.other.org"}, "ps.unl.edu") is None
    assert meta_site({"display-name": "2001:db8::1"}, "ps.unl.edu") is None
    assert meta_site({"display-name": "  AGLT2   MSU "}, "h") == ("AGLT2 MSU", "display-name")


def test_same_host_in_two_meshes_under_two_display_names(server: FakePerfSONAR, tmp_path: Path) -> None:
    pub = StaticApp()
    server.mount("/pub", pub)
    hosts = ["ps.one.example", "2001:DB8:2::20"]  # an IPv6 address, spelled unlike its canonical form
    pub.put("/a", psconfig_mesh("A", "throughput", hosts, "PT6H", {},
                                display={"ps.one.example": "ONE", "2001:DB8:2::20": "TWO"}))
    pub.put("/b", psconfig_mesh("B", "latencybg", hosts, None, {},
                                display={"ps.one.example": "ONE-LATENCY", "2001:DB8:2::20": "TWO"}))
    cfg = parse_config({"discovery": {"meshes": [server.url("/pub/a"), server.url("/pub/b")]},
                        "sites": {"resolve_dns": False}}, str(tmp_path / "spider.yaml"))
    result = Spider(cfg).crawl(persist=False)
    assert result.site_map is not None
    assert result.site_map.site_of("ps.one.example", None) == "ONE"  # the first mesh's name is kept ...
    assert any("ps.one.example is ONE" in c and "ONE-LATENCY" in c for c in result.site_map.conflicts)  # ... logged
    assert result.site_map.site_of(None, "2001:db8:2:0:0:0:0:20") == "TWO"


@pytest.mark.parametrize(("shape", "where"), [("site", "organizations[0].sites[0].description"),
                                              ("pwa", "organizations[0].sites[0].hosts[0].description")])
def test_meshconfig_organisation_sites(shape: str, where: str) -> None:
    # "pwa": psconfig-web's output, one site entry per host and the site in hosts[].description;
    # "site": a description on the site entry. A description that is only the host's name says nothing.
    doc = meshconfig_mesh("legacy", {"UNL": ["ps.unl.edu"], "ps.fnal.gov": ["ps.fnal.gov"]}, "http://ma/",
                          [("bw", "perfsonarbuoy/bwctl", ["ps.unl.edu", "ps.fnal.gov"], 14400)], shape=shape)
    content = parse_meshconfig(doc, "m")
    assert [(c.site, c.host, c.kind) for c in content.sites] == [("UNL", "ps.unl.edu", "meshconfig")]
    assert content.sites[0].source == f"mesh m: {where}"


def test_meshconfig_site_description_wins_over_the_host_description() -> None:
    doc = {"organizations": [{"sites": [{"description": "UNL", "hosts": [
        {"addresses": ["ps.unl.edu"], "description": "UNL perfSONAR bandwidth node"}]}]}]}
    assert [(c.site, c.host) for c in parse_meshconfig(doc, "m").sites] == [("UNL", "ps.unl.edu")]


def test_psconfig_claims_from_addresses() -> None:
    doc = psconfig_mesh("M", "throughput", ["PS.UNL.EDU", "10.1.0.10"], "PT6H", {},
                        display={"PS.UNL.EDU": "UNL", "10.1.0.10": "FNAL"})
    content = parse_psconfig(doc, "m")
    assert sorted((c.site, c.host) for c in content.sites) == [("FNAL", "10.1.0.10"), ("UNL", "ps.unl.edu")]


def test_command_line_site_rules_come_first(tmp_path: Path) -> None:
    from perfsonar.main import site_rule

    assert site_rule("ps.unl.edu=UNL") == {"site": "UNL", "hosts": ["ps.unl.edu"]}
    assert site_rule("129.93.0.0/16=UNL") == {"site": "UNL", "cidrs": ["129.93.0.0/16"]}
    assert site_rule("[2001:db8::1]=X") == {"site": "X", "cidrs": ["2001:db8::1/128"]}
    rule = SiteRule("UNL", networks=(ipaddress.ip_network("129.93.0.0/16"),), source="sites.rules[0]")
    decision = SiteMap([rule], registry_claims([])).explain(None, "129.93.1.1")
    assert decision.source == "sites.rules[0] cidr 129.93.0.0/16"


@pytest.mark.parametrize("bad", [{"domains": {"edu": "X"}}, {"domains": {"unl.edu": ""}},
                                 {"registries": [{"type": "cric"}]},
                                 {"registries": [{"type": "cric", "url": "ftp://x", }]}])
def test_bad_site_source_config_is_refused(tmp_path: Path, bad: dict) -> None:
    from perfsonar.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_config({"discovery": {"meshes": ["http://x/"]}, "sites": bad}, str(tmp_path / "s.yaml"))
