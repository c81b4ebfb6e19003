"""The schedd edge without a schedd: who condor_ping says the token is, and what the tools are given."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lark.transfer.schedd import Schedd, ScheddError, Unauthenticated, _ping_identity

HEADER = "         Instruction Authentication Encryption Integrity Decision Identity\n"


@pytest.mark.parametrize(("row", "user"), [
    ("               WRITE       IDTOKENS        AES       AES    ALLOW larkuser@lark.test\n", "larkuser"),
    ("               WRITE      SCITOKENS        AES       AES    ALLOW alice@example.org\n", "alice"),
    # a refused token: every column FAIL
    ("               WRITE           FAIL       FAIL      FAIL     FAIL FAIL  (use -verbose for more info)\n", None),
    # authenticated but not allowed to write
    ("               WRITE       IDTOKENS        AES       AES     DENY bob@lark.test\n", None),
    # HTCondor's own identities (a client that could mint a pool token) are never a transfer's owner
    ("               WRITE       IDTOKENS        AES       AES    ALLOW condor@password\n", None),
    ("               WRITE       IDTOKENS        AES       AES    ALLOW unauthenticated@unmapped\n", None),
])
def test_identity_is_read_from_condor_pings_table(row: str, user: str | None) -> None:
    assert _ping_identity(HEADER + row) == user


def test_no_table_no_identity() -> None:
    assert _ping_identity("") is None and _ping_identity(HEADER) is None


def test_tools_see_only_the_users_token_and_never_the_pool_key(tmp_path: Path) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsYXJrdXNlciJ9.c2lnbmF0dXJlLXBhcnQ"
    with Schedd()._token_env(token) as env:
        directory = Path(env["_CONDOR_SEC_TOKEN_DIRECTORY"])
        assert [p.name for p in directory.iterdir()] == ["token"]
        assert (directory / "token").read_text() == token + "\n"
        assert stat.S_IMODE((directory / "token").stat().st_mode) == 0o600
        assert env["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] == "IDTOKENS, SCITOKENS"
        assert env["_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY"] == str(directory)
        for knob in ("_CONDOR_SEC_PASSWORD_DIRECTORY", "_CONDOR_SEC_PASSWORD_FILE",
                     "_CONDOR_SEC_TOKEN_POOL_SIGNING_KEY_FILE"):
            assert not os.path.exists(env[knob])
    assert not directory.exists()  # removed as soon as the tool is done


@pytest.mark.parametrize("token", ["", "short", "has space in it and more", "x" * 20000, "a\nb" * 10])
def test_what_is_not_a_token_never_reaches_a_tool(token: str) -> None:
    with pytest.raises(Unauthenticated), Schedd()._token_env(token):
        pass


def test_a_missing_tool_is_a_schedd_error(tmp_path: Path) -> None:
    schedd = Schedd(bin_dir=str(tmp_path))
    with pytest.raises(ScheddError, match="cannot run .*condor_ping"):
        schedd.identity("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl")
