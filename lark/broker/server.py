"""``lark-netd``: the root broker that does every privileged step for job wrappers.

Protocol: one JSON object per line over a pathname Unix socket. A wrapper sends
``{"op": "setup"}`` before the job starts and ``{"op": "finalize"}`` after it exits; nothing in a
request names a job, a namespace or a path. The broker derives all of it from the caller's
identity, pinned when the connection is accepted (see :mod:`lark.broker.peer`), so a caller can
only ever act on its own job. Replies are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``;
a bad request never raises out of the handler.

Rules that keep a job's accounting honest (its processes share the wrapper's uid):

* **one network per job at a time**: a job is its starter (pid + start time); a ``setup`` while
  an earlier wrapper of the same starter lives is refused, whoever asks, and so is a wrapper's
  ``setup`` after its own ``finalize`` (remembered in ``LARK_STATE_DIR/finished`` while the
  starter lives). A starter that starts its wrapper again after the earlier one ended (a
  self-checkpointing job) gets a new network whose counters continue from the earlier totals;
* ``finalize`` acts only on the record whose holder is the caller itself, and only for the uid
  that owns the job;
* when the holder (the wrapper) dies without ``finalize``, its pidfd watch (or the sweep) reads the
  job's counters from its pinned namespace, pushes them into the job ad if the starter is still there, and always
  appends them to the accounting journal before anything is removed.

How connections are held and requests reach :meth:`Broker.handle` is
:mod:`lark.broker.connections`; the wire format is :mod:`lark.broker.protocol`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from lark import __version__, journal, netns, node_summary
from lark.addressing import client_id, dhcp_hostname, follow_lease
from lark.addressing import dhcp as dhcp_client
from lark.attach import mode
from lark.broker.condor import Chirp, ChirpAddress, JobContext, job_context
from lark.broker.connections import move_up
from lark.broker.peer import Peer, Starter, TrustedStarter, starter_of
from lark.classads import SETUP_ERROR_ATTR, accounting_attributes, lease_attributes, network_attributes
from lark.config import LarkConfig, condor_param
from lark.engine import Engine
from lark.errors import LarkError, NotPermitted
from lark.firewall.base import JobCounters
from lark.jobenv import wrapper_environment
from lark.metrics import NodeMetrics
from lark.node_summary import NODE_SUMMARY_FILE
from lark.profiles import CatalogCache, profile_dir, request_for_job, user_and_groups
from lark.shares import accounting_group
from lark.state import JobRecord, process_start_time

log = logging.getLogger("lark.netd")
# Chirped at a successful set-up with the job ad's JobCurrentStartDate: the submit transform holds
# a job whose wrapper exited 117 or 118 (lark.wrap) *without* this run's network (the broker was
# unreachable), and leaves alone a job that really ran and exited with the same code.
NETWORK_START_ATTR = "LarkNetworkStartDate"


class Broker:
    def __init__(self, config: LarkConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.host_netns_inode = netns.current_inode()
        self.trusted_starter = TrustedStarter.load(config.starter_path)
        self.stop = threading.Event()
        # Final counters must win over periodic ones. Periodic values go out as set_job_attr_delayed,
        # which the starter keeps and sends with its *next* update to the shadow, at the latest at
        # job exit: after an immediate set_job_attr of the final values, so a delayed value still
        # pending would overwrite them in the job ad and in condor_history (seen on 25.14.1: the
        # last interval's bytes were missing). So the final values go out both ways, the job is
        # marked final first (under _state_lock), and every push of a job holds that job's own lock:
        # a periodic push in flight finishes before the final one, and a later one sees the mark.
        # Per job, not global: a starter that stops answering (each call is bounded by
        # CHIRP_DEADLINE) holds up only its own job.
        self._state_lock = threading.Lock()
        self._final: set[str] = set()
        self._job_locks: dict[str, threading.Lock] = {}
        # starters whose job is being set up right now (a second request waits for no one: refused)
        self._starting: set[tuple[int, int]] = set()
        # set by lark-netd's main when LARK_METRICS_ADDRESS or LARK_METRICS_TEXTFILE is on
        self.metrics: NodeMetrics | None = None
        # set by the server: watch(pidfd, token) calls holder_exited(token) when that process ends
        self.watch: Callable[[int, str], None] | None = None
        self.finished_dir = config.state_dir / "finished"
        self.finished_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # the node's totals for its startd ad (lark node-ad): ended jobs, kept across restarts
        self.node_file = config.state_dir / NODE_SUMMARY_FILE
        self._node_ended = node_summary.load_ended(self.node_file)
        self._node_running: tuple[int, int, int] = (0, 0, 0)  # jobs, bytes in, bytes out
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
            if op == "ping":  # lark doctor: the broker answers, and which Lark it runs
                return {"ok": True, "version": __version__}
            return {"ok": False, "error": f"unknown op {str(op)[:40]!r} (known: setup, finalize, ping)"}
        except LarkError as err:
            log.warning("refused %s from pid %d uid %d: %s", op, peer.pid, peer.uid, err)
            if self.metrics is not None:
                self.metrics.refused.labels(str(op)[:20]).inc()
            return {"ok": False, "error": str(err)}
        except Exception:  # the broker must survive any request
            log.exception("internal error handling %s from pid %d", op, peer.pid)
            return {"ok": False, "error": "internal error in lark-netd (see its log)"}

    def _record_of(self, peer: Peer, records: list[JobRecord] | None = None) -> JobRecord | None:
        """The record whose holder is the caller itself (pid and start time pinned at accept)."""
        for record in self.engine.records() if records is None else records:
            if record.holder_pid == peer.pid and record.holder_start == peer.start:
                return record
        return None

    # -- what is remembered of a job's finished runs (per starter: one job, maybe several wrappers)

    def _finished_mark(self, pid: int, start: int) -> Path:
        return self.finished_dir / f"{pid}-{start}"

    def _finished(self, pid: int, start: int) -> dict[str, object]:
        """``{"holders": [[pid, start], ...], "totals": {attribute: value}}`` of a starter's job."""
        try:
            data = json.loads(self._finished_mark(pid, start).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {"holders": [], "totals": {}}
        return data if isinstance(data, dict) else {"holders": [], "totals": {}}

    def _remember_finished(self, record: JobRecord, attrs: Mapping[str, object]) -> None:
        pid, start = record.starter_pid, record.starter_start
        if pid is None or start is None:
            return
        done = self._finished(pid, start)
        holders = list(done.get("holders") or [])
        holders.append([record.holder_pid, record.holder_start])
        tmp = self.finished_dir / f".{pid}-{start}.{threading.get_ident()}"
        tmp.write_text(json.dumps({"holders": holders, "totals": dict(attrs)}))
        os.replace(tmp, self._finished_mark(pid, start))

    # -- setup

    def setup(self, peer: Peer) -> dict[str, object]:
        starter = starter_of(peer, self.host_netns_inode, self.trusted_starter)
        key = (starter.pid, starter.start)
        done = self._finished(*key)
        if [peer.pid, peer.start] in done.get("holders", []):
            raise NotPermitted(f"the job of starter {starter.pid} already had its network set up and finalised "
                               "by this wrapper; no process of the job may ask for another")
        records = self.engine.records()  # read once for the whole request
        existing = self._record_of(peer, records)
        if existing is not None and existing.status == "up" and existing.token not in self._final:
            return {"ok": True, "env": wrapper_environment(existing), "again": True}  # the same wrapper (a lost reply)
        with self._state_lock:
            if key in self._starting:
                raise NotPermitted(f"the job of starter {starter.pid} already has its network being set up")
            self._starting.add(key)
        try:
            # A starter runs one job, but may start its wrapper again (a self-checkpointing job is
            # restarted in the same sandbox): a new wrapper is served only once every earlier one
            # of this starter has ended, and its counters continue from the earlier runs' totals.
            mine = [r for r in records
                    if r.starter_pid == starter.pid and r.starter_start == starter.start]
            earlier = [(r.holder_pid, r.holder_start) for r in mine]
            earlier += [tuple(h) for h in done.get("holders", []) if isinstance(h, list) and len(h) == 2]
            if any(isinstance(pid, int) and process_start_time(pid) == start for pid, start in earlier):
                raise NotPermitted(f"the job of starter {starter.pid} already had its network set up: Lark gives "
                                   "a job one network at a time, and no process of the job may ask for another")
            for record in mine:
                self.holder_exited(record.token)  # an earlier wrapper that ended: account for it first
            # the earlier wrappers' totals: re-read only when one of them was just accounted for
            totals = self._finished(*key) if mine else done
            return self._setup(peer, starter, dict(totals.get("totals") or {}))
        finally:
            with self._state_lock:
                self._starting.discard(key)

    def _setup(self, peer: Peer, starter: Starter, carried: dict[str, object]) -> dict[str, object]:
        began = time.monotonic()
        ctx = job_context(self.config.execute_dir, starter.pid)
        # the caller must own the job before anything is written into the job's ad on its behalf
        _check_owner(ctx, peer)
        chirp = Chirp(ctx.chirp) if ctx.chirp else None
        try:
            resolved = request_for_job(ctx.ad, self.profiles.get, self.config, ctx.job_id,
                                       lambda: user_and_groups(peer.uid))
            record = self.engine.up(resolved.request, netns_path=f"/proc/{peer.pid}/ns/net", holder_pid=peer.pid,
                                    owner_uid=peer.uid, site=resolved.site,
                                    global_job_id=_str_or_none(ctx.ad.get("GlobalJobId")),
                                    accounting_group=accounting_group(ctx.ad))
        except NotPermitted:
            raise  # nothing of the job's own to report in its ad
        except LarkError as err:
            message = f"Lark could not set up the job's network: {err}"
            log.warning("job %s: %s", ctx.job_id, message)
            if self.metrics is not None:
                self.metrics.setup_failures.inc()
            if chirp:
                try:
                    chirp.set({SETUP_ERROR_ATTR: message})
                except LarkError as chirp_err:
                    log.error("job %s: cannot record the setup error: %s", ctx.job_id, chirp_err)
            return {"ok": False, "error": message}
        # The engine looked the wrapper up by pid once more: make sure that was still the caller
        # and its namespace (a wrapper that died meanwhile could have had its pid reused).
        if record.holder_start != peer.start or record.netns_inode != starter.job_netns or not peer.same_process():
            self._teardown_quietly(record.token)
            raise NotPermitted(f"process {peer.pid} went away while its network was being set up")
        self._watch_holder(peer, record.token)
        profile_env = resolved.extras.job_environment(record.ports, record.public_ipv4) if resolved.extras else {}
        record.chirp = ctx.chirp.to_dict() if ctx.chirp else None
        record.starter_pid, record.starter_start = starter.pid, starter.start
        record.global_job_id = _str_or_none(ctx.ad.get("GlobalJobId"))
        record.carried = {k: v for k, v in carried.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        record.profile_env = profile_env
        self.engine.store.save(record)
        log.info("job %s: %s network up for pid %d (%s)%s", ctx.job_id, record.mode, peer.pid,
                 ", ".join(a for a in (record.ipv4, record.ipv6) if a) or "loopback only",
                 " (a restart: earlier runs' counters carried)" if carried else "")
        if self.metrics is not None:
            self.metrics.setups.labels(record.mode).inc()
            self.metrics.setup_seconds.observe(time.monotonic() - began)
        if chirp:
            attrs: dict[str, object] = dict(network_attributes(record))
            started = ctx.ad.get("JobCurrentStartDate")
            if isinstance(started, int) and not isinstance(started, bool):
                attrs[NETWORK_START_ATTR] = started
            try:
                chirp.set(attrs)
                if ctx.ad.get(SETUP_ERROR_ATTR) is not None:
                    chirp.clear(SETUP_ERROR_ATTR)  # a released job must not be held again
            except LarkError as err:
                log.warning("job %s: %s", ctx.job_id, err)
        return {"ok": True, "env": wrapper_environment(record)}

    # -- finalize and final accounting

    def finalize(self, peer: Peer) -> dict[str, object]:
        peer.facts()  # the caller is still the process that connected
        record = self._record_of(peer)
        if record is None:
            return {"ok": True, "note": "no network recorded for this process"}
        if record.owner_uid is not None and peer.uid not in (record.owner_uid, 0):
            raise NotPermitted(f"uid {peer.uid} does not own job {record.job_id}")
        # a job with no network sent and received nothing: explicit zeros, not undefined
        counters = self.engine.final_counters(record.token) if mode(record.mode).job_interface else JobCounters()
        attrs = self.record_final(record, counters, "finalize")
        # the reply goes out first; the ~40 ms veth delete happens after the wrapper has gone on
        threading.Thread(target=self._teardown_quietly, args=(record.token,), daemon=True).start()
        return {"ok": True, "accounting": attrs}

    def _job_lock(self, token: str) -> threading.Lock:
        with self._state_lock:
            return self._job_locks.setdefault(token, threading.Lock())

    def _attributes(self, record: JobRecord, counters: JobCounters) -> dict[str, object]:
        """The job ad's accounting attributes: this run's counters plus earlier runs' of the same job."""
        attrs: dict[str, object] = dict(accounting_attributes(counters, self.config.traffic_classes))
        for name, value in record.carried.items():
            if name in attrs:
                attrs[name] = attrs[name] + value  # type: ignore[operator]
        return attrs

    def record_final(self, record: JobRecord, counters: JobCounters | None, reason: str) -> dict[str, object]:
        """Push a job's final counters into its ad (when its starter is still there) and append them
        to the journal (always), and remember that the job is over. Returns the attributes; only the
        first call for a job does anything (finalize and a dying wrapper's watch may race)."""
        with self._state_lock:
            if record.token in self._final:
                return {}
            self._final.add(record.token)
        attrs = self._attributes(record, counters) if counters is not None else {}
        in_ad = False
        address = ChirpAddress.from_record(record.chirp)
        with self._job_lock(record.token):  # after any periodic push of this job still in flight
            if address is not None and attrs:
                try:
                    chirp = Chirp(address)
                    chirp.set(attrs)
                    chirp.set(attrs, delayed=True)  # replaces a periodic value the starter still holds
                    in_ad = True
                except LarkError as err:
                    log.warning("job %s: final accounting not recorded in the job ad (%s); it is in the "
                                "journal %s", record.job_id, err, self.config.journal_path)
        try:
            journal.append(self.config.journal_path, journal.JournalEntry(
                job_id=record.job_id, global_job_id=record.global_job_id,
                owner_uid=record.owner_uid, token=record.token, reason=reason, in_job_ad=in_ad,
                attributes=attrs))
        except OSError as err:
            log.error("job %s: cannot append to the accounting journal %s: %s", record.job_id,
                      self.config.journal_path, err)
        if counters is not None:
            with self._state_lock:
                self._node_ended = node_summary.add_ended(self._node_ended, counters.bytes_in, counters.bytes_out)
        if self.metrics is not None:
            self.metrics.job_ended(record, counters)
            if attrs and not in_ad:
                self.metrics.journal_only.inc()
        self._remember_finished(record, attrs)
        log.info("job %s: final (%s) %s", record.job_id, reason,
                 ", ".join(f"{k}={v}" for k, v in attrs.items()) if attrs else "(no network)")
        return attrs

    def _watch_holder(self, peer: Peer, token: str) -> None:
        """Have the server tell us the moment the wrapper exits (no waiting for the next sweep)."""
        if self.watch is None or peer.pidfd is None:
            return
        try:
            self.watch(move_up(os.dup(peer.pidfd)), token)
        except OSError as err:
            log.debug("cannot watch pid %d: %s", peer.pid, err)

    def watch_recorded_holders(self) -> None:
        """After a restart: watch the wrappers of the jobs already recorded."""
        if self.watch is None:
            return
        for record in self.engine.records():
            if record.status != "up" or record.holder_pid is None:
                continue
            try:
                pidfd = move_up(os.pidfd_open(record.holder_pid))
            except OSError:
                continue  # already gone: the first sweep handles it
            if process_start_time(record.holder_pid) != record.holder_start:
                os.close(pidfd)  # the pid belongs to someone else now
                continue
            self.watch(pidfd, record.token)

    def holder_exited(self, token: str) -> None:
        """The job's wrapper has ended. After its finalize this is only the teardown; without one
        (the wrapper was killed) the job's counters are read and recorded first."""
        record = self.engine.store.load(token)
        if record is None:
            return
        if record.status == "up" and record.token not in self._final:
            self._holder_gone(record, self.engine.final_counters(token))
        self._teardown_quietly(token)

    def _teardown_quietly(self, token: str) -> None:
        try:
            self.engine.down(token)
        except LarkError as err:
            log.warning("teardown of %s failed (the sweep will retry): %s", token, err)

    # ------------------------------------------------------------ periodic work

    def push_accounting(self) -> None:
        running = [r for r in self.engine.records() if r.status == "up"]
        with self._state_lock:
            # A job leaves the "final" set (and its lock goes) only once the records no longer hold it.
            live = {r.token for r in running}
            self._final &= live
            self._job_locks = {t: lock for t, lock in self._job_locks.items() if t in live}
        if not running:
            if self.metrics is not None:
                self.metrics.update_running([], {})
            self._node_running = (0, 0, 0)
            return
        counters = self.engine.all_counters()
        live_jobs = [r for r in running if r.token not in self._final]
        if self.metrics is not None:
            self.metrics.update_running(live_jobs, counters)
        seen = [counters[r.token] for r in live_jobs if r.token in counters]
        self._node_running = (len(live_jobs), sum(c.bytes_in for c in seen), sum(c.bytes_out for c in seen))
        for record in running:
            c = counters.get(record.token)
            address = ChirpAddress.from_record(record.chirp)
            if c is None or address is None:  # c is None for a mode without an interface
                continue
            with self._job_lock(record.token):
                if record.token in self._final:  # its final values are out; an older one must not follow
                    continue
                try:
                    Chirp(address).set(self._attributes(record, c), delayed=True)
                except LarkError as err:
                    log.debug("job %s: periodic update skipped: %s", record.job_id, err)

    def watch_leases(self) -> None:
        """DHCP jobs: what each client did since the last look. Renewals and leases that ran out
        (the server gone: the job keeps its address until expiry, then the kernel removes it) are
        logged and counted in the record and the job ad; a client that died is started again with
        the same identifier, so the server hands back the same lease."""
        if not (self.config.state_dir / "dhcp").is_dir():
            return  # no job here was ever addressed by DHCP: no records to read
        for record in self.engine.records():
            # starter_pid None: not (yet) saved by _setup, whose fields a save from here would undo
            if record.status != "up" or record.dhcp_client_id is None or record.token in self._final \
                    or record.starter_pid is None:
                continue
            events = dhcp_client.read_events(self.config.state_dir, record.token)
            news = follow_lease(events[record.lease_events_seen:], record.ipv4)
            record.lease_events_seen = len(events)
            record.lease_renewals += news.renewals
            record.lease_expiries += news.expiries
            if news.latest is not None:
                record.lease_expires, record.lease_server = news.latest.expires, news.latest.server
            if news.renewals:
                log.info("job %s: DHCP lease of %s renewed (%d), now until %s", record.job_id, record.ipv4_address,
                         record.lease_renewals, time.strftime("%H:%M:%S", time.localtime(record.lease_expires or 0)))
            if news.expiries:
                log.warning("job %s: DHCP lease of %s ran out unrenewed (server %s unreachable?); the address "
                            "is gone, the client keeps asking", record.job_id, record.ipv4_address, record.lease_server)
            if news.changed_address:
                log.error("job %s: the DHCP server granted %s instead of %s; the job's rules still name the "
                          "old address", record.job_id, news.changed_address, record.ipv4_address)
            if dhcp_client.restart_needed(self.config.state_dir, record.token) and record.job_ifname:
                log.warning("job %s: its DHCP client died; starting it again", record.job_id)
                try:
                    dhcp_client.start_client(self.config.state_dir, record.token, record.netns, record.job_ifname,
                                             client_id(record.global_job_id or record.job_id, record.job_ifname),
                                             dhcp_hostname(record.job_id, record.token))
                except LarkError as err:
                    log.error("job %s: %s", record.job_id, err)
            if not (news.renewals or news.expiries or news.latest):
                continue
            self.engine.store.save(record)
            address = ChirpAddress.from_record(record.chirp)
            if address is not None:
                with self._job_lock(record.token):
                    try:
                        Chirp(address).set(lease_attributes(record), delayed=True)
                    except LarkError as err:
                        log.debug("job %s: lease update skipped: %s", record.job_id, err)

    def sweep(self) -> None:
        report = self.engine.sweep(on_final=self._holder_gone)
        if not report.empty():
            log.info("sweep removed jobs %s, links %s, namespaces %s, rules %s, allocations %s",
                     report.removed_jobs, report.removed_links, report.removed_netns, report.removed_firewall,
                     report.released)
        self._prune_finished()

    def _holder_gone(self, record: JobRecord, counters: JobCounters | None) -> None:
        """A job whose wrapper died without finalize (killed, or the job ended while we were away)."""
        if record.status != "up" or record.token in self._final:
            return  # never fully set up (nothing was counted), or already final (finalize ran)
        pid, start = record.starter_pid, record.starter_start
        if pid is not None and start is not None and \
                [record.holder_pid, record.holder_start] in self._finished(pid, start).get("holders", []):
            return  # finalize ran before a restart of the broker; only its teardown was left
        self.record_final(record, counters, "holder-gone")

    def _prune_finished(self) -> None:
        """Forget finished jobs whose starter has gone (its pid may then belong to a new job)."""
        for mark in self.finished_dir.iterdir():
            if mark.name.startswith("."):
                continue  # being written
            pid, _, start = mark.name.partition("-")
            if not (pid.isdigit() and start.isdigit()):
                mark.unlink(missing_ok=True)
                continue
            if process_start_time(int(pid)) != int(start):
                mark.unlink(missing_ok=True)

    def restore_firewall(self) -> None:
        restored = self.engine.restore_host_rules()
        if restored and self.metrics is not None:
            self.metrics.firewall_restores.inc(len(restored))
        if restored:
            log.warning("the host's firewall rules of %d running jobs had gone (a flushed ruleset?); restored "
                        "them: %s", len(restored), ", ".join(restored))

    def write_node_summary(self) -> None:
        with self._state_lock:
            ended = dict(self._node_ended)
        node_summary.write(self.node_file, ended, *self._node_running)

    def write_metrics_file(self) -> None:
        if self.metrics is not None and self.config.metrics_textfile is not None:
            self.metrics.write_textfile(self.config.metrics_textfile)

    def periodic(self) -> None:
        """The broker's clockwork; one failing task neither stops nor delays the others."""
        tasks = [(self.push_accounting, self.config.accounting_interval),
                 (self.write_metrics_file, self.config.accounting_interval),
                 (self.write_node_summary, self.config.accounting_interval),
                 (self.restore_firewall, self.config.firewall_check_interval),
                 (self.watch_leases, self.config.accounting_interval),
                 (self.sweep, self.config.sweep_interval)]
        due = [time.monotonic()] * len(tasks)
        while not self.stop.is_set():
            for i, (task, interval) in enumerate(tasks):
                now = time.monotonic()
                if now < due[i]:
                    continue
                try:
                    task()
                except Exception:
                    log.exception("periodic %s failed; continuing", task.__name__)
                due[i] = now + interval
            self.stop.wait(max(0.2, min(due) - time.monotonic()))


def _check_owner(ctx: JobContext, peer: Peer) -> None:
    """The wrapper runs as the job's user: the starter made the scratch dir for that uid."""
    scratch = ctx.ad_path.parent
    owner = os.stat(scratch).st_uid
    if owner != peer.uid and peer.uid != 0:
        raise NotPermitted(f"uid {peer.uid} does not own job {ctx.job_id}'s scratch directory")


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None

