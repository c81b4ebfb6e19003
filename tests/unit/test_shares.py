"""The share policy (lark.shares) and its knobs: pure functions, no kernel."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lark.config import load_config
from lark.errors import ConfigError, LarkError
from lark.metrics import NodeMetrics
from lark.node_summary import share_attributes
from lark.shares import (
    JOB_MINORS,
    USER_MINORS,
    ShareMember,
    ShareSettings,
    accounting_group,
    allocate_classes,
    classid,
    classid_text,
    parse_weights,
    plan_tree,
    share_rows,
)
from lark.state import JobRecord

MB = 1_000_000 // 8  # bytes per second in one Mbit/s


def member(token: str, user: str, user_class: int, job_class: int, group: str | None = None,
           up: int = 0, down: int = 0) -> ShareMember:
    return ShareMember(token, user, group, user_class, job_class, up, down)


def test_weights_parse_users_uids_and_groups_and_name_the_bad_entry() -> None:
    assert parse_weights("alice=2, 1001=0.5,\n group:group_physics=3") == (
        ("alice", 2.0), ("1001", 0.5), ("group:group_physics", 3.0))
    assert parse_weights("") == ()
    for bad, words in (("alice", "NAME=WEIGHT"), ("alice=x", "not a number"), ("alice=0", "above 0"),
                       ("alice=1, alice=2", "twice"), ("a b=1", "not a user name"), ("alice=nan", "above 0")):
        with pytest.raises(ValueError, match=words):
            parse_weights(bad)


def test_a_users_own_weight_wins_over_the_groups() -> None:
    s = ShareSettings("eth0", 100, weights=(("alice", 2.0), ("group:phys", 5.0)))
    assert s.weight("alice", "phys") == 2.0
    assert s.weight("bob", "phys") == 5.0
    assert s.weight("carol", None) == 1.0


def test_equal_weights_split_the_link_per_user_then_per_job() -> None:
    s = ShareSettings("eth0", 900)
    members = [member("a1", "alice", 0x10, 0x1000), member("b1", "bob", 0x11, 0x1001),
               member("b2", "bob", 0x11, 0x1002), member("c1", "carol", 0x12, 0x1003),
               member("c2", "carol", 0x12, 0x1004), member("c3", "carol", 0x12, 0x1005),
               member("c4", "carol", 0x12, 0x1006)]
    tree = {c.minor: c for c in plan_tree(900, s, members, "up")}
    assert tree[1].rate == tree[1].ceil == 900 * MB
    assert [tree[u].rate for u in (0x10, 0x11, 0x12)] == [300 * MB] * 3  # 900 / 3 users
    assert tree[0x1001].rate == 150 * MB and tree[0x1003].rate == 75 * MB  # bob's 300 / 2, carol's / 4
    assert all(tree[m].ceil == 900 * MB for m in (0x10, 0x1000, 0x1006))  # idle bandwidth is lent
    assert sum(tree[u].rate for u in (0x10, 0x11, 0x12)) <= tree[1].rate
    assert tree[0x10].parent == 1 and tree[0x1003].parent == 0x12


def test_weights_caps_and_ceiling_shape_the_tree() -> None:
    s = ShareSettings("eth0", 1000, weights=(("alice", 3.0),), user_ceiling_mbit=600)
    members = [member("a1", "alice", 0x10, 0x1000, up=100), member("b1", "bob", 0x11, 0x1001)]
    tree = {c.minor: c for c in plan_tree(1000, s, members, "up")}
    assert tree[0x10].rate == 600 * MB  # 750 by weight, but never above the ceiling
    assert tree[0x11].rate == 250 * MB and tree[0x11].ceil == 600 * MB
    assert tree[0x1000].ceil == tree[0x1000].rate == 100 * MB  # the job's own cap
    assert tree[0x10].quantum > tree[0x11].quantum  # lending follows the rates
    down = {c.minor: c for c in plan_tree(500, s, members, "down")}
    assert down[0x1000].ceil == 500 * MB  # no download cap: the user's ceiling within the link


def test_classes_are_allocated_per_user_and_reused_and_never_collide() -> None:
    existing = [member("a1", "alice", 0x10, 0x1000), member("b1", "bob", 0x12, 0x1001)]
    assert allocate_classes(existing, "alice") == (0x10, 0x1002)
    assert allocate_classes(existing, "carol") == (0x11, 0x1002)
    assert allocate_classes([], "dave") == (USER_MINORS[0], JOB_MINORS[0])
    assert classid(0x1002) == 0x11002 and classid_text(0x1002) == "1:1002"
    with pytest.raises(ValueError, match="direction"):
        plan_tree(100, ShareSettings("eth0", 100), existing, "sideways")


def test_running_out_of_classes_is_a_reason_the_job_is_held_with() -> None:
    """A LarkError (the broker records it in the job's ad and the job is held), not an internal error."""
    users = [member(f"t{i}", f"user{i}", c, JOB_MINORS[i]) for i, c in enumerate(USER_MINORS)]
    with pytest.raises(LarkError, match=f"more than {len(USER_MINORS)} users"):
        allocate_classes(users, "one-more")
    jobs = [member(f"j{i}", "alice", USER_MINORS[0], c) for i, c in enumerate(JOB_MINORS)]
    with pytest.raises(LarkError, match=f"more than {len(JOB_MINORS)} jobs"):
        allocate_classes(jobs, "alice")


def test_share_knobs_are_validated_with_the_knob_named() -> None:
    config = load_config([], {"LARK_SHARES_UPLINK": "eth0", "LARK_SHARES_UPLINK_MBIT": "1000",
                              "LARK_SHARES_WEIGHTS": "alice=2"})
    assert config.shares == ShareSettings("eth0", 1000, 0, (("alice", 2.0),), 0)
    assert not load_config([], {}).shares.enabled
    for overrides, knob in (({"LARK_SHARES_UPLINK": "eth0"}, "LARK_SHARES_UPLINK_MBIT"),
                            ({"LARK_SHARES_UPLINK_MBIT": "100"}, "LARK_SHARES_UPLINK_MBIT"),
                            ({"LARK_SHARES_DOWNLINK_MBIT": "100"}, "LARK_SHARES_DOWNLINK_MBIT"),
                            ({"LARK_SHARES_UPLINK": "eth 0", "LARK_SHARES_UPLINK_MBIT": "1"}, "LARK_SHARES_UPLINK"),
                            ({"LARK_SHARES_WEIGHTS": "alice"}, "LARK_SHARES_WEIGHTS")):
        with pytest.raises(ConfigError, match=knob):
            load_config([], overrides)


def test_config_errors_name_the_file_and_line(tmp_path) -> None:  # noqa: ANN001
    conf = tmp_path / "50-lark.conf"
    conf.write_text("LARK_SHARES_UPLINK = eth0\nLARK_SHARES_UPLINK_MBIT = 100\nLARK_SHARES_WEIGHTS = bob=-1\n")
    with pytest.raises(ConfigError) as err:
        load_config([conf])
    assert f"{conf}:3" in str(err.value) and "LARK_SHARES_WEIGHTS" in str(err.value)


def test_the_node_advertises_its_share_policy() -> None:
    assert share_attributes(ShareSettings()) == {"LarkSharePolicy": "off"}
    attrs = share_attributes(ShareSettings("eth0", 1000, 800, (("alice", 2.0),), 500))
    assert attrs == {"LarkSharePolicy": "eth0 up 1000/down 800 Mbit; user ceiling 500 Mbit; weights alice=2",
                     "LarkShareUplinkMbit": 1000, "LarkShareDownlinkMbit": 800, "LarkShareUserCeilingMbit": 500}


def record(token: str, user: str, user_class: int, job_class: int, cap: int = 0) -> JobRecord:
    return JobRecord(token=token, job_id=f"{token}.0", mode="nat", status="up", netns=f"/run/netns/x-{token}",
                     netns_owned=True, bandwidth_out_mbit=cap,
                     share={"user": user, "group": "", "user_class": user_class, "job_class": job_class,
                            "uplink": "eth0"})


def test_lark_list_rows_and_metrics_come_from_the_records() -> None:
    settings = ShareSettings("eth0", 300)
    records = [record("aaaaaa", "alice", 0x10, 0x1000), record("bbbbbb", "bob", 0x11, 0x1001, cap=20),
               record("cccccc", "bob", 0x11, 0x1002)]
    records.append(JobRecord(token="dddddd", job_id="9.0", mode="none", status="up", netns="/x", netns_owned=True))
    rows = share_rows(settings, records)
    assert set(rows) == {"aaaaaa", "bbbbbb", "cccccc"}  # a job without a share has no row
    assert rows["bbbbbb"] == {"user": "bob", "class": "1:11", "job_class": "1:1001", "rate_mbit": 20.0,
                              "ceil_mbit": 20.0, "user_rate_mbit": 150.0}
    assert rows["cccccc"]["rate_mbit"] == 75.0 and rows["cccccc"]["ceil_mbit"] == 300.0
    assert share_rows(ShareSettings(), records) == {}
    # a record being torn down no longer holds its class
    gone = replace(records[0], status="tearing-down")
    assert "aaaaaa" not in share_rows(settings, [gone, *records[1:]])
    # a damaged share in a record is ignored, not fatal to the tree of the others
    damaged = replace(records[0], share={"user": "alice", "user_class": "x"})
    assert set(share_rows(settings, [damaged, *records[1:]])) == {"bbbbbb", "cccccc"}

    metrics = NodeMetrics(shares=settings)
    metrics.update_running(records, {})
    text = metrics.exposition().decode()
    assert 'lark_user_share_mbit{user="bob"} 150.0' in text
    assert 'lark_user_share_jobs{user="bob"} 2.0' in text
    assert 'lark_user_share_mbit{user="alice"} 150.0' in text
    without = NodeMetrics()
    without.update_running(records, {})
    assert 'lark_user_share_mbit{' not in without.exposition().decode()  # shares off: no series


def test_the_accounting_group_comes_from_the_job_ad() -> None:
    assert accounting_group({"AcctGroup": "group_physics", "Owner": "alice"}) == "group_physics"
    assert accounting_group({"Owner": "alice"}) is None
    assert accounting_group({"AcctGroup": "  "}) is None
    assert accounting_group({"AcctGroup": 3}) is None
