"""The broker's wire format: one JSON object per line each way.

The wrapper asks for the "lines" reply format: ``ok`` + ``KEY=VALUE`` lines, or ``error
<message>``, which its standard-library-only code reads without importing json.
"""

from __future__ import annotations

import json

MAX_REQUEST = 4096


def parse_request(raw: bytes) -> object:
    """One request line, parsed once; None when it is not JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # "[[[[..." nests too deep
        return None


def wants_lines(request: object) -> bool:
    """The wrapper asks for the line format (it does not import json on the job's start path)."""
    return isinstance(request, dict) and request.get("reply") == "lines"


def encode_reply(reply: dict[str, object], lines: bool) -> bytes:
    """JSON (one line), or ``ok`` + ``KEY=VALUE`` lines / ``error <message>`` for the wrapper."""
    if not lines:
        return json.dumps(reply).encode() + b"\n"
    if not reply.get("ok"):
        message = " ".join(str(reply.get("error", "unknown error")).split())  # one line
        return f"error {message}\n".encode()
    env = reply.get("env") or {}
    body = "".join(f"{k}={' '.join(str(v).split())}\n" for k, v in dict(env).items())  # type: ignore[call-overload]
    return f"ok\n{body}".encode()


