"""explain_refusal: why a refused bearer token was probably refused, read from its unverified claims."""

from __future__ import annotations

import base64
import calendar
import json

import pytest

from lark.transfer.tokens import MAX_CLAIM_CHARS, explain_refusal, token_claims

NOW = float(calendar.timegm((2026, 12, 7, 18, 0, 0)))  # every time below is relative to it
ISSUER = "https://tokens.example.org/lark"


def _part(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def jwt(claims: object, header: object = None) -> str:
    """A JWT of ``claims`` whose signature is junk: the explanation never looks at it."""
    return f"{_part(header or {'alg': 'ES256', 'kid': 'key-1', 'typ': 'JWT'})}.{_part(claims)}.c2lnbmF0dXJl"


def claims(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {"iss": ISSUER, "sub": "alice", "aud": "https://schedd.example.org",
                               "scope": "condor:/READ condor:/WRITE", "iat": NOW - 600, "nbf": NOW - 600,
                               "exp": NOW + 600, "jti": "4d1c"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def test_an_expired_token_says_when_it_expired_and_names_its_issuer_subject_and_audience() -> None:
    text = explain_refusal(jwt(claims(exp=NOW - 600)), NOW)
    assert text == ("the token expired at 2026-12-07T17:50:00Z (10 min before the request); issuer "
                    f"{ISSUER}, subject alice, audience https://schedd.example.org")


@pytest.mark.parametrize(("age", "said"), [(1, "1 s"), (5400, "90 min"), (7 * 3600, "7.0 h"), (3 * 86400, "3.0 d")])
def test_how_long_ago_it_expired_reads_in_a_fitting_unit(age: float, said: str) -> None:
    assert f"({said} before the request)" in (explain_refusal(jwt(claims(exp=NOW - age)), NOW) or "")


def test_a_token_expiring_at_the_request_is_expired() -> None:
    assert "the token expired at" in (explain_refusal(jwt(claims(exp=NOW)), NOW) or "")


def test_a_token_about_to_expire_is_called_out() -> None:
    text = explain_refusal(jwt(claims(exp=NOW + 20)), NOW) or ""
    assert text.startswith("the token expires at 2026-12-07T18:00:20Z, within 20 s")


def test_a_token_not_yet_valid_says_from_when() -> None:
    text = explain_refusal(jwt(claims(nbf=NOW + 3600, iat=NOW + 3600)), NOW) or ""
    assert text.startswith("the token is not valid before 2026-12-07T19:00:00Z (60 min after the request); ")


def test_a_token_issued_in_the_future_points_at_the_issuers_clock() -> None:
    text = explain_refusal(jwt(claims(iat=NOW + 900, nbf=None)), NOW) or ""
    assert "issued at 2026-12-07T18:15:00Z, 15 min after the request (is the issuer's clock right?)" in text
    # a second of skew is no reason
    assert "issued at" not in (explain_refusal(jwt(claims(iat=NOW + 1, nbf=None)), NOW) or "")


def test_a_token_whose_times_are_fine_names_what_the_schedd_maps_and_checks() -> None:
    text = explain_refusal(jwt(claims(aud=["https://a.example", "https://b.example"], **{"wlcg.ver": "1.0"})), NOW)
    assert text == ("the token's times are valid; the schedd may not trust its issuer, map its subject or accept "
                    f"its audience, or it revoked the token: issuer {ISSUER}, subject alice, "
                    "audience https://a.example https://b.example, WLCG profile 1.0")


def test_an_htcondor_idtoken_is_explained_too() -> None:
    # what condor_token_create makes: the trust domain as issuer, user@domain as subject, no audience
    idtoken = jwt({"iss": "lark.test", "sub": "alice@lark.test", "iat": NOW - 7200, "exp": NOW - 3600,
                   "jti": "a1"}, header={"alg": "HS256", "kid": "POOL", "typ": "JWT"})
    assert explain_refusal(idtoken, NOW) == ("the token expired at 2026-12-07T17:00:00Z (60 min before the "
                                             "request); issuer lark.test, subject alice@lark.test")


def test_a_token_without_times_or_names_says_so() -> None:
    assert explain_refusal(jwt({"scope": "condor:/READ"}), NOW) == "the token names no issuer, subject or audience"


@pytest.mark.parametrize("token", [
    "", "not-a-token", "a.b", "a.b.c.d", ".e30.", "!!!.e30.sig",
    f"{_part({'alg': 'none'})}.{_part(['a', 'list'])}.sig",  # the payload is no object
    f"{_part('header')}.{_part({'sub': 'x'})}.sig",  # the header is no object
    f"{_part({'alg': 'none'})}.{base64.urlsafe_b64encode(b'{not json').decode()}.sig",
    f"{_part({'alg': 'none'})}.{base64.urlsafe_b64encode(bytes([0xff, 0xfe])).decode()}.sig",
    jwt(claims(sub="x" * 20000)),  # longer than any token the service takes
])
def test_what_is_no_jwt_has_no_explanation(token: str) -> None:
    assert token_claims(token) is None
    assert explain_refusal(token, NOW) is None


def test_untrusted_claims_are_cut_short_and_stripped_of_control_characters() -> None:
    text = explain_refusal(jwt(claims(sub="mallory\n\x1b[31mADMIN", iss="https://" + "x" * 500)), NOW) or ""
    assert "\n" not in text and "\x1b" not in text
    assert "subject mallory??[31mADMIN" in text
    issuer = text.split("issuer ", 1)[1].split(",", 1)[0]
    assert len(issuer) == MAX_CLAIM_CHARS and issuer.endswith("...")


def test_claims_of_the_wrong_type_are_left_out_not_trusted() -> None:
    text = explain_refusal(jwt(claims(exp="tomorrow", sub={"name": "alice"}, aud=True)), NOW)
    assert text == ("the token's times are valid; the schedd may not trust its issuer, map its subject or accept "
                    f"its audience, or it revoked the token: issuer {ISSUER}")


def test_a_token_minted_by_the_scitokens_library_reads_as_minted() -> None:
    import scitokens  # the [test] extra
    from cryptography.hazmat.primitives.asymmetric import ec

    token = scitokens.SciToken(key=ec.generate_private_key(ec.SECP256R1()), key_id="key-1")
    token.update_claims({"sub": "alice", "aud": "https://schedd.example.org", "scope": "compute.create",
                         "wlcg.ver": "1.0"})
    serialized = token.serialize(issuer=ISSUER, lifetime=-300).decode()  # minted already expired
    read = token_claims(serialized)
    assert read is not None and read["sub"] == "alice" and read["iss"] == ISSUER
    assert read["exp"] == read["iat"] - 300  # type: ignore[operator]
    text = explain_refusal(serialized, float(read["iat"]))  # type: ignore[arg-type]
    assert text == ("the token expired at " + _iso(read["exp"]) + " (5 min before the request); issuer "  # type: ignore[arg-type]
                    f"{ISSUER}, subject alice, audience https://schedd.example.org, WLCG profile 1.0")


def _iso(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
