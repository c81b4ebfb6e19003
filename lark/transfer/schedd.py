"""The edge to the schedd: everything done *as the user* is done with the user's own token.

The service holds no HTCondor power of its own beyond reading the queue:

- **As the user** (:meth:`Schedd.identity`, :meth:`Schedd.submit`, :meth:`Schedd.remove`): through a
  :class:`TokenWorker`, a process of its own per bearer token (:mod:`lark.transfer.worker`) that can
  authenticate with that token and nothing else. The schedd verifies the token (an HTCondor IDTOKEN, or a
  SciToken/WLCG token when it accepts SCITOKENS and maps the issuer) and says whom it maps to; a forged or
  expired token is refused by the schedd, not by this code. The job's ``Owner`` is the token's user, and
  the schedd's own rule (only a job's owner or a queue super-user may remove it) decides who may cancel.
- **Reading** (:meth:`Schedd.query`): the queue and the history through the htcondor2 bindings, as the
  service (READ), always constrained by ``Owner`` to the identity the schedd vouched for.

A worker keeps its authenticated session, so a submit costs a few milliseconds instead of a new
``condor_submit`` authenticating every time (the figures are in docs/transfer.md). It lives at most
:data:`WORKER_LIFETIME` seconds, and never past the token's own ``exp``: a revoked token stops working
within that time, as it did with the identity cache of the tools. Each worker's session is its own, so no
session is ever shared between two tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from lark.errors import LarkError, NotFound, NotPermitted
from lark.transfer.jobs import ATTR_VERB, PROJECTION, classad_string
from lark.transfer.tokens import explain_refusal, token_claims

if TYPE_CHECKING:
    import htcondor2

log = logging.getLogger("lark.transfer")

WORKER_LIFETIME = 60.0  # seconds a worker (and so a token's identity) is trusted before the schedd is asked again
WORKER_START_TIMEOUT = 30.0
MAX_WORKERS = 32  # tokens with a live worker (about 30 MB each); the least recently used goes first
# workers starting at once: each start is a process and an authentication, which the one schedd answers
# in turn; more at a time only makes them miss its deadlines
MAX_PARALLEL_STARTS = 4
REFUSAL_TTL = 10.0  # seconds a refused token is answered from memory, so garbage cannot make processes
DEFAULT_HISTORY_DAYS = 30.0
T = TypeVar("T")
TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{16,16384}")  # a JWT: base64url parts and dots


class ScheddError(LarkError):
    """The schedd refused or could not be reached; the message is the schedd's own, on one line."""


class Unauthenticated(LarkError):
    """The bearer token is missing, malformed or refused by the schedd."""


class WorkerGone(ScheddError):
    """The worker had ended before the request was sent (it was retired): safe to send to its successor."""


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read **without** checking its signature, or None.

    Only ever used to end a worker *sooner*; the schedd is what verifies the token.
    """
    claims = token_claims(token)
    exp = claims.get("exp") if claims is not None else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


def trusted_for(token: str, lifetime: float, now: float) -> float:
    """Seconds a worker of ``token`` may act before the schedd is asked again: ``lifetime``, or less when
    the token expires sooner (0 when it already has)."""
    expiry = token_expiry(token)
    return max(0.0, min(lifetime, expiry - now)) if expiry is not None else lifetime


def identity_user(identity: str) -> str | None:
    """The user of the schedd's name for a token (``alice@example.org`` -> ``alice``); None for HTCondor's
    own identities (``condor@...``) and the unauthenticated, which are never a transfer's owner."""
    user, at, _domain = identity.partition("@")
    if not at or not user or user in ("condor", "unauthenticated", "anonymous"):
        return None
    return user


MAX_BATCH = 100  # submissions of one token sent to the schedd together


@dataclass(frozen=True)
class Submitted:
    """A submission's job, and whether the client's submission id already had it (a retried request)."""

    cluster: int
    proc: int
    existed: bool


def _job_id(text: object) -> tuple[int, int]:
    cluster, _, proc = str(text).partition(".")
    return int(cluster), int(proc or 0)


class _Pending:
    """One submission in a batch: what is sent, and what came back."""

    def __init__(self, item: dict[str, object]) -> None:
        self.item = item
        self.done = False
        self._result: Submitted | None = None
        self._error: LarkError | None = None

    def settle(self, answer: object) -> None:
        if not isinstance(answer, dict):
            self._error = ScheddError("the token's worker answered nonsense")
        elif "job" in answer:
            self._result = Submitted(*_job_id(answer["job"]), existed=False)
        elif "existing" in answer:
            self._result = Submitted(*_job_id(answer["existing"]), existed=True)
        else:
            self._error = ScheddError(str(answer.get("error", "the schedd gave no answer")))

    def fail(self, error: LarkError) -> None:
        self._error = error

    def outcome(self) -> Submitted:
        if self._result is not None:
            return self._result
        raise self._error or ScheddError("the submission was not sent")


class TokenWorker:
    """One :mod:`lark.transfer.worker` process: the hands of one token. Calls take turns (one session)."""

    def __init__(self, token: str, schedd_name: str | None, timeout: float, lifetime: float = WORKER_LIFETIME
                 ) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        trusted = trusted_for(token, lifetime, time.time())
        self.retire_at = self.started + trusted
        self.renew_at = self.started + 0.75 * trusted
        self.renewing = False
        self.last_used = self.started
        self.lock = threading.Lock()
        self.user: str | None = None
        # submissions waiting for the next batch; the request that finds no batch in flight sends it
        self._batch = threading.Condition()
        self._waiting: list[_Pending] = []
        self._sending = False
        self._buffer = b""
        env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_SEC_")}
        # its stderr is the service's: what the bindings or a crash say lands in the service's log
        self._proc = subprocess.Popen([sys.executable, "-I", "-m", "lark.transfer.worker"], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            self._send({"token": token, "schedd": schedd_name})
            ready = self._receive(WORKER_START_TIMEOUT)
            if "error" in ready:
                raise ScheddError(str(ready.get("message")))
            identity = self.call({"op": "whoami"})
            self.user = identity_user(str(identity.get("identity", "")))
            if self.user is None:
                raise Unauthenticated(f"the token maps to {identity.get('identity')!r}, which owns no transfers")
            log.info("worker %d acts for %s (%s) for %.0f s", self._proc.pid, identity.get("identity"),
                     identity.get("method"), trusted)
        except BaseException:
            self.close()
            raise

    def _send(self, message: Mapping[str, object]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message).encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise WorkerGone("the token's worker process ended") from None

    def _receive(self, timeout: float) -> dict[str, Any]:
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.close()
                    raise ScheddError(f"the schedd did not answer within {timeout:g} s")
                chunk = os.read(self._proc.stdout.fileno(), 65536)
                if not chunk:
                    raise ScheddError("the token's worker process ended")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ScheddError("the token's worker answered nonsense")
        return answer

    def call(self, request: Mapping[str, object]) -> dict[str, Any]:
        """One request, its answer; errors become :class:`Unauthenticated` or :class:`ScheddError`."""
        with self.lock:
            self.last_used = time.monotonic()
            self._send(request)
            answer = self._receive(self.timeout)
        if answer.get("error") == "unauthenticated":
            raise Unauthenticated(str(answer.get("message")))
        if "error" in answer:
            raise ScheddError(str(answer.get("message")))
        return answer

    def submit(self, owner: str, description: Mapping[str, str], submission_id: str | None,
               history_since: str | None = None) -> Submitted:
        """Submit one job, batched with whatever other submissions of this token arrive meanwhile.

        The schedd takes one transaction at a time, so ten concurrent requests sent one by one wait for
        each other; sent together they cost about one (procs of one cluster, see
        :meth:`lark.transfer.worker.Hands.submit`).
        """
        mine = _Pending({"description": dict(description), "submission_id": submission_id})
        with self._batch:
            self._waiting.append(mine)
            while not mine.done and self._sending:
                self._batch.wait()
            if mine.done:
                return mine.outcome()
            self._sending = True
            others = [p for p in self._waiting if p is not mine]
            batch, self._waiting = [mine, *others[:MAX_BATCH - 1]], others[MAX_BATCH - 1:]
        try:
            answer = self.call({"op": "submit", "owner": owner, "history_since": history_since,
                                "items": [p.item for p in batch]})
            results = answer.get("items")
            if not isinstance(results, list) or len(results) != len(batch):
                raise ScheddError("the token's worker answered a batch with the wrong number of items")
            for pending, result in zip(batch, results, strict=True):
                pending.settle(result)
        except (ScheddError, Unauthenticated) as err:
            for pending in batch:
                pending.fail(err)
        finally:
            with self._batch:
                self._sending = False
                for pending in batch:
                    pending.done = True
                self._batch.notify_all()
        return mine.outcome()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """End the process: stdin closes, it finishes the request it has and exits."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def retire(self) -> None:
        """Close once the call in flight (if any) is answered, without making the caller wait for it."""
        def later() -> None:
            with self.lock:
                self.close()
        threading.Thread(target=later, name="lark-transfer-retire", daemon=True).start()


@dataclass
class Schedd:
    """The schedd the service submits to: ``name`` (None: the local one)."""

    name: str | None = None
    timeout: float = 60.0
    #: how far back the history is read for a user's transfers and submission ids (None: all of it)
    history_days: float | None = DEFAULT_HISTORY_DAYS
    lifetime: float = WORKER_LIFETIME
    max_workers: int = MAX_WORKERS
    _workers: dict[str, TokenWorker] = field(default_factory=dict)
    _starting: dict[str, threading.Lock] = field(default_factory=dict)
    _refused: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _start_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_PARALLEL_STARTS))
    # the bindings keep one security session cache per process: concurrent calls from FastAPI's threads
    # were seen to fail ("Failed to read resume session response"), so they take turns
    _bindings_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- as the user ---------------------------------------------------------------------------------------
    def _worker(self, token: str) -> TokenWorker:
        """The live worker of ``token``, started (and the token checked by the schedd) when there is none.

        Past three quarters of its life a worker's successor is started in the background, so a busy
        token never waits for a start (a process and an authentication) once it has a worker.
        """
        if not TOKEN_RE.fullmatch(token):
            raise Unauthenticated("the bearer token is not a token (expected a JWT)")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            expired = self._expired_locked(now)
            worker = self._workers.get(key)
            usable = worker is not None and worker.alive and now < worker.retire_at
            renew = usable and worker is not None and not worker.renewing and now >= worker.renew_at
            if renew and worker is not None:
                worker.renewing = True
        for done in expired:
            done.retire()
        if usable and worker is not None:
            if renew:
                threading.Thread(target=self._renew, args=(token, key, worker), name="lark-transfer-renew",
                                 daemon=True).start()
            return worker
        return self._start(token, key, worker)

    def _renew(self, token: str, key: str, worker: TokenWorker) -> None:
        try:
            self._start(token, key, worker)
        except LarkError:
            pass  # the old worker serves until it retires; the first request after that starts one and says why

    def _start(self, token: str, key: str, stale: TokenWorker | None) -> TokenWorker:
        """Start ``token``'s worker in place of ``stale``, unless another request already has."""
        with self._lock:
            starting = self._starting.setdefault(key, threading.Lock())
        with starting:  # one start per token, however many of its requests arrive at once
            now = time.monotonic()
            with self._lock:
                current = self._workers.get(key)
                if current is not None and current is not stale and current.alive and now < current.retire_at:
                    return current
                refused = self._refused.get(key)
            if refused is not None and now - refused[1] < REFUSAL_TTL:
                raise Unauthenticated(refused[0])
            old: TokenWorker | None = None
            spare: list[TokenWorker] = []
            fresh: TokenWorker | None = None
            try:
                with self._start_slots:
                    fresh = TokenWorker(token, self.name, self.timeout, self.lifetime)
            except Unauthenticated as err:
                # the schedd says only "refused"; what the token claims usually says why (expired, whose)
                why = explain_refusal(token, time.time())
                message = f"{err}: {why}" if why else str(err)
                log.warning("refused a token: %s", message)
                with self._lock:
                    self._refused = {k: v for k, v in self._refused.items() if now - v[1] < REFUSAL_TTL}
                    self._refused[key] = (message, now)
                raise Unauthenticated(message) from None
            finally:
                with self._lock:  # installed before the next request can start another one
                    if fresh is not None:
                        old = self._workers.pop(key, None)
                        self._workers[key] = fresh
                        spare = self._evict_locked()
                    self._starting.pop(key, None)
        for done in ([old] if old is not None else []) + spare:
            done.retire()
        assert fresh is not None  # or TokenWorker raised
        return fresh

    def _expired_locked(self, now: float) -> list[TokenWorker]:
        """Workers past their time, taken out: an idle token's worker ends at the next request of anyone."""
        gone = [key for key, worker in self._workers.items() if now >= worker.retire_at or not worker.alive]
        return [self._workers.pop(key) for key in gone]

    def _evict_locked(self) -> list[TokenWorker]:
        """Workers to close so that at most ``max_workers`` remain (least recently used first)."""
        if len(self._workers) <= self.max_workers:
            return []
        order = sorted(self._workers.items(), key=lambda item: item[1].last_used)
        evicted = []
        for key, worker in order[:len(self._workers) - self.max_workers]:
            del self._workers[key]
            evicted.append(worker)
        return evicted

    def identity(self, token: str) -> str:
        """The user the schedd maps ``token`` to (``alice`` of ``alice@example.org``); raises Unauthenticated."""
        user = self._worker(token).user
        assert user is not None  # a worker without one is never kept
        return user

    def _as_user(self, token: str, action: Callable[[TokenWorker], T]) -> T:
        """``action`` with the token's worker; once more with its successor if it was retired meanwhile."""
        try:
            return action(self._worker(token))
        except WorkerGone:
            return action(self._worker(token))

    def submit(self, token: str, description: Mapping[str, str], submission_id: str | None = None) -> Submitted:
        """Submit one job with ``description`` as the token's user. With a ``submission_id`` the user already
        used, nothing is submitted and the answer is that submission's job (``existed``)."""
        def submit(worker: TokenWorker) -> Submitted:
            assert worker.user is not None
            return worker.submit(worker.user, description, submission_id, self.history_since(time.time()))
        return self._as_user(token, submit)

    def history_since(self, now: float) -> str | None:
        """Where reading the history (newest first) stops: at the first job that entered its final state
        before the window. The schedd's history holds every user's jobs, possibly millions: without a
        bound, each look-up of a new submission id would read all of it."""
        if self.history_days is None:
            return None
        return f"EnteredCurrentStatus < {int(now - self.history_days * 86400)}"

    def remove(self, token: str, cluster: int, proc: int, reason: str) -> None:
        """Remove the job as the token's user: the schedd refuses another user's job."""
        tallies = self._as_user(token, lambda worker: worker.call(
            {"op": "remove", "job": f"{cluster}.{proc}", "reason": reason}))
        if tallies.get("TotalSuccess", 0) >= 1:
            return
        if tallies.get("TotalNotFound", 0):
            raise NotFound(f"transfer {cluster}.{proc} is not in the queue")
        if tallies.get("TotalPermissionDenied", 0):
            raise NotPermitted(f"the schedd refused to remove {cluster}.{proc}: permission denied")
        if tallies.get("TotalAlreadyDone", 0) or tallies.get("TotalBadStatus", 0):
            raise ScheddError(f"transfer {cluster}.{proc} is already being removed or has ended")
        raise ScheddError(f"the schedd removed nothing: {tallies}")

    def close(self) -> None:
        """End every worker (the service is stopping)."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.close()

    # -- as the service (reading) -------------------------------------------------------------------------
    def _bindings(self) -> htcondor2.Schedd:
        import htcondor2

        if self.name is None:
            return htcondor2.Schedd()
        return htcondor2.Schedd(htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, self.name))

    def query(self, owner: str, constraint: str = "true", limit: int = 1000, history: bool = True
              ) -> list[dict[str, object]]:
        """The transfer jobs of ``owner`` matching ``constraint``: the queue first, then (``history``) the
        history, at most ``limit`` of each, newest first."""
        import htcondor2

        where = f"Owner == {classad_string(owner)} && {ATTR_VERB} isnt undefined && ({constraint})"
        try:
            with self._bindings_lock:
                schedd = self._bindings()
                ads = [dict(ad) for ad in schedd.query(where, list(PROJECTION), limit=limit)]
                ads.sort(key=lambda ad: (ad.get("ClusterId", 0), ad.get("ProcId", 0)), reverse=True)
                if history and limit > len(ads):
                    seen = {(ad.get("ClusterId"), ad.get("ProcId")) for ad in ads}
                    past = schedd.history(where, list(PROJECTION), match=limit, since=self.history_since(time.time()))
                    ads += [dict(ad) for ad in past if (ad.get("ClusterId"), ad.get("ProcId")) not in seen]
        except htcondor2.HTCondorException as err:
            raise ScheddError(f"cannot read the schedd's queue: {_one_line(str(err))}") from None
        return ads

