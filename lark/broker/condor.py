"""The HTCondor side of the broker: find a job's ad and chirp channel, push attributes into it.

Paths are derived from the starter's pid and the EXECUTE knob, never taken from the client:
25.x keeps the job ad at ``$(EXECUTE)/dir_<starter>/scratch/.job.ad`` and the chirp config at
``.../user/.chirp.config``; 23.x keeps both directly in ``dir_<starter>``.

Both files sit in directories the job's user can write, and the broker is root, so each is read
**once**, at set-up, without following links, only when it is a small regular file, and the chirp
address found there must be one of this host's own: the job could otherwise point the broker at
another job's chirp server (with that job's cookie) or at a server of its own that never answers.
What was read is kept in the job's root-only record; nothing is re-read from the job's directory.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lark.classads import expressions, job_attributes
from lark.errors import LarkError, NotFound

log = logging.getLogger("lark.netd")

MAX_JOB_AD = 1 << 20  # a job ad of a megabyte is already absurd
MAX_CHIRP_CONFIG = 4096
# One deadline for a whole chirp call (connect, authenticate, every command): a starter that dies
# mid-call, or a server that trickles its reply, costs the broker at most this much.
CHIRP_DEADLINE = 5.0


@dataclass(frozen=True)
class ChirpAddress:
    """A starter's chirp server, as its ``.chirp.config`` named it at set-up."""

    host: str
    port: int
    cookie: str

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port, "cookie": self.cookie}

    @classmethod
    def from_record(cls, value: object) -> ChirpAddress | None:
        if isinstance(value, dict) and isinstance(value.get("host"), str) and isinstance(value.get("port"), int) \
                and isinstance(value.get("cookie"), str):
            return cls(value["host"], value["port"], value["cookie"])
        return None  # no chirp for this job (or a record written by an older broker)


@dataclass(frozen=True)
class JobContext:
    starter_pid: int
    job_dir: Path
    ad_path: Path
    chirp: ChirpAddress | None
    ad: Mapping[str, object]

    @property
    def job_id(self) -> str:
        return f"{self.ad.get('ClusterId', '?')}.{self.ad.get('ProcId', '?')}"


def read_small_file(path: Path, limit: int) -> str | None:
    """The text of ``path`` if it is a regular file of at most ``limit`` bytes, not a link (None
    when absent). A link, a FIFO, a device or an oversized file is refused with LarkError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise LarkError(f"{path} is a symbolic link; the broker does not follow links in a job's directory") \
                from None
        raise LarkError(f"cannot read {path}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LarkError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise LarkError(f"{path} holds {st.st_size} bytes, more than the {limit} the broker reads")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")


def parse_chirp_config(text: str, path: Path) -> ChirpAddress:
    """``host port cookie``; the host must be an address of this host (the starter's own)."""
    parts = text.split()
    if len(parts) < 3 or not parts[1].isdigit() or not 0 < int(parts[1]) < 65536:
        raise LarkError(f"{path} does not hold 'host port cookie'")
    host = parts[0]
    if not _is_local_address(host):
        raise LarkError(f"{path} names {host!r}, which is not an address of this host")
    return ChirpAddress(host, int(parts[1]), parts[2])


def _is_local_address(host: str) -> bool:
    """Whether ``host`` is an IP address of the host namespace (binding to it succeeds)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except (OSError, ValueError):
        return False


def job_context(execute_dir: Path, starter_pid: int) -> JobContext:
    import classad2

    job_dir = execute_dir / f"dir_{starter_pid}"
    for ad_path, chirp_path in ((job_dir / "scratch" / ".job.ad", job_dir / "user" / ".chirp.config"),
                                (job_dir / ".job.ad", job_dir / ".chirp.config")):
        text = read_small_file(ad_path, MAX_JOB_AD)
        if text is None:
            continue
        try:
            ad = classad2.parseOne(text, classad2.ParserType.Old)
        except Exception:  # classad2 raises its own ClassAdException and ValueError
            # never the parser's message: it may quote the file's content
            raise LarkError(f"cannot parse the job ad {ad_path}") from None
        # an attribute that evaluates to undefined/error keeps its expression, for the hold reason
        values = job_attributes(ad)
        chirp_text = read_small_file(chirp_path, MAX_CHIRP_CONFIG)
        chirp = parse_chirp_config(chirp_text, chirp_path) if chirp_text is not None else None
        return JobContext(starter_pid, job_dir, ad_path, chirp, values)
    raise NotFound(f"no job ad for starter {starter_pid} under {job_dir}")


def _bounded_client_class() -> type:
    """HTCondor's chirp client with a deadline per call and an end-of-stream check.

    The shipped client reads a reply one byte at a time until a newline, and spins forever at full
    CPU when the server closes the connection first (recv returns b"" for ever): a starter killed
    mid-call would take a broker thread with it.
    """
    from htcondor2.htchirp import HTChirp

    class BoundedChirp(HTChirp):  # type: ignore[misc, valid-type]
        deadline = 0.0

        def _remaining(self) -> float:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the chirp server did not answer in time")
            return left

        def _simple_command(self, cmd, get_response=True):  # noqa: ANN001, ANN202
            self.socket.settimeout(self._remaining())
            return super()._simple_command(cmd, get_response)

        def _simple_response(self):  # noqa: ANN202
            self._check_connection()
            response = b""
            while not response.endswith(b"\n"):
                self.socket.settimeout(self._remaining())
                chunk = self.socket.recv(1)
                if not chunk:
                    raise ConnectionError("the chirp server closed the connection")
                response += chunk
                if len(response) > self.CHIRP_LINE_MAX:
                    raise OSError("the chirp server answered with too much data")
            text = response.decode(errors="replace").rstrip()
            try:
                code = int(text)
            except ValueError:
                return text
            self._check_response(code)
            return text

    return BoundedChirp


class Chirp:
    """Pushes attributes into a running job's ad through its starter's chirp server."""

    def __init__(self, address: ChirpAddress) -> None:
        self.host, self.port, self.cookie = address.host, address.port, address.cookie

    def _client(self):  # noqa: ANN202
        cls = _bounded_client_class()
        cls.deadline = time.monotonic() + CHIRP_DEADLINE
        return cls(host=self.host, port=self.port, auth=["cookie"], cookie=self.cookie, timeout=CHIRP_DEADLINE)

    def set(self, attrs: Mapping[str, object], delayed: bool = False) -> None:
        """``set_job_attr`` (immediate, needs WantIOProxy) or ``set_job_attr_delayed`` (batched)."""
        try:
            with self._client() as chirp:
                for name, expr in expressions(attrs).items():
                    if delayed:
                        chirp.set_job_attr_delayed(name, expr)
                    else:
                        chirp.set_job_attr(name, expr)
        except Exception as err:  # a chirp failure must never take the broker down
            raise LarkError(f"chirp to {self.host}:{self.port} failed: {err}") from None

    def clear(self, name: str) -> None:
        try:
            with self._client() as chirp:
                chirp.set_job_attr(name, "undefined")
        except Exception as err:
            raise LarkError(f"chirp to {self.host}:{self.port} failed: {err}") from None
