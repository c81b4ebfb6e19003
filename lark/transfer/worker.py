"""One user's hands on the schedd: a process that authenticates with that user's token and nothing else.

``lark-transferd`` starts one per bearer token in use (:class:`lark.transfer.schedd.TokenWorker`). The
token arrives on stdin, never in argv or the environment. Before the HTCondor bindings are imported (they
read their configuration once, at import), the process points every credential knob at a directory of
its own holding only that token and at nothing for the pool's signing key, and allows only the token
methods. It can therefore be nobody but the token's user, even when it runs as root on a pool host:
"FS" would make it root, and the pool key would let it mint itself ``condor@password``.

It then answers one JSON request per line on stdin, one JSON answer per line on stdout, until stdin
closes. Being long-lived is the point: the bindings keep the authenticated session with the schedd, so
a submit costs a few milliseconds, where a fresh ``condor_submit`` authenticates again every time. The
session belongs to this process alone, so no session is ever shared between two tokens.

Requests (``op``):

- ``whoami``: ``ping`` the schedd for WRITE; answers ``{"identity": "alice@example.org"}`` (whom the schedd
  maps the token to), or an ``unauthenticated`` error;
- ``submit`` with ``owner``, ``history_since`` and ``items`` (each a description and its client's
  submission id): one answer per item (:meth:`Hands.submit`);
- ``remove`` with ``job`` ("C.P") and ``reason``: the schedd's tallies (``TotalSuccess``,
  ``TotalNotFound``, ``TotalPermissionDenied``, ...).

Errors: ``{"error": "unauthenticated" | "schedd" | "request", "message": ...}``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

#: the only ways this process may authenticate: the token it was given
CLIENT_METHODS = "IDTOKENS, SCITOKENS"
#: a worker's token directory in the temporary directory: ``<prefix><its pid>-<random>``
TOKEN_DIR_PREFIX = "lark-transfer-token-"


def sweep_token_dirs(parent: str | None = None) -> list[str]:
    """Remove the token directories of workers that are gone (killed before they could remove their own:
    the token would otherwise stay on disk); the paths removed. A live worker's directory stays."""
    parent = parent or tempfile.gettempdir()
    removed = []
    for name in sorted(os.listdir(parent)):
        pid_text = name[len(TOKEN_DIR_PREFIX):].partition("-")[0]
        if not name.startswith(TOKEN_DIR_PREFIX) or not pid_text.isascii() or not pid_text.isdigit():
            continue
        if os.path.exists(f"/proc/{int(pid_text)}"):
            continue
        path = os.path.join(parent, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def credential_settings(directory: str) -> dict[str, str]:
    """The ``_CONDOR_*`` settings that leave ``directory/token`` as this process's only credential."""
    token = os.path.join(directory, "token")
    nothing = os.path.join(directory, "none")
    return {
        "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": CLIENT_METHODS,
        "_CONDOR_SEC_CLIENT_AUTHENTICATION": "REQUIRED",
        "_CONDOR_SEC_TOKEN_DIRECTORY": directory,
        # no system-wide tokens, and none from the service account's own ~/.condor/tokens.d
        "_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY": directory,
        "_CONDOR_SCITOKENS_FILE": token,
        # a client that can read the pool's signing key (root on a pool host) would otherwise mint itself a
        # token when the user's is refused, and be condor@password: never offer the key
        "_CONDOR_SEC_PASSWORD_DIRECTORY": nothing,
        "_CONDOR_SEC_PASSWORD_FILE": nothing,
        "_CONDOR_SEC_TOKEN_POOL_SIGNING_KEY_FILE": nothing,
    }


class Refused(Exception):
    """An answer with ``error`` set; ``kind`` is one of unauthenticated, schedd, request."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:500]


class Hands:
    """The bindings' schedd, reached with this process's token."""

    def __init__(self, schedd_name: str | None) -> None:
        import htcondor2

        self._htcondor = htcondor2
        try:
            if schedd_name is None:
                self._location = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd)
            else:
                self._location = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, schedd_name)
        except htcondor2.HTCondorException as err:
            raise Refused("schedd", f"cannot locate the schedd: {_one_line(err)}") from None
        self._schedd = htcondor2.Schedd(self._location)

    def whoami(self, _request: Mapping[str, Any]) -> dict[str, object]:
        try:
            answer = self._htcondor.ping(self._location, "WRITE")
        except self._htcondor.HTCondorException as err:
            # a refused token ends the command before it starts: the schedd says no more than that
            raise Refused("unauthenticated", f"the schedd did not accept the token ({_one_line(err)})") from None
        if answer.get("AuthorizationSucceeded") is not True:
            raise Refused("unauthenticated", "the schedd does not let the token's user write")
        return {"identity": str(answer.get("MyRemoteUserName", "")),
                "method": str(answer.get("AuthMethods", ""))}

    def submit(self, request: Mapping[str, Any]) -> dict[str, object]:
        """Submit a batch of jobs in as few transactions as the descriptions allow.

        Each item is ``{"description": {...}, "submission_id": str | None}``. An item whose submission id
        the ``owner`` already used answers ``{"existing": "C.P"}`` (found in the queue or the history);
        the others are submitted, the items of one shape (same commands, same universe) as the procs of
        one cluster, answering ``{"job": "C.P"}`` or ``{"error": message}``. When a shared submission
        fails, its items are tried one by one, so one bad request never fails another's.
        """
        items, owner, since = request.get("items"), request.get("owner"), request.get("history_since")
        if not isinstance(items, list) or not isinstance(owner, str) or not all(_is_item(i) for i in items) \
                or not isinstance(since, (str, type(None))):
            raise Refused("request", "submit needs an owner and items of {description, submission_id}")
        answers: list[dict[str, object]] = [{} for _ in items]
        known = self._known_submissions(owner, [i["submission_id"] for i in items if i.get("submission_id")],
                                        since)
        shapes: dict[tuple[object, ...], list[int]] = {}
        first_of: dict[str, int] = {}  # a request retried while its first try is in this same batch
        repeats: dict[int, int] = {}
        for index, item in enumerate(items):
            submission = item.get("submission_id")
            if submission in known:
                answers[index] = {"existing": known[submission]}
            elif submission and submission in first_of:
                repeats[index] = first_of[submission]
            else:
                if submission:
                    first_of[submission] = index
                description = item["description"]
                shapes.setdefault((tuple(sorted(description)), description.get("universe")), []).append(index)
        for indexes in shapes.values():
            try:
                jobs = self._submit_shape([items[i]["description"] for i in indexes])
            except Refused as err:
                if len(indexes) == 1:
                    answers[indexes[0]] = {"error": str(err)}
                    continue
                for i in indexes:  # one by one: only the bad ones fail
                    try:
                        answers[i] = {"job": self._submit_shape([items[i]["description"]])[0]}
                    except Refused as single:
                        answers[i] = {"error": str(single)}
                continue
            for i, job in zip(indexes, jobs, strict=True):
                answers[i] = {"job": job}
        for index, first in repeats.items():
            answers[index] = {"existing": answers[first]["job"]} if "job" in answers[first] else answers[first]
        return {"items": answers}

    def _submit_shape(self, descriptions: list[dict[str, str]]) -> list[str]:
        """Submit descriptions of one shape as one cluster; their job ids, in order."""
        htcondor2 = self._htcondor
        try:
            if len(descriptions) == 1:
                result = self._schedd.submit(htcondor2.Submit(descriptions[0]), count=1)
            else:
                # every value becomes an item variable: each proc gets its own, in one transaction
                keys = list(descriptions[0])
                template = htcondor2.Submit({key: f"$(LarkItem{n})" for n, key in enumerate(keys)})
                rows = [{f"LarkItem{n}": d[key] for n, key in enumerate(keys)} for d in descriptions]
                result = self._schedd.submit(template, itemdata=iter(rows))
        except htcondor2.HTCondorException as err:
            raise Refused("schedd", f"the schedd refused the submission: {_one_line(err)}") from None
        cluster, first = int(result.cluster()), int(result.first_proc())
        return [f"{cluster}.{first + n}" for n in range(len(descriptions))]

    def _known_submissions(self, owner: str, submissions: list[str], since: str | None) -> dict[str, str]:
        """Which of ``owner``'s ``submissions`` already have a job: id -> C.P. The queue first, then the
        history back to where ``since`` becomes true (the service's window: a new id would otherwise make
        the schedd read its whole history file)."""
        if not submissions:
            return {}
        from lark.transfer.jobs import ATTR_SUBMISSION, classad_string

        wanted = ", ".join(classad_string(s) for s in submissions)
        where = f"Owner == {classad_string(owner)} && member({ATTR_SUBMISSION}, {{{wanted}}})"
        projection = ["ClusterId", "ProcId", ATTR_SUBMISSION]
        found: dict[str, str] = {}
        try:
            ads = list(self._schedd.query(where, projection))
            if len(ads) < len(submissions):
                ads += list(self._schedd.history(where, projection, match=len(submissions), since=since))
        except self._htcondor.HTCondorException as err:
            raise Refused("schedd", f"cannot read the queue: {_one_line(err)}") from None
        for ad in ads:
            found.setdefault(str(ad[ATTR_SUBMISSION]), f"{ad['ClusterId']}.{ad['ProcId']}")
        return found

    def remove(self, request: Mapping[str, Any]) -> dict[str, object]:
        job, reason = request.get("job"), request.get("reason")
        if not isinstance(job, str) or not isinstance(reason, str):
            raise Refused("request", "remove needs a job id and a reason")
        try:
            # as a (text, code) pair: the bindings of HTCondor 25.14 drop a reason given as a plain string
            # and write "Python-initiated action" instead
            tallies = self._schedd.act(self._htcondor.JobAction.Remove, [job], reason=(reason, None))
        except self._htcondor.HTCondorException as err:
            raise Refused("schedd", f"the schedd refused the removal: {_one_line(err)}") from None
        return {k: int(v) for k, v in dict(tallies).items() if k.startswith("Total")}


def _is_item(item: object) -> bool:
    if not isinstance(item, dict):
        return False
    description, submission = item.get("description"), item.get("submission_id")
    return (isinstance(description, dict) and bool(description)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in description.items())
            and (submission is None or isinstance(submission, str)))


def serve(hands: Hands, lines: Any, write: Callable[[str], None]) -> None:
    """Answer each request line until the input ends."""
    operations: dict[str, Callable[[Mapping[str, Any]], dict[str, object]]] = {
        "whoami": hands.whoami, "submit": hands.submit, "remove": hands.remove}
    for line in lines:
        try:
            request = json.loads(line)
            operation = operations.get(request.get("op")) if isinstance(request, dict) else None
            if operation is None:
                raise Refused("request", f"unknown request {line[:80]!r}")
            answer: dict[str, object] = operation(request)
        except Refused as err:
            answer = {"error": err.kind, "message": str(err)}
        except ValueError as err:
            answer = {"error": "request", "message": f"not JSON: {err}"}
        write(json.dumps(answer) + "\n")


def main() -> int:
    first = sys.stdin.readline()
    try:
        opening = json.loads(first)
        token, schedd_name = opening["token"], opening.get("schedd")
    except (ValueError, KeyError, TypeError):
        print(json.dumps({"error": "request", "message": "the first line must be {\"token\": ...}"}), flush=True)
        return 2
    directory = tempfile.mkdtemp(prefix=f"{TOKEN_DIR_PREFIX}{os.getpid()}-")
    try:
        fd = os.open(os.path.join(directory, "token"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        for name in [k for k in os.environ if k.startswith("_CONDOR_SEC_")]:
            del os.environ[name]
        os.environ.update(credential_settings(directory))

        def write(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        try:
            hands = Hands(schedd_name)
        except Refused as err:
            write(json.dumps({"error": err.kind, "message": str(err)}) + "\n")
            return 1
        write(json.dumps({"ready": True}) + "\n")
        serve(hands, sys.stdin, write)
        return 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
