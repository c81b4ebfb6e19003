"""``lark transfer``: a thin client of ``lark-transferd`` (get, put, rm, ls, status, logs, wait).

The service's address comes from ``--url`` (default ``http://127.0.0.1:8642``); the token from
``--token-file``, else the first file of ``~/.condor/tokens.d`` (where ``condor_token_fetch`` puts
the user's IDTOKEN), else ``$BEARER_TOKEN_FILE`` / ``$XDG_RUNTIME_DIR/bt_u<uid>`` (the WLCG bearer
token discovery for SciTokens). ``requests`` comes with the ``[transfer]`` extra and is imported
only when the command runs.

Exit status: 0 done (``wait``: SUCCEEDED), 1 the service refused or the transfer did not succeed,
2 usage or a missing token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from lark.errors import LarkError

DEFAULT_URL = "http://127.0.0.1:8642"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")


class ServiceError(LarkError):
    """The service answered with an error: ``field: message`` as it said."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message} (HTTP {status})")
        self.status = status


def find_token(explicit: Path | None) -> str:
    """The bearer token to send (see the module's docstring for where it is looked for)."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    else:
        tokens_d = Path.home() / ".condor" / "tokens.d"
        if tokens_d.is_dir():
            candidates += sorted(p for p in tokens_d.iterdir() if p.is_file() and not p.name.startswith("."))
        if os.environ.get("BEARER_TOKEN_FILE"):
            candidates.append(Path(os.environ["BEARER_TOKEN_FILE"]))
        if os.environ.get("XDG_RUNTIME_DIR"):
            candidates.append(Path(os.environ["XDG_RUNTIME_DIR"]) / f"bt_u{os.getuid()}")
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError as err:
            if explicit is not None:  # the user named it: say why it cannot be used
                raise LarkError(f"cannot read the token file {path}: {err.strerror}") from None
            continue
        if text:
            return text.split()[0]
    raise LarkError("no token: give --token-file, or fetch one with condor_token_fetch (~/.condor/tokens.d)")


class Client:
    """The API, one method per call; raises :class:`ServiceError` with the service's own words."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as err:
            raise LarkError(f"cannot reach the transfer service at {self.url}: {err}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise ServiceError(response.status_code, str(error.get("field", "service")),
                               str(error.get("message", response.text.strip()[:300])))
        return body

    def create(self, body: dict[str, object]) -> dict[str, Any]:
        return self.call("POST", "/v1/transfers", json=body)  # type: ignore[no-any-return]

    def transfer(self, transfer_id: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/transfers/{transfer_id}")  # type: ignore[no-any-return]


def _line(t: dict[str, Any]) -> str:
    moved = t.get("bytes")
    rate = t.get("rate_mbit")
    parts = [f"{t['id']:>8}", f"{t.get('state', ''):<9}", f"{t.get('verb', ''):<6}", f"{t.get('source', '')} -> "
             f"{t.get('destination', '') or '-'}"]
    if moved is not None:
        parts.append(f"{moved} B")
    if rate is not None:
        parts.append(f"{rate:.1f} Mbit/s")
    if t.get("reason"):
        parts.append(f"({t['reason']})")
    return "  ".join(parts)


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    print(json.dumps(value, indent=1, sort_keys=True) if args.json else text)


def cmd_transfer(args: argparse.Namespace) -> int:
    try:
        client = Client(args.url, find_token(args.token_file), timeout=args.timeout)
    except ImportError:
        print("lark transfer: requests is missing; install the extra: pip install 'htcondor-lark[transfer]'",
              file=sys.stderr)
        return 2
    try:
        return int(VERBS[args.verb](client, args))
    except ServiceError as err:
        print(f"lark transfer: {err}", file=sys.stderr)
        return 1


def _create(client: Client, args: argparse.Namespace, verb: str) -> int:
    body: dict[str, object] = {"verb": verb, "source": args.source, "submission_id": args.submission_id or
                               str(uuid.uuid4())}
    if verb != "delete":
        body["destination"] = args.destination
    for key in ("size", "profile", "label"):
        if getattr(args, key, None) is not None:
            body[key] = getattr(args, key)
    view = client.create(body)
    _print(args, view, view["id"])
    if getattr(args, "wait", False):
        return _wait(client, view["id"], args)
    return 0


def _wait(client: Client, transfer_id: str, args: argparse.Namespace) -> int:
    """Poll until the transfer ends, redrawing one progress line on a terminal."""
    tty = sys.stderr.isatty()
    deadline = time.monotonic() + args.wait_timeout if args.wait_timeout else None
    while True:
        view = client.transfer(transfer_id)
        line = _line(view)
        if tty:
            print("\r\033[K" + line, end="", file=sys.stderr, flush=True)
        elif not args.json:
            print(line, file=sys.stderr, flush=True)
        if view["state"] in TERMINAL:
            break
        if deadline is not None and time.monotonic() > deadline:
            if tty:
                print(file=sys.stderr)
            print(f"lark transfer: {transfer_id} is still {view['state']} after {args.wait_timeout:g} s",
                  file=sys.stderr)
            return 1
        time.sleep(args.interval)
    if tty:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(view, indent=1, sort_keys=True))
    return 0 if view["state"] == "SUCCEEDED" else 1


def _get(client: Client, args: argparse.Namespace) -> int:
    return _create(client, args, "get")


def _put(client: Client, args: argparse.Namespace) -> int:
    return _create(client, args, "put")


def _rm(client: Client, args: argparse.Namespace) -> int:
    if args.remote:
        body = {"verb": "delete", "source": args.target, "submission_id": args.submission_id or str(uuid.uuid4())}
        view = client.create(body)
    else:
        view = client.call("DELETE", f"/v1/transfers/{args.target}")
    _print(args, view, _line(view))
    return 0


def _ls(client: Client, args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("state", args.state), ("label", args.label), ("limit", args.limit),
                                ("offset", args.offset)) if v is not None}
    page = client.call("GET", "/v1/transfers", params=params)
    _print(args, page, "\n".join(_line(t) for t in page["transfers"]) or "no transfers")
    return 0


def _status(client: Client, args: argparse.Namespace) -> int:
    view = client.transfer(args.id)
    _print(args, view, _line(view))
    return 0


def _logs(client: Client, args: argparse.Namespace) -> int:
    log = client.call("GET", f"/v1/transfers/{args.id}/log")
    keys = ("event_log", "stdout", "stderr")
    text = "\n".join(f"== {key} ==\n{(log.get(key) or '(empty)').rstrip()}" for key in keys)
    _print(args, log, text)
    return 0


def _wait_cmd(client: Client, args: argparse.Namespace) -> int:
    return _wait(client, args.id, args)


VERBS = {"get": _get, "put": _put, "rm": _rm, "ls": _ls, "status": _status, "logs": _logs, "wait": _wait_cmd}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("transfer", help="move data through the transfer service (lark-transferd)",
                       description="A client of lark-transferd: each transfer is an HTCondor job submitted "
                                   "as you, with your own token.")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL})")
    p.add_argument("--token-file", type=Path, help="bearer token (default: ~/.condor/tokens.d, BEARER_TOKEN_FILE)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    p.set_defaults(func=cmd_transfer)
    verbs = p.add_subparsers(dest="verb", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--json", action="store_true", help="print JSON")

    def waiting(q: argparse.ArgumentParser) -> None:
        q.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
        q.add_argument("--wait-timeout", type=float, default=0, help="give up after this many seconds (0: never)")

    for name, what in (("get", "copy ENDPOINT:PATH to a local path"), ("put", "copy a local path to ENDPOINT:PATH")):
        q = verbs.add_parser(name, help=what, description=what)
        q.add_argument("source")
        q.add_argument("destination")
        q.add_argument("--size", type=int, help="bytes, for network-aware matchmaking")
        q.add_argument("--profile", help="network profile (default: the endpoint's)")
        q.add_argument("--label", help="a label to find it by")
        q.add_argument("--submission-id", help="reuse to retry safely (default: a new UUID)")
        q.add_argument("--wait", action="store_true", help="wait until it ends, showing progress")
        common(q)
        waiting(q)
    q = verbs.add_parser("rm", help="cancel a transfer (ID), or with --remote delete ENDPOINT:PATH")
    q.add_argument("target", metavar="ID|ENDPOINT:PATH")
    q.add_argument("--remote", action="store_true", help="delete the remote file ENDPOINT:PATH (a delete transfer)")
    q.add_argument("--submission-id")
    common(q)
    q = verbs.add_parser("ls", help="list your transfers")
    q.add_argument("--state", help="QUEUED, ACTIVE, INACTIVE, SUCCEEDED, FAILED or CANCELED")
    q.add_argument("--label")
    q.add_argument("--limit", type=int)
    q.add_argument("--offset", type=int)
    common(q)
    for name, what in (("status", "show one transfer"), ("logs", "show a transfer's event log and mover output"),
                       ("wait", "wait until a transfer ends, showing progress")):
        q = verbs.add_parser(name, help=what, description=what)
        q.add_argument("id")
        common(q)
        if name == "wait":
            waiting(q)
    return p
