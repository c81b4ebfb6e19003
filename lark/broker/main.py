"""``lark-netd`` entry point: parse arguments, set up logging, reconcile, serve. Nothing else."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path

from lark import __version__, extra_hint
from lark.config import condor_param, load_config
from lark.errors import LarkError

HTCONDOR_LOG_FORMAT = "%(asctime)s (pid:%(process)d) %(levelname)s %(message)s"
HTCONDOR_DATE_FORMAT = "%m/%d/%y %H:%M:%S"
#: Rotation as HTCondor rotates its daemons' logs: MAX_<SUBSYS>_LOG bytes (10 MiB by default, 0: never)
#: and MAX_NUM_<SUBSYS>_LOG old files (1: LarkNetdLog.old). The master starts the broker as LARK_NETD.
MAX_LOG_KNOB = "MAX_LARK_NETD_LOG"
MAX_NUM_LOG_KNOB = "MAX_NUM_LARK_NETD_LOG"
DEFAULT_MAX_LOG = 10 * 1024 * 1024
DEFAULT_MAX_NUM_LOG = 1


def main(argv: Sequence[str] | None = None) -> int:
    # condor_master sends SIGHUP on every condor_reconfig to daemons that are not DaemonCore ones;
    # its default action would kill the broker (counted as a crash, and backed off). Ignored from
    # the first instant; a logging handler replaces this once the log is open.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    parser = argparse.ArgumentParser(
        prog="lark-netd", description="Lark's root network broker (condor_master runs it from DAEMON_LIST).",
        epilog=f"Log: LARK_LOG, rotated at {MAX_LOG_KNOB} bytes keeping {MAX_NUM_LOG_KNOB} old files. "
               "Exit status: 0 stopped by a signal, 2 usage or configuration error.")
    parser.add_argument("--version", action="version", version=f"lark-netd {__version__}")
    parser.add_argument("--config", action="append", type=Path, metavar="PATH")
    parser.add_argument("-D", dest="overrides", action="append", default=[], metavar="KNOB=VALUE")
    parser.add_argument("--stderr", action="store_true", help="log to stderr instead of LARK_LOG")
    # condor_master starts its daemons with -f (foreground) and sometimes -local-name; accept them
    args, _unknown = parser.parse_known_args(argv)
    try:
        overrides = {}
        for item in args.overrides:
            knob, sep, value = item.partition("=")
            if not sep:
                raise LarkError(f"-D expects KNOB=VALUE, got {item!r}")
            overrides[knob.strip()] = value.strip()
        config = load_config(args.config, overrides, external=condor_param)
    except LarkError as err:
        print(f"lark-netd: {err}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("lark-netd: must run as root", file=sys.stderr)
        return 2
    handler: logging.Handler
    if args.stderr:
        handler = logging.StreamHandler()
    else:
        config.log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = log_handler(config.log_path, condor_param)
    handler.setFormatter(logging.Formatter(HTCONDOR_LOG_FORMAT, HTCONDOR_DATE_FORMAT))
    root = logging.getLogger("lark")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    log = logging.getLogger("lark.netd")

    # Import what the first request needs now, not on the first job's start path (~100 ms).
    import classad2  # noqa: F401
    import htcondor2.htchirp  # noqa: F401

    from lark.broker.connections import BrokerServer
    from lark.broker.server import Broker
    from lark.engine import Engine

    engine = Engine(config)
    try:
        broker = Broker(config, engine)
    except LarkError as err:  # e.g. LARK_STARTER names no root-owned file: say so once, not per job
        log.error("cannot start: %s", err)
        print(f"lark-netd: {err}", file=sys.stderr)
        engine.close()
        return 2
    if config.metrics_address is not None or config.metrics_textfile is not None:
        try:
            from lark.metrics import NodeMetrics

            broker.metrics = NodeMetrics(config.state_dir, config.shares)
            if config.metrics_address is not None:
                broker.metrics.serve(*config.metrics_address)
                log.info("metrics on http://%s:%d/metrics", *config.metrics_address)
        except (ImportError, OSError) as err:
            # the broker's job comes first: jobs get their networks without metrics
            log.error("metrics are off: %s (LARK_METRICS_ADDRESS needs prometheus-client: %s)", err,
                      extra_hint("metrics"))
            broker.metrics = None
    try:
        # the host's rules as this broker's knobs say (isolation may have changed), and every running
        # job's host part, whatever happened while no broker was watching
        restored = engine.restore_host_rules(force=True)
        if restored:
            log.info("host firewall rules applied for %d running jobs", len(restored))
    except LarkError as err:
        log.error("cannot apply the host's firewall rules: %s", err)
    try:
        broker.sweep()  # reconcile with the kernel after a crash or restart
    except LarkError as err:
        log.error("initial sweep failed: %s", err)
    _raise_open_file_limit(log)
    server = BrokerServer(config.socket_path, broker, backlog=config.broker_backlog, workers=config.broker_workers,
                          max_connections=config.broker_max_connections, request_timeout=config.request_timeout)

    def shutdown(signum: int, _frame: object) -> None:
        # running jobs keep their networks; the next broker reconciles and finalises them
        log.info("signal %d: stopping (job networks stay up)", signum)
        broker.stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(sig, shutdown)

    def reconfig(_signum: int, _frame: object) -> None:
        # profiles are re-read when their files change; knobs only at start
        log.info("SIGHUP (condor_reconfig): profiles are re-read when they change; restart lark-netd "
                 "(condor_restart -daemon LARK_NETD) to apply changed LARK_ knobs")

    signal.signal(signal.SIGHUP, reconfig)
    broker.watch_recorded_holders()
    threading.Thread(target=broker.periodic, name="lark-periodic", daemon=True).start()
    log.info("lark-netd listening on %s (prefix %s, firewall %s, %d jobs recorded)", config.socket_path,
             config.name_prefix, config.firewall, len(engine.records()))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        engine.close()
        if config.metrics_textfile is not None:  # stale series must not outlive the broker
            config.metrics_textfile.unlink(missing_ok=True)
    return 0


def log_rotation(param: Callable[[str], str | None]) -> tuple[int, int]:
    """(bytes, old files) from MAX_LARK_NETD_LOG / MAX_NUM_LARK_NETD_LOG, HTCondor's defaults when
    unset or not a number (a bad knob must not stop the broker: jobs come first)."""
    def number(knob: str, default: int) -> int:
        text = (param(knob) or "").strip()
        try:
            return max(int(text), 0)
        except ValueError:
            return default

    return number(MAX_LOG_KNOB, DEFAULT_MAX_LOG), max(number(MAX_NUM_LOG_KNOB, DEFAULT_MAX_NUM_LOG), 1)


def log_handler(path: Path, param: Callable[[str], str | None]) -> logging.Handler:
    """The broker's log file, rotated like HTCondor's daemon logs: at the size limit the file becomes
    ``LarkNetdLog.old`` (more old files: ``.old``, ``.old.1``, ...) and a new one starts."""
    max_bytes, keep = log_rotation(param)
    if max_bytes == 0:
        return logging.FileHandler(path)
    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=keep)
    handler.namer = lambda name: _old_name(str(path), name)
    return handler


def _old_name(base: str, rotated: str) -> str:
    """logging's ``X.1``, ``X.2`` as HTCondor's ``X.old``, then ``X.old.1``, ..."""
    number = int(rotated.rsplit(".", 1)[1])
    return f"{base}.old" if number == 1 else f"{base}.old.{number - 1}"


def _raise_open_file_limit(log: logging.Logger) -> None:
    """Held connections cost one descriptor each: take the hard limit (systemd and condor_master
    often start daemons with a soft limit of 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as err:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, err)


if __name__ == "__main__":
    sys.exit(main())
