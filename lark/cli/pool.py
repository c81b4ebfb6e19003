"""``lark pool``: a personal multi-site HTCondor pool with Lark, on this machine (root; see docs/pool.md).

``up`` boots a central manager, a submit node and one execute node per site, each in its own network
namespace, on a WAN whose site links have different capacities, and installs Lark as the admin guide says;
``exec`` runs a command in a node; ``list`` and ``status`` show pools; ``down`` removes one completely;
``demo`` runs the story of docs/pool.md in a pool of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from lark.errors import LarkError


class PoolCommandError(LarkError):
    """A pool could not be made, used or removed (exit status 2, the message says why)."""


def add_parser(sub: Any) -> argparse.ArgumentParser:  # argparse's _SubParsersAction is private
    from lark.pool.sites import DEFAULT_SITES, DEFAULT_SLOTS

    p = sub.add_parser("pool", help="a personal multi-site HTCondor pool with Lark (root)",
                       description=__doc__.split("\n\n")[0])
    p.set_defaults(func=run)
    verbs = p.add_subparsers(dest="pool_command", required=True)
    up = verbs.add_parser("up", help="start a pool and install Lark into it")
    up.add_argument("--name", default="lark", help="pool name (1-10 lower-case letters and digits; default lark)")
    up.add_argument("--sites", type=int, default=DEFAULT_SITES, help=f"execute sites (default {DEFAULT_SITES})")
    up.add_argument("--slots", type=int, default=DEFAULT_SLOTS,
                    help=f"slots per execute node (default {DEFAULT_SLOTS})")
    up.add_argument("--site-mbit", metavar="LIST", help="site link capacities, Mbit/s, comma-separated "
                    "(default 1000,100,10, repeated)")
    up.add_argument("--no-lark", action="store_true", help="HTCondor only: skip the admin guide's install")
    up.set_defaults(pool_func=cmd_up)
    ex = verbs.add_parser("exec", help="run a command in a node (default: the submit node, as root)")
    ex.add_argument("name")
    ex.add_argument("--user", default="root", help="run as this user of the pool (e.g. larkuser)")
    ex.add_argument("--node", default="submit", help="cm, submit or siteN (default submit)")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    ex.set_defaults(pool_func=cmd_exec)
    ls = verbs.add_parser("list", help="the pools on this machine")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(pool_func=cmd_list)
    st = verbs.add_parser("status", help="a pool's daemons, slots, Lark brokers and link ads")
    st.add_argument("name")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(pool_func=cmd_status)
    dn = verbs.add_parser("down", help="stop a pool and remove everything it made")
    dn.add_argument("name")
    dn.set_defaults(pool_func=cmd_down)
    de = verbs.add_parser("demo", help="up a pool, show Lark's main job in it step by step, down")
    de.add_argument("--name", default="demo", help="pool name (default demo)")
    de.set_defaults(pool_func=cmd_demo)
    return p


def run(args: argparse.Namespace) -> int:
    """The handler of ``lark pool``: its verb's."""
    return int(args.pool_func(args))


def _root() -> None:
    if os.geteuid() != 0:
        raise PoolCommandError("lark pool needs root (mounts, namespaces, an HTCondor master per node)")


def _progress(message: str) -> None:
    print(f"lark pool: {message}", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    _root()
    from lark.pool.personal import start
    from lark.pool.util import PoolError

    try:
        capacities = tuple(int(x) for x in args.site_mbit.split(",")) if args.site_mbit else None
    except ValueError:
        raise PoolCommandError(f"--site-mbit {args.site_mbit!r}: give whole Mbit/s, comma-separated") from None
    t0 = time.monotonic()
    try:
        pool = start(args.name, args.sites, args.slots, lark=not args.no_lark, progress=_progress,
                     capacities_mbit=capacities)
    except PoolError as exc:
        raise PoolCommandError(str(exc)) from None
    pool.detach()
    _progress(f"pool {pool.name} up in {time.monotonic() - t0:.0f} s")
    for node in pool.plan.nodes:
        site = f" {node.site.name} ({node.site.mbit} Mbit/s, data server {node.site.data_address})" if node.site else ""
        print(f"  {node.name:8} {node.address:12} netns {pool.plan.netns(node.name)}{site}")
    print(f"  try: lark pool exec {pool.name} --user larkuser -- condor_status\n"
          f"       lark pool status {pool.name}\n       lark pool down {pool.name}")
    return 0


def _load(name: str) -> Any:
    from lark.pool.personal import PersonalPool
    from lark.pool.util import PoolError

    try:
        return PersonalPool.load(name)
    except PoolError as exc:
        raise PoolCommandError(str(exc)) from None


def cmd_exec(args: argparse.Namespace) -> int:
    _root()
    from lark.pool.util import HOST_PATH, PoolError

    argv = list(args.argv)
    while argv[:1] in (["--user"], ["--node"]) and len(argv) > 1:  # options after NAME land in the remainder
        setattr(args, argv[0][2:], argv[1])
        del argv[:2]
    argv = argv[1:] if argv[:1] == ["--"] else argv
    if not argv:
        raise PoolCommandError("lark pool exec NAME [--user U] [--node N] -- CMD ...: no command given")
    pool = _load(args.name)
    try:
        node = pool.node(args.node)
        if node.master_pid is None:
            raise PoolCommandError(f"pool {args.name}: node {args.node} is not running")
        full = node.command(argv, user=args.user, pivoted=True)  # as on the node: its root, its host name
    except PoolError as exc:
        raise PoolCommandError(str(exc)) from None
    return subprocess.run(full, env={"PATH": HOST_PATH}, check=False).returncode


def cmd_list(args: argparse.Namespace) -> int:
    from lark.pool.personal import PersonalPool, pool_names
    from lark.pool.util import PoolError

    rows = []
    for name in pool_names():
        try:
            pool = PersonalPool.load(name)
        except PoolError:
            continue
        running = sum(1 for node in pool.nodes.values() if node.master_pid is not None)
        rows.append({"name": name, "sites": [s.mbit for s in pool.plan.sites], "slots": pool.plan.slots,
                     "nodes_running": running, "nodes": len(pool.nodes), "keeper": pool.keeper(),
                     "in_use": pool.in_use(), "lark": pool.lark})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no pools (lark pool up)")
    for row in rows:
        if not row["in_use"]:
            state = "broken: its owner is gone (lark pool down NAME removes it)"
        else:
            state = "up" if row["nodes_running"] == row["nodes"] else "starting or stopping"
        mbit = "/".join(str(m) for m in row["sites"])
        print(f"{row['name']:10} {state:8} {len(row['sites'])} sites ({mbit} Mbit/s), {row['slots']} slots each, "
              f"{row['nodes_running']}/{row['nodes']} nodes running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    _root()
    status = _load(args.name).status()
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    print(f"pool {status['name']}: keeper {status['keeper'] or 'gone'}, Lark {'installed' if status['lark'] else 'no'}")
    for name, node in status["nodes"].items():
        print(f"  node {name:8} {node['address']:12} {node['role']:8} master {node['master'] or 'not running'}")
    for site in status["sites"]:
        print(f"  site {site['site']:7} {site['mbit']:>5} Mbit/s  LAN {site['lan']}  data server {site['data_server']}")
    print("daemons:", ", ".join(f"{d.get('type')} {d.get('name', '')}" for d in status["daemons"]) or "none")
    for slot in status["slots"]:
        print(f"  slot {slot.get('name')} site {slot.get('site')} {slot.get('state')}/{slot.get('activity')} "
              f"HasLark {slot.get('has_lark')}")
    for name, ping in status["brokers"].items():
        print(f"  broker on {name}: {'answers' if ping.get('ok') else 'no answer'} {ping.get('version', '')}")
    print(f"link ads: {len(status['links'])}")
    for link in status["links"]:
        print(f"  {link.get('source')} -> {link.get('destination')}: {link.get('mbit')} Mbit/s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    _root()
    from lark.pool.demo import demo
    from lark.pool.util import PoolError

    try:
        return demo(args.name)
    except (PoolError, TimeoutError) as exc:
        raise PoolCommandError(str(exc)) from None


def cmd_down(args: argparse.Namespace) -> int:
    _root()
    from lark.pool.util import PoolError

    pool = _load(args.name)
    try:
        problems = pool.down()
    except PoolError as exc:
        raise PoolCommandError(str(exc)) from None
    if problems:
        print(f"lark pool: pool {args.name} not removed completely:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    _progress(f"pool {args.name} removed: no mounts, namespaces, links or processes left")
    return 0
