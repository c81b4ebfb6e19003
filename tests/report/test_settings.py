"""Report settings from LARK_REPORT_* knobs, -D overrides and YAML, with file/line in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lark.errors import ConfigError
from lark.report.settings import ReportConfig, apply, load_report_config, parse_rates


def test_defaults(monkeypatch):
    monkeypatch.delenv("LARK_CONFIG", raising=False)
    c = ReportConfig()
    assert (c.session_gap, c.circuit_min_bytes, c.circuit_min_seconds, c.circuit_rate_basis, c.top) == \
        (60.0, 100e6, 600.0, "transfers", 10)
    assert not c.charging


def test_knobs_from_config_dir_then_overrides_then_yaml(tmp_path: Path):
    d = tmp_path / "config.d"
    d.mkdir()
    (d / "10-lark").write_text("LARK_NAME_PREFIX = lk\nSTART = True\n"
                               "LARK_REPORT_CHARGE_PER_GB = default=0.01, wan=0.05\n"
                               "LARK_REPORT_SESSION_GAP = 30\nlark_report_top = 5\n")
    (d / "20-more").write_text("LARK_REPORT_CIRCUIT_MIN_MB = 250\n")
    c = load_report_config([d])
    assert c.charge_per_gb == {"default": 0.01, "wan": 0.05}
    assert (c.session_gap, c.top, c.circuit_min_bytes) == (30.0, 5, 250e6)
    c = load_report_config([d], overrides=["LARK_REPORT_TOP=7", "LARK_NAT_IPV4_POOL=10.0.0.0/8"])
    assert c.top == 7
    y = tmp_path / "report.yaml"
    y.write_text("charge_per_gb:\n  default: 0.02\n  'wan:out': 0.1\ncircuit_min_minutes: 15\n"
                 "circuit_rate: sessions\ncurrency: EUR\n")
    c = load_report_config([d], yaml_path=y)
    assert c.charge_per_gb == {"default": 0.02, "wan:out": 0.1}
    assert (c.circuit_min_seconds, c.circuit_rate_basis, c.currency, c.top) == (900.0, "sessions", "EUR", 5)


def test_env_lark_config(tmp_path: Path, monkeypatch):
    f = tmp_path / "lark.conf"
    f.write_text("LARK_REPORT_CURRENCY = CHF\n")
    monkeypatch.setenv("LARK_CONFIG", str(f))
    assert load_report_config().currency == "CHF"


def test_errors_name_knob_file_and_line(tmp_path: Path):
    f = tmp_path / "bad.conf"
    f.write_text("# x\nLARK_REPORT_SESSION_GAP = soon\n")
    with pytest.raises(ConfigError, match=r"bad.conf:2: LARK_REPORT_SESSION_GAP: expected a number"):
        load_report_config([f])
    f.write_text("LARK_REPORT_COLOUR = blue\n")
    with pytest.raises(ConfigError, match="unknown report setting"):
        load_report_config([f])
    y = tmp_path / "r.yaml"
    y.write_text("currency: CHF\ntop: [1\n")  # the flow list is still open at the end of line 3
    with pytest.raises(ConfigError, match=r"r.yaml:3: --report-config: is not valid YAML: expected ',' or ']'"):
        load_report_config([], yaml_path=y)
    y.write_text("- a\n")
    with pytest.raises(ConfigError, match=r"r.yaml:1: --report-config: expected a mapping"):
        load_report_config([], yaml_path=y)
    y.write_text("currency: CHF\n\ntop: 2.5\n")  # a bad value: blamed on its own line
    with pytest.raises(ConfigError, match=r"r.yaml:3: LARK_REPORT_TOP: expected a whole number"):
        load_report_config([], yaml_path=y)
    y.write_text("top: &t [*t]\n")  # bounded like every admin-written YAML file
    with pytest.raises(ConfigError, match=r"r.yaml:1: --report-config: has a value that contains itself"):
        load_report_config([], yaml_path=y)
    with pytest.raises(ConfigError, match="no such config"):
        load_report_config([tmp_path / "missing"])


@pytest.mark.parametrize("text,msg", [("wan", "CLASS=RATE"), ("wan=-1", ">= 0"), ("wan=x", "not a number"),
                                      ("wan:up=1", "NAME:in"), ("1wan=1", "bad class")])
def test_bad_rates(text, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_rates(text)


def test_apply_validates_values():
    with pytest.raises(ConfigError, match="whole number"):
        apply(ReportConfig(), {"TOP": "2.5"})
    with pytest.raises(ConfigError, match="transfers, sessions"):
        apply(ReportConfig(), {"CIRCUIT_RATE": "jobs"})
    assert apply(ReportConfig(), {"session_gap": 0}).session_gap == 0.0
