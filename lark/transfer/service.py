"""What ``lark-transferd`` does for one request, without the web framework: testable and reusable.

:class:`TransferService` turns a caller's bearer token and JSON into schedd actions through
:class:`~lark.transfer.schedd.Schedd` (as the user) and answers with plain dicts. The HTTP layer
(:mod:`lark.transfer.api`) only maps its errors to status codes.

A transfer's id is its job id, ``CLUSTER.PROC``. Another user's transfer is "not found" (404), so a
token cannot even learn which ids exist.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lark.errors import NotFound
from lark.transfer.endpoints import Endpoint
from lark.transfer.jobs import (
    ATTR_LABEL,
    ATTR_LOGS,
    STATES,
    TERMINAL,
    Movers,
    classad_string,
    queued_ad,
    submit_description,
    transfer_view,
)
from lark.transfer.model import TransferRequest, TransferRequestError, validate
from lark.transfer.schedd import Schedd, ScheddError

MAX_PAGE = 1000
SUBMIT_RETRIES = 2  # of a submission with a submission_id whose commit the schedd aborted
LOG_TAIL_BYTES = 64 * 1024
# The ClassAd condition of each state (the inverse of jobs.transfer_state)
STATE_CONSTRAINTS: dict[str, str] = {
    "QUEUED": "JobStatus == 1",
    "ACTIVE": "(JobStatus == 2 || JobStatus == 6)",
    "INACTIVE": "(JobStatus == 5 || JobStatus == 7)",
    "CANCELED": "JobStatus == 3",
    "SUCCEEDED": "(JobStatus == 4 && ExitBySignal =!= true && ExitCode == 0)",
    "FAILED": "(JobStatus == 4 && (ExitBySignal =?= true || ExitCode =!= 0))",
}


def parse_id(text: str) -> tuple[int, int]:
    """``"42"`` or ``"42.0"`` -> (42, 0); anything else is a 404 naming the field ``id``."""
    match = _TRANSFER_ID.fullmatch(text)  # ASCII digits only: str.isdigit() also takes "²"
    if match is None:
        raise TransferRequestError("id", f"{text!r} is not a transfer id (CLUSTER.PROC, e.g. 42.0)", status=404)
    return int(match.group(1)), int(match.group(2) or 0)


_TRANSFER_ID = re.compile(r"([0-9]{1,18})(?:\.([0-9]{1,6}))?")


def user_groups(user: str) -> tuple[str, ...]:
    """The Unix groups of ``user`` on the service host (for endpoints limited to groups).

    One ``getgrouplist`` (what login does), not a walk over every group: on a site whose groups come
    from a directory service, enumerating them all on every request would be the slowest part of it.
    """
    import grp
    import pwd

    try:
        gids = os.getgrouplist(user, pwd.getpwnam(user).pw_gid)
    except KeyError:
        return ()
    names = []
    for gid in gids:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:  # a gid without a name names no group an endpoint could list
            continue
    return tuple(dict.fromkeys(names))


def tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str | None:
    """The last ``limit`` bytes of ``path`` as text (None when it does not exist yet)."""
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None


@dataclass
class _Turn:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


@dataclass
class TransferService:
    """The service's state: the endpoints, the schedd edge, where job logs go, the movers."""

    endpoints: Mapping[str, Endpoint]
    schedd: Schedd
    log_dir: Path = Path("/var/lib/lark/transfers")
    movers: Movers = Movers()
    profiles: list[dict[str, object]] = field(default_factory=list)
    _submitting: dict[tuple[str, str], _Turn] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def _one_at_a_time(self, key: tuple[str, str]) -> Iterator[None]:
        """Hold ``key``'s lock; the lock is forgotten when nobody holds or waits for it."""
        with self._guard:
            entry = self._submitting.setdefault(key, _Turn())
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._guard:
                entry.users -= 1
                if entry.users == 0:
                    del self._submitting[key]

    # -- helpers -------------------------------------------------------------------------------------------
    def _user_log_dir(self, user: str) -> Path:
        """``log_dir/<user>``, owned by the user (the shadow and starter write the job's logs as them)."""
        import pwd

        directory = self.log_dir / user
        if not directory.is_dir():
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                raise ScheddError(f"user {user!r} is not known on the service host, so it cannot hold the "
                                  "transfer's logs") from None
            if os.geteuid() != 0:  # a service account cannot give the user a directory of their own
                raise ScheddError(f"{directory} does not exist: create it owned by {user} and readable by "
                                  "lark-transferd's account, or run lark-transferd as root")
            directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            os.chown(directory, pw.pw_uid, pw.pw_gid)
        return directory

    def _one(self, user: str, cluster: int, proc: int) -> dict[str, object]:
        ads = self.schedd.query(user, f"ClusterId == {cluster} && ProcId == {proc}", limit=1)
        if not ads:
            raise NotFound(f"transfer {cluster}.{proc} is not one of {user}'s")
        return ads[0]

    # -- the API -------------------------------------------------------------------------------------------
    def create(self, token: str, body: object) -> tuple[dict[str, object], bool]:
        """Submit a transfer for the token's user: (its view, True) or, for a ``submission_id`` already
        used by this user, (the existing transfer, False)."""
        user = self.schedd.identity(token)
        request = validate(body, self.endpoints, user, user_groups(user))
        if request.submission_id is None:
            return self._submit(token, user, request)
        # one submission id at a time (the same user may hold two tokens, so two workers); the later
        # ones find the first one's job
        with self._one_at_a_time((user, request.submission_id)):
            for attempt in range(1 + SUBMIT_RETRIES):
                try:
                    return self._submit(token, user, request)
                except ScheddError as err:
                    # a busy schedd may abort the commit (its authentication deadline passed); with a
                    # submission id the next attempt finds the job if the commit went through after all
                    if attempt == SUBMIT_RETRIES or "Failed to commit" not in str(err):
                        raise
            raise AssertionError("unreachable")

    def _submit(self, token: str, user: str, request: TransferRequest) -> tuple[dict[str, object], bool]:
        """Submit ``request``: (its view, True); or, when its submission id already has a job (a retried
        POST, found in the queue or the history), (that transfer, False)."""
        logs = self._user_log_dir(user) / (request.submission_id or uuid.uuid4().hex)
        job = self.schedd.submit(token, submit_description(request, str(logs), self.movers), request.submission_id)
        if job.existed:
            return transfer_view(self._one(user, job.cluster, job.proc), time.time()), False
        # answered from what was submitted: asking the schedd again would cost a query per POST
        now = time.time()
        ad = queued_ad(request, job.cluster, user, now)
        ad["ProcId"] = job.proc
        return transfer_view(ad, now), True

    def list(self, token: str, state: str | None = None, label: str | None = None, owner: str | None = None,
             limit: int = 100, offset: int = 0) -> dict[str, object]:
        user = self.schedd.identity(token)
        if owner is not None and owner != user:
            raise TransferRequestError("owner", f"a token of {user!r} sees only {user!r}'s transfers", status=403)
        if state is not None and state not in STATES:
            raise TransferRequestError("state", f"{state!r} is not one of {', '.join(STATES)}")
        if not 1 <= limit <= MAX_PAGE:
            raise TransferRequestError("limit", f"must be 1..{MAX_PAGE}")
        if offset < 0:
            raise TransferRequestError("offset", "must be 0 or more")
        terms = [STATE_CONSTRAINTS[state]] if state else []
        if label is not None:
            terms.append(f"{ATTR_LABEL} == {classad_string(label)}")
        ads = self.schedd.query(user, " && ".join(terms) or "true", limit=offset + limit + 1)
        ads.sort(key=lambda ad: (ad.get("ClusterId", 0), ad.get("ProcId", 0)), reverse=True)
        now = time.time()
        page = [transfer_view(ad, now) for ad in ads[offset:offset + limit]]
        more = len(ads) > offset + limit
        return {"transfers": page, "offset": offset, "limit": limit, "count": len(page),
                "next_offset": offset + limit if more else None}

    def get(self, token: str, transfer_id: str) -> dict[str, object]:
        user = self.schedd.identity(token)
        return transfer_view(self._one(user, *parse_id(transfer_id)), time.time())

    def cancel(self, token: str, transfer_id: str) -> dict[str, object]:
        """``condor_rm`` as the user; a finished transfer cannot be canceled (409)."""
        user = self.schedd.identity(token)
        cluster, proc = parse_id(transfer_id)
        view = transfer_view(self._one(user, cluster, proc), time.time())
        if view["state"] in TERMINAL:
            raise TransferRequestError("id", f"transfer {transfer_id} has already ended ({view['state']})",
                                       status=409)
        self.schedd.remove(token, cluster, proc, f"canceled through lark-transferd by {user}")
        return transfer_view(self._one(user, cluster, proc), time.time())

    def log(self, token: str, transfer_id: str) -> dict[str, object]:
        """The job's event log and the mover's stdout and stderr (their last 64 KiB each)."""
        user = self.schedd.identity(token)
        ad = self._one(user, *parse_id(transfer_id))
        stem = ad.get(ATTR_LOGS)
        out: dict[str, object] = {"id": transfer_view(ad, time.time())["id"]}
        for key, suffix in (("event_log", ".log"), ("stdout", ".out"), ("stderr", ".err")):
            out[key] = tail(Path(f"{stem}{suffix}")) if isinstance(stem, str) else None
        return out

    def endpoint_list(self, token: str) -> list[dict[str, object]]:
        """The endpoints the token's user may use."""
        user = self.schedd.identity(token)
        groups = user_groups(user)
        return [e.as_dict() for e in self.endpoints.values() if e.may_use(user, groups)]

    def profile_list(self, token: str) -> list[dict[str, object]]:
        self.schedd.identity(token)
        return self.profiles
