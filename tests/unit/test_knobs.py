"""The knob registry and its one reader: every component's knobs, declared once, documented as declared."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from lark.config import all_knobs, effective_knob_values, engine_knobs, load_config
from lark.errors import ConfigError
from lark.knobs import ConfigReader, Setting, parse_setting
from lark.links import knobs as link_knobs
from lark.links.cron import read_knobs as read_breaker_knobs
from lark.links.records import BreakerKnobs
from lark.report.settings import KNOBS as REPORT_KNOBS
from lark.report.settings import ReportConfig

ROOT = Path(__file__).resolve().parents[2]


def doc_table(path: Path, heading: str, column: str = "default") -> dict[str, str]:
    """knob -> its cell in ``column`` (matched by the header's first word) of the first table after
    ``heading``, backticks stripped; a table without that column fails the test."""
    text = path.read_text()
    start = text.rfind("\n", 0, text.index(heading)) + 1  # the heading's line: it may be the table's header
    rows: dict[str, str] = {}
    index: int | None = None
    for line in text[start:].splitlines():
        if not line.startswith("|"):
            if index is not None:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if index is None:
            headers = [c.strip("`").split(" ")[0].lower() for c in cells]
            assert column in headers, f"{path.name}: the table after {heading!r} has no {column!r} column"
            index = headers.index(column)
            continue
        m = re.fullmatch(r"`(LARK_[A-Z0-9_<>]+)`.*", cells[0])
        if m:
            rows[m.group(1)] = cells[index].strip("`") if len(cells) > index else ""
    return rows


def test_every_knob_is_declared_once() -> None:
    names = Counter(k.name for k in all_knobs())
    assert [n for n, c in names.items() if c > 1] == []
    assert all(k.name.startswith("LARK_") and k.doc and k.owner for k in all_knobs())


def test_admin_guide_lists_exactly_the_engine_knobs_with_their_defaults() -> None:
    documented = doc_table(ROOT / "docs" / "admin-guide.md", "## Policy knobs")
    assert documented == {k.name: k.default for k in engine_knobs()}


@pytest.mark.parametrize("page,heading,owner", [
    ("report.md", "## Settings", "lark report"),
    ("spider.md", "| knob | default | meaning |", link_knobs.SPIDER),
    ("matchmaking.md", "| knob | side | default |", link_knobs.CRON),
])
def test_each_components_page_lists_exactly_its_knobs_with_their_defaults(page: str, heading: str,
                                                                          owner: str) -> None:
    """The spider's, the report's and the links cron's tables, like the admin guide's: every knob the
    component declares, none it does not, each with its declared default (an empty cell for an empty
    one: what the component does then is the meaning column's to say)."""
    declared = {k.name: k.default for k in all_knobs() if k.owner == owner}
    assert declared  # the owner name matches the registry's
    assert doc_table(ROOT / "docs" / page, heading) == declared


def test_report_knobs_are_the_registrys() -> None:
    assert {k.name for k in REPORT_KNOBS} == {k.name for k in all_knobs() if k.owner == "lark report"}


def test_defaults_parse_and_say_what_the_components_use_unset() -> None:
    defaults = {k.name: Setting(k.default) for k in all_knobs() if k.pattern is None}
    for knob in all_knobs():
        if knob.pattern is None:
            parse_setting(knob, defaults, None)  # raises ConfigError naming the knob if not
    # the link cron: each declared default is its BreakerKnobs field's default
    parsed = {field: knob.parse(knob.default) for knob, field in link_knobs.BREAKER_FIELDS.items()}
    assert parsed == {f.name: f.default for f in fields(BreakerKnobs)}
    assert read_breaker_knobs(lambda _name: None)[0] == BreakerKnobs()
    # the report: a declared default changes nothing
    for knob in REPORT_KNOBS:
        if knob.default:
            assert knob.parse(knob.default) == ReportConfig(), knob.name


def test_other_components_knobs_pass_the_unknown_knob_check_and_typos_do_not(tmp_path: Path) -> None:
    conf = tmp_path / "lark.conf"
    conf.write_text("LARK_REPORT_TOP = 5\nLARK_SPIDER_INTERVAL = 600\nLARK_MAX_LOSS = 0.1\nLARK_BIN = /opt/lark/bin\n"
                    "LARK_REPORT_TPO = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config([conf])
    assert (info.value.knob, info.value.line) == ("LARK_REPORT_TPO", 5)
    assert "did you mean LARK_REPORT_TOP?" in str(info.value)
    conf.write_text(conf.read_text().replace("LARK_REPORT_TPO = 5\n", ""))
    assert load_config([conf]).name_prefix == "lark"


def test_effective_values_say_where_each_came_from(tmp_path: Path) -> None:
    conf = tmp_path / "50-lark.conf"
    conf.write_text("# comment\nLARK_STATE_DIR = /srv/lark\nLARK_ACCOUNTING_JOURNAL = $(LARK_STATE_DIR)/j.jsonl\n"
                    "LARK_TRAFFIC_CLASSES = campus\nLARK_TRAFFIC_CLASS_CAMPUS = 192.0.2.0/24\n")
    rows = {r.name: r for r in effective_knob_values([conf], {"LARK_REPORT_TOP": "3"}, external=None)}
    assert (rows["LARK_STATE_DIR"].value, rows["LARK_STATE_DIR"].where) == ("/srv/lark", f"{conf}:2")
    assert (rows["LARK_ACCOUNTING_JOURNAL"].value, rows["LARK_ACCOUNTING_JOURNAL"].where) == \
        ("/srv/lark/j.jsonl", f"{conf}:3")
    assert rows["LARK_TRAFFIC_CLASS_CAMPUS"].where == f"{conf}:5"  # a member of a knob family
    assert (rows["LARK_REPORT_TOP"].value, rows["LARK_REPORT_TOP"].where) == ("3", "override")
    assert (rows["LARK_FIREWALL"].value, rows["LARK_FIREWALL"].where) == ("nftables", "default")
    assert {r.name for r in rows.values()} >= {k.name for k in all_knobs() if k.pattern is None}


def test_an_undefined_reference_is_shown_not_raised(tmp_path: Path) -> None:
    conf = tmp_path / "lark.conf"
    conf.write_text("LARK_LOG = $(NOWHERE)/log\n")
    row = next(r for r in effective_knob_values([conf], external=None) if r.name == "LARK_LOG")
    assert row.value is None and row.error is not None and "NOWHERE" in row.error


def test_reader_takes_htcondors_own_configuration_when_no_file_is_named(tmp_path: Path) -> None:
    """Through the real bindings: HTCondor reads CONDOR_CONFIG and its LOCAL_CONFIG_DIR, expands its
    macros, and Lark takes the LARK_* values from it, each with the file and line HTCondor took it
    from (a knob set only there, a macro only HTCondor knows); an environment override has no file."""
    pytest.importorskip("htcondor2")
    drop_ins = tmp_path / "config.d"
    drop_ins.mkdir()
    condor_config = tmp_path / "condor_config"
    condor_config.write_text(f"LOCAL_DIR = {tmp_path}\nLOG = $(LOCAL_DIR)/log\nSITE_POOL = 10.9.0.0/16\n"
                             f"LOCAL_CONFIG_DIR = {drop_ins}\nLARK_MAX_LOSS = 0.1\n")
    (drop_ins / "50-lark.conf").write_text("# Lark\nLARK_NAT_IPV4_POOL = $(SITE_POOL)\nLARK_MAX_LOSS = 0.5\n")
    program = ("import json; from lark.config import condor_param, effective_knob_values, load_config\n"
               "rows = {r.name: [r.value, r.where] for r in effective_knob_values()}\n"
               "c = load_config(external=condor_param)\n"  # as lark-netd reads it
               "print(json.dumps([rows['LARK_NAT_IPV4_POOL'], rows['LARK_MAX_LOSS'], rows['LARK_LOG'],"
               " rows['LARK_NAME_PREFIX'], str(c.nat_ipv4_pool), str(c.log_path)]))")
    env = {k: v for k, v in os.environ.items() if k not in ("LARK_CONFIG",) and not k.startswith("_CONDOR_")}
    env["CONDOR_CONFIG"] = str(condor_config)
    env["_CONDOR_LARK_NAME_PREFIX"] = "lkenv"
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    pool, loss, log, prefix, parsed_pool, log_path = json.loads(done.stdout)
    assert pool == ["10.9.0.0/16", f"{drop_ins}/50-lark.conf:2"]
    assert loss == ["0.5", f"{drop_ins}/50-lark.conf:3"]  # the drop-in, read after the main file, wins
    assert prefix == ["lkenv", "HTCondor"]  # set in the environment: HTCondor knows no file for it
    assert log == [f"{tmp_path}/log/LarkNetdLog", "default"]  # Lark's default, HTCondor's $(LOG)
    assert (parsed_pool, log_path) == ("10.9.0.0/16", f"{tmp_path}/log/LarkNetdLog")
    # a bad value is reported with its file, line and knob, as when the files are named
    (drop_ins / "60-bad.conf").write_text("\nLARK_ANTI_SPOOF = sometimes\n")
    done = subprocess.run([sys.executable, "-c", "from lark.config import load_config; load_config()"], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    assert f"ConfigError: {drop_ins}/60-bad.conf:2: LARK_ANTI_SPOOF: expected True or False, got 'sometimes'" \
        in done.stderr
    env["_CONDOR_LARK_ANTI_SPOOF"] = "never"
    done = subprocess.run([sys.executable, "-c", "from lark.config import load_config; load_config()"], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    assert "ConfigError: HTCondor: LARK_ANTI_SPOOF: expected True or False, got 'never' " \
           "(condor_config_val -v LARK_ANTI_SPOOF shows where it is set)" in done.stderr


def test_explicit_files_win_over_htcondor_and_lark_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_text("LARK_NAME_PREFIX = aa\n")
    b.write_text("LARK_NAME_PREFIX = bb\n")
    monkeypatch.setenv("LARK_CONFIG", str(a))
    assert ConfigReader().settings["LARK_NAME_PREFIX"] == Setting("aa", str(a), 1)
    assert ConfigReader([b]).settings["LARK_NAME_PREFIX"] == Setting("bb", str(b), 1)
    assert load_config().name_prefix == "aa"


def test_the_shipped_drop_ins_set_only_declared_knobs() -> None:
    from lark.config import check_known
    from lark.knobs import config_files, read_settings

    settings: dict[str, Setting] = {}
    for path in config_files([ROOT / "condor_config.d"]):
        settings.update(read_settings(path))
    assert len(settings) > 20  # the drop-ins were read
    check_known(settings)  # raises ConfigError naming file:line of an undeclared one


def test_admin_guides_mode_table_says_where_each_mode_counts() -> None:
    """The "accounting and policy" column against each mode's declared fact: inside the job's
    namespace exactly for the modes whose firewall sits there (NAT's moved there from the host)."""
    from lark.attach import mode, mode_names

    text = (ROOT / "docs" / "admin-guide.md").read_text()
    table = text[text.index("| mode | how | accounting and policy | use |"):].split("\n\n", 1)[0]
    where: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([a-z]+)`", cells[0]):
            where[name] = cells[2]
    assert set(where) == set(mode_names())
    for name, cell in where.items():
        assert cell.startswith("inside the job's namespace") == mode(name).job_side_firewall, (name, cell)


@pytest.mark.parametrize("name", ["LARK_NETD_ARGS", "LARK_NETD_ENVIRONMENT", "LARK_SPIDER_ARGS", "LARK_SPIDER_DEBUG"])
def test_htcondors_own_settings_of_larks_daemons_are_not_unknown(tmp_path: Path, name: str) -> None:
    conf = tmp_path / "lark.conf"
    conf.write_text(f"{name} = -f\n")
    load_config([conf])  # the broker starts with condor_master's per-daemon settings in the drop-ins


def test_a_misspelt_daemon_setting_is_still_unknown(tmp_path: Path) -> None:
    conf = tmp_path / "lark.conf"
    conf.write_text("LARK_NETD_ENVIROMENT = X=1\n")
    with pytest.raises(ConfigError) as err:
        load_config([conf])
    assert err.value.line == 1 and "unknown Lark knob" in str(err.value)
