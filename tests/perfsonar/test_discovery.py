"""Discovery from pSConfig/MeshConfig publishers and the Lookup Service over real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from perfsonar.discovery import (
    ArchiveRef,
    LookupSettings,
    MeshSource,
    discover,
    parse_config_list,
    parse_ls_archives,
    parse_meshconfig,
    parse_psconfig,
)
from perfsonar.http import HttpClient, HttpSettings
from perfsonar.meshindex import MeshIndex
from perfsonar.model import LATENCY, RTT, THROUGHPUT
from tests.perfsonar.fakeps import (
    FakePerfSONAR,
    Fault,
    LookupApp,
    StaticApp,
    activehosts,
    esmond_archiver,
    http_archive,
    ls_ma_record,
    meshconfig_mesh,
    psconfig_mesh,
    pub_config_list,
)

HOSTS = ["ps-bw.alpha.example", "ps-bw.beta.example", "ps-bw.gamma.example"]


def client() -> HttpClient:
    return HttpClient(HttpSettings(timeout=1.0, retries=0), sleep=lambda _s: None)


def test_psconfig_mesh_pairs_cadence_and_archives() -> None:
    doc = psconfig_mesh("WLCG BW", "throughput", HOSTS, "PT4H", {
        "central": http_archive("https://psarch.example.org/logstash",
                                "https://psarch.example.org/esmond/perfsonar/archive/"),
        "legacy": esmond_archiver("https://old.example.org/esmond/perfsonar/archive"),
    })
    content = parse_psconfig(doc, "https://pub.example/pub/config/bw", derive_opensearch=True)
    assert content.name == "WLCG BW"
    pairs = {(t.src, t.dst) for t in content.tests}
    assert len(pairs) == 6 and ("ps-bw.alpha.example", "ps-bw.beta.example") in pairs
    assert {t.test for t in content.tests} == {THROUGHPUT} and {t.interval for t in content.tests} == {14400.0}
    refs = {(r.api, r.url) for r in content.archives}
    assert refs == {("esmond", "https://psarch.example.org/esmond/perfsonar/archive/"),
                    ("opensearch", "https://psarch.example.org/opensearch"),
                    ("esmond", "https://old.example.org/esmond/perfsonar/archive/")}
    assert "https://psarch.example.org/esmond/perfsonar/archive/" in content.tests[0].archives
    no_derive = parse_psconfig(doc, "x", derive_opensearch=False)
    assert {r.api for r in no_derive.archives} == {"esmond"}


def test_psconfig_latencybg_defaults_to_one_minute_and_disjoint_groups() -> None:
    doc = psconfig_mesh("LAT", "latencybg", HOSTS[:1], None, {}, group_type="disjoint", b_hosts=HOSTS[1:])
    content = parse_psconfig(doc, "x")
    assert {(t.src, t.dst) for t in content.tests} == {
        (HOSTS[0], HOSTS[1]), (HOSTS[1], HOSTS[0]), (HOSTS[0], HOSTS[2]), (HOSTS[2], HOSTS[0])}
    assert {t.test for t in content.tests} == {LATENCY} and {t.interval for t in content.tests} == {60.0}


def test_psconfig_ignores_tests_without_link_figures() -> None:
    doc = psconfig_mesh("TRACE", "trace", HOSTS, "PT10M", {})
    assert parse_psconfig(doc, "x").tests == []


def test_meshconfig_document() -> None:
    doc = meshconfig_mesh("OSG mesh", {"ALPHA": [HOSTS[0]], "BETA": [HOSTS[1]]},
                          "http://ma.example/esmond/perfsonar/archive",
                          [("bw", "perfsonarbuoy/bwctl", HOSTS[:2], 21600), ("lat", "perfsonarbuoy/owamp", HOSTS[:2],
                                                                              None),
                           ("ping", "pinger", HOSTS[:2], 300), ("tr", "traceroute", HOSTS[:2], 600)])
    content = parse_meshconfig(doc, "x")
    kinds = {(t.test, t.src, t.interval) for t in content.tests}
    assert (THROUGHPUT, HOSTS[0], 21600.0) in kinds and (LATENCY, HOSTS[1], 60.0) in kinds
    assert (RTT, HOSTS[0], 300.0) in kinds and len(content.tests) == 6
    assert {r.url for r in content.archives} == {"http://ma.example/esmond/perfsonar/archive/"}


def test_config_list_shapes() -> None:
    base = "https://psconfig.example/pub/config"
    assert parse_config_list(pub_config_list(["https://psconfig.example/pub/config/a", "/pub/config/b"]), base) == [
        "https://psconfig.example/pub/config/a", "https://psconfig.example/pub/config/b"]
    assert parse_config_list({"include": ["https://x/y"]}, base) == ["https://x/y"]


def test_discover_publishers_meshes_includes_and_meshconfig(server: FakePerfSONAR, now: float) -> None:
    pub = StaticApp()
    server.mount("/pub", pub)
    esmond_url = server.url("/arch/esmond/perfsonar/archive/")
    pub.put("/config/bw", psconfig_mesh("BW", "throughput", HOSTS, "PT6H",
                                        {"a": http_archive(server.url("/logstash"), esmond_url)}))
    lat = psconfig_mesh("LAT", "latencybg", HOSTS[:2], None, {"a": esmond_archiver(esmond_url)})
    lat["includes"] = [server.url("/pub/config/extra")]
    pub.put("/config/lat", lat)
    pub.put("/config/extra", psconfig_mesh("EXTRA", "rtt", HOSTS[1:], "PT5M", {}))
    pub.put("/config/legacy", {"not": "used"}, meshconfig=meshconfig_mesh(
        "legacy", {"ALPHA": HOSTS[:1], "GAMMA": HOSTS[2:]}, server.url("/legacy/esmond/perfsonar/archive"),
        [("bw", "perfsonarbuoy/bwctl", [HOSTS[0], HOSTS[2]], 28800)]))
    pub.put("/config", pub_config_list([server.url("/pub/config/bw"), server.url("/pub/config/lat"),
                                        server.url("/pub/config/missing")]))
    with ThreadPoolExecutor(4) as ex:
        inv = discover(client(), [server.url("/pub/config")],
                       [MeshSource(server.url("/pub/config/legacy"), "meshconfig")],
                       [ArchiveRef("http://static.example/opensearch", "opensearch", "config")],
                       LookupSettings(), ex, now, derive_opensearch=True)
    kinds = {t.test for t in inv.tests}
    assert kinds == {THROUGHPUT, LATENCY, RTT}
    assert len([t for t in inv.tests if t.test == RTT]) == 2  # from the included mesh
    assert any(t.interval == 28800.0 for t in inv.tests)  # from the MeshConfig form
    assert set(inv.archives) == {esmond_url, server.url("/opensearch"), server.url("/legacy/esmond/perfsonar/archive/"),
                                 "http://static.example/opensearch"}
    assert len(inv.errors) == 1 and "missing" in inv.errors[0] and "404" in inv.errors[0]
    index = MeshIndex(inv.groups)
    assert index.interval(THROUGHPUT, HOSTS[0], None, HOSTS[1], None) == 21600.0
    assert index.interval(LATENCY, HOSTS[0].upper(), None, HOSTS[1], None) == 60.0


def test_failed_mesh_uses_the_last_good_copy(server: FakePerfSONAR, now: float) -> None:
    pub = StaticApp()
    server.mount("/pub", pub)
    pub.put("/config/bw", psconfig_mesh("BW", "throughput", HOSTS, "PT6H", {}))
    cache: dict = {}
    src = [MeshSource(server.url("/pub/config/bw"))]
    with ThreadPoolExecutor(2) as ex:
        first = discover(client(), [], src, [], LookupSettings(), ex, now, cache=cache)
        server.fault("/pub/config/bw", Fault("truncate"))
        second = discover(client(), [], src, [], LookupSettings(), ex, now, cache=cache)
    assert len(first.tests) == len(second.tests) == 6
    assert second.errors and "last good copy" in second.errors[0]


def test_lookup_service_per_locator(server: FakePerfSONAR, now: float) -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    past = datetime.now(UTC) - timedelta(hours=1)
    good = LookupApp([
        ls_ma_record("alpha", ["http://alpha.example/esmond/perfsonar/archive",
                               "https://alpha.example/esmond/perfsonar/archive",
                               "https://192.0.2.41/esmond/perfsonar/archive"], future),
        ls_ma_record("expired", ["https://old.example/esmond/perfsonar/archive"], past),
        ls_ma_record("private", ["https://10.0.0.5/esmond/perfsonar/archive"], future),
        ls_ma_record("cms", ["https://cms.example/esmond/perfsonar/archive"], future, ["CMS"]),
        {"type": ["service"], "service-type": ["pscheduler"], "service-locator": ["https://x/pscheduler"]},
    ])
    server.mount("/ls1", good)
    server.mount("/ls2", LookupApp([]))
    boot = StaticApp()
    boot.put("/activehosts.json", activehosts([(server.url("/ls1/lookup/records"), "alive"),
                                               (server.url("/ls2/lookup/records"), "alive"),
                                               ("http://127.0.0.1:9/lookup/records", "unreachable")]))
    server.mount("/boot", boot)
    server.fault("/ls2", Fault("status", status=405))  # a locator refusing GET, as reported in 2026
    settings = LookupSettings(enabled=True, bootstrap=server.url("/boot/activehosts.json"), timeout=1.0,
                              communities=("OSG",))
    with ThreadPoolExecutor(2) as ex:
        inv = discover(client(), [], [], [], settings, ex, now)
    assert set(inv.archives) == {"https://alpha.example/esmond/perfsonar/archive/"}
    assert any("405" in e for e in inv.errors)
    assert server.requests_to("/ls1/lookup/records") == 1  # one query per locator


def test_lookup_service_outage_is_not_fatal(server: FakePerfSONAR, now: float) -> None:
    settings = LookupSettings(enabled=True, bootstrap=server.url("/nothing/activehosts.json"), timeout=0.5)
    with ThreadPoolExecutor(2) as ex:
        inv = discover(client(), [], [], [ArchiveRef("http://a.example/opensearch", "opensearch", "config")],
                       settings, ex, now)
    assert list(inv.archives) == ["http://a.example/opensearch"] and "bootstrap" in inv.errors[0]


def test_ls_records_parser_prefers_https_names() -> None:
    far = (datetime.now(UTC) + timedelta(days=1))
    rec = ls_ma_record("x", ["https://[2001:db8::41]/esmond/perfsonar/archive",
                             "http://ps.example/esmond/perfsonar/archive",
                             "https://ps.example/esmond/perfsonar/archive"], far)
    [ref] = parse_ls_archives([rec], "ls", datetime.now(UTC).timestamp())
    assert ref.url == "https://ps.example/esmond/perfsonar/archive/"
    with pytest.raises(Exception, match="not a list"):
        parse_ls_archives({"x": 1}, "ls", 0)


def test_mesh_groups_stay_compact_but_answer_pair_questions() -> None:
    from perfsonar.discovery import Inventory, MeshGroup

    mesh = MeshGroup(THROUGHPUT, 21600.0, "mesh", ("a", "b", "c"))
    one_way = MeshGroup(LATENCY, 60.0, "disjoint", ("a",), ("x", "y"), unidirectional=True)
    both_ways = MeshGroup(RTT, 300.0, "disjoint", ("a",), ("x",))
    assert mesh.count() == 6 and len(list(mesh.pairs())) == 6
    assert one_way.count() == 2 and set(one_way.pairs()) == {("a", "x"), ("a", "y")}
    assert both_ways.count() == 2 and set(both_ways.pairs()) == {("a", "x"), ("x", "a")}
    inv = Inventory(groups=[mesh, one_way, both_ways])
    assert inv.test_count() == 10 and inv.hosts() == {"a", "b", "c", "x", "y"}
    index = MeshIndex(inv.groups)

    def lookup(test: str, src: str, dst: str) -> float | None:
        return index.interval(test, src, None, dst, None)

    def has(src: str, dst: str) -> bool:
        return index.has_pair(src, None, dst, None)

    assert lookup(THROUGHPUT, "A", "c") == 21600.0 and lookup(THROUGHPUT, "a", "x") is None
    assert lookup(LATENCY, "a", "y") == 60.0 and lookup(LATENCY, "y", "a") is None
    assert lookup(RTT, "x", "a") == 300.0
    assert has("b", "a") and has("x", "a") and not has("y", "a") and not has("a", "a")
