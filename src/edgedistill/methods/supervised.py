"""The student alone: the task loss on labels, no teacher. Also how teachers are trained."""
from __future__ import annotations

import torch
from pydantic import Field

from edgedistill.data.dataset import Batch
from edgedistill.losses import ce, mse
from edgedistill.methods.base import Method, Step
from edgedistill.params import Params
from edgedistill.registry import METHODS


class SupervisedParams(Params):
    label_smoothing: float = Field(0.0, ge=0.0, le=1.0, description="cross-entropy label smoothing (classification)")


@METHODS.register("supervised", baseline=True)
class Supervised(Method):
    """Train one network on the labels only (cross-entropy, or MSE for regression); the baseline."""

    Params = SupervisedParams
    augmentation_support = frozenset({"soft_targets"})  # ce takes mixed label probabilities
    fixed_graph = True  # one network, one loss on its output, every step

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        out = self.networks["student"](batch["x"])
        if self.info.task == "classification":
            return {"ce": ce(out, batch["y"], label_smoothing=self.params.label_smoothing)}
        return {"mse": mse(out, batch["y"])}
