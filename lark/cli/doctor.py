"""``lark doctor``: verify that Lark is active on this node; the checks are in ``lark.doctor``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lark.cli.options import load
from lark.config import condor_param
from lark.errors import LarkError

DESCRIPTION = ("Check that Lark is active on this execute or submit node: the broker answers, the running "
               "startd has NO_JOB_NETWORKING and lark-wrap, the slots advertise HasLark, the chirp prefix, the "
               "firewall backend and kernel features of the offered modes, the schedd's transforms, and that "
               "the broker runs this release. One line per check, with a fix for each failure; exit 0 only "
               "when all hold.")


def add_parser(sub: Any) -> argparse.ArgumentParser:  # argparse's _SubParsersAction is private
    p = sub.add_parser("doctor", help="check that Lark is active on this node (exit 1 when not)",
                       description=DESCRIPTION)
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help="keep checking up to SECONDS until all hold (the startd comes back ~10 s after "
                        "condor_restart)")
    p.add_argument("--role", choices=("execute", "submit"), action="append", default=[],
                   help="check only this role (repeatable; default: every role DAEMON_LIST gives the node)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import os

    from lark.doctor import NodeFacts, checks_json, exit_status, format_checks, gather, run_checks

    if args.wait < 0:
        raise LarkError("--wait needs a number of seconds >= 0")
    config = load(args)
    role = NodeFacts(daemon_list=condor_param("DAEMON_LIST") or "", only_roles=tuple(args.role))
    if role.execute_node and os.geteuid() != 0:
        raise LarkError("must run as root on an execute node: it asks the broker and probes the kernel")
    deadline = time.monotonic() + args.wait
    while True:
        checks = run_checks(gather(config, condor_param, roles=args.role))
        if exit_status(checks) == 0 or time.monotonic() >= deadline:
            break
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    print(checks_json(checks) if args.json else format_checks(checks), file=sys.stdout)
    return exit_status(checks)
