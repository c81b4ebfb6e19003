"""The ``lark`` sub-commands that work on this node's jobs and knobs, one handler each.

``add_parsers`` adds them to the ``lark`` parser with ``func`` set; each handler reads the knobs
(``lark.cli.options.load``), does its work through the package and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from lark.attach import mode_names, modes
from lark.cli.options import knob_values, load
from lark.config import LarkConfig, parse_networks
from lark.errors import LarkError
from lark.knobs import EffectiveKnob

if TYPE_CHECKING:
    from lark.engine import Engine
    from lark.firewall.base import JobCounters
    from lark.policy import JobRequest
    from lark.state import JobRecord

Handler = Callable[[argparse.Namespace], int]


def add_parsers(sub: Any) -> list[argparse.ArgumentParser]:  # argparse's _SubParsersAction is private
    def job_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--mode", choices=mode_names(), help="attachment mode (default LARK_DEFAULT_NETWORK_TYPE)")
        p.add_argument("--limit-mbit", type=int, help="bandwidth limit in both directions, Mbit/s")
        p.add_argument("--limit-in-mbit", type=int, help="limit of what the job receives")
        p.add_argument("--limit-out-mbit", type=int, help="limit of what the job sends")
        p.add_argument("--allow", help="only these destinations (CIDR list)")
        p.add_argument("--deny", help="never these destinations (CIDR list)")
        p.add_argument("--inbound-ports", type=int, default=0, help="forward this many host ports to the job")

    def json_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON")

    parsers = []

    def add(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:  # noqa: A002 - argparse's name
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=handler)
        parsers.append(p)
        return p

    p = add("run", cmd_run, "run a command in its own Lark network and print its accounting")
    job_options(p)
    p.add_argument("--user", help="run the command as this user")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p = add("demo", cmd_demo, "fetch a page from a throwaway host-side server through a Lark network")
    p.add_argument("--mode", choices=[m.name for m in modes() if m.job_interface], default="nat")
    p = add("up", cmd_up, "create a network for a job id (kept until 'lark down')")
    job_options(p)
    p.add_argument("job_id")
    p = add("down", cmd_down, "remove a job's network (idempotent)")
    p.add_argument("job", help="job id or token")
    json_option(add("list", cmd_list, "every job: mode, addresses, counters"))
    p = add("status", cmd_status, "one job in detail")
    p.add_argument("job")
    json_option(p)
    json_option(add("sweep", cmd_sweep, "remove dead jobs and orphaned objects"))
    json_option(add("check", cmd_check, "report drift between records and the kernel (exit 1 when there is any)"))
    json_option(add("config", cmd_config, "print the effective LARK_* knobs and where each comes from"))
    add("node-ad", cmd_node_ad, "print the node's network totals as machine-ad attributes (a startd cron)")
    return parsers


# ------------------------------------------------------------------ the engine's commands (root)


def _engine(args: argparse.Namespace, config: LarkConfig) -> Engine:
    if os.geteuid() != 0:
        raise LarkError("must run as root: Lark creates namespaces, interfaces and firewall rules")
    from lark.engine import Engine

    return Engine(config, host_netns=getattr(args, "host_netns", None))


def cmd_run(args: argparse.Namespace) -> int:
    from lark.cli.run import exit_code, format_summary, run_in_job

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LarkError("lark run needs a command: lark run [options] -- CMD ...")
    config = load(args)
    with _engine(args, config) as engine:
        request = request_from_args(args, config, f"run-{os.getpid()}")
        status, record, counters = run_in_job(engine, request, argv, user=args.user)
    if args.json:
        out = record_summary(record)
        out["counters"] = counters_dict(counters)
        print(json.dumps(out, indent=1), file=sys.stderr)
    else:
        print(format_summary(record, counters), file=sys.stderr)
    return exit_code(status)


def cmd_demo(args: argparse.Namespace) -> int:
    from lark.cli.demo import demo
    from lark.firewall.isolation import HostAllow

    config = load(args)
    # The page is on the host itself: nothing is routed, so the host's forwarding stays as it is,
    # and the job must reach the host end of its own link, which isolation would refuse. On a
    # node whose broker already set the host's rules up, the demo follows the node's policy.
    holes = tuple(HostAllow(pool) for pool in (config.nat_ipv4_pool, config.nat_ipv6_pool) if pool is not None)
    config = replace(config, enable_forwarding=False, job_host_allow=(*config.job_host_allow, *holes))
    with _engine(args, config) as engine:
        return demo(engine, config, args.mode)


def cmd_up(args: argparse.Namespace) -> int:
    config = load(args)
    with _engine(args, config) as engine:
        record = engine.up(request_from_args(args, config, args.job_id))
    print(json.dumps(record_summary(record), indent=1))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    with _engine(args, load(args)) as engine:
        if not engine.down(args.job):
            print(f"lark: no job {args.job!r} (nothing to do)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from lark.shares import share_rows

    config = load(args)
    with _engine(args, config) as engine:
        counters = engine.all_counters()
        records = engine.records()
        shares = share_rows(config.shares, records)
        rows = []
        for record in records:
            row = record_summary(record)
            c = counters.get(record.token)
            row["counters"] = counters_dict(c) if c else None
            row["share"] = shares.get(record.token)
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'JOB':<16}{'TOKEN':<8}{'MODE':<8}{'STATUS':<12}{'IPV4':<18}{'IPV6':<28}{'BYTES IN':>12}{'BYTES OUT':>12}"
          f"  {'LEASE':<10}  SHARE (user class rate/ceil Mbit)")
    for row in rows:
        c: dict[str, Any] = row["counters"] or {}  # type: ignore[assignment]
        share: dict[str, Any] | None = row["share"]  # type: ignore[assignment]
        share_text = f"{share['user']} {share['class']} {share['rate_mbit']:g}/{share['ceil_mbit']:g}" if share else "-"
        print(f"{row['job_id']:<16}{row['token']:<8}{row['mode']:<8}{row['status']:<12}{row['ipv4'] or '-':<18}"
              f"{row['ipv6'] or '-':<28}{c.get('bytes_in', 0):>12}{c.get('bytes_out', 0):>12}  {lease_text(row):<10}"
              f"  {share_text}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from lark.cli.run import format_summary

    with _engine(args, load(args)) as engine:
        record = engine.find(args.job)
        counters = engine.counters(record.token)
    if args.json:
        out = record_summary(record)
        out["counters"] = counters_dict(counters)
        print(json.dumps(out, indent=1))
    else:
        print(format_summary(record, counters))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    with _engine(args, load(args)) as engine:
        report = engine.sweep()
    if args.json:
        print(json.dumps(asdict(report), indent=1))
        return 0
    for label, items in (("jobs", report.removed_jobs), ("interfaces", report.removed_links),
                         ("namespaces", report.removed_netns), ("firewall", report.removed_firewall),
                         ("allocations", report.released), ("DHCP clients", report.stopped_clients)):
        if items:
            print(f"removed {label}: {', '.join(items)}")
    if report.empty():
        print("nothing to sweep")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with _engine(args, load(args)) as engine:
        problems = engine.check()
        jobs = len(engine.records())
    if args.json:
        print(json.dumps({"jobs": jobs, "problems": problems}, indent=1))
    else:
        for line in problems:
            print(line)
        if not problems:
            print(f"ok: {jobs} jobs match the kernel")
    return 1 if problems else 0


# ------------------------------------------------------------------ knobs and the node's ad (no root)


def cmd_config(args: argparse.Namespace) -> int:
    """Every knob of every component: its value as the daemons see it ($(...) expanded) and where
    it came from (file:line, HTCondor, override or default). Exit 2 when the configuration is bad
    (the error names file, line and knob) or a value cannot be expanded."""
    load(args)  # the same validation the broker does: a bad knob is an error here too
    rows = config_rows(knob_values(args))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            shown = row["value"] if row["error"] is None else f"<error: {row['error']}>"
            print(f"{row['knob']} = {shown}    # {row['where']}")
    return 2 if any(row["error"] is not None for row in rows) else 0


def config_rows(knobs: Iterable[EffectiveKnob]) -> list[dict[str, object]]:
    """``lark config``'s rows, sorted by knob name."""
    return [{"knob": k.name, "value": k.value, "where": k.where, "owner": k.knob.owner, "error": k.error}
            for k in sorted(knobs, key=lambda k: k.name)]


def cmd_node_ad(args: argparse.Namespace) -> int:
    """The startd cron runs it unprivileged."""
    from lark.classads import expressions
    from lark.node_summary import NODE_SUMMARY_FILE, share_attributes, startd_attributes

    config = load(args)
    attrs = startd_attributes(config.state_dir / NODE_SUMMARY_FILE) | share_attributes(config.shares)
    for name, text in expressions(attrs).items():
        print(f"{name} = {text}")
    return 0


# ------------------------------------------------------------------ shared pieces


def request_from_args(args: argparse.Namespace, config: LarkConfig, job_id: str) -> JobRequest:
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
        config = replace(config, network_types=(*config.network_types, args.mode))
    return request_from_attributes(attrs, config, job_id)


def record_summary(record: JobRecord) -> dict[str, object]:
    keys = ("job_id", "token", "mode", "status", "netns", "host_ifname", "ipv4", "ipv6", "host_ipv4", "host_ipv6",
            "public_ipv4", "ports", "bandwidth_in_mbit", "bandwidth_out_mbit", "addressing", "lease_expires",
            "lease_server", "lease_renewals")
    return {k: getattr(record, k) for k in keys}


def lease_text(row: dict[str, object]) -> str:
    """``lark list``'s LEASE column: until when a DHCP job's lease runs unless renewed (local time)."""
    expires = row.get("lease_expires")
    if not isinstance(expires, int | float):
        return "-" if row.get("addressing") in (None, "static") else str(row["addressing"])
    return "until " + time.strftime("%H:%M:%S", time.localtime(expires))


def counters_dict(c: JobCounters) -> dict[str, object]:
    return {"bytes_in": c.bytes_in, "bytes_out": c.bytes_out, "packets_in": c.packets_in,
            "packets_out": c.packets_out,
            "classes": {n: vars(v) for n, v in c.classes.items()}}
