"""Where a profile's ``cpus`` hint puts a job on this node, read from sysfs.

:func:`resolve_cpus` takes the sysfs root, so tests hand it a fake tree. A hint never fails a job:
when sysfs cannot answer, the job is not pinned and the note says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lark.profiles.model import Profile
from lark.profiles.values import format_cpulist, parse_cpulist


@dataclass(frozen=True)
class CpuPlacement:
    """Where a hint resolved on this node: CPUs to pin to (None: do not pin) and why."""

    cpus: tuple[int, ...] | None
    note: str


def read_sysfs(path: Path) -> str | None:
    """One sysfs attribute, stripped; None when it cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def numa_node(ifname: str, sysfs: Path = Path("/sys"), _depth: int = 0) -> int | None:
    """NUMA node of a NIC; VLANs, bonds and bridges inherit it from their lower devices when they agree."""
    base = sysfs / "class" / "net" / ifname
    text = read_sysfs(base / "device" / "numa_node")
    if text is not None:
        try:
            node = int(text)
        except ValueError:
            return None
        return node if node >= 0 else None
    if _depth >= 4 or not base.is_dir():
        return None
    lowers = sorted(p.name[len("lower_"):] for p in base.iterdir() if p.name.startswith("lower_"))
    nodes = {numa_node(lower, sysfs, _depth + 1) for lower in lowers}
    return nodes.pop() if len(nodes) == 1 else None


def resolve_cpus(profile: Profile, sysfs: Path = Path("/sys")) -> CpuPlacement:
    """Turn the profile's ``cpus`` hint into CPUs of this node. A hint never fails a job: when sysfs
    cannot answer, the job is simply not pinned, and the note says why."""
    hint = profile.cpus
    if hint.kind == "none":
        return CpuPlacement(None, "not pinned")
    online_text = read_sysfs(sysfs / "devices" / "system" / "cpu" / "online")
    try:
        online = set(parse_cpulist(online_text)) if online_text else None
    except ValueError:
        online = None
    if hint.kind == "list":
        wanted, origin = hint.cpus, f"CPUs {format_cpulist(hint.cpus)}"
    else:
        parent = profile.parent or ""
        if not (sysfs / "class" / "net" / parent).exists():
            return CpuPlacement(None, f"not pinned: interface {parent!r} does not exist on this node")
        node = numa_node(parent, sysfs)
        if node is None:
            return CpuPlacement(None, f"not pinned: {parent} reports no NUMA node (virtual device or single-node "
                                      "machine)")
        text = read_sysfs(sysfs / "devices" / "system" / "node" / f"node{node}" / "cpulist")
        try:
            wanted = parse_cpulist(text) if text else ()
        except ValueError:
            wanted = ()
        if not wanted:
            return CpuPlacement(None, f"not pinned: NUMA node {node} of {parent} lists no CPUs")
        origin = f"NUMA node {node} of {parent}"
    cpus = tuple(c for c in wanted if online is None or c in online)
    if not cpus:
        return CpuPlacement(None, f"not pinned: none of {origin} is online (online: {online_text})")
    return CpuPlacement(cpus, f"{format_cpulist(cpus)} ({origin})")
