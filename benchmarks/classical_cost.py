"""What the classical baselines (report.classical) cost, on one thread: docs/classical.md quotes this script.

1. numba's compile on first use: aeon's rocket kernels are numba functions compiled on their first call and cached
   on disk (``cache=True``), so only the first use on an installation pays. Measured in child processes given an
   empty ``NUMBA_CACHE_DIR``: the first fit+transform of a tiny multivariate set compiles, a second process with
   the same folder loads the cache.
2. Fit, score and batch-1 latency of each baseline on synthetic wearable windows (edgedistill's ``synthetic``:
   9 channels x 128 steps, 2,000 training windows by default), through ``fit_and_score`` as a run calls it.

    OMP_NUM_THREADS=1 python benchmarks/classical_cost.py [--windows 2000] [--skip-jit]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

_FIRST_USE = """
import time, numpy as np
from aeon.transformations.collection.convolution_based import {cls}
x = np.random.default_rng(0).normal(size=(20, 9, 32)).astype(np.float32)
t0 = time.perf_counter(); {cls}(n_jobs=1, random_state=0).fit(x).transform(x); print(time.perf_counter() - t0)
"""


def first_use_s(cls: str, cache_dir: str) -> float:
    """Seconds of the first fit+transform in a fresh process whose numba cache is ``cache_dir``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _FIRST_USE.format(cls=cls)], env=env, check=True, capture_output=True,
                         text=True)
    return float(out.stdout.strip().splitlines()[-1])


def splits(windows: int):  # noqa: ANN201 - DataSplits, imported late so --help stays instant
    from edgedistill.config import DataConfig
    from edgedistill.data.prepare import prepare_data

    # Train is 60 % of the windows (val and test 20 % each, by subject): 2,000 training windows by default.
    subjects = 10
    cfg = DataConfig(name="synthetic", params={"n_subjects": subjects, "windows_per_subject": -(-windows * 5 // 3 // subjects),
                                               "n_classes": 6, "channels": 9, "length": 128, "seed": 0})
    return prepare_data(cfg, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000, help="training windows (about)")
    parser.add_argument("--skip-jit", action="store_true", help="skip the first-use compile measurement")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if not args.skip_jit:
        for cls in ("MiniRocket", "MultiRocket"):
            with tempfile.TemporaryDirectory() as cache:
                cold, warm = first_use_s(cls, cache), first_use_s(cls, cache)
            print(f"{cls} first use (numba compile, 9 channels): {cold:.1f} s; next process (cache loaded): {warm:.2f} s")
    from edgedistill.data.window_features import window_features
    from edgedistill.experiment.classical import BASELINES, fit_and_score, latency_ms

    data = splits(args.windows)
    print(f"data: train/val/test = {len(data.train)}/{len(data.val)}/{len(data.test)} windows of "
          f"{tuple(data.info.input_shape)}, {data.info.n_outputs} classes; one thread")
    for name in BASELINES:
        t0, c0 = time.perf_counter(), time.process_time()
        r = fit_and_score(name, data, seed=0)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        note = f"; {r['note']}" if r["note"] else ""
        print(f"{r['model']}: fit {r['fit_s']:.1f} s, fit+score+latency {total:.1f} s wall ({cpu:.1f} s CPU), latency "
              f"{r['latency_ms']:.2f} ms per window, {r['params']:,} params, {r['size_kb']:,.0f} KB, "
              f"test acc {r['test']['best']['acc']:.3f}{note}")
    one = data.train.x[:1].numpy()
    print(f"window features alone (part of the forest's latency): {latency_ms(window_features, one):.3f} ms per window")


if __name__ == "__main__":
    main()
