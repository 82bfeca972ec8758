"""Holdout against cross-validation: does one fixed split give the same KD verdict as k-fold / LOSO, and what does
leave-one-subject-out cost once its teachers are cached?

Part 1, two bundled real sets (no subject ids, so stratified 5-fold): the shipped quickstart recipe's teacher,
student and KD settings on BasicMotions and on ArrowHead, each run on the official holdout split and with
``eval.scheme: stratified_kfold`` (official test pooled, 5 folds), same seeds. Part 2, a synthetic 10-subject
wearable set, from an empty cache: holdout split by subject, LOSO (every fold trains its teacher and student alone),
then the same LOSO with another KD temperature, where only the distilled students train: the verdicts, and what
LOSO costs with its teachers cached. Writes benchmarks/results/cross_validation.md (and .json). Run:
`make bench-cv` or `python benchmarks/cross_validation.py` (about 40 minutes on 2 idle cores; finished part-1 runs
are resumed, part 2 always starts from an empty cache).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import edgedistill
from edgedistill.io import write_json, write_text
from edgedistill.shipped_recipes import recipe_source
from edgedistill.yaml_io import read_yaml

KD = [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]
SYNTHETIC = {"name": "synthetic", "params": {"n_subjects": 10, "windows_per_subject": 60, "channels": 6, "length": 64,
                                             "n_classes": 4}}


def quickstart_on(dataset: str) -> dict[str, Any]:
    r = read_yaml(recipe_source("quickstart"))
    r["name"], r["data"], r["report"] = f"cv-{dataset}", {"name": dataset, "split": {"val": 0.25}}, {"profile": False}
    return r


def synthetic(temperature: float = 4) -> dict[str, Any]:
    return {"name": "cv-synthetic", "data": {**SYNTHETIC, "split": {"by": "subject"}},
            "teacher": {"model": "resnet1d", "train": {"epochs": 15, "batch_size": 32}},
            "student": {"model": "cnn1d", "width": 8, "depth": 2},
            "method": {"name": "offline", "terms": [KD[0], {**KD[1], "temperature": temperature}]},
            "train": {"epochs": 15, "batch_size": 32}, "seeds": [0, 1]}


def verdict_of(summary: dict[str, Any]) -> dict[str, Any]:
    rows = {r["role"]: r for r in summary["rows"]}
    m, a = rows["method"], rows["student alone"]
    if summary.get("folds"):
        unit = [(x["acc"], y["acc"]) for x, y in zip(m["per_fold_test"], a["per_fold_test"])]
    else:
        unit = [(x["acc"], y["acc"]) for x, y in zip(m["per_seed_test"], a["per_seed_test"])]
    diffs = [x - y for x, y in unit]
    return {"teacher": rows["teacher"]["metrics"]["acc"], "alone": a["metrics"]["acc"], "method": m["metrics"]["acc"],
            "diffs": diffs, "wins": sum(d > 0 for d in diffs), "verdict": summary.get("verdict", "")}


def fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n']})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/cross_validation"))
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "cross_validation")
    ap.add_argument("--jobs", type=int, default=1, help="folds in parallel (1 keeps timings comparable)")
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out: dict[str, Any] = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                       "load_at_start": load}, "sets": {}}
    lines = ["# Holdout against cross-validation", "", f"Made by `python benchmarks/cross_validation.py` "
             f"({os.cpu_count()} cores, load {load:.2f} at start). Test accuracy of the best-on-validation checkpoint; "
             "holdout: mean ± std over seeds, paired by seed; cross-validation: over folds x seeds, paired by fold "
             "(each fold's mean over seeds).", ""]
    def table(name: str, res: dict[str, Any]) -> None:
        out["sets"][name] = res
        lines.extend([f"## {name}", "", "| evaluation | teacher | student alone | KD | paired differences | wins |",
                      "|---|---|---|---|---|---|"])
        for arm, r in res.items():
            lines.append(f"| {arm} | {fmt(r['teacher'])} | {fmt(r['alone'])} | {fmt(r['method'])} | "
                         f"{', '.join(f'{d:+.3f}' for d in r['diffs'])} | {r['wins']}/{len(r['diffs'])} |")
        lines.extend([""] + [f"- {arm}: {r['verdict'].replace('**', '')}" for arm, r in res.items()] + [""])

    for dataset in ("basicmotions", "arrowhead"):
        res = {}
        for arm, ev in (("holdout", None), ("stratified_kfold", {"scheme": "stratified_kfold", "folds": 5})):
            recipe = quickstart_on(dataset)
            if ev is not None:
                recipe["eval"] = ev
            t0 = time.time()
            s = edgedistill.run(recipe, out=args.runs / f"{recipe['name']}-{arm}", progress=False, jobs=args.jobs if ev else 1)
            res[arm] = {**verdict_of(s), "seconds": time.time() - t0}
        table(f"{dataset} (quickstart's teacher, student and KD settings)", res)

    # The cost, from an empty cache: one holdout run, LOSO cold (every fold trains its teacher and student alone),
    # then LOSO with another KD temperature (teachers and students alone cached: only the KD students train).
    cost_dir = args.runs / "loso-cost"
    shutil.rmtree(cost_dir, ignore_errors=True)
    times, res = {}, {}
    for label, temperature, ev in (("holdout, cold", 4, None), ("LOSO, cold", 4, {"scheme": "loso"}),
                                   ("LOSO, another temperature (teachers and students alone cached)", 2, {"scheme": "loso"})):
        recipe = {**synthetic(temperature), "cache_dir": str((cost_dir / "cache").resolve())}
        if ev is not None:
            recipe["eval"] = ev
        t0 = time.time()
        s = edgedistill.run(recipe, out=cost_dir / f"{'loso' if ev else 'holdout'}-T{temperature}", progress=False)
        times[label] = time.time() - t0
        res[f"{'LOSO' if ev else 'holdout'}, T={temperature}"] = {**verdict_of(s), "seconds": times[label]}
    table("synthetic, 10 subjects (holdout split by subject vs LOSO)", res)
    out["cost_seconds"] = times
    hold, cold, warm = times.values()
    lines += ["## The cost of LOSO (synthetic, 10 subjects so 10 folds, 2 seeds, one process, empty cache)", "",
              *(f"- {k}: {v:.0f} s" for k, v in times.items()),
              f"- LOSO cold / holdout cold: {cold / hold:.1f}x; LOSO with cached teachers / LOSO cold: {warm / cold:.2f}", ""]
    write_json(args.results.with_suffix(".json"), out)
    write_text(args.results.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
