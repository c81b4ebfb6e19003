"""IPAM: persisted, never double-allocating, across threads and processes."""

from __future__ import annotations

import ipaddress
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lark.config import parse_pool
from lark.errors import AddressExhausted
from lark.ipam import AddressRangePool, PortPool, SubnetPool, all_allocations, release_allocation


def test_subnets_of_any_pool_size(tmp_path: Path) -> None:
    pool = SubnetPool(tmp_path, ipaddress.ip_network("10.9.0.0/28"), 30)
    got = [pool.allocate(f"job{i}")[0] for i in range(4)]
    assert [str(n) for n in got] == ["10.9.0.0/30", "10.9.0.4/30", "10.9.0.8/30", "10.9.0.12/30"]
    with pytest.raises(AddressExhausted, match="10.9.0.0/28"):
        pool.allocate("job5")


def test_allocations_survive_a_restart_and_release(tmp_path: Path) -> None:
    net = ipaddress.ip_network("fd00:1::/48")
    first, alloc = SubnetPool(tmp_path, net, 64).allocate("aaaaaa")
    again = SubnetPool(tmp_path, net, 64)  # a new process reading the same directory
    second, _ = again.allocate("bbbbbb")
    assert first != second and first.prefixlen == 64
    assert {owner for _, owner in all_allocations(tmp_path)} == {"aaaaaa", "bbbbbb"}
    assert not release_allocation(tmp_path, alloc, "bbbbbb")  # not the owner
    assert release_allocation(tmp_path, alloc, "aaaaaa")
    assert not release_allocation(tmp_path, alloc, "aaaaaa")  # idempotent


def _allocate_in_process(args: tuple[str, int]) -> list[str]:
    directory, n = args
    pool = SubnetPool(Path(directory), ipaddress.ip_network("10.8.0.0/16"), 30)
    return [str(pool.allocate(f"p{n}-{i}")[0]) for i in range(8)]


def test_64_concurrent_allocations_never_collide(tmp_path: Path) -> None:
    with ThreadPoolExecutor(16) as ex:
        threads = list(ex.map(lambda i: str(SubnetPool(tmp_path, ipaddress.ip_network("10.8.0.0/16"), 30)
                                            .allocate(f"t{i}")[0]), range(32)))
    with multiprocessing.get_context("fork").Pool(4) as procs:
        processes = [s for chunk in procs.map(_allocate_in_process, [(str(tmp_path), n) for n in range(4)])
                     for s in chunk]
    everything = threads + processes
    assert len(everything) == 64
    assert len(set(everything)) == 64


def test_address_range_skips_the_gateway(tmp_path: Path) -> None:
    pool_cfg = parse_pool("198.51.100.0/24 198.51.100.1-198.51.100.3", 4)
    pool = AddressRangePool(tmp_path, "bridge", pool_cfg, ipaddress.ip_address("198.51.100.2"))
    got = [str(pool.allocate(f"j{i}")[0]) for i in range(2)]
    assert got == ["198.51.100.1/24", "198.51.100.3/24"]
    with pytest.raises(AddressExhausted):
        pool.allocate("j3")


def test_port_blocks_are_disjoint(tmp_path: Path) -> None:
    pool = PortPool(tmp_path, (40000, 40019))
    a, _ = pool.allocate("a", 5)
    b, alloc_b = pool.allocate("b", 10)
    c, _ = pool.allocate("c", 5)
    ranges = [set(range(x, y + 1)) for x, y in (a, b, c)]
    assert all(r1.isdisjoint(r2) for i, r1 in enumerate(ranges) for r2 in ranges[i + 1:])
    assert sum(len(r) for r in ranges) == 20
    with pytest.raises(AddressExhausted):
        pool.allocate("d", 1)
    assert release_allocation(tmp_path, alloc_b, "b")
    assert pool.allocate("e", 10)[0] == b


def test_an_allocation_left_empty_by_a_crash_is_listed_and_freed(tmp_path: Path) -> None:
    pool = SubnetPool(tmp_path, ipaddress.ip_network("10.7.0.0/29"), 30)
    _, alloc = pool.allocate("aaaaaa")
    (pool.directory / alloc.slot).write_text("")  # as if the writer died before writing its token
    assert [(a, o) for a, o in all_allocations(tmp_path)] == [(alloc, "")]
    assert release_allocation(tmp_path, alloc, "")
    assert list(all_allocations(tmp_path)) == []
