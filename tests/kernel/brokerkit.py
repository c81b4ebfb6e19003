"""A real ``lark-netd`` in a sandbox namespace, fake starters and attackers around it.

Shared by ``tests/kernel/test_broker_attacks.py`` and ``benchmarks/broker_faults.py`` (no pytest here).

* :class:`BrokerLab` owns one directory ``/run/<prefix>-brokerlab-XXXXXX`` (0755, so that an
  unprivileged user reaches the socket and the scripts; under ``/run`` because no directory above it
  is writable by others, which a starter check may look at). In it: ``bin/condor_starter``, a
  root-owned copy of the interpreter binary (what ``-D LARK_STARTER=`` names), the broker's socket,
  state dir, execute dir, journal and log. The broker runs as ``<python> -m lark.broker.main --stderr
  -D ...`` inside the sandbox host namespace (``nsenter --net``), importing Lark from the tree this
  module was imported from (``PYTHONPATH``), so ``PYTHONPATH=<other checkout> pytest ...`` tests that
  checkout's broker.
* :class:`Driver` is one process running :data:`DRIVER` (standard library only), controlled by JSON
  lines on stdin/stdout. Run by the starter copy it *is* a fake ``condor_starter`` (the broker looks at
  the wrapper's parent's ``/proc/<pid>/exe``); run by the plain interpreter as ``nobody`` it is an
  attacker. It forks children ("wrappers") that unshare a fresh network namespace (and a user
  namespace when unprivileged), drop to the job user and then do what they are told: send a request,
  or connect, hand the connected descriptor to the driver (SCM_RIGHTS) and exit. ``spawn(pid=P)``
  gives the child pid P by writing ``/proc/sys/kernel/ns_last_pid`` = P - 1 just before ``fork``.
* The test or benchmark writes the job ad itself (root): ``<execute>/dir_<starter pid>/scratch/.job.ad``,
  with ``scratch`` owned by the job user, as HTCondor 25.x does.

Every process here is started here and ended by its PID; the lab's directory goes in ``close()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import lark
from tests.support import wait_until

SOURCE_ROOT = Path(lark.__file__).resolve().parent.parent  # the tree whose broker is tested
PYTHON = Path(sys.executable)  # the venv's interpreter (runs the broker)
BASE_PYTHON = Path(os.path.realpath(sys.executable))  # the binary (copied as the fake starter)

# The fake starter / attacker. argv: SOCKET. Protocol: one JSON command per line on stdin, one JSON
# answer per line on stdout ({"error": ...} when a command failed). Children talk to it over a
# socketpair made before fork.
DRIVER = r'''
import ctypes
import json
import os
import socket
import struct
import sys
import time

SOCK = sys.argv[1]
CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
LIBC = ctypes.CDLL(None, use_errno=True)
children = {}  # pid -> control socket
held = {}  # handle -> connected socket to the broker
flood = []  # idle connections opened by "flood"
counter = [0]


def request(sock, op, timeout, raw=None):
    """Send one request line on a connected socket, read the reply line (or note that it closed)."""
    sock.settimeout(timeout)
    data = b""
    try:
        sock.sendall(raw.encode() if raw is not None else json.dumps({"op": op}).encode() + b"\n")
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as err:
        # a broker that refuses a caller when it connects has already answered and closed: the
        # answer waits in the receive buffer even though the send failed
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
        except OSError:
            data = b""
        if not data:
            return {"_oserror": f"{type(err).__name__}: {err}"}
    if not data:
        return {"_closed": True}
    try:
        return json.loads(data)
    except ValueError:
        return {"_raw": data.decode(errors="replace")}


def ask(op, timeout=30.0, raw=None):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(SOCK)
        except OSError as err:
            return {"_oserror": f"connect: {type(err).__name__}: {err}"}
        return request(sock, op, timeout, raw)


def send(sock, obj):
    sock.sendall(json.dumps(obj).encode() + b"\n")


def become(spec):
    """In the child: [user +] network namespace, then the job user."""
    if spec.get("newnet"):
        flags = CLONE_NEWNET | (CLONE_NEWUSER if spec.get("userns") else 0)
        if LIBC.unshare(flags) != 0:
            raise OSError(ctypes.get_errno(), "unshare: " + os.strerror(ctypes.get_errno()))
    if spec.get("uid") is not None:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])


def child_main(ctl, spec):
    try:
        try:
            become(spec)
        except OSError as err:
            send(ctl, {"error": str(err)})
            return
        if spec.get("hold"):
            # connect, stay alive a moment (the broker accepts while we exist), hand the fd over, exit
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(SOCK)
            except OSError as err:
                send(ctl, {"error": f"connect: {err}"})
                return
            time.sleep(spec.get("linger", 0.0))
            socket.send_fds(ctl, [json.dumps({"held": True}).encode() + b"\n"], [s.fileno()])
            return
        send(ctl, {"ready": True})
        rfile = ctl.makefile("rb")
        for line in rfile:
            cmd = json.loads(line)
            if cmd["do"] == "ask":
                send(ctl, {"reply": ask(cmd["op"], cmd.get("timeout", 30.0), cmd.get("raw"))})
            elif cmd["do"] == "exit":
                return
            else:
                send(ctl, {"error": f"unknown child command {cmd['do']!r}"})
    except BaseException as err:  # noqa: BLE001
        try:
            send(ctl, {"error": repr(err)})
        except OSError:
            pass
    finally:
        os._exit(0)


def read_line(sock, timeout=30.0):
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return json.loads(data) if data else {"error": "child closed its channel"}


def pid_free(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def fork_child(spec):
    """Fork a child (with pid spec["pid"] if given); returns (pid, control socket) or an error dict."""
    target = spec.get("pid")
    tries = spec.get("tries", 200) if target else 1
    fd = os.open("/proc/sys/kernel/ns_last_pid", os.O_WRONLY) if target else None
    last = None
    try:
        for _ in range(tries):
            if target and not pid_free(target):
                time.sleep(0.01)
                last = f"pid {target} is in use"
                continue
            a, b = socket.socketpair()
            if fd is not None:
                os.pwrite(fd, str(target - 1).encode(), 0)
            pid = os.fork()
            if pid == 0:
                a.close()
                if target and os.getpid() != target:
                    os._exit(0)
                for other in (*children.values(), *held.values()):  # a sibling's EOF must not wait for us
                    other.close()
                child_main(b, spec)
            b.close()
            if target and pid != target:
                a.close()
                os.waitpid(pid, 0)
                last = f"fork gave pid {pid}"
                continue
            return pid, a
    finally:
        if fd is not None:
            os.close(fd)
    return {"error": f"could not fork with pid {target} in {tries} tries ({last})"}


def handle(cmd):
    do = cmd["do"]
    if do == "hello":
        return {"pid": os.getpid(), "uid": os.getuid(), "exe": os.readlink("/proc/self/exe")}
    if do == "spawn":
        got = fork_child(cmd)
        if isinstance(got, dict):
            return got
        pid, ctl = got
        first = read_line(ctl)
        if "error" in first:
            os.waitpid(pid, 0)
            return first
        children[pid] = ctl
        return {"pid": pid}
    if do == "hold":
        got = fork_child({**cmd, "hold": True})
        if isinstance(got, dict):
            return got
        pid, ctl = got
        ctl.settimeout(30)
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctl, 4096, 1)
        finally:
            ctl.close()
            os.waitpid(pid, 0)  # the opener is gone (and reaped) before we answer
        if not fds:
            return {"error": (msg.decode(errors="replace") or "opener sent no descriptor").strip()}
        counter[0] += 1
        held[counter[0]] = socket.socket(fileno=fds[0])
        return {"handle": counter[0], "pid": pid}
    if do == "flood":
        # n idle connections from this process; how many the broker closed within `settle` seconds
        socks = []
        for _ in range(cmd["n"]):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 10, 0))  # wait for the backlog
            try:
                s.connect(SOCK)
            except OSError:
                s.close()
                continue
            socks.append(s)
        time.sleep(cmd.get("settle", 0.5))
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                while s.recv(65536):  # a refusal may come with a reply line before the close
                    pass
                closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        flood.extend(socks)
        return {"opened": len(socks), "closed": closed}
    if do == "held":
        sock = held[cmd["handle"]]
        return {"reply": request(sock, cmd.get("op"), cmd.get("timeout", 30.0), cmd.get("raw"))}
    if do == "ask":
        ctl = children[cmd["child"]]
        send(ctl, {"do": "ask", "op": cmd.get("op"), "timeout": cmd.get("timeout", 30.0), "raw": cmd.get("raw")})
        return read_line(ctl, cmd.get("timeout", 30.0) + 10)
    if do == "exit":
        ctl = children.pop(cmd["child"])
        try:
            send(ctl, {"do": "exit"})
        except OSError:
            pass
        ctl.close()
        _, status = os.waitpid(cmd["child"], 0)
        return {"status": status}
    return {"error": f"unknown command {do!r}"}


for line in sys.stdin:
    try:
        answer = handle(json.loads(line))
    except Exception as err:  # noqa: BLE001
        answer = {"error": f"{type(err).__name__}: {err}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
for pid, ctl in list(children.items()):
    ctl.close()
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
'''


class Driver:
    """One driver process (fake starter or attacker); every call is one command and its answer."""

    def __init__(self, argv: list[str], log: Path, **popen: object) -> None:
        self.log = open(log, "a")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, **popen)  # type: ignore[call-overload]
        self.children: dict[int, int | None] = {}  # pid -> start time, to end leftovers by PID
        hello = self.call(do="hello")
        self.pid: int = hello["pid"]
        self.uid: int = hello["uid"]
        self.exe: str = hello["exe"]

    def call(self, **cmd: object) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"driver {self.proc.pid} died (exit {self.proc.poll()}); its log: "
                               f"{Path(self.log.name).read_text()[-1500:]}")
        return json.loads(line)

    def spawn(self, uid: int | None = None, gid: int | None = None, newnet: bool = True, userns: bool = False,
              pid: int | None = None, tries: int = 200) -> int:
        """A child that stays until :meth:`exit`; with ``pid`` it gets exactly that pid (or RuntimeError)."""
        answer = self.call(do="spawn", uid=uid, gid=gid, newnet=newnet, userns=userns, pid=pid, tries=tries)
        if "error" in answer:
            raise RuntimeError(f"spawn: {answer['error']}")
        self.children[int(answer["pid"])] = start_time(int(answer["pid"]))
        return int(answer["pid"])

    def ask(self, child: int, op: str, timeout: float = 30.0, raw: str | None = None) -> dict:
        answer = self.call(do="ask", child=child, op=op, timeout=timeout, raw=raw)
        if "error" in answer:
            raise RuntimeError(f"ask: {answer['error']}")
        return answer["reply"]

    def hold(self, uid: int | None = None, gid: int | None = None, newnet: bool = False, userns: bool = False,
             linger: float = 0.3) -> tuple[int, int]:
        """A child connects, lingers, hands the connection to this driver and exits (reaped).

        Returns (handle, the opener's pid)."""
        answer = self.call(do="hold", uid=uid, gid=gid, newnet=newnet, userns=userns, linger=linger)
        if "error" in answer:
            raise RuntimeError(f"hold: {answer['error']}")
        return int(answer["handle"]), int(answer["pid"])

    def send_held(self, handle: int, op: str, timeout: float = 30.0) -> dict:
        return self.call(do="held", handle=handle, op=op, timeout=timeout)["reply"]

    def exit(self, child: int) -> None:
        self.call(do="exit", child=child)
        self.children.pop(child, None)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pid, started in self.children.items():  # children exit on their channel's EOF; if one did not
            if started is not None and start_time(pid) == started:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        self.children.clear()
        self.log.close()


class BrokerLab:
    """A broker in ``host_ns`` with its own prefix, socket, state, execute dir and fake starter."""

    def __init__(self, host_ns: str, prefix: str, job_user: str = "nobody") -> None:
        import pwd

        self.host_ns = host_ns
        self.prefix = prefix
        user = pwd.getpwnam(job_user)
        self.user, self.uid, self.gid = job_user, user.pw_uid, user.pw_gid
        self.dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-brokerlab-", dir="/run"))
        os.chmod(self.dir, 0o755)
        (self.dir / "bin").mkdir(mode=0o755)
        self.starter = self.dir / "bin" / "condor_starter"
        shutil.copy2(BASE_PYTHON, self.starter)
        os.chown(self.starter, 0, 0)
        os.chmod(self.starter, 0o755)
        self.driver_py = self.dir / "driver.py"
        self.driver_py.write_text(DRIVER)
        os.chmod(self.driver_py, 0o644)
        self.execute = self.dir / "execute"
        self.execute.mkdir(mode=0o755)
        self.state = self.dir / "state"
        self.socket = self.dir / "netd.sock"
        self.journal = self.dir / "accounting.jsonl"
        self.stderr_path = self.dir / "netd.stderr"
        self.broker: subprocess.Popen[str] | None = None
        self.drivers: list[Driver] = []
        self._broker_log = open(self.stderr_path, "a")  # noqa: SIM115 - closed in close()
        self.knobs: dict[str, str] = {}

    # ------------------------------------------------------------ the broker

    def base_knobs(self) -> dict[str, str]:
        return {"LARK_NAME_PREFIX": self.prefix, "LARK_STATE_DIR": str(self.state), "LARK_SOCKET": str(self.socket),
                "LARK_EXECUTE_DIR": str(self.execute), "LARK_STARTER": str(self.starter),
                "LARK_ACCOUNTING_JOURNAL": str(self.journal), "LARK_LOG": str(self.dir / "netd.log"),
                "LARK_NETWORK_TYPES": "nat, none"}

    def start_broker(self, wait: float = 60.0, nofile_soft: int | None = None, **knobs: str) -> subprocess.Popen[str]:
        """Start the broker (a restart keeps the last knobs unless knobs are given); wait until it answers.

        ``nofile_soft``: start it with this soft RLIMIT_NOFILE (the hard limit stays)."""
        if knobs or not self.knobs:
            self.knobs = {**self.base_knobs(), **knobs}
        argv = ["nsenter", f"--net={self.host_ns}", str(PYTHON), "-m", "lark.broker.main", "--stderr"]
        for knob, value in self.knobs.items():
            argv += ["-D", f"{knob}={value}"]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "PYTHONPATH": str(SOURCE_ROOT), "PYTHONFAULTHANDLER": "1"}  # a traceback if it aborts
        def lower_nofile() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile_soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        self.broker = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._broker_log, text=True,
                                       cwd=str(SOURCE_ROOT), env=env,
                                       preexec_fn=lower_nofile if nofile_soft is not None else None)
        broker = self.broker

        def answering() -> bool:
            if broker.poll() is not None:
                raise RuntimeError(f"lark-netd exited with {broker.poll()}:\n{self.broker_log()}")
            return ping(self.socket, timeout=2)

        try:
            wait_until("lark-netd to answer a ping", answering, wait, 0.02)
        except TimeoutError as err:
            raise RuntimeError(f"{err}:\n{self.broker_log()}") from None
        return self.broker

    @property
    def broker_pid(self) -> int:
        assert self.broker is not None
        return self.broker.pid

    def kill_broker(self) -> None:
        """SIGKILL the broker by its PID (as a crash would) and reap it."""
        if self.broker is not None and self.broker.poll() is None:
            self.broker.send_signal(signal.SIGKILL)
        if self.broker is not None:
            self.broker.wait()

    def stop_broker(self) -> None:
        if self.broker is None:
            return
        if self.broker.poll() is None:
            self.broker.send_signal(signal.SIGTERM)
            try:
                self.broker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait()
        self.broker = None

    def broker_log(self, tail: int = 3000) -> str:
        self._broker_log.flush()
        return self.stderr_path.read_text(errors="replace")[-tail:]

    def crash_report(self) -> str:
        """The abort message and the crashing thread's Python stack (PYTHONFAULTHANDLER), or the log's tail."""
        lines = self.broker_log(20000).splitlines()
        start = next((i for i, line in enumerate(lines) if "***" in line or "Fatal Python error" in line), None)
        if start is None:
            return "\n".join(lines[-20:])
        out = lines[start:start + 3]
        for line in lines[start + 3:]:
            if not line.strip():
                break  # the end of the current thread's stack
            out.append(line)
        return "\n".join(out)

    # ------------------------------------------------------------ starters, jobs, attackers

    def fake_starter(self, exe: Path | None = None, as_user: bool = False) -> Driver:
        """A driver run by ``exe`` (default: the configured starter copy): as root in the sandbox host,
        or (``as_user``) as the job user, where that user could start it (the host's namespace; its
        children unshare a user and a network namespace, which needs no privilege)."""
        argv = [str(exe or self.starter), "-I", "-S", str(self.driver_py), str(self.socket)]
        if not as_user:
            argv = ["nsenter", f"--net={self.host_ns}", *argv]
        kwargs: dict[str, object] = {"user": self.uid, "group": self.gid, "extra_groups": []} if as_user else {}
        driver = Driver(argv, self.dir / "drivers.log", env={"LANG": "C.UTF-8"}, cwd="/", **kwargs)
        self.drivers.append(driver)
        return driver

    def attacker(self) -> Driver:
        """A driver run by the plain interpreter as the job user (an unprivileged local user)."""
        argv = [str(BASE_PYTHON), "-I", "-S", str(self.driver_py), str(self.socket)]
        driver = Driver(argv, self.dir / "drivers.log", env={"LANG": "C.UTF-8"}, cwd="/", user=self.uid,
                        group=self.gid, extra_groups=[])
        self.drivers.append(driver)
        return driver

    def user_copy(self, name: str = "condor_starter") -> Path:
        """A copy of the interpreter owned by the job user, named ``name`` (a user's own program)."""
        home = self.dir / "user"
        home.mkdir(mode=0o755, exist_ok=True)
        os.chown(home, self.uid, self.gid)
        path = home / name
        shutil.copy2(BASE_PYTHON, path)
        os.chown(path, self.uid, self.gid)
        os.chmod(path, 0o755)
        return path

    def root_copy_elsewhere(self, name: str = "condor_starter") -> Path:
        """A root-owned copy named ``name`` in another root-owned directory (not the LARK_STARTER path)."""
        other = self.dir / "elsewhere"
        other.mkdir(mode=0o755, exist_ok=True)
        path = other / name
        shutil.copy2(BASE_PYTHON, path)
        os.chmod(path, 0o755)
        return path

    def write_job_ad(self, starter_pid: int, cluster: int = 1, proc: int = 0,
                     extra: Mapping[str, object] | None = None) -> Path:
        """``<execute>/dir_<starter>/scratch/.job.ad`` for the job user (scratch owned by that user)."""
        scratch = self.execute / f"dir_{starter_pid}" / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        os.chown(scratch, self.uid, self.gid)
        attrs: dict[str, object] = {"ClusterId": cluster, "ProcId": proc, "Owner": self.user,
                                    "User": f"{self.user}@lark.test", **(extra or {})}
        path = scratch / ".job.ad"
        path.write_text("".join(f"{k} = {_classad_value(v)}\n" for k, v in attrs.items()))
        os.chown(path, self.uid, self.gid)
        return path

    # ------------------------------------------------------------ what the broker left

    def records(self) -> list[dict]:
        out = []
        for path in sorted((self.state / "jobs").glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(path.read_text()))
        return out

    def record_of(self, holder_pid: int) -> dict | None:
        return next((r for r in self.records() if r.get("holder_pid") == holder_pid), None)

    def journal_lines(self) -> list[dict]:
        out = []
        try:
            text = self.journal.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # ------------------------------------------------------------ cleanup

    def close(self) -> None:
        for driver in reversed(self.drivers):
            with contextlib.suppress(Exception):
                driver.close()
        self.drivers.clear()
        with contextlib.suppress(Exception):
            self.stop_broker()
        self._broker_log.close()
        self.remove_pinned_namespaces()
        shutil.rmtree(self.dir, ignore_errors=True)

    def remove_pinned_namespaces(self) -> list[str]:
        """Named namespaces of this lab's jobs (a broker pins a job's namespace as
        ``/run/netns/<prefix>-<token>``; a stopped or crashed one leaves them): every token in the
        records and the journal. Only the namespace's name goes; the kernel frees it when unused."""
        from lark import names, netns

        tokens = {str(r.get("token")) for r in self.records()} | {str(e.get("token")) for e in self.journal_lines()}
        removed = []
        for name in netns.list_named(self.prefix + "-"):
            if names.token_of_netns(self.prefix, name) in tokens:
                with contextlib.suppress(Exception):
                    netns.delete_named(name)
                    removed.append(name)
        return removed


def _classad_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


# ---------------------------------------------------------------- clients and /proc readings


def ping(path: Path | str, timeout: float = 5.0) -> bool:
    return ask(path, "ping", timeout).get("ok") is True


def ask(path: Path | str, op: str, timeout: float = 30.0) -> dict:
    """One JSON request on a fresh connection; ``{"_closed": True}`` / ``{"_oserror": ...}`` when none came."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps({"op": op}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as err:
            return {"_oserror": f"{type(err).__name__}: {err}"}
    if not data:
        return {"_closed": True}
    try:
        return json.loads(data)
    except ValueError:
        return {"_raw": data.decode(errors="replace")}


def start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks (field 22 of /proc/<pid>/stat); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def nofile_limits(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of a process, from /proc/<pid>/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise RuntimeError(f"no open-files limit for {pid}")


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Threads line for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_count(pid: int) -> int:
    """Sockets among a process's descriptors (a broker may hold more than one descriptor per client)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def links_in(netns_path: str) -> list[str]:
    out = subprocess.run(["nsenter", f"--net={netns_path}", "ip", "-o", "link"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


@contextlib.contextmanager
def idle_connections(path: Path | str, count: int, timeout: float = 30.0) -> Iterator[list[socket.socket]]:
    """``count`` connections to the broker that never send a byte; all closed at the end."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(sock)
            # blocking, so that a full backlog makes connect wait (a Python timeout makes it fail with
            # EAGAIN at once), but not forever
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(timeout), 0))
            sock.connect(str(path))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def still_open(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the broker has not closed (seen from the client: EOF means closed)."""
    count = 0
    for sock in socks:
        try:
            count += sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            count += 1  # open, nothing to read
        except OSError:
            pass
    return count


def raise_nofile(want: int) -> None:
    """Make room for ``want`` descriptors in this process (soft limit up to the hard one)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want,
                                                    hard))
