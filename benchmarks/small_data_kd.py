"""When does plain KD help a tiny student on small sensor datasets? A probe through the toolkit's own API.

For each bundled dataset and student, the student alone and KD at several (temperature, KD weight)
settings, all over the same seeds with one fixed teacher (FCN, best epoch on validation). Seed k of every
arm starts from the same initialisation and data order, so the per-seed differences are paired.
Writes benchmarks/results/small_data_kd.md (and .json). Run: `python benchmarks/small_data_kd.py`
(about 10 minutes on 2 cores; trained teachers and baselines are cached, finished runs are resumed).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import edgedistill
from edgedistill.io import write_json, write_text

TEACHER = {"model": "fcn", "train": {"epochs": 60, "batch_size": 16, "lr": 3e-3}}
# (dataset, student knobs, [(temperature, kd weight), ...]); the CE weight is 1 - kd weight.
CASES = [
    ("gunpoint", {"width": 8, "depth": 2, "head": "gap"}, [(4, 0.5), (1, 0.5)]),
    ("gunpoint", {"width": 8, "depth": 2, "head": "segments"}, [(4, 0.5), (1, 0.5)]),
    ("osuleaf", {"width": 8, "depth": 3, "head": "segments"}, [(4, 0.5), (2, 0.5), (1, 0.5), (4, 0.9)]),
    ("osuleaf", {"width": 16, "depth": 3, "head": "segments"}, [(4, 0.5), (2, 0.5), (1, 0.5), (4, 0.9)]),
    ("japanesevowels", {"width": 4, "depth": 2, "head": "gap"}, [(4, 0.5), (1, 0.5)]),
    ("japanesevowels", {"width": 8, "depth": 2, "head": "segments"}, [(4, 0.5), (1, 0.5)]),
]


def recipe(dataset: str, student: dict, temperature: float, weight: float, seeds: list[int]) -> dict:
    return {
        "name": f"probe-{dataset}",
        "data": {"name": dataset, "split": {"val": 0.25}},
        "teacher": TEACHER,
        "student": {"model": "cnn1d", **student},
        "method": {"name": "offline", "terms": [
            {"loss": "ce", "weight": round(1 - weight, 3)},
            {"loss": "kd", "weight": weight, "temperature": temperature},
        ]},
        "train": {"epochs": 100, "batch_size": 16, "lr": 3e-3},
        "seeds": seeds,
        "engine": {"progress": False},
    }


def fmt(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs", type=Path, default=Path("runs/small_data_kd"))
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "small_data_kd")
    args = ap.parse_args()
    seeds = list(range(args.seeds))
    load_before, t0 = os.getloadavg(), time.time()
    rows = []
    for dataset, student, settings in CASES:
        tag = "-".join(f"{k}{v}" for k, v in student.items())
        for temperature, weight in settings:
            out = args.runs / f"{dataset}-{tag}-T{temperature}-w{weight}"
            s = edgedistill.run(recipe(dataset, student, temperature, weight, seeds), out=out, progress=False)
            r = {row["role"]: row for row in s["rows"]}
            alone, kd = r["student alone"], r["method"]
            diffs = [a["acc"] - b["acc"] for a, b in zip(kd["per_seed_test"], alone["per_seed_test"])]
            rows.append({
                "dataset": dataset, "student": tag, "params": kd["params"], "T": temperature, "kd_weight": weight,
                "teacher_test": r["teacher"]["metrics"]["acc"]["mean"],
                "val_alone": alone["val_metrics"]["acc"]["mean"], "val_kd": kd["val_metrics"]["acc"]["mean"],
                "test_alone": alone["metrics"]["acc"], "test_kd": kd["metrics"]["acc"],
                "paired_diffs": diffs, "run": str(out),
            })
            print(f"{dataset} {tag} T={temperature} w={weight}: alone {fmt(alone['metrics']['acc'])}  kd {fmt(kd['metrics']['acc'])}", flush=True)
    meta = {
        "command": "python benchmarks/small_data_kd.py" + (f" --seeds {args.seeds}" if args.seeds != 3 else ""),
        "seeds": seeds, "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "load_before": load_before, "load_after": os.getloadavg(),
        "minutes": round((time.time() - t0) / 60, 1), "date": time.strftime("%Y-%m-%d"),
    }
    write_json(args.results.with_suffix(".json"), {"meta": meta, "rows": rows})
    lines = [
        "# Plain KD on small sensor datasets: when does it help a tiny student?", "",
        f"Made by `{meta['command']}` on {meta['date']} ({meta['cpus']} CPUs, torch {meta['torch']}, {meta['threads']} threads, "
        f"load {meta['load_before'][0]:.2f} → {meta['load_after'][0]:.2f}, {meta['minutes']} min). Test accuracy of the "
        f"best-on-validation epoch, mean ± sample std over seeds {seeds}; teacher: FCN, one model, best epoch on validation. "
        "*paired* = KD − alone per seed (same initialisation and data order); *won* = seeds where KD was ahead.", "",
        "| dataset | student | params | T | KD weight | teacher | val alone | val KD | test alone | test KD | paired mean | won |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["paired_diffs"]
        lines.append(
            f"| {r['dataset']} | {r['student']} | {r['params']:,} | {r['T']} | {r['kd_weight']} | {r['teacher_test']:.3f} | "
            f"{r['val_alone']:.3f} | {r['val_kd']:.3f} | {fmt(r['test_alone'])} | {fmt(r['test_kd'])} | "
            f"{sum(d) / len(d):+.3f} | {sum(x > 0 for x in d)}/{len(d)} |"
        )
    write_text(args.results.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {args.results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
