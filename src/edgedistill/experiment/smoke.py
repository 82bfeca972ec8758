"""Smoke mode: the same recipe on tiny synthetic data of the same kind, one short epoch, one seed.

It checks that a recipe's names, knobs, terms and views all fit together in seconds, without the
real data (which may be large, or need the network).
"""
from __future__ import annotations

from typing import Any

from edgedistill.config import Recipe, load_recipe, recipe_to_dict
from edgedistill.params import signature_params
from edgedistill.registry import DATASETS, METHODS


def _kind_and_task(recipe: Recipe) -> tuple[str, str]:
    if recipe.data.name is not None:
        entry = DATASETS.entry(recipe.data.name, key="data.name")
        # The real data is replaced, but its parameters must still be right for the real run.
        signature_params(entry.obj).parse(recipe.data.params, "data.params", what=f"dataset {recipe.data.name}")
        meta = entry.meta
        task = recipe.data.params.get("task", meta.get("task", "classification"))
        return meta.get("kind", "1d"), task
    from edgedistill.data.prepare import load_raw

    raw, _ = load_raw(recipe.data)
    return ("2d" if raw.x.ndim == 4 else "1d"), raw.task


def smoke_recipe(recipe: Recipe) -> Recipe:
    kind, task = _kind_and_task(recipe)
    d: dict[str, Any] = recipe_to_dict(recipe)
    if kind == "2d":
        data = {"name": "synthetic_images", "params": {"n": 64, "n_classes": 3, "size": 12}}
    else:
        data = {
            "name": "synthetic",
            "params": {"task": task, "n_subjects": 5, "windows_per_subject": 10, "n_classes": 3, "length": 48},
        }
    topology = d["data"].get("topology")
    d["data"] = {**data, "split": {"by": "auto", "val": 0.2, "test": 0.2}, "normalize": d["data"]["normalize"]}
    if topology:  # PI teachers read the "pi" view: exact PIs of the synthetic windows (a PI-Net is for real shapes)
        d["data"]["topology"] = {**topology, "source": "exact", "pinet": None}
    d["train"].update(epochs=1, batch_size=min(d["train"]["batch_size"], 16))
    d["seeds"] = d["seeds"][:1]
    d["student"]["checkpoint"] = None  # user weights are for the real data's shapes
    for t in ([d["teacher"]] if d.get("teacher") else []) + d.get("teachers", []):
        t["checkpoint"] = None
        t["train"].update(epochs=1, batch_size=min(t["train"]["batch_size"], 16))
    caps = METHODS.entry(d["method"]["name"], key="method.name").obj.smoke_caps
    for key, cap in caps.items():  # a regime's own pipeline (a GAN in setup) shrinks to seconds, every stage still runs
        d["method"]["params"][key] = min(d["method"]["params"].get(key, cap), cap)
    d["name"] = f"{recipe.name}-smoke"
    return load_recipe(d)
