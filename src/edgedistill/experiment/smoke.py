"""Smoke mode: the same recipe on tiny synthetic data of the same kind, one short epoch, one seed.

It checks that a recipe's names, knobs, terms and views all fit together in seconds, without the
real data (which may be large, or need the network). ``--smoke`` checks what a real run checks: the recipe it
gets has passed every bound of ``config`` (``load_recipe``) before it is shrunk here; the method's params are
validated before the smoke caps read them, and the networks' parameter budget is checked at the real data's
shape where it is known (a data file) as well as at the smoke data's.
"""
from __future__ import annotations

import copy
from typing import Any

from edgedistill.config import Recipe, load_recipe, recipe_to_dict
from edgedistill.params import signature_params
from edgedistill.registry import DATASETS, LOSSES, METHODS, MODELS, typed_params


def _check_real(recipe: Recipe, shape: tuple[int, ...] | None) -> None:
    """What the real run would refuse and the shrunk one might not: method params of the wrong type or out of
    bounds (the smoke caps below compare them), and networks over the parameter budget at the real input ``shape``
    (channels, *sizes), when it is known without downloading anything."""
    entry = METHODS.entry(recipe.method.name, key="method.name")
    model = typed_params(entry)
    if model is not None:
        model.parse({**entry.obj.default_params(recipe), **recipe.method.params}, "method.params",
                    what=f"method '{recipe.method.name}'")
    if shape is None:
        return
    from edgedistill.models.size import check_budget

    nets = [("student", recipe.student, "x")] + [(k, t, t.view) for k, t in zip(recipe.teacher_keys(), recipe.teacher_specs())]
    for key, cfg, view in nets:
        if cfg.model is None or ":" in cfg.model:
            continue  # a given teacher (load, outputs), or the user's own class: its size is the user's choice
        channels = len(recipe.data.views[view]) if view in recipe.data.views else shape[0]
        check_budget(MODELS.get(cfg.model, key=f"{key}.model"), channels, 1, shape[1:], cfg.kwargs, key, cfg.model)


def _kind_task_shape(recipe: Recipe) -> tuple[str, str, tuple[int, ...] | None, Any]:
    """The data's kind ("1d"/"2d") and task, and for a data file or a generated dataset the (channels, *sizes) of one
    real input, and a data file's windowed ``RawData`` (else None): that data is made, checked and windowed exactly as
    the real run will (so its errors surface under --smoke too). A bundled real dataset is not loaded (None): smoke
    runs stay seconds long."""
    from edgedistill.data.prepare import windowed_raw

    if recipe.data.name is not None:
        entry = DATASETS.entry(recipe.data.name, key="data.name")
        # The real data is replaced, but its parameters must still be right for the real run.
        signature_params(entry.obj).parse(recipe.data.params, "data.params", what=f"dataset {recipe.data.name}")
        meta = entry.meta
        if meta.get("check") is not None:  # the dataset's own bounds (counts, total size), checked without making it
            meta["check"](**recipe.data.params)
        task = recipe.data.params.get("task", meta.get("task", "classification"))
        shape = None
        if entry.obj.__module__ == "edgedistill.data.synthetic":
            # Generated here: a few samples of the real shape (the counts shrunk, every other parameter as given).
            params, classes = dict(recipe.data.params), recipe.data.params.get("n_classes", 4)
            for count, few in (("n_subjects", 2), ("windows_per_subject", 2 * classes), ("n", 4 * classes)):
                if isinstance(params.get(count), int) and isinstance(classes, int):
                    params[count] = min(params[count], few)
            shape = tuple(int(n) for n in windowed_raw(recipe.data.model_copy(update={"params": params})).x.shape[1:])
        return meta.get("kind", "1d"), task, shape, None

    raw = windowed_raw(recipe.data)
    return ("2d" if raw.x.ndim == 4 else "1d"), raw.task, tuple(int(n) for n in raw.x.shape[1:]), raw


def smoke_recipe(recipe: Recipe) -> Recipe:
    kind, task, shape, raw = _kind_task_shape(recipe)
    _check_real(recipe, shape)
    loads = any(t.load is not None for t in recipe.teacher_specs())
    n_outputs = raw.n_outputs if loads and raw is not None else None  # what a saved teacher must output
    if any(t.outputs is not None for t in recipe.teacher_specs()):  # checked against the real data, which smoke replaces
        from edgedistill.experiment.teacher_outputs import check_outputs_files

        check_outputs_files(recipe)
    d: dict[str, Any] = recipe_to_dict(recipe)
    if kind == "2d":
        data = {"name": "synthetic_images", "params": {"n": 64, "n_classes": 3, "size": 12}}
    else:
        data = {
            "name": "synthetic",
            "params": {"task": task, "n_subjects": 5, "windows_per_subject": 10, "n_classes": 3, "length": 48},
        }
    hook = getattr(METHODS.entry(d["method"]["name"], key="method.name").obj, "smoke_data_params", None)
    if hook is not None and kind != "2d":  # a regime that needs the data to have a shape (channel views)
        data["params"].update(hook(d["method"]["params"]))
    registered = set(LOSSES.names())  # (regimes such as topo_kd or camkd name their own losses)
    for term in d["method"].get("terms") or []:  # a loss that needs targets of a shape (curves)
        if term["loss"] not in registered:
            continue
        spec = LOSSES.entry(term["loss"], key="method.terms.loss").meta.get("smoke_data")
        if spec is not None:
            data = copy.deepcopy(spec)
    topology = d["data"].get("topology")
    d["data"] = {**data, "split": {"by": "auto", "val": 0.2, "test": 0.2}, "normalize": d["data"]["normalize"]}
    if topology:  # PI teachers read the "pi" view: exact PIs of the synthetic windows (a PI-Net is for real shapes)
        d["data"]["topology"] = {**topology, "source": "exact", "pinet": None}
    d["train"].update(epochs=1, batch_size=min(d["train"]["batch_size"], 16))
    if d["method"].get("stages"):  # staged training (docs/stages.md): one epoch a stage, every stage still runs
        for stage in d["method"]["stages"]:
            stage["epochs"] = 1
        d["train"]["epochs"] = len(d["method"]["stages"])
    d["seeds"] = d["seeds"][:1]
    d["student"]["checkpoint"] = None  # user weights are for the real data's shapes
    if d.get("teacher"):
        d["teacher"] = _smoke_teacher(d["teacher"], "teacher", shape, n_outputs, d["student"])
    d["teachers"] = [_smoke_teacher(t, f"teachers[{i}]", shape, n_outputs, d["student"])
                     for i, t in enumerate(d.get("teachers", []))]
    for t in ([d["teacher"]] if d.get("teacher") else []) + d["teachers"]:
        t["checkpoint"] = None
        t["train"].update(epochs=1, batch_size=min(t["train"]["batch_size"], 16))
    caps = METHODS.entry(d["method"]["name"], key="method.name").obj.smoke_caps
    for key, cap in caps.items():  # a regime's own pipeline (a GAN in setup) shrinks to seconds, every stage still runs
        d["method"]["params"][key] = min(d["method"]["params"].get(key, cap), cap)
    d["name"] = f"{recipe.name}-smoke"
    return load_recipe(d)


def _smoke_teacher(entry: dict[str, Any], key: str, shape: tuple[int, ...] | None, n_outputs: int | None,
                   student: dict[str, Any]) -> dict[str, Any]:
    """A saved teacher (``load``) is for the real data's shapes: its file is checked now (at the real shape where
    known) and the smoke run gets a stand-in that fits the synthetic data (experiment.saved_teacher.smoke_teacher)."""
    if not entry.get("load"):
        return entry
    from edgedistill.experiment.saved_teacher import smoke_teacher

    # The real shape is the x view's; a teacher reading another view is checked at its own shape by the real run.
    return smoke_teacher(entry, key, shape if entry.get("view", "x") == "x" else None, n_outputs, student)
