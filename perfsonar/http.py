"""A small JSON-over-HTTP client with the spider's safety rails.

Every request has a total time budget (a server that drips bytes cannot hold a worker forever), a
response size cap (checked against Content-Length and while streaming), a content-type check (an
esmond that answers with its HTML "browsable API" page, which it serves to clients that do not ask
for JSON, is an error, not data), and retries with exponential backoff and jitter for transient
failures only (connection errors, timeouts, 5xx, 429). Redirects are followed only within the same host.

It is built on urllib3 (which ``requests`` itself uses) rather than ``requests``: at OSG scale the
spider makes ~10^5 small requests per crawl and urllib3 costs about half as much CPU per request.
The connection pool per host is bounded and blocking, which is also what bounds the per-archive
concurrency.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import urllib3

from perfsonar.errors import FetchError, ResponseError

USER_AGENT = "lark-spider/0.1 (+HTCondor Lark)"
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 65536


@dataclass(frozen=True)
class HttpSettings:
    """Transport knobs (config ``http:``)."""

    timeout: float = 10.0
    connect_timeout: float = 5.0
    retries: int = 2
    backoff: float = 0.5
    backoff_max: float = 30.0
    max_bytes: int = 64 * 1024 * 1024
    per_host_connections: int = 4
    verify_tls: bool = True
    ca_bundle: str | None = None


class HttpClient:
    """Thread-safe JSON client. One instance per crawl loop; share it between worker threads."""

    def __init__(self, settings: HttpSettings | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings or HttpSettings()
        self._sleep = sleep
        self._pools: dict[tuple[bool, str | None], urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self.retried = 0

    def _pool(self, verify: bool, ca_bundle: str | None) -> urllib3.PoolManager:
        key = (verify, ca_bundle)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                kw: dict[str, Any] = {
                    "num_pools": 4096,
                    "maxsize": self.settings.per_host_connections,
                    "block": True,  # the per-host bound: extra workers wait for a free connection
                    "retries": False,
                    "headers": {"User-Agent": USER_AGENT, "Accept": "application/json"},
                }
                if verify:
                    kw["cert_reqs"] = "CERT_REQUIRED"
                    if ca_bundle:
                        kw["ca_certs"] = ca_bundle
                else:
                    kw["cert_reqs"] = "CERT_NONE"
                    kw["assert_hostname"] = False
                pool = urllib3.PoolManager(**kw)
                self._pools[key] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.clear()
            self._pools.clear()

    # ----------------------------------------------------------------------------------------

    def get_json(self, url: str, params: Mapping[str, object] | None = None, *, verify: bool | None = None,
                 ca_bundle: str | None = None, timeout: float | None = None, retries: int | None = None) -> Any:
        """GET ``url`` (+ ``params``) and return the decoded JSON body."""
        return self._request("GET", with_params(url, params), None, verify, ca_bundle, timeout, retries)

    def get_text(self, url: str, *, timeout: float | None = None) -> str:
        """GET ``url`` and return the body as text (site registry exports: XML or JSON)."""
        return self._request("GET", url, None, None, None, timeout, None,
                             lambda _url, raw: raw.decode("utf-8", errors="replace"))

    def post_json(self, url: str, body: object, params: Mapping[str, object] | None = None, *,
                  verify: bool | None = None, ca_bundle: str | None = None, timeout: float | None = None,
                  retries: int | None = None) -> Any:
        """POST a JSON body (OpenSearch ``_search``) and return the decoded JSON answer."""
        data = json.dumps(body, separators=(",", ":")).encode()
        return self._request("POST", with_params(url, params), data, verify, ca_bundle, timeout, retries)

    def _request(self, method: str, url: str, body: bytes | None, verify: bool | None, ca_bundle: str | None,
                 timeout: float | None, retries: int | None,
                 decode: Callable[[str, bytes], Any] | None = None) -> Any:
        s = self.settings
        attempts = 1 + (s.retries if retries is None else retries)
        last: FetchError | None = None
        for attempt in range(attempts):
            if attempt:
                with self._lock:
                    self.retried += 1
                delay = min(s.backoff_max, s.backoff * (2 ** (attempt - 1)))
                self._sleep(delay * (0.5 + random.random() / 2))  # jitter spreads retries of many workers
            try:
                raw = self._once(method, url, body, s.verify_tls if verify is None else verify,
                                 ca_bundle or s.ca_bundle, s.timeout if timeout is None else timeout)
            except FetchError as err:
                last = err
                if err.transient:
                    continue
                raise
            return (decode or decode_json)(url, raw)
        assert last is not None
        raise last

    def _once(self, method: str, url: str, body: bytes | None, verify: bool, ca_bundle: str | None,
              budget: float) -> bytes:
        with self._lock:
            self.requests += 1
        pool = self._pool(verify, ca_bundle)
        deadline = time.monotonic() + budget
        headers = {"Content-Type": "application/json"} if body is not None else None
        for _hop in range(4):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(url, f"timed out after {budget:g} s", transient=True)
            tmo = urllib3.Timeout(connect=min(self.settings.connect_timeout, remaining), read=remaining)
            try:
                resp = pool.request(method, url, body=body, headers=headers, timeout=tmo, redirect=False,
                                    preload_content=False)
            except urllib3.exceptions.NewConnectionError as err:
                # (checked first: urllib3 derives it from ConnectTimeoutError for historical reasons)
                raise FetchError(url, f"connection failed: {_short(err)}", transient=True) from None
            except urllib3.exceptions.TimeoutError:
                raise FetchError(url, f"timed out after {budget:g} s", transient=True) from None
            except (urllib3.exceptions.HTTPError, OSError) as err:
                raise FetchError(url, f"connection failed: {_short(err)}", transient=True) from None
            consumed = False
            try:
                if resp.status in (301, 302, 303, 307, 308):
                    target = urljoin(url, resp.headers.get("Location", ""))
                    if urlsplit(target).hostname != urlsplit(url).hostname:
                        raise FetchError(url, f"refusing redirect to another host: {target}")
                    url = target
                    if resp.status == 303:
                        method, body, headers = "GET", None, None
                    continue
                if resp.status >= 400:
                    raise FetchError(url, f"HTTP {resp.status} {resp.reason or ''}".strip(), status=resp.status,
                                     transient=resp.status in _TRANSIENT_STATUS)
                ctype = resp.headers.get("Content-Type", "")
                if "html" in ctype.lower():
                    raise ResponseError(url, f"got {ctype.split(';')[0]} instead of JSON (send Accept: "
                                             "application/json; is this the browsable API page?)")
                data = self._read_capped(resp, url, deadline, budget)
                consumed = True
                return data
            finally:
                if not consumed:
                    _discard(resp)
                resp.release_conn()
        raise FetchError(url, "too many redirects")

    def _read_capped(self, resp: urllib3.BaseHTTPResponse, url: str, deadline: float, budget: float) -> bytes:
        cap = self.settings.max_bytes
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > cap:
            resp.close()  # never read a body we already know is too big
            raise FetchError(url, f"response of {int(length)} bytes exceeds the {cap}-byte limit")
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                if time.monotonic() > deadline:
                    resp.close()
                    raise FetchError(url, f"timed out after {budget:g} s while reading", transient=True)
                chunk = resp.read1(_CHUNK)  # returns what has arrived, so the deadline is checked often
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    resp.close()  # do not read the rest of a runaway body
                    raise FetchError(url, f"response exceeds the {cap}-byte limit")
                chunks.append(chunk)
        except urllib3.exceptions.TimeoutError:
            raise FetchError(url, f"timed out after {budget:g} s while reading", transient=True) from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise FetchError(url, f"connection broke while reading: {_short(err)}", transient=True) from None
        return b"".join(chunks)


def _discard(resp: urllib3.BaseHTTPResponse) -> None:
    """Make a connection reusable after a response whose body we do not want (errors, redirects).

    A small body is read and dropped so the keep-alive connection stays in sync; anything bigger,
    or a connection already broken, is closed instead.
    """
    length = resp.headers.get("Content-Length")
    try:
        if length is not None and length.isdigit() and int(length) <= 4 * _CHUNK:
            resp.drain_conn()
        else:
            resp.close()
    except (urllib3.exceptions.HTTPError, OSError):
        resp.close()


def decode_json(url: str, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        hint = " (truncated?)" if "Expecting" in str(err) or "Unterminated" in str(err) else ""
        raise ResponseError(url, f"invalid JSON{hint}: {err}") from None


def with_params(url: str, params: Mapping[str, object] | None) -> str:
    if not params:
        return url
    query = urlencode([(k, v) for k, v in params.items() if v is not None], doseq=True)
    return f"{url}{'&' if '?' in url else '?'}{query}"


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def same_origin(base: str, link: str) -> str:
    """Resolve ``link`` against ``base`` and force it onto ``base``'s scheme and host.

    esmond and elmond answer with absolute URLs built from their own idea of their name (often an
    internal host name behind a proxy); only the path is trustworthy, and the spider must never
    wander to a host it was not configured to read.
    """
    target = urlsplit(urljoin(base, link))
    path = target.path + (f"?{target.query}" if target.query else "")
    return origin(base) + path


def _short(err: BaseException) -> str:
    text = str(getattr(err, "reason", None) or err)
    return text if len(text) < 200 else text[:197] + "..."
