"""Two seed methods in the form their papers describe, measured beside the student alone (issue 24, items 6 and 7).

* Modality-level Gram relation KD (Liu, arXiv 2112.11447): on BasicMotions, the accelerometer (channels 0-2) and
  the gyroscope (3-5) are the modalities; CE + KD + the 2 x 2 modality Gram term (method ``modality_gram``,
  recipes/gram_modality.yaml) against CE + KD alone (method ``offline``), and the former channel-Gram term
  (``gram``, recipes/gram.yaml's form) on top of CE + KD; the same on a synthetic two-sensor set split by subject
  (BasicMotions leaves the student alone no headroom).
* Time-aware KD for GRF regression (Jeon et al., arXiv 2506.10265): on the synthetic insole -> GRF set
  (recipes/grf_time_aware.yaml), the ``time_aware_kd`` term (MSE to labels and teacher, 0.5 each, plus the temporal
  terms) against ``mse`` + ``mse_to_teacher`` (0.5 each, recipes/regression_kd.yaml's form). No bundled regression
  set has sequence targets (Tecator and Covid3Month have one number per series), so none can be measured here; the
  GaitRec recipe needs the archive placed by hand.

Every arm runs through ``edgedistill.run`` with the student alone beside it (seed k of both starts from the same
initialisation, so per-seed differences are paired); the teacher is trained once (its own seed) and cached. Test
metric of the best-on-validation epoch and of the last epoch, mean ± sample std over the seeds (0-2; 0-4 with --protocol).

Writes benchmarks/results/seed_fidelity_c.md (and .json). Run: ``python benchmarks/seed_fidelity_c.py``
(``--only modality_gram`` for one item; runs go under runs/seed_fidelity_c and finished ones are reused).
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
import edgedistill.data.grf_synthetic  # noqa: F401  (registers synthetic_grf)
from edgedistill.io import read_json, write_json, write_text

SEEDS = budget.SEEDS
ENGINE = {"progress": False, "threads": 1}
KD_TERMS = [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]
BASIC = {"name": "basicmotions", "split": {"val": 0.25}, "normalize": "per_channel"}
GRF = {"name": "synthetic_grf", "params": {"n_subjects": 10, "steps_per_subject": 30},
       "split": {"by": "subject", "val": 0.2, "test": 0.2}, "normalize": "per_channel", "normalize_target": False}
# recipes/gram_modality.yaml trains 60 epochs (teacher and student), grf_time_aware.yaml 40: cut unless --protocol.
EPOCHS = {"modality_gram": budget.epochs(40, 60), "time_aware": budget.epochs(30, 40)}
TEACHER_EPOCHS = {"basicmotions": budget.epochs(40, 60), "synthetic": budget.epochs(30, 60)}


# Two simulated 3-axis sensors (channels 0-2, 3-5), each worn with its own per-subject rotation, split by subject:
# BasicMotions leaves the student alone no headroom (test accuracy 1.0), this set does.
TWO_SENSORS = {"name": "synthetic", "params": {"channels": 6, "n_subjects": 8, "windows_per_subject": 40,
                                               "n_classes": 6, "length": 128, "noise": 0.5},
               "split": {"by": "subject", "val": 0.2, "test": 0.25}, "normalize": "per_channel"}


def modality(method: str, terms: list[dict[str, Any]], dataset: str = "basicmotions") -> dict[str, Any]:
    """recipes/gram_modality.yaml with EPOCHS epochs; ``method`` offline (no Gram term) or modality_gram. On the
    synthetic two-sensor set: batch 32, a cnn1d w8 student, teacher TEACHER_EPOCHS["synthetic"] epochs."""
    params = {"views": [[0, 1, 2], [3, 4, 5]]} if method == "modality_gram" else {}
    basic = dataset == "basicmotions"
    batch = 8 if basic else 32
    return {"name": "gram-modality", "data": BASIC if basic else TWO_SENSORS,
            "teacher": {"model": "fcn", "train": {"epochs": TEACHER_EPOCHS["basicmotions" if basic else "synthetic"], "batch_size": batch, "lr": 3e-3}},
            "student": {"model": "cnn1d", "width": 16 if basic else 8, "depth": 3},
            "method": {"name": method, "params": params, "terms": KD_TERMS + terms},
            "train": {"epochs": EPOCHS["modality_gram"], "batch_size": batch, "lr": 3e-3}}


def grf(terms: list[dict[str, Any]], zscored: bool = False) -> dict[str, Any]:
    """recipes/grf_time_aware.yaml with EPOCHS epochs and a cnn1d teacher (width 64, depth 4; the recipe's resnet1d
    takes ~10x longer per epoch on this machine), targets in body weights (normalize_target: false), or ``zscored``
    per target point (the toolkit's default for regression)."""
    return {"name": "grf-time-aware", "data": {**GRF, "normalize_target": zscored},
            "teacher": {"model": "cnn1d", "width": 64, "depth": 4, "head": "segments",
                        "train": {"epochs": EPOCHS["time_aware"], "batch_size": 32, "lr": 3e-3}},
            "student": {"model": "cnn1d", "width": 16, "depth": 3, "head": "segments"},
            "method": {"name": "offline", "terms": terms},
            "train": {"epochs": EPOCHS["time_aware"], "batch_size": 32, "lr": 3e-3}}


TIME_AWARE = {"loss": "time_aware_kd", "weight": 1.0, "channels": 2, "task_weight": 0.5, "teacher_weight": 0.5}
# item -> [(dataset, arm label, recipe)]
ARMS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "modality_gram": [
        (d, label, modality(method, terms, d)) for d in ("basicmotions", "synthetic_two_sensors")
        for label, method, terms in (
            ("CE + KD", "offline", []),
            ("CE + KD + modality Gram (cosine, w 1)", "modality_gram",
             [{"loss": "modality_gram", "weight": 1.0, "normalize": "cosine"}]),
            ("CE + KD + modality Gram (none, w 1)", "modality_gram",
             [{"loss": "modality_gram", "weight": 1.0, "normalize": "none"}]),
            ("CE + KD + channel Gram (former gram, w 1)", "offline",
             [{"loss": "gram", "weight": 1.0, "normalize": True}]))
    ],
    "time_aware": [
        ("synthetic_grf", "mse + mse_to_teacher (0.5 each)",
         grf([{"loss": "mse", "weight": 0.5}, {"loss": "mse_to_teacher", "weight": 0.5}])),
        ("synthetic_grf", "time_aware_kd (temporal terms w 1)", grf([TIME_AWARE])),
        ("synthetic_grf", "time_aware_kd (temporal terms w 0.1)", grf([{
            **TIME_AWARE, "similarity_weight": 0.1, "difference_weight": 0.1, "autocorr_weight": 0.1}])),
        ("synthetic_grf_zscored", "mse + mse_to_teacher (0.5 each)",
         grf([{"loss": "mse", "weight": 0.5}, {"loss": "mse_to_teacher", "weight": 0.5}], zscored=True)),
        ("synthetic_grf_zscored", "time_aware_kd (temporal terms w 0.1)", grf([{
            **TIME_AWARE, "similarity_weight": 0.1, "difference_weight": 0.1, "autocorr_weight": 0.1}], zscored=True)),
    ],
}


def cpu_seconds() -> float:
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


def run_arm(item: str, dataset: str, label: str, recipe: dict[str, Any], runs: Path) -> dict[str, Any]:
    slug = "".join(c if c.isalnum() else "-" for c in label).strip("-")
    out = runs / f"{item}-{dataset}-{slug}"
    reused = (out / "summary.json").is_file()  # a finished run is read back, not trained again
    load = os.getloadavg()[0]
    t0, c0 = time.time(), cpu_seconds()
    edgedistill.run({**recipe, "seeds": SEEDS, "engine": ENGINE}, out=out, progress=False)
    regression = item == "time_aware"
    metric = "rmse" if regression else "acc"
    method = recipe["method"]["name"]
    per: dict[str, dict[str, list[float]]] = {}
    for role, stage in (("alone", "student_alone"), ("method", method)):
        rows = [read_json(out / stage / f"seed{s}" / "summary.json") for s in SEEDS]
        per[role] = {w: [r["test"][w][metric] for r in rows] for w in ("best", "last")}
        per[role]["best_epoch"] = [r["best_epoch"] for r in rows]
        if regression:
            per[role]["r2_best"] = [r["test"]["best"]["r2"] for r in rows]
    teacher = read_json(out / "summary.json")
    trow = next((r for r in teacher.get("rows", []) if r.get("role") == "teacher"), None)
    return {"item": item, "dataset": dataset, "arm": label, "metric": metric, "lower_is_better": regression,
            "epochs": EPOCHS[item], "per_seed": per,
            "teacher": {k: v["mean"] for k, v in (trow or {}).get("metrics", {}).items()},
            "wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu_seconds() - c0, 1), "run": str(out),
            "reused": reused, "load": load}


def ms(v: list[float]) -> str:
    return f"{mean(v):.4f} ± {stdev(v) if len(v) > 1 else 0.0:.4f}"


def paired(r: dict[str, Any], which: str) -> list[float]:
    sign = -1.0 if r["lower_is_better"] else 1.0  # + = the arm is better than the student alone
    return [sign * (m - a) for m, a in zip(r["per_seed"]["method"][which], r["per_seed"]["alone"][which])]


def cell(r: dict[str, Any], role: str, which: str = "best") -> str:
    text = ms(r["per_seed"][role][which])
    if r["lower_is_better"] and which == "best":  # regression: R² beside RMSE (a mean over the 2 x 101 target points)
        text += f" (R² {mean(r['per_seed'][role]['r2_best']):.2f})"
    return text


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| set | arm | metric | teacher | student alone (best) | arm (best) | arm (last) | best epochs | paired Δ vs "
             "alone (best; + = better) | won | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = paired(r, "best")
        teacher = f"{r['teacher'].get(r['metric'], float('nan')):.4f}"
        lines.append(f"| {r['dataset']} | {r['arm']} | test {r['metric']} | {teacher} | {cell(r, 'alone')} | "
                     f"{cell(r, 'method')} | {cell(r, 'method', 'last')} | "
                     f"{', '.join(map(str, r['per_seed']['method']['best_epoch']))} | "
                     f"{', '.join(f'{x:+.4f}' for x in d)} (mean {mean(d):+.4f}) | {sum(x > 0 for x in d)}/{len(d)} | "
                     f"{r['wall_s']:.0f}{' (earlier run)' if r.get('reused') else ''} |")
    return lines


def report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Seed fidelity, helper C: modality-level Gram KD and time-aware GRF KD", "",
             f"Made by `{meta['command']}` on {meta['date']} ({meta['cpus']} CPUs, torch {meta['torch']}, one thread, "
             f"1-minute load average {meta['load_min']:.1f} to {meta['load_max']:.1f} when the runs started: a 2-core "
             f"machine shared with other work; {meta['wall_minutes']} wall minutes of runs). Seeds {SEEDS}. "
             "*best* = test metric of the best-on-validation "
             "epoch, *last* = of the last epoch; *paired Δ* = arm − student alone on the same seed, sign turned so "
             "that + is better (RMSE in body weights: lower is better). The teacher column is its test metric.", ""]
    for item, title in (("modality_gram", f"Modality-level Gram (BasicMotions: FCN teacher {TEACHER_EPOCHS['basicmotions']} epochs, cnn1d w16 "
                                          f"student, batch 8; synthetic two sensors: 8 subjects x 40 windows of "
                                          f"6 x 128, 6 classes, split by subject, FCN teacher {TEACHER_EPOCHS['synthetic']} epochs, cnn1d w8 "
                                          f"student, batch 32; students {EPOCHS['modality_gram']} epochs)"),
                        ("time_aware", f"Time-aware KD (synthetic insole -> GRF, 10 subjects x 30 steps, split by "
                                       f"subject; cnn1d w64 teacher, cnn1d w16 student, {EPOCHS['time_aware']} "
                                       "epochs, batch 32)")):
        part = [r for r in rows if r["item"] == item]
        if part:
            lines += [f"## {title}", "", *table(part), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget.add_arguments(ap, "seed_fidelity_c", list(ARMS))
    ap.add_argument("--previous", nargs="*", default=[], help="results .json files of earlier invocations: a reused "
                    "run keeps the CPU and wall seconds recorded there")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for item in args.only:
        for dataset, label, recipe in ARMS[item]:
            print(f"{item} {dataset} {label} ...", flush=True)
            rows.append(run_arm(item, dataset, label, recipe, Path(args.runs)))
            print(f"  done: {rows[-1]['cpu_s']} CPU s", flush=True)
    results = Path(args.results)
    results_json = results.with_suffix(".json")
    earlier = {r["run"]: r for f in args.previous for r in read_json(Path(f))["rows"] if not r.get("reused")}
    for r in rows:
        if r["reused"] and r["run"] in earlier:
            r.update({k: earlier[r["run"]][k] for k in ("cpu_s", "wall_s", "load") if k in earlier[r["run"]]})
            r["reused"] = False
    if results_json.is_file():  # --only: keep the other items' rows from the last run
        rows = [r for r in read_json(results_json)["rows"] if r["item"] not in args.only] + rows
    loads = [r["load"] for r in rows if "load" in r]
    meta = {"command": budget.command("seed_fidelity_c", args.only, list(ARMS)),
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load_before": load_before, "load_after": os.getloadavg()[0],
            "wall_minutes": round(sum(r["wall_s"] for r in rows) / 60, 1),
            "load_min": min(loads, default=load_before), "load_max": max(loads, default=load_before)}
    write_json(results_json, {"meta": meta, "rows": rows})
    write_text(results.with_suffix(".md"), report(rows, meta))
    print(f"wrote {results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
