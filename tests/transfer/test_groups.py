"""Who is in which group, for endpoints limited to groups: the service's one ``getgrouplist`` per user
must find what a walk over the whole group database finds (primary group and supplementary members)."""

from __future__ import annotations

import grp
import pwd

from lark.transfer.service import user_groups


def test_every_users_groups_are_those_the_group_database_gives() -> None:
    groups = grp.getgrall()
    users = pwd.getpwall()[:50]
    assert users
    for user in users:
        expected = {g.gr_name for g in groups if g.gr_gid == user.pw_gid or user.pw_name in g.gr_mem}
        assert set(user_groups(user.pw_name)) == expected, user.pw_name


def test_an_unknown_user_is_in_no_group() -> None:
    assert user_groups("lark-no-such-user") == ()
