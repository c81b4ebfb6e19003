"""perfSONAR 5 OpenSearch archives read over real HTTP (composite aggregation + top_hits)."""

from __future__ import annotations

import pytest

from perfsonar.discovery import ArchiveRef
from perfsonar.errors import SpiderError
from perfsonar.esmond import ReadSettings
from perfsonar.http import HttpClient, HttpSettings
from perfsonar.model import LATENCY, M_LOSS, M_OWDELAY, M_RTT, M_RTT_LOSS, M_THROUGHPUT, RTT, THROUGHPUT
from perfsonar.opensearch import OpenSearchReader, build_query
from tests.perfsonar.fakeps import FakePerfSONAR, Fault, OpenSearchApp, os_doc

WINDOWS = {THROUGHPUT: 86400.0, LATENCY: 1800.0, RTT: 3600.0}
A = ("ps-bw.alpha.example", "10.1.0.10")
B = ("ps-bw.beta.example", "10.2.0.20")
A6 = ("ps-bw.alpha.example", "2001:db8:1::10")
B6 = ("ps-bw.beta.example", "2001:db8:2::20")


def reader(server: FakePerfSONAR, now: float, **kw: object) -> OpenSearchReader:
    client = HttpClient(HttpSettings(timeout=2.0, retries=0), sleep=lambda _s: None)
    ref = ArchiveRef(server.url("/opensearch"), "opensearch", "test")
    return OpenSearchReader(client, ref, ReadSettings(windows=WINDOWS, **kw), now)  # type: ignore[arg-type]


@pytest.fixture
def app(server: FakePerfSONAR) -> OpenSearchApp:
    a = OpenSearchApp()
    server.mount("/opensearch", a)
    return a


def test_throughput_with_failures_and_schedule(server: FakePerfSONAR, app: OpenSearchApp, now: float) -> None:
    for hours, bps in ((1, 9.412e9), (5, 8.9e9), (9, 9.1e9)):
        app.add(os_doc("throughput", A, B, 4, now - 3600 * hours, throughput=bps, repeat=14400.0, tz_hours=-5))
    app.add(os_doc("throughput", A, B, 4, now - 3600 * 13, succeeded=False, error="iperf3: connection refused",
                   repeat=14400.0))
    app.add(os_doc("throughput", A, B, 4, now - 3 * 86400, throughput=1e6, repeat=14400.0))  # outside window
    [s] = reader(server, now, tests=(THROUGHPUT,)).read()
    assert (s.src_name, s.src_ip, s.dst_name, s.dst_ip, s.family) == (*A, *B, 4)
    assert sorted(s.samples[M_THROUGHPUT]) == [(now - 3600 * 9, 9.1e9), (now - 3600 * 5, 8.9e9),
                                               (now - 3600, 9.412e9)]  # UTC epoch despite the -05:00 offset
    assert s.failures == [(now - 3600 * 13, "iperf3: connection refused")]
    assert (s.successes, s.unlisted_failures) == (3, 0)
    assert s.interval == 14400.0


def test_latency_bucket_width_rescaled_to_ms(server: FakePerfSONAR, app: OpenSearchApp, now: float) -> None:
    app.add(os_doc("latencybg", A, B, 4, now - 60, latency_median=34.42, loss=0.0016666666666666668))
    # Same delay measured with a 0.0001 s bucket width: stored as 344.2 buckets.
    app.add(os_doc("latencybg", B, A, 4, now - 60, latency_median=344.2, loss=0.0, bucket_width=0.0001))
    series = {(s.src_ip, s.dst_ip): s for s in reader(server, now, tests=(LATENCY,)).read()}
    ab, ba = series[(A[1], B[1])], series[(B[1], A[1])]
    assert ab.samples[M_OWDELAY] == [(now - 60, pytest.approx(34.42))]
    assert ba.samples[M_OWDELAY] == [(now - 60, pytest.approx(34.42))]
    assert ab.samples[M_LOSS] == [(now - 60, 0.0016666666666666668)]
    assert ab.interval is None  # latencybg has no repeat: the default cadence applies later


@pytest.mark.parametrize("as_iso", [False, True])
def test_rtt_seconds_become_milliseconds(server: FakePerfSONAR, app: OpenSearchApp, now: float, as_iso: bool) -> None:
    app.add(os_doc("rtt", A, B, 4, now - 300, rtt_mean_s=0.0343, loss=0.1, rtt_as_iso=as_iso))
    [s] = reader(server, now, tests=(RTT,)).read()
    assert s.samples[M_RTT] == [(now - 300, pytest.approx(34.3))]
    assert s.samples[M_RTT_LOSS] == [(now - 300, 0.1)]


def test_ipv4_and_ipv6_stay_apart(server: FakePerfSONAR, app: OpenSearchApp, now: float) -> None:
    app.add(os_doc("throughput", A, B, 4, now - 60, throughput=9e9))
    app.add(os_doc("throughput", A6, B6, 6, now - 60, throughput=3e9))
    got = {s.family: s.samples[M_THROUGHPUT][0][1] for s in reader(server, now, tests=(THROUGHPUT,)).read()}
    assert got == {4: 9e9, 6: 3e9}


def test_composite_paging_and_top_hits_limit(server: FakePerfSONAR, app: OpenSearchApp, now: float) -> None:
    for i in range(30):
        src = (f"ps{i}.alpha.example", f"10.1.1.{i + 1}")
        for k in range(5):
            app.add(os_doc("throughput", src, B, 4, now - 3600 * (k + 1), throughput=1e9 * (k + 1)))
        app.add(os_doc("throughput", src, B, 4, now - 3600 * 7, succeeded=False, error="x"))
    app.add(os_doc("throughput", A, B, 4, now - 3600 * 8, succeeded=False, error="old failure"))
    r = reader(server, now, tests=(THROUGHPUT,), max_docs_per_pair=1000)
    r_small = reader(server, now, tests=(THROUGHPUT,), max_docs_per_pair=2)
    full = {s.src_ip: s for s in r.read()}
    assert len(full) == 31
    small = {s.src_ip: s for s in r_small.read()}
    s = small["10.1.1.1"]
    # Only the 2 newest documents came back, but the counts cover the whole window.
    assert len(s.samples[M_THROUGHPUT]) == 2 and s.successes == 5 and s.unlisted_failures == 1
    assert small[A[1]].successes == 0 and small[A[1]].failures[0][1] == "old failure"
    # Paging happened: the 31 pairs in pages of 20 (1000 documents per pair), 20 then 11; the short
    # page is the last one, so no empty page is asked for. With 2 documents per pair, one page of 1000.
    assert [b["aggs"]["pairs"]["composite"]["size"] for b in app.bodies] == [20, 20, 1000]
    assert "after" in app.bodies[1]["aggs"]["pairs"]["composite"]
    assert "after" not in app.bodies[2]["aggs"]["pairs"]["composite"]


def test_query_uses_measurement_time_not_ingest_time(now: float) -> None:
    body = build_query(THROUGHPUT, now, 3600, 10)
    rng = body["query"]["bool"]["filter"][0]["range"]
    assert list(rng) == ["pscheduler.start_time"]
    assert "@timestamp" not in str(body)


@pytest.mark.parametrize("fault", [Fault("status", status=503), Fault("truncate"), Fault("sleep", seconds=1.0)])
def test_failing_archive_raises(server: FakePerfSONAR, app: OpenSearchApp, now: float, fault: Fault) -> None:
    app.add(os_doc("throughput", A, B, 4, now - 60, throughput=9e9))
    server.fault("/opensearch", fault)
    r = reader(server, now, tests=(THROUGHPUT,))
    r.client.settings = HttpSettings(timeout=0.3, retries=0)
    with pytest.raises(SpiderError):
        r.read()


def test_missing_indices_are_ignored(server: FakePerfSONAR, app: OpenSearchApp, now: float) -> None:
    assert reader(server, now).read() == []


def test_partial_results_are_refused(server: FakePerfSONAR, now: float) -> None:
    class TimedOut:
        def handle(self, method: str, path: str, query: dict, body: bytes, base: str) -> tuple[int, object, str]:
            return 200, {"took": 30000, "timed_out": True, "aggregations": {"pairs": {"buckets": []}}}, \
                "application/json"

    server.mount("/opensearch", TimedOut())
    with pytest.raises(SpiderError, match="timed out on the server"):
        reader(server, now, tests=(THROUGHPUT,)).read()
