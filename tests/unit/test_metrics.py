"""NodeMetrics' exposition, read back with prometheus-client's own parser (no broker, no kernel)."""

from __future__ import annotations

import os
import pwd

from prometheus_client.parser import text_string_to_metric_families

from lark.firewall.base import ClassCounters, JobCounters
from lark.metrics import NodeMetrics
from lark.state import JobRecord

ME = pwd.getpwuid(os.getuid()).pw_name


def record(token: str, job: str, uid: int | None = None) -> JobRecord:
    return JobRecord(token=token, job_id=job, mode="nat", status="up", netns="/run/netns/x", netns_owned=False,
                     owner_uid=os.getuid() if uid is None else uid)


def counters(b_in: int, b_out: int, campus_out: int = 0) -> JobCounters:
    return JobCounters(bytes_in=b_in, bytes_out=b_out, packets_in=1, packets_out=2,
                       classes={"campus": ClassCounters(bytes_out=campus_out)})


def samples(m: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(m.exposition().decode()) for s in f.samples}


def test_user_totals_are_ended_plus_running_and_ended_jobs_leave() -> None:
    m = NodeMetrics()
    a, b = record("aaaaaa", "1.0"), record("bbbbbb", "2.0")
    m.update_running([a, b], {"aaaaaa": counters(10, 100, 40), "bbbbbb": counters(5, 50)})
    s = samples(m)
    assert s[("lark_job_bytes_total", (("direction", "out"), ("job", "1.0"), ("mode", "nat"), ("user", ME)))] == 100
    assert s[("lark_job_class_bytes_total", (("class", "campus"), ("direction", "out"), ("job", "1.0"),
                                             ("user", ME)))] == 40
    assert s[("lark_user_bytes_total", (("direction", "out"), ("user", ME)))] == 150
    assert s[("lark_jobs_running", (("mode", "nat"),))] == 2

    m.job_ended(a, counters(11, 120, 45))  # its final values, a little more than the last snapshot
    # a snapshot read just before job 1 ended must not bring it back
    m.update_running([a, b], {"aaaaaa": counters(10, 100, 40), "bbbbbb": counters(6, 60)})
    s = samples(m)
    assert not [k for k in s if ("job", "1.0") in k[1]]
    assert s[("lark_user_bytes_total", (("direction", "out"), ("user", ME)))] == 120 + 60
    assert s[("lark_user_class_bytes_total", (("class", "campus"), ("direction", "out"), ("user", ME)))] == 45
    assert s[("lark_jobs_running", (("mode", "nat"),))] == 1


def test_unknown_uids_are_labelled_by_number() -> None:
    m = NodeMetrics()
    uid = 4_000_000_000  # no such account
    m.update_running([record("cccccc", "3.0", uid)], {"cccccc": counters(1, 2)})
    assert samples(m)[("lark_user_bytes_total", (("direction", "in"), ("user", str(uid))))] == 1
