"""Recipe YAML: a safe, bounded loader (no tag executes anything; ``1e-3`` is a float) and ``key.sub=value`` overrides.

Reading and editing the raw mapping, before ``config`` validates it into a typed ``Recipe``. A recipe is small and
written by hand, so the loader refuses what no hand-written recipe needs and what a hostile file would use to hang
or exhaust memory (the limits below, documented in docs/reliability.md): a file over 1 MB, nesting deeper than 32,
alias ("billion laughs") expansion beyond 100,000 nodes, recursive aliases, a key given twice (PyYAML would keep the
last one silently) and a key that is not a string (``yes:`` is a bool, ``1:`` an int: every recipe key is a name).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from edgedistill.errors import UserInputError, short_repr
from edgedistill.paths import regular_file

#: A recipe file larger than this is refused unread: the largest bundled recipe is ~3 KB.
MAX_FILE_BYTES = 1_000_000
#: One ``key=value`` override (a command-line word) of more characters is refused.
MAX_OVERRIDE_CHARS = 10_000
#: Nesting of mappings and lists, counted after aliases are expanded; recipes use 5 or fewer.
MAX_DEPTH = 32
#: Nodes (scalars, mappings, lists) of a document after aliases are expanded; recipes have a few hundred.
MAX_NODES = 100_000
#: Alias uses (``*name``) in one document.
MAX_ALIASES = 100
#: Segments of an override key (``teachers.0.terms.1.weight`` has 5) and characters of one segment.
MAX_KEY_SEGMENTS = 16
MAX_SEGMENT_CHARS = 64
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_MERGE = "tag:yaml.org,2002:merge"


class YamlLimit(yaml.YAMLError):
    """The document breaks one of the loader's limits; the message says which, and where."""


def _line(node_or_mark: Any) -> int:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return getattr(mark, "line", -1) + 1


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.1 demands a dot: ``1.0e-3``) and enforces the limits."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlLimit(f"line {_line(self.peek_event())}: more than {MAX_ALIASES} aliases (*name)")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlLimit(f"line {_line(self.peek_event())}: nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None:
            _check_expanded(node)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise YamlLimit(f"line {_line(key_node)}: key {short_repr(key, 80)} (of type {type(key).__name__}) is not a "
                                    "name; every recipe key is a name (quote it if it is meant as one)")
                if key in seen:
                    raise YamlLimit(f"line {_line(key_node)}: key '{short_repr(key, 60)[1:-1]}' is given twice (first "
                                    f"on line {seen[key]}); YAML would silently keep only the last")
                seen[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _check_expanded(root: Node) -> None:
    """Refuse a document whose aliases expand it beyond ``MAX_NODES`` nodes or ``MAX_DEPTH`` levels, or that refers
    to itself. Sizes are memoised per node, so a billion-laughs document is measured in microseconds, never built."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)
    active: set[int] = set()

    def measure(node: Node) -> tuple[int, int]:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:
            raise YamlLimit(f"line {_line(node)}: an alias refers to the node that contains it (a recursive document)")
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            return sizes.setdefault(id(node), (1, 0))
        active.add(id(node))
        measured = [measure(c) for c in children]
        active.discard(id(node))
        result = (1 + sum(n for n, _ in measured), 1 + max((d for _, d in measured), default=0))
        if result[0] > MAX_NODES:
            raise YamlLimit(f"line {_line(node)}: aliases expand the document beyond {MAX_NODES:,} nodes")
        if result[1] > MAX_DEPTH:
            raise YamlLimit(f"line {_line(node)}: aliases nest the document deeper than {MAX_DEPTH} levels")
        sizes[id(node)] = result
        return result

    measure(root)


def safe_load(text: Any) -> Any:
    """``yaml.safe_load`` semantics (no tags execute anything) with scientific-notation floats and the limits above
    (a string over ``MAX_FILE_BYTES`` characters is refused unparsed). Raises ``yaml.YAMLError``."""
    if isinstance(text, (str, bytes)) and len(text) > MAX_FILE_BYTES:
        raise YamlLimit(f"{len(text):,} characters; the limit is {MAX_FILE_BYTES:,}")
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - _YamlLoader is a SafeLoader
    except RecursionError:  # a parser path the depth limit does not reach: still a malformed document, not a crash
        raise YamlLimit(f"nested too deeply (the limit is {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # a scalar Python refuses to convert, e.g. an integer of more than 4300 digits
        raise YamlLimit(f"a value cannot be read: {str(exc).splitlines()[0][:120]}") from None


def check_key(key: str | list[str], where: str) -> list[str]:
    """An override key as its segments: at most ``MAX_KEY_SEGMENTS``, each a 1-64 character name or list index."""
    path = key.split(".") if isinstance(key, str) else list(key)
    shown = ".".join(str(p) for p in path)
    if len(path) > MAX_KEY_SEGMENTS:
        raise UserInputError(f"{where}: the key has {len(path)} segments; at most {MAX_KEY_SEGMENTS}")
    for part in path:
        if not isinstance(part, str) or not part:
            raise UserInputError(f"{where}: empty key segment in {short_repr(shown, 80)} (expected key.sub=value)")
        if len(part) > MAX_SEGMENT_CHARS or not _SEGMENT.fullmatch(part):
            raise UserInputError(f"{where}: key segment {short_repr(part, 40)} is not a name or list index (1-"
                                 f"{MAX_SEGMENT_CHARS} letters, digits, '_' or '-')")
    return path


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001); the value is parsed as YAML (safe_load)."""
    if len(text) > MAX_OVERRIDE_CHARS:
        raise UserInputError(f"override {short_repr(text, 40)}: {len(text):,} characters; the limit is "
                             f"{MAX_OVERRIDE_CHARS:,}")
    if "=" not in text:
        raise UserInputError(f"override {short_repr(text, 80)}: expected key.sub=value")
    key, raw = text.split("=", 1)
    path = check_key(key.strip(), f"override {short_repr(text, 80)}")
    try:
        value = safe_load(raw) if raw.strip() else None
    except YamlLimit as exc:
        raise UserInputError(f"override {short_repr(text, 80)}: value refused: {exc}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserInputError(f"override {short_repr(text, 80)}: value is not valid YAML ({problem})") from None
    return path, value


def _unshared(value: Any, depth: int = 0) -> Any:
    """A copy in which no two places share a mapping or list. ``deepcopy`` would keep YAML aliases shared, so an
    override of ``method.terms.1`` would also change a ``teachers.0.terms`` written as ``*the_same_anchor``."""
    if depth > 4 * MAX_DEPTH:
        raise UserInputError(f"recipe: nested deeper than {4 * MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {k: _unshared(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared(v, depth + 1) for v in value]
    return copy.deepcopy(value)


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """``data`` with each ``key.sub=value`` set (a copy; an alias of the YAML is overridden only where named)."""
    out = _unshared(data)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        path = check_key(key, f"override {short_repr(key, 80)}")
        node: Any = out
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserInputError(f"override '{'.'.join(path)}': '{part}' is not an index of that list")
                node = node[int(part)]
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            if not isinstance(node, (dict, list)):  # a number or a name cannot hold a sub-key
                raise UserInputError(f"override '{'.'.join(path)}': '{'.'.join(path[: i + 1])}' is "
                                     f"{short_repr(node, 40)}, not a mapping or list")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise UserInputError(f"override '{'.'.join(path)}': '{last}' is not an index of that list")
            node[int(last)] = value
        else:
            node[last] = value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in recipe file ``path``, within the limits above; every problem is a ``UserInputError``."""
    path = Path(path)
    regular_file(path, "recipe file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # never more than the limit, even from a file that keeps growing
    except OSError as exc:
        raise UserInputError(f"recipe file '{path}' cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UserInputError(f"recipe file '{path}' is larger than {MAX_FILE_BYTES:,} bytes; a recipe is a short "
                             "YAML file (data belongs in data.path)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"recipe file '{path}' is not UTF-8 text (byte {exc.start}); is it a data file?") from None
    try:
        data = safe_load(text)
    except YamlLimit as exc:
        raise UserInputError(f"recipe file '{path}' refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"recipe file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"recipe file '{path}': expected a mapping at the top level, got {type(data).__name__}")
    return data
