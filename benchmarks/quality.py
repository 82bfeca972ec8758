"""Distillation quality on the bundled real data: teacher, student alone and every regime that applies.

The protocol, per dataset: one teacher (its best epoch on validation, trained once and reused by every method
and seed through the model cache), one student architecture, one training budget for every student, the
checkpoint selected on validation and reported on test, mean ± std over the seeds. A regime's own settings
(loss weights, temperatures, assistants, peers) come from its shipped recipe in recipes/; only the data,
the student, the teacher and the budget are replaced by the protocol (quality_protocol.py). Every run goes through
``edgedistill.run``: there is no training loop here.

A method *applies* to a dataset unless (1) a static rule (quality_protocol.skip_reason) says why not (cross-view regimes need the
student to read fewer channels than the teacher, but the protocol's student reads all of them; TASKED needs
subject ids; topological KD needs 1-D windows; the regimes that train a generator or a GAN per seed run on
their recipes' two sets only, for cost), or (2) the toolkit's own pre-flight check (``edgedistill.run`` builds
data, networks and method and runs one forward pass before anything trains) rejects the recipe, e.g. a
loss on class distributions on a regression set (there a recipe's CE task term becomes MSE and its KD term MSE
to the teacher, ``_regression_task_term``, so feature losses run). Both kinds of skip are printed and listed in
the results with the reason. Every registered method is run or named in NOT_BENCHMARKED (a test checks it). Data-free and
single-source students do not see the training set by design: the table marks them and the reading keeps them
apart. Regimes that fit weights on the validation split are marked and cannot be "best on validation".

Run: `python benchmarks/quality.py` (full: 5 seeds, 2 worker processes of one thread each, from an empty model
cache under --runs; 67.6 min wall and 128 CPU min on 2 idle cores on 2026-12-01, inside the 90-minute budget),
or `--quick` (2 seeds, a fifth of the epochs, two student sizes; written to results/quality_quick.md; 9.2 min on
2 idle cores). Finished runs are resumed
from --runs; `--render results/quality.json` rewrites the report from saved numbers without training.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, Optional

import torch

import edgedistill
from edgedistill.errors import UserInputError
from edgedistill.io import read_json, write_json, write_text
from quality_protocol import (COST_ORDER, DATA_RESTRICTED, FITS_ON_VALIDATION, METHODS, PROTOCOL, QUICK, SEEDS, SIZES,
                              recipe, skip_reason)

RESULTS = Path(__file__).resolve().parent / "results"

# ---- running -------------------------------------------------------------------------------------------
def _row(summary: dict[str, Any], role: str) -> dict[str, Any]:
    return next(r for r in summary["rows"] if r["role"] == role)


def run_dataset(dataset: str, methods: list[str], seeds: list[int], div: int, sizes: list[float], runs: Path,
                cache: Path) -> dict[str, Any]:
    """Every method and size on one dataset; returns the rows it found and the skips with reasons."""
    from edgedistill.config import DataConfig, load_recipe
    from edgedistill.data import prepare_data
    from edgedistill.experiment.runner import plan

    info = prepare_data(DataConfig(name=dataset, split=PROTOCOL[dataset]["split"])).info
    out: dict[str, Any] = {"dataset": dataset, "task": info.task, "methods": {}, "skipped": {}, "sizes": [], "minutes": 0}
    t0 = time.time()
    jobs = [(m, 1.0) for m in methods] + [(m, w) for w in sizes if w != 1.0 for m in ("kd",) if info.task == "classification"]
    for method, width in jobs:
        reason = skip_reason(method, info.has_groups, dataset)
        if reason:
            out["skipped"][method] = reason
            print(f"[{dataset}] skip {method}: {reason}", flush=True)
            continue
        r = recipe(dataset, method, seeds, div, width)
        r["cache_dir"] = str(cache)
        tag = method if width == 1.0 else f"{method}-w{width}"
        try:
            plan(load_recipe(r))  # the pre-flight check edgedistill.run starts with: builds everything, trains nothing
        except UserInputError as exc:
            out["skipped"][method] = f"rejected by the pre-flight check: {exc}"
            print(f"[{dataset}] skip {method}: {exc}", flush=True)
            continue
        t1 = time.time()
        try:
            s = edgedistill.run(r, out=runs / dataset / tag, progress=False)
        except Exception as exc:  # noqa: BLE001 - one failed regime must not hide the others' results
            out["skipped"][method] = f"failed: {type(exc).__name__}: {exc}"
            print(f"[{dataset}] FAILED {method}: {exc}", flush=True)
            continue
        entry = {"teacher": _row(s, "teacher") if any(x["role"] == "teacher" for x in s["rows"]) else None,
                 "alone": _row(s, "student alone"), "method": _row(s, "method"), "minutes": round((time.time() - t1) / 60, 2)}
        if width == 1.0:
            out["methods"][method] = entry
        if method == "kd":
            out["sizes"].append({"width": width, **entry})
        key = "acc" if info.task == "classification" else "rmse"
        print(f"[{dataset}] {tag}: {entry['method']['metrics'][key]['mean']:.3f} (alone {entry['alone']['metrics'][key]['mean']:.3f}) "
              f"{entry['minutes']} min", flush=True)
    out["minutes"] = round((time.time() - t0) / 60, 1)
    return out


# ---- reporting -----------------------------------------------------------------------------------------
def _ms(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def gap(method: float, alone: float, teacher: float, noise: float) -> Optional[float]:
    """(method - alone) / (teacher - alone); None when the gap is not larger than the student's seed std."""
    g = teacher - alone
    return (method - alone) / g if g > max(noise, 1e-9) else None


def won(m: dict[str, Any], a: dict[str, Any], key: str, better: int) -> str:
    d = [better * (x[key] - y[key]) for x, y in zip(m["per_seed_test"], a["per_seed_test"])]
    return f"{sum(v > 0 for v in d)}/{len(d)}"


def dataset_table(d: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines for one dataset and its facts (best method on validation, its gap closed)."""
    cls = d["task"] == "classification"
    key, better = ("acc", 1) if cls else ("rmse", -1)
    ms = d["methods"]
    if not ms:
        return [f"## {d['dataset']}", "", "No method ran.", ""], {}
    ref = ms.get("kd") or next(iter(ms.values()))
    teacher, alone = ref["teacher"], ref["alone"]
    t, a, noise = teacher["metrics"][key]["mean"], alone["metrics"][key]["mean"], alone["metrics"][key]["std"]
    # "Best" is chosen on validation, never on test, among regimes whose validation score is not fitted.
    best = max((m for m in ms if m not in FITS_ON_VALIDATION) or ms,
               key=lambda m: better * ms[m]["method"]["val_metrics"][key]["mean"])
    cols = ("| method | params | accuracy | macro-F1 | ECE | Δ vs alone | gap closed | won |" if cls
            else "| method | params | RMSE | MAE | R² | Δ RMSE vs alone (lower is better) | gap closed | won |")
    lines = [f"## {d['dataset']}", "", f"{d['task']}; teacher {teacher['model']} ({teacher['params']:,} params); "
             f"{d['minutes']} min.", "", cols, "|---|---|---|---|---|---|---|---|"]
    m2 = ("acc", "f1", "ece") if cls else ("rmse", "mae", "r2")
    lines.append(f"| teacher (one model) | {teacher['params']:,} | " + " | ".join(f"{teacher['metrics'][k]['mean']:.3f}" for k in m2) + " | | | |")
    lines.append(f"| student alone | {alone['params']:,} | " + " | ".join(_ms(alone["metrics"][k]) for k in m2) + " | | | |")
    facts = {"dataset": d["dataset"], "task": d["task"], "best": best, "teacher": t, "alone": a, "noise": noise, "gaps": {},
             "delta": {}}
    for name, e in ms.items():
        m = e["method"]
        g = gap(m["metrics"][key]["mean"], a, t, noise) if cls else gap(-m["metrics"][key]["mean"], -a, -t, noise)
        delta = m["metrics"][key]["mean"] - a
        facts["gaps"][name], facts["delta"][name] = g, delta
        cells = " | ".join(_ms(m["metrics"][k]) for k in m2)
        label = f"**{name}**" if name == best else name
        note = DATA_RESTRICTED.get(name) or ("fits on validation" if name in FITS_ON_VALIDATION else "")
        label += f" ({note})" if note else ""
        lines.append(f"| {label} | {m['params']:,} | {cells} | {delta:+.3f} | {'' if g is None else f'{g:+.2f}'} | "
                     f"{won(m, alone, key, better)} |")
    if d["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in d["skipped"].items()) + "."]
    lines.append("")
    return lines, facts


def plot_sizes(results: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [d for d in results if d["task"] == "classification" and d["sizes"]]
    if not sets:
        return False
    cols = min(3, len(sets))
    rows = -(-len(sets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(sets):]:
        ax.axis("off")
    for ax, d in zip(axes.flat, sets):
        pts = sorted(d["sizes"], key=lambda e: e["method"]["params"])
        x = [e["method"]["params"] for e in pts]
        for role, label in (("alone", "student alone"), ("method", "KD")):
            y = [e[role]["metrics"]["acc"]["mean"] for e in pts]
            s = [e[role]["metrics"]["acc"]["std"] for e in pts]
            ax.errorbar(x, y, yerr=s, marker="o", capsize=2, label=label)
        ax.axhline(pts[0]["teacher"]["metrics"]["acc"]["mean"], color="grey", ls="--", label="teacher")
        ax.set_xscale("log")
        ax.set_title(d["dataset"], fontsize=9)
        ax.set_xlabel("student parameters", fontsize=8)
    for row in axes:
        row[0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)  # atomic, like the toolkit's writers
    return True


def reading(facts: list[dict[str, Any]], methods: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Plain sentences computed from the numbers (no judgement the table does not support)."""
    cls = [f for f in facts if f and f["task"] == "classification"]
    closed = [f["gaps"][f["best"]] for f in cls if f["gaps"].get(f["best"]) is not None]
    mean_best = sum(closed) / len(closed) if closed else None
    lines = []
    no_gap = [f["dataset"] for f in cls if f["teacher"] - f["alone"] <= max(f["noise"], 1e-9)]
    if no_gap:
        lines.append(f"- No teacher-student gap beyond the student's seed std on: {', '.join(no_gap)} (gap closed left "
                     "blank there; a teacher no better than the student alone has nothing to give).")
    gapped = [f for f in cls if f["dataset"] not in no_gap]
    if gapped:
        lines.append("- Teacher-student gaps (accuracy; the student's seed std in brackets): " + ", ".join(
            f"{f['dataset']} {f['teacher'] - f['alone']:.3f} ({f['noise']:.3f})" for f in gapped) + ". Where a gap is "
            "barely above the std, gap-closed values are large and noisy.")
    ahead = {m: [f["delta"][m] for f in cls if m in f["delta"]] for m in methods}
    ahead = {m: v for m, v in ahead.items() if v}
    fmt = lambda group: ", ".join(f"{m} {sum(v) / len(v):+.3f} ({sum(x > 0 for x in v)}/{len(v)})"  # noqa: E731
                                  for m, v in sorted(group.items(), key=lambda kv: -sum(kv[1]) / len(kv[1])))
    full = {m: v for m, v in ahead.items() if m not in DATA_RESTRICTED}
    restricted = {m: v for m, v in ahead.items() if m in DATA_RESTRICTED}
    if full:
        lines.append("- Mean accuracy change vs the student alone over the classification sets (sets ahead / sets run): "
                     + fmt(full) + ".")
    if restricted:
        lines.append("- The same for the regimes whose student does not see the training set by design (data-free: "
                     "generated samples only; single-source: crops of one series), against a student alone that sees "
                     "all of it: " + fmt(restricted) + ".")
    per_method = {}
    for m in methods:
        gs = [f["gaps"][m] for f in cls if f["gaps"].get(m) is not None]
        if gs:
            per_method[m] = (sum(gs) / len(gs), len(gs))
    ranked = sorted(per_method.items(), key=lambda kv: -kv[1][0])
    if ranked:
        lines.append("- Mean gap closed per method over the sets with a gap: " +
                     ", ".join(f"{m} {g:+.2f} ({n})" for m, (g, n) in ranked if m not in DATA_RESTRICTED) + "; "
                     "regimes whose student does not see the training set: " +
                     (", ".join(f"{m} {g:+.2f} ({n})" for m, (g, n) in ranked if m in DATA_RESTRICTED) or "none ran") + ".")
        hurt = [m for m, (g, _) in ranked if g < 0]
        if hurt:
            lines.append(f"- Negative mean gap closed (worse than the student alone where there was a gap): {', '.join(hurt)}.")
    lines.append("- Best on validation per set (" + ", ".join(sorted(FITS_ON_VALIDATION)) + " not eligible: they fit "
                 "weights on the validation split): " + ", ".join(f"{f['dataset']} → {f['best']}" for f in facts if f) + ".")
    # The same target over the sets whose gap is at least twice the student's seed std: a gap-closed value on a
    # gap near the noise (e.g. +1.3 for a +0.011 gain on a 0.009 gap) can carry the mean by itself.
    clear = [f["gaps"][f["best"]] for f in cls if f["gaps"].get(f["best"]) is not None
             and f["teacher"] - f["alone"] >= 2 * f["noise"]]
    return lines, {"mean_best_gap_closed": mean_best, "sets_counted": len(closed),
                   "mean_best_gap_closed_clear": sum(clear) / len(clear) if clear else None, "sets_clear": len(clear)}


def write_report(results: list[dict[str, Any]], meta: dict[str, Any], quick: bool, methods: list[str]) -> Path:
    partial = meta["datasets"] != list(PROTOCOL) or meta.get("methods", list(METHODS)) != list(METHODS)
    name = meta.get("name") or (("quality_quick" if quick else "quality") + ("_partial" if partial else ""))
    # (only a full run is quality.md; --name keeps one partial run from overwriting another)
    lines = [f"# Distillation quality on the bundled real sets{' — QUICK MODE (short budgets, 2 seeds; not the benchmark)' if quick else ''}", "",
             *(["Quick mode checks that every run of the protocol works end to end. With a fifth of the budget and two "
                "seeds its numbers are not evidence about the methods (teachers are undertrained).", ""] if quick else []),
             f"Made by `{meta['command']}` on {meta['date']}: {meta['cpus']} CPUs, {meta['jobs']} worker process(es) × 1 thread, "
             f"torch {meta['torch']}, edgedistill {meta['edgedistill']}, Python {meta['python']}; load average "
             f"{meta['load_before'][0]:.2f} → {meta['load_after'][0]:.2f} (this benchmark alone adds about {meta['jobs']}; "
             f"more means other jobs shared the 2 cores and the wall time is inflated); "
             f"{meta['minutes']} min wall" + (f", {meta['cpu_minutes']} CPU min" if "cpu_minutes" in meta else "") + ".", "",
             f"Protocol: per dataset one teacher (best epoch on validation, trained once, the same checkpoint for every "
             f"method and seed), one student, one budget; test metrics of the best-on-validation epoch, mean ± sample std "
             f"over seeds {meta['seeds']}. *gap closed* = (method − alone) / (teacher − alone) on accuracy (on −RMSE for "
             f"regression), blank when the gap is within the student's seed std; *won* = seeds where the method beat the "
             f"student alone (same initialisation and data order); **bold** = the best method on validation. Budgets: "
             + "; ".join(f"{d}: teacher {p['teacher']['model']} {max(2, p['teacher']['train']['epochs'] // meta['div'])} epochs, "
                         f"student {p['student']['model']} width {p['student']['width']} {max(2, p['train']['epochs'] // meta['div'])} epochs"
                         for d, p in PROTOCOL.items() if d in meta["datasets"]) + ".", ""]
    facts = []
    for d in results:
        block, f = dataset_table(d)
        lines += block
        facts.append(f)
    text, target = reading(facts, methods)
    plot = RESULTS / f"{name}_sizes.png"
    if plot_sizes(results, plot):
        lines += [f"![accuracy vs student size]({plot.name})", "",
                  f"Accuracy vs student size: student alone and plain KD at widths {meta['sizes']} × the protocol's.", ""]
    mb = target["mean_best_gap_closed"]
    holds = mb is not None and mb >= 0.5
    verdict = "not measurable (no set with a gap)" if mb is None else ("holds" if holds else "does not hold")
    lines += ["## Reading", ""] + text + ["", "## Target", "",
              f"- Best distilled student (chosen on validation) closes ≥ half the gap on average across the real "
              f"classification sets with a gap: mean {('n/a' if mb is None else f'{mb:+.2f}')} over {target['sets_counted']} "
              f"sets → **{verdict}**.", "",
              *([f"- The same over the sets whose gap is at least twice the student's seed std (a gap near the noise "
                 f"makes gap-closed values large): mean {mc:+.2f} over {target['sets_clear']} sets → "
                 f"**{'holds' if mc >= 0.5 else 'does not hold'}**.", ""] if (mc := target["mean_best_gap_closed_clear"]) is not None else [])]
    path = RESULTS / f"{name}.md"
    write_text(path, "\n".join(lines))
    write_json(RESULTS / f"{name}.json", {"meta": meta, "results": results, "target": {**target, "holds": holds}})
    print(f"target (best distilled student closes >= half the gap): {verdict.upper()} (mean {mb})")
    return path


def _cpu_s() -> float:
    """CPU seconds of this process and its finished workers: what the run costs, whatever else the machine ran."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, budgets / 5, two student sizes (minutes)")
    ap.add_argument("--datasets", nargs="*", default=list(PROTOCOL))
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one thread each), over datasets")
    ap.add_argument("--runs", type=Path, default=Path("runs/quality"))
    ap.add_argument("--sizes", type=float, nargs="*", default=None,
                    help="student widths for the accuracy-vs-size plot (x the protocol's); '--sizes 1' skips that plot")
    ap.add_argument("--render", type=Path, help="only rewrite the report from a results .json this script wrote")
    ap.add_argument("--name", help="file stem under benchmarks/results/ for a partial run (default quality[_quick]_partial)")
    args = ap.parse_args()
    if args.render:  # same numbers, new layout: nothing is trained
        saved = read_json(args.render)
        quick = saved["meta"]["div"] > 1
        print(f"wrote {write_report(saved['results'], saved['meta'], quick, saved['meta'].get('methods', list(METHODS)))}")
        return
    if args.name is not None and not re.fullmatch(r"quality_[a-z0-9_]+", args.name):
        raise SystemExit(f"--name: expected quality_<lower-case letters, digits, _>, got {args.name!r}")
    for d in args.datasets:
        if d not in PROTOCOL:
            raise SystemExit(f"--datasets: unknown '{d}'; the protocol has {', '.join(PROTOCOL)}")
    for m in args.methods:
        if m not in METHODS:
            raise SystemExit(f"--methods: unknown '{m}'; known: {', '.join(METHODS)}")
    seeds, div, sizes = (QUICK["seeds"], QUICK["div"], QUICK["sizes"]) if args.quick else (SEEDS, 1, SIZES)
    sizes = sizes if args.sizes is None else args.sizes
    runs = args.runs / ("quick" if args.quick else "full")
    cache = runs / "cache"  # the benchmark trains its own teachers: a fresh --runs measures the whole cost
    os.environ["EDGEDISTILL_CACHE"] = str(cache.resolve())  # and computes its own persistence images (workers inherit)
    load_before, t0 = os.getloadavg(), time.time()
    # Longest first so two workers finish together; the report keeps the protocol's order.
    order = sorted(args.datasets, key=lambda d: COST_ORDER.index(d) if d in COST_ORDER else -1)
    jobs = [(d, args.methods, seeds, div, sizes, runs, cache) for d in order]
    if args.jobs > 1:
        with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(run_dataset, *zip(*jobs)))
    else:
        results = [run_dataset(*j) for j in jobs]
    results.sort(key=lambda d: args.datasets.index(d["dataset"]))
    cmd = "python benchmarks/quality.py" + (" --quick" if args.quick else "") + (f" --jobs {args.jobs}" if args.jobs != 2 else "")
    if args.datasets != list(PROTOCOL):
        cmd += " --datasets " + " ".join(args.datasets)
    if args.methods != list(METHODS):
        cmd += " --methods " + " ".join(args.methods)
    if args.sizes is not None:
        cmd += " --sizes " + " ".join(f"{w:g}" for w in args.sizes)
    if args.name:
        cmd += f" --name {args.name}"
    meta = {"command": cmd, "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "jobs": args.jobs,
            "torch": torch.__version__, "edgedistill": edgedistill.__version__, "python": platform.python_version(),
            "load_before": load_before, "load_after": os.getloadavg(), "minutes": round((time.time() - t0) / 60, 1),
            "seeds": seeds, "div": div, "sizes": sizes, "datasets": args.datasets, "methods": args.methods,
            "cpu_minutes": round(_cpu_s() / 60, 1), **({"name": args.name} if args.name else {})}
    print(f"wrote {write_report(results, meta, args.quick, args.methods)}")


if __name__ == "__main__":
    main()
