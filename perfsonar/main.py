"""``lark-spider``: crawl perfSONAR and advertise ``LarkNetworkLink`` ads to the collector.

    lark-spider --once --dry-run      crawl once and print the ads instead of publishing them
    lark-spider --once                crawl once, publish, exit
    lark-spider                       daemon: crawl every spider.interval seconds (under condor_master)
    lark-spider --check-config        validate the YAML and exit

Exit status: 0 success (a crawl with unreachable archives is still a success: their links are
carried over as stale), 1 configuration error, 3 the collector refused the ads (``--once`` only).
In daemon mode nothing but SIGTERM/SIGINT/SIGQUIT ends the process; SIGHUP re-reads the config.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from perfsonar.config import SpiderConfig, config_path, load_config
from perfsonar.crawl import Spider
from perfsonar.errors import ConfigError, PublishError
from perfsonar.log import setup_logging
from perfsonar.publish import publish_batches

log = logging.getLogger("lark.spider")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lark-spider", description=__doc__.split("\n\n")[0])
    p.add_argument("-c", "--config", help="YAML config (default: $LARK_SPIDER_CONFIG or /etc/lark/spider.yaml)")
    p.add_argument("--once", action="store_true", help="run one crawl and exit")
    p.add_argument("--dry-run", action="store_true", help="print the ads instead of advertising them")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the ads as JSON")
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    p.add_argument("--log", help="log file ('-' for stderr); default spider.log / LARK_SPIDER_LOG")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # condor_master passes -f/-t/-local-name to DaemonCore daemons; accept them harmlessly.
    p.add_argument("-f", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-t", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-local-name", dest="local_name", help=argparse.SUPPRESS)
    return p


def _print_ads(spider: Spider, config: SpiderConfig, as_json: bool) -> None:
    result = spider.crawl()
    out = sys.stdout
    count = 0
    if as_json:
        out.write("[\n")
    for ad in spider.iter_ads(result):
        if as_json:
            out.write((",\n" if count else "") + ad.printJson().strip())
        else:
            out.write(ad.printOld().strip() + "\n\n")
        count += 1
    if as_json:
        out.write("\n]\n")
    out.write(f"# {count} ads would be advertised to {config.collector.address or 'the local collector'}\n")
    if result.unmapped:
        out.write(f"# unmapped hosts: {', '.join(sorted(result.unmapped))}\n")
    out.flush()


def _crawl_and_publish(spider: Spider) -> bool:
    """One crawl + publish; False when publishing failed. Crawl problems are only logged."""
    config = spider.config
    result = spider.crawl()
    try:
        sent = publish_batches(spider.ad_batches(result), config.collector.address, config.collector.token_dir)
    except PublishError as err:
        log.error("%s", err)
        return False
    log.info("advertised %d ads to %s", sent, config.collector.address or "the local collector")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path: Path = config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as err:
        print(f"lark-spider: configuration error: {err}", file=sys.stderr)
        return 1
    if args.check_config:
        print(f"{path}: OK ({len(config.publishers)} publishers, {len(config.meshes)} meshes, "
              f"{len(config.archives)} archive endpoints, {len(config.site_rules)} site rules, "
              f"{len(config.registries)} registries)")
        return 0
    log_target = args.log if args.log is not None else (config.log_file if not args.dry_run else "-")
    try:
        setup_logging(log_target, args.verbose)
    except OSError as err:
        print(f"lark-spider: cannot open log {log_target}: {err.strerror}", file=sys.stderr)
        return 1

    spider = Spider(config)
    try:
        if args.dry_run:
            _print_ads(spider, config, args.json)
            return 0
        if args.once:
            return 0 if _crawl_and_publish(spider) else 3
        return _daemon(spider, path)
    finally:
        spider.close()


def _daemon(spider: Spider, path: Path) -> int:
    stop = threading.Event()
    reload_wanted = threading.Event()

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("got signal %d, exiting after the current step", signum)
        stop.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        reload_wanted.set()
        stop.set()  # wake the sleep; cleared again below

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    log.info("lark-spider starting: config %s, crawl every %.0f s", path, spider.config.interval)
    while True:
        started = time.monotonic()
        try:
            _crawl_and_publish(spider)
        except Exception:  # noqa: BLE001 - the daemon outlives any single crawl's bug; the log has the trace
            log.exception("crawl failed unexpectedly; trying again next interval")
        while True:
            remaining = spider.config.interval - (time.monotonic() - started)
            if remaining > 0 and not stop.wait(remaining):
                break
            if reload_wanted.is_set():
                reload_wanted.clear()
                stop.clear()
                try:
                    new = load_config(path)
                except ConfigError as err:
                    log.error("not reloading: %s", err)
                else:
                    spider.close()
                    spider = Spider(new)
                    log.info("configuration reloaded from %s", path)
                continue
            if stop.is_set():
                log.info("lark-spider exiting")
                return 0
            break
