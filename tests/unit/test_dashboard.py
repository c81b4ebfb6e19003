"""The Grafana dashboard in docs/ queries only metrics lark-netd really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from lark.firewall.base import ClassCounters, JobCounters
from lark.metrics import NodeMetrics
from lark.state import JobRecord

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "lark-node.json"


def exposed_names() -> set[str]:
    m = NodeMetrics()
    m.setups.labels("nat").inc()
    m.refused.labels("setup").inc()
    m.setup_seconds.observe(0.01)
    job = JobRecord(token="aaaaaa", job_id="1.0", mode="nat", status="up", netns="x", netns_owned=False, owner_uid=0)
    m.update_running([job], {"aaaaaa": JobCounters(1, 2, 3, 4, {"campus": ClassCounters(1, 2)})})
    return {s.name for f in text_string_to_metric_families(m.exposition().decode()) for s in f.samples}


def test_every_query_names_an_exposed_metric() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b(lark_[a-z_]+)\b", e)}
    assert names, "the dashboard queries nothing"
    assert names <= exposed_names(), f"queried but not exposed: {sorted(names - exposed_names())}"
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
