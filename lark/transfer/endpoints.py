"""Storage endpoints: the admin's YAML file of named places transfers read from and write to. Pure.

An endpoint is a data server of one protocol with a base URL, at one site, whose movers run with one
network profile, usable by listed users and groups::

    endpoints:
      fnal-gridftp:
        description: FNAL DTN, GridFTP
        protocol: gridftp                # gridftp | https | xrootd
        url: ftp://dtn.fnal.example:2811/data/
        site: FNAL                       # the job's LarkSourceSite for a get
        profile: nat-callback            # LarkNetworkProfile of the movers
        groups: [cms]                    # users/groups: who may use it (both empty: everyone)
        container_image: /cvmfs/images/xfer.sif   # optional: movers run in the container universe

The file is read by the same bounded reader as profiles (:mod:`lark.yamlfile`) and checked as
strictly: an unknown key is an error that names the file, line, endpoint and key and suggests the
closest accepted key; every error of the file is reported in one pass; an endpoint with an error is
not offered.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from lark.errors import ConfigError
from lark.profiles.values import ACCOUNT_RE, NAME_RE
from lark.yamlfile import YamlFileError, YamlLimits, line_of, load, read_text

Protocol = Literal["gridftp", "https", "xrootd"]
# The URL schemes each protocol's mover accepts (globus-url-copy, curl, xrdcp)
SCHEMES: dict[str, tuple[str, ...]] = {
    "gridftp": ("gsiftp", "ftp"),
    "https": ("https", "http", "davs", "dav"),
    "xrootd": ("root", "xroot", "roots"),
}
KEYS: dict[str, str] = {
    "description": "one line shown by GET /v1/endpoints",
    "protocol": "gridftp, https or xrootd (required)",
    "url": "base URL; a transfer's path is appended to it (required)",
    "site": "the site the endpoint is at: LarkSourceSite of the jobs that read from it (required)",
    "profile": "network profile the movers run with (LarkNetworkProfile)",
    "container_image": "image of the container universe the movers run in (leave out: vanilla universe)",
    "users": "users who may use the endpoint (with groups: empty or left out = everyone)",
    "groups": "Unix groups whose members may use the endpoint",
}
ACCEPTED = ", ".join(KEYS)
REQUIRED = ("protocol", "url", "site")
SITE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LIMITS = YamlLimits(what="an endpoints file", max_bytes=1 << 20, max_nesting=8, max_values=50_000,
                    usual_nesting=4, usual_values="a few hundred")


@dataclass(frozen=True)
class Endpoint:
    """One checked endpoint; ``url`` always ends with ``/``."""

    name: str
    protocol: Protocol
    url: str
    site: str
    profile: str | None = None
    description: str = ""
    container_image: str | None = None
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    source: str = ""
    line: int = 0

    def may_use(self, user: str, groups: Iterable[str]) -> bool:
        if not self.users and not self.groups:
            return True
        return user in self.users or not set(groups).isdisjoint(self.groups)

    def who(self) -> str:
        parts = [f"users {', '.join(self.users)}" if self.users else "",
                 f"members of {', '.join(self.groups)}" if self.groups else ""]
        return "; ".join(p for p in parts if p) or "everyone"

    def url_for(self, path: str) -> str:
        """The URL of ``path`` (already checked by :func:`check_path`) on this endpoint."""
        return self.url + path.lstrip("/")

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "protocol": self.protocol, "url": self.url, "site": self.site,
                "profile": self.profile, "description": self.description,
                "universe": "container" if self.container_image else "vanilla", "who": self.who()}


class EndpointError(YamlFileError):
    """One problem in an endpoints file: ``FILE:LINE: endpoint 'NAME': key 'KEY' <message>``."""

    def __init__(self, source: str, line: int | None, message: str, endpoint: str | None = None,
                 key: str | None = None) -> None:
        subject = (f"endpoint {endpoint!r}: " if endpoint else "") + (f"key {key!r} " if key else "")
        super().__init__(source, line, subject + message, knob=key or "(file)")
        self.endpoint = endpoint
        self.key = key


def check_path(path: str) -> str:
    """A path below an endpoint's base URL: relative, no ``..``, no control characters or spaces at the ends.

    Raises ``ValueError`` saying what is wrong (the caller names the field).
    """
    if not path or path != path.strip():
        raise ValueError("must be a non-empty path without spaces at either end")
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        raise ValueError("must not contain control characters")
    if ".." in path.split("/"):
        raise ValueError("must not contain '..' (it would leave the endpoint's base URL)")
    if "?" in path or "#" in path:
        raise ValueError("must not contain '?' or '#'")
    return path.lstrip("/")


def _check_url(protocol: str, url: str) -> str:
    parts = urlsplit(url)
    schemes = SCHEMES.get(protocol, ())
    if parts.scheme not in schemes:
        raise ValueError(f"scheme {parts.scheme or '(none)'!r} is not one of {protocol}'s ({', '.join(schemes)})")
    if not parts.netloc:
        raise ValueError("has no host (write e.g. https://data.example.org/store/)")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if protocol == "xrootd" and not parts.path.startswith("//"):
        # xrootd servers refuse relative paths ("Stating relative path ... is disallowed"), and in a
        # root:// URL the path is what follows the host's single slash
        raise ValueError(f"has a relative path: an xrootd path starts with '//' after the host "
                         f"(write e.g. {parts.scheme}://{parts.netloc}//{parts.path.lstrip('/')})")
    return url if url.endswith("/") else url + "/"


def _names(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and ACCOUNT_RE.fullmatch(v) for v in value):
        raise ValueError("must be a list of user or group names")
    return tuple(value)


def _endpoint(name: str, settings: Mapping[str, object], source: str, line: int,
              error: Mapping[str, object] | None = None) -> tuple[Endpoint | None, list[tuple[str, str]]]:
    """The endpoint ``name`` from its settings, or None and its (key, message) errors."""
    problems: list[tuple[str, str]] = []
    for key in settings:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), list(KEYS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append((str(key), f"is not known; {hint}(accepted: {ACCEPTED})"))
    for key in REQUIRED:
        if settings.get(key) is None:
            problems.append((key, f"is required ({KEYS[key]})"))

    def text(key: str) -> str | None:
        value = settings.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            problems.append((key, "must be one line of text"))
            return None
        return value.strip()

    protocol, url, site = text("protocol"), text("url"), text("site")
    profile, image, description = text("profile"), text("container_image"), text("description") or ""
    if protocol is not None and protocol not in SCHEMES:
        problems.append(("protocol", f"{protocol!r} is not one of {', '.join(SCHEMES)}"))
        protocol = None
    if url is not None and protocol is not None:
        try:
            url = _check_url(protocol, url)
        except ValueError as err:
            problems.append(("url", f"{url!r} {err}"))
    if site is not None and not SITE_RE.fullmatch(site):
        problems.append(("site", f"{site!r} is not a site name (letters, digits, '_', '.', '-')"))
    if profile is not None and not NAME_RE.fullmatch(profile):
        problems.append(("profile", f"{profile!r} is not a profile name (1-64 of a-z 0-9 . _ -)"))
    if image is not None and not image.startswith(("/", "docker://", "oras://")):
        problems.append(("container_image", "must be an absolute path (.sif or directory) or a docker:// image"))
    accounts: dict[str, tuple[str, ...]] = {}
    for key in ("users", "groups"):
        try:
            accounts[key] = _names(settings.get(key))
        except ValueError as err:
            problems.append((key, str(err)))
    if problems or protocol is None or url is None or site is None:
        return None, problems
    return Endpoint(name=name, protocol=protocol, url=url, site=site, profile=profile,  # type: ignore[arg-type]
                    description=description, container_image=image, users=accounts.get("users", ()),
                    groups=accounts.get("groups", ()), source=source, line=line), []


def parse_endpoints(text: str, source: str) -> tuple[list[Endpoint], list[EndpointError]]:
    """Every endpoint defined in one file's text, and every error in it. Pure."""
    try:
        document, value = load(text, source, LIMITS)
    except YamlFileError as err:
        return [], [EndpointError(source, err.line, err.detail)]
    root = document.root
    if not isinstance(value, dict) or set(value) != {"endpoints"} or not isinstance(value["endpoints"], dict):
        return [], [EndpointError(source, document.line(root), "must be a mapping with one key, 'endpoints', "
                                  "that maps endpoint names to settings")]
    endpoints: list[Endpoint] = []
    errors: list[EndpointError] = []
    for name, settings in value["endpoints"].items():
        line = line_of(root, ["endpoints", name]) or 0
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            errors.append(EndpointError(source, line, f"name {name!r} is not valid (1-64 of a-z 0-9 . _ -)"))
            continue
        if not isinstance(settings, dict):
            errors.append(EndpointError(source, line, "must be a mapping of settings", name))
            continue
        endpoint, problems = _endpoint(name, settings, source, line)
        errors += [EndpointError(source, line_of(root, ["endpoints", name, key]), message, name, key)
                   for key, message in problems]
        if endpoint is not None:
            endpoints.append(endpoint)
    return endpoints, errors


def load_endpoints(path: Path) -> dict[str, Endpoint]:
    """The endpoints of the file at ``path``; raises :class:`ConfigError` listing every error in it."""
    try:
        text = read_text(path, LIMITS)
    except OSError as err:
        raise ConfigError("--endpoints", f"cannot read {path}: {err.strerror}") from None
    endpoints, errors = parse_endpoints(text, str(path))
    if errors:
        raise ConfigError("--endpoints", f"{len(errors)} error(s): " + " | ".join(map(str, errors)))
    return {e.name: e for e in endpoints}
