#!/bin/sh
"exec" "/usr/bin/python3" "-I" "-S" "$0" "$@"  # noqa: B018 (sh runs this line; Python sees two strings)
"""``lark-wrap``: HTCondor's USER_JOB_WRAPPER. Asks the broker for the job's network, runs the job.

It runs as the job's user, in the empty network namespace the starter made (NO_JOB_NETWORKING),
so it can do nothing privileged itself. Standard library only: it is on every job's start path
(importing pyroute2 alone would cost ~170 ms).

Installed as a plain script (``scripts`` in setup.cfg), not a console-script entry point: the
first lines above make ``sh`` re-run it with the system ``python3 -I -S``, which skips the
virtual environment's site-packages and their .pth files (15-25 ms on every job start).

It stays the job's parent instead of exec'ing it, so that after the job exits it can ask the
broker to finalise the accounting while the namespace is still alive, then exit with the job's
own status or re-raise the job's signal.
"""

import json
import os
import resource
import signal
import socket
import sys
import time

SOCKET_PATH = "/run/lark/netd.sock"
# An admin who moves the broker's socket (LARK_SOCKET) writes its path into this file next to the
# wrapper. Not an environment variable: the job's environment is the user's to set.
SOCKET_OVERRIDE_FILE = "lark-wrap.socket"
RETRY_SECONDS = 60.0  # a broker killed mid-job is restarted by condor_master within its back-off
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGCONT, signal.SIGTSTP, signal.SIGALRM)


def socket_path() -> str:
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), SOCKET_OVERRIDE_FILE)) as fh:
            return fh.read().strip() or SOCKET_PATH
    except OSError:
        return SOCKET_PATH


def ask(op: str, retry_for: float, path: str = SOCKET_PATH) -> dict[str, object]:
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(30)
                sock.connect(path)
                sock.sendall(json.dumps({"op": op}).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            return json.loads(data)
        except (OSError, ValueError) as err:
            if time.monotonic() > deadline:
                return {"ok": False, "error": f"cannot reach lark-netd at {path}: {err}"}
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def run_job(argv: list[str], env: dict[str, str]) -> int:
    child = os.fork()
    if child == 0:
        try:
            for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            os.execvpe(argv[0], argv, env)
        except OSError as err:
            print(f"lark-wrap: cannot execute {argv[0]}: {err.strerror}", file=sys.stderr)
        os._exit(127)
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            return status
        except ChildProcessError:
            return 0


def exit_like(status: int) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # these cannot be given a handler
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the job already dumped, if it did
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        sys.exit(128 + sig)
    sys.exit(os.WEXITSTATUS(status))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("lark-wrap: no job command given (configure it as USER_JOB_WRAPPER)", file=sys.stderr)
        sys.exit(1)
    path = socket_path()
    reply = ask("setup", RETRY_SECONDS, path)
    if not reply.get("ok"):
        # the broker recorded LarkSetupError in the job ad; the LarkHold transform holds the job
        print(f"lark-wrap: {reply.get('error')}", file=sys.stderr)
        sys.exit(1)
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in dict(reply.get("env") or {}).items()})
    status = run_job(args, env)
    final = ask("finalize", RETRY_SECONDS, path)
    if not final.get("ok"):
        print(f"lark-wrap: final accounting failed: {final.get('error')}", file=sys.stderr)
    exit_like(status)


if __name__ == "__main__":
    main()
