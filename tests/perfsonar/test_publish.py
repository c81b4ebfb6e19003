"""Publishing edges that need no collector (the live-collector test belongs to the pool suite)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import classad2
import htcondor2
import pytest

from perfsonar.errors import PublishError
from perfsonar.publish import configure_security, publish_ads


@pytest.fixture
def restore_condor_env() -> Iterator[None]:
    keys = ("_CONDOR_SEC_TOKEN_DIRECTORY", "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    htcondor2.reload_config()


def test_configure_security_selects_idtokens(tmp_path: Path, restore_condor_env: None) -> None:
    tokens = tmp_path / "tokens.d"
    tokens.mkdir(mode=0o700)
    configure_security(str(tokens))
    assert htcondor2.param["SEC_TOKEN_DIRECTORY"] == str(tokens)
    assert htcondor2.param["SEC_CLIENT_AUTHENTICATION_METHODS"] == "IDTOKENS"


def test_missing_token_directory_is_a_publish_error(tmp_path: Path, restore_condor_env: None) -> None:
    with pytest.raises(PublishError, match="does not exist"):
        configure_security(str(tmp_path / "nope"))


def test_nothing_to_publish_contacts_nobody() -> None:
    assert publish_ads([], "127.0.0.1:9") == 0


def test_unreachable_collector_raises_publish_error(tmp_path: Path, restore_condor_env: None) -> None:
    ad = classad2.ClassAd()
    ad["MyType"] = "LarkNetworkLink"
    ad["Name"] = "A->B/IPv4"
    tokens = tmp_path / "tokens.d"
    tokens.mkdir(mode=0o700)
    with pytest.raises(PublishError, match="127.0.0.1:9"):
        publish_ads([ad], "127.0.0.1:9", str(tokens))  # nothing listens on the discard port
