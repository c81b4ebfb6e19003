"""``lark-transferd``: the transfer service's command line (extra ``[transfer]``: FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from lark import __version__
from lark.errors import LarkError
from lark.transfer.schedd import DEFAULT_HISTORY_DAYS, WORKER_LIFETIME, Schedd
from lark.transfer.worker import sweep_token_dirs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lark-transferd", description="Lark's transfer service: a REST API "
                                "(/v1, OpenAPI at /v1/openapi.json) and a web page; each transfer is an "
                                "HTCondor job submitted with the requesting user's own token.")
    p.add_argument("--version", action="version", version=f"lark-transferd {__version__}")
    p.add_argument("--endpoints", type=Path, required=True, help="the endpoints YAML file")
    p.add_argument("--listen", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8642, help="port (default 8642)")
    p.add_argument("--log-dir", type=Path, default=Path("/var/lib/lark/transfers"),
                   help="where each user's job logs go: DIR/<user>/ (default /var/lib/lark/transfers)")
    p.add_argument("--profile-dir", type=Path, help="profiles shown by GET /v1/profiles (default: none)")
    p.add_argument("--schedd", help="schedd name (default: the local schedd)")
    p.add_argument("--history-days", type=float, default=DEFAULT_HISTORY_DAYS,
                   help="how many days of the schedd's history hold the transfers listed and the submission ids "
                        f"remembered (default {DEFAULT_HISTORY_DAYS:g}; 0: the whole history)")
    p.add_argument("--token-recheck", type=float, default=WORKER_LIFETIME, metavar="SECONDS",
                   help="how long a token's worker acts before the schedd is asked again whether the token holds "
                        f"(a revoked token stops within this; default {WORKER_LIFETIME:g}, 1-3600)")
    p.add_argument("--tls-cert", type=Path, help="serve https with this certificate (and --tls-key)")
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--check", action="store_true", help="check the endpoints file and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lark.transfer.endpoints import load_endpoints

    try:
        endpoints = load_endpoints(args.endpoints)
    except LarkError as err:
        print(f"lark-transferd: {err}", file=sys.stderr)
        return 2
    if not 0 <= args.history_days <= 36500:
        print(f"lark-transferd: --history-days {args.history_days:g} is not 0..36500 days", file=sys.stderr)
        return 2
    if not 1 <= args.token_recheck <= 3600:
        print(f"lark-transferd: --token-recheck {args.token_recheck:g} is not 1..3600 seconds", file=sys.stderr)
        return 2
    if args.check:
        print(f"ok: {len(endpoints)} endpoint(s): {', '.join(endpoints) or 'none'}")
        return 0
    try:
        import uvicorn

        from lark.transfer.api import create_app
    except ImportError as err:
        print(f"lark-transferd: {err.name} is missing; install the extra: pip install 'htcondor-lark[transfer]'",
              file=sys.stderr)
        return 2
    from lark.transfer.service import TransferService

    profiles: list[dict[str, object]] = []
    if args.profile_dir is not None:
        from lark.profiles import load_profiles

        profiles = [p.as_dict() for p in load_profiles(args.profile_dir, missing_ok=True).profiles]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for path in sweep_token_dirs():  # of workers of an earlier run that was killed
        logging.getLogger("lark.transfer").info("removed %s, left by a worker that is gone", path)
    schedd = Schedd(args.schedd, history_days=args.history_days or None, lifetime=args.token_recheck)
    service = TransferService(endpoints=endpoints, schedd=schedd, log_dir=args.log_dir, profiles=profiles)
    try:
        uvicorn.run(create_app(service), host=args.listen, port=args.port, log_level="info",
                    ssl_certfile=str(args.tls_cert) if args.tls_cert else None,
                    ssl_keyfile=str(args.tls_key) if args.tls_key else None)
    finally:
        schedd.close()  # each user's worker process ends with the service
    return 0


if __name__ == "__main__":
    sys.exit(main())
