"""What a client asks for (:class:`TransferRequest`), checked field by field against the endpoints. Pure.

Bad input never reaches the schedd: :func:`validate` raises :class:`TransferRequestError` naming the
field and what is accepted, and the service answers it as JSON with status 422 (403 when the user
may not use the endpoint).

A request moves data between an endpoint and a path on the pool's shared file system::

    get     source = ENDPOINT:PATH   destination = /absolute/local/path
    put     source = /absolute/local/path   destination = ENDPOINT:PATH
    delete  source = ENDPOINT:PATH   (no destination)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from lark.errors import LarkError
from lark.profiles.values import NAME_RE
from lark.transfer.endpoints import Endpoint, check_path

Verb = Literal["get", "put", "delete"]
VERBS: tuple[str, ...] = ("get", "put", "delete")
FIELDS = ("verb", "source", "destination", "size", "profile", "label", "submission_id")
SUBMISSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
LABEL_MAX = 128
MAX_SIZE = 1 << 60  # bytes; a ClassAd integer holds it, a typo of a few more digits does not pass
# The verbs each protocol's mover can carry out (globus-url-copy cannot delete)
PROTOCOL_VERBS: dict[str, tuple[str, ...]] = {"gridftp": ("get", "put"), "https": VERBS, "xrootd": VERBS}


class TransferRequestError(LarkError):
    """A request the service refuses: ``field`` names what to fix; ``status`` is the HTTP status."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status

    def as_dict(self) -> dict[str, object]:
        return {"error": {"field": self.field, "message": self.message}}


@dataclass(frozen=True)
class Remote:
    endpoint: Endpoint
    path: str

    @property
    def url(self) -> str:
        return self.endpoint.url_for(self.path)

    def __str__(self) -> str:
        return f"{self.endpoint.name}:{self.path}"


@dataclass(frozen=True)
class TransferRequest:
    """A checked request: the remote side, the local path (None for delete) and the optional rest."""

    verb: Verb
    remote: Remote
    local: str | None
    size: int | None = None
    profile: str | None = None
    label: str = ""
    submission_id: str | None = None

    @property
    def source(self) -> str:
        return self.local if self.verb == "put" and self.local else str(self.remote)

    @property
    def destination(self) -> str:
        if self.verb == "put":
            return str(self.remote)
        return self.local or ""


SUBMIT_MACRO = re.compile(r"\$[A-Za-z_]*\(")


def _text(body: Mapping[str, object], field: str, required: bool) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise TransferRequestError(field, "is required")
        return None
    if not isinstance(value, str):
        raise TransferRequestError(field, f"must be a string, not {type(value).__name__}")
    if SUBMIT_MACRO.search(value):
        # the submit language would expand it (with the service's own settings and environment, for
        # $ENV(...)): the job would not say what was asked, and could read what is not the user's
        raise TransferRequestError(field, f"{value!r} must not contain a submit macro such as $(Cluster) or "
                                          "$ENV(HOME)")
    if "\\" in value:
        # a submit file's string keeps a backslash as it is unless a quote follows: no way to write
        # every string, so none is taken
        raise TransferRequestError(field, f"{value!r} must not contain a backslash")
    return value


def _remote(field: str, text: str, endpoints: Mapping[str, Endpoint], user: str, groups: Iterable[str]) -> Remote:
    name, sep, path = text.partition(":")
    known = ", ".join(endpoints) or "none"
    if not sep or not NAME_RE.fullmatch(name):
        raise TransferRequestError(field, f"{text!r} is not ENDPOINT:PATH (endpoints: {known})")
    endpoint = endpoints.get(name)
    if endpoint is None:
        raise TransferRequestError(field, f"endpoint {name!r} is not known (endpoints: {known})")
    if not endpoint.may_use(user, groups):
        raise TransferRequestError(field, f"user {user!r} may not use endpoint {name!r} (allowed: {endpoint.who()})",
                                   status=403)
    try:
        return Remote(endpoint, check_path(path))
    except ValueError as err:
        raise TransferRequestError(field, f"path {path!r} {err}") from None


def _local(field: str, text: str) -> str:
    if not text.startswith("/"):
        raise TransferRequestError(field, f"{text!r} must be an absolute path on the pool's shared file system")
    try:
        check_path(text)
    except ValueError as err:
        raise TransferRequestError(field, f"{text!r} {err}") from None
    return text


def validate(body: object, endpoints: Mapping[str, Endpoint], user: str, groups: Iterable[str] = ()
             ) -> TransferRequest:
    """The checked request of the JSON ``body`` sent by ``user``; raises :class:`TransferRequestError`."""
    if not isinstance(body, Mapping):
        raise TransferRequestError("body", "must be a JSON object with the fields " + ", ".join(FIELDS))
    unknown = sorted(str(k) for k in body if k not in FIELDS)
    if unknown:
        raise TransferRequestError(unknown[0], f"is not a field of a transfer (accepted: {', '.join(FIELDS)})")
    verb = _text(body, "verb", True)
    if verb not in VERBS:
        raise TransferRequestError("verb", f"{verb!r} is not one of {', '.join(VERBS)}")
    source = _text(body, "source", True) or ""
    destination = _text(body, "destination", verb != "delete")
    if verb == "delete" and destination is not None:
        raise TransferRequestError("destination", "must be left out for delete")
    if verb == "put":
        local: str | None = _local("source", source)
        remote = _remote("destination", destination or "", endpoints, user, groups)
    else:
        remote = _remote("source", source, endpoints, user, groups)
        local = _local("destination", destination) if destination is not None else None
    if verb not in PROTOCOL_VERBS[remote.endpoint.protocol]:
        raise TransferRequestError("verb", f"{verb!r} is not available on {remote.endpoint.protocol} endpoint "
                                           f"{remote.endpoint.name!r} (its verbs: "
                                           f"{', '.join(PROTOCOL_VERBS[remote.endpoint.protocol])})")
    size = body.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE):
        raise TransferRequestError("size", f"{size!r} must be a whole number of bytes, 0..{MAX_SIZE}")
    profile = _text(body, "profile", False)
    if profile is not None and not NAME_RE.fullmatch(profile):
        raise TransferRequestError("profile", f"{profile!r} is not a profile name (1-64 of a-z 0-9 . _ -)")
    label = _text(body, "label", False) or ""
    if len(label) > LABEL_MAX or not label.isprintable():
        raise TransferRequestError("label", f"must be at most {LABEL_MAX} printable characters")
    submission_id = _text(body, "submission_id", False)
    if submission_id is not None and not SUBMISSION_ID_RE.fullmatch(submission_id):
        raise TransferRequestError("submission_id", f"{submission_id!r} must be 1-128 of A-Z a-z 0-9 _ . : - "
                                                    "(a UUID is a good choice)")
    return TransferRequest(verb=verb, remote=remote, local=local, size=size,  # type: ignore[arg-type]
                           profile=profile or remote.endpoint.profile, label=label, submission_id=submission_id)
