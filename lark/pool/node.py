"""One HTCondor node of a personal pool: an overlay of the image, its mounts, its netns and its master.

A :class:`Pool` is a throw-away overlayfs over the image (``CACHE_ROOT/runs/<prefix>/``), the source tree
bind-mounted read-only at ``/opt/lark/src``, and ``condor_master`` started with ``env -i`` through
``pivot_root`` in a private mount namespace **inside its network namespace** (by default
``<prefix>-pool``: only ``lo``, every daemon on 127.0.0.1), so nothing the node or Lark does reaches the
host's network. The single-node pool of the test suite is one of these; a multi-site pool
(:mod:`lark.pool.sites`) is several, each with its own namespace and configuration.

Everything a node creates carries its prefix in its name or path, and :meth:`Pool.teardown` (idempotent)
removes it. A run killed with SIGKILL is swept by the next one: each run holds an ``flock`` on its own lock
file, so a lock that can be taken means its owner is gone (:func:`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import signal
import string
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from lark.pool.image import (
    CACHE_ROOT,
    CONDOR_PATH,
    MASTER_PID,
    REPO,
    SRC,
    TOKENS,
    USER,
    VENV,
    console_scripts,
    ensure_image,
    image_info,
    image_path,
    plain_scripts,
)
from lark.pool.util import (
    HOST_PATH,
    JobHeld,
    PoolError,
    file_tail,
    log,
    mounts_under,
    pid_alive,
    remove_tree,
    tail,
    try_lock,
    umount_all,
    wait_until,
)
from lark.pool.util import run_host as _host

#: a small pool's daemons act in seconds, not minutes (both the test pool and `lark pool` use it)
QUICK_DAEMONS = """\
JOB_START_DELAY = 0
RUNBENCHMARKS = 0
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
NEGOTIATOR_UPDATE_INTERVAL = 5
SCHEDD_INTERVAL = 2
SCHEDD_MIN_INTERVAL = 1
STARTER_UPDATE_INTERVAL = 2
SHADOW_QUEUE_UPDATE_INTERVAL = 2
UPDATE_INTERVAL = 2
MASTER_UPDATE_INTERVAL = 5
# 25.14.1: the starter hangs after a failed PREPARE_JOB until the startd kills it
KILLING_TIMEOUT = 5
# housekeeping pass, also when ClassAdLifetime of generic ads is enforced
COLLECTOR.CLASSAD_LIFETIME = 20
SCHEDD_ENABLE_PER_USER_MATCH_LIMITS = False
"""

BASE_CONFIG = """\
# Lark test pool base configuration (tests/pool/harness.py). Tests add files after this one.
CONDOR_HOST = 127.0.0.1
NETWORK_INTERFACE = 127.0.0.1
BIND_ALL_INTERFACES = False
ENABLE_IPV6 = False
UID_DOMAIN = lark.test
FILESYSTEM_DOMAIN = lark.test
TRUST_UID_DOMAIN = True
# MANDATORY: else the root master rewrites host sysctls (pid_max, port range, ...) through /proc/sys
ENABLE_KERNEL_TUNING = False
NUM_CPUS = 2
""" + QUICK_DAEMONS + """\
# the perfSONAR spider advertises generic ads with an IDTOKEN for this identity (Pool.token_dir)
COLLECTOR.ALLOW_DAEMON = $(ALLOW_DAEMON) lark@lark.test
"""
BASE_CONFIG_NAME = "10-lark-testpool.conf"

# JobStatus values
IDLE, RUNNING, REMOVED, COMPLETED, HELD = 1, 2, 3, 4, 5

#: host sysctls that HTCondor's kernel tuning would change (see ENABLE_KERNEL_TUNING); snapshotted at start
WATCHED_SYSCTLS = ("kernel/pid_max", "net/ipv4/ip_local_port_range", "fs/pipe-user-pages-soft", "vm/dirty_bytes",
                   "vm/dirty_ratio", "net/core/rmem_max")

T = TypeVar("T")


def host_sysctls() -> dict[str, str]:
    """Current values of WATCHED_SYSCTLS as the host (this process) sees them."""
    values = {}
    for name in WATCHED_SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = " ".join(Path("/proc/sys", name).read_text().split())
    return values


def _random_prefix() -> str:
    return "lark" + "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(2))


class Pool:
    """One HTCondor pool (or one node of a multi-site pool) in an overlay of the image, in network
    namespace ``netns_name`` (default ``<prefix>-pool``).

    ``base_config`` is written as ``10-lark-testpool.conf`` (default: a personal pool on 127.0.0.1);
    ``ready_types`` are the ad types the collector must hold before :meth:`start` returns (a node whose
    collector is elsewhere checks that its own daemons advertised there).
    Paths given to the API are paths *inside* the chroot unless the name says ``host``.
    """

    def __init__(self, prefix: str | None = None, *, image: Path | None = None, repo: Path = REPO,
                 netns_name: str | None = None, base_config: str = BASE_CONFIG,
                 ready_types: Iterable[str] = ("Machine", "Scheduler", "Negotiator"),
                 ready_constraint: str | None = None, collector_address: str = "127.0.0.1:9618",
                 hostname: str | None = None) -> None:
        self.prefix = prefix or _random_prefix()
        self.base_config = base_config
        self.ready_types = frozenset(ready_types)
        self.ready_constraint = ready_constraint
        self.hostname = hostname  # set: the daemons get a UTS namespace of their own with this host name
        self.image = image or image_path()
        self.repo = repo
        self.run_dir = CACHE_ROOT / "runs" / self.prefix
        self.lock_path = CACHE_ROOT / "runs" / f"{self.prefix}.lock"
        self.root = self.run_dir / "root"
        self.netns_name = netns_name or f"{self.prefix}-pool"
        self.netns_path = f"/run/netns/{self.netns_name}"
        self.collector_address = collector_address
        self.master_pid: int | None = None
        self.timings: dict[str, float] = {}
        self.host_sysctls_at_start: dict[str, str] = {}
        self._lock_fd: int | None = None
        self._root_id: tuple[int, int] | None = None
        self._netns_ino: int | None = None
        self._mntns_ino: int | None = None
        self._job_seq = 0

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def chroot(self) -> Path:
        """Host path of the pool's root directory (the overlay)."""
        return self.root

    @property
    def condor_version(self) -> str:
        return str(image_info(self.image)["condor_version"])

    def host_path(self, path: str | os.PathLike[str]) -> Path:
        """Host path of a path inside the chroot (relative paths: relative to larkuser's home)."""
        inside = Path(path)
        if not inside.is_absolute():
            inside = Path(self.home(USER)) / inside
        return self.root / inside.relative_to("/")

    def chroot_path(self, host_path: str | os.PathLike[str]) -> str:
        """Path inside the chroot of a host path below :attr:`chroot`."""
        return "/" + str(Path(host_path).relative_to(self.root))

    def home(self, user: str = USER) -> str:
        return "/root" if user == "root" else self._passwd(user)[2]

    def _passwd(self, user: str) -> tuple[int, int, str]:
        for line in (self.root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2]), int(fields[3]), fields[5]
        raise PoolError(f"no user {user!r} in the chroot")

    # -- set-up --------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Mount the overlay and friends, create the netns, write config and shims, start condor_master."""
        self.prepare()
        self._start_master()

    def start_master(self) -> None:
        """Start condor_master after :meth:`prepare` (and whatever the caller set up in between)."""
        self._start_master()

    def prepare(self) -> None:
        """Everything of :meth:`start` but the master: the overlay, mounts, netns (only ``lo``), base config."""
        if os.geteuid() != 0:
            raise PoolError("the HTCondor test pool needs root")
        if not (self.image / "etc/lark-testpool-image.json").exists():
            raise PoolError(f"image {self.image} is missing or incomplete; call ensure_image() first")
        t0 = time.monotonic()
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        # the lock is taken before the run directory exists: a run directory whose lock is free is stale
        self._lock_fd = try_lock(self.lock_path)
        if self._lock_fd is None:
            raise PoolError(f"{self.lock_path} is held by another process")
        try:
            self.run_dir.mkdir()
        except FileExistsError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise PoolError(f"{self.run_dir} already exists (prefix in use?)") from None
        upper, work = self.run_dir / "upper", self.run_dir / "work"
        for d in (upper, work, self.root):
            d.mkdir()
        self._save_state()
        r = str(self.root)
        _host(["mount", "-t", "overlay", f"lark-{self.prefix}", "-o",
               f"lowerdir={self.image},upperdir={upper},workdir={work}", r])
        _host(["mount", "--make-private", r])
        st = os.stat(r)
        self._root_id = (st.st_dev, st.st_ino)
        _host(["mount", "-t", "proc", f"lark-{self.prefix}-proc", f"{r}/proc"])
        _host(["mount", "--rbind", "/dev", f"{r}/dev"])
        _host(["mount", "--make-rslave", f"{r}/dev"])
        _host(["mount", "-t", "tmpfs", "-o", "mode=755", f"lark-{self.prefix}-run", f"{r}/run"])
        src = self.root / SRC.lstrip("/")
        src.mkdir(parents=True, exist_ok=True)
        _host(["mount", "--bind", str(self.repo), str(src)])
        _host(["mount", "-o", "remount,bind,ro", str(src)])
        # the network namespace; sysfs mounted from inside it shows the pool's interfaces, not the host's
        from lark import netns  # the project's own helper; imported late so `build` works without it

        netns.create_named(self.netns_name)
        self._netns_ino = os.stat(self.netns_path).st_ino
        _host(["ip", "-n", self.netns_name, "link", "set", "lo", "up"])
        _host(["nsenter", f"--net={self.netns_path}", "mount", "-t", "sysfs", "-o", "nosuid,nodev,noexec",
               f"lark-{self.prefix}-sys", f"{r}/sys"])
        condor_uid, condor_gid = self._passwd("condor")[:2]
        for d in ("run/lock", "run/condor", "run/lock/condor"):  # as the package's tmpfiles.d does
            (self.root / d).mkdir(exist_ok=True)
            if "condor" in d:
                os.chown(self.root / d, condor_uid, condor_gid)
                (self.root / d).chmod(0o775)
        self._install_lark()
        self.write(f"/etc/condor/config.d/{BASE_CONFIG_NAME}", self.base_config, owner="root")
        self.timings["prepare"] = time.monotonic() - t0

    def _save_state(self) -> None:
        state = {"prefix": self.prefix, "netns": self.netns_name, "image": str(self.image), "pid": os.getpid()}
        (self.run_dir / "state.json").write_text(json.dumps(state) + "\n")

    def _install_lark(self) -> None:
        """``.pth`` pointing at the read-only working tree, and console-script shims in /usr/local/bin."""
        site = sorted((self.root / VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
        if not site:
            raise PoolError(f"no site-packages in {VENV} in the image")
        (site[0] / "lark-src.pth").write_text(SRC + "\n")
        bin_dir = self.root / "usr/local/bin"
        for name, target in console_scripts(self.repo).items():
            module, _, func = target.partition(":")
            shim = bin_dir / name
            shim.write_text(f"#!{VENV}/bin/python3\n# Lark test pool shim: {name} -> {target}\nimport sys\n\n"
                            f"from {module} import {func}\n\nsys.exit({func}())\n")
            shim.chmod(0o755)
        for script in plain_scripts(self.repo):
            # as pip installs them: the content (through any symlink), executable
            target = bin_dir / script.name
            target.write_bytes(script.read_bytes())
            target.chmod(0o755)

    def _start_master(self) -> None:
        out = _host(["chroot", str(self.root), "condor_config_val", "ENABLE_KERNEL_TUNING"], check=False)
        if out.stdout.strip().lower() not in ("false", "0", "no"):
            raise PoolError(f"refusing to start: ENABLE_KERNEL_TUNING is {out.stdout.strip()!r}, must be False")
        if not self.host_sysctls_at_start:
            self.host_sysctls_at_start = host_sysctls()
        pid_file = self.root / MASTER_PID.lstrip("/")
        pid_file.unlink(missing_ok=True)
        env = " ".join(["PATH=" + CONDOR_PATH, "LANG=C.UTF-8", "HOME=/root"])
        uts = ('hostname "$2" && ', ["--uts"], [self.hostname]) if self.hostname else ("", [], [])
        script = (uts[0] + 'cd "$1" && mkdir -p .oldroot && pivot_root . .oldroot && cd / && umount -l /.oldroot && '
                  f'rmdir /.oldroot && exec /usr/bin/env -i {env} /usr/sbin/condor_master -pidfile {MASTER_PID}')
        t0 = time.monotonic()
        _host(["nsenter", f"--net={self.netns_path}", "unshare", "--mount", *uts[1], "--propagation", "private",
               "--", "/bin/sh", "-c", script, "lark-pool-start", str(self.root), *uts[2]], timeout=30)
        pid = wait_until("master.pid", lambda: pid_file.exists() and pid_file.read_text().strip(), 20)
        self.master_pid = int(pid)
        self._mntns_ino = os.stat(f"/proc/{self.master_pid}/ns/mnt").st_ino
        (self.run_dir / "master.pid").write_text(f"{self.master_pid} {self._mntns_ino}\n")

        def ready() -> bool:
            if not pid_alive(self.master_pid or 0):
                raise PoolError("condor_master died during start-up\n" + self._log_tails())
            argv = ["condor_status", "-any", "-af", "MyType"]
            if self.ready_constraint:
                argv[2:2] = ["-constraint", self.ready_constraint]
            res = self.run(argv, check=False, timeout=20)
            return self.ready_types <= set(res.stdout.split())

        try:
            wait_until(" and ".join(sorted(self.ready_types)) + " ads", ready, 60, 0.25)
        except TimeoutError as exc:
            raise PoolError(f"{exc}\n{self._log_tails()}") from None
        self.timings["master_start"] = time.monotonic() - t0

    def _log_tails(self) -> str:
        logs = self.root / "var/log/condor"
        return "\n".join(file_tail(logs / name, 20) for name in ("MasterLog", "StartLog", "SchedLog", "CollectorLog"))

    # -- running things ------------------------------------------------------------------------------------------
    def command(self, argv: Sequence[str], *, user: str = "root", env: Mapping[str, str] | None = None,
                cwd: str | None = None, pivoted: bool = False) -> list[str]:
        """The host argv that runs ``argv`` in the node as :meth:`run` does (for callers that want the
        terminal, e.g. ``lark pool exec``)."""
        home = self.home(user)
        uid, gid = (0, 0) if user == "root" else self._passwd(user)[:2]
        if pivoted:
            if self.master_pid is None:
                raise PoolError("pivoted=True needs a running master")
            prefix = ["nsenter", f"--target={self.master_pid}", "--mount", "--net", "--uts", "--root"]
            if user != "root":
                prefix += [f"--setuid={uid}", f"--setgid={gid}"]
        else:
            prefix = ["nsenter", f"--net={self.netns_path}", "chroot"]
            if user != "root":
                prefix += [f"--userspec={uid}:{gid}", f"--groups={gid}"]
            prefix.append(str(self.root))
        base = {"PATH": CONDOR_PATH, "LANG": "C.UTF-8", "HOME": home, "USER": user, "LOGNAME": user}
        envs = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
        full = [*prefix, "/usr/bin/env", "-i", f"--chdir={cwd or home}", *envs, *argv]
        return full

    def run(self, cmd: Sequence[str] | str, *, user: str = "root", check: bool = True, timeout: float = 60.0,
            input: str | None = None, env: Mapping[str, str] | None = None, cwd: str | None = None,
            pivoted: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (argv, or a string for ``bash -c``) in the pool's netns and root, with a clean
        environment, as ``user`` (``cwd`` defaults to the user's home). Raises PoolError on non-zero exit
        when ``check``.

        Default: a plain ``chroot`` from the host's mount namespace (mounts it makes are cleaned up by
        teardown). ``pivoted=True``: inside the master's own mount namespace, where the pool's root is a real
        root as the daemons see it (user namespaces and so apptainer work there, not in a chroot)."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = self.command(argv, user=user, env=env, cwd=cwd, pivoted=pivoted)
        log.debug("pool run (%s): %s", user, shlex.join(argv))
        try:
            proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input,
                                  env={"PATH": HOST_PATH}, check=False)
        except subprocess.TimeoutExpired as exc:
            raise PoolError(f"timed out after {timeout} s: {shlex.join(argv)}\n{tail(exc.stdout)}\n"
                            f"{tail(exc.stderr)}") from None
        if check and proc.returncode != 0:
            raise PoolError(f"[{user}] {shlex.join(argv)} exited {proc.returncode}\n"
                            f"stdout:\n{tail(proc.stdout)}\nstderr:\n{tail(proc.stderr)}")
        return proc

    def call_in_netns(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread switched into the pool's netns (e.g. htcondor2 calls from the host venv)."""
        from lark import netns

        return netns.call_in(self.netns_path, fn)

    def write(self, path: str, content: str | bytes, *, owner: str = USER, mode: int | None = None) -> Path:
        """Write a file inside the chroot (relative paths: in ``owner``'s home), creating parent directories
        owned by ``owner``. Mode defaults to 0755 for ``#!`` scripts, else 0644. Returns the host path."""
        inside = Path(path) if Path(path).is_absolute() else Path(self.home(owner)) / path
        host = self.root / inside.relative_to("/")
        uid, gid = (0, 0) if owner == "root" else self._passwd(owner)[:2]
        missing = [p for p in reversed(host.parents) if p.is_relative_to(self.root) and not p.exists()]
        for d in missing:
            d.mkdir()
            os.chown(d, uid, gid)
        data = content.encode() if isinstance(content, str) else content
        host.write_bytes(data)
        os.chown(host, uid, gid)
        host.chmod(mode if mode is not None else (0o755 if data.startswith(b"#!") else 0o644))
        return host

    # -- configuration -------------------------------------------------------------------------------------------
    def add_config(self, name: str, text: str) -> Path:
        """Write ``/etc/condor/config.d/<name>`` (files are read in name order; base is 10-...). Then call
        :meth:`reconfig`, or :meth:`restart_daemon` for knobs that need it (NO_JOB_NETWORKING: startd)."""
        if "/" in name or name == BASE_CONFIG_NAME:
            raise ValueError(f"bad config file name {name!r}")
        return self.write(f"/etc/condor/config.d/{name}", text, owner="root")

    def remove_config(self, name: str) -> None:
        (self.root / "etc/condor/config.d" / name).unlink(missing_ok=True)

    def config_val(self, knob: str) -> str:
        return self.run(["condor_config_val", knob]).stdout.strip()

    def reconfig(self) -> None:
        self._check_safe_config()
        self.run(["condor_reconfig"])

    def _check_safe_config(self) -> None:
        if self.config_val("ENABLE_KERNEL_TUNING").lower() not in ("false", "0", "no"):
            raise PoolError("a config file set ENABLE_KERNEL_TUNING to true: refusing")

    def restart_daemon(self, daemon: str = "startd", timeout: float = 60.0) -> None:
        """Restart one daemon (``startd``, ``schedd``, ...) and wait until it has advertised again.

        Done as ``condor_off`` + ``condor_on`` (about 2 s): ``condor_restart -daemon`` makes the master wait
        10 s before it starts the daemon again."""
        self._check_safe_config()
        mytype = {"startd": "Machine", "schedd": "Scheduler", "negotiator": "Negotiator",
                  "collector": "Collector"}[daemon]

        def start_times() -> set[str]:
            res = self.run(["condor_status", "-any", "-constraint", f'MyType == "{mytype}"', "-af:r",
                            "DaemonStartTime"], check=False, timeout=20)
            return set(res.stdout.split())

        def running() -> list[int]:
            found = []
            for pid in self.processes():
                with contextlib.suppress(OSError):
                    # comm is cut to 15 characters ("condor_negotiat"): compare the same prefix
                    if Path(f"/proc/{pid}/comm").read_text().strip() == f"condor_{daemon}"[:15]:
                        found.append(pid)
            return found

        before = start_times()
        try:
            self.run(["condor_off", "-daemon", daemon])
            wait_until(f"{daemon} to exit", lambda: not running(), timeout, 0.1)
            self.run(["condor_on", "-daemon", daemon])
            wait_until(f"{daemon} to restart and advertise", lambda: (start_times() - before) != set(), timeout, 0.2)
        except TimeoutError as exc:
            raise PoolError(f"{exc}\n{self._log_tails()}") from None

    def restart(self) -> None:
        """Stop and start the whole pool (same overlay: config, history and files stay)."""
        self.stop()
        self._start_master()

    # -- jobs ------------------------------------------------------------------------------------------------------
    def submit(self, submit: str, *, user: str = USER, files: Mapping[str, str | bytes] | None = None,
               directory: str | None = None) -> int:
        """Write ``submit`` (and ``files``) into a fresh directory in ``user``'s home (``~/jobs/<n>``, or
        ``directory``), run ``condor_submit -terse`` there as ``user``, and return the cluster id."""
        self._job_seq += 1
        directory = directory or f"{self.home(user)}/jobs/{self._job_seq}"
        for name, content in {**(files or {}), "job.sub": submit}.items():
            self.write(f"{directory}/{name}", content, owner=user)
        out = self.run(["condor_submit", "-terse", "job.sub"], user=user, cwd=directory).stdout
        first = out.strip().splitlines()[-1].split()[0]  # "12.0 - 12.0"
        return int(first.split(".")[0])

    def q(self, constraint: str | None = None, attrs: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """``condor_q -allusers -json`` (all users' jobs still in the queue)."""
        argv = ["condor_q", "-allusers", "-json"]
        if constraint:
            argv += ["-constraint", constraint]
        if attrs:
            argv += ["-attributes", ",".join(attrs)]
        return self._json(self.run(argv).stdout)

    def history(self, cluster: int | None = None, attrs: Iterable[str] | None = None,
                constraint: str | None = None) -> list[dict[str, Any]]:
        """``condor_history -json`` for one cluster (or a constraint)."""
        argv = ["condor_history", "-json"]
        cons = [c for c in (f"ClusterId == {cluster}" if cluster is not None else None, constraint) if c]
        if cons:
            argv += ["-constraint", " && ".join(f"({c})" for c in cons)]
        if attrs:
            argv += ["-attributes", ",".join(attrs)]
        return self._json(self.run(argv).stdout)

    def status(self, constraint: str | None = None, attrs: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """``condor_status -any -json`` (all ads in the collector)."""
        argv = ["condor_status", "-any", "-json"]
        if constraint:
            argv += ["-constraint", constraint]
        if attrs:
            argv += ["-attributes", ",".join(attrs)]
        return self._json(self.run(argv).stdout)

    @staticmethod
    def _json(text: str) -> list[dict[str, Any]]:
        text = text.strip()
        return json.loads(text) if text else []

    def wait(self, cluster: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until every job of ``cluster`` has left the queue and return their history ads.

        Raises :class:`JobHeld` as soon as one is held, PoolError (with ``better-analyze``) on timeout."""
        queued: list[dict[str, Any]] = []

        failures: list[str] = []

        def left_queue() -> list[dict[str, Any]]:
            try:
                queued[:] = self.q(f"ClusterId == {cluster}", ["ClusterId", "ProcId", "JobStatus", "HoldReason"])
            except PoolError as exc:  # a schedd busy beyond the tool's time-out (a loaded machine): ask again
                failures.append(str(exc))
                return []
            held = [ad for ad in queued if ad.get("JobStatus") == HELD]
            if held:
                raise JobHeld(f"job {cluster}.{held[0].get('ProcId')} held: {held[0].get('HoldReason')}", held)
            return [] if queued else sorted(self.history(cluster), key=lambda ad: ad.get("ProcId", 0))

        try:
            return wait_until(f"cluster {cluster} to leave the queue", left_queue, timeout, 0.3)
        except TimeoutError:
            analysis = self.run(["condor_q", "-better-analyze", str(cluster)], check=False).stdout
            raise PoolError(f"cluster {cluster} not done after {timeout:.0f} s: {queued}\n"
                            f"{tail(analysis, 40)}" + (f"\nlast condor_q failure: {failures[-1]}" if failures else "")
                            ) from None

    def wait_status(self, cluster: int, status: int | Iterable[int], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Wait until every queued job of ``cluster`` has JobStatus in ``status`` (e.g. RUNNING, HELD) and
        return their ``condor_q`` ads."""
        wanted = {status} if isinstance(status, int) else set(status)

        def reached() -> list[dict[str, Any]]:
            ads = self.q(f"ClusterId == {cluster}")
            return ads if ads and all(ad.get("JobStatus") in wanted for ad in ads) else []

        try:
            return wait_until(f"cluster {cluster} in status {sorted(wanted)}", reached, timeout, 0.3)
        except TimeoutError as exc:
            raise PoolError(f"{exc}: {self.q(f'ClusterId == {cluster}', ['ProcId', 'JobStatus', 'HoldReason'])}"
                            ) from None

    # -- tokens ----------------------------------------------------------------------------------------------------
    def token_dir(self, identity: str = "lark@lark.test") -> Path:
        """Host path of a directory (0700) holding one IDTOKEN (0600) for ``identity`` with DAEMON and READ
        authorization. Inside the chroot it is ``/etc/lark/tokens/<identity>``. Use it with
        ``_CONDOR_SEC_TOKEN_DIRECTORY=<dir> _CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS``."""
        inside = f"{TOKENS}/{identity}"
        host = self.root / inside.lstrip("/")
        token = host / "token"
        if not token.exists():
            text = self.run(["condor_token_create", "-identity", identity, "-authz", "DAEMON", "-authz",
                             "READ"]).stdout.strip()
            host.mkdir(parents=True, exist_ok=True, mode=0o700)
            host.chmod(0o700)
            fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text + "\n")
        return host

    # -- teardown -----------------------------------------------------------------------------------------------
    def _belongs(self, pid: int) -> bool:
        """True only for processes provably of this pool: their root is our overlay root, or they are in our
        netns, or in the master's mount namespace *and* their root is a Lark test pool image."""
        if pid == os.getpid():
            return False
        try:
            if self._root_id is not None:
                st = os.stat(f"/proc/{pid}/root")
                if (st.st_dev, st.st_ino) == self._root_id:
                    return True
            if self._netns_ino is not None and os.stat(f"/proc/{pid}/ns/net").st_ino == self._netns_ino:
                return True
            if self._mntns_ino is not None and os.stat(f"/proc/{pid}/ns/mnt").st_ino == self._mntns_ino:
                return os.path.exists(f"/proc/{pid}/root/etc/lark-testpool-image.json")
        except OSError:
            return False
        return False

    def processes(self) -> list[int]:
        """PIDs of the live (non-zombie) processes that belong to this pool (see :meth:`_belongs`)."""
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and self._belongs(int(p)) and pid_alive(int(p))]

    def stop(self, timeout: float = 30.0) -> list[int]:
        """SIGQUIT the master and wait for it; then freeze (SIGSTOP) and SIGKILL, by PID, every process still
        proven to be ours (so nothing can respawn meanwhile). Returns those PIDs (empty after a clean stop)."""
        t0 = time.monotonic()
        pid = self.master_pid
        if pid is None:
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.root / MASTER_PID.lstrip("/")).read_text())
        if pid and pid_alive(pid) and self._belongs(pid):
            os.kill(pid, signal.SIGQUIT)
            with contextlib.suppress(TimeoutError):
                wait_until("condor_master to exit", lambda: not pid_alive(pid), timeout, 0.1)
        self.master_pid = None
        frozen: set[int] = set()
        for _ in range(100):
            new = [p for p in self.processes() if p not in frozen]
            if not new:
                break
            for p in new:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGSTOP)
            frozen.update(new)
        if frozen:
            log.warning("pool %s: killing %d leftover processes: %s", self.prefix, len(frozen), sorted(frozen)[:20])
            for p in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                wait_until("leftover processes to exit", lambda: not any(pid_alive(p) for p in frozen), 10, 0.1)
        self.timings["stop"] = time.monotonic() - t0
        return sorted(frozen)

    def teardown(self) -> None:
        """Stop the pool and remove everything it created. Idempotent; safe after a partial start."""
        errors: list[str] = []
        if self.run_dir.exists() or Path(self.netns_path).exists():
            try:
                if self._root_id is None and self.root.is_dir() and mounts_under(self.root):
                    st = os.stat(self.root)
                    self._root_id = (st.st_dev, st.st_ino)
                if self._netns_ino is None and Path(self.netns_path).exists():
                    self._netns_ino = os.stat(self.netns_path).st_ino
                self.stop()
            except Exception as exc:  # keep going: the mounts must go whatever happened
                errors.append(f"stop: {exc}")
            try:
                umount_all(self.run_dir)
            except Exception as exc:
                errors.append(f"umount: {exc}")
            try:
                from lark import netns

                netns.delete_named(self.netns_name)
            except Exception as exc:
                errors.append(f"netns: {exc}")
            try:
                if not mounts_under(self.run_dir):
                    remove_tree(self.run_dir)
            except Exception as exc:
                errors.append(f"remove: {exc}")
        if self._lock_fd is not None:
            if not errors:
                self.lock_path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
        if errors:
            raise PoolError(f"teardown of pool {self.prefix} incomplete: " + "; ".join(errors))


def sweep_stale() -> list[str]:
    """Tear down pools of runs that died without teardown (their run lock is free). Returns their prefixes."""
    swept = []
    runs = CACHE_ROOT / "runs"
    if not runs.is_dir():
        return swept
    for run_dir in sorted(runs.iterdir()):
        if not run_dir.is_dir():
            continue
        stale = Pool(run_dir.name)
        stale._lock_fd = try_lock(stale.lock_path)
        if stale._lock_fd is None:
            continue  # its run is alive
        try:
            log.warning("sweeping pool left by a dead run: %s", run_dir)
            with contextlib.suppress(OSError, ValueError):
                pid, mntns = (run_dir / "master.pid").read_text().split()
                stale.master_pid, stale._mntns_ino = int(pid), int(mntns)
            with contextlib.suppress(OSError, ValueError):
                stale.netns_name = json.loads((run_dir / "state.json").read_text())["netns"]
                stale.netns_path = f"/run/netns/{stale.netns_name}"
            stale.teardown()  # also unlinks the lock file and releases it
            swept.append(run_dir.name)
        except PoolError as exc:  # leave it for a later sweep; a new run never reuses its names
            log.warning("could not sweep %s: %s", run_dir, exc)
        finally:
            if stale._lock_fd is not None:
                os.close(stale._lock_fd)
                stale._lock_fd = None
    return swept


def unused_pool(stem: str) -> Pool:
    """A pool (not started) on the cached image, named ``<stem><x>`` with a prefix no run holds, after
    sweeping the pools of dead runs: for the benchmark scripts, which run beside the tests."""
    image = ensure_image()
    sweep_stale()
    for _ in range(10):
        pool = Pool(stem + random.choice(string.ascii_lowercase + string.digits), image=image)
        if not (pool.run_dir.exists() or pool.lock_path.exists()):
            return pool
    raise PoolError(f"no free pool prefix {stem}<x>")


def raise_interrupt(signum: int, frame: object) -> None:
    """Signal handler: turn SIGTERM (or an ignored SIGINT) into KeyboardInterrupt so teardown code runs."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def running_pool(prefix: str | None = None) -> Iterator[Pool]:
    """Build or reuse the image, start a pool, yield it, always tear it down."""
    image = ensure_image()
    sweep_stale()
    pool = Pool(prefix, image=image)
    try:
        pool.start()
        yield pool
    finally:
        pool.teardown()

