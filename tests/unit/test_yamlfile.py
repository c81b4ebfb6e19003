"""The shared reader of admin-written YAML: bounds, line numbers and 'FILE:LINE: message' errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lark.errors import ConfigError
from lark.yamlfile import YamlFileError, YamlLimits, compose, line_of, load, read_text

SMALL = YamlLimits(what="a test file", max_bytes=200, max_nesting=5, max_values=20, usual_nesting=3,
                   usual_values="a dozen", too_large_advice="split it")


def refusal(text: str, limits: YamlLimits = SMALL) -> str:
    with pytest.raises(YamlFileError) as info:
        load(text, "t.yaml", limits)
    assert isinstance(info.value, ConfigError)  # callers that catch configuration errors catch these
    return str(info.value)


def test_values_and_lines_of_a_good_file() -> None:
    text = "a:\n  b: [1, 2]\n  c:\n    - x\n    - {d: 4}\n"
    document, value = load(text, "t.yaml", SMALL)
    assert value == {"a": {"b": [1, 2], "c": ["x", {"d": 4}]}}
    assert line_of(document.root, ("a", "c", 1, "d")) == 5
    assert line_of(document.root, ("a", "b", 1)) == 2
    # a step that is not there: the line of the last value found on the way
    assert line_of(document.root, ("a", "c", 7)) == 4
    assert line_of(document.root, ("nope",)) == 1
    assert load("", "t.yaml", SMALL)[1] is None  # an empty file is an empty document


@pytest.mark.parametrize(("text", "message"), [
    ("a: [1\nb: 2\n", "t.yaml:2: is not valid YAML: expected ',' or ']', but got ':' (while parsing a flow "
                      "sequence started at line 1)"),
    ("a: 1\n---\nb: 2\n", "t.yaml:2: is not valid YAML: but found another document (expected a single document "
                          "in the stream started at line 1)"),
    ("a: [[[[1]]]]\n", "t.yaml:1: is not valid YAML: collections are nested more than 5 levels deep (a test file "
                       "needs 3)"),
    ("a: \x07\n", "t.yaml:1: is not valid YAML: unacceptable character #x0007: special characters are not allowed"),
    # a tag no safe loader builds is refused at its line, not run
    ("a: 1\nb: !!python/object:os.system x\n", "t.yaml:2: is not valid YAML: could not determine a constructor for "
                                               "the tag 'tag:yaml.org,2002:python/object:os.system'"),
])
def test_syntax_errors_say_file_line_and_what(text: str, message: str) -> None:
    assert refusal(text) == message


def test_aliases_that_multiply_or_contain_themselves_are_refused_at_their_line() -> None:
    # 1 + 3 * (1 + 3 * (1 + 2)) = 31 values once the aliases are expanded, from 4 short lines
    text = "a: &a [1, 2]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\nd: 1\n"
    assert refusal(text) == ("t.yaml:3: holds more than 20 values, counting what aliases (*name) and merge keys "
                             "(<<) repeat; a test file needs a dozen")
    # the same values written out once each pass
    assert load("a: &a [1, 2]\nb: [*a, *a]\n", "t.yaml", SMALL)[1] == {"a": [1, 2], "b": [[1, 2], [1, 2]]}
    assert refusal("a: &a\n  b: 1\n  <<: *a\n") == "t.yaml:1: has a value that contains itself through an alias (*name)"
    assert refusal("x: 1\na: &a [*a]\n") == "t.yaml:2: has a value that contains itself through an alias (*name)"


def test_size_limit_on_the_text_and_on_the_file(tmp_path: Path) -> None:
    text = "a: " + "x" * 300 + "\n"
    assert refusal(text) == "t.yaml: is 304 bytes, more than the 200 bytes a test file may hold; split it"
    path = tmp_path / "big.yaml"
    path.write_text(text)
    with pytest.raises(YamlFileError) as info:
        read_text(path, SMALL)
    assert str(info.value) == f"{path}: is 304 bytes, more than the 200 bytes a test file may hold; split it"
    mib = YamlLimits("a file", 1 << 20, 4, 20, 3, "a few")
    path.write_bytes(b"#" * (3 << 19))
    with pytest.raises(YamlFileError, match=r"is 1572864 bytes \(1.5 MiB\), more than the 1048576 bytes \(1 MiB\)"):
        read_text(path, mib)
    path.write_bytes(b"a: caf\xe9\n")
    with pytest.raises(YamlFileError, match="cannot be read: 'utf-8' codec can't decode byte 0xe9") as bad:
        read_text(path, SMALL)
    assert bad.value.line is None and bad.value.source == str(path)
    path.write_text("a: 1\n")
    assert read_text(path, SMALL) == "a: 1\n"
    with pytest.raises(FileNotFoundError):  # the caller words a missing file its own way
        read_text(tmp_path / "none.yaml", SMALL)


def test_compose_keeps_the_tree_for_the_caller_to_read() -> None:
    document = compose("a:\n  <<: {b: 1}\n  c: 2\n", "t.yaml", SMALL)
    assert document.root is not None and document.line(document.root) == 1
    assert document.construct(document.root) == {"a": {"b": 1, "c": 2}}
    assert str(document.error(document.root.value[0][1], "is wrong")) == "t.yaml:2: is wrong"
