"""Recipe YAML: a safe loader (no tag executes anything; ``1e-3`` is a float) and ``key.sub=value`` overrides.

Reading and editing the raw mapping, before ``config`` validates it into a typed ``Recipe``.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from edgedistill.errors import UserInputError


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 demands a dot: ``1.0e-3``)."""


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


def safe_load(text: Any) -> Any:
    """``yaml.safe_load`` semantics (no tags execute anything) with scientific-notation floats."""
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - _YamlLoader is a SafeLoader


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001); the value is parsed as YAML (safe_load)."""
    if "=" not in text:
        raise UserInputError(f"override '{text}': expected key.sub=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise UserInputError(f"override '{text}': empty key segment")
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UserInputError(f"override '{text}': value is not valid YAML ({exc.problem})") from None
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        path = key.split(".") if isinstance(key, str) else key
        node: Any = out
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserInputError(f"override '{'.'.join(path)}': '{part}' is not an index of that list")
                node = node[int(part)]
                continue
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, (dict, list)):
                raise UserInputError(f"override '{'.'.join(path)}': '{'.'.join(path[: i + 1])}' is not a mapping")
        last = path[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise UserInputError(f"override '{'.'.join(path)}': '{last}' is not an index of that list")
            node[int(last)] = value
        else:
            node[last] = value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"recipe file '{path}' does not exist")
    try:
        with path.open() as fh:
            data = safe_load(fh)
    except yaml.YAMLError as exc:
        raise UserInputError(f"recipe file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"recipe file '{path}': expected a mapping at the top level, got {type(data).__name__}")
    return data
