"""FSP and KD-SVD on the bundled real sets, with a teacher whose channels match the student's at each tap.

Both losses compare matrices channel by channel (FSP: the C1 x C2 flow matrix between two taps; KD-SVD: the leading
singular vectors of each tap, aligned channel by channel), so the protocol teacher of ``benchmarks/quality.py`` (FCN,
128 channels) cannot teach the 16-channel student with them, and quality.py skips them with that reason. Here they
run as their recipes do (``recipes/fsp.yaml``, ``recipes/kdsvd.yaml``): the teacher is the FCN at width 1/8
(16-32-16 channels), trained with the protocol's teacher budget; everything else is quality.py's protocol (its data,
student, budget, seeds and checkpoint selection; test metric of the best-on-validation epoch, mean ± sample std).
Plain KD from the same small teacher (the quickstart recipe's terms) is the row to beat, beside the student alone.
On Tecator (regression) quality.py's regression forms apply: MSE as the task term, KD as MSE to the teacher.

A teacher this small is often no better than the student: *gap* says when it is (teacher minus the student alone,
beyond the student's seed std), and *won* counts seeds ahead of the student alone (same initialisation and order).

Run: ``python benchmarks/matched_channels.py`` (writes results/matched_channels.md and .json; finished runs under
runs/matched_channels are reused, the student alone through quality.py's model cache).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

import edgedistill
import quality
import quality_protocol as protocol
from edgedistill.io import write_json, write_text

TEACHER_WIDTH = 0.125  # the recipes' FCN at width 1/8: 16, 32, 16 channels, the cnn1d student's 16 at both taps
ARMS = ["kd", "fsp", "kdsvd"]
SETS = ["basicmotions", "japanesevowels", "pickupgesture", "gunpoint", "osuleaf", "tecator"]


def arm_recipe(dataset: str, method: str, seeds: list[int], cache: Path) -> dict[str, Any]:
    """quality.py's run for (dataset, method) with the channel-matched teacher (an FCN on Tecator too)."""
    r = protocol.recipe(dataset, method, seeds)
    budget = protocol.PROTOCOL[dataset]["teacher"]["train"]
    r["teacher"] = {"model": "fcn", "width": TEACHER_WIDTH, "train": budget}
    r["name"] = f"{r['name']}-matched"
    r["cache_dir"] = str(cache)
    return r


def run_set(dataset: str, seeds: list[int], runs: Path, cache: Path) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for method in ARMS:
        try:
            s = edgedistill.run(arm_recipe(dataset, method, seeds, cache), out=runs / dataset / method, progress=False)
        except Exception as exc:  # noqa: BLE001 - one failed arm is a row that says why, not a lost benchmark
            rows[method] = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
            print(f"[{dataset}] {method} FAILED: {rows[method]['failed']}", flush=True)
            continue
        rows[method] = {"teacher": quality._row(s, "teacher"), "alone": quality._row(s, "student alone"),
                        "method": quality._row(s, "method")}
        print(f"[{dataset}] {method} done", flush=True)
    return {"dataset": dataset, "task": "regression" if dataset in protocol.REGRESSION_SETS else "classification",
            "arms": rows}


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| set | metric | teacher (FCN w 1/8) | gap | student alone | KD (same teacher) | FSP | KD-SVD |",
             "|---|---|---|---|---|---|---|---|"]
    for d in results:
        key, better = ("acc", 1) if d["task"] == "classification" else ("rmse", -1)
        ran = next((d["arms"][m] for m in ARMS if "failed" not in d["arms"][m]), None)
        if ran is None:
            lines.append(f"| {d['dataset']} | test {key} | | | | " + " | ".join(f"failed: {d['arms'][m]['failed']}" for m in ARMS) + " |")
            continue
        t, a = ran["teacher"]["metrics"][key]["mean"], ran["alone"]["metrics"][key]
        gap = better * (t - a["mean"]) > a["std"]
        cells = []
        for method in ARMS:
            m = d["arms"][method]
            if "failed" in m:
                cells.append(f"failed: {m['failed']}")
                continue
            delta = better * (m["method"]["metrics"][key]["mean"] - a["mean"])
            cells.append(f"{quality._ms(m['method']['metrics'][key])} ({delta:+.3f}, won "
                         f"{quality.won(m['method'], m['alone'], key, better)})")
        lines.append(f"| {d['dataset']} | test {key} | {t:.3f} | {'yes' if gap else 'no'} | {quality._ms(a)} | "
                     + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", choices=SETS, default=SETS)
    ap.add_argument("--runs", type=Path, default=Path("runs/matched_channels"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    cache = Path("runs/quality/full/cache")  # quality.py's: the student alone of each seed is the same model
    os.environ["EDGEDISTILL_CACHE"] = str(cache.resolve())
    load_before, t0 = os.getloadavg()[0], time.time()
    results = [run_set(d, protocol.SEEDS, args.runs, cache) for d in args.datasets]
    meta = {"command": "python benchmarks/matched_channels.py" + (f" --datasets {' '.join(args.datasets)}"
                                                                  if args.datasets != SETS else ""),
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load_before": load_before, "load_after": os.getloadavg()[0],
            "minutes": round((time.time() - t0) / 60, 1), "cpu_minutes": round(quality._cpu_s() / 60, 1),
            "seeds": protocol.SEEDS}
    lines = ["# FSP and KD-SVD with a channel-matched teacher", "",
             f"Made by `{meta['command']}` on {meta['date']}: {meta['cpus']} CPUs, one thread, torch {meta['torch']}; "
             f"load average {meta['load_before']:.2f} → {meta['load_after']:.2f} (above ~1: other jobs shared the "
             f"cores, times inflated); {meta['minutes']} min wall, {meta['cpu_minutes']} CPU min.", "",
             "quality.py's protocol (data, cnn1d w16 student, budget, seeds "
             f"{protocol.SEEDS}, test metric of the best-on-validation epoch, mean ± sample std) with the teacher of "
             "recipes/fsp.yaml and kdsvd.yaml: the FCN at width 1/8 (16-32-16 channels), so that both losses can "
             "compare the taps channel by channel. Each cell: mean ± std (Δ vs the student alone, + is better; won = "
             "seeds ahead of the student alone, paired). *gap*: the teacher beats the student alone by more than "
             "the student's seed std.", ""] + table(results)
    out = quality.RESULTS / "matched_channels"
    write_json(out.with_suffix(".json"), {"meta": meta, "results": results})
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
