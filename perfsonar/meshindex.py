"""Match measured series to the mesh pairs they belong to: cadence, coverage, ``restrict_to_mesh``.

A mesh names its hosts by name or by address, and an archive names a test's ends by address and
often by a name too — not always the same way round (a mesh of addresses measured by hosts whose
archive stores their names, or the reverse; IPv4 or IPv6). A series is therefore matched against the
mesh by every identity it has: its names, its addresses (canonical form), and the mesh hosts whose
resolved addresses include those addresses.

The index also records which mesh pairs received any series at all, one bit per pair (a byte per
directed pair of a group: 90 kB for a 301-host mesh), so a crawl can count and list the mesh pairs
the archives have no data for.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence

from perfsonar.meshes import MeshGroup
from perfsonar.normalise import canonical_ip


class _Seen:
    """Which directed pairs of one group have data."""

    __slots__ = ("a", "b", "flags", "group")

    def __init__(self, group: MeshGroup) -> None:
        self.group = group
        self.a = {h: i for i, h in enumerate(group.a)}
        self.b = {h: i for i, h in enumerate(group.b)} if group.kind != "mesh" else self.a
        size = len(self.a) * len(self.b) * (1 if group.kind == "mesh" else 2)
        self.flags = bytearray(size)

    def _slot(self, src: str, dst: str) -> int | None:
        na, nb = len(self.a), len(self.b)
        if src in self.a and dst in self.b:
            return self.a[src] * nb + self.b[dst]
        if self.group.kind != "mesh" and src in self.b and dst in self.a:
            return na * nb + self.b[src] * na + self.a[dst]
        return None

    def mark(self, src: str, dst: str) -> None:
        slot = self._slot(src, dst)
        if slot is not None:
            self.flags[slot] = 1

    def missing(self) -> Iterator[tuple[str, str]]:
        for src, dst in self.group.pairs():
            slot = self._slot(src, dst)
            if slot is not None and not self.flags[slot]:
                yield src, dst


class MeshIndex:
    """Cadence lookup and coverage over every mesh group of a crawl.

    ``addresses`` maps host names to their canonical addresses (the crawl's resolved names).
    """

    def __init__(self, groups: Sequence[MeshGroup], addresses: Mapping[str, Sequence[str]] | None = None) -> None:
        self.groups = list(groups)
        self._seen = [_Seen(g) for g in self.groups]
        self._by_source: dict[str, list[int]] = {}
        hosts: set[str] = set()
        for i, g in enumerate(self.groups):
            for host in g.sources():
                self._by_source.setdefault(host, []).append(i)
            hosts.update(g.a)
            hosts.update(g.b)
        self._hosts_by_ip: dict[str, list[str]] = {}
        for host in hosts:
            for ip in (addresses or {}).get(host, ()):
                self._hosts_by_ip.setdefault(ip, []).append(host)
        # Mesh hosts that the mesh also lists under another key (a name and its address, two names of
        # one address): only for those must a series be matched by every identity it has.
        self._aliased: set[str] = set()
        for ip, named in self._hosts_by_ip.items():
            if ip in hosts or len(named) > 1:
                self._aliased.update(named)
                if ip in hosts:
                    self._aliased.add(ip)

    def identities(self, name: str | None, ip: str | None) -> list[str]:
        """Every mesh-side key an endpoint may go by: its name, its address, mesh hosts at that address."""
        out: list[str] = []
        if name:
            low = name.strip().lower().rstrip(".")
            out.append(canonical_ip(low) or low)
        canon = canonical_ip(ip) if ip else None
        if canon:
            if canon not in out:
                out.append(canon)
            out.extend(h for h in self._hosts_by_ip.get(canon, ()) if h not in out)
        return out

    def _matches(self, test: str | None, src_name: str | None, src_ip: str | None, dst_name: str | None,
                 dst_ip: str | None) -> Iterator[tuple[int, str, str]]:
        dsts = self.identities(dst_name, dst_ip)
        if not dsts:
            return
        for s in self.identities(src_name, src_ip):
            for i in self._by_source.get(s, ()):
                g = self.groups[i]
                if test is not None and g.test != test:
                    continue
                for d in dsts:
                    if g.has(s, d):
                        yield i, s, d
                        break

    def interval(self, test: str, src_name: str | None, src_ip: str | None, dst_name: str | None,
                 dst_ip: str | None) -> float | None:
        """The mesh's cadence for a directed pair (the most frequent task wins); marks the pair as measured."""
        if src_name and dst_name:
            # The common case, tried first because it is called for every series: both ends named
            # as the mesh names them, and the mesh knows neither under another key.
            s, d = src_name.lower(), dst_name.lower()
            if s not in self._aliased and d not in self._aliased:
                found, cadence = self._by_keys(test, s, d)
                if found:
                    return cadence
        best: float | None = None
        for i, s, d in self._matches(test, src_name, src_ip, dst_name, dst_ip):
            self._seen[i].mark(s, d)
            cadence = self.groups[i].interval
            if cadence is not None and (best is None or cadence < best):
                best = cadence
        return best

    def _by_keys(self, test: str, src: str, dst: str) -> tuple[bool, float | None]:
        found, best = False, None
        for i in self._by_source.get(src, ()):
            g = self.groups[i]
            if g.test == test and g.has(src, dst):
                found = True
                self._seen[i].mark(src, dst)
                if g.interval is not None and (best is None or g.interval < best):
                    best = g.interval
        return found, best

    def has_pair(self, src_name: str | None, src_ip: str | None, dst_name: str | None, dst_ip: str | None) -> bool:
        """Whether any mesh tests this directed pair (any test kind)."""
        return next(self._matches(None, src_name, src_ip, dst_name, dst_ip), None) is not None

    def missing(self, tests: Collection[str] | None = None) -> list[tuple[str, str, str]]:
        """(test, source host, destination host) of every mesh pair no archive had a series for, among
        the groups of the test kinds in ``tests`` (default: all; pass the kinds the crawl read).

        A series marks the pair in every group of its test kind that holds it, so a pair is missing
        from all of them or from none.
        """
        out: dict[tuple[str, str, str], None] = {}
        for seen in self._seen:
            if tests is not None and seen.group.test not in tests:
                continue
            for src, dst in seen.missing():
                out[(seen.group.test, src, dst)] = None
        return list(out)
