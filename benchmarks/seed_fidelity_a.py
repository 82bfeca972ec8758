"""Three seed methods as their papers describe them, against the form they had before (issue 24, items 1, 2, 9).

* Topological KD (TDA-KD / TPKD, arXiv 2407.05315): orthogonality imposed on the student's feature correlation maps
  (``correlation: orthogonal``, new default) against the former teacher-matching term (``correlation: match``); the
  annealing phase (``anneal`` term, then the KD terms by per-term schedules, no initialisation); and the "init only"
  control (the student started from its scratch-trained copy, then CE alone) beside every row. Two wearable sets:
  BasicMotions (smartwatch accelerometer, 3 channels) and PickupGestureWiimoteZ (hand-held accelerometer, 1 channel).
* BD-KD (Amara et al., arXiv 2212.12965): the balance on the student's loss only (``balance: student``, new default)
  against the rule mirrored on the large network (``both``, the former default) and plain online KD (``none``);
  accuracy and ECE of the student (and of the large network) on GunPoint and PickupGestureWiimoteZ.
* AMC-Loss (arXiv 2004.13336) and the Orthogonal-Sphere regulariser (arXiv 2009.10762) as recipe terms beside CE,
  ramped in by the per-term schedule (``ramp: sigmoid``), once, on GunPoint.

Every arm runs through ``edgedistill.run`` with the student alone beside it (same seeds: seed k of both arms starts
from the same initialisation and batch order, so the per-seed differences are paired). The recipes are the shipped
ones with fewer epochs (``EPOCHS``; the schedules scaled alike) so the whole benchmark fits in about 20 minutes of
one core. Test accuracy and ECE of the best-on-validation epoch and of the last epoch, mean ± sample std over seeds.

Writes benchmarks/results/seed_fidelity_a.md (and .json). Run: ``python benchmarks/seed_fidelity_a.py``
(``--only bdkd`` for one item; runs go under runs/seed_fidelity_a and finished ones are reused through the caches).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import torch

import edgedistill
import fidelity_budget as budget
from edgedistill.io import read_json, write_json, write_text
from edgedistill.yaml_io import read_yaml

SEEDS = budget.SEEDS
ENGINE = {"progress": False, "threads": 1}
EPOCHS = budget.epochs(40, 100)  # the shipped recipes train 100; cut to fit the CPU budget unless --protocol
TRAIN = {"epochs": EPOCHS, "batch_size": 16, "lr": 3e-3}
TEACHER_TRAIN = {"epochs": budget.epochs(40, 60), "batch_size": 16, "lr": 3e-3}  # recipes: 60
ANNEAL = EPOCHS // 4  # topo_kd_anneal.yaml: 25 of 100 epochs
RECIPES = Path(__file__).resolve().parents[1] / "src" / "edgedistill" / "recipes"


def shipped(name: str) -> dict[str, Any]:
    recipe = read_yaml(RECIPES / f"{name}.yaml")
    for teacher in recipe.get("teachers", []):
        teacher["train"] = TEACHER_TRAIN
    return recipe


def on(dataset: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe on another bundled set (PickupGesture: its one accelerometer channel)."""
    if dataset == "pickupgesture":
        recipe["data"] = {**recipe["data"], "name": "pickupgesture", "views": {"x": [0]}}
    elif dataset == "gunpoint":
        recipe["data"] = {**recipe["data"], "name": "gunpoint"}
    return recipe


def topo(dataset: str, terms: list[dict[str, Any]] | None = None, **params: Any) -> dict[str, Any]:
    recipe = on(dataset, shipped("topo_kd"))
    recipe["method"]["params"].update(params)
    if terms is not None:
        recipe["method"]["terms"] = terms
    return recipe


def topo_anneal(dataset: str, init: str = "none") -> dict[str, Any]:
    recipe = on(dataset, shipped("topo_kd_anneal"))
    recipe["method"]["params"].update(anneal_epochs=ANNEAL, init=init)
    for term in recipe["method"]["terms"]:
        if "start_epoch" in term:
            term["start_epoch"] = ANNEAL
    return recipe


def bdkd(dataset: str, balance: str) -> dict[str, Any]:
    recipe = on(dataset, shipped("bdkd"))
    recipe["method"]["params"]["balance"] = balance
    recipe["student"] = {"model": "cnn1d", "width": 8, "depth": 3}
    return recipe


def aid(name: str) -> dict[str, Any]:
    recipe = shipped(name)
    recipe["method"]["terms"][1]["warmup_epochs"] = EPOCHS // 4  # a quarter of training, as the recipes' 25 of 100
    return recipe


# item -> [(dataset, arm label, recipe)]
ARMS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "topo_kd": [(d, label, recipe) for d in ("basicmotions", "pickupgesture") for label, recipe in (
        ("init only (student_init, then CE)", topo(d, [{"loss": "ce", "weight": 1.0}])),
        ("correlation: orthogonal (new default)", topo(d)),
        ("correlation: match (former)", topo(d, correlation="match")),
        ("no orth term", topo(d, [{"loss": "ce", "weight": 0.01}, {"loss": "kd", "weight": 0.99}])),
        (f"annealing ({ANNEAL} epochs), init: none", topo_anneal(d)))],
    # Added after the first pass (annealing without the initialisation fell below the student alone): both together.
    "topo_anneal_init": [(d, f"annealing ({ANNEAL} epochs) after init: scratch", topo_anneal(d, "scratch"))
                         for d in ("basicmotions", "pickupgesture")],
    "bdkd": [(d, label, bdkd(d, balance)) for d in ("gunpoint", "pickupgesture") for label, balance in (
        ("balance: student (new default)", "student"), ("balance: both (former)", "both"),
        ("balance: none (online KD)", "none"))],
    "amc": [("gunpoint", "CE + AMC (w 10, sigmoid ramp)", aid("amc")),
            ("gunpoint", "CE + OS (variant A, 0.1, sigmoid ramp)", aid("orthogonal_sphere"))],
}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def metrics(summary: dict[str, Any]) -> dict[str, float]:
    return {f"{m}_{w}": summary["test"][w][m] for w in ("best", "last") for m in ("acc", "ece")}


def run_arm(item: str, dataset: str, label: str, recipe: dict[str, Any], runs: Path) -> dict[str, Any]:
    slug = "".join(c if c.isalnum() else "-" for c in label).strip("-")
    out = runs / f"{item}-{dataset}-{slug}"
    full = {**recipe, "name": f"{item}-{dataset}", "train": TRAIN, "seeds": SEEDS, "engine": ENGINE,
            "report": {"plots": False}}
    t0, c0 = time.time(), cpu_seconds()
    edgedistill.run(full, out=out, progress=False)
    stage = recipe["method"]["name"]
    per: dict[str, dict[str, list[float]]] = {}
    for role, folder in (("alone", "student_alone"), ("method", stage)):
        rows = [read_json(out / folder / f"seed{s}" / "summary.json") for s in SEEDS]
        per[role] = {k: [metrics(r)[k] for r in rows] for k in metrics(rows[0])}
        per[role]["best_epoch"] = [r["best_epoch"] for r in rows]
        for name, other in rows[0].get("others", {}).items():  # BD-KD's large network, at the student's epoch
            per[name] = {k: [metrics(r["others"][name])[k] for r in rows] for k in metrics(other)}
    return {"item": item, "dataset": dataset, "arm": label, "epochs": EPOCHS, "per_seed": per,
            "wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu_seconds() - c0, 1), "run": str(out)}


def ms(v: list[float]) -> str:
    return f"{mean(v):.3f} ± {stdev(v) if len(v) > 1 else 0.0:.3f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| set | arm | test acc (best) | test acc (last) | ECE (best) | best epochs | paired Δ acc vs alone "
             "(best) | won | CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    seen: set[str] = set()
    for r in rows:
        alone, arm = r["per_seed"]["alone"], r["per_seed"]["method"]
        if r["dataset"] not in seen:  # the student alone once per set (the same cached run under every arm)
            seen.add(r["dataset"])
            lines.append(f"| {r['dataset']} | student alone | {ms(alone['acc_best'])} | {ms(alone['acc_last'])} | "
                         f"{ms(alone['ece_best'])} | {', '.join(map(str, alone['best_epoch']))} | | | |")
        d = [m - a for m, a in zip(arm["acc_best"], alone["acc_best"])]
        lines.append(f"| {r['dataset']} | {r['arm']} | {ms(arm['acc_best'])} | {ms(arm['acc_last'])} | "
                     f"{ms(arm['ece_best'])} | {', '.join(map(str, arm['best_epoch']))} | "
                     f"{', '.join(f'{x:+.3f}' for x in d)} (mean {mean(d):+.3f}) | {sum(x > 0 for x in d)}/{len(d)} | "
                     f"{r['cpu_s']:.0f} |")
        for name, other in r["per_seed"].items():
            if name not in ("alone", "method"):
                lines.append(f"| {r['dataset']} | ↳ {name}, same run | {ms(other['acc_best'])} | "
                             f"{ms(other['acc_last'])} | {ms(other['ece_best'])} | | | | |")
    return lines


TITLES = {"topo_kd": "Topological KD: FCN (raw) + 2-D CNN (PI) teachers, cnn1d w8 student (recipes/topo_kd.yaml)",
          "topo_anneal_init": "Topological KD, annealing phase after the scratch initialisation (same teachers)",
          "bdkd": "BD-KD online: FCN-0.5 large network trained with a cnn1d w8 student (recipes/bdkd.yaml)",
          "amc": "AMC-Loss and the OS regulariser beside CE, no teacher, cnn1d w8 (recipes/amc.yaml, "
                 "orthogonal_sphere.yaml)"}


def report(rows: list[dict[str, Any]], passes: list[dict[str, Any]]) -> str:
    lines = ["# Seed fidelity, helper A: topological KD, BD-KD, AMC/OS as described vs their former forms", ""]
    for meta in passes:
        lines.append(f"Made by `{meta['command']}` on {meta['date']} ({meta['cpus']} CPUs, torch {meta['torch']}, one "
                     f"thread, load average {meta['load_before']:.2f} → {meta['load_after']:.2f}; "
                     f"{meta['cpu_minutes']} CPU minutes, {meta['wall_minutes']} wall minutes).")
    lines += ["", f"Seeds {SEEDS}; every student trains {EPOCHS} epochs (the shipped recipes: 100), teachers "
              f"{TEACHER_TRAIN['epochs']} (recipes: 60), batch 16, lr 3e-3, validation 25 % of the training split. "
              f"Annealing: {ANNEAL} epochs (recipe: 25 of 100); AMC/OS ramp: {EPOCHS // 4} epochs (recipes: 25). "
              "*best* = test metric of the best-on-validation epoch, *last* = of the last epoch; ECE: 15 bins; "
              "*paired Δ* = arm − student alone on the same seed (same initialisation and batches). BD-KD rows "
              "marked ↳ are the large network of the same run, at the student's selected epoch.", ""]
    for item, title in TITLES.items():
        part = [r for r in rows if r["item"] == item]
        if part:
            lines += [f"## {title}", "", *table(part), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget.add_arguments(ap, "seed_fidelity_a", list(ARMS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before, t0, c0 = os.getloadavg()[0], time.time(), cpu_seconds()
    rows = []
    for item in args.only:
        for dataset, label, recipe in ARMS[item]:
            print(f"{item} {dataset} {label} ...", flush=True)
            rows.append(run_arm(item, dataset, label, recipe, Path(args.runs)))
            print(f"  done: {rows[-1]['cpu_s']} CPU s", flush=True)
    meta = {"command": budget.command("seed_fidelity_a", args.only, list(ARMS)),
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load_before": load_before, "load_after": os.getloadavg()[0],
            "cpu_minutes": round((cpu_seconds() - c0) / 60, 1), "wall_minutes": round((time.time() - t0) / 60, 1)}
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    passes: list[dict[str, Any]] = []
    if results.with_suffix(".json").exists():  # a pass over some items keeps the other items' rows
        old = read_json(results.with_suffix(".json"))
        passes = old.get("passes", [])
        rows = [r for r in old["rows"] if r["item"] not in args.only] + rows
    passes.append(meta)
    rows.sort(key=lambda r: list(ARMS).index(r["item"]))
    write_json(results.with_suffix(".json"), {"passes": passes, "rows": rows})
    write_text(results.with_suffix(".md"), report(rows, passes))
    print(report(rows, passes))


if __name__ == "__main__":
    main()
