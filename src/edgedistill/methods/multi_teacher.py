"""Averaged teachers: the student learns from the (weighted) mean of several frozen teachers' predictions.

    q_i = sum_k w_k softmax(z_k,i / T)                       (space: probs, the default)
    q_i = softmax( sum_k w_k z_k,i / T )                     (space: logits)
    L   = (1 - alpha) CE(z_s, y) + alpha T^2 mean_i KL(q_i || softmax(z_s,i / T))

w defaults to uniform and is renormalised to sum to 1. This is the classic multi-teacher baseline (Hinton et
al. 2015 distil an ensemble; the weighted form is the TA-ensemble target of Ganta et al., arXiv 2206.12005,
shared/methods/others.md section 3, whose averaging space is UNKNOWN: both are offered, probabilities by our
choice as the default; its differential-evolution search for w is not implemented). The teachers' outputs
on the training split are cached once in ``setup`` (``Teachers.cache``).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.multiteacher import average_probs
from edgedistill.losses.response import ce, kd_to_distribution
from edgedistill.methods.base import Method, Step
from edgedistill.methods.teachers import TeacherNet, Teachers, freeze
from edgedistill.models.ensemble import ProbabilityEnsemble
from edgedistill.params import Params
from edgedistill.registry import METHODS


def ensemble_target(teacher_logits: Sequence[torch.Tensor], temperature: float, space: str = "probs",
                    weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The averaged teachers' softened distribution q (B, C), in probability or logit space."""
    if space == "probs":
        return average_probs(teacher_logits, temperature, weights)
    w = torch.full((len(teacher_logits),), 1.0 / len(teacher_logits)) if weights is None else weights / weights.sum()
    z = sum(wk * zk for wk, zk in zip(w.to(teacher_logits[0]), teacher_logits))
    return F.softmax(z / temperature, dim=1)


class LogitEnsemble(nn.Module):
    """Weighted mean of the members' logits (the ensemble matching ``space: logits``; eval only)."""

    def __init__(self, members: Sequence[nn.Module], weights: torch.Tensor) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", weights / weights.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(w * m(x) for w, m in zip(self.weights, self.members))


class MultiTeacherParams(Params):
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the KD term; the label CE gets 1 - alpha")
    temperature: float = Field(4.0, gt=0.0, description="softmax temperature T of the teachers and the student")
    space: Literal["probs", "logits"] = Field("probs", description="average the teachers' softened probabilities "
                                                                   "(probs) or their logits (logits)")
    weights: Optional[list[Annotated[float, Field(ge=0.0)]]] = Field(
        None, description="one non-negative weight per teacher (renormalised to sum 1); default uniform")
    cache_teacher: bool = Field(True, description="look the teachers' outputs up by training row instead of running "
                                                 "them each step")

    @field_validator("weights")
    @classmethod
    def _positive_sum(cls, value: Optional[list[float]]) -> Optional[list[float]]:
        if value is not None and not sum(value) > 0:
            raise ValueError("expected non-negative numbers (one per teacher) with a positive sum")
        return value


@METHODS.register("multi_teacher")
class MultiTeacher(Method):
    """(1 - alpha) CE + alpha T^2 KL(mean of the teachers' softened predictions || student); teachers frozen."""

    Params = MultiTeacherParams

    def __init__(self, student: nn.Module, info: DataInfo, teachers: Sequence[TeacherNet], **params: Any) -> None:
        super().__init__(student, info, **params)
        self.teachers = Teachers(teachers, info, self.method_name(), minimum=2, task="classification")
        k = len(self.teachers)
        weights = self.params.weights
        if weights is not None and len(weights) != k:
            raise UserInputError(f"method.params.weights: expected {k} non-negative numbers (one per teacher) with a "
                                 f"positive sum, got {list(weights)!r}")
        w = torch.ones(k) if weights is None else torch.as_tensor(weights, dtype=torch.float32).flatten()
        self.weights = w / w.sum()
        self.teacher = self.teachers[-1].model
        self._ensemble: Optional[nn.Module] = None

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self.teachers.place(device)
        if self.params.cache_teacher:
            self.teachers.cache(train, device, input_changes=self.teacher_input_changes)
        if all(t.view == "x" for t in self.teachers):
            # Reported as an extra row; only when every teacher reads the student's view, since the engine
            # evaluates extra networks on "x". Built in eval mode so evaluation never flips the teachers to train.
            models = self.teachers.models
            ens = (ProbabilityEnsemble(models, self.weights.tolist()) if self.params.space == "probs"
                   else LogitEnsemble(models, self.weights))
            self._ensemble = freeze(ens.to(device))

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        s = self.networks["student"](batch["x"])
        p = self.params
        q = ensemble_target(self.teachers.all_logits(batch), p.temperature, p.space, self.weights.to(s.device))
        return {"ce": (1.0 - p.alpha) * ce(s, batch["y"]), "kd": p.alpha * kd_to_distribution(s, q, p.temperature)}

    def evaluated(self) -> dict[str, nn.Module]:
        return {"teacher ensemble": self._ensemble} if self._ensemble is not None else {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "teachers": self.teachers.names, "weights": self.weights.tolist(),
                "teacher_cached": self.teachers.cached}
