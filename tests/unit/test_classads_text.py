"""Job attributes read from a real ad, and values shown back in ClassAd terms (what a HoldReason repeats)."""

from __future__ import annotations

import classad2
import pytest

from lark.classads import SHOWN_CHARS, Unevaluated, classad_text, job_attributes


def test_job_attributes_keep_what_evaluates_to_undefined_or_error() -> None:
    ad = classad2.parseOne('[LarkA = foo.bar; LarkB = "a" + 1; LarkC = undefined; LarkD = error; LarkE = 3; '
                           'ClusterId = 9]')
    assert job_attributes(ad, prefix="lark") == {
        "LarkA": Unevaluated("undefined", "foo.bar"),
        "LarkB": Unevaluated("error", '"a" + 1'),
        # LarkC = undefined is ClassAd for "not set": left out, as if never written
        "LarkD": Unevaluated("error", "error"),
        "LarkE": 3,
    }
    assert job_attributes(ad)["ClusterId"] == 9


@pytest.mark.parametrize(("expression", "shown"), [
    ("1e308", "1e+308"),
    ("-1e308", "-1e+308"),
    ("1e309", 'real("INF")'),
    ('real("NaN")', 'real("NaN")'),
    ("100.0", "100.0"),  # a real stays a real
    ("2.5", "2.5"),
    ("9223372036854775807", "9223372036854775807"),
    ("true", "true"),
    ('"nat"', '"nat"'),
    ('"say \\"hi\\""', '"say \\"hi\\""'),
    ("{1, 2}", "{ 1, 2 }"),
    ('[a = 1; b = "x"]', '[ a = 1; b = "x" ]'),
    ("foo.bar", "foo.bar (which evaluates to undefined)"),
    ("error", "error"),
])
def test_values_are_shown_as_a_user_writes_them(expression: str, shown: str) -> None:
    ad = classad2.parseOne(f"[X = {expression}]")
    assert classad_text(job_attributes(ad)["X"]) == shown


def test_long_values_are_cut() -> None:
    assert classad_text("x" * 1000) == '"' + "x" * (SHOWN_CHARS - 8) + '..." (1000 characters)'
    assert classad_text(10**400) == "1e+400"  # a Python caller's int, not 401 digits
    assert classad_text(classad2.Value.Undefined) == "undefined"  # what the broker's plain eval gives
    assert len(classad_text(list(range(1000)))) == SHOWN_CHARS
