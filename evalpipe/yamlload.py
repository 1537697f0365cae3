"""Read user YAML strictly: the one loader for every YAML text evalpipe is given.

Policies, task files and ``--param`` values all go through :func:`load_yaml`. It is as safe as
``yaml.safe_load`` (plain data, no tags that run code) and also refuses what ``safe_load``
lets through silently or turns into a traceback:

- a duplicate key in a mapping: YAML keeps the last value, so ``margin: 1.0`` followed later by
  ``margin: 50`` would loosen a release gate without a word. Keys are compared as constructed
  values, so ``1`` and ``0x1`` or ``yes`` and ``true`` are the same key, as they are once loaded;
  ``<<`` merge keys are exempt (an explicit key overriding a merged one is what merging is for);
- nesting deeper than :data:`MAX_DEPTH` (PyYAML's composer recurses and would hit Python's
  recursion limit), a value that contains itself through an alias (``a: &x [*x]``), and
  aliases that expand to more than :data:`MAX_VALUES` values (the "billion laughs");
- a scalar that cannot be built (an integer longer than Python converts, a date such as
  ``2020-13-45``), which ``safe_load`` raises as ``ValueError`` rather than a YAML error.

Every problem is a :class:`YamlInputError` whose message is one line with the line (and key)
it is about; callers prefix the file or flag it came from.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from evalpipe.errors import EvalpipeError

MAX_DEPTH = 100
"""Deepest nesting of sequences and mappings accepted; evalpipe's own files need under 10."""

MAX_VALUES = 100_000
"""Most scalars, sequences and mappings one document may expand to (aliases counted each
time they are used); evalpipe's own files hold a few hundred."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(EvalpipeError):
    """YAML that evalpipe refuses to read; ``line`` (1-based) is where, when known."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None) -> None:
        where = (
            ""
            if line is None
            else f"line {line}" + ("" if column is None else f", column {column}")
        )
        super().__init__(f"{where}: {problem}" if where else problem)
        self.problem = problem
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` with the refusals of the module docstring."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._open: set[str] = set()  # anchors whose value is being composed
        self._size: dict[int, int] = {}  # id(node) -> values in it, aliases expanded

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        # Depth is counted where PyYAML recurses, so the limit holds before Python's does.
        self._depth += 1
        event = self.peek_event()  # type: ignore[no-untyped-call]
        anchor = None if isinstance(event, AliasEvent) else event.anchor
        try:
            if self._depth > MAX_DEPTH:
                raise _refuse(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            if isinstance(event, AliasEvent) and event.anchor in self._open:
                # `a: &x [*x]` is a list that contains itself: no JSON, no hash, no end.
                raise _refuse(
                    f"*{event.anchor} refers to a value that contains it", event.start_mark
                )
            if anchor is not None:
                self._open.add(anchor)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(anchor or "")
        if node is not None:
            self._count(node)
        return node

    def _count(self, node: Node) -> None:
        # Aliases share one node, so `&a [x, x, ...]` nested ten times is a few lines of
        # text and 10^10 values for whatever walks the result (hashing, JSON).
        if id(node) in self._size:
            return
        children: list[Node] = []
        if isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, SequenceNode):
            children = list(node.value)
        size = 1 + sum(self._size.get(id(c), 1) for c in children)
        if size > MAX_VALUES:
            raise _refuse(
                f"holds more than {MAX_VALUES} values once its aliases (*name) are expanded",
                node.start_mark,
            )
        self._size[id(node)] = size

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            # int("1" * 5000) and date(2020, 13, 45) raise these, not a YAML error.
            value = node.value if isinstance(node, ScalarNode) else node.tag
            shown = value if len(value) <= 40 else value[:37] + "..."
            raise _refuse(f"cannot read the value {shown!r}: {exc}", node.start_mark) from exc

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # a sequence or mapping key is refused by the base class itself
            key = self.construct_object(key_node)  # scalars build hashable values
            if key in first:
                raise _refuse(
                    f"duplicate key {key_node.value!r} (first at line {first[key]}); YAML "
                    "would keep only the last value: remove one",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """The data in ``text`` (one YAML document); :class:`YamlInputError` if refused.

    Example::

        load_yaml("margin: 1.0\\nalpha: 0.05")   # {"margin": 1.0, "alpha": 0.05}
        load_yaml("a: 1\\na: 2")                 # YamlInputError: line 2: duplicate key 'a' ...
    """
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)  # the reader checks every character here already
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise _marked(exc) from exc
    except yaml.reader.ReaderError as exc:
        raise YamlInputError(
            f"character {exc.position + 1} is #x{exc.character:04x}, which YAML does not "
            "allow in a file (a control character or a NUL)"
        ) from exc
    except yaml.YAMLError as exc:
        raise YamlInputError(_one_line(str(exc))) from exc
    except RecursionError as exc:  # a guard only: compose_node's depth limit comes first
        raise YamlInputError(f"nested too deeply (more than {MAX_DEPTH} levels)") from exc
    finally:
        if loader is not None:
            loader.dispose()


Path = tuple[str | int, ...]
"""Where a value sits in a document: mapping keys (as written) and sequence indexes."""


def load_yaml_lines(text: str) -> tuple[Any, dict[Path, int]]:
    """:func:`load_yaml`, plus the 1-based line of every value by its path, so a refusal of
    what a value means (an unknown task in a sweep plan) can name the line, as a refusal of
    the YAML itself does. ``load_yaml_lines("a:\n  - x\n  - y")[1][("a", 1)]`` is 3."""
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise _marked(exc) from exc
    except yaml.YAMLError as exc:  # the reader's own errors: load_yaml words them
        load_yaml(text)
        raise YamlInputError(_one_line(str(exc))) from exc
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Path, int] = {}
    _walk(node, (), lines)
    return data, lines


def _walk(node: Node, path: Path, lines: dict[Path, int]) -> None:
    if path in lines:  # an alias: its first place is where it is written
        return
    lines[path] = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        for key, value in node.value:
            if isinstance(key, ScalarNode):
                _walk(value, (*path, key.value), lines)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines)


def _refuse(problem: str, mark: Any) -> ConstructorError:
    return ConstructorError(None, None, problem, mark)


def _marked(exc: yaml.MarkedYAMLError) -> YamlInputError:
    problem = _one_line(exc.problem or str(exc))
    if exc.context:
        at = exc.context_mark
        problem += f" ({_one_line(exc.context)}" + (f" at line {at.line + 1})" if at else ")")
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return YamlInputError(problem)
    return YamlInputError(problem, line=mark.line + 1, column=mark.column + 1)


def _one_line(text: str) -> str:
    return " ".join(text.split())


__all__ = ["MAX_DEPTH", "YamlInputError", "load_yaml", "load_yaml_lines"]
