"""Does ``edgedistill tune`` pay for itself? Tuned distillation against plain KD at its defaults and against the best
fixed method of benchmarks/results/quality.md, on the bundled real sets with a teacher-student gap (issue 20).

Per dataset, with the protocol of benchmarks/quality.py (same data split, teacher, student and epochs; its
``recipe(dataset, "kd", ...)`` is the base recipe, so KD at defaults is exactly its ``kd`` row's setting):
1. KD at defaults over the seeds (this also trains and caches the teacher and the student alone);
2. the cost of one full KD run, measured: one more KD run of one seed with the teacher and baseline cached (what a
   tuning trial costs at most, setup included);
3. ``edgedistill.tune`` of the same recipe with a budget of 10 such runs; its winner (chosen on validation) retrained
   over the same seeds, so tuned and KD students are paired by seed (same initialisation and data order);
   (a fresh study: an earlier tune in the same folder is removed first, since resuming it would add this budget to
   the trials it holds);
4. the verdicts. Target: the tuned student beats KD at defaults on paired seeds (mean paired difference > 0 and more
   seeds won than lost) on every set with a gap, and reaches the best fixed method's test accuracy within that
   method's seed std (quality.md, 5 seeds; that comparison is only meaningful at full scale, so ``--quick`` prints it
   marked as such).

"Sets with a gap" are read from benchmarks/results/quality.json: teacher accuracy above the student alone's by more
than the student's seed std. Run: ``python benchmarks/tune.py`` (full; the lead's machine) or ``--quick``
(digits, 2 seeds, a fifth of the epochs: minutes). Results: results/tune.md (or tune_quick.md) and .json.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402 - quality.json's reading
import quality_protocol as protocol  # noqa: E402 - the protocol (data, teacher, student, budgets)

from edgedistill.io import read_json, write_json, write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
RUNS_PER_BUDGET = 10  # the budget: the measured cost of this many full KD runs
QUICK = {"datasets": ["digits"], "seeds": [0, 1], "div": 5}


def gap_sets() -> dict[str, dict[str, Any]]:
    """quality.json's classification sets whose teacher beats the student alone by more than its seed std, each with
    its best fixed method (chosen on validation there) and that method's test accuracy."""
    saved = read_json(RESULTS / "quality.json")
    out = {}
    for d in saved["results"]:
        lines, facts = quality.dataset_table(d)
        if not facts or d["task"] != "classification" or facts["teacher"] - facts["alone"] <= facts["noise"]:
            continue
        best = d["methods"][facts["best"]]["method"]["metrics"]["acc"]
        out[d["dataset"]] = {"best": facts["best"], "best_acc": best, "teacher": facts["teacher"], "alone": facts["alone"],
                             "noise": facts["noise"]}
    return out


def _method_row(summary: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in summary["rows"] if r["role"] == "method")


def run_dataset(dataset: str, seeds: list[int], div: int, runs: Path, ref: dict[str, Any], budget_runs: int,
                jobs: int | str = 1) -> dict[str, Any]:
    import edgedistill
    from edgedistill.experiment.tune import tune

    base = protocol.recipe(dataset, "kd", seeds, div)
    base["name"] = f"tune-{dataset}"
    folder = runs / dataset
    t0 = time.time()
    # (KD at defaults with the tune's --jobs: the winner's retraining runs its stages at the same thread count)
    kd = edgedistill.run(base, out=folder / f"kd_defaults{'' if jobs == 1 else f'_jobs_{jobs}'}", progress=False, jobs=jobs)
    start = time.time()  # one more full KD run of one seed, teacher and student alone cached: what a trial costs at most
    cost_dir = folder / f"kd_cost_{int(start)}"
    edgedistill.run({**base, "seeds": [seeds[0]], "baseline": False, "report": {"plots": False}}, out=cost_dir,
                    progress=False)  # (training only: the plots a run draws at its end are not part of a trial's cost)
    per_run = time.time() - start
    shutil.rmtree(cost_dir)
    # A fresh study every time: the same --out would resume the last one, adding this budget to the trials it holds.
    shutil.rmtree(folder / "tune", ignore_errors=True)
    budget = budget_runs * per_run
    print(f"[{dataset}] one full KD run: {per_run:.1f} s -> tune budget {budget:.0f} s", flush=True)
    tuned = tune(base, budget=budget, out=folder / "tune", progress=False, jobs=jobs,
                 log=lambda line: print(f"[{dataset}] {line}", flush=True) if line.startswith(("[trial", "Search", "Winner", "No ")) else None)
    final, kd_row = tuned["final"], _method_row(kd)
    kd_per = [s["acc"] for s in kd_row["per_seed_test"]]
    out: dict[str, Any] = {"dataset": dataset, "seeds": seeds, "div": div, "kd_run_s": per_run, "budget_s": budget, "budget_runs": budget_runs,
                           "searched_s": tuned["searched_s"], "trials": len(tuned["trials"]),
                           # every trial as the tune's report lists it: what the search saw on validation, and its cost
                           "trial_rows": [{k: r.get(k) for k in ("trial", "state", "method", "params", "val", "recheck", "seconds")}
                                          for r in tuned["trials"]],
                           "states": {s: sum(r["state"] == s for r in tuned["trials"]) for s in ("complete", "pruned", "stopped", "failed")},
                           "winner": tuned["winner"], "kd": kd_row["metrics"]["acc"], "kd_per_seed": kd_per,
                           "alone": next(r for r in kd["rows"] if r["role"] == "student alone")["metrics"]["acc"],
                           "reference": ref, "minutes": round((time.time() - t0) / 60, 2)}
    if final is not None:
        diffs = [t - k for t, k in zip(final["per_seed"], kd_per)]
        out.update(tuned=final["method"], tuned_per_seed=final["per_seed"], tuned_vs_alone=final["diff"],
                   diff=sum(diffs) / len(diffs), wins=sum(d > 0 for d in diffs), losses=sum(d < 0 for d in diffs),
                   beats_kd=sum(diffs) / len(diffs) > 0 and sum(d > 0 for d in diffs) > sum(d < 0 for d in diffs),
                   reaches_best=final["method"]["mean"] >= ref["best_acc"]["mean"] - ref["best_acc"]["std"])
    return out


def report(results: list[dict[str, Any]], meta: dict[str, Any], quick: bool) -> str:
    lines = ["# Tuned distillation vs KD at defaults and the best fixed method", "",
             f"Made by `{meta['command']}` on {meta['date']}: {meta['cpus']} CPUs, torch {meta['torch']}; load average "
             f"{meta['load_before']:.2f} -> {meta['load_after']:.2f} (above ~1 means other jobs shared the cores and every "
             f"time, the budget included, is inflated); {meta['minutes']:.1f} min wall, {meta['cpu_min']:.1f} CPU min.", "",
             f"Protocol: benchmarks/quality.py's data, teacher, student and epochs{' divided by ' + str(meta['div']) if meta['div'] > 1 else ''}; "
             f"seeds {meta['seeds']}; tune budget = {meta['budget_runs']} x the measured wall time of one full KD run (one seed, "
             "teacher and student alone cached); winner chosen on validation (seed 0 only), retrained over the seeds and "
             "compared with KD at defaults seed by seed (same initialisation and data order). Best fixed method: "
             "quality.md's best on validation (5 seeds, full budgets)"
             + (" -- NOT comparable at this reduced scale, shown for information." if quick else "."), "",
             "| set | KD at defaults | tuned | winner | paired Δ vs KD | won/lost | student alone | best fixed (quality.md) | "
             "reaches it | trials (complete/pruned) | budget |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ms = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}"  # noqa: E731
    for r in results:
        ref = r["reference"]
        if "tuned" not in r:
            lines.append(f"| {r['dataset']} | {ms(r['kd'])} | no trial finished | | | | {ms(r['alone'])} | | | "
                         f"{r['states']['complete']}/{r['states']['pruned']} | {r['budget_s']:.0f} s |")
            continue
        w = r["winner"]
        lines.append(f"| {r['dataset']} | {ms(r['kd'])} | {ms(r['tuned'])} | {w['method']} (trial {w['trial']}) | {r['diff']:+.3f} | "
                     f"{r['wins']}/{r['losses']} | {ms(r['alone'])} | {ref['best']} {ms(ref['best_acc'])} | "
                     f"{'yes' if r['reaches_best'] else 'no'} | {r['states']['complete']}/{r['states']['pruned']} | {r['budget_s']:.0f} s |")
    beats = all(r.get("beats_kd") for r in results)
    reaches = all(r.get("reaches_best") for r in results)
    lines += ["", "## Target", "",
              f"- Tuned beats KD at defaults on paired seeds on every set with a gap: **{'holds' if beats else 'does not hold'}**.",
              f"- Tuned reaches the best fixed method's accuracy within its seed std on every set: **{'holds' if reaches else 'does not hold'}**"
              + (" (not meaningful at reduced scale)." if quick else "."), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits, 2 seeds, a fifth of the epochs")
    ap.add_argument("--datasets", nargs="*", default=None, help="default: quality.json's sets with a gap")
    ap.add_argument("--runs", type=Path, default=Path("runs/tune_bench"))
    ap.add_argument("--budget-runs", type=int, default=RUNS_PER_BUDGET, help="the budget in full KD runs (the issue's: 10)")
    ap.add_argument("--jobs", default="1", help="the tune's --jobs: 1 (trials one at a time) or auto (the command's default)")
    args = ap.parse_args()
    import torch

    refs = gap_sets()
    datasets = args.datasets or (QUICK["datasets"] if args.quick else list(refs))
    for d in datasets:
        if d not in refs:
            raise SystemExit(f"--datasets: '{d}' is not a set with a gap in quality.json ({', '.join(refs)})")
    seeds, div = (QUICK["seeds"], QUICK["div"]) if args.quick else (protocol.SEEDS, 1)
    runs = args.runs / ("quick" if args.quick else "full")
    os.environ["EDGEDISTILL_CACHE"] = str((runs / "cache").resolve())  # its own teachers: the measured cost is whole
    load_before, t0, cpu0 = os.getloadavg()[0], time.time(), quality._cpu_s()
    print(f"load average before: {load_before:.2f} on {os.cpu_count()} CPUs", flush=True)
    jobs = "auto" if args.jobs == "auto" else int(args.jobs)
    results = [run_dataset(d, seeds, div, runs, refs[d], args.budget_runs, jobs) for d in datasets]
    meta = {"command": "python benchmarks/tune.py" + (" --quick" if args.quick else "") + (f" --datasets {' '.join(datasets)}" if args.datasets else "")
            + (f" --budget-runs {args.budget_runs}" if args.budget_runs != RUNS_PER_BUDGET else "")
            + (f" --jobs {jobs}" if jobs != 1 else ""),
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_before": load_before, "load_after": os.getloadavg()[0], "minutes": (time.time() - t0) / 60,
            "cpu_min": (quality._cpu_s() - cpu0) / 60, "seeds": seeds, "div": div, "budget_runs": args.budget_runs}
    name = ("tune_quick" if args.quick else "tune") + (f"_{args.budget_runs}x" if args.budget_runs != RUNS_PER_BUDGET else "")
    name += "".join(f"_{d}" for d in args.datasets or [])  # a run on some sets never overwrites the full one
    name += f"_jobs_{jobs}" if jobs != 1 else ""
    text = report(results, meta, args.quick)
    write_json(RESULTS / f"{name}.json", {"meta": meta, "results": results})
    write_text(RESULTS / f"{name}.md", text)
    print(text)
    print(f"load average after: {meta['load_after']:.2f}; wrote {RESULTS / (name + '.md')}")


if __name__ == "__main__":
    main()
