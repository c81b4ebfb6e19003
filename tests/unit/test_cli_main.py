"""The ``lark`` command line: one dispatch, options before or after the sub-command, versions, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lark import __version__
from lark.cli.main import build_parser, main, merge_common_options

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def parse(*argv: str):  # noqa: ANN201
    return merge_common_options(build_parser().parse_args(list(argv)))


def test_every_sub_command_has_a_handler() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse keeps them only there
    for name, p in sub.choices.items():
        assert callable(p.get_default("func")), f"lark {name} has no handler"


@pytest.mark.parametrize("argv", [
    ("--config", "/a", "-D", "K=1", "list"),
    ("list", "--config", "/a", "-D", "K=1"),
    ("--config", "/a", "list", "-D", "K=1"),
])
def test_config_and_overrides_go_before_or_after_the_sub_command(argv: tuple[str, ...]) -> None:
    args = parse(*argv)
    assert args.config == [Path("/a")]
    assert args.overrides == ["K=1"]


def test_both_places_add_up_in_order() -> None:
    args = parse("-D", "A=1", "--config", "/a", "check", "-D", "B=2", "--config", "/b")
    assert args.overrides == ["A=1", "B=2"]
    assert args.config == [Path("/a"), Path("/b")]
    assert not [name for name in vars(args) if "_after" in name]


def test_the_config_command_prints_json_with_sources(tmp_path: Path, capsys) -> None:
    conf = tmp_path / "lark.conf"
    conf.write_text("# a comment\nLARK_NAME_PREFIX = lkt\n")
    assert main(["config", "--json", "--config", str(conf), "-D", "LARK_SWEEP_INTERVAL=7"]) == 0
    rows = {row["knob"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["LARK_NAME_PREFIX"]["value"] == "lkt"
    assert rows["LARK_NAME_PREFIX"]["where"] == f"{conf}:2"
    assert rows["LARK_SWEEP_INTERVAL"]["value"] == "7"
    assert rows["LARK_FIREWALL"]["where"] == "default"


def test_the_config_command_prints_values_expanded(tmp_path: Path, capsys) -> None:
    conf = tmp_path / "lark.conf"
    conf.write_text("LARK_STATE_DIR = /srv/lark\nLARK_EXECUTE_DIR = $(LARK_STATE_DIR)/execute\n")
    assert main(["config", "--config", str(conf)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"LARK_EXECUTE_DIR = /srv/lark/execute    # {conf}:2" in lines
    # a knob that only has its default is expanded too (the journal lives in the state directory)
    assert "LARK_ACCOUNTING_JOURNAL = /srv/lark/accounting.jsonl    # default" in lines


def test_usage_and_configuration_errors_exit_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert main(["config", "-D", "LARK_FIREWALL"]) == 2  # not KNOB=VALUE
    assert "-D expects KNOB=VALUE" in capsys.readouterr().err
    for item in ("FOO=x", "=x"):  # not a Lark knob: said, not silently ignored
        assert main(["config", "-D", item]) == 2
        assert "-D sets a LARK_* knob" in capsys.readouterr().err
    bad = tmp_path / "bad.conf"
    bad.write_text("LARK_FIREWALL = pf\n")
    assert main(["config", "--config", str(bad)]) == 2
    assert "LARK_FIREWALL" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    [str(BIN / "lark")], [str(BIN / "lark-netd")], [str(BIN / "lark-spider")], [str(BIN / "lark-prepare-job")],
    [str(REPO / "hooks" / "lark-wrap")],
])
def test_every_executable_tells_its_version_and_help_without_doing_its_job(command: list[str]) -> None:
    name = Path(command[0]).name
    def run(flag: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, flag], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    version = run("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"{name} {__version__}")
    helped = run("--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith(("usage:", f"usage: {name}")), helped.stdout[:200]


def test_a_sub_commands_own_verbs_take_them_too() -> None:
    args = parse("profiles", "-D", "A=1", "check", "--config", "/p", "-D", "B=2")
    assert args.overrides == ["A=1", "B=2"]
    assert args.config == [Path("/p")]
