"""GridFTP transfer-log lines: every quirk of the reference note, and malformed lines never fatal."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from lark.report.gridftp import LineStats, MalformedLine, iter_gridftp, parse_gridftp_time, parse_line, split_fields
from lark.report.inputs import open_binary
from lark.report.transfers import Transfer

from .conftest import gridftp_line

# 2026-01-01 12:00:00 UTC
NOON = 1767268800


def test_date_is_the_end_and_start_the_start():
    t = parse_line(gridftp_line("20260101120000.000000", "20260101120010.500000", 1000))
    assert isinstance(t, Transfer)
    assert (t.start, t.end, t.duration, t.nbytes) == (NOON, NOON + 10.5, 10.5, 1000)
    assert (t.user, t.server, t.remote, t.kind, t.file) == ("alice", "dtn1.example.org", "192.0.2.5", "RETR",
                                                            "/data/f")
    assert (t.streams, t.stripes, t.taskid) == (4, 1, None)


def test_unpadded_microseconds_are_a_count_of_microseconds():
    # the 2007 NERSC sample: DATE=20070215110703.2102 means 11:07:03 + 2102 us, not + 0.2102 s
    ts, unpadded = parse_gridftp_time("20070215110703.2102")
    assert unpadded and ts == pytest.approx(1171537623 + 0.002102, abs=1e-9)
    padded, flag = parse_gridftp_time("20070215110703.002102")
    assert padded == ts and not flag
    assert parse_gridftp_time("20070215110703") == (1171537623, False)
    stats = LineStats()
    t = parse_line(gridftp_line("20070215110700.5", "20070215110703.2102", 10), 1, stats)
    assert t.duration == pytest.approx(3 + 0.002102 - 0.000005) and stats.unpadded_microseconds == 1


@pytest.mark.parametrize("text", ["2026010112000", "2026010112000a", "20261301120000", "20260101126000",
                                  "20260101120000.", "20260101120000.1234567", "20260101120000.12x"])
def test_bad_timestamps(text):
    with pytest.raises(MalformedLine):
        parse_gridftp_time(text)


@pytest.mark.parametrize("name", ["/data/my file.dat", "/data/a=b", "/data/x y=z BUFFER", "/a  double  space",
                                  "/data/trick BLOCK=3 NBYTES=9", "/data/ends with= "])
def test_file_with_spaces_and_equals(name):
    t = parse_line(gridftp_line("20260101120000.0", "20260101120001.0", 77, file=name))
    assert t.file == name and t.nbytes == 77


def test_file_that_contains_buffer_field_text():
    name = "/data/x BUFFER=1 BLOCK=2 NBYTES=3"
    t = parse_line(gridftp_line("20260101120000.0", "20260101120001.0", 5, file=name))
    assert t.file == name and t.nbytes == 5


def test_dest_forms():
    base = ("20260101120000.0", "20260101120001.0", 1)
    stats = LineStats()
    assert parse_line(gridftp_line(*base, dest="[0.0.0.0]"), 1, stats).remote == "unknown"
    assert stats.unknown_remote == 1
    assert parse_line(gridftp_line(*base, dest="1[198.51.100.7]")).remote == "198.51.100.7"
    assert parse_line(gridftp_line(*base, dest="2[198.51.100.7,198.51.100.8]")).remote == "198.51.100.7"
    assert parse_line(gridftp_line(*base, dest="[2001:db8::5]")).remote == "2001:db8::5"
    assert parse_line(gridftp_line(*base, dest="203.0.113.1")).remote == "203.0.113.1"
    with pytest.raises(MalformedLine):
        parse_line(gridftp_line(*base, dest="[1.2.3.4"))


def test_main_log_prefix_taskid_and_retrans():
    line = "[1234] Thu Jan  1 12:00:01 2026 :: Transfer stats: " + gridftp_line(
        "20260101120000.0", "20260101120001.0", 9, extra=" TASKID=7a1c-22 retrans=0,3,-1")
    t = parse_line(line)
    assert t.taskid == "7a1c-22" and t.nbytes == 9 and t.server == "dtn1.example.org"


def test_old_wuftpd_line_without_taskid():
    line = ("DATE=20070215110703.2102 HOST=dtn.nersc.gov PROG=wuftpd NL.EVNT=FTP_INFO START=20070215110700.8 "
            "USER=bob FILE=/home/bob/run 1.tar BUFFER=0 BLOCK=65536 NBYTES=4096 VOLUME=/ STREAMS=1 STRIPES=1 "
            "DEST=1[128.55.1.2] TYPE=STOR CODE=226")
    t = parse_line(line)
    assert (t.user, t.file, t.remote, t.kind, t.taskid) == ("bob", "/home/bob/run 1.tar", "128.55.1.2", "STOR", None)


def test_not_transfers():
    base = ("20260101120000.0", "20260101120001.0", 1)
    assert parse_line("") == "blank"
    assert parse_line("[12] Thu Jan 1 :: New connection from 1.2.3.4") == "not_transfer"
    assert parse_line(gridftp_line(*base, kind="LIST")) == "listing"
    assert parse_line(gridftp_line(*base, kind="MLSD")) == "listing"
    assert parse_line(gridftp_line(*base, code="426")) == "failed"
    assert parse_line(gridftp_line(*base).replace("FTP_INFO", "FTP_START")) == "other_event"


@pytest.mark.parametrize("line,reason", [
    ("DATE=20260101120001.0 HOST=h USER=u NBYTES=1", "no START"),
    ("DATE=20260101120001.0 START=20260101120000.0 USER=u", "no NBYTES"),
    ("DATE=20260101120000.0 START=20260101120001.0 NBYTES=1", "before START"),
    ("DATE=20260101120001.0 START=20260101120000.0 NBYTES=-5", "not a byte count"),
    ("DATE=20260101120001.0 START=garbage NBYTES=5", "not YYYY"),
    ("DATE=20260101120001.0 oops START=20260101120000.0 NBYTES=5", "not KEY=value"),
])
def test_malformed(line, reason):
    with pytest.raises(MalformedLine, match=reason):
        parse_line(line)


def test_split_fields_keeps_unknown_trailing_fields():
    f = split_fields(gridftp_line("20260101120000.0", "20260101120001.0", 1, extra=" TASKID=none NEWFIELD=x"))
    assert f["FILE"] == "/data/f" and f["NEWFIELD"] == "x" and f["NBYTES"] == "1"


def test_reader_counts_everything_and_reports_line_numbers(tmp_path: Path):
    lines = [
        gridftp_line("20260101120000.0", "20260101120010.0", 100),  # 1
        "",  # 2 blank
        "DATE=20260101120010.0 START=20260101120000.0 NBYTES=abc USER=x",  # 3 malformed
        gridftp_line("20260101120000.0", "20260101120001.0", 5, kind="NLST"),  # 4 listing
        "some other server log line",  # 5
        gridftp_line("20260101120000.0", "20260101120000.0", 5),  # 6 zero duration
        gridftp_line("20251231235959.0", "20251231235959.5", 5),  # 7 before the period
        gridftp_line("20260101120000.0", "20260101120001.0", 5, code="500"),  # 8 failed
        "DATE=2026 START=2026 NBYTES=1",  # 9 malformed
    ]
    raw = ("\r\n".join(lines) + "\r\n").encode() + b"DATE=20260101120003.0 START=20260101120001.0 USER=\xff\xfe " \
        b"FILE=/bad\xe9name BUFFER=0 NBYTES=8 DEST=[10.0.0.1] TYPE=STOR CODE=226\n"  # 10: not UTF-8
    path = tmp_path / "gridftp.log.gz"
    path.write_bytes(gzip.compress(raw))
    stats = LineStats()
    with open_binary(path) as (stream, label):
        got = list(iter_gridftp(stream, label, stats, start=NOON - 3600, until=NOON + 86400))
    assert [t.line for t in got] == [1, 6, 10]
    assert got[2].user == "\ufffd\ufffd" and got[2].file == "/bad\ufffdname"
    assert (stats.lines, stats.transfers, stats.listings, stats.failed, stats.not_transfer, stats.outside_period,
            stats.zero_duration, stats.malformed) == (10, 3, 1, 1, 1, 1, 1, 2)
    assert [(n, r.split(" ")[0]) for _, n, r in stats.examples] == [(3, "NBYTES"), (9, "timestamp")]
    d = stats.as_dict()
    assert d["malformed_examples"][0] == {"source": str(path), "line": 3,
                                          "reason": "NBYTES 'abc' is not a byte count"}


def test_examples_are_capped_but_all_counted():
    stats = LineStats(max_examples=3)
    list(iter_gridftp(io.BytesIO(b"DATE=x\n" * 10), "mem", stats))
    assert stats.malformed == 10 and len(stats.examples) == 3
