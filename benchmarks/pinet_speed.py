"""Seconds per 1000 windows: exact PIs (gudhi sublevel diagrams + our PI, one process) vs a PI-Net forward pass
(one torch thread, batch 256), measured in one process and interleaved round by round, so the ratio holds on a
shared machine. The windows are the recipe's own (all splits), repeated up to ``--windows``.

Run: `python benchmarks/pinet_speed.py runs/pinet/pinet.pt recipes/topo_kd.yaml [--windows 1000 --rounds 5]`.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="pinet.pt written by `edgedistill topo pinet`")
    ap.add_argument("recipe", type=Path, help="the recipe the PI-Net was trained for (its data and data.topology)")
    ap.add_argument("--windows", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from edgedistill.config import load_recipe
    from edgedistill.data.topology import pi_params, preprocess, window_pis
    from edgedistill.experiment.topology import topology_windows
    from edgedistill.models.pi_models import load_pinet, pinet_forward

    torch.set_num_threads(1)
    rec = load_recipe(args.recipe)
    params = pi_params(rec.data.topology)
    windows, scale = topology_windows(rec.data, rec.data.split.seed)
    pre = preprocess(np.concatenate(list(windows.values())), scale)
    pre = np.resize(pre, (args.windows, *pre.shape[1:]))  # repeat the real windows up to --windows
    net, ck = load_pinet(args.checkpoint)
    load0 = os.getloadavg()
    gudhi_s, pinet_s, ratios = [], [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for w in pre:
            window_pis(w, params)
        t1 = time.perf_counter()
        pinet_forward(net, pre)
        t2 = time.perf_counter()
        gudhi_s.append(t1 - t0)
        pinet_s.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    per = 1000.0 / args.windows
    print(f"windows: {args.windows} of {pre.shape[1:]} -> PIs {tuple(ck['out_shape'])}; rounds: {args.rounds}")
    print(f"load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f} (2-core machine: >2 means contention)")
    print(f"exact (gudhi, 1 process): {np.median(gudhi_s) * per:.3f} s per 1000 windows (median of rounds)")
    print(f"PI-Net (1 thread):        {np.median(pinet_s) * per:.4f} s per 1000 windows (median of rounds)")
    print(f"speed-up: {np.median(ratios):.0f}x (median of per-round ratios; min {min(ratios):.0f}x, max {max(ratios):.0f}x)")


if __name__ == "__main__":
    main()
