"""The grid of a sweep: read and check the recipe's ``sweep`` section, enumerate its points, name them, and validate
every point (the checks ``edgedistill run`` does before training) before anything is written."""
from __future__ import annotations

import hashlib
import itertools
import math
import json
import re
from pathlib import Path
from typing import Any, Optional

from edgedistill.config import load_recipe
from edgedistill.engine.devices import check_one_process
from edgedistill.experiment.job_slots import Footprint, footprint
from edgedistill.recipe_paths import resolve_recipe_paths, safe_name
from edgedistill.errors import short_repr
from edgedistill.yaml_io import apply_overrides, read_yaml
from edgedistill.errors import UserInputError
from edgedistill.experiment.sweep_report import label

SPEC_KEYS = ("grid", "seeds", "metric", "name")
#: The most grid points a sweep may have: every point is validated before anything runs, and 1,000 points (each over
#: every seed) is already days of CPU; a larger study is several sweeps, or a coarser grid.
MAX_POINTS = 1000
METRICS = {"classification": ("acc", "f1", "ece", "nll"), "regression": ("rmse", "mae", "r2")}


# -- the grid ------------------------------------------------------------------------------------------------
def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def encode(value: Any) -> Any:
    """A grid value as an Optuna categorical choice: scalars as they are, lists and mappings as JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else _canon(value)


def point_id(point: dict[str, Any]) -> str:
    """Stable folder name of a grid point: readable ``temperature=2,weight=0.5`` plus a hash of the whole point.

    A safe slug whatever the values (``../../x``, 10 kB of text): only ``[A-Za-z0-9._=,+-]``, no ``..``, starting
    with a letter or digit, at most 89 characters; the hash keeps points apart that the shortened text confuses."""
    digest = hashlib.sha256(_canon(sorted(point.items())).encode()).hexdigest()[:8]
    def text(v: Any) -> str:
        flat = isinstance(v, list) and all(x is None or isinstance(x, (bool, int, float, str)) for x in v)
        return "+".join(label(x) for x in v) if flat else label(v)

    slug = ",".join(f"{k.split('.')[-1]}={text(v)}" for k, v in point.items())
    slug = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", slug)
    slug = re.sub(r"\.{2,}", ".", slug)[:80]  # no '..' (a parent folder to a reader, even without a separator)
    slug = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", slug)  # no leading '-' (an option) or '.' (hidden)
    return f"{slug}-{digest}" if slug else digest


def read_sweep(path: Path, overrides: Optional[list[str]] = None) -> dict[str, Any]:
    """The recipe (without ``sweep``) and the checked sweep section: ``{base, axes, values, seeds, metric, name}``."""
    data = resolve_recipe_paths(read_yaml(Path(path)), Path(path).parent)
    if overrides:
        data = apply_overrides(data, overrides)
    raw = data.pop("sweep", None)
    if raw is None:
        raise UserInputError(f"recipe '{path}' has no 'sweep' section; add e.g. sweep: {{grid: {{method.terms.1.temperature: "
                             "[1, 2, 4]}}}} (docs/sweep.md)")
    if not isinstance(raw, dict):
        raise UserInputError(f"sweep: expected a mapping with keys {', '.join(SPEC_KEYS)} (got {raw!r})")
    for key in raw:
        if key not in SPEC_KEYS:
            raise UserInputError(f"sweep.{key}: unknown key; expected one of: {', '.join(SPEC_KEYS)}")
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise UserInputError("sweep.grid: expected a mapping of recipe keys to lists of values, e.g. "
                             "{method.terms.1.temperature: [1, 2, 4]}")
    values: dict[str, list[Any]] = {}
    for key, vals in grid.items():
        if not isinstance(key, str) or not key or not all(key.split(".")):
            raise UserInputError(f"sweep.grid.{key}: expected a dotted recipe key such as train.lr")
        if key.split(".")[0] in ("seeds", "name", "sweep"):
            raise UserInputError(f"sweep.grid.{key}: not a grid axis (a trial runs every seed: set sweep.seeds)")
        if not isinstance(vals, list) or not vals:
            raise UserInputError(f"sweep.grid.{key}: expected a non-empty list of values (got {vals!r})")
        for i, v in enumerate(vals):
            if any(_canon(v) == _canon(w) or (encode(v) == encode(w) and not isinstance(v, (list, dict))) for w in vals[:i]):
                raise UserInputError(f"sweep.grid.{key}: the value {label(v)} is listed twice")
            if isinstance(v, float) and v != v:
                raise UserInputError(f"sweep.grid.{key}: NaN is not a grid value")
        codes = [encode(v) for v in vals]
        if len(set(map(_canon, codes))) != len(codes):
            raise UserInputError(f"sweep.grid.{key}: a text value collides with a list/mapping value written as JSON")
        values[key] = vals
    points = math.prod(len(v) for v in values.values())
    if points > MAX_POINTS:
        sizes = " x ".join(str(len(v)) for v in values.values())
        raise UserInputError(f"sweep.grid: {sizes} = {points:,} points; at most {MAX_POINTS:,} (split the study into "
                             "several sweeps, or use fewer values per axis)")
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
                              or len(set(seeds)) != len(seeds)):
        raise UserInputError(f"sweep.seeds: expected a non-empty list of distinct integers (got {short_repr(seeds)})")
    metric = raw.get("metric")
    if metric is not None and metric not in (*METRICS["classification"], *METRICS["regression"]):
        raise UserInputError(f"sweep.metric: unknown metric {metric!r}; expected one of: "
                             f"{', '.join(METRICS['classification'])} (classification), {', '.join(METRICS['regression'])} (regression)")
    name = raw.get("name", data.get("name", "run"))
    try:
        name = safe_name(name) if isinstance(name, str) else safe_name("")
    except ValueError as exc:
        raise UserInputError(f"sweep.name: {exc} (got {short_repr(name)})") from None
    # Relative data paths are relative to the recipe file (as for `edgedistill run`); trials get the recipe as a dict.
    d = data.get("data")
    if isinstance(d, dict) and isinstance(d.get("path"), str) and not Path(d["path"]).is_absolute() and not Path(d["path"]).exists():
        d["path"] = str(Path(path).parent / d["path"])
    return {"base": data, "axes": list(values), "values": values, "seeds": seeds, "metric": metric, "name": name}


def points_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    axes = spec["axes"]
    return [dict(zip(axes, combo)) for combo in itertools.product(*(spec["values"][k] for k in axes))]


def trial_overrides(spec: dict[str, Any], point: dict[str, Any], smoke: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {"seeds": spec["seeds"]} if spec["seeds"] is not None else {}
    if smoke:
        extra["report.profile"] = False  # nothing worth timing in a smoke run
    return {**point, **extra}


def _check(spec: dict[str, Any], overrides: dict[str, Any], smoke: bool) -> tuple[str, Footprint]:
    """What ``edgedistill run`` checks before training (keys, names, shapes, one forward pass); returns the task and
    what ``--jobs auto`` needs to know of the point's work."""
    from edgedistill.experiment.runner import plan

    recipe = load_recipe(spec["base"], overrides)
    check_one_process(recipe.engine, "edgedistill sweep")
    if smoke:
        from edgedistill.experiment.smoke import smoke_recipe

        recipe = smoke_recipe(recipe)
    p = plan(recipe, smoke)
    return p.splits.info.task, footprint(recipe, p, smoke)


def _shared_smoke_recipe(spec: dict[str, Any], overrides: dict[str, Any], cache: Path) -> Optional[dict[str, Any]]:
    """A smoke run keeps its trained models in its own run directory, so every trial would train its own teacher
    and baseline. Run the smoke recipe as a plain run with one cache for the whole sweep instead: the same
    networks, trained once. Not where a teacher reads a view the synthetic data lacks (smoke mode aliases it)."""
    from edgedistill.config import recipe_to_dict
    from edgedistill.experiment.smoke import smoke_recipe
    from edgedistill.registry import METHODS

    recipe = smoke_recipe(load_recipe(spec["base"], overrides))
    method = METHODS.get(recipe.method.name, key="method.name")
    if any(t.view != "x" for seed in recipe.seeds for t in method.teacher_plan(recipe, seed)):
        return None
    return {**recipe_to_dict(recipe), "cache_dir": str(cache.resolve())}


def _loads(base: dict[str, Any], overrides: dict[str, Any]) -> bool:
    try:
        load_recipe(base, overrides)
    except UserInputError:
        return False
    return True


def validate(spec: dict[str, Any], points: list[dict[str, Any]], smoke: bool) -> tuple[str, str, list[Footprint]]:
    """Check every grid point; an error names ``sweep.grid.<key>`` (and the value) where one axis is to blame.
    Returns (task, metric, every point's ``job_slots.Footprint``)."""
    axes = spec["axes"]
    base_ok = _loads(spec["base"], {})  # (the grid may supply what the recipe leaves out)
    outcome: dict[int, Any] = {}
    for i, point in enumerate(points):
        try:
            outcome[i] = _check(spec, trial_overrides(spec, point, smoke), smoke)
        except UserInputError as exc:
            outcome[i] = exc
    for i, point in enumerate(points):
        exc = outcome[i]
        if not isinstance(exc, UserInputError):
            continue
        text = re.sub(r"\[(\d+)\]", r".\1", str(exc))
        blamed = [k for k in axes if re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", text)]
        if not blamed:  # the axis whose other values make this point valid
            for k in axes:
                if any(not isinstance(outcome[j], UserInputError) for j, q in enumerate(points)
                       if q[k] != point[k] and all(q[o] == point[o] for o in axes if o != k)):
                    blamed = [k]
                    break
        if not blamed and base_ok:  # the axis whose value alone breaks the recipe (an unknown key, a wrong type)
            blamed = [k for k in axes if not _loads(spec["base"], {k: point[k]})]
        if blamed:
            raise UserInputError(f"sweep.grid.{blamed[0]}: {label(point[blamed[0]])}: {exc}")
        if all(isinstance(o, UserInputError) for o in outcome.values()) and not base_ok:
            raise UserInputError(str(exc))
        where = ", ".join(f"{k}={label(point[k])}" for k in axes)
        raise UserInputError(f"sweep.grid ({', '.join(axes)}): the grid point {where}: {exc}")
    tasks = {task for task, _ in outcome.values()}
    if len(tasks) != 1:
        raise UserInputError(f"sweep.grid: the grid mixes tasks ({', '.join(sorted(tasks))}); one metric cannot rank them")
    task = tasks.pop()
    metric = spec["metric"] or ("acc" if task == "classification" else "rmse")
    if metric not in METRICS[task]:
        raise UserInputError(f"sweep.metric: '{metric}' is not a {task} metric; expected one of: {', '.join(METRICS[task])}")
    return task, metric, [outcome[i][1] for i in range(len(points))]
