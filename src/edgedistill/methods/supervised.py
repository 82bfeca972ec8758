"""The student alone: the task loss on labels, no teacher. Also how teachers are trained."""
from __future__ import annotations

import torch
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo
from edgedistill.losses import ce, mse
from edgedistill.methods.base import Method, Step
from edgedistill.registry import METHODS


@METHODS.register("supervised")
class Supervised(Method):
    """Train one network on the labels only (cross-entropy, or MSE for regression); the baseline."""

    augmentation_support = frozenset({"soft_targets"})  # ce takes mixed label probabilities

    def __init__(self, student: nn.Module, info: DataInfo, label_smoothing: float = 0.0) -> None:
        super().__init__(student, info)
        self.label_smoothing = label_smoothing

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        out = self.networks["student"](batch["x"])
        if self.info.task == "classification":
            return {"ce": ce(out, batch["y"], label_smoothing=self.label_smoothing)}
        return {"mse": mse(out, batch["y"])}
