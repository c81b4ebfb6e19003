"""``lark-netd``: the root broker that does every privileged step for job wrappers.

Protocol: one JSON object per line over a pathname Unix socket. A wrapper sends
``{"op": "setup"}`` before the job starts and ``{"op": "finalize"}`` after it exits; nothing in a
request names a job, a namespace or a path. The broker derives all of it from the caller's
``SO_PEERCRED`` pid (see :mod:`lark.broker.peer`), so a caller can only ever act on its own job.
Replies are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``; a bad request never raises
out of the handler.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
import time
from pathlib import Path

from lark import netns
from lark.broker.condor import Chirp, JobContext, job_context
from lark.broker.peer import Peer, peer_credentials, starter_of
from lark.classads import SETUP_ERROR_ATTR, accounting_attributes, network_attributes
from lark.cli.run import job_environment
from lark.config import LarkConfig, condor_param
from lark.engine import Engine
from lark.errors import LarkError
from lark.profiles import CatalogCache, profile_dir, request_for_job, user_and_groups
from lark.state import JobRecord, process_start_time

log = logging.getLogger("lark.netd")
MAX_REQUEST = 4096


class Broker:
    def __init__(self, config: LarkConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.host_netns_inode = netns.current_inode()
        self.stop = threading.Event()
        # Final counters must win over periodic ones. Periodic values go out as set_job_attr_delayed,
        # which the starter keeps and sends with its *next* update to the shadow, at the latest at
        # job exit: after an immediate set_job_attr of the final values, so a delayed value still
        # pending would overwrite them in the job ad and in condor_history (seen on 25.14.1: the
        # last interval's bytes were missing). So finalize sends the final values both ways, and
        # under this lock marks the job final, after which the periodic push no longer sends for it;
        # the mark is dropped only by a push whose copy of the records no longer holds the job.
        self._chirp_lock = threading.Lock()
        self._final: set[str] = set()
        self.profiles = CatalogCache(profile_dir(config, condor_param), config,
                                     on_reload=lambda c: [log.error("profile: %s", e) for e in c.errors])

    # ------------------------------------------------------------ requests

    def handle(self, request: object, peer: Peer) -> dict[str, object]:
        """``request``: the line as :func:`parse_request` read it (None: not JSON)."""
        if request is None:
            return {"ok": False, "error": "malformed request (expected one JSON object per line)"}
        op = request.get("op") if isinstance(request, dict) else None
        try:
            if op == "setup":
                return self.setup(peer)
            if op == "finalize":
                return self.finalize(peer)
            if op == "ping":
                return {"ok": True}
            return {"ok": False, "error": f"unknown op {op!r} (known: setup, finalize, ping)"}
        except LarkError as err:
            log.warning("refused %s from pid %d uid %d: %s", op, peer.pid, peer.uid, err)
            return {"ok": False, "error": str(err)}
        except Exception:  # the broker must survive any request
            log.exception("internal error handling %s from pid %d", op, peer.pid)
            return {"ok": False, "error": "internal error in lark-netd (see its log)"}

    def _record_of(self, peer: Peer) -> JobRecord | None:
        start = process_start_time(peer.pid)
        for record in self.engine.records():
            if record.holder_pid == peer.pid and record.holder_start == start:
                return record
        return None

    def setup(self, peer: Peer) -> dict[str, object]:
        starter = starter_of(peer, self.host_netns_inode)
        existing = self._record_of(peer)
        if existing is not None and existing.status == "up":
            return {"ok": True, "env": _environment(existing), "again": True}
        ctx = job_context(self.config.execute_dir, starter)
        chirp = Chirp(ctx.chirp_config) if ctx.chirp_config else None
        try:
            _check_owner(ctx, peer)
            resolved = request_for_job(ctx.ad, self.profiles.get, self.config, ctx.job_id,
                                       lambda: user_and_groups(peer.uid))
            record = self.engine.up(resolved.request, netns_path=f"/proc/{peer.pid}/ns/net", holder_pid=peer.pid,
                                    owner_uid=peer.uid, site=resolved.site)
        except LarkError as err:
            message = f"Lark could not set up the job's network: {err}"
            log.warning("job %s: %s", ctx.job_id, message)
            if chirp:
                try:
                    chirp.set({SETUP_ERROR_ATTR: message})
                except LarkError as chirp_err:
                    log.error("job %s: cannot record the setup error: %s", ctx.job_id, chirp_err)
            return {"ok": False, "error": message}
        profile_env = resolved.extras.job_environment(record.ports, record.public_ipv4) if resolved.extras else {}
        record.extra.update({"chirp": str(ctx.chirp_config) if ctx.chirp_config else None,
                             "starter_pid": starter, "profile_env": profile_env})
        self.engine.store.save(record)
        log.info("job %s: %s network up for pid %d (%s)", ctx.job_id, record.mode, peer.pid,
                 ", ".join(a for a in (record.ipv4, record.ipv6) if a) or "loopback only")
        if chirp:
            attrs: dict[str, object] = dict(network_attributes(record))
            try:
                chirp.set(attrs)
                if ctx.ad.get(SETUP_ERROR_ATTR) is not None and str(ctx.ad.get(SETUP_ERROR_ATTR)) != "Undefined":
                    chirp.clear(SETUP_ERROR_ATTR)  # a released job must not be held again
            except LarkError as err:
                log.warning("job %s: %s", ctx.job_id, err)
        return {"ok": True, "env": _environment(record)}

    def finalize(self, peer: Peer) -> dict[str, object]:
        record = self._record_of(peer)
        if record is None:
            return {"ok": True, "note": "no network recorded for this process"}
        attrs: dict[str, object] = {}
        if record.mode != "none":
            counters = self.engine.counters(record.token)
            attrs = dict(accounting_attributes(counters, self.config.traffic_classes))
        chirp_path = record.extra.get("chirp")
        with self._chirp_lock:
            self._final.add(record.token)
            if chirp_path and attrs:
                try:
                    chirp = Chirp(Path(str(chirp_path)))
                    chirp.set(attrs)
                    chirp.set(attrs, delayed=True)  # replaces a periodic value the starter still holds
                except (LarkError, OSError) as err:
                    log.warning("job %s: final accounting not recorded: %s", record.job_id, err)
        log.info("job %s: finalised %s", record.job_id,
                 ", ".join(f"{k}={v}" for k, v in attrs.items()) if attrs else "(no network)")
        # the reply goes out first; the ~40 ms veth delete happens after the wrapper has gone on
        threading.Thread(target=self._teardown_quietly, args=(record.token,), daemon=True).start()
        return {"ok": True, "accounting": attrs}

    def _teardown_quietly(self, token: str) -> None:
        try:
            self.engine.down(token)
        except LarkError as err:
            log.warning("teardown of %s failed (the sweep will retry): %s", token, err)

    # ------------------------------------------------------------ periodic work

    def push_accounting(self) -> None:
        records = [r for r in self.engine.records() if r.status == "up" and r.extra.get("chirp") and r.mode != "none"]
        with self._chirp_lock:
            # A token leaves the "final" set only once a copy of the records no longer holds its job,
            # so no later iteration can push a value read before finalize (the copy below may still).
            self._final &= {r.token for r in records}
        if not records:
            return
        counters = self.engine.all_counters()
        for record in records:
            c = counters.get(record.token)
            if c is None:
                continue
            with self._chirp_lock:
                if record.token in self._final:  # its final values are out; an older one must not follow
                    continue
                try:
                    Chirp(Path(str(record.extra["chirp"]))).set(
                        accounting_attributes(c, self.config.traffic_classes), delayed=True)
                except (LarkError, OSError) as err:
                    log.debug("job %s: periodic update skipped: %s", record.job_id, err)

    def sweep(self) -> None:
        report = self.engine.sweep()
        if not report.empty():
            log.info("sweep removed jobs %s, links %s, namespaces %s, rules %s, allocations %s",
                     report.removed_jobs, report.removed_links, report.removed_netns, report.removed_firewall,
                     report.released)

    def periodic(self) -> None:
        next_sweep = next_push = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_push:
                    self.push_accounting()
                    next_push = now + self.config.accounting_interval
                if now >= next_sweep:
                    self.sweep()
                    next_sweep = now + self.config.sweep_interval
            except Exception:
                log.exception("periodic work failed; continuing")
            self.stop.wait(max(0.2, min(next_push, next_sweep) - time.monotonic()))


def _check_owner(ctx: JobContext, peer: Peer) -> None:
    """The wrapper runs as the job's user: the starter made the scratch dir for that uid."""
    scratch = ctx.ad_path.parent
    owner = os.stat(scratch).st_uid
    if owner != peer.uid and peer.uid != 0:
        raise LarkError(f"uid {peer.uid} does not own job {ctx.job_id}'s scratch directory")


class _Handler(socketserver.StreamRequestHandler):
    server: BrokerServer

    def handle(self) -> None:
        try:
            peer = peer_credentials(self.connection)
        except OSError:
            return
        self.connection.settimeout(10)
        try:
            raw = self.rfile.readline(MAX_REQUEST)
        except OSError:
            return
        request = parse_request(raw)
        reply = self.server.broker.handle(request, peer)
        try:
            self.wfile.write(encode_reply(reply, wants_lines(request)))
        except OSError:
            pass


def _environment(record: JobRecord) -> dict[str, str]:
    """What the wrapper adds to the job's environment: Lark's variables, then the profile's."""
    return {**job_environment(record), **dict(record.extra.get("profile_env") or {})}  # type: ignore[call-overload]


def parse_request(raw: bytes) -> object:
    """One request line, parsed once; None when it is not JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def wants_lines(request: object) -> bool:
    """The wrapper asks for the line format (it does not import json on the job's start path)."""
    return isinstance(request, dict) and request.get("reply") == "lines"


def encode_reply(reply: dict[str, object], lines: bool) -> bytes:
    """JSON (one line), or ``ok`` + ``KEY=VALUE`` lines / ``error <message>`` for the wrapper."""
    if not lines:
        return json.dumps(reply).encode() + b"\n"
    if not reply.get("ok"):
        message = " ".join(str(reply.get("error", "unknown error")).split())  # one line
        return f"error {message}\n".encode()
    env = reply.get("env") or {}
    body = "".join(f"{k}={' '.join(str(v).split())}\n" for k, v in dict(env).items())  # type: ignore[call-overload]
    return f"ok\n{body}".encode()


class BrokerServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, broker: Broker) -> None:
        self.broker = broker
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)
        path.unlink(missing_ok=True)
        super().__init__(str(path), _Handler)
        # any local process may connect; authorisation is by SO_PEERCRED and /proc, per request
        os.chmod(path, 0o666)
