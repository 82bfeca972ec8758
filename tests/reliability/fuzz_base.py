"""The fuzzer's shared pieces: the outcomes a case may be owed, the tiny valid recipes every case mutates, the
``Case`` record and ``_set`` (a recipe with one dotted key changed). Families live in fuzz_cases (recipes, YAML,
overrides) and fuzz_files (data files, checkpoints)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional, Union

REFUSE, ACCEPT, EITHER = "refuse", "accept", "either"

TINY_DATA = {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 8, "length": 32}}
TINY_TRAIN = {"epochs": 1, "batch_size": 8}
BASE: dict[str, Any] = {
    "name": "fuzz",
    "data": TINY_DATA,
    "teacher": {"model": "fcn", "width": 0.25, "train": TINY_TRAIN},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 4}]},
    "train": TINY_TRAIN,
    "seeds": [0],
    "engine": {"threads": 1, "progress": False},
}
# Named teachers, an assistant chain (TAKD) and born-again generations: every recipe name that becomes a folder.
TEACHERS = {**BASE, "teacher": None, "method": {"name": "multi_teacher"},
            "teachers": [{"name": "t1", "model": "fcn", "width": 0.25, "train": TINY_TRAIN},
                         {"name": "t2", "model": "fcn", "width": 0.25, "seed": 1, "train": TINY_TRAIN}]}
TAKD = {**BASE, "teacher": None, "method": {"name": "takd", "terms": BASE["method"]["terms"]},
        "teachers": [{"name": "teacher", "model": "fcn", "width": 0.25, "train": TINY_TRAIN},
                     {"name": "ta", "model": "cnn1d", "width": 6, "depth": 2, "distill_from": "teacher",
                      "train": TINY_TRAIN, "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5}]}]}
BORN = {**BASE, "teacher": None, "method": {"name": "born_again", "params": {"generations": 1}}}
FILE_DATA = {"path": "data.npz", "split": {"val": 0.25}}
CSV_DATA = {"path": "data.csv", "split": {"val": 0.25}}


def _clean(recipe: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in recipe.items() if v is not None}


@dataclass(frozen=True)
class Case:
    kind: str  # the category the figures are broken down by
    expect: str  # REFUSE, ACCEPT or EITHER
    recipe: Union[dict, str, bytes]  # a mapping (dumped as YAML) or the recipe file's raw text
    overrides: tuple[str, ...] = ()
    files: tuple[tuple[str, bytes], ...] = ()  # written beside the recipe (data files, checkpoints)
    note: str = ""  # what was done, for the findings
    command: str = "run"  # or "sweep"
    give_out: bool = True  # pass --out (else the run directory is runs/<name>-<time> in the working folder)
    out: str = "out"  # the --out given (relative to the working folder; @ROOT@ allowed)
    recipe_path: str = "recipe.yaml"  # the recipe argument (the recipe text is written there when it is a plain name)
    special: tuple[tuple[str, str], ...] = ()  # (name, "fifo" | "dir" | "link:<target>") made beside the recipe
    smoke: bool = False
    # (table, row) of a recipe text or file maker, built by ``materialize`` when the case runs: drawing stays fast
    # and a case pickles (the figures script sends cases to a worker process).
    lazy: Optional[tuple[str, Any]] = None

    def label(self) -> str:
        return f"[{self.kind}/{self.expect}] {self.note}"


def _set(recipe: dict, path: str, value: Any) -> dict:
    """A deep copy of ``recipe`` with the dotted ``path`` set (list indices as digits); '-' in the value deletes."""
    out = copy.deepcopy(recipe)
    node: Any = out
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    last = parts[-1]
    if isinstance(node, list) and value is _DELETE:
        del node[int(last)]
    elif isinstance(node, list):
        node[int(last)] = value
    elif value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return out


_DELETE = object()
