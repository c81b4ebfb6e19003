"""Persisted address and port allocation.

Like CNI's host-local plugin: every allocation is a file named after its slot, holding the owner's
token, in one directory per pool. Allocation happens under an exclusive ``flock`` on the pool's
lock file, so concurrent broker threads and separate processes (``lark up`` run in parallel) never
hand out the same slot, and a restart reads the directory back instead of starting over.
Next-fit from a persisted cursor spreads allocations so a just-freed subnet is not reused at once.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from lark.errors import AddressExhausted, LarkError
from lark.locks import file_lock
from lark.values import AddressPool, IPAddress, IPNetwork


@dataclass(frozen=True)
class Allocation:
    """One allocated slot: which pool directory and which slot, for release and sweep."""

    pool: str  # directory name under <state>/ipam
    slot: str  # file name inside it


class SlotPool:
    """``count`` numbered slots persisted under ``directory``; subclasses give slots a meaning."""

    def __init__(self, directory: Path, count: int, description: str) -> None:
        if count <= 0:
            raise LarkError(f"address pool {description} has no usable slot")
        self.directory = directory
        self.count = count
        self.description = description
        directory.mkdir(parents=True, exist_ok=True)

    def _locked(self) -> AbstractContextManager[None]:
        return file_lock(self.directory / ".lock")

    def _taken(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for entry in os.scandir(self.directory):
            if entry.name.startswith(".") or not entry.name.isdigit():
                continue
            try:
                out[int(entry.name)] = Path(entry.path).read_text().strip()
            except FileNotFoundError:
                continue
        return out

    def _claim(self, owner: str, reserved: set[int] = frozenset()) -> int:  # type: ignore[assignment]
        with self._locked():
            taken = self._taken()
            cursor_file = self.directory / ".cursor"
            try:
                start = int(cursor_file.read_text()) % self.count
            except (FileNotFoundError, ValueError):
                start = 0
            for step in range(self.count):
                slot = (start + step) % self.count
                if slot in taken or slot in reserved:
                    continue
                # Created in place under the lock (no rename, no truncate: on ext4 both force a
                # flush). A crash mid-write leaves an empty owner, which a sweep frees.
                fd = os.open(self.directory / str(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, owner.encode())
                finally:
                    os.close(fd)
                _write_cursor(cursor_file, slot + 1)
                return slot
        raise AddressExhausted(f"no free slot left in {self.description} ({self.count} in use)")

    def release(self, slot: int | str, owner: str | None = None) -> bool:
        """Free a slot (only if ``owner`` matches, when given). Idempotent."""
        path = self.directory / str(slot)
        with self._locked():
            try:
                if owner is not None and path.read_text().strip() != owner:
                    return False
                path.unlink()
                return True
            except FileNotFoundError:
                return False

    def owners(self) -> dict[int, str]:
        return self._taken()

    def allocation(self, slot: int) -> Allocation:
        return Allocation(self.directory.name, str(slot))


class SubnetPool(SlotPool):
    """Cuts ``network`` into subnets of ``length`` (NAT jobs: one subnet per job)."""

    def __init__(self, state_dir: Path, network: IPNetwork, length: int) -> None:
        self.network = network
        self.length = length
        name = f"{network.network_address}_{network.prefixlen}-s{length}".replace(":", ".")
        count = min(2 ** (length - network.prefixlen), 2**24)
        super().__init__(state_dir / "ipam" / name, count, f"{network} (/{length} per job)")

    def subnet(self, slot: int) -> IPNetwork:
        size = 2 ** (network_bits(self.network) - self.length)
        base = int(self.network.network_address) + slot * size
        return ipaddress.ip_network((base, self.length))

    def allocate(self, owner: str) -> tuple[IPNetwork, Allocation]:
        slot = self._claim(owner)
        return self.subnet(slot), self.allocation(slot)


class AddressRangePool(SlotPool):
    """Single addresses from a pool's first..last range, never the gateway (bridge/macvlan jobs)."""

    def __init__(self, state_dir: Path, mode: str, pool: AddressPool, gateway: IPAddress | None) -> None:
        self.pool = pool
        self.gateway = gateway
        count = min(int(pool.last) - int(pool.first) + 1, 2**24)
        name = f"{mode}-{pool.first}-{pool.last}".replace(":", ".")
        super().__init__(state_dir / "ipam" / name, count, f"{mode} pool {pool.first}-{pool.last}")

    def address(self, slot: int) -> IPAddress:
        return ipaddress.ip_address(int(self.pool.first) + slot)

    def allocate(self, owner: str) -> tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, Allocation]:
        reserved: set[int] = set()
        if self.gateway is not None and self.pool.first <= self.gateway <= self.pool.last:  # type: ignore[operator]
            reserved.add(int(self.gateway) - int(self.pool.first))
        slot = self._claim(owner, reserved)
        iface = ipaddress.ip_interface(f"{self.address(slot)}/{self.pool.network.prefixlen}")
        return iface, self.allocation(slot)


class PortPool(SlotPool):
    """Blocks of host ports for inbound forwarding: slot ``i`` is ports first+i*size .. +size-1.

    Jobs asking for different counts get blocks of the size they asked for; blocks are aligned
    on their own size, so two allocations never overlap whatever sizes were asked before.
    """

    def __init__(self, state_dir: Path, port_range: tuple[int, int]) -> None:
        self.first, self.last = port_range
        super().__init__(state_dir / "ipam" / f"ports-{self.first}-{self.last}", self.last - self.first + 1,
                         f"inbound port range {self.first}-{self.last}")

    def allocate(self, owner: str, size: int) -> tuple[tuple[int, int], Allocation]:
        """Reserve ``size`` consecutive ports; the allocation file is the block's first port offset."""
        if size <= 0 or size > self.count:
            raise AddressExhausted(f"cannot reserve {size} ports in {self.description}")
        with self._locked():
            used: set[int] = set()
            for start, text in self._taken().items():
                # each file records "owner size"
                parts = text.split()
                length = int(parts[1]) if len(parts) > 1 else 1
                used.update(range(start, start + length))
            for start in range(0, self.count - size + 1, size):
                if used.isdisjoint(range(start, start + size)):
                    (self.directory / str(start)).write_text(f"{owner} {size}")
                    return (self.first + start, self.first + start + size - 1), self.allocation(start)
        raise AddressExhausted(f"no {size} free consecutive ports left in {self.description}")

    def owners(self) -> dict[int, str]:
        return {slot: text.split()[0] for slot, text in self._taken().items()}

    def release(self, slot: int | str, owner: str | None = None) -> bool:
        path = self.directory / str(slot)
        with self._locked():
            try:
                if owner is not None and path.read_text().split()[0] != owner:
                    return False
                path.unlink()
                return True
            except (FileNotFoundError, IndexError):
                return False


def _owner(text: str) -> str:
    """The owner token in an allocation file ("" for a file a crash left empty)."""
    parts = text.split()
    return parts[0] if parts else ""


def _write_cursor(path: Path, value: int) -> None:
    """Overwrite a fixed-width number in place: no truncation, so no forced flush."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.pwrite(fd, f"{value:>12}".encode(), 0)
    finally:
        os.close(fd)


def network_bits(net: IPNetwork) -> int:
    return 32 if net.version == 4 else 128


def release_allocation(state_dir: Path, alloc: Allocation, owner: str) -> bool:
    """Free an allocation recorded in a job record, whatever pool type it came from."""
    directory = state_dir / "ipam" / alloc.pool
    path = directory / alloc.slot
    if not directory.is_dir():
        return False
    with file_lock(directory / ".lock"):
        try:
            if _owner(path.read_text()) != owner:
                return False
            path.unlink()
            return True
        except FileNotFoundError:
            return False


def all_allocations(state_dir: Path) -> Iterator[tuple[Allocation, str]]:
    """Every allocation on disk with its owner token (for sweep)."""
    root = state_dir / "ipam"
    if not root.is_dir():
        return
    for pool in sorted(root.iterdir()):
        if not pool.is_dir():
            continue
        for entry in os.scandir(pool):
            if entry.name.startswith(".") or not entry.name.isdigit():
                continue
            try:
                owner = _owner(Path(entry.path).read_text())
            except FileNotFoundError:
                continue
            yield Allocation(pool.name, entry.name), owner
