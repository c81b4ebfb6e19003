"""``lark transfer``: where the token comes from and how the verbs parse (the calls are tested on the pool)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lark.cli.main import build_parser
from lark.cli.transfer import find_token
from lark.errors import LarkError


def test_token_from_the_named_file_then_tokens_d_then_bearer_token_file(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    bearer = tmp_path / "bt"
    bearer.write_text("  scitoken.value.here \n")
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(bearer))
    assert find_token(None) == "scitoken.value.here"
    tokens_d = home / ".condor" / "tokens.d"
    tokens_d.mkdir(parents=True)
    (tokens_d / "b-pool").write_text("second\n")
    (tokens_d / "a-pool").write_text("first\n")
    (tokens_d / ".hidden").write_text("hidden\n")
    assert find_token(None) == "first"
    named = tmp_path / "named"
    named.write_text("named\n")
    assert find_token(named) == "named"
    # a file the user named but that cannot be read is said so, not hidden behind "no token"
    with pytest.raises(LarkError, match="cannot read the token file .*missing: No such file"):
        find_token(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(LarkError, match="no token"):
        find_token(empty)


def test_verbs_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["transfer", "--url", "http://svc:1", "get", "ftp:a", "/d/a", "--size", "10", "--wait"])
    assert (args.verb, args.source, args.destination, args.size, args.wait, args.url) == (
        "get", "ftp:a", "/d/a", 10, True, "http://svc:1")
    args = parser.parse_args(["transfer", "rm", "ftp:a", "--remote"])
    assert (args.verb, args.target, args.remote) == ("rm", "ftp:a", True)
    args = parser.parse_args(["transfer", "ls", "--state", "ACTIVE", "--json"])
    assert (args.state, args.json) == ("ACTIVE", True)
    with pytest.raises(SystemExit):
        parser.parse_args(["transfer", "copy", "a", "b"])


def test_lark_transferd_checks_its_options_before_serving(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from lark.transfer.daemon import main

    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text("endpoints:\n  web:\n    protocol: https\n    url: https://192.0.2.1/\n    site: WAN\n")
    assert main(["--endpoints", str(endpoints), "--check"]) == 0
    assert "1 endpoint(s): web" in capsys.readouterr().out
    for option, bad in (("--token-recheck", "0"), ("--token-recheck", "3601"), ("--history-days", "-1")):
        assert main(["--endpoints", str(endpoints), option, bad, "--check"]) == 2
        assert option in capsys.readouterr().err
    endpoints.write_text("endpoints:\n  web:\n    protocol: ftp\n")
    assert main(["--endpoints", str(endpoints), "--check"]) == 2
