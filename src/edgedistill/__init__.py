"""edgedistill: distil large models into small ones for wearables, phones and microcontrollers.

``edgedistill.run(recipe, **overrides)`` runs a recipe and returns its summary; ``edgedistill.distill(teacher=...,
student=..., data=...)`` distils modules and arrays held as Python objects (``fit_teacher``, ``DistilledClassifier``:
``edgedistill.api``); ``edgedistill.losses`` holds the loss functions. Heavy modules (torch, Lightning Fabric)
load only when used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from edgedistill.version import __version__  # noqa: F401 - edgedistill.__version__


def run(
    recipe: str | Path | dict[str, Any],
    *,
    out: Optional[str | Path] = None,
    smoke: bool = False,
    progress: bool = True,
    jobs: int | str = 1,
    **overrides: Any,
) -> dict[str, Any]:
    """Run a recipe (YAML path, a shipped recipe's name such as ``"kd"``, or a dict) and return its summary.
    ``jobs``: stages at a time, this process and ``jobs - 1`` worker processes: the seeds' student-alone and distilled
    stages (teachers first, in this process), or with cross-validation (``eval.scheme``) whole folds in workers;
    ``"auto"`` chooses as ``edgedistill run`` does by default (one per core and stage as memory allows;
    docs/scale.md). The default here, 1, keeps a call in the caller's process. Above 1, call it under
    ``if __name__ == "__main__":`` in a script: the spawned workers import the script again (a script without the guard
    is refused).

    Overrides are keyword arguments with dotted or double-underscore keys:
    ``edgedistill.run("kd", seeds=[0, 1], **{"train.epochs": 20})`` or ``train__epochs=20``.
    """
    from edgedistill.deploy.profile import report_profile
    from edgedistill.experiment.runner import run as _run
    from edgedistill.experiment.workers import check_not_spawning
    from edgedistill.shipped_recipes import recipe_source

    check_not_spawning()  # (a script's call outside its main guard, run again by a worker importing the script)
    if not isinstance(recipe, dict):
        recipe = recipe_source(recipe)  # a name is resolved here, as on the command line
    flat = {k.replace("__", "."): v for k, v in overrides.items()}
    return _run(recipe, flat, out=out, smoke=smoke, progress=progress, deploy_profile=report_profile, jobs=jobs)


def tune(recipe: str | Path | dict[str, Any], *, budget: str | float = "30m", out: Optional[str | Path] = None,
         progress: bool = True, **options: Any) -> dict[str, Any]:
    """Choose the distillation for a recipe within a wall-clock budget, on validation (docs/tune.md). ``options``:
    storage, jobs, max_params, max_latency_us, methods, include_data_free, max_trials, smoke, retrain."""
    from edgedistill.deploy.profile import report_profile, torch_latency
    from edgedistill.experiment.tune import tune as _tune
    from edgedistill.experiment.workers import check_not_spawning
    from edgedistill.shipped_recipes import recipe_source

    check_not_spawning()
    if not isinstance(recipe, dict):
        recipe = recipe_source(recipe)
    return _tune(recipe, budget=budget, out=out, progress=progress, deploy_profile=report_profile, latency=torch_latency,
                 **options)


_API = ("distill", "fit_teacher", "DistilledClassifier", "Distilled", "Fitted")


def __getattr__(name: str) -> Any:
    import importlib

    if name in _API:  # torch loads with the API, on first use, not on ``import edgedistill``
        return getattr(importlib.import_module("edgedistill.api"), name)
    if name in ("losses", "models", "data", "methods", "engine", "experiment", "metrics", "config", "deploy", "api"):
        return importlib.import_module(f"edgedistill.{name}")
    raise AttributeError(f"module 'edgedistill' has no attribute '{name}'")
