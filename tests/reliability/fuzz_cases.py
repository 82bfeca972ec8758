"""Seeded Hypothesis case generators for the reliability fuzzer (tests/reliability/test_fuzz.py and
scripts/reliability_figures.py): each case is a recipe (a mapping or raw YAML text), overrides, optional data files
and the outcome a careful user is owed: "refuse" (exit 2, one line, nothing written), "accept" (exit 0) or "either"
(only tracebacks, hangs, writes outside the run directory and lost data count).

Every case mutates a valid tiny base recipe (synthetic data of 32 windows, a quarter-width FCN teacher, a 4-wide
student, one epoch), so an accepted case trains in about a second. Strings may hold ``@ROOT@`` (the case's own
sandbox folder, outside the run directory): the harness substitutes it, so absolute paths stay inside the sandbox.
"""
from __future__ import annotations

import copy
import re
from dataclasses import replace
from typing import Any, Callable, Union

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hyp_seed
from hypothesis import strategies as st


from reliability.fuzz_base import ACCEPT, BASE, BORN, CSV_DATA, EITHER, FILE_DATA, REFUSE, TAKD, TEACHERS, TINY_TRAIN, Case
from reliability.fuzz_base import _DELETE, _clean, _set  # noqa: F401
from reliability.fuzz_files import (_CKPT, _CSV, _NPZ, checkpoints, csv_files, npz_files, npz_random,  # noqa: F401
                                    random_npz)


def materialize(case: Case) -> Case:
    """The case with its lazy recipe text or data file built."""
    if case.lazy is None:
        return case
    table, row = case.lazy
    if table == "npz_random":
        return replace(case, files=(("data.npz", random_npz(row)),), lazy=None)
    make = _TABLES[table][row][1]
    if table == "yaml":
        return replace(case, recipe=make(), lazy=None)
    name = {"npz": "data.npz", "csv": "data.csv", "ckpt": "weights.pt"}[table]
    return replace(case, files=((name, make()),), lazy=None)


# ---------------------------------------------------------------------------------------------- recipe level
# (dotted key, what is owed when it is missing)
_REQUIRED = [("data", REFUSE), ("student", REFUSE), ("student.model", REFUSE), ("teacher.model", REFUSE),
             ("method.terms.0.loss", REFUSE), ("data.name", REFUSE), ("train", ACCEPT), ("seeds", ACCEPT),
             ("method", EITHER), ("engine", ACCEPT), ("teacher.train", EITHER), ("name", ACCEPT)]
_SECTIONS = ["", "data", "data.split", "data.params", "teacher", "teacher.train", "student", "method",
             "method.terms.1", "train", "engine"]


@st.composite
def drop_or_rename(draw: Callable) -> Case:
    if draw(st.booleans()):
        key, expect = draw(st.sampled_from(_REQUIRED))
        return Case("recipe.drop_key", expect, _set(BASE, key, _DELETE), note=f"drop {key}")
    section = draw(st.sampled_from(_SECTIONS))
    typo = draw(st.sampled_from(["epoch", "lr_", "Name", "widht", "temprature", "wieght", "bach_size", "seed_", "x"]))
    key = f"{section}.{typo}" if section else typo
    return Case("recipe.unknown_key", REFUSE, _set(BASE, key, 1), note=f"unknown key {key}")


_WRONG = [("abc", "a word"), ([1, 2], "a list"), ({"a": 1}, "a mapping"), ("", "empty string")]
_TYPED = ["train.epochs", "train.lr", "train.batch_size", "train.optimizer", "train.weight_decay", "teacher.width",
          "student.width", "student.depth", "method.terms.1.temperature", "method.terms.0.weight", "seeds",
          "data.split.val", "data.normalize", "engine.threads", "data.params.n_subjects", "data.params.length",
          "method.name", "student.model", "method.terms", "data.params", "teacher.train", "name", "data.name"]


@st.composite
def wrong_type(draw: Callable) -> Case:
    key = draw(st.sampled_from(_TYPED))
    value, what = draw(st.sampled_from(_WRONG + [(None, "null"), (True, "a bool")]))
    # null means "the default" for some keys and a bool is an int in YAML's eyes for others: owed nothing definite
    expect = EITHER if value is None or value is True else REFUSE
    if key == "name" and isinstance(value, str) and value:
        expect = ACCEPT
    if key == "seeds" and value == [1, 2]:
        expect = ACCEPT  # a list of seeds is what seeds takes
    return Case("recipe.wrong_type", expect, _set(BASE, key, value), note=f"{key} = {what}")


# (key, valid example range, values owed a refusal, values where either is fine)
_HUGE, _NAN, _INF = 1e30, float("nan"), float("inf")
_NUMBERS: list[tuple[str, list, list]] = [
    ("train.epochs", [0, -1, 10**9, 2**63], []),
    ("train.lr", [0, -1e-3, _NAN, _INF, -_INF], [_HUGE, 1e-300]),
    ("train.batch_size", [0, -8, 2**63], [10**9, 1]),
    ("train.weight_decay", [-1, _NAN, _INF], [_HUGE]),
    ("train.momentum", [-0.5, 1.5, _NAN], []),
    ("train.grad_clip", [0, -1, _NAN], [_INF, 1e-30]),
    ("train.gamma", [0, -1, _NAN, _INF], []),
    ("teacher.train.epochs", [0, 10**9], []),
    ("teacher.train.lr", [_NAN, _INF, 0], [_HUGE]),
    ("method.terms.0.weight", [-1, _NAN, _INF, -_INF], [0, _HUGE]),
    ("method.terms.1.weight", [-0.5, _NAN, _INF], [0, 1e6]),
    ("method.terms.1.temperature", [0, -4, _NAN, _INF], [1e-6, 1e6]),
    ("method.terms.1.start_epoch", [-1], [10**6]),
    ("method.terms.1.warmup_epochs", [-1], [10**9]),
    ("seeds", [[2**70], [_NAN], [0.5]], [[-1], [2**31]]),
    ("student.width", [0, -4, 10**7, _NAN], [0.5]),
    ("student.depth", [0, -1, 10**5], []),
    ("teacher.width", [0, -1, 1e7, _NAN, _INF], []),
    ("data.split.val", [0, 1, -0.1, 1.5, _NAN], [0.01, 0.9]),
    ("data.split.test", [0, 1, _NAN], [0.9]),
    ("data.split.seed", [2**70], [-1]),
    ("data.params.n_subjects", [0, -1, 10**9], [1, 2]),
    ("data.params.windows_per_subject", [0, 10**9], [1]),
    ("data.params.length", [0, 1, 10**9], [17]),
    ("data.params.n_classes", [0, 1, 10**6], [2]),
    ("data.params.noise", [-1, _NAN, _INF], [1e6]),
    ("engine.threads", [0, -1], [10**6]),
    ("teacher.train_subset", [0, -0.1, 1.5, _NAN], [1e-6]),
    ("data.window", [{"length": 0}, {"length": 10**9}, {"length": 8, "stride": 0}], [{"length": 16}]),
    # each size within its own bound, the product gigabytes
    ("data.params", [{"n_subjects": 10**3, "windows_per_subject": 10**3, "length": 10**3},
                     {"n_subjects": 10**4, "windows_per_subject": 10**4, "length": 64, "channels": 9}], []),
]


@st.composite
def numbers(draw: Callable) -> Case:
    key, bad, fine = draw(st.sampled_from(_NUMBERS))
    refuse = draw(st.booleans()) or not fine
    value = draw(st.sampled_from(bad if refuse else fine))
    smoke = draw(st.integers(0, 4)) == 0  # --smoke must check everything a real run checks
    return Case("recipe.numbers", REFUSE if refuse else EITHER, _set(BASE, key, value), smoke=smoke,
                note=f"{key} = {value!r}{' (--smoke)' if smoke else ''}")


_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ABSURD = ["../../x", "@ROOT@/outside/x", "/", ".", "a/b", "x" * 10_000, "é漢字\u202e", "nul\x00byte", "line\nbreak",
           "~", "$HOME", "con", "-rf", " ", "..\\..\\x"]
_STRING_KEYS = [("name", REFUSE), ("method.name", REFUSE), ("student.model", REFUSE), ("data.name", REFUSE),
                ("method.terms.1.loss", REFUSE), ("train.optimizer", REFUSE), ("data.path", REFUSE),
                ("student.checkpoint", REFUSE), ("teacher.checkpoint", REFUSE), ("teacher.view", REFUSE),
                ("data.normalize", REFUSE), ("cache_dir", EITHER)]


@st.composite
def absurd_strings(draw: Callable) -> Case:
    key, expect = draw(st.sampled_from(_STRING_KEYS))
    value = draw(st.sampled_from(_ABSURD) | st.text(min_size=1, max_size=40))
    recipe = _set(BASE, key, value)
    if key == "name":  # random text (or "con", a reserved name only on Windows) may happen to be a valid name
        expect = REFUSE if not _SAFE.fullmatch(value) or ".." in value else ACCEPT
    elif value not in _ABSURD:  # random text may happen to be a valid choice or a short registry name
        if value in ("adamw", "adam", "sgd", "per_channel", "global", "none", "x") or len(value) <= 3:
            expect = EITHER
    if key == "data.path":
        recipe["data"].pop("name", None)
        recipe["data"].pop("params", None)
    smoke = draw(st.integers(0, 5)) == 0
    if smoke and key in ("teacher.view", "data.path", "student.checkpoint", "teacher.checkpoint"):
        expect = EITHER  # --smoke replaces the data and drops user weights; a privileged view reads the synthetic x
    return Case("recipe.strings", expect, recipe, smoke=smoke, note=f"{key} = {value[:60]!r}")


_PATHLIKE = ["../../x", "../x", "@ROOT@/outside/abs", "a/b", "..", ".", "x" * 300, "sub\\dir", "nul\x00", ""]


@st.composite
def names_as_paths(draw: Callable) -> Case:
    bad = draw(st.sampled_from(_PATHLIKE))
    where = draw(st.sampled_from(["recipe", "recipe-no-out", "teachers", "assistant", "distill_from", "sweep.name",
                                  "sweep.point", "override"]))
    if where in ("recipe", "recipe-no-out"):
        return Case("names.recipe", REFUSE, _set(BASE, "name", bad), give_out=where == "recipe", note=f"name={bad!r}")
    if where == "teachers":
        return Case("names.teacher", REFUSE, _set(_clean(TEACHERS), "teachers.0.name", bad), note=f"teachers[0].name={bad!r}")
    if where == "assistant":
        r = _set(_clean(TAKD), "teachers.1.name", bad)
        return Case("names.teacher", REFUSE, r, note=f"assistant name={bad!r}")
    if where == "distill_from":
        r = _set(_set(_clean(TAKD), "teachers.0.name", bad), "teachers.1.distill_from", bad)
        return Case("names.teacher", REFUSE, r, note=f"teacher and distill_from={bad!r}")
    if where == "override":
        return Case("names.override", REFUSE, BASE, overrides=(f"name={bad}",), note=f"override name={bad!r}")
    sweep = {"name": "s", "grid": {"method.terms.1.temperature": [2]}, "seeds": [0], "metric": "acc"}
    expect = REFUSE
    if where == "sweep.name":
        sweep["name"] = bad
        # With --out the sweep's name is a label (the study's name), not a folder: only a path-like one is owed a refusal.
        expect = EITHER if bad == "x" * 300 else REFUSE
    else:
        sweep["grid"] = {"name": ["ok", bad]}
    return Case("names.sweep", expect, {**BASE, "sweep": sweep}, command="sweep", note=f"{where}={bad!r}")


# Chains, generations, augmentations and method parameters: checked when the recipe is read, not after a teacher
# trained (issue 16 item 4). (base, dotted key, value, owed)
_CHAINS: list[tuple[dict, str, Any, str]] = [
    (BORN, "method.params.generations", 0, REFUSE), (BORN, "method.params.generations", -1, REFUSE),
    (BORN, "method.params.generations", 10**6, REFUSE), (BORN, "method.params.generations", 1.5, REFUSE),
    (BORN, "method.params.nope", 1, REFUSE), (BASE, "method.params.nope", 1, REFUSE),
    (TAKD, "teachers.1.distill_from", "ta", REFUSE), (TAKD, "teachers.1.distill_from", "nope", REFUSE),
    (TAKD, "teachers.1.terms.1.temperature", 0, REFUSE), (TAKD, "teachers.1.terms.1.temperature", _NAN, REFUSE),
    (TAKD, "teachers.1.terms.0.weight", -1, REFUSE), (TAKD, "teachers.1.terms.1.loss", "nope", REFUSE),
    (TAKD, "teachers.1.terms.1.nope", 1, REFUSE), (TAKD, "teachers.1.terms", [], REFUSE),
    (TAKD, "teachers.1.width", 10**7, REFUSE), (TAKD, "teachers.1.train.lr", _NAN, REFUSE),
    (TEACHERS, "teachers.1.name", "t1", REFUSE), (TEACHERS, "teachers", [], REFUSE),
    (TEACHERS, "teachers.0.view", "nope", REFUSE), (TEACHERS, "teachers.1.seed", 2**70, REFUSE),
    (TEACHERS, "teachers.0.train_subset", 0, REFUSE), (TEACHERS, "method.terms", [{"loss": "kd", "temperature": -1}], REFUSE),
    (BASE, "method.terms.1.nope", 1, REFUSE), (BASE, "method.terms.1.loss", "fitnet", EITHER),
    (BASE, "method.terms", [], EITHER), (BASE, "method.terms.0.loss", "mse_to_teacher", EITHER),
    (BASE, "augment", {"student": [{"name": "jitter", "sigma": -1}]}, REFUSE),
    (BASE, "augment", {"student": [{"name": "jitter", "sigma": _NAN}]}, REFUSE),
    (BASE, "augment", {"student": ["nope"]}, REFUSE), (BASE, "augment", {"mix": {"name": "mixup", "alpha": _INF}}, REFUSE),
    (BASE, "augment", {"student": [{"name": "jitter", "sigma": 1e30}]}, EITHER),
    (BASE, "augment", {"student": ["jitter", "scaling"], "mix": "mixup"}, ACCEPT),
    (BASE, "augment", {"teacher": ["jitter"]}, REFUSE),
]


@st.composite
def chains(draw: Callable) -> Case:
    base, key, value, expect = draw(st.sampled_from(_CHAINS))
    recipe = _set(_clean(base), key, value)
    return Case("recipe.chains", expect, recipe, note=f"{recipe['method']['name']}: {key} = {value!r}")


# A model named by import path runs code (docs/models.md): what a hostile or mistaken recipe can name. Every one is
# refused before anything trains: the standard library and edgedistill are never imported for a recipe, a missing
# module or file is named, and a class that is not a fitting nn.Module never trains. (key, value)
_MODEL_REFS = [
    "os:system", "subprocess:Popen", "antigravity:X", "this:X", "builtins:eval", "importlib:import_module",
    "edgedistill.models.zoo1d:FCN", "edgedistill.cli:app", "numpy:ndarray", "torch.nn:Identity", "torch.nn:Linear",
    "torch.nn:Conv1d", "torch:load", "no_such_package_xyz.nets:Net", "a:b", ":Net", "nets:", "a..b:Net",
    "./missing.py:Net", "@ROOT@/outside/evil.py:Net", "../../etc/passwd.py:Net", "nets.py:../Net", "x" * 900 + ":Net",
    "nets.py:Net\x00", "pkg.mod:Class.attr", "pkg.mod:1Net", "C:\\nets.py:Net", "~/nets.py:Net",
]


@st.composite
def model_refs(draw: Callable) -> Case:
    value = draw(st.sampled_from(_MODEL_REFS))
    key = draw(st.sampled_from(["student.model", "teacher.model", "teachers.1.model", "method.params.peers.0.model"]))
    if key.startswith("teachers"):
        recipe = _set(_clean(TAKD), key, value)
    elif key.startswith("method.params"):
        recipe = _set(_set(BASE, "method", {"name": "dml", "params": {"peers": [{"model": "cnn1d"}]}}), "teacher", None)
        recipe = _set(recipe, key, value)
    else:
        recipe = _set(BASE, key, value)
    smoke = draw(st.integers(0, 4)) == 0
    return Case("recipe.model_refs", REFUSE, recipe, smoke=smoke, note=f"{key} = {value[:60]!r}{' (--smoke)' if smoke else ''}")


def _paths(node: Any, prefix: str = "") -> list[str]:
    """Every dotted path of a recipe tree (mapping keys and list indices)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    out = []
    for k, v in items:
        path = f"{prefix}{k}"
        out += [path, *_paths(v, path + ".")]
    return out


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


@st.composite
def mutate(draw: Callable) -> Case:
    """Up to three random nodes of a random base recipe replaced by random YAML values (or deleted): nobody knows
    what is owed, so only tracebacks, hangs, memory, writes outside and lost data count."""
    recipe = _clean(draw(st.sampled_from([BASE, TEACHERS, TAKD, BORN])))
    notes = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(recipe)))
        value = draw(st.just(_DELETE) | _JSON)
        try:
            recipe = _set(recipe, path, value)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            continue  # an earlier mutation removed or replaced this path's parent
        notes.append(f"{path} = {'<deleted>' if value is _DELETE else repr(value)[:40]}")
    return Case("mutate", EITHER, recipe, note="; ".join(notes))


@st.composite
def random_overrides(draw: Callable) -> Case:
    """Overrides on random paths of the recipe (or made-up ones) with random YAML-ish values."""
    keys = _paths(BASE) + ["x", "train.x.y", "method.terms.5", "seeds.0", "data.params"]
    items = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(keys) | st.text(max_size=12))
        value = draw(st.sampled_from(["1", "-1", "nan", "[]", "{}", "null", "~", "1e999", "'x'", "[1, [2]]", "{a: {b: c}}",
                                      "!!str 1", "*x", "&x y", "|", ">-", "- a", "'unterminated", "\"", "%YAML 1.2"])
                     | st.text(max_size=16))
        items.append(f"{key}={value}")
    return Case("overrides.random", EITHER, BASE, overrides=tuple(items), note=" ".join(items)[:120])


_SPECIAL: list[tuple[str, dict, tuple, str, str]] = [
    # (note, data section or {}, special files, recipe argument, owed)
    ("data.path a FIFO nobody writes", FILE_DATA, (("data.npz", "fifo"),), "recipe.yaml", REFUSE),
    ("data.path a link to /dev/zero", FILE_DATA, (("data.npz", "link:/dev/zero"),), "recipe.yaml", REFUSE),
    ("data.path a link to /dev/urandom", FILE_DATA, (("data.npz", "link:/dev/urandom"),), "recipe.yaml", REFUSE),
    ("data.path a folder", FILE_DATA, (("data.npz", "dir"),), "recipe.yaml", REFUSE),
    ("data.path a dangling link", FILE_DATA, (("data.npz", "link:nowhere.npz"),), "recipe.yaml", REFUSE),
    ("data.path a link to a text file outside", FILE_DATA, (("data.npz", "link:@ROOT@/outside/sentinel.txt"),), "recipe.yaml", REFUSE),
    ("csv a FIFO", CSV_DATA, (("data.csv", "fifo"),), "recipe.yaml", REFUSE),
    ("csv a link to /dev/zero", CSV_DATA, (("data.csv", "link:/dev/zero"),), "recipe.yaml", REFUSE),
    ("checkpoint a FIFO", {}, (("weights.pt", "fifo"),), "recipe.yaml", REFUSE),
    ("checkpoint a link to /dev/zero", {}, (("weights.pt", "link:/dev/zero"),), "recipe.yaml", REFUSE),
    ("checkpoint a folder", {}, (("weights.pt", "dir"),), "recipe.yaml", REFUSE),
    ("recipe /dev/zero", {}, (), "/dev/zero", REFUSE),
    ("recipe /dev/null", {}, (), "/dev/null", REFUSE),
    ("recipe a FIFO", {}, (("fifo.yaml", "fifo"),), "fifo.yaml", REFUSE),
    ("recipe a folder", {}, (("folder.yaml", "dir"),), "folder.yaml", REFUSE),
    ("recipe a link to /dev/urandom", {}, (("rand.yaml", "link:/dev/urandom"),), "rand.yaml", REFUSE),
]


@st.composite
def special_files(draw: Callable) -> Case:
    """FIFOs, devices, folders and links where files are read: never a hang, never gigabytes."""
    note, data, special, arg, expect = draw(st.sampled_from(_SPECIAL))
    recipe = {**BASE, "data": data} if data else BASE
    if note.startswith("checkpoint"):
        recipe = _set(BASE, "student.checkpoint", "weights.pt")
    return Case("special_files", expect, recipe, special=special, recipe_path=arg, note=note)


_GOOD_SWEEP = {"name": "s", "grid": {"method.terms.1.temperature": [2, 4]}, "seeds": [0], "metric": "acc"}
_SWEEPS: list[tuple[dict, str]] = [
    ({}, ACCEPT), ({"grid": {"train.lr": [_NAN]}}, REFUSE), ({"grid": {"train.lr": [-1, 1e-3]}}, REFUSE),
    ({"grid": {"train.lr": []}}, REFUSE), ({"grid": {}}, REFUSE), ({"grid": {"nope.key": [1]}}, REFUSE),
    ({"grid": {"train.epochs": list(range(1, 1001)), "train.batch_size": list(range(1, 1001))}}, REFUSE),
    ({"grid": {"seeds": [[0]]}}, REFUSE), ({"grid": {"train.lr": [1e-3, 1e-3]}}, REFUSE), ({"seeds": []}, REFUSE),
    ({"seeds": [2**70]}, REFUSE), ({"metric": "nope"}, REFUSE), ({"metric": "mae"}, REFUSE), ({"nope": 1}, REFUSE),
    ({"grid": {"method.terms.1.temperature": [0, 4]}}, REFUSE), ({"grid": {"data.path": ["@ROOT@/outside/sentinel.txt"]}}, REFUSE),
    ({"grid": {"student.width": [4, 10**7]}}, REFUSE), ({"grid": {"method.terms": [[{"loss": "ce"}], "x"]}}, REFUSE),
    ({"grid": {"train.lr": "0.1"}}, REFUSE), ({"grid": {"name": ["a", "b"]}}, EITHER),
]


@st.composite
def sweeps(draw: Callable) -> Case:
    change, expect = draw(st.sampled_from(_SWEEPS))
    return Case("sweep", expect, {**BASE, "sweep": {**_GOOD_SWEEP, **change}}, command="sweep", note=repr(change)[:100])


@st.composite
def yaml_random(draw: Callable) -> Case:
    """Random text or bytes as the recipe file: always owed a one-line refusal."""
    blob = draw(st.binary(max_size=200) | st.text(max_size=200) | st.text(alphabet="{}[]:-&*!|>'\"#%@ \n\tab1.", max_size=120))
    return Case("yaml.random", REFUSE, blob, note=repr(blob)[:100])


# --out aimed at what is not a fresh folder: an existing file, a folder with the user's files, an impossible name
_OUTS: list[tuple[str, str]] = [
    ("SENTINEL.txt", REFUSE), (".", REFUSE), ("..", REFUSE), ("@ROOT@/outside", REFUSE), ("@ROOT@/home", REFUSE),
    ("recipe.yaml", REFUSE), ("x" * 300, REFUSE), ("SENTINEL.txt/run", REFUSE), ("a\x00b", REFUSE),
    ("deep/" * 40 + "run", ACCEPT), ("@ROOT@/outside/new-run", ACCEPT), ("-", EITHER), ("~", EITHER),
]


@st.composite
def outs(draw: Callable) -> Case:
    out, expect = draw(st.sampled_from(_OUTS))
    return Case("out", expect, BASE, out=out, note=f"--out {out[:60]!r}")


# ---------------------------------------------------------------------------------------------- YAML text
def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nname: bomb\ndata: {{name: synthetic}}\nstudent: {{model: cnn1d}}\nmethod: {{params: {{p: *a{levels - 1}}}}}\n"


def _base_yaml() -> str:
    import yaml

    return yaml.safe_dump(BASE, sort_keys=False)


_YAML_TEXT: list[tuple[str, Callable[[], Union[str, bytes]], str]] = [
    ("billion laughs, 9 levels", lambda: _bomb(9), REFUSE),
    ("alias bomb, 6 levels", lambda: _bomb(6), REFUSE),
    ("duplicate key name", lambda: _base_yaml() + "name: again\n", REFUSE),
    ("duplicate nested key", lambda: _base_yaml().replace("  epochs: 1\n", "  epochs: 1\n  epochs: 2\n", 1), REFUSE),
    ("nested lists 5000 deep", lambda: _base_yaml() + "extra: " + "[" * 5000 + "]" * 5000 + "\n", REFUSE),
    ("nested maps 3000 deep", lambda: _base_yaml() + "extra: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", REFUSE),
    ("python object tag", lambda: _base_yaml() + "evil: !!python/object/apply:os.system ['touch pwned']\n", REFUSE),
    ("python name tag", lambda: _base_yaml().replace("name: fuzz", "name: !!python/name:os.system"), REFUSE),
    ("unknown local tag", lambda: _base_yaml().replace("name: fuzz", "name: !secret fuzz"), REFUSE),
    ("binary tag", lambda: _base_yaml().replace("name: fuzz", "name: !!binary aGVsbG8="), EITHER),
    ("set tag", lambda: _base_yaml().replace("seeds:\n- 0", "seeds: !!set {0: null}"), REFUSE),
    ("timestamp value", lambda: _base_yaml().replace("name: fuzz", "name: 2024-01-01"), REFUSE),
    ("syntax error", lambda: _base_yaml() + "train: {epochs: [1,\n", REFUSE),
    ("tab indentation", lambda: _base_yaml().replace("  epochs", "\tepochs", 1), REFUSE),
    ("empty file", lambda: "", REFUSE),
    ("only a comment", lambda: "# nothing\n", REFUSE),
    ("top-level list", lambda: "- 1\n- 2\n", REFUSE),
    ("top-level scalar", lambda: "hello\n", REFUSE),
    ("latin-1 bytes", lambda: _base_yaml().encode() + b"note: caf\xe9\n", REFUSE),
    ("NUL byte", lambda: _base_yaml() + "note: a\x00b\n", REFUSE),
    ("UTF-8 BOM", lambda: "\ufeff" + _base_yaml(), EITHER),
    ("5 MB of keys", lambda: _base_yaml() + "".join(f"k{i}: {i}\n" for i in range(400_000)), REFUSE),
    ("10 MB string", lambda: _base_yaml().replace("name: fuzz", "name: " + "x" * 10_000_000), REFUSE),
    ("merge key", lambda: _base_yaml() + "base: &b {epochs: 1}\n", REFUSE),
    ("anchor reused for train", lambda: _base_yaml().replace("train:\n  epochs: 1\n  batch_size: 8\n", "train: &t {epochs: 1, batch_size: 8}\n", 1), EITHER),
    ("null key", lambda: _base_yaml() + "null: 1\n", REFUSE),
    ("integer key", lambda: _base_yaml() + "1: 1\n", REFUSE),
    ("complex key", lambda: _base_yaml() + "? [a, b]\n: 1\n", REFUSE),
    ("multiple documents", lambda: _base_yaml() + "---\nname: two\n", REFUSE),
]


@st.composite
def yaml_text(draw: Callable) -> Case:
    row = draw(st.integers(0, len(_YAML_TEXT) - 1))
    note, _, expect = _YAML_TEXT[row]
    return Case("yaml.text", expect, "", note=note, lazy=("yaml", row))


# ---------------------------------------------------------------------------------------------- overrides
_OVERRIDES: list[tuple[tuple[str, ...], str]] = [
    (("noequals",), REFUSE), (("=1",), REFUSE), (("train..lr=1",), REFUSE), (("train.epochs=[",), REFUSE),
    (("method.terms.9.weight=1",), REFUSE), (("method.terms.-1.weight=1",), REFUSE), (("seeds.0.x=1",), REFUSE),
    (("seeds.5=1",), REFUSE), (("train=5",), REFUSE), (("train.epochs.x=1",), REFUSE), (("student=",), REFUSE),
    (("name=!!python/object/apply:os.system [touch pwned]",), REFUSE), (("train.lr=nan",), REFUSE),
    (("train.lr=.inf",), REFUSE), (("seeds=[0, 0]",), REFUSE), (("seeds=[]",), REFUSE), (("train.epochs=1e400",), REFUSE),
    (("name=" + "x" * 1_000_000,), REFUSE), (("method.params." + ".".join(["a"] * 2000) + "=1",), REFUSE),
    (tuple(f"method.params.k{i}=1" for i in range(5000)), REFUSE), (("data.path=../../etc/passwd",), REFUSE),
    (("data.path=@ROOT@/outside/sentinel.txt",), REFUSE), (("cache_dir=@ROOT@/box/SENTINEL.txt",), EITHER),
    (("train.epochs=1", "train.epochs=2"), EITHER), (("train.epochs=01",), EITHER), (("engine.threads=1",), ACCEPT),
    (("method.terms.1={loss: kd, weight: 0.5}",), ACCEPT), (("train.lr=0x10",), EITHER), (("train.lr=1_000",), EITHER),
    (("method.terms=" + "[" * 3000 + "]" * 3000,), REFUSE), (("train.lr=*a",), REFUSE), (("train.lr=&a 1",), EITHER),
    (("teacher.train.epochs=1", "teacher=null"), EITHER), ((" train.epochs = 1",), EITHER), (("TRAIN.EPOCHS=1",), REFUSE),
    (("train.epochs=\x00",), REFUSE), (("data.params.n_subjects=4\n5",), REFUSE), (("method.terms.1.temperature=1e-320",), REFUSE),
]


@st.composite
def overrides(draw: Callable) -> Case:
    items, expect = draw(st.sampled_from(_OVERRIDES))
    note = " ".join(i[:60] for i in items[:3]) + (f" (+{len(items) - 3})" if len(items) > 3 else "")
    return Case("overrides", expect, BASE, overrides=items, note=note)


@st.composite
def valid(draw: Callable) -> Case:
    """Ordinary recipes that must run: the harness must not call every run a failure, nor every failure a refusal."""
    base = draw(st.sampled_from([BASE, _clean(TEACHERS), _clean(TAKD), _clean(BORN)]))
    r = copy.deepcopy(base)
    r["train"] = {**TINY_TRAIN, "lr": draw(st.sampled_from([1e-4, 3e-3, 0.1])),
                  "batch_size": draw(st.sampled_from([4, 8, 16]))}
    if "teacher" in r:
        r["method"]["terms"][1]["temperature"] = draw(st.sampled_from([1, 2.5, 8]))
    r["name"] = draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True).filter(lambda s: ".." not in s))
    return Case("valid", ACCEPT, r, note=f"{r['method']['name']} lr={r['train']['lr']}")


_TABLES: dict[str, list] = {"yaml": _YAML_TEXT, "npz": _NPZ, "csv": _CSV, "ckpt": _CKPT}

# Every family with its weight in a draw (cheap recipe-level families are drawn more often). Hypothesis favours the
# first branches of a choice, so the costly "valid" family (it trains) comes last.
FAMILIES: dict[str, tuple[Callable[[], st.SearchStrategy], int]] = {
    "numbers": (numbers, 5), "drop_or_rename": (drop_or_rename, 3), "wrong_type": (wrong_type, 3),
    "strings": (absurd_strings, 3), "names": (names_as_paths, 4), "yaml": (yaml_text, 2), "overrides": (overrides, 3),
    "npz": (npz_files, 3), "csv": (csv_files, 2), "checkpoint": (checkpoints, 1), "out": (outs, 1), "chains": (chains, 3), "mutate": (mutate, 4),
    "random_overrides": (random_overrides, 2), "npz_random": (npz_random, 2),
    "sweep": (sweeps, 1), "yaml_random": (yaml_random, 1), "special_files": (special_files, 1),
    "model_refs": (model_refs, 2), "valid": (valid, 2),
}
# What test_fuzz runs inside `make test`: refused at recipe-reading or data-loading time, nothing trains.
CHEAP = ("drop_or_rename", "wrong_type", "numbers", "strings", "names", "yaml", "overrides", "npz", "checkpoint", "out",
         "chains", "special_files", "model_refs")


@st.composite
def any_case(draw: Callable, families: tuple[str, ...] = tuple(FAMILIES)) -> Case:
    pool = [f for f in families for _ in range(FAMILIES[f][1])]
    return draw(FAMILIES[pool[draw(st.integers(0, len(pool) - 1))]][0]())


def draw_cases(n: int, seed: int, families: tuple[str, ...] = tuple(FAMILIES)) -> list[Case]:
    """``n`` cases drawn by Hypothesis from ``seed`` (the same list for the same seed and code): the generate phase
    of a @given function whose body only collects, so no case runs while drawing."""
    out: list[Case] = []

    @hyp_seed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate], derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(any_case(families))
    def collect(case: Case) -> None:
        out.append(case)

    collect()
    return out[:n]
