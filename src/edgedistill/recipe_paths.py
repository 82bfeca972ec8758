"""Names and paths in a recipe: a name that becomes a folder is never a path (``safe_name``), a path never holds a
NUL byte (``RecipePath``), and relative paths written in a recipe file mean the recipe's folder
(``resolve_recipe_paths``). A core module: ``config`` validates with it, sweeps resolve with it."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from edgedistill.errors import UserInputError

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def safe_name(value: str) -> str:
    """A recipe name that becomes a file or folder name (the run folder, a teacher's folder): 1-64 letters, digits,
    '.', '_' or '-', starting with a letter or digit. So a name is never a path: no separator, no '..', not absolute."""
    if not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise ValueError("becomes a file or folder name: use 1-64 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit (no '/', no '..')")
    return value


def _no_nul(value: Path) -> Path:
    if "\x00" in str(value):  # no file system takes it; every os call would raise a bare ValueError
        raise ValueError("a path cannot contain a NUL character")
    return value


#: A file or folder path from a recipe: a NUL byte is refused when the recipe is read, not by the first os call.
RecipePath = Annotated[Path, AfterValidator(_no_nul)]


# Keys whose values are file paths: (section, key) with section a mapping or a list of mappings of the recipe.
_PATH_KEYS = (("data", "path"), ("data", "root"), ("student", "checkpoint"), ("teacher", "checkpoint"), ("teachers", "checkpoint"),
              ("teacher", "load"), ("teachers", "load"), ("teacher", "outputs"), ("teachers", "outputs"),
              ("cache_dir", None))
# Sections whose ``model`` may name the user's class in a file (``./nets.py:WristNet``, models.user): the file part
# is a recipe path like the others. (section, sub-section) with section a mapping of the recipe.
_MODEL_KEYS = (("student", None), ("teacher", None), ("teachers", None), ("method", "peers"), ("method", "large"))
_MODEL_FILE = re.compile(r"(?P<file>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


def model_file(value: Any) -> str | None:
    """The file part of a ``model`` value that names a class in a Python file (``./nets.py:WristNet`` ->
    ``./nets.py``), else None (a zoo name, ``pkg.mod:Class``). String-level only: nothing is imported."""
    m = _MODEL_FILE.fullmatch(value) if isinstance(value, str) else None
    return m["file"] if m else None


def model_sections(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(recipe key, section) of every model section a recipe dict holds whose ``model`` may be the user's class:
    student, teacher, teachers[i], and the networks an online regime builds (method.params.peers[i], .large)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for section, sub in _MODEL_KEYS:
        node = data.get(section)
        key = section
        if sub is not None:
            params = node.get("params") if isinstance(node, dict) else None
            node = params.get(sub) if isinstance(params, dict) else None
            key = f"{section}.params.{sub}"
        found += _sections(node, key)
    return found


def _sections(node: Any, key: str) -> list[tuple[str, dict[str, Any]]]:
    """(recipe key, mapping) of a section that is one mapping (``teacher``) or a list of them (``teachers.1``)."""
    entries = node if isinstance(node, list) else [node]
    return [(f"{key}.{i}" if isinstance(node, list) else key, e) for i, e in enumerate(entries) if isinstance(e, dict)]


def resolve_recipe_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths written in a recipe file are relative to that file's folder, whatever the working folder, and
    are stored absolute (so config.yaml, export, profile and resume mean the same file from anywhere). Paths given
    as command-line overrides are applied afterwards and stay relative to the working folder, as a shell expects."""
    out = copy.deepcopy(data)

    def absolute(value: Any, key: str) -> Any:
        if not isinstance(value, str) or not value:
            return value
        if "\x00" in value:  # no file system takes it; Path.resolve would raise a bare ValueError
            raise UserInputError(f"{key}: a path cannot contain a NUL character (got {value[:60]!r})")
        p = Path(value).expanduser()
        try:
            return str(p if p.is_absolute() else (base / p).resolve())
        except OSError as exc:  # a name too long for the file system
            raise UserInputError(f"{key}: the path {value[:60]!r} cannot be resolved ({exc.strerror or exc})") from None

    for section, key in _PATH_KEYS:
        node = out.get(section)
        if key is None:
            if section in out:
                out[section] = absolute(node, section)
            continue
        for where, entry in _sections(node, section):
            if key in entry:
                entry[key] = absolute(entry[key], f"{where}.{key}")
    for key, section in model_sections(out):
        file = model_file(section.get("model"))
        if file is not None:
            section["model"] = f"{absolute(file, f'{key}.model')}:{section['model'].rsplit(':', 1)[1]}"
    topology = (out.get("data") or {}).get("topology") if isinstance(out.get("data"), dict) else None
    if isinstance(topology, dict) and "pinet" in topology:
        topology["pinet"] = absolute(topology["pinet"], "data.topology.pinet")
    return out
