"""``lark report`` end to end on files generated with classad2 and GridFTP lines."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lark.report import cli

from .conftest import T0, gridftp_line, lark_job, write_history, write_json

MB = 1_000_000


@pytest.fixture
def inputs(tmp_path: Path, sample_ads) -> dict[str, Path]:
    log = tmp_path / "gridftp.log"
    log.write_text("\n".join([
        gridftp_line("20260101120000.0", "20260101120100.0", 600 * MB),  # 10 MB/s
        gridftp_line("20260101120130.0", "20260101120230.0", 300 * MB, kind="STOR"),  # same session (30 s)
        gridftp_line("20260101120000.0", "20260101120010.0", 100 * MB, user="bob", dest="[0.0.0.0]"),
        "DATE=broken",
        gridftp_line("20260101120000.0", "20260101120001.0", 1, kind="LIST"),
    ]) + "\n")
    return {"history": write_history(tmp_path / "history", sample_ads),
            "json": write_json(tmp_path / "h.json", sample_ads), "gridftp": log, "dir": tmp_path}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["--no-progress", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_report(inputs, capsys):
    code, out, err = run(["--history", str(inputs["history"]), "--gridftp", str(inputs["gridftp"]),
                          "--charge", "default=0.01", "--charge", "wan=0.05", "--currency", "EUR"], capsys)
    assert code == 0, err
    assert "4 ads, 4 jobs in the report" in out
    assert "network counters: Lark 2, docker NetworkInput/OutputMb 1, none 1" in out
    # alice: Wan 4 GB in + 1 GB out at 0.05 = 0.25, unclassified 3 GB at 0.01 = 0.03 -> 0.28 EUR
    assert "charge 0.29 EUR" in out  # + bob 1 GB at 0.01
    assert "gridftp.log:4: no START= field" in out
    assert "3 transfers, 1.0 GB, 2 sessions (gap 60 s)" in out
    assert "left out: listings 1" in out


def test_json_report_numbers(inputs, capsys):
    code, out, _ = run(["--history-json", str(inputs["json"]), "--gridftp", str(inputs["gridftp"]), "--json",
                        "--charge", "wan=0.05", "--top", "1", "--circuit-min-minutes", "1"], capsys)
    assert code == 0
    r = json.loads(out)
    a = r["accounting"]
    assert a["totals"]["bytes_in"] == 7_002_500_000 and a["totals"]["charge"] == pytest.approx(0.25)
    assert [row["job"] for row in a["top_jobs"]] == ["submit.lark.test#1.0"]
    x = r["transfers"]
    assert x["sessions"]["count"] == 2
    # rates 10, 5 and 10 MB/s -> Q3 10 MB/s; sessions 900 MB (90 s) and 100 MB (10 s); > 60 s: 1 of 2
    assert x["circuit"]["rate_bytes_per_second"] == 10 * MB
    assert (x["circuit"]["eligible_sessions"], x["circuit"]["suitable_sessions"]) == (2, 1)
    assert r["inputs"]["gridftp"]["malformed_examples"][0]["line"] == 4
    assert r["config"]["top"] == 1


def test_csv_long_form(inputs, capsys):
    code, out, _ = run(["--history", str(inputs["history"]), "--csv"], capsys)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["section", "key", "metric", "value"]
    assert ["accounting.by_user", "alice", "bytes_total", "8000000000"] in rows
    assert ["accounting.distributions.bytes", "", "count", "3"] in rows
    assert ["inputs.history.missing_attributes", "", "LarkBytesIn", "2"] in rows


def test_month_period_and_jobs_csv(tmp_path: Path, capsys):
    ads = [lark_job(1, bytes_in=5, CompletionDate=T0), lark_job(2, bytes_in=7, CompletionDate=T0 + 40 * 86400)]
    hist = write_history(tmp_path / "h", ads)
    jobs_csv = tmp_path / "jobs.csv"
    code, out, _ = run(["--history", str(hist), "--month", "2026-09", "--json", "--jobs-csv", str(jobs_csv)], capsys)
    assert code == 0
    r = json.loads(out)
    assert r["period"] == {"from": "2026-09-01T00:00:00Z", "until": "2026-10-01T00:00:00Z"}
    assert r["inputs"]["history"]["outside_period"] == 1 and r["accounting"]["totals"]["bytes_in"] == 5
    rows = list(csv.DictReader(jobs_csv.open()))
    assert [(row["job"], row["bytes_in"]) for row in rows] == [("submit.lark.test#1.0", "5")]


def test_plots_and_html(inputs, capsys):
    out_dir = inputs["dir"] / "plots"
    code, _, err = run(["--history", str(inputs["history"]), "--gridftp", str(inputs["gridftp"]),
                        "--plot", str(out_dir), "-o", str(inputs["dir"] / "r.txt")], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["accounting_classes.png", "accounting_execute_site.png", "accounting_group.png",
                     "accounting_user.png", "concurrency.png", "index.html", "server_utilisation.png",
                     "session_durations.png", "throughput.png", "totals_by_class.png"]
    for png in out_dir.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out_dir / "index.html").read_text()
    # every figure embedded with its caption; nothing loaded from elsewhere; tables, not a text dump
    assert page.count("data:image/png;base64,") == 9 == page.count("<figcaption>")
    assert "http:" not in page and "https:" not in page and "<pre" not in page
    assert "<table id='by_user' class=sortable>" in page
    assert "Lark network report" in (inputs["dir"] / "r.txt").read_text()


def test_print_attributes(capsys):
    code, out, _ = run(["--print-attributes", "--classes", "wan,off_campus"], capsys)
    assert code == 0
    attrs = out.strip().split(",")
    assert attrs[:4] == ["ClusterId", "ProcId", "GlobalJobId", "Owner"]
    assert attrs[-4:] == ["LarkBytesInWan", "LarkBytesOutWan", "LarkBytesInOffCampus", "LarkBytesOutOffCampus"]


@pytest.mark.parametrize("argv,msg", [
    ([], "no input"),
    (["--history", "/nonexistent/h"], "cannot open"),
    (["--gridftp", "x", "--month", "2026-13"], "--month"),
    (["--gridftp", "x", "--from", "yesterday"], "--from"),
    (["--gridftp", "x", "--from", "2026-02-01", "--until", "2026-01-01"], "after"),
    (["--gridftp", "x", "--constraint", "true"], "--schedd only"),
    (["--gridftp", "x", "--charge", "wan"], "CLASS=RATE"),
    (["--history", "-", "--gridftp", "-"], "stdin"),
])
def test_errors_exit_2_with_one_line(argv, msg, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and msg in err and err.startswith("lark report: error:") and out == ""


def test_configuration_errors_exit_2_under_both_commands(tmp_path: Path, capsys):
    """A bad settings file or knob is a configuration error: 2, under ``python -m lark.report`` and
    ``lark report`` alike, with the file and line that hold it."""
    from lark.cli.main import main as lark_main

    bad_yaml = tmp_path / "r.yaml"
    bad_yaml.write_text("currency: CHF\ntop: [1\n")
    bad_knob = tmp_path / "lark.conf"
    bad_knob.write_text("LARK_REPORT_TOP = many\n")
    for argv, where in ((["--report-config", str(bad_yaml)], f"{bad_yaml}:3: --report-config: is not valid YAML"),
                        (["--config", str(bad_knob)], f"{bad_knob}:1: LARK_REPORT_TOP: expected a number"),
                        (["-D", "LARK_REPORT_CIRCUIT_RATE=jobs"], "LARK_REPORT_CIRCUIT_RATE: expected one of")):
        code, out, err = run(["--gridftp", str(tmp_path / "x"), *argv], capsys)
        assert (code, out) == (2, "") and where in err, err
        code = lark_main(["report", "--no-progress", "--gridftp", str(tmp_path / "x"), *argv])
        out, err = capsys.readouterr()
        assert (code, out) == (2, "") and where in err, err


def test_when_parsing():
    assert cli.parse_when("2026-10-01", "x") == 1790812800
    assert cli.parse_when("2026-10-01T01:00", "x") == 1790812800 + 3600
    assert cli.parse_when("2026-10-01T01:00+01:00", "x") == 1790812800
    assert cli.parse_when("1790812800", "x") == 1790812800
    import datetime as dt

    now = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
    assert cli.month_period("last", now) == (cli.parse_when("2025-12-01", ""), cli.parse_when("2026-01-01", ""))
    assert cli.month_period("this", now)[0] == cli.parse_when("2026-01-01", "")
    assert cli.parse_since("1038") == 1038 and cli.parse_since("12.3") == "12.3"


def test_python_dash_m_and_stdin(inputs):
    data = inputs["json"].read_bytes()
    proc = subprocess.run([sys.executable, "-m", "lark.report", "--history-json", "-", "--json"], input=data,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["inputs"]["history"]["jobs"] == 4
    assert proc.stderr == b""  # no progress when stderr is not a terminal


def test_progress_on_request(tmp_path: Path, capsys):
    hist = write_history(tmp_path / "h", [lark_job(i, bytes_in=i) for i in range(3000)])
    code = cli.main(["--history", str(hist), "--progress"])
    err = capsys.readouterr().err
    assert code == 0 and "h: " in err and "records" in err


def test_wired_into_lark_cli(inputs, capsys):
    from lark.cli.main import main

    code = main(["-D", "LARK_REPORT_TOP=1", "report", "--no-progress", "--history", str(inputs["history"]),
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["config"]["top"] == 1


def test_empty_inputs_still_give_a_report(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    code, out, _ = run(["--history-json", str(empty), "--gridftp", str(empty), "--json"], capsys)
    assert code == 0 and "NaN" not in out
    r = json.loads(out)
    assert r["accounting"]["totals"]["jobs"] == 0 and r["transfers"]["sessions"]["count"] == 0
    assert r["transfers"]["circuit"]["share"] is None and r["transfers"]["concurrency"]["spearman"] is None
    code, out, _ = run(["--gridftp", str(empty)], capsys)
    assert code == 0 and "0 transfers" in out


def test_zero_duration_transfers_give_null_not_nan(tmp_path: Path, capsys):
    log = tmp_path / "g.log"
    log.write_text(gridftp_line("20260101120000.0", "20260101120000.0", 5) + "\n")
    code, out, _ = run(["--gridftp", str(log), "--json"], capsys)
    assert code == 0 and "NaN" not in out
    r = json.loads(out)
    assert r["inputs"]["gridftp"]["zero_duration"] == 1
    assert r["transfers"]["distributions"]["transfers"]["bytes_per_second"]["count"] == 0
    assert r["transfers"]["sessions"]["top"][0]["bytes_per_second"] is None
