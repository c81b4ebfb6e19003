"""The wrapper's line format: what the broker writes is what the stdlib-only wrapper reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lark.broker.protocol import encode_reply, parse_request, wants_lines
from lark.wrap import REQUESTS, container_environment, parse_reply


def test_the_wrapper_requests_ask_for_lines() -> None:
    for op, raw in REQUESTS.items():
        assert json.loads(raw) == {"op": op, "reply": "lines"}
        assert wants_lines(parse_request(raw))
    assert not wants_lines(parse_request(b'{"op": "setup"}\n'))
    assert not wants_lines(parse_request(b"garbage\n"))


def test_ok_reply_round_trips_the_environment() -> None:
    env = {"LARK_IPV4_ADDRESS": "10.250.0.2", "LARK_PORT_RANGE": "40000-40009", "LARK_NETWORK_TYPE": "nat"}
    text = encode_reply({"ok": True, "env": env}, lines=True).decode()
    assert parse_reply(text) == {"ok": True, "env": env}


def test_error_reply_is_one_line_and_keeps_the_message() -> None:
    message = "Lark could not set up the job's network:\nno address left in pool 10.250.0.0/30"
    text = encode_reply({"ok": False, "error": message}, lines=True).decode()
    assert text.count("\n") == 1
    assert parse_reply(text) == {"ok": False, "error": " ".join(message.split())}


def test_json_clients_still_get_json() -> None:
    assert json.loads(encode_reply({"ok": True, "env": {"A": "b"}}, lines=False)) == {"ok": True, "env": {"A": "b"}}


def test_garbage_from_the_socket_is_an_error_not_a_crash() -> None:
    assert parse_reply("HTTP/1.1 400 Bad Request\n")["ok"] is False
    assert parse_reply("")["ok"] is False


def test_container_runtimes_get_the_variables_under_their_pass_through_prefix(tmp_path: Path) -> None:
    env = {"LARK_PORT_RANGE": "40000-40001", "GLOBUS_TCP_PORT_RANGE": "40000,40001"}
    runtime = tmp_path / "apptainer"
    runtime.touch()
    (tmp_path / "singularity").symlink_to(runtime)  # Debian's alternatives link: it is apptainer
    expected = {"APPTAINERENV_LARK_PORT_RANGE": "40000-40001", "APPTAINERENV_GLOBUS_TCP_PORT_RANGE": "40000,40001"}
    assert container_environment(str(runtime), env) == expected
    assert container_environment(str(tmp_path / "singularity"), env) == expected
    os.unlink(tmp_path / "singularity")
    (tmp_path / "singularity").touch()  # SingularityCE itself
    assert container_environment(str(tmp_path / "singularity"), env) == {
        "SINGULARITYENV_LARK_PORT_RANGE": "40000-40001", "SINGULARITYENV_GLOBUS_TCP_PORT_RANGE": "40000,40001"}
    assert container_environment("/home/u/job.sh", env) == {}
    assert container_environment("./condor_exec.exe", env) == {}


def test_wrapper_settings_come_from_its_own_directory(tmp_path: Path) -> None:
    from lark.wrap import RETRY_SECONDS, SOCKET_PATH, settings

    assert settings(str(tmp_path)) == (SOCKET_PATH, RETRY_SECONDS)
    (tmp_path / "lark-wrap.socket").write_text("/run/old/netd.sock\n")  # what earlier releases documented
    assert settings(str(tmp_path)) == ("/run/old/netd.sock", RETRY_SECONDS)
    (tmp_path / "lark-wrap.conf").write_text("# admin's settings\nsocket = /run/x/netd.sock\nretry_seconds = 5\n")
    assert settings(str(tmp_path)) == ("/run/x/netd.sock", 5.0)
    (tmp_path / "lark-wrap.conf").write_text("retry_seconds = soon\nretry_seconds\n")
    assert settings(str(tmp_path)) == ("/run/old/netd.sock", RETRY_SECONDS)  # a bad value keeps the default
    (tmp_path / "lark-wrap.conf").write_text("retry_seconds = 99999\n")
    assert settings(str(tmp_path))[1] == 3600.0  # bounded: a job never waits hours for its network
    for bad in ("nan", "inf", "-inf"):  # NaN would slip through a clamp and retry for ever
        (tmp_path / "lark-wrap.conf").write_text(f"retry_seconds = {bad}\n")
        assert settings(str(tmp_path))[1] == RETRY_SECONDS
    (tmp_path / "lark-wrap.conf").write_text("retry_seconds = 7  # shorter on this test node\n")
    assert settings(str(tmp_path))[1] == 7.0


def test_wrapper_settings_name_what_they_ignore(tmp_path: Path, capsys) -> None:
    from lark.wrap import SOCKET_PATH, settings

    (tmp_path / "lark-wrap.conf").write_text("socket_path = /run/x.sock\nretry_seconds 5\n")
    assert settings(str(tmp_path))[0] == SOCKET_PATH
    err = capsys.readouterr().err
    assert "unknown key 'socket_path'" in err and "'retry_seconds 5'" in err  # a typo is said, not swallowed
