"""Why the schedd probably refused a bearer token, read from the token itself. Pure, standard library only.

The schedd verifies every token (an HTCondor IDTOKEN, a SciToken or a WLCG token) and, when it refuses
one, tells the client no more than "failed to authenticate": the reason is in the schedd's own log.
:func:`explain_refusal` decodes the token's claims **without verifying its signature** and says what
the caller can check for themselves, for the 401 message::

    the token expired at 2026-12-07T18:04:38Z (10 min before the request); issuer
    https://tokens.example.org, subject alice, audience https://schedd.example.org

Nothing here decides whether a token is good: a token that decodes fine may still be forged, and the
explanation names the claims the schedd checks (its time, its issuer and subject, which the map file
must map, and its audience, which ``SCITOKENS_SERVER_AUDIENCE`` must hold) so the user can see which
one is off. The claims are the caller's own, so echoing them back reveals nothing new; they are cut
short and stripped of control characters because they are untrusted text.
"""

from __future__ import annotations

import base64
import binascii
import json
import time

from lark.values import human_duration

MAX_TOKEN_CHARS = 16384  # as schedd.TOKEN_RE: longer is no token the service accepts
MAX_CLAIM_CHARS = 120  # an issuer URL or a subject fits; a claim stuffed with text does not flood the message
# The schedd's SciTokens library checks times itself with a little slack; a token this close to its
# expiry is called out as "about to expire" rather than guessed to be the reason
CLOCK_SLACK = 60.0


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def token_claims(token: str) -> dict[str, object] | None:
    """The payload of the JWT ``token`` as a dict, **unverified**; None when it is not a JWT."""
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    try:
        header = json.loads(_b64url(parts[0]))
        payload = json.loads(_b64url(parts[1]))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    return payload


def _text(value: object) -> str | None:
    """A claim as one short printable line (a list of audiences joined); None when absent or empty."""
    if isinstance(value, list):
        items = [_text(v) for v in value]
        value = " ".join(i for i in items if i)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = "".join(c if c.isprintable() else "?" for c in str(value)).strip()
    if not text:
        return None
    return text if len(text) <= MAX_CLAIM_CHARS else text[:MAX_CLAIM_CHARS - 3] + "..."


def _time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def explain_refusal(token: str, now: float) -> str | None:
    """Why a token the schedd refused was probably refused, from its unverified claims; None when the
    token is no JWT (nothing to read).

    A time problem (expired, not yet valid, issued in the future) comes first, as the likely reason;
    then the claims the schedd maps and checks: issuer, subject, audience and, for a WLCG token, the
    profile version.
    """
    claims = token_claims(token)
    if claims is None:
        return None
    problems: list[str] = []
    expires = _time(claims.get("exp"))
    not_before = _time(claims.get("nbf"))
    issued = _time(claims.get("iat"))
    if expires is not None and expires <= now:
        problems.append(f"the token expired at {_when(expires)} ({human_duration(now - expires)} before the request)")
    elif expires is not None and expires - now < CLOCK_SLACK:
        problems.append(f"the token expires at {_when(expires)}, within {human_duration(expires - now)}")
    if not_before is not None and not_before > now:
        problems.append(f"the token is not valid before {_when(not_before)} ({human_duration(not_before - now)} after "
                        "the request)")
    elif issued is not None and issued > now + CLOCK_SLACK:
        problems.append(f"the token was issued at {_when(issued)}, {human_duration(issued - now)} after the request "
                        "(is the issuer's clock right?)")
    described = [f"{label} {text}" for label, text in (
        ("issuer", _text(claims.get("iss"))),
        ("subject", _text(claims.get("sub"))),
        ("audience", _text(claims.get("aud"))),
        ("WLCG profile", _text(claims.get("wlcg.ver"))),
    ) if text]
    if not problems:
        if not described:
            return "the token names no issuer, subject or audience"
        return ("the token's times are valid; the schedd may not trust its issuer, map its subject or "
                "accept its audience, or it revoked the token: " + ", ".join(described))
    return "; ".join(problems) + (f"; {', '.join(described)}" if described else "")
