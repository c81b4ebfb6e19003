"""esmond (perfSONAR 4) and elmond (perfSONAR 5) archives read over real HTTP."""

from __future__ import annotations

import pytest

from perfsonar.discovery import ArchiveRef
from perfsonar.errors import SpiderError
from perfsonar.esmond import EsmondReader, ReadSettings, read_all
from perfsonar.http import HttpClient, HttpSettings
from perfsonar.model import LATENCY, M_LOSS, M_OWDELAY, M_RTT, M_RTT_LOSS, M_THROUGHPUT, RTT, THROUGHPUT
from tests.perfsonar.fakeps import EsmondApp, EsmondTest, FakePerfSONAR, Fault, owd_histogram

WINDOWS = {THROUGHPUT: 86400.0, LATENCY: 1800.0, RTT: 3600.0}


def reader(server: FakePerfSONAR, prefix: str, now: float, **kw: object) -> EsmondReader:
    client = HttpClient(HttpSettings(timeout=2.0, retries=1, backoff=0.0), sleep=lambda _s: None)
    ref = ArchiveRef(server.url(prefix + "/esmond/perfsonar/archive/"), "esmond", "test")
    return EsmondReader(client, ref, ReadSettings(windows=WINDOWS, **kw), now)  # type: ignore[arg-type]


def throughput_test(now: float, src: str = "10.1.0.10", dst: str = "10.2.0.20") -> EsmondTest:
    return EsmondTest("throughput", src, dst, "ps-bw.alpha.example", "ps-bw.beta.example", points={
        "throughput": [(int(now) - 3600 * k, v) for k, v in ((1, 9.41e9), (7, 8.8e9), (13, 9.0e9))],
        "failures": [(int(now) - 3600 * 19, {"error": "iperf3 returned an error: unable to connect to server"})],
    })


@pytest.mark.parametrize("dialect", ["esmond", "elmond"])
def test_throughput_and_failures(server: FakePerfSONAR, now: float, dialect: str) -> None:
    app = EsmondApp(dialect, mount="/a")
    server.mount("/a", app)
    app.add(throughput_test(now))
    r = reader(server, "/a", now, tests=(THROUGHPUT,))
    specs = r.list_series()
    assert len(specs) == 1
    spec = specs[0]
    assert (spec.src_ip, spec.dst_ip, spec.family) == ("10.1.0.10", "10.2.0.20", 4)
    assert (spec.src_name, spec.dst_name) == ("ps-bw.alpha.example", "ps-bw.beta.example")
    assert len(spec.key) == (64 if dialect == "elmond" else 32)
    base = next(ref for ref in spec.refs if ref.metric == M_THROUGHPUT).uri
    assert base.endswith("/throughput/base/0" if dialect == "elmond" else "/throughput/base")
    s = r.read(spec)
    assert sorted(v for _, v in s.samples[M_THROUGHPUT]) == [8.8e9, 9.0e9, 9.41e9]  # bits per second
    assert s.successes == 3
    assert s.failures == [(now - 3600 * 19, "iperf3 returned an error: unable to connect to server")]


@pytest.mark.parametrize(("dialect", "tool", "width", "expected_ms"), [
    ("elmond", None, 0.001, 34.42),                       # pScheduler data, default bucket width: ms
    ("elmond", "pscheduler/powstream", 0.0001, 34.42),    # keys in 0.1 ms units: rescaled
    ("esmond", "powstream", 0.0001, 34.42 * 10),          # pre-pScheduler: keys already ms, not rescaled
])
def test_owdelay_rescaled_by_bucket_width(server: FakePerfSONAR, now: float, dialect: str, tool: str | None,
                                          width: float, expected_ms: float) -> None:
    app = EsmondApp(dialect, mount="/a")
    server.mount("/a", app)
    hist = owd_histogram(34.42, width)
    app.add(EsmondTest("latency", "10.1.0.11", "10.2.0.21", "ps-lat.alpha.example", "ps-lat.beta.example",
                       tool=tool, bucket_width=width, points={
                           "histogram-owdelay": [(int(now) - 60, hist), (int(now) - 120, hist)],
                           "packet-loss-rate": [(int(now) - 60, 0.0016666666666666668), (int(now) - 120, 0.0)],
                       }))
    r = reader(server, "/a", now, tests=(LATENCY,))
    [s] = read_all(r, r.list_series())
    assert [round(v, 4) for _, v in s.samples[M_OWDELAY]] == [round(expected_ms, 4)] * 2
    assert sorted(v for _, v in s.samples[M_LOSS]) == [0.0, 0.0016666666666666668]


def test_statistics_summary_is_preferred_to_the_histogram(server: FakePerfSONAR, now: float) -> None:
    app = EsmondApp("esmond", mount="/a")
    server.mount("/a", app)
    app.add(EsmondTest("latency", "10.1.0.11", "10.2.0.21", None, None, stats_summary=True, points={
        "histogram-owdelay": [(int(now) - 60, {"20.0": 10, "20.5": 300, "40.0": 5})]}))
    r = reader(server, "/a", now, tests=(LATENCY,))
    [spec] = r.list_series()
    assert any(ref.kind == "statistics" and ref.uri.endswith("/statistics/0") for ref in spec.refs)
    assert r.read(spec).samples[M_OWDELAY] == [(now - 60, 20.5)]


def test_rtt_histogram_in_ms_and_bidirectional_loss(server: FakePerfSONAR, now: float) -> None:
    app = EsmondApp("elmond", mount="/a")
    server.mount("/a", app)
    app.add(EsmondTest("rtt", "10.1.0.12", "10.2.0.22", "ps.alpha.example", "ps.beta.example", points={
        "histogram-rtt": [(int(now) - 600, {"34.20": 4, "34.30": 5, "35.00": 1})],
        "packet-loss-rate-bidir": [(int(now) - 600, 0.1)],
    }))
    r = reader(server, "/a", now, tests=(RTT,))
    [s] = read_all(r, r.list_series())
    assert s.samples[M_RTT] == [(now - 600, pytest.approx(34.30))]
    assert s.samples[M_RTT_LOSS] == [(now - 600, 0.1)]
    assert M_LOSS not in s.samples  # round-trip loss never lands in the one-way metric


def test_ipv6_only_results(server: FakePerfSONAR, now: float) -> None:
    app = EsmondApp("elmond", mount="/a")
    server.mount("/a", app)
    app.add(EsmondTest("throughput", "2001:0db8:0001:0000:0000:0000:0000:0010", "2001:db8:2::20",
                       "ps-bw.alpha.example", "ps-bw.beta.example",
                       points={"throughput": [(int(now) - 60, 4.2e9)]}))
    r = reader(server, "/a", now, tests=(THROUGHPUT,))
    [s] = read_all(r, r.list_series())
    assert (s.family, s.src_ip, s.dst_ip) == (6, "2001:db8:1::10", "2001:db8:2::20")


def test_wrong_units_and_garbage_points_are_rejected(server: FakePerfSONAR, now: float) -> None:
    app = EsmondApp("esmond", mount="/a")
    server.mount("/a", app)
    app.add(EsmondTest("throughput", "10.1.0.10", "10.2.0.20", None, None, points={"throughput": [
        (int(now) - 60, 9.4e9), (int(now) - 120, -5), (int(now) - 180, 9.4e18), (int(now) - 240, "fast")]}))
    app.add(EsmondTest("latency", "10.1.0.11", "10.2.0.21", None, None, points={
        "histogram-owdelay": [(int(now) - 60, {"-3.5": 600})],                 # clock error
        "packet-loss-rate": [(int(now) - 60, 2.5), (int(now) - 120, 0.01)]}))  # a percentage, not a fraction
    r = reader(server, "/a", now, tests=(THROUGHPUT, LATENCY))
    thr, lat = read_all(r, r.list_series())
    assert thr.samples[M_THROUGHPUT] == [(now - 60, 9.4e9)] and thr.rejected == 3
    assert M_OWDELAY not in lat.samples
    assert lat.samples[M_LOSS] == [(now - 120, 0.01)] and lat.rejected == 2


def test_metadata_paging_follows_next_page_on_the_archive_host(server: FakePerfSONAR, now: float) -> None:
    # The server builds next-page URLs with an internal host name, as behind a proxy.
    app = EsmondApp("esmond", mount="/a", public_host="internal-archive.example")
    server.mount("/a", app)
    for i in range(25):
        app.add(throughput_test(now, src=f"10.1.0.{i + 1}"))
    r = reader(server, "/a", now, tests=(THROUGHPUT,), page_size=10)
    specs = r.list_series()
    assert len({s.src_ip for s in specs}) == 25
    assert server.requests_to("/a/esmond/perfsonar/archive/") >= 3


def test_metadata_paging_without_hints_uses_offset(server: FakePerfSONAR, now: float) -> None:
    app = EsmondApp("elmond", mount="/a", paging=False)
    server.mount("/a", app)
    for i in range(23):
        app.add(throughput_test(now, src=f"10.1.0.{i + 1}"))
    assert len(reader(server, "/a", now, tests=(THROUGHPUT,), page_size=10).list_series()) == 23


def test_data_paging_by_time_start(server: FakePerfSONAR, now: float) -> None:
    app = EsmondApp("elmond", mount="/a")
    server.mount("/a", app)
    app.add(EsmondTest("latency", "10.1.0.11", "10.2.0.21", None, None, points={
        "packet-loss-rate": [(int(now) - 10 * k, 0.0) for k in range(1, 150)],
        "histogram-owdelay": [(int(now) - 10, owd_histogram(20.0))]}))
    r = reader(server, "/a", now, tests=(LATENCY,), page_size=50)
    [s] = read_all(r, r.list_series())
    assert len(s.samples[M_LOSS]) == 149


def test_old_esmond_series_outside_the_window_are_not_fetched(server: FakePerfSONAR, now: float) -> None:
    app = EsmondApp("esmond", mount="/a")
    server.mount("/a", app)
    old = EsmondTest("throughput", "10.1.0.10", "10.2.0.20", None, None,
                     points={"throughput": [(int(now) - 10 * 86400, 9e9)]})
    app.add(old)
    assert reader(server, "/a", now, tests=(THROUGHPUT,)).list_series() == []


@pytest.mark.parametrize("fault", [Fault("status", status=500), Fault("truncate"), Fault("html")])
def test_broken_metadata_listing_raises_a_spider_error(server: FakePerfSONAR, now: float, fault: Fault) -> None:
    app = EsmondApp("esmond", mount="/a")
    server.mount("/a", app)
    app.add(throughput_test(now))
    server.fault("/a/esmond/perfsonar/archive/", fault)
    with pytest.raises(SpiderError):
        reader(server, "/a", now, tests=(THROUGHPUT,)).list_series()


def test_archive_reached_over_ipv6_loopback(server6: FakePerfSONAR, now: float) -> None:
    app = EsmondApp("elmond", mount="/a")
    server6.mount("/a", app)
    app.add(throughput_test(now, src="2001:db8:1::10", dst="2001:db8:2::20"))
    r = reader(server6, "/a", now, tests=(THROUGHPUT,))
    assert r.archive.url.startswith("http://[::1]:")
    [s] = read_all(r, r.list_series())
    assert s.family == 6 and len(s.samples[M_THROUGHPUT]) == 3
