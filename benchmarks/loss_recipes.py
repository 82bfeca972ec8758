"""Every loss recipe on its real data, 3 seeds, through the toolkit's own API: one honest table.

Each `recipes/<loss>.yaml` shares the quickstart's data, teacher and student (OSULeaf, FCN teacher,
3k-parameter cnn1d), so the rows differ only in the distillation terms. Seed k of every row starts from the
same initialisation; the student-alone row is the same cached baseline for all. Writes
benchmarks/results/loss_recipes.md (and .json). Run: `python benchmarks/loss_recipes.py [--only kd dkd ...]`.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

import edgedistill
from edgedistill.config import load_recipe
from edgedistill.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"quickstart", "kd", "reverse_kd", "regression_kd", "student_alone", "images_kd", "har_synthetic"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="recipe names (default: every loss recipe on the quickstart data)")
    ap.add_argument("--runs", type=Path, default=Path("runs/loss_recipes"))
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "loss_recipes")
    args = ap.parse_args()
    names = args.only or sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml") if p.stem not in SKIP)
    names = ["quickstart"] + [n for n in names if n != "quickstart"]  # plain KD first, as the reference row
    load_before, t0 = os.getloadavg(), time.time()
    rows, alone, teacher = [], None, None
    for name in names:
        path = ROOT / "recipes" / f"{name}.yaml"
        terms = ", ".join(f"{t.weight:g}·{t.loss}" for t in load_recipe(path).method.terms)
        s = edgedistill.run(path, out=args.runs / name, progress=False)
        r = {row["role"]: row for row in s["rows"]}
        alone, teacher = r["student alone"], r["teacher"]
        m = r["method"]
        diffs = [a["acc"] - b["acc"] for a, b in zip(m["per_seed_test"], alone["per_seed_test"])]
        rows.append({"recipe": name, "terms": terms, "val": m["val_metrics"]["acc"]["mean"], "test": m["metrics"]["acc"],
                     "ece": m["metrics"]["ece"], "diffs": diffs, "gap_closed": m.get("gap_closed")})
        print(f"{name}: {m['metrics']['acc']['mean']:.3f} ± {m['metrics']['acc']['std']:.3f}", flush=True)
    meta = {"command": "python benchmarks/loss_recipes.py", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
            "minutes": round((time.time() - t0) / 60, 1), "date": time.strftime("%Y-%m-%d")}
    write_json(args.results.with_suffix(".json"), {"meta": meta, "rows": rows})
    fmt = lambda st: f"{st['mean']:.3f} ± {st['std']:.3f}"  # noqa: E731
    lines = [
        "# Every loss recipe on OSULeaf (3 seeds)", "",
        f"Made by `{meta['command']}` on {meta['date']} ({meta['cpus']} CPUs, torch {meta['torch']}, {meta['threads']} threads, "
        f"load {meta['load_before'][0]:.2f} → {meta['load_after'][0]:.2f}, {meta['minutes']} min). Test accuracy of the "
        "best-on-validation epoch, mean ± sample std over seeds [0, 1, 2]. Teacher FCN "
        f"{teacher['metrics']['acc']['mean']:.3f}; student alone (cnn1d, 3,126 params) {fmt(alone['metrics']['acc'])}. "
        "Recipes use each paper's default weights; nothing here was tuned per loss. *paired* = mean of (method − alone) "
        "per seed; *won* = seeds where the method was ahead.", "",
        "| recipe | terms | val acc | test acc | ECE | paired | won | gap closed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, g = r["diffs"], r["gap_closed"]
        lines.append(f"| {r['recipe']} | {r['terms']} | {r['val']:.3f} | {fmt(r['test'])} | {fmt(r['ece'])} | "
                     f"{sum(d) / len(d):+.3f} | {sum(x > 0 for x in d)}/{len(d)} | {'' if g is None else f'{g:+.2f}'} |")
    write_text(args.results.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {args.results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
