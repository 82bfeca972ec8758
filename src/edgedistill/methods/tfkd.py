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

from typing import Any, Optional

import torch
from torch import nn

from edgedistill.config import Recipe, TeacherConfig
from edgedistill.data.dataset import Batch, DataInfo
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd_to_distribution
from edgedistill.methods.base import Method, Step
from edgedistill.registry import METHODS


def virtual_teacher(target: torch.Tensor, n_classes: int, a: float = 0.99, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """(N, C) distribution p^d: ``a`` on each row's class ``target[i]``, ``(1 - a) / (C - 1)`` on the others."""
    if n_classes < 2:
        raise UserInputError(f"virtual_teacher: needs at least 2 classes, got {n_classes}")
    if not 0.0 < a <= 1.0:
        raise UserInputError(f"virtual_teacher: a must be in (0, 1], got {a!r}")
    p = torch.full((len(target), n_classes), (1.0 - a) / (n_classes - 1), dtype=dtype or torch.get_default_dtype(),
                   device=target.device)
    return p.scatter_(1, target.long().view(-1, 1), a)


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log p / T): the distribution of a teacher whose logits are log p, at temperature T (rows of 0
    stay 0). At T = 1 it returns p."""
    return torch.softmax(torch.log(probs) / temperature, dim=1)


@METHODS.register("tfkd")
class TeacherFreeKD(Method):
    """The student alone with a label-derived virtual teacher: (1 - alpha) CE + alpha T^2 KL(p^d_T || p_T)."""

    def __init__(self, student: nn.Module, info: DataInfo, alpha: float = 0.1, temperature: float = 20.0,
                 correct_prob: float = 0.99) -> None:
        super().__init__(student, info)
        if info.task != "classification":
            raise UserInputError(f"method.name: tfkd needs a classification task, the dataset is {info.task}")
        c = info.n_outputs
        for key, value, ok, want in (
            ("alpha", alpha, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
            ("temperature", temperature, lambda v: v > 0, "a number > 0"),
            # a < 1/C would make the virtual teacher prefer the wrong classes.
            ("correct_prob", correct_prob, lambda v: 1.0 / c <= v <= 1.0, f"a number in [1/C, 1] = [{1 / c:.3g}, 1]"),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise UserInputError(f"method.params.{key}: expected {want}, got {value!r}")
        self.alpha, self.temperature, self.correct_prob = float(alpha), float(temperature), float(correct_prob)

    @classmethod
    def teacher_plan(cls, recipe: Recipe, seed: int) -> list[TeacherConfig]:
        if recipe.teacher is not None or recipe.teachers:
            raise UserInputError("teacher: tfkd is teacher-free (its teacher is built from the labels); "
                                 "remove the 'teacher'/'teachers' section")
        return []

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        z = self.networks["student"](batch["x"])
        target = soften(virtual_teacher(batch["y"], z.shape[1], self.correct_prob, dtype=z.dtype), self.temperature)
        return {
            "ce": (1.0 - self.alpha) * ce(z, batch["y"]),
            "virtual_kd": self.alpha * kd_to_distribution(z, target, self.temperature),
        }

    def describe(self) -> dict[str, Any]:
        return {"method": "tfkd", "alpha": self.alpha, "temperature": self.temperature,
                "correct_prob": self.correct_prob}
