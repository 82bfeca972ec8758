"""The quality benchmark's protocol: its sets, teachers, students and budgets, which registered method runs where (and
why not elsewhere), and how each run's recipe is built from the method's shipped recipe. ``benchmarks/quality.py``
runs it; ``matched_channels.py`` and ``tune.py`` build on the same recipes; tests/test_benchmarks.py checks them.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

from edgedistill.yaml_io import safe_load

ROOT = Path(__file__).resolve().parent.parent

# ---- the protocol --------------------------------------------------------------------------------------
CNN = {"model": "cnn1d", "width": 16, "depth": 3, "head": "segments"}
FCN_TEACHER = {"model": "fcn", "train": {"epochs": 60, "batch_size": 16, "lr": 3e-3}}
STUDENT_TRAIN = {"epochs": 100, "batch_size": 16, "lr": 3e-3}
PROTOCOL: dict[str, dict[str, Any]] = {
    # dataset: split, teacher (+ its budget), student, the student budget, the large online peer (DML, BD-KD)
    "basicmotions": {"split": {"val": 0.25}, "teacher": FCN_TEACHER, "student": CNN, "train": STUDENT_TRAIN,
                     "peer": {"model": "fcn", "width": 0.5}},
    "japanesevowels": {"split": {"val": 0.25}, "teacher": FCN_TEACHER, "student": CNN, "train": STUDENT_TRAIN,
                       "peer": {"model": "fcn", "width": 0.5}},
    "pickupgesture": {"split": {"val": 0.25}, "teacher": FCN_TEACHER, "student": CNN, "train": STUDENT_TRAIN,
                      "peer": {"model": "fcn", "width": 0.5}},
    "gunpoint": {"split": {"val": 0.25}, "teacher": FCN_TEACHER, "student": CNN, "train": STUDENT_TRAIN,
                 "peer": {"model": "fcn", "width": 0.5}},
    "osuleaf": {"split": {"val": 0.25}, "teacher": FCN_TEACHER, "student": CNN, "train": STUDENT_TRAIN,
                "peer": {"model": "fcn", "width": 0.5}},
    "digits": {"split": {"val": 0.15, "test": 0.2},
               "teacher": {"model": "resnet8x4", "train": {"epochs": 15, "batch_size": 64}},
               "student": {"model": "cnn2d", "width": 8, "depth": 2}, "train": {"epochs": 60, "batch_size": 64},
               "peer": {"model": "cnn2d", "width": 32, "depth": 3}},
    "tecator": {"split": {"val": 0.2}, "teacher": {"model": "resnet1d", "train": {"epochs": 100, "batch_size": 16, "lr": 1e-3}},
                "student": CNN, "train": STUDENT_TRAIN, "peer": {"model": "fcn", "width": 0.5}},
}
SEEDS = [0, 1, 2, 3, 4]
# Longest first (measured per-set minutes of the last full run), so that the two workers finish together.
COST_ORDER = ["osuleaf", "gunpoint", "basicmotions", "digits", "japanesevowels", "pickupgesture", "tecator"]
# Student widths (as multiples of the protocol's) for the accuracy-vs-size plot: student alone and plain KD.
SIZES = [0.25, 0.5, 1.0, 2.0]
# --quick: every dataset and method, 2 seeds, budgets divided by QUICK_DIV, two student sizes.
QUICK = {"seeds": [0, 1], "div": 5, "sizes": [0.5, 1.0]}

# method label -> the shipped recipe whose method (and teachers) section it uses.
METHODS = {
    "kd": "quickstart", "dkd": "dkd", "dist": "dist", "fitnet": "fitnet", "rkd": "rkd",
    "multi_teacher": "multi_teacher", "camkd": "camkd", "roskd": "roskd",
    "takd": "takd", "ta_ensemble": "ta_ensemble", "ceskd": "ceskd",
    "dml": "dml", "bdkd": "bdkd", "born_again": "born_again", "tfkd": "tfkd", "patch_swap": "patch_swap",
    "pskd": "pskd", "skkd": "skkd", "tasked": "tasked", "amal": "amal", "topo_kd": "topo_kd",
    "single_source": "single_source", "cudfkd": "cudfkd", "dfad": "dfad", "cgan_kd": "cgan_kd",
    # issue 23's baselines (losses of the offline regime, each with its shipped recipe)
    "nst": "nst", "cc": "cc", "ickd": "ickd", "mlkd": "mlkd", "logit_std": "logit_std", "dist_plus": "dist_plus",
    "fsp": "fsp", "kdsvd": "kdsvd", "vid": "vid", "ofd": "ofd", "reviewkd": "reviewkd",
    # staged (recipe() rescales each stage's epochs to the set's budget)
    "ft": "ft", "ab": "ab", "fitnet_staged": "fitnet_staged",
    # issue 24: the seed's modality-level Gram relation (its views are BasicMotions' accelerometer and gyroscope)
    "modality_gram": "gram_modality",
}
# Registered methods that are not a distillation regime to benchmark, with the reason (tests check that every
# registered method is either in METHODS, through its shipped recipe, or here).
NOT_BENCHMARKED = {"supervised": "the student alone: every row's baseline, not a regime"}
# On a regression set, plain KD is the regression recipe's (MSE to labels + MSE to the teacher's outputs).
REGRESSION_VARIANT = {"kd": "regression_kd", "cgan_kd": "cgan_kd_regression"}
REGRESSION_SETS = {"tecator", "covid3month"}
CROSS_VIEW = {"pskd", "skkd"}
NEEDS_SUBJECTS = {"tasked"}
IMAGE_SETS = {"digits"}
# The student sees less than the training set by design: data-free regimes see only generated samples, and
# single-source sees crops of one training series. The table marks them; the reading keeps them apart.
DATA_RESTRICTED = {"cudfkd": "data-free", "dfad": "data-free", "single_source": "one training series"}
# Regimes that fit something on the validation split (AMAL its loss weights, TA-ensemble its ensemble weights):
# their validation score is optimistic, so they are not eligible as "best on validation" (marked in the table).
FITS_ON_VALIDATION = {"amal", "ta_ensemble"}
# Regimes whose own pipeline (a generator or GAN trained per seed) costs several times a whole KD run run on
# fewer sets, so that the benchmark stays within 90 minutes on 2 cores. The sets are those of their shipped
# recipes (where their pages measured them), so the costs quoted here come from those pages.
COSTLY = {
    "cudfkd": ({"basicmotions", "gunpoint"}, "a generator game per step: 130-210 CPU s per seed on BasicMotions "
               "(docs/methods/cudfkd.md; its former preset: the official one costs ~1.8x, "
               "benchmarks/results/seed_fidelity_b.md), several times the other regimes"),
    "dfad": ({"basicmotions", "gunpoint"}, "a generator game per step: 90-110 CPU s per seed on BasicMotions "
             "(docs/methods/dfad.md)"),
    "cgan_kd": ({"gunpoint", "tecator"}, "a cGAN and a density-ratio net trained per seed before the student: "
                "1-8 CPU min per seed (docs/methods/cgan_kd.md)"),
}


def skip_reason(method: str, has_groups: bool, dataset: Optional[str] = None) -> Optional[str]:
    """The static part of "applies"; the rest is the toolkit's own pre-flight check."""
    if method in CROSS_VIEW:
        return ("cross-view: needs a student that reads fewer channels than its teacher; the protocol's student "
                "reads every channel (one student for every method)")
    if method in NEEDS_SUBJECTS and not has_groups:
        return "needs subject ids (data.group); this dataset has none"
    if method in ("fsp", "kdsvd"):
        return ("compares matrices channel by channel: needs a teacher with the student's channel counts at each tap "
                "(its recipe uses the FCN at width 1/8); the protocol's teacher has 128. "
                "benchmarks/matched_channels.py measures it with that teacher")
    if method == "modality_gram" and dataset != "basicmotions":
        return ("modalities are channel groups the recipe names (BasicMotions: accelerometer 0-2, gyroscope 3-5); "
                "this set declares none")
    if method == "topo_kd" and dataset in IMAGE_SETS:
        return "persistence images of 1-D windows (data.topology); this dataset is images"
    if method in COSTLY and dataset is not None and dataset not in COSTLY[method][0]:
        sets, why = COSTLY[method]
        return f"cost: {why}; run on {', '.join(sorted(sets))} only"
    return None


def _shipped(name: str) -> dict[str, Any]:
    with (ROOT / "recipes" / f"{name}.yaml").open() as fh:
        return safe_load(fh)


def _scaled(student: dict[str, Any], factor: float) -> dict[str, Any]:
    return {**student, "width": max(1, round(student["width"] * factor))}


def _regression_task_term(method: dict[str, Any]) -> None:
    """On a regression set, a recipe's task term (CE on the labels) becomes the regression recipe's (MSE on the
    targets) and a plain KD term beside a feature loss becomes regression KD's (MSE to the teacher's outputs, same
    weight; a temperature has no meaning there), as in REGRESSION_VARIANT's ``kd``. The feature terms stay as shipped,
    so a feature loss runs as it would on a classifier; a loss on class distributions (DKD, DIST, MLKD, ...) is still
    refused by the pre-flight check with the toolkit's own reason."""
    for terms in [method.get("terms", [])] + [s.get("terms", []) for s in method.get("stages", [])]:
        for i, term in enumerate(terms):
            if term.get("loss") == "ce":
                terms[i] = {**term, "loss": "mse"}
            elif term.get("loss") == "kd":
                terms[i] = {k: v for k, v in term.items() if k != "temperature"} | {"loss": "mse_to_teacher"}


def recipe(dataset: str, method: str, seeds: list[int], div: int = 1, width: float = 1.0) -> dict[str, Any]:
    """The run for one (dataset, method): the shipped recipe's method with the protocol's data, models and budget."""
    p = PROTOCOL[dataset]
    shipped_name = METHODS[method]
    if dataset in REGRESSION_SETS:
        shipped_name = REGRESSION_VARIANT.get(method, shipped_name)
    shipped = _shipped(shipped_name)
    budget = lambda t: {**t, "epochs": max(2, t["epochs"] // div)}  # noqa: E731
    student = _scaled(p["student"], width)
    base_student = p["student"]
    teacher = {**p["teacher"], "train": budget(p["teacher"]["train"])}
    r: dict[str, Any] = {
        "name": f"quality-{dataset}-{method}",
        "data": {"name": dataset, "split": p["split"]},
        "student": student,
        "method": copy.deepcopy(shipped["method"]),
        "train": budget(p["train"]),
        "seeds": seeds,
        "engine": {"threads": 1, "progress": False},
    }
    if "teacher" in shipped:
        r["teacher"] = teacher
    if "topology" in shipped["data"]:  # topo_kd: the shipped PI settings, one PI process (one thread per worker)
        r["data"]["topology"] = {**shipped["data"]["topology"], "workers": 1}
    if "teachers" in shipped:
        r["teachers"] = []
        for t in shipped["teachers"]:
            if t.get("view") == "pi":  # the PI teacher: the shipped 2-D model, the protocol teacher's budget
                r["teachers"].append({**{k: v for k, v in t.items() if k != "train"}, "train": teacher["train"]})
            elif t.get("distill_from"):  # an assistant: the protocol's student, as much wider as the shipped one was
                ratio = t["width"] / _shipped("quickstart")["student"]["width"]
                r["teachers"].append({**_scaled(base_student, ratio), "name": t["name"], "distill_from": t["distill_from"],
                                      "terms": t["terms"], "train": budget(p["train"])})
            else:  # another copy of the protocol's teacher (its seed, its subset, its view)
                keep = {k: t[k] for k in ("name", "seed", "train_subset") if k in t}
                if "view" in t:  # topo_kd's raw-signal teacher: the whole input, like the protocol's student
                    keep["view"] = "x"
                r["teachers"].append({**teacher, **keep})
    params = r["method"].get("params", {})
    for key in ("large",):  # BD-KD's co-trained network
        if key in params:
            params[key] = dict(p["peer"])
    if "peers" in params:  # DML's peers
        params["peers"] = [dict(p["peer"]) for _ in params["peers"]]
    if dataset in REGRESSION_SETS and shipped_name == METHODS[method]:
        _regression_task_term(r["method"])
    stages = r["method"].get("stages")
    if stages:  # each earlier stage keeps its share of the shipped schedule; the last takes the rest
        total, shipped_total = r["train"]["epochs"], shipped["train"]["epochs"]
        for stage in stages[:-1]:
            stage["epochs"] = max(1, round(stage["epochs"] * total / shipped_total))
        assert sum(s["epochs"] for s in stages[:-1]) < total, f"{method}: no epochs left for its last stage"
    return r
