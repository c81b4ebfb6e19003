"""Names of the kernel objects Lark creates.

Every object carries the configured prefix (``LARK_NAME_PREFIX``, 2-6 characters) and the job's
token (6 random base-36 characters), so an admin can tell Lark's objects at a glance and a sweep
can find them. Interface names must fit IFNAMSIZ (15 characters): prefix + role + token <= 13.
Tokens are random rather than sequential because the kernel removes a deleted namespace's veth
asynchronously (~20 ms later): reusing a name at once would collide.
"""

from __future__ import annotations

import re
import secrets
import string

TOKEN_ALPHABET = string.ascii_lowercase + string.digits
TOKEN_LENGTH = 6
IFNAMSIZ = 15
JOB_IFNAME = "lark0"  # the job's own interface, inside its namespace (only the job sees it)


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def host_ifname(prefix: str, token: str) -> str:
    """Host end of a job's veth: ``<prefix>h<token>``."""
    name = f"{prefix}h{token}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ} characters")
    return name


def netns_name(prefix: str, token: str) -> str:
    """Name under /run/netns of a namespace Lark created itself (``lark run``, ``lark up``)."""
    return f"{prefix}-{token}"


def token_of_ifname(prefix: str, ifname: str) -> str | None:
    m = re.fullmatch(re.escape(prefix) + r"h([a-z0-9]{" + str(TOKEN_LENGTH) + "})", ifname)
    return m.group(1) if m else None


def token_of_netns(prefix: str, name: str) -> str | None:
    m = re.fullmatch(re.escape(prefix) + r"-([a-z0-9]{" + str(TOKEN_LENGTH) + "})", name)
    return m.group(1) if m else None
