"""Predict over a whole split and compute the task's metrics (regression in original units)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.metrics import classification_metrics, ece, fit_temperature, regression_metrics


def outputs_by_batch(fn: Callable[[torch.Tensor], torch.Tensor], data: TensorData, view: str, device: torch.device,
                     batch_size: int = 256) -> torch.Tensor:
    """``fn`` over every row of ``data[view]`` in row order, batch by batch, written into one tensor allocated
    at the first batch. Not ``torch.cat`` of a list: hundreds of small per-batch outputs kept alive between
    the batches' freed activations fragment glibc's heap, which then never shrinks. A teacher pass over 64k
    windows grew the process by ~2 GiB that way and by ~0.2 GiB like this (benchmarks/speed.py, docs/benchmarks.md)."""
    out: Optional[torch.Tensor] = None
    start = 0
    for b in data.batches(batch_size):
        z = fn(b[view].to(device))
        if out is None:
            out = z.new_empty((len(data), *z.shape[1:]))
        out[start:start + len(z)] = z
        start += len(z)
    return out if out is not None else torch.empty(0)


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, device: torch.device, view: str = "x", batch_size: int = 256) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return outputs_by_batch(lambda x: model(x).float().cpu(), data, view, device, batch_size)
    finally:
        model.train(was_training)


def unscale(values: torch.Tensor, info: DataInfo) -> torch.Tensor:
    if info.target_scale is None:
        return values
    mean, std = (torch.tensor(v, dtype=values.dtype) for v in info.target_scale)
    return values.reshape(len(values), -1) * std + mean


def evaluate(model: nn.Module, data: TensorData, info: DataInfo, device: torch.device, view: str = "x") -> dict[str, float]:
    out = predict(model, data, device, view)
    if info.task == "classification":
        return classification_metrics(out, data.y)
    return regression_metrics(unscale(out, info), unscale(data.y.float(), info))


def evaluate_val_test(model: nn.Module, val: TensorData, test: TensorData, info: DataInfo,
                      device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Validation and test metrics. For classification with a validation split, test also gets ``ece_ts``, the
    ECE after temperature scaling fitted on validation, and that ``temperature``: whether one scalar would
    calibrate the student (it leaves accuracy unchanged), e.g. DIST's underconfident students (docs/benchmarks.md)."""
    if info.task != "classification" or len(val) == 0:
        return evaluate(model, val, info, device), evaluate(model, test, info, device)
    zv, zt = predict(model, val, device), predict(model, test, device)
    t = fit_temperature(zv, val.y)
    return classification_metrics(zv, val.y), {**classification_metrics(zt, test.y), "ece_ts": ece(zt / t, test.y),
                                                "temperature": t}
