"""Request validation: each refusal names the field; good requests resolve against the endpoints."""

from __future__ import annotations

import pytest

from lark.transfer.endpoints import parse_endpoints
from lark.transfer.model import TransferRequestError, validate

ENDPOINTS = {e.name: e for e in parse_endpoints("""\
endpoints:
  ftp:
    protocol: gridftp
    url: ftp://127.0.0.1:2811/data/
    site: FNAL
    profile: nat-callback
  web:
    protocol: https
    url: http://127.0.0.1:8080/
    site: UCSD
    users: [alice]
""", "ep.yaml")[0]}


def test_get_resolves_remote_and_local_sides() -> None:
    req = validate({"verb": "get", "source": "ftp:run1/a.dat", "destination": "/data/a.dat", "size": 1000,
                    "label": "run 1", "submission_id": "3f2a-11"}, ENDPOINTS, "bob")
    assert req.remote.url == "ftp://127.0.0.1:2811/data/run1/a.dat"
    assert (req.local, req.profile, req.size, req.label, req.submission_id) == (
        "/data/a.dat", "nat-callback", 1000, "run 1", "3f2a-11")
    assert (req.source, req.destination) == ("ftp:run1/a.dat", "/data/a.dat")


def test_put_has_the_local_side_as_source_and_a_request_may_choose_the_profile() -> None:
    req = validate({"verb": "put", "source": "/data/a.dat", "destination": "ftp:a.dat", "profile": "dtn"},
                   ENDPOINTS, "bob")
    assert (req.source, req.destination, req.profile) == ("/data/a.dat", "ftp:a.dat", "dtn")


@pytest.mark.parametrize(("body", "field", "words"), [
    ([], "body", "JSON object"),
    ({"verb": "get", "source": "ftp:a", "destination": "/a", "colour": 1}, "colour", "not a field"),
    ({"source": "ftp:a", "destination": "/a"}, "verb", "required"),
    ({"verb": "copy", "source": "ftp:a", "destination": "/a"}, "verb", "not one of get, put, delete"),
    ({"verb": "get", "destination": "/a"}, "source", "required"),
    ({"verb": "get", "source": "nope:a", "destination": "/a"}, "source", "endpoint 'nope' is not known"),
    ({"verb": "get", "source": "/a", "destination": "/b"}, "source", "not ENDPOINT:PATH"),
    ({"verb": "get", "source": "ftp:../etc/passwd", "destination": "/b"}, "source", "'..'"),
    ({"verb": "get", "source": "ftp:a", "destination": "rel/b"}, "destination", "absolute path"),
    ({"verb": "get", "source": "ftp:a"}, "destination", "required"),
    ({"verb": "put", "source": "/a", "destination": "ftp:"}, "destination", "non-empty path"),
    ({"verb": "delete", "source": "ftp:a"}, "verb", "not available on gridftp"),
    ({"verb": "delete", "source": "web:a", "destination": "/a"}, "destination", "left out for delete"),
    ({"verb": "get", "source": "ftp:a", "destination": "/a", "size": -1}, "size", "whole number"),
    ({"verb": "get", "source": "ftp:a", "destination": "/a", "size": True}, "size", "whole number"),
    ({"verb": "get", "source": "ftp:a", "destination": "/a", "size": "10"}, "size", "whole number"),
    ({"verb": "get", "source": "ftp:a", "destination": "/a", "profile": "Bad Name"}, "profile", "profile name"),
    ({"verb": "get", "source": "ftp:a", "destination": "/a", "label": "x" * 129}, "label", "128"),
    ({"verb": "get", "source": "ftp:a", "destination": "/a", "submission_id": "a b"}, "submission_id", "1-128"),
    ({"verb": 3, "source": "ftp:a", "destination": "/a"}, "verb", "must be a string"),
])
def test_refusals_name_the_field(body: object, field: str, words: str) -> None:
    with pytest.raises(TransferRequestError) as info:
        validate(body, ENDPOINTS, "bob")
    assert info.value.field == field and words in info.value.message and info.value.status == 422
    assert info.value.as_dict() == {"error": {"field": field, "message": info.value.message}}


def test_an_endpoint_the_user_may_not_use_is_forbidden() -> None:
    body = {"verb": "delete", "source": "web:a"}
    assert validate(body, ENDPOINTS, "alice").remote.url == "http://127.0.0.1:8080/a"
    with pytest.raises(TransferRequestError) as info:
        validate(body, ENDPOINTS, "bob")
    assert info.value.status == 403 and "may not use endpoint 'web' (allowed: users alice)" in info.value.message


@pytest.mark.parametrize(("field", "value"), [
    ("label", "run $(Cluster)"),
    ("label", "$ENV(HOME)"),
    ("destination", "/data/$(Owner)/a.dat"),
    ("source", "ftp:$RANDOM_CHOICE(a,b)"),
    ("label", "a $$(Memory) b"),
])
def test_a_submit_macro_never_reaches_the_submit_description(field: str, value: str) -> None:
    body = {"verb": "get", "source": "ftp:run1/a.dat", "destination": "/data/a.dat", field: value}
    with pytest.raises(TransferRequestError) as err:
        validate(body, ENDPOINTS, "bob")
    assert err.value.field == field and "submit macro" in err.value.message


def test_dollar_signs_that_are_no_macro_are_data() -> None:
    req = validate({"verb": "get", "source": "ftp:run1/a.dat", "destination": "/data/a.dat",
                    "label": "cost $5 (est.)"}, ENDPOINTS, "bob")
    assert req.label == "cost $5 (est.)"


@pytest.mark.parametrize("field", ["label", "destination", "source"])
def test_a_backslash_is_refused_because_the_submit_language_cannot_carry_it(field: str) -> None:
    body = {"verb": "get", "source": "ftp:run1/a.dat", "destination": "/data/a.dat"}
    body[field] = body.get(field, "") + "\\x"
    with pytest.raises(TransferRequestError) as err:
        validate(body, ENDPOINTS, "bob")
    assert err.value.field == field and "backslash" in err.value.message
