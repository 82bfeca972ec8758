"""Which teacher checkpoint to distil from on small sets: best on validation, the last epoch, or SWA?

Runs recipes/kd.yaml (plain KD, the general-purpose setting) on two bundled sets with tiny validation splits, with
``teacher.select`` best, last and swa, 3 paired seeds each: the teacher's test accuracy, the student alone and the KD
student, and KD's paired differences. Writes benchmarks/results/teacher_select.md. Run: ``make bench-select`` or
``python benchmarks/teacher_select.py`` (about 5 minutes on 2 cores from an empty cache; 2 minutes with the teachers
cached).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import edgedistill
from edgedistill.io import write_text

SETS = ("arrowhead", "pickupgesture")
SELECTS = ("best", "last", "swa")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/teacher_select"))
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "teacher_select.md")
    args = ap.parse_args()
    load, start = os.getloadavg()[0], time.time()
    lines = ["# Teacher checkpoint: best on validation, last epoch, or SWA", "",
             f"Made by `python benchmarks/teacher_select.py` ({os.cpu_count()} cores, load {load:.2f} at start): "
             "recipes/kd.yaml on each set, `teacher.select` varied, 3 seeds; test accuracy (the students' best epoch "
             "on validation); *paired* = KD − student alone per seed.", "",
             "| set | teacher.select | teacher | student alone | KD | paired | won |", "|---|---|---|---|---|---|---|"]
    for dataset in SETS:
        for select in SELECTS:
            s = edgedistill.run("kd", out=args.runs / f"{dataset}-{select}", progress=False,
                                **{"data.name": dataset, "teacher.select": select, "name": f"select-{dataset}-{select}"})
            rows = {r["role"]: r for r in s["rows"]}
            t, a, m = rows["teacher"], rows["student alone"], rows["method"]
            diffs = [x["acc"] - y["acc"] for x, y in zip(m["per_seed_test"], a["per_seed_test"])]
            fmt = lambda r: f"{r['metrics']['acc']['mean']:.3f} ± {r['metrics']['acc']['std']:.3f}"  # noqa: E731
            lines.append(f"| {dataset} | {select} | {t['metrics']['acc']['mean']:.3f} | {fmt(a)} | {fmt(m)} | "
                         f"{', '.join(f'{d:+.3f}' for d in diffs)} | {sum(d > 0 for d in diffs)}/{len(diffs)} |")
    lines += ["", f"Total {time.time() - start:.0f} s.", ""]
    write_text(args.results, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
