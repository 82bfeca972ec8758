"""The recipes shipped inside the package, runnable by name (``edgedistill run kd``, ``edgedistill.run("kd")``) and
listed by ``edgedistill list recipes``. They are package data found with importlib.resources, so a wheel or any
non-editable install runs them as a checkout does (a checkout's ``recipes/`` is a link to the same folder).
A core module: the command line and ``edgedistill.run`` turn a name into a path here, before ``config.load_recipe``
reads it; a name is never looked up anywhere else."""
from __future__ import annotations

import difflib
import re
from importlib.resources import files
from pathlib import Path

from edgedistill.errors import UserInputError

#: What ``edgedistill run`` with no recipe runs.
DEFAULT = "quickstart"
_SUFFIXES = (".yaml", ".yml")
# A sentence ends at '.', '!' or '?' followed by a space, except after the abbreviations the headers use.
_SENTENCE_END = re.compile(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\bcf)[.!?](?=\s|$)")


def shipped_dir() -> Path:
    """The folder of the shipped recipes. pip always installs a package as real files, so this is a real folder:
    a shipped recipe is read, copied into its run folder and resolves its relative paths like any other file."""
    return Path(str(files("edgedistill") / "recipes"))


def shipped_names() -> list[str]:
    """Names of the shipped recipes (file names without ``.yaml``), sorted."""
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def recipe_source(name_or_path: str | Path | None = None) -> Path:
    """The recipe file that ``name_or_path`` means. An existing file is itself; a bare name without a YAML suffix
    (``kd``) is the shipped ``kd.yaml``; ``None`` is the shipped quickstart. A ``.yaml`` name that is not a file is
    looked for in ``./recipes/`` and then among the shipped recipes (``kd.yaml`` worked before names did).
    Raises ``UserInputError`` (one line, the closest shipped names) for a name that is none of these."""
    raw = DEFAULT if name_or_path is None else str(name_or_path)
    path = Path(raw)
    if path.is_file():
        return path
    bare = raw != "" and path.name == raw and raw not in (".", "..")  # no folder part: a name, not a path
    if path.suffix.lower() in _SUFFIXES:
        for candidate in (Path("recipes") / raw, shipped_dir() / raw if bare else None):
            if candidate is not None and candidate.is_file():
                return candidate
        if (shipped_dir() / f"{path.stem}.yaml").is_file():  # recipes/kd.yaml typed outside a checkout
            raise UserInputError(f"recipe file '{raw}' not found; the shipped recipe of that name runs by name: "
                                 f"edgedistill run {path.stem}")
        return path  # the reader reports the missing file, naming it
    if bare:
        shipped = shipped_dir() / f"{raw}.yaml"
        if shipped.is_file():
            return shipped
        raise UserInputError(unknown_message(raw))
    return path


def unknown_message(name: str) -> str:
    """One line for a recipe name that is neither a file nor shipped: the closest shipped names, and that a path works."""
    names = shipped_names()
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
    hint = f"closest shipped: {', '.join(close)}" if close else f"shipped: {', '.join(names[:6])}, ..."
    return (f"recipe '{name}' is not a file and not a shipped recipe ({hint}; all: edgedistill list recipes); "
            "a path to a YAML file works too")


def describe(path: Path, width: int = 100) -> str:
    """A recipe's one-line description: the first sentence of its header comment (the lines starting with '#' at the
    top), cut to ``width`` characters. The first sentence, not the first line, because headers wrap mid-sentence."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    text = " ".join(w for w in words if w)
    end = _SENTENCE_END.search(text)
    if end is not None:
        text = text[: end.start() + 1]
    if len(text) > width:
        text = text[: width - 1].rsplit(" ", 1)[0].rstrip(",;:(") + "…"
    return text


def shipped_descriptions(width: int = 100) -> list[tuple[str, str]]:
    """(name, one-line description of at most ``width`` characters) of every shipped recipe, sorted by name."""
    return [(name, describe(shipped_dir() / f"{name}.yaml", width)) for name in shipped_names()]
