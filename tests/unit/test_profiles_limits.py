"""Profile files that are too big, too deep or self-multiplying are refused quickly, by name and size;
a file with several errors gets every one reported."""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import pytest

from lark.cli import profiles as cli
from lark.profiles import MAX_FILE_BYTES, MAX_PROFILES, MAX_VALUES, load_profiles, parse_profiles

GOOD = "profiles:\n  small:\n    attach: nat\n"


def check(directory: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[int, list[str]]:
    """``lark profiles check DIR`` with the built-in knobs: exit code and output lines."""
    conf = tmp_path / "empty.conf"
    conf.write_text("")
    monkeypatch.setenv("LARK_CONFIG", str(conf))
    parser = argparse.ArgumentParser(prog="lark")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["profiles", "check", str(directory)])
    out = io.StringIO()
    code = args.func(args, out)
    return code, out.getvalue().splitlines()


def test_an_oversize_file_is_refused_by_name_and_size_before_it_is_parsed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "profiles.d"
    d.mkdir()
    (d / "a-small.yaml").write_text(GOOD)
    big = d / "huge.yaml"
    # valid YAML a parser would have to read to the end: profiles after 4.5 MiB of comments
    with big.open("w") as f:
        line = "# " + "x" * 1022 + "\n"
        f.write(line * (9 << 9))  # 4.5 MiB
        f.write("profiles:\n  late:\n    attach: nat\n")
    size = big.stat().st_size
    started = time.monotonic()
    code, lines = check(d, monkeypatch, tmp_path)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"{elapsed:.1f} s: the file was parsed"
    assert code == 1
    assert lines[0] == (f"{big}: is {size} bytes (4.5 MiB), more than the {MAX_FILE_BYTES} bytes (1 MiB) a profile "
                        "file may hold; not read, so none of its profiles is offered (split it into several files)")
    assert lines[-1] == f"1 error(s) in {d}; offered: small"  # the other file still counts


def test_every_type_error_of_a_file_is_reported_with_line_and_key() -> None:
    text = ("profiles:\n"
            "  p:\n"
            "    attach: [nat]\n"           # 3: a list, not a mode
            "    bandwidth_mbit: fast\n"    # 4
            "    inbound_ports: many\n")    # 5
    profiles, errors = parse_profiles(text, "three.yaml")
    assert profiles == []
    assert sorted((e.line, e.key) for e in errors) == [(3, "attach"), (4, "bandwidth_mbit"), (5, "inbound_ports")]
    assert [str(e) for e in sorted(errors, key=lambda e: e.line or 0)] == [
        "three.yaml:3: profile 'p': key 'attach' must be one of nat, bridge, macvlan, ipvlan, none, got a list",
        "three.yaml:4: profile 'p': key 'bandwidth_mbit' must be a whole number 0..34359 (0 = unlimited; one TBF "
        "qdisc goes up to 34 Gbit/s), got 'fast'",
        "three.yaml:5: profile 'p': key 'inbound_ports' must be a whole number 1..65535 (leave the key out for no "
        "inbound ports), got 'many'",
    ]


def test_keys_written_twice_do_not_hide_the_other_errors() -> None:
    text = ("profiles:\n"
            "  p:\n"
            "    attach: nat\n"
            "    cpus: 1\n"
            "    cpus: 2\n"                 # 5
            "    bandwidth_mbit: -5\n"      # 6
            "  q:\n"
            "    attach: nat\n"
            "  q:\n"                        # 9
            "    attach: nat\n"
            "  r:\n"
            "    attach: bridge\n"          # 12: needs a parent and a pool
            "    deny: [not-a-net]\n")      # 13
    profiles, errors = parse_profiles(text, "twice.yaml")
    assert profiles == []
    assert sorted((e.line, e.profile, e.key) for e in errors) == [
        (5, "p", "cpus"), (6, "p", "bandwidth_mbit"), (9, "q", None), (11, "r", "ipv4_pool"), (11, "r", "parent"),
        (13, "r", "deny")]


@pytest.mark.parametrize(("text", "line", "message"), [
    # PyYAML's composer recurses once per level: 100000 of them ended in a RecursionError
    ("profiles:\n  p:\n    attach: nat\n    allow: " + "[" * 100_000 + "]" * 100_000 + "\n", 4,
     "is not valid YAML: collections are nested more than 10 levels deep (a profile file needs 5)"),
    # each level repeats the one before ten times: 2 x 10^5 values from a few lines
    ("profiles:\n  p0: &p0 {attach: nat, description: x}\n"
     + "".join(f"  p{i}: &p{i} {{<<: [{', '.join([f'*p{i - 1}'] * 10)}]}}\n" for i in range(1, 6)), 6,
     f"holds more than {MAX_VALUES} values, counting what aliases (*name) and merge keys (<<) repeat; a profile "
     "file needs a few hundred"),
    # a value that contains itself means nothing in a profile (and could not be counted)
    ("profiles:\n  p: &p\n    attach: nat\n    <<: *p\n", 2,
     "has a value that contains itself through an alias (*name)"),
    ("profiles:\n  p:\n    attach: nat\n    allow: &a [*a]\n", 4,
     "has a value that contains itself through an alias (*name)"),
])
def test_files_that_nest_or_multiply_without_end_are_refused(text: str, line: int, message: str) -> None:
    started = time.monotonic()
    profiles, errors = parse_profiles(text, "bomb.yaml")
    assert time.monotonic() - started < 2.0
    assert profiles == [] and [str(e) for e in errors] == [f"bomb.yaml:{line}: {message}"]


def test_a_node_offers_at_most_max_profiles(tmp_path: Path) -> None:
    d = tmp_path / "profiles.d"
    d.mkdir()
    count = MAX_PROFILES + 4
    (d / "many.yaml").write_text("profiles:\n" + "".join(f"  p{i:03d}: {{attach: nat}}\n" for i in range(count)))
    catalog = load_profiles(d)
    assert len(catalog.profiles) == MAX_PROFILES and catalog.names[-1] == f"p{MAX_PROFILES - 1}"
    assert [str(e) for e in catalog.errors] == [
        f"{d / 'many.yaml'}:{MAX_PROFILES + 2}: profile 'p{MAX_PROFILES}': is past the {MAX_PROFILES} profiles a "
        f"node offers at most ({count} are defined); the last 4 (p256, p257, p258, ...) are not offered"]
    assert "p259" in catalog.broken  # a job asking for one is told it is not offered, and why
