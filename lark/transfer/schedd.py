"""The edge to the schedd: everything done *as the user* is done with the user's own token.

The service holds no HTCondor power of its own beyond reading the queue:

- **Who is asking** (:meth:`Schedd.identity`): ``condor_ping WRITE`` against the schedd with only the
  caller's bearer token offered (``SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS, SCITOKENS`` and a
  token directory holding that one token). The schedd verifies the token and says whom it maps to; a
  forged or expired token is refused by the schedd, not by this code. SciTokens/WLCG tokens work the
  same way when the schedd accepts SCITOKENS and maps their issuer.
- **Submit and remove** (:meth:`Schedd.submit`, :meth:`Schedd.remove`): ``condor_submit`` and
  ``condor_rm`` in the same way, so the job's ``Owner`` is the token's user and the schedd's own rule
  (only a job's owner or a queue super-user may remove it) decides who may cancel.
- **Reading** (:meth:`Schedd.query`): the queue and the history through the htcondor2 bindings, as the
  service (READ), always constrained by ``Owner`` to the identity the schedd vouched for.

Each tool runs as a fresh process, so no authenticated session is ever shared between two users' tokens
(the bindings cache security sessions per process).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lark.errors import LarkError, NotFound, NotPermitted
from lark.transfer.jobs import ATTR_VERB, PROJECTION, classad_string, submit_text

if TYPE_CHECKING:
    import htcondor2

CLIENT_METHODS = "IDTOKENS, SCITOKENS"
# HTCondor tools run at once: the schedd is one process, and authenticating many more clients at a time
# only makes them miss its deadlines ("exceeded ... deadline during authentication", "Failed to commit
# job submission") while the answers come no sooner; the rest wait their turn here
MAX_PARALLEL_TOOLS = 4
IDENTITY_TTL = 60.0  # seconds a token's identity is remembered (tokens live hours; a revoked one stops at submit)
TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{16,16384}")  # a JWT: base64url parts and dots


class ScheddError(LarkError):
    """The schedd refused or could not be reached; the message is the tool's own, on one line."""


class Unauthenticated(LarkError):
    """The bearer token is missing, malformed or refused by the schedd."""


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


@dataclass
class Schedd:
    """The schedd the service submits to: ``name`` (None: the local one) and the tools' directory."""

    name: str | None = None
    bin_dir: str = "/usr/bin"
    timeout: float = 60.0
    max_parallel: int = MAX_PARALLEL_TOOLS
    _identities: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _slots: threading.BoundedSemaphore = field(init=False)
    # the bindings keep one security session cache per process: concurrent calls from FastAPI's threads
    # were seen to fail ("Failed to read resume session response"), so they take turns
    _bindings_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_parallel)

    # -- as the user ---------------------------------------------------------------------------------------
    @contextmanager
    def _token_env(self, token: str) -> Iterator[dict[str, str]]:
        """The environment of a tool that may authenticate with ``token`` and nothing else."""
        if not TOKEN_RE.fullmatch(token):
            raise Unauthenticated("the bearer token is not a token (expected a JWT)")
        with tempfile.TemporaryDirectory(prefix="lark-transfer-token-") as directory:
            path = os.path.join(directory, "token")
            nothing = os.path.join(directory, "none")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_SEC_")}
            env.update({
                "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": CLIENT_METHODS,
                "_CONDOR_SEC_TOKEN_DIRECTORY": directory,
                # no system-wide tokens, no token from the service account's own ~/.condor/tokens.d
                "_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY": directory,
                "_CONDOR_SCITOKENS_FILE": path,
                "_CONDOR_SEC_CLIENT_AUTHENTICATION": "REQUIRED",
                # a client that can read the pool's signing key (root on a pool host) would otherwise mint
                # itself a token when the user's is refused, and be condor@password: never offer the key
                "_CONDOR_SEC_PASSWORD_DIRECTORY": nothing,
                "_CONDOR_SEC_PASSWORD_FILE": nothing,
                "_CONDOR_SEC_TOKEN_POOL_SIGNING_KEY_FILE": nothing,
            })
            yield env

    def _run(self, argv: Sequence[str], env: Mapping[str, str], input_text: str | None = None
             ) -> subprocess.CompletedProcess[str]:
        tool = [os.path.join(self.bin_dir, argv[0]), *argv[1:]]
        if self.name:
            tool[1:1] = ["-name", self.name]
        try:
            with self._slots:
                return subprocess.run(tool, input=input_text, capture_output=True, text=True, env=dict(env),
                                      timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ScheddError(f"{argv[0]} did not answer within {self.timeout:g} s") from None
        except OSError as err:
            raise ScheddError(f"cannot run {tool[0]}: {err.strerror}") from None

    def identity(self, token: str) -> str:
        """The user the schedd maps ``token`` to (``alice`` of ``alice@example.org``); raises Unauthenticated."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            known = self._identities.get(key)
        if known and now - known[1] < IDENTITY_TTL:
            return known[0]
        with self._token_env(token) as env:
            done = self._run(["condor_ping", "-type", "SCHEDD", "-table", "WRITE"], env)
        user = _ping_identity(done.stdout)
        if done.returncode != 0 or user is None:
            raise Unauthenticated("the schedd did not accept the bearer token"
                                  + (f" ({_one_line(done.stderr)})" if done.stderr.strip() else ""))
        with self._lock:
            self._identities[key] = (user, now)
        return user

    def submit(self, token: str, description: Mapping[str, str]) -> int:
        """Submit one job with ``description`` as the token's user; the new cluster id."""
        with self._token_env(token) as env:
            done = self._run(["condor_submit", "-terse", "-"], env, submit_text(description))
        if done.returncode != 0:
            raise ScheddError(f"condor_submit failed: {_one_line(done.stderr or done.stdout)}")
        match = re.match(r"\s*(\d+)\.\d+", done.stdout)
        if not match:
            raise ScheddError(f"condor_submit printed no job id: {_one_line(done.stdout)}")
        return int(match.group(1))

    def remove(self, token: str, cluster: int, proc: int, reason: str) -> None:
        """``condor_rm`` the job as the token's user: the schedd refuses another user's job."""
        with self._token_env(token) as env:
            done = self._run(["condor_rm", "-reason", reason, f"{cluster}.{proc}"], env)
        if done.returncode != 0:
            text = _one_line(done.stderr or done.stdout)
            if "not found" in text.lower() or "couldn't find" in text.lower():
                raise NotFound(f"transfer {cluster}.{proc} is not in the queue")
            if "permission" in text.lower() or "not authorized" in text.lower():
                raise NotPermitted(f"the schedd refused to remove {cluster}.{proc}: {text}")
            raise ScheddError(f"condor_rm failed: {text}")

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
                    past = schedd.history(where, list(PROJECTION), match=limit)
                    ads += [dict(ad) for ad in past if (ad.get("ClusterId"), ad.get("ProcId")) not in seen]
        except htcondor2.HTCondorException as err:
            raise ScheddError(f"cannot read the schedd's queue: {_one_line(str(err))}") from None
        return ads


def _ping_identity(table: str) -> str | None:
    """The user of ``condor_ping -table``'s Identity column (``alice@example.org`` -> ``alice``).

    The table (HTCondor 25)::

        Instruction Authentication Encryption Integrity Decision Identity
              WRITE       IDTOKENS        AES       AES    ALLOW alice@example.org

    A refused token reads ``FAIL`` in every column; HTCondor's own identities (``condor@...``) are
    never a transfer's owner.
    """
    lines = [line for line in table.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    header = lines[0].split()
    if "Identity" not in header:
        return None
    row = lines[1].split()
    column = header.index("Identity")
    if column >= len(row):
        return None
    identity = row[column]
    decision = row[header.index("Decision")] if "Decision" in header and header.index("Decision") < len(row) else ""
    if decision.upper() != "ALLOW" or "@" not in identity or identity.startswith(("unauthenticated", "condor@")):
        return None
    user = identity.partition("@")[0]
    return user or None
