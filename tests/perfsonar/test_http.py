"""The JSON client against a real loopback server: retries, timeouts, size cap, content checks."""

from __future__ import annotations

import socket
import threading

import pytest

from perfsonar.errors import FetchError, ResponseError
from perfsonar.http import HttpClient, HttpSettings, same_origin
from tests.perfsonar.fakeps import FakePerfSONAR, Fault, StaticApp


def client(**kw: object) -> HttpClient:
    settings = HttpSettings(**({"timeout": 2.0, "retries": 2, "backoff": 0.0} | kw))  # type: ignore[arg-type]
    return HttpClient(settings, sleep=lambda _s: None)


@pytest.fixture
def docs(server: FakePerfSONAR) -> StaticApp:
    app = StaticApp()
    app.put("/doc", {"hello": "world", "n": [1, 2, 3]})
    server.mount("/s", app)
    return app


def test_get_json(server: FakePerfSONAR, docs: StaticApp) -> None:
    assert client().get_json(server.url("/s/doc")) == {"hello": "world", "n": [1, 2, 3]}


def test_transient_500s_are_retried_then_succeed(server: FakePerfSONAR, docs: StaticApp) -> None:
    server.fault("/s/doc", Fault("status", status=503, times=2))
    c = client()
    assert c.get_json(server.url("/s/doc"))["hello"] == "world"
    assert server.requests_to("/s/doc") == 3 and c.retried == 2


def test_persistent_500_fails_after_the_retries(server: FakePerfSONAR, docs: StaticApp) -> None:
    server.fault("/s/doc", Fault("status", status=500))
    with pytest.raises(FetchError) as info:
        client(retries=1).get_json(server.url("/s/doc"))
    assert info.value.status == 500 and "HTTP 500" in str(info.value)
    assert server.requests_to("/s/doc") == 2


def test_client_errors_are_not_retried(server: FakePerfSONAR, docs: StaticApp) -> None:
    with pytest.raises(FetchError) as info:
        client().get_json(server.url("/s/missing"))
    assert info.value.status == 404 and server.requests_to("/s/missing") == 1


def test_server_sleeping_past_the_timeout(server: FakePerfSONAR, docs: StaticApp) -> None:
    server.fault("/s/doc", Fault("sleep", seconds=1.5))
    with pytest.raises(FetchError, match="timed out") as info:
        client(timeout=0.3, retries=1).get_json(server.url("/s/doc"))
    assert info.value.transient
    assert server.requests_to("/s/doc") == 2  # a timeout is transient: retried once


def test_slow_drip_hits_the_total_budget(server: FakePerfSONAR, docs: StaticApp) -> None:
    # Each 16-byte piece arrives quickly enough for a per-read timeout, but the whole body does not.
    server.fault("/s/doc", Fault("drip", seconds=0.3))
    with pytest.raises(FetchError, match="timed out"):
        client(timeout=0.5, retries=0).get_json(server.url("/s/doc"))


def test_truncated_json(server: FakePerfSONAR, docs: StaticApp) -> None:
    server.fault("/s/doc", Fault("truncate"))
    with pytest.raises(ResponseError, match="invalid JSON"):
        client().get_json(server.url("/s/doc"))


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_bodies_are_refused(server: FakePerfSONAR, docs: StaticApp, chunked: bool) -> None:
    server.fault("/s/doc", Fault("oversize", size=3_000_000, chunked=chunked))
    with pytest.raises(FetchError, match="limit"):
        client(max_bytes=1_000_000).get_json(server.url("/s/doc"))


def test_html_browsable_api_is_not_data(server: FakePerfSONAR, docs: StaticApp) -> None:
    server.fault("/s/doc", Fault("html"))
    with pytest.raises(ResponseError, match="text/html"):
        client().get_json(server.url("/s/doc"))


def test_connection_refused_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match="connection failed"):
        client(retries=0).get_json("http://127.0.0.1:9/nothing")


def test_redirects_same_host_only(server: FakePerfSONAR, docs: StaticApp) -> None:
    """A raw socket server answers 302: to itself (followed), then to another host (refused)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def reply(raw: bytes) -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(raw)
        conn.close()

    def serve() -> None:
        reply(f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/moved\r\nContent-Length: 0\r\n"
              "Connection: close\r\n\r\n".encode())
        body = b'{"redirected": true}'
        reply(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        reply(b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.invalid/x\r\nContent-Length: 0\r\n"
              b"Connection: close\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = client(retries=0)
    assert c.get_json(f"http://127.0.0.1:{port}/start") == {"redirected": True}
    with pytest.raises(FetchError, match="another host"):
        c.get_json(f"http://127.0.0.1:{port}/start")
    t.join(timeout=5)
    listener.close()


def test_ipv6_loopback(server6: FakePerfSONAR) -> None:
    app = StaticApp()
    app.put("/doc", {"family": 6})
    server6.mount("/s", app)
    assert client().get_json(server6.url("/s/doc")) == {"family": 6}


def test_same_origin_never_leaves_the_archive_host() -> None:
    base = "http://127.0.0.1:8080/a1/esmond/perfsonar/archive/"
    assert same_origin(base, "/a1/esmond/perfsonar/archive/k/throughput/base") == \
        "http://127.0.0.1:8080/a1/esmond/perfsonar/archive/k/throughput/base"
    assert same_origin(base, "https://internal-name.example/esmond/perfsonar/archive/?offset=10") == \
        "http://127.0.0.1:8080/esmond/perfsonar/archive/?offset=10"


def test_error_messages_elide_long_query_strings() -> None:
    from perfsonar.errors import FetchError as FE

    long = "http://a.example/opensearch/x/_search?filter_path=" + "aggregations.pairs," * 20
    err = FE(long, "HTTP 500")
    assert str(err) == "http://a.example/opensearch/x/_search?…: HTTP 500" and err.url == long
    assert str(FE("http://a.example/x?limit=10", "HTTP 404")) == "http://a.example/x?limit=10: HTTP 404"
