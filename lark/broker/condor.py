"""The HTCondor side of the broker: find a job's ad and chirp channel, push attributes into it.

Paths are derived from the starter's pid and the EXECUTE knob, never taken from the client:
25.x keeps the job ad at ``$(EXECUTE)/dir_<starter>/scratch/.job.ad`` and the chirp config at
``.../user/.chirp.config``; 23.x keeps both directly in ``dir_<starter>``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lark.classads import expressions, job_attributes
from lark.errors import LarkError, NotFound

log = logging.getLogger("lark.netd")


@dataclass(frozen=True)
class JobContext:
    starter_pid: int
    job_dir: Path
    ad_path: Path
    chirp_config: Path | None
    ad: Mapping[str, object]

    @property
    def job_id(self) -> str:
        return f"{self.ad.get('ClusterId', '?')}.{self.ad.get('ProcId', '?')}"


def job_context(execute_dir: Path, starter_pid: int) -> JobContext:
    import classad2

    job_dir = execute_dir / f"dir_{starter_pid}"
    for ad_path, chirp in ((job_dir / "scratch" / ".job.ad", job_dir / "user" / ".chirp.config"),
                           (job_dir / ".job.ad", job_dir / ".chirp.config")):
        if ad_path.is_file():
            try:
                ad = classad2.parseOne(ad_path.read_text(), classad2.ParserType.Old)
            except Exception as err:  # classad2 raises its own ClassAdException and ValueError
                raise LarkError(f"cannot parse the job ad {ad_path}: {err}") from None
            # an attribute that evaluates to undefined/error keeps its expression, for the hold reason
            values = job_attributes(ad)
            return JobContext(starter_pid, job_dir, ad_path, chirp if chirp.is_file() else None, values)
    raise NotFound(f"no job ad for starter {starter_pid} under {job_dir}")


class Chirp:
    """Pushes attributes into a running job's ad through its starter's chirp server."""

    def __init__(self, config_path: Path) -> None:
        host, port, cookie = config_path.read_text().split()[:3]
        self.host, self.port, self.cookie = host, int(port), cookie

    def _client(self):  # noqa: ANN202
        from htcondor2.htchirp import HTChirp

        return HTChirp(host=self.host, port=self.port, auth=["cookie"], cookie=self.cookie, timeout=5)

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
