"""Predict over a whole split and compute the task's metrics (regression in original units)."""
from __future__ import annotations

import torch
from torch import nn

from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.metrics import classification_metrics, regression_metrics


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, device: torch.device, view: str = "x", batch_size: int = 256) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        outs = [model(b[view].to(device)).float().cpu() for b in data.batches(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs)


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
