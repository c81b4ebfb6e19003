"""``lark-spider``: crawl perfSONAR and advertise ``LarkNetworkLink`` ads to the collector.

The command line (see :data:`DESCRIPTION` and :data:`EPILOG`, which ``--help`` prints) can describe a
one-off crawl without any configuration file: ``--psconfig``, ``--esmond``, ``--opensearch`` and
``--site`` add to (or stand in for) the YAML file's sources and rules.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from lark import __version__, extra_hint
from perfsonar.config import SpiderConfig, config_path, load_spider_config
from perfsonar.crawl import CrawlResult, Spider
from perfsonar.errors import ConfigError, PublishError
from perfsonar.log import setup_logging
from perfsonar.model import LinkSummary
from perfsonar.publish import publish_batches

if TYPE_CHECKING:
    from perfsonar.metrics import SpiderMetrics

log = logging.getLogger("lark.spider")

# Lark's convention (0 ok, 1 problems found, 2 usage or configuration error); a crawl's own
# findings have codes of their own, so that a cron or a test can tell them apart.
EXIT_OK = 0
EXIT_CONFIG = 2  # argparse's usage errors exit 2 too
EXIT_COLLECTOR = 3
EXIT_NO_LINKS = 4
EXIT_NOTHING_FOUND = 5

DESCRIPTION = "Crawl perfSONAR meshes and archives and advertise LarkNetworkLink ads to the HTCondor collector."
EPILOG = """examples:
  lark-spider --once --dry-run --json --psconfig https://psconfig.example.org/pub/config
  lark-spider --once --dry-run --esmond https://ps.example.org/esmond/perfsonar/archive/ --site ps.example.org=EXAMPLE
  lark-spider --explain-sites -c /etc/lark/spider.yaml
  lark-spider                       (the daemon, under condor_master)

exit status:
  0  success (unreachable archives are not an error: their links are carried over as stale)
  2  usage or configuration error (a bad option, YAML file or LARK_SPIDER_* knob; a log file
     that cannot be opened)
  3  the collector refused the ads (--once)
  4  hosts were discovered but no link could be published from this crawl's data (--once,
     --dry-run); the reason, naming the unmapped hosts, is printed on stderr
  5  nothing was discovered: no mesh or archive answered with a host (--once, --dry-run);
     the reason is printed on stderr, the failed sources are logged

Without a configuration file (only --psconfig/--esmond/--opensearch) no state file is read or
written, so a one-off crawl shows only what it measured.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lark-spider", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"lark-spider {__version__}")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="YAML configuration (default: $LARK_SPIDER_CONFIG or /etc/lark/spider.yaml; optional "
                        "when --psconfig, --esmond or --opensearch is given)")
    p.add_argument("--once", action="store_true", help="run one crawl and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="crawl once and print the ads instead of advertising them; never writes the state file")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the ads as JSON")
    p.add_argument("--psconfig", action="append", default=[], metavar="URL",
                   help="a pSConfig/MeshConfig mesh or a publisher's pub/config list (repeatable)")
    p.add_argument("--esmond", action="append", default=[], metavar="URL",
                   help="an esmond or elmond archive, .../esmond/perfsonar/archive/ (repeatable)")
    p.add_argument("--opensearch", action="append", default=[], metavar="URL",
                   help="a perfSONAR 5 OpenSearch archive, https://HOST/opensearch (repeatable)")
    p.add_argument("--site", action="append", default=[], metavar="HOST=SITE",
                   help="map a host name, glob, address or CIDR prefix to a site, before any other rule "
                        "(repeatable)")
    p.add_argument("--explain-sites", action="store_true",
                   help="crawl once (dry) and print every host with its site and the source that decided it")
    p.add_argument("--explain-links", action="store_true",
                   help="crawl once (dry) and print every link with its grade and reason, and the mesh pairs "
                        "without data")
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    p.add_argument("--log", metavar="FILE", help="log file ('-' for stderr); default spider.log / LARK_SPIDER_LOG")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # condor_master passes -f/-t/-local-name to DaemonCore daemons; accept them harmlessly.
    p.add_argument("-f", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-t", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-local-name", dest="local_name", help=argparse.SUPPRESS)
    return p


def site_rule(text: str) -> dict[str, Any]:
    """``HOST=SITE`` -> a ``sites.rules`` entry (an address or CIDR prefix becomes ``cidrs``)."""
    host, sep, site = text.partition("=")
    host, site = host.strip(), site.strip()
    if not sep or not host or not site:
        raise ConfigError("--site", f"expected HOST=SITE, got {text!r}")
    try:
        return {"site": site, "cidrs": [str(ipaddress.ip_network(host.strip("[]"), strict=False))]}
    except ValueError:
        return {"site": site, "hosts": [host]}


def command_line_overrides(args: argparse.Namespace) -> Any:
    """A function that adds the command line's sources and site rules to the decoded YAML document."""

    def apply(data: dict[str, Any]) -> None:
        def section(name: str) -> dict[str, Any]:
            value = data.setdefault(name, {})
            if not isinstance(value, dict):
                raise ConfigError(name, "expected a mapping")
            return value

        if args.psconfig:
            discovery = section("discovery")
            discovery["meshes"] = list(discovery.get("meshes") or []) + list(args.psconfig)
        endpoints = [{"url": u, "type": "esmond"} for u in args.esmond]
        endpoints += [{"url": u, "type": "opensearch"} for u in args.opensearch]
        if endpoints:
            archives = section("archives")
            archives["endpoints"] = list(archives.get("endpoints") or []) + endpoints
        if args.site:
            sites = section("sites")
            sites["rules"] = [site_rule(t) for t in args.site] + list(sites.get("rules") or [])

    return apply


def _fresh(link: LinkSummary) -> bool:
    """True when this crawl measured something of the link (not everything carried over)."""
    return not all(m.carried for m in link.metrics.values())


def _print_ads(spider: Spider, result: CrawlResult, as_json: bool) -> int:
    """Print the ads; returns how many link ads hold data of this crawl (not only carried values).

    With ``as_json`` stdout is one JSON array and nothing else: the summary lines go to stderr.
    """
    out = sys.stdout
    note = sys.stderr if as_json else sys.stdout
    count = 0
    if as_json:
        out.write("[\n")
    for ad in spider.iter_ads(result):
        if as_json:
            out.write((",\n" if count else "") + ad.printJson().strip())
        else:
            out.write(ad.printOld().strip() + "\n\n")
        if ad.get("MyType") == "LarkNetworkLink":
            count += 1
    if as_json:
        out.write("\n]\n")
    out.flush()
    note.write(f"# {count} link ads would be advertised to "
               f"{spider.config.collector.address or 'the local collector'}\n")
    if result.unmapped:
        note.write(f"# unmapped hosts: {', '.join(sorted(result.unmapped))}\n")
    if result.missing:
        note.write(f"# {len(result.missing)} mesh pairs have no data (--explain-links lists them)\n")
    note.flush()
    return sum(1 for link in spider.published_links(result) if _fresh(link))


def no_links_reason(result: CrawlResult, published: int) -> tuple[int, str] | None:
    """The exit status (4 or 5) and its one-line reason, or None when there is nothing to complain about.

    ``published``: the published links that hold data of this crawl (links whose every figure was
    carried over from the state file do not count).
    """
    if published:
        return None
    stats = result.stats
    if not result.discovered:
        return EXIT_NOTHING_FOUND, (
            f"nothing was discovered: no host in any mesh or archive ({stats.meshes} meshes, {stats.archives} "
            f"archives, {stats.archives_failed} failed; {len(result.errors)} errors logged)")
    lead = f"{result.discovered} hosts discovered but no link could be published"
    if result.unmapped:
        shown = sorted(result.unmapped)
        more = f" and {len(shown) - 10} more" if len(shown) > 10 else ""
        return EXIT_NO_LINKS, (f"{lead}: no site for {', '.join(shown[:10])}{more} (add --site HOST=SITE, "
                               "sites.rules or a registry; --explain-sites shows every decision)")
    if not stats.series:
        return EXIT_NO_LINKS, (f"{lead}: the archives returned no measurements ({stats.archives} archives, "
                               f"{stats.archives_failed} failed)")
    return EXIT_NO_LINKS, (f"{lead}: no measurement of this crawl between hosts of two different sites "
                           "(--explain-links shows every link)")


def explain_sites(result: CrawlResult) -> None:
    assert result.site_map is not None
    rows = []
    for name, ip in result.hosts:
        decision = result.site_map.explain(name, ip)
        host = name if name and (ip is None or name == ip) else (f"{name} ({ip})" if name else ip or "?")
        rows.append((host, decision.site or "-", decision.source))
    width = max((len(r[0]) for r in rows), default=4)
    swidth = max((len(r[1]) for r in rows), default=4)
    for host, site, source in rows:
        sys.stdout.write(f"{host:<{width}}  {site:<{swidth}}  {source}\n")


def explain_links(result: CrawlResult) -> None:
    for key in sorted(result.links, key=lambda k: (k.src_site, k.dst_site, k.family)):
        link = result.links[key]
        sys.stdout.write(f"{key.name()}  {link.quality}  {link.reason}\n")
    site_of = result.site_map.site_of if result.site_map is not None else (lambda _n, _i: None)
    if result.missing:
        sys.stdout.write(f"# {len(result.missing)} mesh pairs without data in any archive:\n")
        for test, src, dst in result.missing:
            sys.stdout.write(f"{src} ({site_of(src, None) or 'no site'}) -> {dst} ({site_of(dst, None) or 'no site'})"
                             f"  {test}  no data\n")


def _metrics(config: SpiderConfig) -> SpiderMetrics | None:
    """The crawl counters, when an endpoint or a textfile is configured (kept across reloads)."""
    if config.metrics_address is None and config.metrics_textfile is None:
        return None
    try:
        from perfsonar.metrics import SpiderMetrics

        metrics = SpiderMetrics()
        if config.metrics_address is not None:
            metrics.serve(*config.metrics_address)
            log.info("metrics on http://%s:%d/metrics", *config.metrics_address)
        return metrics
    except (ImportError, OSError) as err:
        log.error("metrics are off: %s (spider.metrics_address needs prometheus-client: %s)", err,
                  extra_hint("metrics"))
        return None


def _crawl_and_publish(spider: Spider, metrics: SpiderMetrics | None = None) -> bool:
    """One crawl + publish; False when publishing failed. Crawl problems are only logged."""
    config = spider.config
    result = spider.crawl()
    if metrics is not None:
        metrics.observe(result.stats, time.time())
        if config.metrics_textfile is not None:
            try:
                metrics.write_textfile(config.metrics_textfile)
            except OSError as err:
                log.error("cannot write the metrics file %s: %s", config.metrics_textfile, err)
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
    from_command_line = bool(args.psconfig or args.esmond or args.opensearch)

    def load() -> SpiderConfig:
        # The same command line at start and at every SIGHUP reload.
        return load_spider_config(path, overrides=command_line_overrides(args),
                                  missing_ok=from_command_line and args.config is None)

    try:
        config = load()
    except ConfigError as err:
        print(f"lark-spider: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check_config:
        print(f"{config.source}: OK ({len(config.publishers)} publishers, {len(config.meshes)} meshes, "
              f"{len(config.archives)} archive endpoints, {len(config.site_rules)} site rules, "
              f"{len(config.registries)} registries)")
        return EXIT_OK
    dry = args.dry_run or args.explain_sites or args.explain_links
    log_target = args.log if args.log is not None else (config.log_file if not dry else "-")
    try:
        setup_logging(log_target, args.verbose)
    except OSError as err:
        print(f"lark-spider: cannot open log {log_target}: {err.strerror}", file=sys.stderr)
        return EXIT_CONFIG

    spider = Spider(config)
    try:
        if dry:
            result = spider.crawl(persist=False)
            if args.explain_sites:
                explain_sites(result)
            if args.explain_links:
                explain_links(result)
            if args.explain_sites or args.explain_links:
                return EXIT_OK
            verdict = no_links_reason(result, _print_ads(spider, result, args.json))
            if verdict:
                print(f"lark-spider: {verdict[1]}", file=sys.stderr)
                return verdict[0]
            return EXIT_OK
        if args.once:
            return _once(spider)
        return _daemon(spider, path, load)
    finally:
        spider.close()


def _once(spider: Spider) -> int:
    result = spider.crawl()
    try:
        sent = publish_batches(spider.ad_batches(result), spider.config.collector.address,
                               spider.config.collector.token_dir)
    except PublishError as err:
        log.error("%s", err)
        return EXIT_COLLECTOR
    log.info("advertised %d ads to %s", sent, spider.config.collector.address or "the local collector")
    verdict = no_links_reason(result, sum(1 for link in spider.published_links(result) if _fresh(link)))
    if verdict:
        log.error("%s", verdict[1])
        print(f"lark-spider: {verdict[1]}", file=sys.stderr)
        return verdict[0]
    return EXIT_OK


def _daemon(spider: Spider, path: Path, load: Callable[[], SpiderConfig]) -> int:
    """Crawl every ``interval``; SIGHUP re-reads the configuration with ``load`` (the same command-line
    sources and rules the daemon was started with)."""
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
    metrics = _metrics(spider.config)
    while True:
        started = time.monotonic()
        try:
            _crawl_and_publish(spider, metrics)
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
                    new = load()
                except ConfigError as err:
                    log.error("not reloading: %s", err)
                else:
                    spider.close()
                    spider = Spider(new)
                    log.info("configuration reloaded from %s: %d publishers, %d meshes, %d archive endpoints, "
                             "%d site rules", new.source, len(new.publishers), len(new.meshes), len(new.archives),
                             len(new.site_rules))
                continue
            if stop.is_set():
                log.info("lark-spider exiting")
                return 0
            break
