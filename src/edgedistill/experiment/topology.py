"""Persistence images for a recipe: the "pi" view of a run's data, and ``edgedistill topo pis|pinet``.

The PI maths and its resumable cache are ``edgedistill.data.topology``; this module is the orchestration above it,
which needs what the data layer may not import: the PI-Net (``edgedistill.models.pi_models``) for
``data.topology.source: pinet``, and the recipe (``edgedistill.config.load_recipe``) for the ``topo`` commands.

``prepare_with_pis`` is ``prepare_data`` with the "pi" view added where it always was: after windowing and channel
views, before the split (PIs are label-free; their scale is fitted on every window of the student's input), so the
"pi" view is split and normalised (on train) like every other view.

A PI-Net is trained on the training split's windows only (validation picks its best epoch), so a student distilled
with PI-Net PIs never benefits from exact PIs of validation or test windows.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch

from edgedistill.errors import UserInputError

if TYPE_CHECKING:
    from edgedistill.config import DataConfig, TopologyConfig
    from edgedistill.data.dataset import DataSplits
    from edgedistill.data.folds import Fold
    from edgedistill.data.raw import RawData


def add_pi_view(raw: "RawData", cfg: "TopologyConfig", cache_dir: Optional[Path] = None,
                progress: bool = True) -> "RawData":
    """``raw`` with a view named "pi" (and "pi" in test_views): PIs of ``raw.x`` (the student's input), exact
    (gudhi) or predicted by a trained PI-Net (``source: pinet``). The scale is fitted on ``raw.x`` only."""
    from edgedistill.data.topology import compute_pis, pi_params, pi_scale, preprocess

    if "pi" in raw.views:
        raise UserInputError("data.topology: the dataset already has a view named 'pi'")
    x = np.asarray(raw.x)
    if x.ndim != 3:
        raise UserInputError(f"data.topology: PIs need 1-D signals (n, channels, length); the input has shape {x.shape}")
    scale = pi_scale(x)
    params = pi_params(cfg)

    def pis(arr: np.ndarray) -> np.ndarray:
        if cfg.source == "pinet":
            from edgedistill.models.pi_models import predict_pis

            return predict_pis(cfg.pinet, preprocess(arr, scale), params)
        return compute_pis(arr, params, scale, cache_dir=cache_dir, workers=cfg.workers, progress=progress)

    views = {**raw.views, "pi": pis(x)}
    test_views = dict(raw.test_views)
    if raw.test_x is not None:
        test_views["pi"] = pis(np.asarray(raw.test_x))
    return replace(raw, views=views, test_views=test_views)


def prepare_with_pis(cfg: "DataConfig", seed: int = 0,
                     add_views: Optional[Callable[["RawData"], "RawData"]] = None, fold: Optional["Fold"] = None) -> "DataSplits":
    """The splits a run trains on: ``prepare_data(cfg, seed)``, and with ``data.topology`` the "pi" view of the
    student's input added before the split (label-free), then split and normalised like every view.
    ``add_views`` adds more views at the same point, one row per window, so they are split like ``x`` (the
    runner's teacher outputs read from a file: ``experiment.teacher_outputs.outputs_views``)."""
    from edgedistill.data.prepare import prepare_data, split_windows, windowed_raw

    if cfg.topology is None and add_views is None:
        return prepare_data(cfg, seed, fold)
    raw = windowed_raw(cfg)
    if cfg.topology is not None:
        raw = add_pi_view(raw, cfg.topology)
    if add_views is not None:
        raw = add_views(raw)
    return split_windows(raw, cfg, seed, fold)


def topology_windows(cfg: "DataConfig", seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Un-normalised windows of the train / val / test splits that ``prepare_with_pis(cfg, seed)`` makes, and the
    per-channel scale its "pi" view uses (fitted on the same windows as ``add_pi_view``)."""
    from edgedistill.data.prepare import split_windows, windowed_raw
    from edgedistill.data.topology import pi_scale

    if cfg.topology is None:
        raise UserInputError("data.topology: the recipe has no data.topology section (PI parameters)")
    raw = windowed_raw(cfg)
    scale = pi_scale(np.asarray(raw.x))
    # The split does not depend on normalisation or views beyond "x", so this reproduces the run's rows.
    splits = split_windows(raw, cfg.model_copy(update={"topology": None, "normalize": "none"}), seed)
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    return {k: v.x.numpy().astype(np.float64) for k, v in parts.items()}, scale


# -- edgedistill topo pis | pinet ----------------------------------------------------------------------------
def _load(recipe: Path, overrides: list[str]) -> Any:
    from edgedistill.config import load_recipe

    rec = load_recipe(recipe, overrides)
    if rec.data.topology is None:
        raise UserInputError(f"data.topology: recipe '{recipe}' has no data.topology section (the PI parameters)")
    return rec


def precompute_pis(recipe: Path, overrides: list[str], progress: bool = True) -> dict[str, Any]:
    """Compute (or find in the cache) the exact PIs of every window the recipe's data gives; resumable."""
    from edgedistill.data.prepare import windowed_raw
    from edgedistill.data.topology import compute_pis, pi_params, pi_scale

    rec = _load(recipe, overrides)
    cfg = rec.data
    raw = windowed_raw(cfg)
    scale, params = pi_scale(np.asarray(raw.x)), pi_params(cfg.topology)
    out = {"windows": 0, "shape": None}
    for arr in (raw.x, raw.test_x):
        if arr is not None:
            pis = compute_pis(np.asarray(arr), params, scale, cache_dir=rec.cache_dir, workers=cfg.topology.workers,
                              progress=progress)
            out["windows"] += len(pis)
            out["shape"] = list(pis.shape[1:])
    return out


def train_pinet_from_recipe(recipe: Path, overrides: list[str], out: Path, epochs: int = 200,
                            widths: tuple[int, ...] = (32, 64, 128, 256), lr: float = 1e-3, batch_size: int = 32,
                            seed: int = 0, threads: Optional[int] = None, progress: bool = True, augment: int = 0,
                            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train a PI-Net on the recipe's training windows -> exact PIs; write ``out/pinet.pt`` and ``out/pinet.json``
    (val/test MSE, seconds per 1000 windows for gudhi and for the PI-Net, one process, same thread count).
    ``augment`` adds that many perturbed copies of every training window (our choice, label-free: per-channel
    amplitude x U(0.8, 1.2), a circular time shift, Gaussian noise of 2% of the scale), each with its exact PIs,
    because small wearable sets have too few windows to learn a map onto 64x64 images."""
    from edgedistill.data.topology import compute_pis, pi_params, preprocess, window_pis
    from edgedistill.io import write_json
    from edgedistill.models.pi_models import pinet_forward, pinet_mse, save_pinet, time_per_1000, train_pinet

    if threads is not None:
        torch.set_num_threads(threads)
    rec = _load(recipe, overrides)
    params = pi_params(rec.data.topology)
    windows, scale = topology_windows(rec.data, rec.data.split.seed)
    if augment > 0:
        windows["train"] = np.concatenate([windows["train"], _perturbed(windows["train"], scale, augment, seed)])
    pre = {k: preprocess(v, scale) for k, v in windows.items()}
    exact = {k: compute_pis(v, params, scale, cache_dir=rec.cache_dir, workers=rec.data.topology.workers,
                            progress=progress) for k, v in windows.items()}
    log(f"pinet: {len(pre['train'])} training windows of {pre['train'].shape[1:]} -> PIs {exact['train'].shape[1:]}")
    net, best = train_pinet(pre["train"], exact["train"], pre["val"], exact["val"], widths=widths, epochs=epochs,
                            batch_size=batch_size, lr=lr, seed=seed, log=log)
    metrics: dict[str, Any] = {**best, "test_mse": pinet_mse(net, pre["test"], exact["test"])}
    # A trivial predictor for scale: the mean training PI (an MSE the PI-Net must beat to be worth anything).
    mean_pi = exact["train"].mean(axis=0, keepdims=True)
    metrics["test_mse_mean_pi"] = float(np.mean((exact["test"] - mean_pi) ** 2))
    allx = np.concatenate(list(pre.values()))
    n = len(allx)
    metrics["seconds_per_1000_gudhi"] = time_per_1000(lambda: [window_pis(w, params) for w in allx], n)
    metrics["seconds_per_1000_pinet"] = time_per_1000(lambda: pinet_forward(net, allx), n, repeats=3)
    metrics["speedup"] = metrics["seconds_per_1000_gudhi"] / metrics["seconds_per_1000_pinet"]
    metrics.update(timed_windows=n, threads=torch.get_num_threads(), load_avg=list(os.getloadavg()),
                   epochs=epochs, widths=list(widths), lr=lr, batch_size=batch_size, seed=seed, augment=augment,
                   train_windows=len(pre["train"]))
    out = Path(out)
    save_pinet(net, out / "pinet.pt", params, pre["train"].shape[2], metrics)
    write_json(out / "pinet.json", metrics)
    return metrics


def _perturbed(x: np.ndarray, scale: np.ndarray, copies: int, seed: int) -> np.ndarray:
    """``copies`` perturbed versions of every window (see ``train_pinet_from_recipe``), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(copies):
        amp = rng.uniform(0.8, 1.2, size=(len(x), x.shape[1], 1))
        shifted = np.stack([np.roll(w, int(rng.integers(0, x.shape[2])), axis=-1) for w in x])
        noise = rng.normal(size=x.shape) * 0.02 * np.asarray(scale).reshape(1, -1, 1)
        mean = x.mean(axis=-1, keepdims=True)
        out.append(mean + amp * (shifted - mean) + noise)
    return np.concatenate(out)
