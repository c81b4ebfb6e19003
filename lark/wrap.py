#!/bin/sh
''':'
# sh runs these lines, Python sees one string. Run under the interpreter Lark was installed with:
# the python3 next to this script in its environment's bin/ ($(LARK_BIN)), with -I -S: no
# site-packages and no .pth files on the job's start path. /usr/bin/python3 only as a fallback.
case "$0" in */*) here=${0%/*} ;; *) here=. ;; esac
if [ -x "$here/python3" ]; then exec "$here/python3" -I -S "$0" "$@"; fi
echo "lark-wrap: no python3 next to $0 (not in Lark's environment's bin/?); trying /usr/bin/python3" >&2
if /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 7))' 2>/dev/null; then
  exec /usr/bin/python3 -I -S "$0" "$@"
fi
# no network without the wrapper: exit as when the broker is unreachable, so the job is held
echo "lark-wrap: no usable python3 (3.7 or later) to run in; the job did not run" >&2
exit 117

``lark-wrap``: HTCondor's USER_JOB_WRAPPER. Asks the broker for the job's network, runs the job.

It runs as the job's user, in the empty network namespace the starter made (NO_JOB_NETWORKING),
so it can do nothing privileged itself. Standard library only: it is on every job's start path
(importing pyroute2 alone would cost ~170 ms).

Installed as a plain script (``scripts`` in setup.cfg), not a console-script entry point: the
first lines above make ``sh`` re-run it with the interpreter of Lark's own environment (the
``python3`` beside it) as ``python3 -I -S``, which skips the environment's site-packages and their
.pth files (15-25 ms on every job start). So it runs on whatever Python Lark was installed with,
whatever the node's system Python is (3.6 on EL8, 3.9 on EL9). The fallback, /usr/bin/python3,
works from 3.7 on (annotations are not evaluated), and says so on the job's stderr.

It stays the job's parent instead of exec'ing it, so that after the job exits it can ask the
broker to finalise the accounting while the namespace is still alive, then exit with the job's
own status or re-raise the job's signal.

``lark-wrap --version`` and ``lark-wrap --help`` answer and exit (no job is ever called that).
'''

from __future__ import annotations

import _signal  # the C modules: `signal` and `socket` import enum (and json imports re), ~5-15 ms
import _socket
import os
import resource
import sys
import time

SOCKET_PATH = "/run/lark/netd.sock"
# The admin's settings for the wrapper live in a file next to it (root-owned, like the wrapper):
# ``socket = PATH`` when the broker's socket moved (LARK_SOCKET), ``retry_seconds = N``. Not
# environment variables: the job's environment is the user's to set. ``lark-wrap.socket`` (the
# path alone) is still read, as earlier releases documented it.
CONFIG_FILE = "lark-wrap.conf"
SOCKET_OVERRIDE_FILE = "lark-wrap.socket"
# A broker killed mid-job is restarted by condor_master within its back-off, which the execute
# drop-in bounds (MASTER_LARK_NETD_BACKOFF_CEILING) below this.
RETRY_SECONDS = 60.0
# The exit status of a wrapper that did not run the job because it got no network: 117 when the
# broker could not be reached, 118 when it refused. The submit transform holds such a job (sub-code
# 4204 or 4205) unless the broker recorded a reason of its own (LarkSetupError, 4201) or this run's
# network was set up (then the job itself exited with that code).
UNREACHABLE_EXIT = 117
REFUSED_EXIT = 118
FORWARDED = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2,
             _signal.SIGCONT, _signal.SIGTSTP, _signal.SIGALRM)
# The broker speaks JSON lines; asked for "lines" it answers "ok" / "error <message>" and then
# KEY=VALUE lines, which this stdlib-only wrapper reads without importing json.
REQUESTS = {"setup": b'{"op": "setup", "reply": "lines"}\n', "finalize": b'{"op": "finalize", "reply": "lines"}\n'}
# Container universe: the starter runs this wrapper around `apptainer exec -C ...` (outside the
# container), and --containall starts the container with a clean environment; only variables named
# APPTAINERENV_X (SingularityCE: SINGULARITYENV_X) reach it, as X. Keyed on the runtime's real name:
# Debian's /usr/bin/singularity, HTCondor's default SINGULARITY, is a link to apptainer.
CONTAINER_ENV_PREFIX = {"apptainer": "APPTAINERENV_", "singularity": "SINGULARITYENV_"}


def settings(directory: str | None = None) -> tuple[str, float]:
    """(socket path, retry seconds) from the files next to the wrapper; defaults when absent or bad."""
    here = directory or os.path.dirname(os.path.abspath(sys.argv[0]))
    path, retry = SOCKET_PATH, RETRY_SECONDS
    try:
        with open(os.path.join(here, SOCKET_OVERRIDE_FILE)) as fh:
            path = fh.read().strip() or path
    except OSError:
        pass
    try:
        with open(os.path.join(here, CONFIG_FILE)) as fh:
            for line in fh:
                key, sep, value = line.partition("#")[0].partition("=")
                key, value = key.strip().lower(), value.strip()
                if not sep:
                    if key:
                        print(f"lark-wrap: ignoring {line.strip()!r} in {CONFIG_FILE} (expected KEY = VALUE)",
                              file=sys.stderr)
                    continue
                if key == "socket" and value:
                    path = value
                elif key not in ("socket", "retry_seconds"):
                    print(f"lark-wrap: ignoring unknown key {key!r} in {CONFIG_FILE} (known: socket, retry_seconds)",
                          file=sys.stderr)
                elif key == "retry_seconds":
                    try:
                        number = float(value)
                    except ValueError:
                        number = float("nan")
                    if number == number and abs(number) != float("inf"):  # not NaN, not infinite
                        retry = min(max(number, 0.0), 3600.0)
                    else:
                        print(f"lark-wrap: ignoring retry_seconds = {value!r} in {CONFIG_FILE}", file=sys.stderr)
    except OSError:
        pass
    return path, retry


def parse_reply(text: str) -> dict[str, object]:
    """``ok`` + ``KEY=VALUE`` lines, or ``error <message>``, as {"ok", "env"/"error"}."""
    first, _, rest = text.partition("\n")
    if first == "ok":
        env = dict(line.split("=", 1) for line in rest.splitlines() if "=" in line)
        return {"ok": True, "env": env}
    if first.startswith("error"):
        return {"ok": False, "error": first[len("error"):].strip() or "unknown error"}
    return {"ok": False, "error": f"unexpected reply from lark-netd: {first[:200]!r}"}


def ask(op: str, retry_for: float, path: str = SOCKET_PATH) -> dict[str, object]:
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(30)
            sock.connect(path)
            sock.sendall(REQUESTS[op])
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data:
                return parse_reply(data.decode("utf-8", "replace"))
            err: object = "connection closed without a reply"
        except OSError as exc:
            err = exc
        finally:
            sock.close()
        if time.monotonic() > deadline:
            return {"ok": False, "error": f"cannot reach lark-netd at {path}: {err}", "unreachable": True}
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def pin_cpus(cpulist: str | None) -> None:
    """A network profile's CPU hint (e.g. the NIC's NUMA-local CPUs), within what HTCondor allows."""
    if not cpulist:
        return
    try:
        want = {n for part in cpulist.split(",") for n in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)}
        allowed = want & os.sched_getaffinity(0)
        if allowed:
            os.sched_setaffinity(0, allowed)
    except (OSError, ValueError):
        pass  # a hint, never a reason to fail the job


def container_environment(argv0: str, lark_env: dict[str, str]) -> dict[str, str]:
    """The Lark variables once more, prefixed so that a container runtime passes them into the
    container; nothing when the wrapped command is not apptainer/singularity (vanilla jobs)."""
    prefix = CONTAINER_ENV_PREFIX.get(os.path.basename(os.path.realpath(argv0)))
    return {prefix + key: value for key, value in lark_env.items()} if prefix else {}


def run_job(argv: list[str], env: dict[str, str]) -> int:
    child = os.fork()
    if child == 0:
        try:
            for sig in (*FORWARDED, _signal.SIGPIPE, _signal.SIGXFSZ):
                _signal.signal(sig, _signal.SIG_DFL)
            pin_cpus(env.get("LARK_CPUS"))
            os.execvpe(argv[0], argv, env)
        except OSError as err:
            print(f"lark-wrap: cannot execute {argv[0]}: {err.strerror}", file=sys.stderr)
        os._exit(127)
    for sig in FORWARDED:
        _signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            return status
        except ChildProcessError:
            return 0


def exit_like(status: int) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (_signal.SIGKILL, _signal.SIGSTOP):  # these cannot be given a handler
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the job already dumped, if it did
            _signal.signal(sig, _signal.SIG_DFL)
            _signal.pthread_sigmask(_signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        sys.exit(128 + sig)
    sys.exit(os.WEXITSTATUS(status))


USAGE = """usage: lark-wrap JOB [ARG ...]

HTCondor's USER_JOB_WRAPPER on a Lark execute node: asks lark-netd for the job's network, runs
JOB with the LARK_* variables, asks for the final accounting and exits with JOB's status. Its
settings are in lark-wrap.conf beside it (socket = PATH, retry_seconds = N). Exit 117: lark-netd
could not be reached, 118: it refused; the job did not run."""


def installed_version() -> str:
    """``lark.__version__``, the package's one version; only for --version, so the job's start path
    never loads site-packages."""
    import site

    site.main()
    sys.path.append(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # a checkout
    try:
        from lark import __version__
    except ImportError:
        return "unknown (the lark package is not importable beside this script)"
    return str(__version__)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["--help"], ["-h"]):
        print(f"lark-wrap {installed_version()}" if args == ["--version"] else USAGE)
        sys.exit(0)
    if not args:
        print("lark-wrap: no job command given (configure it as USER_JOB_WRAPPER)", file=sys.stderr)
        sys.exit(1)
    path, retry = settings()
    reply = ask("setup", retry, path)
    if not reply.get("ok"):
        # The job does not run. Either the broker recorded LarkSetupError in the job ad, or it
        # could not be reached at all; the LarkHold transform holds the job in both cases.
        print(f"lark-wrap: {reply.get('error')}; the job was not started", file=sys.stderr)
        sys.exit(UNREACHABLE_EXIT if reply.get("unreachable") else REFUSED_EXIT)
    lark_env = {str(k): str(v) for k, v in dict(reply.get("env") or {}).items()}  # type: ignore[call-overload]
    env = {**os.environ, **lark_env, **container_environment(args[0], lark_env)}
    status = run_job(args, env)
    final = ask("finalize", retry, path)
    if not final.get("ok"):
        print(f"lark-wrap: final accounting failed: {final.get('error')}", file=sys.stderr)
    exit_like(status)


if __name__ == "__main__":
    main()
