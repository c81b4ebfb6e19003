"""The transfer service's hands on the real schedd: ``python -m lark.transfer.worker`` run as root in the pool,
as ``lark-transferd`` runs it, holding one user's IDTOKEN.

What is checked is what the schedd does with it: the jobs are the token's user's; a batch of one shape is
one cluster whose procs each carry their own request; a request the schedd refuses fails alone; a
submission id is found in the queue and, within the window, in the history; another user's job cannot be
removed; a refused token is never HTCondor's own identity, though root can read the pool's signing key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lark.transfer.endpoints import parse_endpoints
from lark.transfer.jobs import ATTR_DESTINATION, ATTR_LABEL, ATTR_SUBMISSION, submit_description
from lark.transfer.model import validate
from tests.pool.harness import USER, Pool

pytestmark = pytest.mark.pool

OTHER = "larkother"
PYTHON = "/opt/lark/venv/bin/python"
ENDPOINTS = """\
endpoints:
  web:
    protocol: https
    url: http://192.0.2.1/data/
    site: WAN
"""
REJECT_LABEL = "refused-by-the-schedd"
SUBMIT_RULE = f"""\
SUBMIT_REQUIREMENT_NAMES = $(SUBMIT_REQUIREMENT_NAMES) LarkWorkerTest
SUBMIT_REQUIREMENT_LarkWorkerTest = {ATTR_LABEL} =!= "{REJECT_LABEL}"
SUBMIT_REQUIREMENT_LarkWorkerTest_REASON = "this label is refused"
"""


@pytest.fixture(scope="module")
def tokens(pool: Pool) -> Iterator[dict[str, str]]:
    pool.run(["useradd", "-m", OTHER], check=False)  # this run's overlay only
    pool.add_config("78-lark-worker-test.conf", SUBMIT_RULE)
    pool.reconfig()
    try:
        yield {user: pool.run(["condor_token_create", "-identity", f"{user}@lark.test"]).stdout.strip()
               for user in (USER, OTHER)}
    finally:
        pool.run(["condor_rm", "-all"], check=False)
        pool.remove_config("78-lark-worker-test.conf")
        pool.reconfig()


def ask(pool: Pool, token: str, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Start a worker with ``token`` (as root, like the service), send ``requests``, return the answers."""
    lines = [json.dumps({"token": token, "schedd": None})] + [json.dumps(r) for r in requests]
    done = pool.run([PYTHON, "-I", "-m", "lark.transfer.worker"], input="\n".join(lines) + "\n", timeout=120,
                    check=False)
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert answers, f"the worker said nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    assert answers[0] == {"ready": True}, answers[0]
    return answers[1:]


def description(pool: Pool, destination: str, label: str = "", submission_id: str | None = None,
                **extra: str) -> dict[str, str]:
    """The description the service would submit for a get to ``destination``, held so it never runs."""
    endpoints = {e.name: e for e in parse_endpoints(ENDPOINTS, "test")[0]}
    body: dict[str, object] = {"verb": "get", "source": "web:file", "destination": destination, "label": label}
    if submission_id:
        body["submission_id"] = submission_id
    request = validate(body, endpoints, USER)
    return {**submit_description(request, f"{pool.home(USER)}/worker-test"), "initialdir": "/tmp", "hold": "true",
            **extra}


def item(desc: dict[str, str], submission_id: str | None = None) -> dict[str, object]:
    return {"description": desc, "submission_id": submission_id}


def job_id(text: str) -> tuple[int, int]:
    cluster, _, proc = text.partition(".")
    return int(cluster), int(proc)


def submit(pool: Pool, token: str, items: list[dict[str, object]], owner: str = USER,
           since: str | None = None) -> list[dict[str, Any]]:
    [answer] = ask(pool, token, {"op": "submit", "owner": owner, "history_since": since, "items": items})
    assert "items" in answer, answer
    return answer["items"]


def test_a_batch_of_one_shape_is_one_cluster_whose_procs_carry_their_own_requests(
        pool: Pool, tokens: dict[str, str]) -> None:
    stamp = str(time.time_ns())
    wanted = [(f"/tmp/dest-{stamp}-{n}", f"label {n} with \"quotes\", $5 (and) {{braces}}") for n in range(3)]
    answers = submit(pool, tokens[USER], [item(description(pool, d, label)) for d, label in wanted])
    jobs = [job_id(a["job"]) for a in answers]
    assert len({cluster for cluster, _ in jobs}) == 1 and sorted(p for _, p in jobs) == [0, 1, 2]
    cluster = jobs[0][0]
    ads = {ad["ProcId"]: ad for ad in pool.q(f"ClusterId == {cluster}", ["ProcId", "Owner", ATTR_DESTINATION,
                                                                          ATTR_LABEL])}
    for (dest, label), (_, proc) in zip(wanted, jobs, strict=True):
        assert ads[proc]["Owner"] == USER  # the token's user, though the worker runs as root
        assert ads[proc][ATTR_DESTINATION] == dest
        assert ads[proc][ATTR_LABEL] == label  # each proc its own, quoting kept


def test_a_request_the_schedd_refuses_fails_alone(pool: Pool, tokens: dict[str, str]) -> None:
    stamp = str(time.time_ns())
    good = [description(pool, f"/tmp/good-{stamp}-{n}") for n in range(2)]
    bad = description(pool, f"/tmp/bad-{stamp}", label=REJECT_LABEL)
    answers = submit(pool, tokens[USER], [item(good[0]), item(bad), item(good[1])])
    assert "job" in answers[0] and "job" in answers[2], answers
    assert "error" in answers[1] and "this label is refused" in answers[1]["error"], answers[1]
    queued = pool.q(f'{ATTR_DESTINATION} == "/tmp/bad-{stamp}"', ["ClusterId"])
    assert queued == []


def test_a_submission_id_is_found_in_the_queue_in_the_batch_and_in_the_history_window(
        pool: Pool, tokens: dict[str, str]) -> None:
    stamp = str(time.time_ns())
    held, runs = f"held-{stamp}", f"runs-{stamp}"
    first = submit(pool, tokens[USER], [item(description(pool, "/tmp/a", submission_id=held), held),
                                        item(description(pool, "/tmp/b", submission_id=held), held)])
    # the second of one id in the same batch gets the first's job, and nothing else is submitted
    assert first[1] == {"existing": first[0]["job"]}, first
    again = submit(pool, tokens[USER], [item(description(pool, "/tmp/a", submission_id=held), held)])
    assert again == [{"existing": first[0]["job"]}]
    assert len(pool.q(f'{ATTR_SUBMISSION} == "{held}"', ["ClusterId"])) == 1

    # a job that has left the queue is found in the history, but only back to where ``since`` stops
    quick = description(pool, "/tmp/c", submission_id=runs)
    quick.update({"hold": "false", "executable": "/bin/true", "arguments": ""})
    [done] = submit(pool, tokens[USER], [item(quick, runs)])
    cluster, _ = job_id(done["job"])
    pool.wait(cluster, timeout=120)
    window = f"EnteredCurrentStatus < {int(time.time()) - 3600}"
    assert submit(pool, tokens[USER], [item(quick, runs)], since=window) == [{"existing": done["job"]}]
    # a window that ends before the job finished does not reach it: the id is new again
    nothing = f"EnteredCurrentStatus < {int(time.time()) + 3600}"
    [fresh] = submit(pool, tokens[USER], [item({**quick, "hold": "true"}, runs)], since=nothing)
    assert "job" in fresh and fresh["job"] != done["job"]


def test_another_users_job_cannot_be_removed_with_a_users_token(pool: Pool, tokens: dict[str, str]) -> None:
    [theirs] = submit(pool, tokens[OTHER], [item(description(pool, "/tmp/theirs"))], owner=OTHER)
    job = theirs["job"]
    [tallies] = ask(pool, tokens[USER], {"op": "remove", "job": job, "reason": "not mine"})
    assert tallies.get("TotalSuccess") == 0 and tallies.get("TotalPermissionDenied") == 1, tallies
    cluster, proc = job_id(job)
    [ad] = pool.q(f"ClusterId == {cluster} && ProcId == {proc}", ["Owner", "JobStatus"])
    assert ad["Owner"] == OTHER and ad["JobStatus"] != 3
    [tallies] = ask(pool, tokens[OTHER], {"op": "remove", "job": job, "reason": "mine"})
    assert tallies.get("TotalSuccess") == 1, tallies
    [ad] = pool.history(cluster, ["RemoveReason"]) or pool.q(f"ClusterId == {cluster}", ["RemoveReason"])
    assert ad["RemoveReason"] == f"mine (by user {OTHER})"  # the reason given, not the bindings' default


def test_a_refused_token_is_nobody_even_for_root_who_can_read_the_pool_key(pool: Pool,
                                                                          tokens: dict[str, str]) -> None:
    header, claims, signature = tokens[USER].split(".")
    forged = f"{header}.{claims}.{signature[::-1]}"
    answers = ask(pool, forged, {"op": "whoami"},
                  {"op": "submit", "owner": USER, "history_since": None,
                   "items": [item(description(pool, "/tmp/forged"))]})
    assert answers[0]["error"] == "unauthenticated", answers[0]
    assert "error" in answers[1]["items"][0], answers[1]  # the schedd refused the submission too
    assert pool.q(f'{ATTR_DESTINATION} == "/tmp/forged"', ["ClusterId"]) == []
    [me] = ask(pool, tokens[USER], {"op": "whoami"})
    assert me["identity"] == f"{USER}@lark.test"
