"""Admin-written YAML files (network profiles, the spider's configuration), read within bounds and
with the line of every value, so each error can say ``FILE:LINE: message``.

A YAML file is composed into a node tree first (every node keeps its line), checked, and only then
turned into Python values. The bounds keep a stray or hostile file from stalling whoever reads it
(the broker reloads profiles on a job's start path): a 4.5 MB profile file took 19 s and 612 MB
before they existed. Each kind of file states its own :class:`YamlLimits`:

- the file's size, checked before a byte is read (:func:`read_text`) and again on the text;
- how deeply mappings and lists nest (PyYAML's composer recurses once per level, so 100 000 ``[``
  ended in a RecursionError, not a YAML error);
- how many values the tree holds with every alias (``*name``) and merge key (``<<``) expanded, so a
  few lines of aliases cannot stand for billions of values ("billion laughs"); a value that
  contains itself through an alias is refused too.

Callers then read the tree: :meth:`YamlDocument.construct` turns one node into Python values,
:meth:`YamlDocument.line` and :func:`line_of` find the line to blame.

PyYAML is imported when a file is read, not with this module: the PREPARE_JOB hook imports the
profiles for every job, and a job without a profile never reads one (PyYAML costs ~8 ms).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lark.errors import ConfigError

if TYPE_CHECKING:
    import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"  # the tag of a ``<<`` key
MIB = 1 << 20


@dataclass(frozen=True)
class YamlLimits:
    """The bounds of one kind of file, and the words its refusals use."""

    what: str  # "a profile file": the refusals name the kind of file
    max_bytes: int
    max_nesting: int  # mappings, lists and scalars inside each other
    max_values: int  # nodes, every alias and merge key expanded
    usual_nesting: int  # how deep a real file goes: the refusal says it
    usual_values: str  # how many values a real file holds, in words ("a few hundred")
    too_large_advice: str = ""  # appended to the refusal of a file over max_bytes


class YamlFileError(ConfigError):
    """A file that cannot be read as bounded YAML: ``FILE:LINE: message`` (``FILE: message`` without a line)."""

    def __init__(self, source: str, line: int | None, message: str, knob: str = "(file)") -> None:
        Exception.__init__(self, location(source, line) + message)
        self.knob = knob
        self.source = source
        self.line = line
        self.detail = message


def location(source: str, line: int | None) -> str:
    """The ``FILE:LINE: `` (or ``FILE: ``) every message about a file starts with."""
    return f"{source}:{line}: " if line else f"{source}: "


def size_text(size: int) -> str:
    return f"{size} bytes ({size / MIB:.1f} MiB)" if size >= MIB else f"{size} bytes"


def too_large(size: int, limits: YamlLimits) -> str:
    """The refusal of a file of ``size`` bytes, over ``limits.max_bytes``."""
    limit = f"{limits.max_bytes} bytes ({limits.max_bytes / MIB:g} MiB)" if limits.max_bytes >= MIB else \
        f"{limits.max_bytes} bytes"
    advice = f"; {limits.too_large_advice}" if limits.too_large_advice else ""
    return f"is {size_text(size)}, more than the {limit} {limits.what} may hold{advice}"


def read_text(path: Path, limits: YamlLimits) -> str:
    """The UTF-8 text of ``path``; a file over the size limit is refused before a byte is read.

    Raises :class:`YamlFileError` for a file too large or not UTF-8; ``OSError`` is the caller's
    (each has its own words for a missing file).
    """
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        # the bounded read covers a file that grows while it is read
        data = f.read(limits.max_bytes + 1) if size <= limits.max_bytes else b""
    if size > limits.max_bytes or len(data) > limits.max_bytes:
        raise YamlFileError(str(path), None, too_large(max(size, len(data)), limits))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YamlFileError(str(path), None, f"cannot be read: {err}") from None


# ------------------------------------------------------------------------------------------------
# PyYAML's errors, as one line


def error_line(err: yaml.YAMLError, text: str) -> int | None:
    """The 1-based line a PyYAML error points at, if any."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(err, "position", None)  # ReaderError (control characters)
    if isinstance(position, int):
        return text.count("\n", 0, position) + 1
    return None


def error_text(err: yaml.YAMLError) -> str:
    """What went wrong, without PyYAML's multi-line excerpt of the file."""
    import yaml

    if isinstance(err, yaml.MarkedYAMLError):
        text = str(err.problem or err.context or "syntax error")
        if err.context and err.problem:
            ctx, mark = err.context, err.context_mark
            if mark is not None and (err.problem_mark is None or mark.line != err.problem_mark.line):
                ctx += f" started at line {mark.line + 1}"
            text += f" ({ctx})"
        return text
    return str(err).splitlines()[0]


# ------------------------------------------------------------------------------------------------
# Composing within bounds


@functools.cache
def _bounded_loader() -> type[yaml.SafeLoader]:
    """SafeLoader that refuses collections nested deeper than the limit while composing (built on first use)."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream: str, limits: YamlLimits) -> None:
            super().__init__(stream)
            self.limits = limits
            self.depth = 0

        def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
            self.depth += 1
            try:
                if self.depth > self.limits.max_nesting:
                    raise yaml.composer.ComposerError(
                        None, None, f"collections are nested more than {self.limits.max_nesting} levels deep "
                        f"({self.limits.what} needs {self.limits.usual_nesting})", self.peek_event().start_mark)
                return super().compose_node(parent, index)  # type: ignore[no-any-return]
            finally:
                self.depth -= 1

    return BoundedLoader


def oversize(root: yaml.Node, limits: YamlLimits) -> tuple[yaml.Node, str] | None:
    """The node where the tree, every alias expanded, passes ``limits.max_values`` or refers to itself.

    PyYAML composes an alias as the very node it names, so a few lines of ``&a``/``*a`` (or of
    ``<<`` merges, which flattening copies) can stand for billions of values. A value containing
    itself (``&a [*a]``, ``&a {<<: *a}``) means nothing in an admin's file and cannot be counted,
    so it is refused too. Counted bottom-up with a memo and an explicit stack: aliases may chain
    deeper than Python's recursion limit.
    """
    import yaml

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the path from the root: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children(node))
            if sizes[id(node)] > limits.max_values:
                return node, (f"holds more than {limits.max_values} values, counting what aliases (*name) and "
                              f"merge keys (<<) repeat; {limits.what} needs {limits.usual_values}")
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            return node, "has a value that contains itself through an alias (*name)"
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in sizes)
    return None


class YamlDocument:
    """One file's node tree (``root`` is None for an empty file) and the means to read it."""

    def __init__(self, source: str, root: yaml.Node | None) -> None:
        import yaml

        self.source = source
        self.root = root
        self._constructor = yaml.constructor.SafeConstructor()

    def construct(self, node: yaml.Node) -> object:
        """The Python value of ``node`` (merge keys applied); raises ``yaml.YAMLError`` (e.g. a bad tag)."""
        return self._constructor.construct_object(node, deep=True)

    def flatten(self, node: yaml.MappingNode) -> None:
        """Apply the ``<<`` merge keys of ``node`` in place; raises ``yaml.YAMLError`` for a bad merge."""
        self._constructor.flatten_mapping(node)

    @staticmethod
    def line(node: yaml.Node | None) -> int | None:
        return node.start_mark.line + 1 if node is not None else None

    def error(self, node: yaml.Node | None, message: str) -> YamlFileError:
        return YamlFileError(self.source, self.line(node), message)


def compose(text: str, source: str, limits: YamlLimits) -> YamlDocument:
    """The node tree of one YAML document, within ``limits``; raises :class:`YamlFileError`.

    Too large a text, a syntax error (with its line), nesting past the limit, more than one
    document and a tree that multiplies past the limit or contains itself are refused.
    """
    import yaml

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise YamlFileError(source, None, too_large(size, limits))
    try:
        loader = _bounded_loader()(text, limits)  # type: ignore[call-arg]
    except yaml.YAMLError as err:  # the reader refuses control characters up front
        raise YamlFileError(source, error_line(err, text), f"is not valid YAML: {error_text(err)}") from None
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as err:
        raise YamlFileError(source, error_line(err, text), f"is not valid YAML: {error_text(err)}") from None
    finally:
        loader.dispose()
    document = YamlDocument(source, root)
    if root is not None and (found := oversize(root, limits)) is not None:
        raise document.error(*found)
    return document


def load(text: str, source: str, limits: YamlLimits) -> tuple[YamlDocument, object]:
    """The node tree and the Python value of one YAML document (None for an empty one), within ``limits``.

    Raises :class:`YamlFileError` for everything :func:`compose` refuses and for a value no safe
    loader builds (an unknown ``!!tag``, a bad timestamp), with its line.
    """
    import yaml

    document = compose(text, source, limits)
    if document.root is None:
        return document, None
    try:
        return document, document.construct(document.root)
    except yaml.YAMLError as err:
        raise YamlFileError(source, error_line(err, text), f"is not valid YAML: {error_text(err)}") from None


def line_of(node: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """1-based line of the value at ``path`` (mapping keys and list indexes) below ``node``, or of the
    nearest value on the way there that exists."""
    import yaml

    line = YamlDocument.line(node)
    for step in path:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            nxt = node.value[step]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = YamlDocument.line(node)
    return line
