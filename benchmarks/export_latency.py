"""Batch-1 latency of a run's student: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, one thread,
measured in one process and interleaved, so the ratios hold even on a machine other processes share.

Each round times every variant for ``--calls`` calls in turn; the reported figure is the median over
rounds of each round's median, and the ratios are taken round by round (same moment, same load) before
the median. The load average (os.getloadavg) before and after is printed beside the numbers.

Run: `python benchmarks/export_latency.py RUN_DIR [--rounds 15 --calls 100]` (about a minute for the quickstart
student on 2 cores, most of it the export).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()

    from edgedistill.deploy.export import export_loaded
    from edgedistill.deploy.profile import machine
    from edgedistill.deploy.runs import load_run

    run = load_run(args.run_dir)
    window = np.ascontiguousarray(run.splits.test.x.numpy()[:1], dtype=np.float32)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "s.onnx", Path(tmp) / "s.int8.onnx"
        export_loaded(run, fp32, int8, max_diff=None, max_int8_drop=None)
        sizes = {"onnx fp32": fp32.stat().st_size, "onnx int8": int8.stat().st_size}
        s32, s8 = _session(fp32), _session(int8)
        x = torch.from_numpy(window)
        calls = {
            "torch eager": lambda: run.student(x),
            "onnx fp32": lambda: s32.run(None, {"input": window}),
            "onnx int8": lambda: s8.run(None, {"input": window}),
        }
        before = machine()
        per_round: dict[str, list[float]] = {k: [] for k in calls}
        with torch.inference_mode():
            for fn in calls.values():  # warm-up
                for _ in range(20):
                    fn()
            for _ in range(args.rounds):
                for name, fn in calls.items():
                    t = np.empty(args.calls)
                    for i in range(args.calls):
                        start = time.perf_counter_ns()
                        fn()
                        t[i] = (time.perf_counter_ns() - start) / 1e3
                    per_round[name].append(float(np.median(t)))
        after = machine()
    rounds = {k: np.asarray(v) for k, v in per_round.items()}
    print(f"{run.recipe.student.model} {run.recipe.student.kwargs} from {args.run_dir} (seed {run.seed}), input "
          f"{tuple(window.shape[1:])}, batch 1, one thread, {args.rounds} rounds x {args.calls} calls")
    print(f"machine: {before['cpu']}, {before['cores']} cores, load average {before['load']} before, {after['load']} after, "
          f"pid {os.getpid()}")
    for name, v in rounds.items():
        size = f", {sizes[name] / 1024:.1f} KB" if name in sizes else ""
        print(f"  {name:12s} median {np.median(v):8.1f} us  (rounds: min {v.min():.1f}, max {v.max():.1f}){size}")
    for name in ("onnx fp32", "onnx int8"):
        ratio = rounds["torch eager"] / rounds[name]
        print(f"  torch eager / {name}: {np.median(ratio):.2f}x (rounds: {ratio.min():.2f}-{ratio.max():.2f})")
    ratio = rounds["onnx fp32"] / rounds["onnx int8"]
    print(f"  onnx fp32 / onnx int8: {np.median(ratio):.2f}x (rounds: {ratio.min():.2f}-{ratio.max():.2f})")


if __name__ == "__main__":
    main()
