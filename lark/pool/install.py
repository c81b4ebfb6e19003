"""Lark installed into a pool node by the admin guide's own commands (docs/admin-guide.md).

The guide marks its install blocks with ``<!-- install: NAME ... -->``; :func:`run_guide_block` runs the
fenced block after the marker as written, as root in the node, in the directory holding the wheel. The only
help the commands get is a wheelhouse (a node has no route to PyPI) that pip is pointed at through its own
environment variables, so every pool started tests the guide.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lark.pool.image import CACHE_ROOT, REPO, image_info
from lark.pool.util import PoolError

if TYPE_CHECKING:
    from lark.pool.node import Pool

ADMIN_GUIDE = REPO / "docs" / "admin-guide.md"
#: where the wheel and the wheelhouse are put inside the pool; the guide's commands run in INSTALL_DIR
INSTALL_DIR = "/root/lark-install"
WHEELHOUSE = "/root/lark-wheelhouse"


def guide_block(name: str, guide: Path = ADMIN_GUIDE) -> str:
    """The fenced block that follows ``<!-- install: NAME ... -->`` in the admin guide, as written."""
    lines = guide.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"<!-- install: {name} ") or line == f"<!-- install: {name} -->":
            if not lines[i + 1].startswith("```"):
                raise PoolError(f"{guide}:{i + 2}: a fenced block must follow the install: {name} marker")
            end = lines.index("```", i + 2)
            return "\n".join(lines[i + 2:end]) + "\n"
    raise PoolError(f"{guide} has no '<!-- install: {name} ...' marker")


def build_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the working tree (pip builds in the tree it is given)."""
    tree = dest / "tree"
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                              ".pytest_cache", ".ruff_cache"))
    _pip(["wheel", "-q", "--no-deps", "-w", str(dest), str(tree)])
    shutil.rmtree(tree)
    (wheel,) = dest.glob("htcondor_lark-*.whl")
    return wheel


def wheel_requirements(wheel: Path, extras: Sequence[str] = ()) -> list[str]:
    """The wheel's Requires-Dist lines that apply with ``extras`` (none: the plain install)."""

    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    wanted = []
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        req, _, marker = line[len("Requires-Dist: "):].partition(";")
        extra = marker.split("==")[-1].strip().strip("'\"") if "extra" in marker else None
        if extra is None or extra in extras:
            wanted.append(req.strip())
    return wanted


def fill_wheelhouse(pool: Pool, wheel: Path, extras: Sequence[str] = ()) -> Path:
    """Wheels, for the pool's Python, of what the plain install (plus ``extras``) needs and the pool's
    system Python lacks (the pool has no network: pip runs there with --no-index). Downloaded from
    PyPI on the host into a cache kept across runs; copied into the pool with the wheel."""


    python = str(image_info(pool.image)["python"])  # "3.14"
    tag = "cp" + python.replace(".", "")
    missing = []
    for req in wheel_requirements(wheel, extras):
        name = re.split(r"[<>=!~ \[]", req, maxsplit=1)[0]
        found = pool.run(["python3", "-c", "import importlib.metadata, sys; importlib.metadata.version(sys.argv[1])",
                          name], check=False)
        if found.returncode != 0:
            missing.append(req)
    cache = CACHE_ROOT / f"wheelhouse-{tag}"
    cache.mkdir(parents=True, exist_ok=True)
    if missing:
        _pip(["download", "-q", "--dest", str(cache), "--only-binary=:all:", "--python-version", python,
              "--implementation", "cp", "--abi", tag, "--abi", "abi3", "--abi", "none", "--platform",
              "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
              "--platform", "any", *missing])
    inside = pool.host_path(WHEELHOUSE)
    shutil.rmtree(inside, ignore_errors=True)
    shutil.copytree(cache, inside)
    target = pool.host_path(INSTALL_DIR)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy2(wheel, target / wheel.name)
    return inside


#: the guide: "On a submit node (schedd), install the same environment (the first two lines)" of the execute block
ENVIRONMENT_LINES = 2


def environment_block() -> str:
    """The execute block's first lines, which make the environment (for a node that is only a submit node)."""
    return "\n".join(guide_block("execute").splitlines()[:ENVIRONMENT_LINES]) + "\n"


def _pip(args: Sequence[str]) -> None:
    """This environment's pip, its output kept for the error (its warnings would clutter ``lark pool up``)."""
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        raise PoolError(f"pip {' '.join(args[:1])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def run_guide_block(pool: Pool, name: str, timeout: float = 300, *,
                    environment_first: bool = False) -> subprocess.CompletedProcess[str]:
    """The guide's block ``name`` in the pool, as root, in INSTALL_DIR, stopping at the first failing
    command; with ``environment_first``, after :func:`environment_block` (a node that is only a submit
    node). pip finds packages only in the wheelhouse (PIP_NO_INDEX, PIP_FIND_LINKS: the pool has no
    network); nothing else is added to the guide's commands."""
    script = (environment_block() if environment_first else "") + guide_block(name)
    return pool.run("set -e -x\n" + script, cwd=INSTALL_DIR, timeout=timeout, check=False,
                    env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
