"""The schedd edge without a schedd: whose identities own transfers, token lifetimes, and the worker
process that holds a user's token (started for real; it must fail cleanly when no schedd answers)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lark.transfer import worker as worker_module
from lark.transfer.schedd import Schedd, ScheddError, Unauthenticated, identity_user, token_expiry, trusted_for


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'ES256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize(("identity", "user"), [
    ("larkuser@lark.test", "larkuser"),
    ("alice@example.org", "alice"),
    # HTCondor's own identities (a client that could mint a pool token) are never a transfer's owner
    ("condor@password", None),
    ("condor@family", None),
    ("unauthenticated@unmapped", None),
    ("anonymous@ssl", None),
    ("", None),
    ("nodomain", None),
])
def test_only_users_own_transfers(identity: str, user: str | None) -> None:
    assert identity_user(identity) == user


def test_token_expiry_is_read_from_the_claims_without_trusting_them() -> None:
    assert token_expiry(jwt({"sub": "a", "exp": 1_900_000_000})) == 1_900_000_000.0
    assert token_expiry(jwt({"sub": "a"})) is None
    assert token_expiry(jwt({"exp": True})) is None
    assert token_expiry(jwt({"exp": "soon"})) is None
    assert token_expiry("not.a-jwt") is None
    assert token_expiry("a.%%%.c") is None


def test_credentials_are_the_token_alone_and_never_the_pool_key(tmp_path: Path) -> None:
    settings = worker_module.credential_settings(str(tmp_path))
    assert settings["_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS"] == "IDTOKENS, SCITOKENS"  # never FS (root)
    assert settings["_CONDOR_SEC_CLIENT_AUTHENTICATION"] == "REQUIRED"
    assert settings["_CONDOR_SEC_TOKEN_DIRECTORY"] == settings["_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY"] == str(tmp_path)
    assert settings["_CONDOR_SCITOKENS_FILE"] == str(tmp_path / "token")
    for knob in ("_CONDOR_SEC_PASSWORD_DIRECTORY", "_CONDOR_SEC_PASSWORD_FILE",
                 "_CONDOR_SEC_TOKEN_POOL_SIGNING_KEY_FILE"):
        assert not os.path.exists(settings[knob])


@pytest.mark.parametrize("token", ["", "short", "has space in it and more", "x" * 20000, "a\nb" * 10])
def test_what_is_not_a_token_never_starts_a_worker(token: str) -> None:
    schedd = Schedd()
    with pytest.raises(Unauthenticated, match="not a token"):
        schedd.identity(token)
    assert schedd._workers == {} and schedd._starting == {}


def unreachable_schedd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A configuration whose collector is a closed loopback port: the worker cannot find a schedd."""
    config = tmp_path / "condor_config"
    config.write_text("COLLECTOR_HOST = 127.0.0.1:9\nSCHEDD_NAME = nowhere\nLOCAL_DIR = " + str(tmp_path) + "\n"
                      "TOOL_TIMEOUT_MULTIPLIER = 1\n")
    monkeypatch.setenv("CONDOR_CONFIG", str(config))


def test_a_worker_that_finds_no_schedd_is_an_error_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    unreachable_schedd(monkeypatch, tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    schedd = Schedd(timeout=30)
    with pytest.raises(ScheddError, match="cannot locate the schedd"):
        schedd.identity(jwt({"sub": "larkuser", "exp": time.time() + 600}))
    assert schedd._workers == {}
    assert not list(tmp_path.glob("lark-transfer-token-*"))  # the worker removed the token it was given


def test_a_worker_refuses_an_opening_that_is_not_its_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The token comes on stdin as the first line (never argv or environment); anything else there is refused
    before the worker does anything."""
    unreachable_schedd(monkeypatch, tmp_path)
    done = subprocess.run([sys.executable, "-I", "-m", "lark.transfer.worker"], input="not json\n",
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"] == "request"


def test_a_worker_never_outlives_its_tokens_exp() -> None:
    now = 1_800_000_000.0
    assert trusted_for(jwt({"exp": now + 5}), 60.0, now) == 5.0
    assert trusted_for(jwt({"exp": now + 3600}), 60.0, now) == 60.0
    assert trusted_for(jwt({"exp": now - 1}), 60.0, now) == 0.0
    assert trusted_for(jwt({"sub": "no exp"}), 60.0, now) == 60.0


def test_the_token_directories_of_dead_workers_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"{worker_module.TOKEN_DIR_PREFIX}{dead.pid}-abc"
    alive = tmp_path / f"{worker_module.TOKEN_DIR_PREFIX}{os.getpid()}-def"
    other = tmp_path / "lark-transfer-token-notapid-x"
    for directory in (gone, alive, other):
        directory.mkdir()
        (directory / "token").write_text("secret\n")
    assert worker_module.sweep_token_dirs(str(tmp_path)) == [str(gone)]
    assert not gone.exists() and alive.exists() and other.exists()
