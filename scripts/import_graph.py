#!/usr/bin/env python3
"""The import graph of Lark's packages, from the source alone (ast; nothing is imported).

    python scripts/import_graph.py              # exit 1 and list every cycle, else print "no cycles"
    python scripts/import_graph.py --dot        # the graph as Graphviz DOT (| dot -Tsvg > imports.svg)
    python scripts/import_graph.py --forbid lark.broker=lark.cli   # also fail if a module under the
                                                                   # first prefix imports the second

What counts as an import: every ``import`` and ``from ... import`` statement in a module, at module
level or inside a function (a function-level import is still a dependency, only a later one),
except inside an ``if TYPE_CHECKING:`` block (never executed). ``from a.b import c`` depends on
``a.b.c`` when that is a module, else on ``a.b``. Importing ``a.b.c`` also runs the ``__init__``
of every package on the way; that counts as a dependency on ``a.b`` unless the importer is itself
inside ``a.b`` (a package's own modules import each other under its ``__init__`` harmlessly).
Only modules of the scanned packages appear; the standard library and third parties do not.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

DEFAULT_PACKAGES = ("lark", "perfsonar")


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Module name -> file, for every .py file under each package directory."""
    out: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:  # the else branch does run
                yield from _import_nodes_of(other)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _import_nodes(node)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The scanned modules ``module`` depends on (see the module docstring)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    targets: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        else:
            base = _resolve(module, path.name == "__init__.py", node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in known else base)
    deps: set[str] = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in known or name == module:
                continue
            is_ancestor_of_importer = module == name or module.startswith(name + ".")
            if i < len(parts) and is_ancestor_of_importer:
                continue  # passing through one's own package
            deps.add(name)
    return deps


def import_graph(root: Path, packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, set[str]]:
    files = module_files(root, packages)
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (or a self-import), each as a
    cycle through it found by a walk: enough to name what must be cut."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:  # Tarjan, iterative over a manual stack
        nonlocal counter
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return [_cycle_in(graph, set(c)) for c in sorted(components)]


def _cycle_in(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """One closed path inside a strongly connected component, from its first member back to it."""
    start = min(members)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start, start]


def forbidden(graph: dict[str, set[str]], rules: Sequence[tuple[str, str]]) -> list[str]:
    """``importer -> imported`` edges where the importer is under a rule's first prefix and the
    imported module under its second."""
    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    return [f"{a} -> {b}" for a in sorted(graph) for b in sorted(graph[a])
            for low, high in rules if under(a, low) and under(b, high)]


def dot(graph: dict[str, set[str]]) -> str:
    lines = ["digraph imports {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for a in sorted(graph):
        lines.append(f'  "{a}";')
        lines.extend(f'  "{a}" -> "{b}";' for b in sorted(graph[a]))
    lines.append("}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="*", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--dot", action="store_true", help="print the graph as Graphviz DOT")
    parser.add_argument("--forbid", action="append", default=[], metavar="LOW=HIGH",
                        help="fail when a module under LOW imports one under HIGH (repeatable)")
    args = parser.parse_args(argv)
    graph = import_graph(args.root, args.packages)
    if args.dot:
        print(dot(graph))
    found = cycles(graph)
    rules = [tuple(r.split("=", 1)) for r in args.forbid]
    bad = forbidden(graph, rules)  # type: ignore[arg-type]
    for cycle in found:
        print("cycle: " + " -> ".join(cycle), file=sys.stderr)
    for edge in bad:
        print("forbidden import: " + edge, file=sys.stderr)
    if not args.dot and not found and not bad:
        print(f"no cycles among {len(graph)} modules")
    return 1 if found or bad else 0


if __name__ == "__main__":
    sys.exit(main())
