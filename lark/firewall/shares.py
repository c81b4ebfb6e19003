"""Classification for the per-user shares (:mod:`lark.shares`): nftables sets each job's packets'
``skb->priority`` to its HTB class, from a map keyed on the job's interface.

HTB uses ``skb->priority`` as the class id when it names one of its classes (``htb_classify``),
so a packet reaches its job's leaf with one map lookup whatever the number of jobs: no tc filter
chain, no per-job rule. In the host namespace, for jobs with a host-side veth::

    table inet <prefix>shares  { map up { type ifname : classid }  map down { ... }
        chain classify { type filter hook forward priority 10; policy accept;
                         meta priority set iifname map @up       # the job's uploads
                         meta priority set oifname map @down } } # what it downloads
    table bridge <prefix>shares { the same, for jobs whose veth is a bridge port }

The inet chain sees routed (NAT) jobs' packets after ``ip_forward`` has set the priority from
the TOS (it does so before the FORWARD hook), so the class sticks; masquerade happens later and
does not touch it. Bridged packets do not pass the inet hooks (unless br_netfilter is on; the
same value is then set twice), hence the bridge family table.

A job without a host-side interface (macvlan: its interface sends straight through the parent's
queue) is classified inside its own namespace, where the job cannot change it::

    table inet <prefix>shares { chain classify { type filter hook postrouting priority 10;
                                                 oifname "<job interface>" meta priority set 1:<job> } }

The maps are rewritten whole from the job records in one transaction (``flush`` + elements), so
a job coming, going or a sweep all leave exactly the records' elements, with no handles.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lark.firewall import libnft

FAMILIES = ("inet", "bridge")


def table_name(prefix: str) -> str:
    return f"{prefix}shares"


@dataclass(frozen=True)
class Classified:
    """One host-side veth and the class its packets belong to in each direction."""

    ifname: str
    job_class: str  # "1:1000"
    down: bool  # downloads are shared too (the same class id on the download IFB's tree)


def _quote(ifname: str) -> str:
    if not ifname.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"unexpected interface name {ifname!r}")
    return f'"{ifname}"'


def host_commands(prefix: str, jobs: Sequence[Classified]) -> str:
    """The nft script that makes the host's maps hold exactly ``jobs`` (tables created if missing)."""
    table = table_name(prefix)
    lines: list[str] = []
    for family in FAMILIES:
        lines += [
            f"add table {family} {table}",
            f"add map {family} {table} up {{ type ifname : classid; }}",
            f"add map {family} {table} down {{ type ifname : classid; }}",
            f"add chain {family} {table} classify {{ type filter hook forward priority 10; policy accept; }}",
            f"flush chain {family} {table} classify",
            f"add rule {family} {table} classify meta priority set iifname map @up",
            f"add rule {family} {table} classify meta priority set oifname map @down",
            f"flush map {family} {table} up",
            f"flush map {family} {table} down",
        ]
        lines += _elements("add", family, table, jobs)
    return "\n".join(lines) + "\n"


def _elements(verb: str, family: str, table: str, jobs: Sequence[Classified]) -> list[str]:
    up = ", ".join(f"{_quote(j.ifname)} : {j.job_class}" for j in jobs)
    down = ", ".join(f"{_quote(j.ifname)} : {j.job_class}" for j in jobs if j.down)
    keys = ", ".join(_quote(j.ifname) for j in jobs)
    keys_down = ", ".join(_quote(j.ifname) for j in jobs if j.down)
    if verb == "delete":
        up, down = keys, keys_down
    return [f"{verb} element {family} {table} {name} {{ {items} }}" for name, items in (("up", up), ("down", down))
            if items]


def update_commands(prefix: str, had: Sequence[Classified], now: Sequence[Classified]) -> str:
    """Only the elements that changed between ``had`` (in the maps) and ``now``."""
    gone = [j for j in had if j not in now]
    new = [j for j in now if j not in had]
    lines: list[str] = []
    for family in FAMILIES:
        lines += _elements("delete", family, table_name(prefix), gone)
        lines += _elements("add", family, table_name(prefix), new)
    return "\n".join(lines) + "\n" if lines else ""


def job_side_commands(prefix: str, ifname: str, up_class: str) -> str:
    table = table_name(prefix)
    return "\n".join([
        f"add table inet {table}",
        f"add chain inet {table} classify {{ type filter hook postrouting priority 10; policy accept; }}",
        f"flush chain inet {table} classify",
        f"add rule inet {table} classify oifname {_quote(ifname)} meta priority set {up_class}",
    ]) + "\n"


def apply_host(prefix: str, jobs: Iterable[Classified], netns: str | None = None) -> None:
    """Make the host's classification hold exactly ``jobs``; none: remove the tables."""
    jobs = list(jobs)
    if not jobs:
        remove_host(prefix, netns)
        return
    libnft.with_session(netns, lambda session: session.execute(host_commands(prefix, jobs)), persistent=True)


def update_host(prefix: str, had: Sequence[Classified], now: Sequence[Classified], netns: str | None = None) -> None:
    """Add and delete only what changed (a job joining or leaving); the whole rewrite if the
    elements were not as expected (someone flushed the tables)."""
    commands = update_commands(prefix, had, now)
    if not commands:
        return
    try:
        # a persistent context: freeing one after a delete waits ~13 ms for nf_tables' cleanup
        libnft.with_session(netns, lambda session: session.execute(commands), persistent=True)
    except libnft.NftError:
        apply_host(prefix, now, netns)


def remove_host(prefix: str, netns: str | None = None) -> None:
    for family in FAMILIES:
        libnft.delete_table(table_name(prefix), family, netns)


def apply_job_side(prefix: str, ifname: str, up_class: str, netns: str) -> None:
    libnft.run(job_side_commands(prefix, ifname, up_class), netns)


def host_elements(prefix: str, netns: str | None = None) -> dict[str, dict[str, str]]:
    """``{"up": {ifname: class}, "down": {...}}`` of the inet table (for check and tests)."""
    out: dict[str, dict[str, str]] = {"up": {}, "down": {}}
    if not libnft.table_exists(table_name(prefix), "inet", netns):
        return out
    for obj in libnft.list_one(f"list table inet {table_name(prefix)}", netns):
        found = obj.get("map")
        if found and found.get("name") in out:
            for key, value in found.get("elem", []):
                out[found["name"]][key] = value
    return out
