"""A named personal multi-site pool: ``lark pool up/exec/list/status/down``.

A pool is its nodes (:class:`lark.pool.node.Pool`: the central manager, the submit node and one execute
node per site, each in its own namespace) on the network of :mod:`lark.pool.sites`, with Lark installed
into the submit and execute nodes by the admin guide's own blocks (:mod:`lark.pool.install`). Its state
is ``CACHE_ROOT/pools/<name>.json``; a *keeper* process (started by ``lark pool up``) holds the pool's
and every node's ``flock`` while the pool lives, so another run's sweep never takes it for a dead one.
``down`` stops the keeper, takes the locks and removes everything, then checks that nothing is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lark.pool.image import CACHE_ROOT, ensure_image
from lark.pool.node import Pool, sweep_stale
from lark.pool.sites import (
    CM_ADDRESS,
    DOMAIN,
    Node,
    Plan,
    build_network,
    hosts_file,
    network_namespaces,
    node_config,
    plan,
    remove_network,
    site_config,
    validate_name,
)
from lark.pool.util import PoolError, in_parallel, mounts_under, pid_alive, try_lock, wait_until

POOLS_DIR = CACHE_ROOT / "pools"
BROKER_SOCKET = "/run/lark/netd.sock"
#: the token every node's daemons present to the others (signed with the central manager's pool key)
DAEMON_IDENTITY = f"condor@{DOMAIN}"

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def state_path(name: str) -> Path:
    return POOLS_DIR / f"{name}.json"


def lock_path(name: str) -> Path:
    return POOLS_DIR / f"{name}.lock"


def pool_names() -> list[str]:
    return sorted(p.stem for p in POOLS_DIR.glob("*.json")) if POOLS_DIR.is_dir() else []


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of its stat): a PID and this identify one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass
class PersonalPool:
    plan: Plan
    image: Path | None = None
    nodes: dict[str, Pool] = field(default_factory=dict)
    lark: bool = True
    _lock_fd: int | None = None

    def __post_init__(self) -> None:
        for node in self.plan.nodes:
            ready = {"cm": ("Collector", "Negotiator"), "submit": ("Scheduler",), "execute": ("Machine",)}[node.role]
            self.nodes[node.name] = Pool(
                f"{self.plan.prefix}-{node.name}", image=self.image, netns_name=self.plan.netns(node.name),
                base_config=node_config(self.plan, node), ready_types=ready,
                ready_constraint=None if node.role == "cm" else f'Machine == "{node.hostname}"',
                collector_address=f"{CM_ADDRESS}:9618", hostname=node.hostname)

    # -- names -----------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def submit(self) -> Pool:
        return self.nodes["submit"]

    @property
    def cm(self) -> Pool:
        return self.nodes["cm"]

    def execute_nodes(self) -> list[tuple[Node, Pool]]:
        return [(n, self.nodes[n.name]) for n in self.plan.nodes if n.role == "execute"]

    def node(self, name: str) -> Pool:
        self.plan.node(name)  # a clear error for an unknown node
        return self.nodes[name]

    # -- state -----------------------------------------------------------------------------------------------
    def _save(self, **extra: Any) -> None:
        state = {"name": self.name, "sites": [s.mbit for s in self.plan.sites], "slots": self.plan.slots,
                 "image": str(self.image), "lark": self.lark, "prefix": self.plan.prefix, **extra}
        old = self._load_state()
        state = {**old, **state}
        state_path(self.name).write_text(json.dumps(state, indent=1) + "\n")

    def _load_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(state_path(self.name).read_text()))
        except (OSError, ValueError):
            return {}

    @classmethod
    def load(cls, name: str) -> PersonalPool:
        """The pool ``name`` as ``up`` recorded it (its nodes not started by this process)."""
        validate_name(name)
        try:
            state = json.loads(state_path(name).read_text())
        except OSError:
            raise PoolError(f"no pool named {name!r} (lark pool list)") from None
        pool = cls(plan(name, len(state["sites"]), state["slots"], state["sites"]), image=Path(state["image"]),
                   lark=bool(state.get("lark", True)))
        for node in pool.nodes.values():
            with contextlib.suppress(OSError, ValueError):
                pid, mntns = (node.run_dir / "master.pid").read_text().split()
                if pid_alive(int(pid)):
                    node.master_pid, node._mntns_ino = int(pid), int(mntns)
        return pool

    def keeper(self) -> int | None:
        """PID of the live keeper process, or None (no keeper: the pool is down or its keeper died)."""
        state = self._load_state()
        pid, started = state.get("keeper_pid"), state.get("keeper_start")
        if isinstance(pid, int) and started and _start_time(pid) == started:
            return pid
        return None

    def in_use(self) -> bool:
        """True while a process holds the pool (its keeper, or the demo or a test that started it)."""
        if self._lock_fd is not None:
            return True
        fd = try_lock(lock_path(self.name))
        if fd is None:
            return True
        os.close(fd)
        return False

    # -- up ----------------------------------------------------------------------------------------------------
    def up(self, progress: Progress = _quiet) -> None:
        """Start every node on the multi-site network and install Lark; on failure remove what was made."""
        POOLS_DIR.mkdir(parents=True, exist_ok=True)
        self._lock_fd = try_lock(lock_path(self.name))
        if self._lock_fd is None or state_path(self.name).exists():
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise PoolError(f"a pool named {self.name!r} exists already (lark pool down {self.name})")
        self._save()
        try:
            t0 = time.monotonic()
            for name, node in self.nodes.items():
                node.prepare()
                # the image's single-machine configuration (all roles, itself as central manager) goes
                node.host_path("/etc/condor/config.d/00-minicondor").unlink(missing_ok=True)
                node.write("/etc/hosts", hosts_file(self.plan, self.plan.node(name), socket.gethostname()),
                           owner="root")
                # no name server: the nodes have a default route now, and a lookup sent to the host's
                # resolver would wait for its time-out instead of failing at once
                node.write("/etc/resolv.conf", "# lark pool: names come from /etc/hosts\n", owner="root")
            build_network(self.plan)
            progress(f"nodes and network ready: {', '.join(self.nodes)} ({time.monotonic() - t0:.1f} s)")
            t0 = time.monotonic()
            self.cm.start_master()
            self._share_pool_key()
            in_parallel([node.start_master for name, node in self.nodes.items() if name != "cm"])
            progress(f"HTCondor up: central manager, submit node, {len(self.plan.sites)} execute nodes "
                     f"({time.monotonic() - t0:.1f} s)")
            if self.lark:
                t0 = time.monotonic()
                self.install_lark()
                progress(f"Lark installed by the admin guide's blocks ({time.monotonic() - t0:.1f} s)")
        except BaseException:
            self.down()
            raise

    def _share_pool_key(self) -> None:
        """Every node gets the central manager's pool signing key and a daemon token signed with it, so
        the daemons of different nodes authenticate to each other (IDTOKENS) as ``condor@lark.test``."""
        key = self.cm.host_path("/etc/condor/passwords.d/POOL")
        try:
            wait_until("the central manager's pool signing key", key.exists, 30, 0.1)
        except TimeoutError as exc:
            raise PoolError(str(exc)) from None
        token = self.cm.run(["condor_token_create", "-identity", DAEMON_IDENTITY]).stdout.strip()
        for node in self.nodes.values():
            if node is not self.cm:
                node.write("/etc/condor/passwords.d/POOL", key.read_bytes(), owner="root", mode=0o600)
            node.write("/etc/condor/tokens.d/lark-pool", token + "\n", owner="root", mode=0o600)

    def install_lark(self) -> None:
        """The admin guide's execute block on every execute node (after its site file), the submit block on
        the submit node; in parallel, as the blocks mostly wait for daemons."""
        from lark.pool.install import build_wheel, fill_wheelhouse, run_guide_block

        with tempfile.TemporaryDirectory(prefix="lark-pool-wheel-") as tmp:
            wheel = build_wheel(Path(tmp))
            for node in [self.submit] + [pool for _, pool in self.execute_nodes()]:
                fill_wheelhouse(node, wheel)
        for node, pool in self.execute_nodes():
            pool.add_config("70-lark-site.conf", site_config(self.plan, node))

        def install(pool: Pool, block: str) -> Callable[[], None]:
            def run() -> None:
                done = run_guide_block(pool, block, environment_first=block == "submit")
                if done.returncode != 0:
                    raise PoolError(f"the admin guide's {block} block failed on {pool.prefix}:\n{done.stdout[-3000:]}\n"
                                    f"{done.stderr[-3000:]}")
            return run

        in_parallel([install(self.submit, "submit")] + [install(pool, "execute") for _, pool in self.execute_nodes()])

    # -- keeper ----------------------------------------------------------------------------------------------
    def detach(self) -> int:
        """Fork the keeper: it holds the pool's and the nodes' locks until ``down`` stops it. Returns its PID."""
        pid = os.fork()
        if pid == 0:  # the keeper: no terminal, its own session, only waits
            try:
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                while True:
                    signal.pause()
            finally:
                os._exit(0)
        start = wait_until("the keeper to exist", lambda: _start_time(pid), 5, 0.01)
        self._save(keeper_pid=pid, keeper_start=start)
        return pid

    def _stop_keeper(self, timeout: float = 10) -> None:
        pid = self.keeper()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            wait_until(f"the keeper {pid} to exit", lambda: not pid_alive(pid), timeout, 0.02)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # when this process forked it

    # -- down ------------------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every node and remove the pool: masters and every process of a node, mounts, namespaces
        (and with them every link), run directories, the state. Returns what could not be removed."""
        self._stop_keeper()
        if self._lock_fd is None:
            self._lock_fd = try_lock(lock_path(self.name))
            if self._lock_fd is None:
                raise PoolError(f"pool {self.name} is in use by another process ({lock_path(self.name)} is locked)")
        errors = []
        for node in self.nodes.values():
            if node._lock_fd is None and node.run_dir.exists():
                node._lock_fd = try_lock(node.lock_path)
            try:
                node.teardown()
            except PoolError as exc:
                errors.append(str(exc))
        errors += remove_network(self.plan)
        # a process killed a moment ago (e.g. a container job's) may still be on its way out
        left: list[str] = []

        def nothing_left() -> bool:
            left[:] = self.leftovers()
            return not left

        with contextlib.suppress(TimeoutError):
            wait_until("the pool's last processes to go", nothing_left, 10, 0.2)
        if not errors and not left:
            state_path(self.name).unlink(missing_ok=True)
            lock_path(self.name).unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None
        return errors + [f"left behind: {item}" for item in left]

    def leftovers(self) -> list[str]:
        """What of this pool still exists: namespaces, mounts, run directories, processes."""
        found = [f"netns {n}" for n in network_namespaces(self.plan) if Path(f"/run/netns/{n}").exists()]
        for node in self.nodes.values():
            if Path(node.netns_path).exists():
                found.append(f"netns {node.netns_name}")
            found += [f"mount {m}" for m in mounts_under(node.run_dir)]
            if node.run_dir.exists():
                found.append(f"directory {node.run_dir}")
            found += [f"process {pid}" for pid in _processes_in(node)]
        return found

    # -- using it ----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Daemons and slots (from the central manager's collector), each execute node's Lark broker, and
        the link ads the spider published."""
        daemons = [dict(zip(("type", "name"), line.split(None, 1), strict=False)) for line in
                   self._collector(["-any", "-af", "MyType", "Name"]) if line.strip()]
        slots = [dict(zip(("name", "site", "state", "activity", "has_lark"), line.split(), strict=False))
                 for line in self._collector(["-af", "Name", "LarkSite", "State", "Activity", "HasLark"])]
        links = [dict(zip(("source", "destination", "mbit"), line.split(), strict=False)) for line in
                 self._collector(["-any", "-constraint", 'MyType == "LarkNetworkLink"', "-af",
                                  "LarkSourceSite", "LarkDestinationSite", "LarkThroughputMbps"])]
        brokers = {node.name: broker_ping(pool) for node, pool in self.execute_nodes()}
        return {"name": self.name, "keeper": self.keeper(), "lark": self.lark,
                "sites": [{"site": s.name, "mbit": s.mbit, "lan": s.lan, "data_server": s.data_address}
                          for s in self.plan.sites],
                "nodes": {n.name: {"address": n.address, "netns": self.plan.netns(n.name), "role": n.role,
                                   "master": self.nodes[n.name].master_pid} for n in self.plan.nodes},
                "daemons": daemons, "slots": slots, "brokers": brokers, "links": links}

    def _collector(self, args: list[str]) -> list[str]:
        if self.cm.master_pid is None:
            return []
        done = self.cm.run(["condor_status", *args], check=False, timeout=30)
        return done.stdout.splitlines() if done.returncode == 0 else []


def broker_ping(pool: Pool) -> dict[str, Any]:
    """The broker's answer to a ping through its socket in the node (``{"ok": False}`` when none)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    try:
        s.connect(str(pool.host_path(BROKER_SOCKET)))
        s.sendall(b'{"op": "ping"}\n')
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        answer = json.loads(data) if data else {}
        return answer if isinstance(answer, dict) else {"ok": False}
    except (OSError, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        s.close()


def _processes_in(node: Pool) -> list[int]:
    if node._root_id is None and node.root.is_dir() and mounts_under(node.root):
        st = os.stat(node.root)
        node._root_id = (st.st_dev, st.st_ino)
    if node._netns_ino is None and Path(node.netns_path).exists():
        node._netns_ino = os.stat(node.netns_path).st_ino
    return node.processes() if (node._root_id or node._netns_ino) else []


@contextlib.contextmanager
def personal_pool(name: str, sites: int = 3, slots: int = 2, *, lark: bool = True,
                  progress: Progress = _quiet) -> Iterator[PersonalPool]:
    """Up a pool for the length of a ``with`` (tests, the demo), always down at the end."""
    p = start(name, sites, slots, lark=lark, progress=progress)
    try:
        yield p
    finally:
        errors = p.down()
        if errors:
            raise PoolError(f"pool {name} not removed completely: {errors}")


def start(name: str, sites: int = 3, slots: int = 2, *, lark: bool = True, progress: Progress = _quiet,
          capacities_mbit: tuple[int, ...] | None = None) -> PersonalPool:
    """Build or reuse the image (a progress line and its duration when it builds), then up the pool."""
    the_plan = plan(name, sites, slots) if capacities_mbit is None else plan(name, sites, slots, capacities_mbit)
    from lark.pool.image import image_path

    if not image_path().is_dir():
        progress(f"building the pool image {image_path()} (first run only; 1-3 minutes; needs the Debian "
                 "mirror and PyPI)")
    t0 = time.monotonic()
    image = ensure_image()
    if time.monotonic() - t0 > 1:
        progress(f"image built in {time.monotonic() - t0:.0f} s")
    sweep_stale()
    sweep_pools()
    p = PersonalPool(the_plan, image=image, lark=lark)
    p.up(progress)
    return p


def sweep_pools() -> list[str]:
    """Remove the pools whose keeper died without ``down`` (their lock is free). Returns their names."""
    swept = []
    for name in pool_names():
        fd = try_lock(lock_path(name))
        if fd is None:
            continue
        os.close(fd)
        try:
            p = PersonalPool.load(name)
            if p.keeper() is None and not p.down():
                swept.append(name)
        except PoolError:
            continue
    return swept

