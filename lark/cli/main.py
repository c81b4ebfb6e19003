"""``lark``: the admin command. Parses arguments and delegates; every sub-command is a handler.

Each sub-command's parser sets ``func``, a handler taking the parsed arguments and returning the
exit status: 0 all is well, 1 the command found problems (``check``, ``doctor``, ``profiles
check``), 2 a usage or configuration error (argparse's own, and every :class:`LarkError`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lark import __version__
from lark.cli import commands, doctor
from lark.errors import LarkError

EPILOG = ("Knobs come from HTCondor's configuration (condor_config_val), or $LARK_CONFIG, or --config; "
          "-D KNOB=VALUE overrides one. --config and -D go before or after the sub-command. "
          "Exit status: 0 ok, 1 problems found, 2 usage or configuration error.")


def add_common_options(parser: argparse.ArgumentParser, level: int) -> None:
    """--config and -D, on the top parser and again on each sub-command's (so ``lark list --config X``
    works too, and after a sub-command's own verb: ``lark profiles check --config X``). Each level
    (0: top, 1: sub-command, 2: its verb) has its own names, as argparse would otherwise replace the
    top's list with the sub-command's; :func:`merge_common_options` joins them, the later ones last."""
    top = level == 0
    after = "" if top else f"_after{level}"
    parser.add_argument("--config", dest=f"config{after}", action="append", type=Path, metavar="PATH",
                        default=None if top else argparse.SUPPRESS,
                        help="config file or config.d directory (repeatable)")
    parser.add_argument("-D", dest=f"overrides{after}", action="append", metavar="KNOB=VALUE",
                        default=[] if top else argparse.SUPPRESS, help="override one LARK_* knob")


def merge_common_options(args: argparse.Namespace) -> argparse.Namespace:
    config, overrides = list(args.config or []), list(args.overrides)
    for level in (1, 2):
        config += vars(args).pop(f"config_after{level}", [])
        overrides += vars(args).pop(f"overrides_after{level}", [])
    args.config, args.overrides = config or None, overrides
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lark", description="Per-job networks for HTCondor.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"lark {__version__}")
    add_common_options(parser, level=0)
    parser.add_argument("--host-netns", metavar="PATH", help=argparse.SUPPRESS)  # tests and benchmarks
    sub = parser.add_subparsers(dest="command", required=True)
    added = [*commands.add_parsers(sub), doctor.add_parser(sub)]
    try:
        from lark.report.cli import add_parser as add_report_parser
    except ImportError:  # pragma: no cover - report is an optional part of a partial install
        pass
    else:
        added.append(add_report_parser(sub))
    from lark.cli.profiles import add_parser as add_profiles_parser

    added.append(add_profiles_parser(sub))
    from lark.cli.pool import add_parser as add_pool_parser

    added.append(add_pool_parser(sub))
    from lark.cli.transfer import add_parser as add_transfer_parser

    added.append(add_transfer_parser(sub))
    for p in added:
        add_common_options(p, level=1)
        for q in _nested_parsers(p):  # e.g. `lark profiles check --config X`
            add_common_options(q, level=2)
    return parser


def _nested_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [q for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for q in action.choices.values()]


def main(argv: Sequence[str] | None = None) -> int:
    args = merge_common_options(build_parser().parse_args(argv))
    try:
        return int(args.func(args))
    except LarkError as err:
        print(f"lark: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `lark config | head`: the reader is gone, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
