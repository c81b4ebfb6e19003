"""``lark profiles``: check, list and advertise a node's network profiles; the work is in lark.profiles.

``add_parser(subparsers)`` adds the ``profiles`` sub-command to the ``lark`` admin CLI (which
dispatches with ``args.func(args)``, no root needed); ``python -m lark.cli.profiles`` runs it alone.

    lark profiles check [DIR] [--json]   validate; one line per error; exit 1 when there is any
    lark profiles list [DIR] [--json]    what this node offers (CPU hints resolved from sysfs)
    lark profiles advertise [DIR]        'LarkProfiles = "a,b"' for a STARTD_CRON job

DIR defaults to LARK_PROFILE_DIR from the node's config (/etc/condor/profiles.d when unset); that
default may be absent (a node without profiles), a DIR given on the command line may not.
Exit status: 0 fine, 1 errors found, 2 the node's configuration cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from lark.attach import mode
from lark.cli.options import load
from lark.config import condor_param
from lark.errors import LarkError
from lark.profiles import (
    ADVERTISED_ATTR,
    PROFILE_DIR_KNOB,
    Catalog,
    Profile,
    ProfileError,
    format_pool,
    load_profiles,
    node_advertisement,
    profile_dir,
    resolve_cpus,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="profiles_command", required=True, metavar="{check,list,advertise}")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("directory", nargs="?", type=Path, metavar="DIR",
                       help=f"profile directory (default: {PROFILE_DIR_KNOB})")
        q.add_argument("--sysfs", type=Path, default=Path("/sys"), help=argparse.SUPPRESS)  # tests

    q = verbs.add_parser("check", help="validate every profile file; print each error on one line")
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q = verbs.add_parser("list", help="the profiles this node offers")
    common(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    common(verbs.add_parser("advertise", help=f"print the {ADVERTISED_ATTR} slot attribute (STARTD_CRON output)"))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:  # argparse's _SubParsersAction is private
    p = subparsers.add_parser("profiles", help="check, list and advertise network profiles (docs/profiles.md)",
                              description="Network profiles: admin-written YAML that jobs select with "
                                          "LarkNetworkProfile.")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        config = load(args, external=condor_param)  # honours the main CLI's --config and -D
        directory = args.directory or profile_dir(config, condor_param)
        # an explicit DIR must exist; the node's default may be absent (a node without profiles)
        catalog = load_profiles(directory, config, missing_ok=args.directory is None)
    except LarkError as err:
        print(f"lark: error: {err}", file=sys.stderr)
        return 2
    if args.profiles_command == "check":
        return check(catalog, out, args.json)
    if args.profiles_command == "list":
        return show(catalog, args.sysfs, args.json, out)
    print(f'{ADVERTISED_ATTR} = "{node_advertisement(catalog)}"', file=out)
    for err in catalog.errors:  # the startd logs a cron job's stderr
        print(f"lark profiles: {err}", file=sys.stderr)
    return 0


def check(catalog: Catalog, out: TextIO, as_json: bool = False) -> int:
    where = catalog.directory or "-"
    absent = catalog.directory is not None and not catalog.directory.exists()
    if as_json:
        print(json.dumps({"directory": str(catalog.directory) if catalog.directory else None,
                          "directory_exists": not absent, "profiles": list(catalog.names),
                          "errors": [error_fields(e) for e in catalog.errors]}, indent=1), file=out)
        return 1 if catalog.errors else 0
    for err in catalog.errors:
        print(err, file=out)
    names = ", ".join(catalog.names) or "none"
    if catalog.errors:
        print(f"{len(catalog.errors)} error(s) in {where}; offered: {names}", file=out)
        return 1
    if absent:  # only the node's default directory may be absent: a node without profiles
        print(f"ok: no profiles ({where} does not exist; set {PROFILE_DIR_KNOB} if they are elsewhere)", file=out)
        return 0
    print(f"ok: {len(catalog.profiles)} profile(s) in {where}: {names}", file=out)
    return 0


def error_fields(err: ProfileError) -> dict[str, object]:
    """One error of ``check --json``: where it is and what is wrong, each in its own field."""
    return {"source": err.source, "line": err.line, "profile": err.profile, "key": err.key, "message": err.detail,
            "text": str(err)}


def show(catalog: Catalog, sysfs: Path, as_json: bool, out: TextIO) -> int:
    rows = []
    for profile in catalog.profiles:
        row = profile.as_dict()
        placement = resolve_cpus(profile, sysfs)
        row["cpus_resolved"] = list(placement.cpus) if placement.cpus is not None else None
        row["cpus_note"] = placement.note
        rows.append(row)
    if as_json:
        print(json.dumps({"directory": str(catalog.directory) if catalog.directory else None, "profiles": rows,
                          "errors": [str(e) for e in catalog.errors]}, indent=1), file=out)
        return 1 if catalog.errors else 0
    if not rows:
        print(f"no profiles offered (directory: {catalog.directory or '-'})", file=out)
    for profile, row in zip(catalog.profiles, rows, strict=True):
        print(describe(profile, str(row["cpus_note"])), file=out)
    if catalog.errors:
        print(f"{len(catalog.errors)} error(s), not offered: {', '.join(sorted(catalog.broken))} "
              "(see 'lark profiles check')", file=out)
        return 1
    return 0


def describe(p: Profile, cpus_note: str) -> str:
    """A few indented lines per profile, only what is set."""
    on = f" on {p.parent}" if p.parent else ""
    lines = [f"{p.name}: {p.attach}{on}    ({p.where})"]
    if p.description:
        lines.append(f"  {p.description}")
    for family, pool, gw in ((4, p.ipv4_pool, p.ipv4_gateway), (6, p.ipv6_pool, p.ipv6_gateway)):
        if pool is not None:
            lines.append(f"  ipv{family}: {format_pool(pool)}" + (f", gateway {gw}" if gw else ""))
    if p.inbound_ports:
        env = ", ".join(f"{v.name}={v.template}" for v in p.port_range_env) or "no mover variables"
        lines.append(f"  inbound ports: {p.inbound_ports} per job ({env})")
    if mode(p.attach).shaping:
        def mbit(v: int) -> str:
            return f"{v} Mbit/s" if v else "unlimited"
        lines.append(f"  bandwidth: in {mbit(p.bandwidth_in_mbit)}, out {mbit(p.bandwidth_out_mbit)}")
    if p.allow:
        lines.append(f"  allow: {', '.join(str(n) for n in p.allow)}")
    if p.deny:
        lines.append(f"  deny: {', '.join(str(n) for n in p.deny)}")
    lines.append(f"  cpus: {p.cpus} -> {cpus_note}")
    if p.environment:
        lines.append(f"  environment: {', '.join(f'{k}={v}' for k, v in p.environment)}")
    who = "; ".join(part for part in (f"users {', '.join(p.users)}" if p.users else "",
                                      f"groups {', '.join(p.groups)}" if p.groups else "") if part)
    lines.append(f"  who: {who or 'everyone'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lark profiles", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", type=Path, metavar="PATH")
    parser.add_argument("-D", dest="overrides", action="append", default=[], metavar="KNOB=VALUE")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
