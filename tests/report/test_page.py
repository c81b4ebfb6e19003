"""The HTML report in a real browser: Debian's chromium, headless, loads the page that ``lark report --plot``
wrote for a month of accounting, from a local HTTP server on 127.0.0.1.

A harness page on the same server opens the report in a frame, reads what the browser made of it (the
tables and their rows, whether every figure decoded, the captions, whether anything is wider than the
window) and clicks a column header to check sorting; chromium's ``--dump-dom`` prints the harness with
the result. Console messages (errors, failed loads) go to chromium's log on stderr: there must be none.
A screenshot is taken too; set ``LARK_REPORT_SCREENSHOT=docs/img/report.png`` to keep it
(docs/report.md shows that one).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lark.report import cli

from .month import CHARGE_ARGS, USERS, month_jobs, write_month_gridftp, write_month_history

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0")
WIDTH = 1280

HARNESS = """<!DOCTYPE html><html><head><meta charset='utf-8'><link rel=icon href='data:,'></head><body>
<pre id=result>not loaded</pre>
<iframe id=report src='index.html' style='width:%(width)dpx;height:900px;border:0'></iframe>
<script>
function texts(table, col) {
  return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[col].textContent; });
}
document.getElementById('report').addEventListener('load', function () {
  var d = this.contentDocument, out = {tables: {}, headers: {}};
  out.ready = d.documentElement.getAttribute('data-sortable');
  Array.prototype.forEach.call(d.querySelectorAll('table'), function (t) {
    out.tables[t.id] = texts(t, 0);
    out.headers[t.id] = Array.prototype.map.call(t.tHead.rows[0].cells, function (c) { return c.textContent; });
  });
  out.images = Array.prototype.map.call(d.images, function (i) {
    return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight};
  });
  out.captions = Array.prototype.map.call(d.querySelectorAll('figure'), function (f) {
    var c = f.querySelector('figcaption');
    return {id: f.id, caption: c ? c.textContent : ''};
  });
  out.pre = d.querySelectorAll('pre').length;
  out.scrollWidth = d.documentElement.scrollWidth;
  out.clientWidth = d.documentElement.clientWidth;
  var users = d.getElementById('by_user'), jobs = users.tHead.rows[0].cells[1];
  jobs.click();
  out.byJobsFirstClick = texts(users, 1);
  jobs.click();
  out.byJobsSecondClick = texts(users, 1);
  users.tHead.rows[0].cells[0].click();
  out.byName = texts(users, 0);
  document.getElementById('result').textContent = JSON.stringify(out);
});
</script></body></html>
"""


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("the browser test needs Debian's chromium package, which is not installed: "
                    "apt-get install -y chromium (scripts/setup.sh installs it)")
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """``lark report --plot`` on a month, served on 127.0.0.1 with the harness next to the page."""
    d = tmp_path_factory.mktemp("page")
    write_month_history(d / "history", month_jobs())
    write_month_gridftp(d / "gridftp.log")
    plot = d / "plot"
    assert cli.main(["--no-progress", "--month", "2026-10", "--history", str(d / "history"), "--gridftp",
                     str(d / "gridftp.log"), *CHARGE_ARGS, "-o", str(d / "report.txt"), "--plot", str(plot)]) == 0
    (plot / "harness.html").write_text(HARNESS % {"width": WIDTH}, encoding="utf-8")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(plot)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", plot
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def run_chromium(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="lark-chromium-") as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=180, check=False)


def console_lines(stderr: str) -> list[str]:
    """What the pages wrote to the console (script errors, failed loads, console.* calls)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_page_in_headless_chromium(served):
    """Tables, figures, captions, sorting and no console message; then a screenshot."""
    base, plot = served
    proc = run_chromium("--virtual-time-budget=15000", "--dump-dom", f"{base}/harness.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []
    m = re.search(r"<pre id=\"result\">(.*?)</pre>", proc.stdout, re.S)
    assert m, proc.stdout[:2000]
    import html

    out = json.loads(html.unescape(m.group(1)))
    assert out["ready"] == "ready"  # the page's script ran to the end

    # tables with the expected rows: six users, three groups, six sites, two classes and the rest
    tables = out["tables"]
    assert sorted(tables["by_user"]) == sorted(USERS) and tables["by_user"][0] == "alice"
    assert sorted(tables["by_group"]) == ["atlas", "cms", "ligo"]
    assert sorted(tables["by_execute_site"]) == ["FNAL", "MIT", "UCSD", "UNL", "purdue.edu", "wisc.edu"]
    assert tables["by_class"] == ["Wan", "Campus", "(unclassified)"]
    assert len(tables["top_jobs"]) == 10 and len(tables["transfers_by_server"]) == 3
    assert tables["concurrency"] == ["~0", "~1", "2-3", "4-7", "8-15", "16+"]
    assert "RemoteHost" not in tables["missing_attributes"]
    assert out["headers"]["by_user"] == ["user", "jobs", "in", "out", "total", "sandbox in", "sandbox out", "wall",
                                         "charge (EUR)"]
    assert out["pre"] == 0  # tables, not the text report in a box

    # every figure decoded, with a caption that says how to read it
    pngs = sorted(p.stem for p in plot.glob("*.png"))
    assert sorted(c["id"].removeprefix("fig-") for c in out["captions"]) == pngs and len(pngs) == 9
    assert all(i["complete"] and i["width"] >= 800 and i["height"] >= 300 for i in out["images"]), out["images"]
    assert all(len(c["caption"]) > 150 for c in out["captions"]), out["captions"]

    # nothing wider than the window (the text report's long lines were cut off)
    assert out["scrollWidth"] <= out["clientWidth"] <= WIDTH

    # sorting: numeric columns first descending, then ascending; text columns alphabetically
    counts = [int(x.replace(",", "")) for x in out["byJobsFirstClick"]]
    assert counts == sorted(counts, reverse=True)
    assert [int(x.replace(",", "")) for x in out["byJobsSecondClick"]] == sorted(counts)
    assert out["byName"] == sorted(USERS)

    # and as a person sees it: a screenshot of the top of the page
    shot = plot.parent / "report.png"
    proc = run_chromium(f"--screenshot={shot}", f"--window-size={WIDTH},2400", "--virtual-time-budget=10000",
                        f"{base}/index.html")
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    assert console_lines(proc.stderr) == []
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (WIDTH, 2400)
    assert shot.stat().st_size > 100_000  # text, tables and figures, not an empty page
    keep = os.environ.get("LARK_REPORT_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
