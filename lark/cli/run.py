"""``lark run``: run a command the way a job runs, in its own attached and accounted namespace."""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import sys
from collections.abc import Callable, Sequence

from lark.engine import Engine
from lark.firewall.base import JobCounters
from lark.jobenv import job_environment
from lark.netns import CLONE_NEWNET
from lark.policy import JobRequest
from lark.state import JobRecord

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def run_in_job(engine: Engine, request: JobRequest, command: Sequence[str] | Callable[[JobRecord], Sequence[str]],
               user: str | None = None) -> tuple[int, JobRecord, JobCounters]:
    """Set up the network, run the command inside it, tear down; returns (wait status, record, counters).

    ``command`` may be a function of the job's record, for callers that need its addresses first.
    """
    record = engine.up(request, holder_pid=os.getpid())
    try:
        argv = list(command(record) if callable(command) else command)
        env = dict(os.environ, **job_environment(record))
        fd = os.open(record.netns, os.O_RDONLY | os.O_CLOEXEC)
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    os._exit(126)
                for sig in FORWARDED_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                if user:
                    pw = pwd.getpwnam(user)
                    os.initgroups(pw.pw_name, pw.pw_gid)
                    os.setgid(pw.pw_gid)
                    os.setuid(pw.pw_uid)
                os.execvpe(argv[0], list(argv), env)
            except OSError as err:
                print(f"lark run: cannot run {argv[0]}: {err.strerror}", file=sys.stderr)
            os._exit(127)
        os.close(fd)
        previous = {sig: signal.signal(sig, lambda s, _f: os.kill(child, s)) for sig in FORWARDED_SIGNALS}
        try:
            _, status = os.waitpid(child, 0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        counters = engine.counters(record.token)
        return status, record, counters
    finally:
        engine.down(record.token)
        engine.release_if_idle()  # leave nothing behind unless other jobs share the tables


def format_summary(record: JobRecord, counters: JobCounters) -> str:
    lines = [f"lark: job {record.job_id} network {record.mode} (token {record.token})"]
    for label, value in (("IPv4", record.ipv4), ("IPv6", record.ipv6), ("host IPv4", record.host_ipv4),
                         ("host IPv6", record.host_ipv6)):
        if value:
            lines.append(f"  {label:<10} {value}")
    if record.ports:
        lines.append(f"  inbound    {record.public_ipv4}:{record.ports[0]}-{record.ports[1]}")
    if record.bandwidth_in_mbit or record.bandwidth_out_mbit:
        lines.append(f"  limits     in {record.bandwidth_in_mbit or '-'} Mbit/s, out "
                     f"{record.bandwidth_out_mbit or '-'} Mbit/s")
    lines.append(f"  {'class':<12}{'bytes in':>14}{'bytes out':>14}{'pkts in':>10}{'pkts out':>10}")
    lines.append(f"  {'total':<12}{counters.bytes_in:>14}{counters.bytes_out:>14}"
                 f"{counters.packets_in:>10}{counters.packets_out:>10}")
    for name, c in sorted(counters.classes.items()):
        lines.append(f"  {name:<12}{c.bytes_in:>14}{c.bytes_out:>14}{c.packets_in:>10}{c.packets_out:>10}")
    return "\n".join(lines)


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
