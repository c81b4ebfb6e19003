"""Layers: no import cycle in lark/ and perfsonar/, and no lower layer importing a higher one.

The graph comes from scripts/import_graph.py (ast only); its rules are pinned first on a small
package written here, so that "no cycle" below means the checker would have seen one.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "import_graph.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module  # dataclass-free, but keep the usual module contract
    spec.loader.exec_module(module)
    return module


graph_tool = _load()


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_function_level_imports_count_and_type_checking_ones_do_not(tmp_path: Path) -> None:
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from pkg import high\n",  # a cycle, only at call time
        "pkg/high.py": "from pkg.low import f\n",
        "pkg/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import user\n",
        "pkg/user.py": "from pkg import typed\n",
    })
    graph = graph_tool.import_graph(tmp_path, ["pkg"])
    assert graph["pkg.low"] == {"pkg.high"} and graph["pkg.typed"] == set()
    assert graph_tool.cycles(graph) == [["pkg.high", "pkg.low", "pkg.high"]]


def test_a_foreign_package_init_counts_but_ones_own_does_not(tmp_path: Path) -> None:
    # importing a.leaf runs a/__init__.py, which imports b.user, which imports a.leaf: a real cycle
    write(tmp_path, {
        "a/__init__.py": "from b import user\n", "a/leaf.py": "",
        "b/__init__.py": "", "b/user.py": "import a.leaf\n",
        "c/__init__.py": "from c import part\n", "c/part.py": "from c.other import x\n", "c/other.py": "x = 1\n",
    })
    graph = graph_tool.import_graph(tmp_path, ["a", "b", "c"])
    assert "a" in graph["b.user"] and "a.leaf" in graph["b.user"]
    assert "c" not in graph["c.part"]  # a package's own modules pass through its __init__ harmlessly
    assert graph_tool.cycles(graph) == [["a", "b.user", "a"]]


def test_lark_and_perfsonar_have_no_cycles_and_no_inverted_layers() -> None:
    rules = ["lark.broker=lark.cli", "lark.engine=lark.cli", "lark.attach=lark.cli", "lark.reconcile=lark.cli",
             "lark.attach=lark.engine", "lark.attach=lark.config"]
    done = subprocess.run([sys.executable, str(SCRIPT), "lark", "perfsonar", "--root", str(ROOT),
                           *(f"--forbid={r}" for r in rules)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no cycles among ")


def test_the_checker_reports_a_forbidden_edge() -> None:
    graph = graph_tool.import_graph(ROOT, ["lark"])
    assert "lark.engine" in graph["lark.cli.run"]  # the CLI sits above the engine...
    assert graph_tool.forbidden(graph, [("lark.cli.run", "lark.engine")]) == ["lark.cli.run -> lark.engine"]
