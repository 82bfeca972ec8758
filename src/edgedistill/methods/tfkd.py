"""Teacher-free KD with a manually designed (virtual) teacher: Tf-KD_reg.

Yuan, Tay, Li, Wang, Feng, "Revisiting Knowledge Distillation via Label Smoothing Regularization", CVPR 2020,
arXiv 1909.11723 (spec: others.md §11, "Teacher-free KD"). The virtual teacher puts probability ``a`` on the
true class and spreads the rest uniformly::

    p^d_c = a if c = y else (1 - a) / (C - 1)
    L = (1 - alpha) * CE(z, y) + alpha * T^2 * mean_i KL(p^d_T,i || softmax(z_i / T))
    p^d_T = softmax(log p^d / T)          (the virtual teacher's distribution at temperature T)

Our form, not the official code's (``my_loss_function.loss_kd_regularization``), which computes
``nn.KLDivLoss()(log_softmax(z), softmax(p^d / T)) * multiplier``: (i) it applies softmax to an already
normalised distribution divided by T, which for its T = 20 / 40 is almost uniform (e.g. C = 100, a = 0.99,
T = 20: the true class gets 1.05 %, the others 1.00 %), so it acts as a pull towards the uniform
distribution; (ii) ``nn.KLDivLoss()`` averages over B*C elements (batch-mean KL / C), compensated by the
per-experiment ``multiplier``; (iii) the student side is at T = 1 and there is no T^2. We keep the paper's
notion of "the virtual teacher at temperature T" as the teacher whose logits are log p^d (at T = 1 the target
is p^d itself) and the batch-mean KL with Hinton's T^2, so the weight means the same as in ``kd``.

Tf-KD_self (a trained copy of the student as its teacher) is ``born_again`` with ``generations: 1`` and
the terms ``[{loss: ce, weight: 1-alpha}, {loss: kd, weight: alpha, temperature: T}]``; it has no code here.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd_to_distribution
from edgedistill.losses.virtual import soften, virtual_teacher
from edgedistill.methods.base import Method, Step
from edgedistill.params import Params
from edgedistill.registry import METHODS

__all__ = ["TeacherFreeKD", "TfKDParams", "soften", "virtual_teacher"]


class TfKDParams(Params):
    alpha: float = Field(0.1, ge=0.0, le=1.0, description="weight of the virtual-teacher KD term; (1 - alpha) on CE")
    temperature: float = Field(20.0, gt=0.0, description="softmax temperature T of both sides of the KL (T^2 scaling)")
    correct_prob: float = Field(0.99, ge=0.0, le=1.0, description="the virtual teacher's probability a on the true "
                                                                 "class, at least 1/C (the rest spread uniformly)")


@METHODS.register("tfkd")
class TeacherFreeKD(Method):
    """The student alone with a label-derived virtual teacher: (1 - alpha) CE + alpha T^2 KL(p^d_T || p_T)."""

    Params = TfKDParams
    trains_own_teacher = "its teacher is built from the labels"

    def __init__(self, student: nn.Module, info: DataInfo, **params: Any) -> None:
        super().__init__(student, info, **params)
        if info.task != "classification":
            raise UserInputError(f"method.name: tfkd needs a classification task, the dataset is {info.task}")
        c = info.n_outputs
        if self.params.correct_prob < 1.0 / c:  # a < 1/C would make the virtual teacher prefer the wrong classes
            raise UserInputError(f"method.params.correct_prob: expected a number in [1/C, 1] = [{1 / c:.3g}, 1], "
                                 f"got {self.params.correct_prob!r}")

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        p = self.params
        z = self.networks["student"](batch["x"])
        target = soften(virtual_teacher(batch["y"], z.shape[1], p.correct_prob, dtype=z.dtype), p.temperature)
        return {
            "ce": (1.0 - p.alpha) * ce(z, batch["y"]),
            "virtual_kd": p.alpha * kd_to_distribution(z, target, p.temperature),
        }
