"""``lark``: the admin command. Parses arguments and delegates; all logic lives in the package."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lark.cli.options import load
from lark.config import NETWORK_TYPES, LarkConfig, parse_networks
from lark.errors import LarkError

EPILOG = "Knobs come from /etc/condor/config.d (or $LARK_CONFIG, or --config); -D KNOB=VALUE overrides one."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lark", description="Per-job networks for HTCondor.", epilog=EPILOG)
    parser.add_argument("--config", action="append", type=Path, metavar="PATH",
                        help="config file or config.d directory (repeatable)")
    parser.add_argument("-D", dest="overrides", action="append", default=[], metavar="KNOB=VALUE",
                        help="override one LARK_* knob")
    parser.add_argument("--host-netns", metavar="PATH", help=argparse.SUPPRESS)  # tests and benchmarks
    sub = parser.add_subparsers(dest="command", required=True)

    def job_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--mode", choices=NETWORK_TYPES, help="attachment mode (default LARK_DEFAULT_NETWORK_TYPE)")
        p.add_argument("--limit-mbit", type=int, help="bandwidth limit in both directions, Mbit/s")
        p.add_argument("--limit-in-mbit", type=int, help="limit of what the job receives")
        p.add_argument("--limit-out-mbit", type=int, help="limit of what the job sends")
        p.add_argument("--allow", help="only these destinations (CIDR list)")
        p.add_argument("--deny", help="never these destinations (CIDR list)")
        p.add_argument("--inbound-ports", type=int, default=0, help="forward this many host ports to the job")

    p = sub.add_parser("run", help="run a command in its own Lark network and print its accounting")
    job_options(p)
    p.add_argument("--user", help="run the command as this user")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p = sub.add_parser("demo", help="fetch a page from a throwaway host-side server through a Lark network")
    p.add_argument("--mode", choices=("nat", "bridge", "macvlan", "ipvlan"), default="nat")
    p = sub.add_parser("up", help="create a network for a job id (kept until 'lark down')")
    job_options(p)
    p.add_argument("job_id")
    p = sub.add_parser("down", help="remove a job's network (idempotent)")
    p.add_argument("job", help="job id or token")
    p = sub.add_parser("list", help="every job: mode, addresses, counters")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("status", help="one job in detail")
    p.add_argument("job")
    sub.add_parser("sweep", help="remove dead jobs and orphaned objects")
    sub.add_parser("check", help="report drift between records and the kernel")
    sub.add_parser("config", help="print the effective LARK_* knobs and where each comes from")
    sub.add_parser("node-ad", help="print the node's network totals as machine-ad attributes (a startd cron)")
    try:
        from lark.report.cli import add_parser as add_report_parser
    except ImportError:  # pragma: no cover - report is an optional part of a partial install
        pass
    else:
        add_report_parser(sub)
    from lark.cli.profiles import add_parser as add_profiles_parser

    add_profiles_parser(sub)
    return parser


def request_from_args(args: argparse.Namespace, config: LarkConfig, job_id: str):  # noqa: ANN201
    from lark.policy import request_from_attributes

    attrs: dict[str, object] = {}
    if args.mode:
        attrs["LarkNetworkType"] = args.mode
    if args.limit_mbit is not None:
        attrs["LarkBandwidthMbit"] = args.limit_mbit
    if args.limit_in_mbit is not None:
        attrs["LarkBandwidthInMbit"] = args.limit_in_mbit
    if args.limit_out_mbit is not None:
        attrs["LarkBandwidthOutMbit"] = args.limit_out_mbit
    if args.allow:
        parse_networks(args.allow)
        attrs["LarkAllow"] = args.allow
    if args.deny:
        attrs["LarkDeny"] = args.deny
    if args.inbound_ports:
        attrs["LarkInboundPorts"] = args.inbound_ports
    # the admin may run any mode the node can provide, offered to jobs or not
    if args.mode and args.mode not in config.network_types:
        from dataclasses import replace

        config = replace(config, network_types=(*config.network_types, args.mode))
    return request_from_attributes(attrs, config, job_id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("report", "profiles"):
            return int(args.func(args))
        if args.command == "config":
            return show_config(load(args))
        if args.command == "node-ad":  # the startd cron runs it unprivileged
            return print_node_ad(load(args))
        if os.geteuid() != 0:
            raise LarkError("must run as root: Lark creates namespaces, interfaces and firewall rules")
        return dispatch(args, load(args))
    except LarkError as err:
        print(f"lark: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def print_node_ad(config: LarkConfig) -> int:
    from lark.classads import expressions
    from lark.node_summary import NODE_SUMMARY_FILE, startd_attributes

    attrs = startd_attributes(config.state_dir / NODE_SUMMARY_FILE)
    for name, text in expressions(attrs).items():
        print(f"{name} = {text}")
    return 0


def dispatch(args: argparse.Namespace, config: LarkConfig) -> int:
    from dataclasses import replace

    from lark.engine import Engine

    if args.command == "demo":
        from lark.firewall.isolation import HostAllow

        # The page is on the host itself: nothing is routed, so the host's forwarding stays as it is,
        # and the job must reach the host end of its own link, which isolation would refuse. On a
        # node whose broker already set the host's rules up, the demo follows the node's policy.
        holes = tuple(HostAllow(pool) for pool in (config.nat_ipv4_pool, config.nat_ipv6_pool) if pool is not None)
        config = replace(config, enable_forwarding=False, job_host_allow=(*config.job_host_allow, *holes))

    with Engine(config, host_netns=args.host_netns) as engine:
        if args.command == "run":
            return cmd_run(args, config, engine)
        if args.command == "demo":
            from lark.cli.demo import demo

            return demo(engine, config, args.mode)
        if args.command == "up":
            record = engine.up(request_from_args(args, config, args.job_id))
            print(json.dumps(record_summary(record), indent=1))
            return 0
        if args.command == "down":
            if not engine.down(args.job):
                print(f"lark: no job {args.job!r} (nothing to do)")
            return 0
        if args.command == "list":
            return cmd_list(engine, args.json)
        if args.command == "status":
            record = engine.find(args.job)
            from lark.cli.run import format_summary

            print(format_summary(record, engine.counters(record.token)))
            return 0
        if args.command == "sweep":
            report = engine.sweep()
            for label, items in (("jobs", report.removed_jobs), ("interfaces", report.removed_links),
                                 ("namespaces", report.removed_netns), ("firewall", report.removed_firewall),
                                 ("allocations", report.released)):
                if items:
                    print(f"removed {label}: {', '.join(items)}")
            if report.empty():
                print("nothing to sweep")
            return 0
        if args.command == "check":
            problems = engine.check()
            for line in problems:
                print(line)
            if not problems:
                print(f"ok: {len(engine.records())} jobs match the kernel")
            return 1 if problems else 0
    raise AssertionError(args.command)


def cmd_run(args: argparse.Namespace, config: LarkConfig, engine) -> int:  # noqa: ANN001
    from lark.cli.run import exit_code, format_summary, run_in_job

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LarkError("lark run needs a command: lark run [options] -- CMD ...")
    request = request_from_args(args, config, f"run-{os.getpid()}")
    status, record, counters = run_in_job(engine, request, argv, user=args.user)
    if args.json:
        out = record_summary(record)
        out["counters"] = counters_dict(counters)
        print(json.dumps(out, indent=1), file=sys.stderr)
    else:
        print(format_summary(record, counters), file=sys.stderr)
    return exit_code(status)


def cmd_list(engine, as_json: bool) -> int:  # noqa: ANN001
    counters = engine.all_counters()
    rows = []
    for record in engine.records():
        row = record_summary(record)
        c = counters.get(record.token)
        row["counters"] = counters_dict(c) if c else None
        rows.append(row)
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'JOB':<16}{'TOKEN':<8}{'MODE':<8}{'STATUS':<12}{'IPV4':<18}{'IPV6':<28}{'BYTES IN':>12}{'BYTES OUT':>12}")
    for row in rows:
        c = row["counters"] or {}
        print(f"{row['job_id']:<16}{row['token']:<8}{row['mode']:<8}{row['status']:<12}{row['ipv4'] or '-':<18}"
              f"{row['ipv6'] or '-':<28}{c.get('bytes_in', 0):>12}{c.get('bytes_out', 0):>12}")
    return 0


def record_summary(record) -> dict[str, object]:  # noqa: ANN001
    keys = ("job_id", "token", "mode", "status", "netns", "host_ifname", "ipv4", "ipv6", "host_ipv4", "host_ipv6",
            "public_ipv4", "ports", "bandwidth_in_mbit", "bandwidth_out_mbit")
    return {k: getattr(record, k) for k in keys}


def counters_dict(c) -> dict[str, object]:  # noqa: ANN001
    return {"bytes_in": c.bytes_in, "bytes_out": c.bytes_out, "packets_in": c.packets_in,
            "packets_out": c.packets_out,
            "classes": {n: vars(v) for n, v in c.classes.items()}}


def show_config(config: LarkConfig) -> int:
    for name, setting in sorted(config.settings.items()):
        where = f"{setting.source}:{setting.line}" if setting.line else (setting.source or "default")
        print(f"{name} = {setting.value}    # {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
