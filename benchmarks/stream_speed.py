"""Streaming inference cost: ``Predictor.stream`` on one recording fed in chunks of 1, 16, 128 samples and whole,
against the batch prediction of the same windows (labels compared exactly).

The model is the synthetic-HAR recipe's student (recipes/har_synthetic.yaml: cnn1d width 16 depth 3, 9 channels,
windows of 128 samples) with seeded random weights, exported to ONNX fp32 with window 128 / stride 64 in its
metadata: the cost of streaming does not depend on what the weights learnt. The recording is seeded Gaussian noise.
ONNX Runtime runs on one thread. Each setting is timed ``--repeats`` times in turn (interleaved, so a change of
machine load touches all of them) and the median is reported, with the load average before and after.

Run: `OMP_NUM_THREADS=1 python benchmarks/stream_speed.py [--samples 20000 --repeats 5]`; writes
benchmarks/results/stream_speed.md and .json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CHANNELS, LENGTH, STRIDE, CLASSES = 9, 128, 64, 6
RESULTS = Path(__file__).resolve().parent / "results"


def model_file(folder: Path) -> Path:
    import onnx

    from edgedistill.deploy import to_onnx
    from edgedistill.deploy.metadata import ModelMetadata, attach
    from edgedistill.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn1d", CHANNELS, CLASSES, (LENGTH,), width=16, depth=3).eval()
    proto = to_onnx(model, torch.randn(2, CHANNELS, LENGTH), exporter="legacy", names=("input", "logits")).proto
    meta = ModelMetadata(task="classification", input_shape=[CHANNELS, LENGTH],
                         normalization={"mode": "per_channel", "mean": [0.0] * CHANNELS, "std": [1.0] * CHANNELS},
                         classes=[f"c{i}" for i in range(CLASSES)], window={"length": LENGTH, "stride": STRIDE},
                         channel_names=[f"ch{i}" for i in range(CHANNELS)])
    attach(proto, meta)
    path = folder / "student.onnx"
    onnx.save_model(proto, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from edgedistill.data.windowing import sliding_windows
    from edgedistill.deploy import Predictor
    from edgedistill.deploy.profile import machine

    recording = np.random.default_rng(0).normal(size=(args.samples, CHANNELS))
    sizes = {"1": 1, "16": 16, "128": 128, "whole": args.samples}
    with tempfile.TemporaryDirectory() as tmp:
        predictor = Predictor(model_file(Path(tmp)), threads=1)
        expected = predictor.predict(sliding_windows(recording.T, LENGTH, STRIDE))
        chunked = {k: [recording[i:i + n] for i in range(0, len(recording), n)] for k, n in sizes.items()}
        before = machine()
        times: dict[str, list[float]] = {k: [] for k in ["batch"] + list(sizes)}
        same: dict[str, bool] = {}
        for _ in range(args.repeats):
            start = time.perf_counter()
            predictor.predict(sliding_windows(recording.T, LENGTH, STRIDE))
            times["batch"].append(time.perf_counter() - start)
            for k, chunks in chunked.items():
                start = time.perf_counter()
                labels = [r.label for r in predictor.stream(chunks)]
                times[k].append(time.perf_counter() - start)
                same[k] = labels == expected
        after = machine()
    hops = len(expected)
    rows = []
    for k, ts in times.items():
        t = float(np.median(ts))
        rows.append({"feed": "batch (windows cut first)" if k == "batch" else f"stream, chunks of {k}",
                     "seconds": t, "samples_per_s": args.samples / t, "us_per_hop": t / hops * 1e6,
                     "labels_equal_batch": True if k == "batch" else same[k]})
    result = {"samples": args.samples, "hops": hops, "window": LENGTH, "stride": STRIDE, "channels": CHANNELS,
              "repeats": args.repeats, "machine_before": before, "machine_after": after, "rows": rows}
    lines = [
        "# Streaming inference cost (benchmarks/stream_speed.py)",
        "",
        f"`OMP_NUM_THREADS=1 python benchmarks/stream_speed.py --samples {args.samples} --repeats {args.repeats}`: "
        f"cnn1d width 16 depth 3 (recipes/har_synthetic.yaml's student, seeded random weights), {CHANNELS} channels, "
        f"window {LENGTH}, hop {STRIDE}: {hops} hops over {args.samples} samples; ONNX Runtime fp32 on one thread; "
        f"median of {args.repeats} interleaved repeats.",
        "",
        f"Machine: {before['cpu']}, {before['cores']} cores; load average {before['load']} before, "
        f"{after['load']} after (shared with other jobs).",
        "",
        "| feed | seconds | samples/s | µs per hop | labels equal the batch prediction |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['feed']} | {r['seconds']:.3f} | {r['samples_per_s']:,.0f} | {r['us_per_hop']:.0f} | "
                     f"{'yes' if r['labels_equal_batch'] else 'NO'} |")
    RESULTS.mkdir(exist_ok=True)
    from edgedistill.io import write_json, write_text

    write_text(RESULTS / "stream_speed.md", "\n".join(lines) + "\n")
    write_json(RESULTS / "stream_speed.json", result)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
