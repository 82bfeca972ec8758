"""Three seed methods as their papers describe them, against the form they had before (issue 24, items 3-5).

* CES-KD (Amara et al., arXiv 2209.07606): sample difficulty from cross-fitted held-out predictions (new default)
  against the largest expert's own training-set predictions (``difficulty: in_sample``, the former form); the
  experts are the sequential chain teacher -> TA1 -> TA2 of recipes/ceskd_chain.yaml.
* CuDFKD (Li et al., arXiv 2208.13648): the official scripts' adversarial and self-paced schedules and generator
  size (``preset: official``, new default) against the former ones (``preset: small``).
* cGAN-KD (Ding et al., arXiv 2104.03164): a separately trained feature network for the density ratio and a
  warm-started student (new default) against the teacher's own features and a cold student (the former form),
  and the "no rejection" variant (``density_ratio: false``) on top of the new default.

Every arm runs through ``edgedistill.run`` with the student alone beside it (same seeds: seed k of both arms starts
from the same initialisation, so the per-seed differences are paired). The recipes are the shipped ones with
fewer epochs and smaller pipelines so that the whole benchmark fits in about 25 minutes of one core (the sizes are
in ``ARMS`` and printed in the results file). Test metric of the best-on-validation epoch and of the last epoch,
mean ± sample std over the seeds.

Writes benchmarks/results/seed_fidelity_b.md (and .json). Run: ``python benchmarks/seed_fidelity_b.py``
(``--only cudfkd`` for one item; runs go under runs/seed_fidelity_b and finished ones are reused).
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
import yaml

import edgedistill
import fidelity_budget as budget
from edgedistill.io import read_json, write_json, write_text

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

SEEDS = budget.SEEDS
ENGINE = {"progress": False, "threads": 1}
EPOCHS = budget.epochs(40, 100)  # the shipped recipes train 100; cut to fit the CPU budget unless --protocol
# CuDFKD's official generator (3.5 M parameters) runs 6 generator and 30 student steps a loop step: cut further.
ITEM_EPOCHS = {"cudfkd": budget.epochs(20, 100)}
TRAIN = {"epochs": EPOCHS, "batch_size": 16, "lr": 3e-3}
TEACHER_EPOCHS = budget.epochs(40, 60)  # the recipes: 60 (FCN), 100 (Tecator's resnet1d)
FCN = {"model": "fcn", "train": {"epochs": TEACHER_EPOCHS, "batch_size": 16, "lr": 3e-3}}
KD_TERMS = [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]


def data(name: str) -> dict[str, Any]:
    if name == "tecator":
        return {"name": "tecator", "split": {"val": 0.2}}
    return {"name": name, "split": {"val": 0.25}, "normalize": "per_channel"}


def ceskd(dataset: str, difficulty: str) -> dict[str, Any]:
    """recipes/ceskd_chain.yaml's shape: FCN -> cnn1d w32 -> cnn1d w16 (each distilled from the one before), a
    cnn1d w8 student taught per sample by one of the three."""
    ta = lambda name, width, source: {"name": name, "model": "cnn1d", "width": width, "depth": 3,  # noqa: E731
                                      "distill_from": source, "train": TRAIN, "terms": KD_TERMS}
    return {"name": f"ceskd-{dataset}", "data": data(dataset),
            "teachers": [{"name": "teacher", **FCN}, ta("ta1", 32, "teacher"), ta("ta2", 16, "ta1")],
            "student": {"model": "cnn1d", "width": 8, "depth": 3},
            "method": {"name": "ceskd", "params": {"schedule": "gradual", "ramp": 0.5, "difficulty": difficulty,
                                                   "folds": 3}, "terms": KD_TERMS}}


def cudfkd(dataset: str, preset: str) -> dict[str, Any]:
    """recipes/cudfkd.yaml with EPOCHS epochs."""
    return {"name": f"cudfkd-{dataset}", "data": data(dataset), "teacher": FCN,
            "student": {"model": "cnn1d", "width": 8, "depth": 3},
            "method": {"name": "cudfkd", "params": {"preset": preset, "batch_size": 32, "rounds": 3, "kd_steps": 5}}}


CGAN_SMALL = {"n_fake": 300, "fake_fraction": 0.5, "gan_steps": 400, "dre_steps": 200, "burn_in": 100}


def cgan(dataset: str, **params: Any) -> dict[str, Any]:
    """recipes/cgan_kd.yaml (GunPoint) and cgan_kd_regression.yaml (Tecator) with a smaller pipeline."""
    if dataset == "tecator":
        teacher = {"model": "resnet1d", "train": {"epochs": budget.epochs(40, 100), "batch_size": 16, "lr": 1e-3}}
        student = {"model": "cnn1d", "width": 16, "depth": 3, "head": "segments"}
        base = {**CGAN_SMALL, "rho": 0.7, "label_jitter": 0.05}
    else:
        teacher, student, base = FCN, {"model": "cnn1d", "width": 8, "depth": 3}, {**CGAN_SMALL, "rho": 0.9}
    return {"name": f"cgan-kd-{dataset}", "data": data(dataset), "teacher": teacher, "student": student,
            "method": {"name": "cgan_kd", "params": {**base, **params}}}


def control(dataset: str) -> dict[str, Any]:
    """cgan(dataset)'s data, teacher and student, trained on the labels only for 2 x EPOCHS epochs."""
    loss = "mse" if dataset == "tecator" else "ce"
    return {**cgan(dataset), "method": {"name": "offline", "terms": [{"loss": loss, "weight": 1.0}]},
            "train": {**TRAIN, "epochs": 2 * EPOCHS}}


def ceskd_chain(difficulty: str) -> dict[str, Any]:
    """recipes/ceskd_chain.yaml as shipped (OSULeaf, full epochs), with the difficulty set."""
    recipe = yaml.safe_load((RECIPES / "ceskd_chain.yaml").read_text())
    recipe["method"]["params"]["difficulty"] = difficulty
    return recipe


# item -> [(dataset, arm label, recipe, is the new default)]
ARMS: dict[str, list[tuple[str, str, dict[str, Any], bool]]] = {
    "ceskd": [(d, label, ceskd(d, diff), new) for d in ("gunpoint", "basicmotions")
              for label, diff, new in (("cross-fitted difficulty (new default)", "cross_fitted", True),
                                       ("in-sample difficulty (former)", "in_sample", False))],
    "ceskd_chain": [("osuleaf", label, ceskd_chain(diff), new)
                    for label, diff, new in (("recipes/ceskd_chain.yaml, cross-fitted (new default)", "cross_fitted", True),
                                             ("recipes/ceskd_chain.yaml, in-sample (former)", "in_sample", False))],
    "cudfkd": [(d, label, cudfkd(d, preset), new) for d in ("basicmotions", "gunpoint")
               for label, preset, new in (("preset official (new default)", "official", True),
                                          ("preset small (former)", "small", False))],
    "cgan_kd": [(d, label, cgan(d, **params), new) for d in ("gunpoint", "tecator")
                for label, params, new in (
                    ("separate features + warm start (new default)", {}, True),
                    ("teacher features, cold student (former)", {"feature_net": "teacher", "warm_start": False}, False),
                    # which of the two changes carries the gain: the warm start alone, on the former features
                    ("teacher features + warm start", {"feature_net": "teacher"}, False),
                    ("new default, density_ratio: false", {"density_ratio": False}, False))]
               # The control for the warm start's extra epochs: the student on the labels alone for as many epochs
               # as a warm-started student trains in all (its "student alone" column is that run).
               + [(d, "control: CE only, twice the epochs (the warm start's total)", control(d), False)
                  for d in ("gunpoint", "tecator")],
}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_arm(item: str, dataset: str, label: str, recipe: dict[str, Any], runs: Path) -> dict[str, Any]:
    slug = "".join(c if c.isalnum() else "-" for c in label).strip("-")
    out = runs / f"{item}-{dataset}-{slug}"
    train = {**TRAIN, "epochs": ITEM_EPOCHS.get(item, EPOCHS)}
    full = {"train": train, **recipe, "seeds": SEEDS, "engine": ENGINE}  # a shipped recipe keeps its own train
    t0, c0 = time.time(), cpu_seconds()
    edgedistill.run(full, out=out, progress=False)
    regression = dataset == "tecator"
    metric = "rmse" if regression else "acc"
    method = recipe["method"]["name"]
    per: dict[str, dict[str, list[float]]] = {}
    extras = []
    for role, stage in (("alone", "student_alone"), ("method", method)):
        rows = [read_json(out / stage / f"seed{s}" / "summary.json") for s in SEEDS]
        per[role] = {w: [r["test"][w][metric] for r in rows] for w in ("best", "last")}
        per[role]["best_epoch"] = [r["best_epoch"] for r in rows]
        if role == "method":
            extras = [r.get("method", {}) for r in rows]
    return {"item": item, "dataset": dataset, "arm": label, "metric": metric, "lower_is_better": regression,
            "epochs": full["train"]["epochs"], "per_seed": per, "describe": [pick(e) for e in extras],
            "wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu_seconds() - c0, 1), "run": str(out)}


def pick(describe: dict[str, Any]) -> dict[str, Any]:
    """The per-seed facts of each method worth printing (difficulty accuracy, pipeline sizes, generator size)."""
    keys = ("cross_fit", "final_assignment", "generator_params", "preset", "pipeline_n_fake",
            "pipeline_acceptance_rate", "pipeline_seconds", "pipeline_label_fits_seconds", "pipeline_dre_loss")
    return {k: describe[k] for k in keys if k in describe}


def ms(v: list[float]) -> str:
    return f"{mean(v):.3f} ± {stdev(v) if len(v) > 1 else 0.0:.3f}"


def paired(r: dict[str, Any], which: str) -> list[float]:
    sign = -1.0 if r["lower_is_better"] else 1.0  # + = the arm is better than the student alone
    return [sign * (m - a) for m, a in zip(r["per_seed"]["method"][which], r["per_seed"]["alone"][which])]


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| set | arm | epochs | metric | student alone (best) | arm (best) | arm (last) | best epochs | paired Δ vs "
             "alone (best; + = better) | won | CPU s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    done_alone: set[str] = set()
    for r in rows:
        d = paired(r, "best")
        alone = ms(r["per_seed"]["alone"]["best"])
        done_alone.add(r["dataset"])
        lines.append(f"| {r['dataset']} | {r['arm']} | {r['epochs']} | test {r['metric']} | {alone} | {ms(r['per_seed']['method']['best'])} | "
                     f"{ms(r['per_seed']['method']['last'])} | {', '.join(map(str, r['per_seed']['method']['best_epoch']))} | "
                     f"{', '.join(f'{x:+.3f}' for x in d)} (mean {mean(d):+.3f}) | {sum(x > 0 for x in d)}/{len(d)} | "
                     f"{r['cpu_s']:.0f} |")
    return lines


def report(rows: list[dict[str, Any]], passes: list[dict[str, Any]]) -> str:
    lines = ["# Seed fidelity, helper B: CES-KD, CuDFKD, cGAN-KD as described vs their former forms", ""]
    for meta in passes:
        lines.append(f"- `{meta['command']}` on {meta['date']} ({meta['cpus']} CPUs, torch {meta['torch']}, one "
                     f"thread, load average {meta['load_before']:.2f} → {meta['load_after']:.2f}; "
                     f"{meta['cpu_minutes']} CPU minutes, {meta['wall_minutes']} wall minutes; a run finished by an "
                     "earlier pass is reused, and its CPU s then counts only the reading).")
    lines += ["", f"Seeds {SEEDS}. Unless the arm is a shipped recipe (`recipes/...`, its own epochs), every student "
              f"and assistant trains {EPOCHS} epochs ({ITEM_EPOCHS} for those items; the shipped recipes: 100), teachers {TEACHER_EPOCHS} (recipes: 60/100), AdamW "
              "3e-3, batch 16, validation 25 % of the training split (Tecator 20 %). *best* = test metric of the "
              "best-on-validation epoch, *last* = of the last epoch; *paired Δ* = arm − student alone on the same seed "
              "(same initialisation and batches), sign turned so that + is better (RMSE: lower is better). cGAN-KD "
              f"pipeline shrunk to {CGAN_SMALL} (recipes: n_fake 1000, gan_steps 1500, dre_steps 500, burn_in 300).", ""]
    for item, title in (("ceskd", "CES-KD: experts FCN -> cnn1d w32 -> cnn1d w16 (sequential chain), student cnn1d w8"),
                        ("ceskd_chain", "CES-KD, the shipped chain recipe: FCN -> cnn1d w48 -> cnn1d w32, student cnn1d w16"),
                        ("cudfkd", "CuDFKD: FCN teacher, cnn1d w8 student, data-free"),
                        ("cgan_kd", "cGAN-KD: FCN (GunPoint) / ResNet1D (Tecator) teacher")):
        part = [r for r in rows if r["item"] == item]
        if not part:
            continue
        lines += [f"## {title}", "", *table(part), "", "Per-seed facts from each run's summary (`method`):", ""]
        for r in part:
            lines.append(f"- {r['dataset']}, {r['arm']}: {r['describe']}")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget.add_arguments(ap, "seed_fidelity_b", list(ARMS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before, t0, c0 = os.getloadavg()[0], time.time(), cpu_seconds()
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    passes: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    if results.with_suffix(".json").exists():  # a pass over some items keeps the other items' rows
        old = read_json(results.with_suffix(".json"))
        passes = old.get("passes", [old["meta"]] if "meta" in old else [])
        kept = [r for r in old["rows"] if r["item"] not in args.only]
    command = budget.command("seed_fidelity_b", args.only, list(ARMS))
    rows: list[dict[str, Any]] = []
    for item in args.only:
        for dataset, label, recipe, _ in ARMS[item]:
            print(f"{item} {dataset} {label} ...", flush=True)
            rows.append(run_arm(item, dataset, label, recipe, Path(args.runs)))
            print(f"  done: {rows[-1]['cpu_s']} CPU s", flush=True)
            # Written after every arm: an interrupted pass leaves the finished arms' results.
            meta = {"command": command, "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version(), "load_before": load_before,
                    "load_after": os.getloadavg()[0], "cpu_minutes": round((cpu_seconds() - c0) / 60, 1),
                    "wall_minutes": round((time.time() - t0) / 60, 1)}
            done = sorted(kept + rows, key=lambda r: list(ARMS).index(r["item"]))
            write_json(results.with_suffix(".json"), {"passes": passes + [meta], "rows": done})
            write_text(results.with_suffix(".md"), report(done, passes + [meta]))
    print(results.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
