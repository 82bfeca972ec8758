"""How confident a run's students are on test, against how often they are right.

ECE says that a student is miscalibrated, but not in which direction. This prints, per run and seed, the test
accuracy, the mean top-1 probability, the mean per-sample std of the logits over the classes, and the ECE
before and after temperature scaling fitted on validation. A student whose confidence is far below its
accuracy is underconfident: its logits are too small, and a temperature below 1 fixes it.

Run: `python benchmarks/student_confidence.py RUN_DIR [RUN_DIR ...]`, for any `edgedistill run` output of a
classification task. The default runs are the quality benchmark's DIST and plain-KD runs on three sets
(`python benchmarks/quality.py` makes them under runs/quality/full).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edgedistill.deploy.runs import load_run
from edgedistill.engine.evaluate import evaluate_val_test, predict

DEFAULT = [f"runs/quality/full/{d}/{m}" for d in ("digits", "osuleaf", "basicmotions") for m in ("dist", "kd")]


def confidence(run_dir: str, seed: int) -> dict[str, float]:
    run = load_run(run_dir, seed=seed)
    logits = predict(run.student, run.splits.test, torch.device("cpu"))
    probs = logits.softmax(1)
    _, test = evaluate_val_test(run.student, run.splits.val, run.splits.test, run.splits.info, torch.device("cpu"))
    return {"acc": test["acc"], "confidence": probs.max(1).values.mean().item(), "logit_std": logits.std(1).mean().item(),
            "ece": test["ece"], "ece_ts": test["ece_ts"], "temperature": test["temperature"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", default=DEFAULT)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| run | seed | test acc | mean confidence | logit std | ECE | T (fitted on val) | ECE T-scaled |\n"
          "|---|---|---|---|---|---|---|---|")
    for run_dir in args.runs:
        for seed in args.seeds:
            c = confidence(run_dir, seed)
            print(f"| {Path(run_dir).parent.name}/{Path(run_dir).name} | {seed} | {c['acc']:.3f} | {c['confidence']:.3f} | "
                  f"{c['logit_std']:.3f} | {c['ece']:.3f} | {c['temperature']:.3f} | {c['ece_ts']:.3f} |")


if __name__ == "__main__":
    main()
