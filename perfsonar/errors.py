"""The spider's exceptions, all :class:`lark.errors.LarkError` subclasses.

Only configuration errors stop the spider. Every other error here is caught at the edge that raised
it (one archive, one mesh, one registry file), logged with the URL or file that caused it, and the
crawl goes on without that source.
"""

from __future__ import annotations

from lark.errors import ConfigError, LarkError

__all__ = ["ConfigError", "SpiderError", "FetchError", "ResponseError", "PublishError", "RegistryError"]


class SpiderError(LarkError):
    """Base class of the spider's own errors."""


def display_url(url: str, limit: int = 60) -> str:
    """The URL for log lines: a long query string (OpenSearch filter_path, esmond filters) is elided."""
    base, sep, query = url.partition("?")
    return f"{base}?…" if sep and len(query) > limit else url


class FetchError(SpiderError):
    """An HTTP request failed: connection refused, timeout, HTTP status, oversized body.

    ``transient`` tells the retry loop whether another attempt may succeed (timeouts, 5xx, 429).
    """

    def __init__(self, url: str, reason: str, status: int | None = None, transient: bool = False) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        self.transient = transient
        super().__init__(f"{display_url(url)}: {reason}")


class ResponseError(SpiderError):
    """A response arrived but is unusable: not JSON, truncated JSON, HTML, an unexpected shape."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{display_url(url)}: {reason}")


class RegistryError(SpiderError):
    """A site registry file cannot be read or parsed."""


class PublishError(SpiderError):
    """The collector refused the ads or could not be reached."""
