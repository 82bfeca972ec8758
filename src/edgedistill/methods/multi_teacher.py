"""Averaged teachers: the student learns from the (weighted) mean of several frozen teachers' predictions.

    q_i = sum_k w_k softmax(z_k,i / T)                       (space: probs, the default)
    q_i = softmax( sum_k w_k z_k,i / T )                     (space: logits)
    L   = the recipe's terms, default 0.1 CE(z_s, y) + 0.9 T^2 mean_i KL(q_i || softmax(z_s,i / T)), T = 4

The regime only changes where the soft target comes from: it offers the terms ``teacher_logits`` whose softmax at
the terms' temperature is q (the weighted mean logits, or T log q for probabilities: softmax(T log q / T) = q), so
``kd``, ``dist``, ``dkd`` ... all read the averaged teachers, weighted by the recipe. In probability space q depends
on T, so the terms reading the teachers must share one temperature. w defaults to uniform and is renormalised to sum to 1. This is the classic multi-teacher baseline (Hinton et
al. 2015 distil an ensemble; the weighted form is the TA-ensemble target of Ganta et al., arXiv 2206.12005,
whose averaging space is UNKNOWN: both are offered, probabilities by our
choice as the default; its differential-evolution search for w is not implemented). The teachers' outputs
on the training split are cached once in ``setup`` (``Teachers.cache``).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.multiteacher import average_probs
from edgedistill.methods.base import Step
from edgedistill.methods.teachers import TeacherNet, Teachers, freeze
from edgedistill.methods.terms import HINTON_TERMS, TermsMethod, TermsParams
from edgedistill.models.ensemble import ProbabilityEnsemble
from edgedistill.registry import METHODS



def mean_logits(teacher_logits: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k z_k with w renormalised to sum to 1."""
    w = (weights / weights.sum()).to(teacher_logits[0])
    return sum(wk * zk for wk, zk in zip(w, teacher_logits))  # type: ignore[return-value]


def ensemble_target(teacher_logits: Sequence[torch.Tensor], temperature: float, space: str = "probs",
                    weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The averaged teachers' softened distribution q (B, C), in probability or logit space."""
    if space == "probs":
        return average_probs(teacher_logits, temperature, weights)
    w = torch.ones(len(teacher_logits)) if weights is None else weights
    return F.softmax(mean_logits(teacher_logits, w) / temperature, dim=1)


class LogitEnsemble(nn.Module):
    """Weighted mean of the members' logits (the ensemble matching ``space: logits``; eval only)."""

    def __init__(self, members: Sequence[nn.Module], weights: torch.Tensor) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", weights / weights.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(w * m(x) for w, m in zip(self.weights, self.members))


class MultiTeacherParams(TermsParams):
    space: Literal["probs", "logits"] = Field("probs", description="average the teachers' softened probabilities "
                                                                   "(probs) or their logits (logits)")
    weights: Optional[list[Annotated[float, Field(ge=0.0)]]] = Field(
        None, description="one non-negative weight per teacher (renormalised to sum 1); default uniform")

    @field_validator("weights")
    @classmethod
    def _positive_sum(cls, value: Optional[list[float]]) -> Optional[list[float]]:
        if value is not None and not sum(value) > 0:
            raise ValueError("expected non-negative numbers (one per teacher) with a positive sum")
        return value


@METHODS.register("multi_teacher")
class MultiTeacher(TermsMethod):
    """The recipe's terms (default 0.1 CE + 0.9 KD, T = 4) with the mean of the teachers' softened predictions as
    the soft target; teachers frozen."""

    Params = MultiTeacherParams
    task = "classification"
    default_terms = HINTON_TERMS

    def __init__(self, student: nn.Module, info: DataInfo, teachers: Sequence[TeacherNet],
                 terms: Sequence[TermConfig] = (), train: Optional[TensorData] = None, **params: Any) -> None:
        group = Teachers(teachers, info, self.method_name(), minimum=2)
        super().__init__(student, info, group, terms, train, **params)
        k = len(self.teachers)
        weights = self.params.weights
        if weights is not None and len(weights) != k:
            raise UserInputError(f"method.params.weights: expected {k} non-negative numbers (one per teacher) with a "
                                 f"positive sum, got {list(weights)!r}")
        w = torch.ones(k) if weights is None else torch.as_tensor(weights, dtype=torch.float32).flatten()
        self.weights = w / w.sum()
        self.temperature = self.soft_target_temperature() if self.params.space == "probs" else None
        self._ensemble: Optional[nn.Module] = None

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        super().setup(train, device, val)
        if all(t.view == "x" for t in self.teachers):
            # Reported as an extra row; only when every teacher reads the student's view, since the engine
            # evaluates extra networks on "x". Built in eval mode so evaluation never flips the teachers to train.
            models = self.teachers.models
            ens = (ProbabilityEnsemble(models, self.weights.tolist()) if self.params.space == "probs"
                   else LogitEnsemble(models, self.weights))
            self._ensemble = freeze(ens.to(device))

    def teacher_logits(self, batch: Batch, step: Optional[Step], use_cache: bool = True) -> torch.Tensor:
        """Logits of the averaged teachers: the weighted mean logits, or T log q for probabilities averaged at T."""
        z = self.teachers.all_logits(batch) if use_cache else [self.teachers.run(batch, k) for k in range(len(self.teachers))]
        w = self.weights.to(z[0].device)
        if self.params.space == "logits":
            return mean_logits(z, w)
        t = self.temperature
        return t * torch.log(average_probs(z, t, w))  # type: ignore[operator]

    def evaluated(self) -> dict[str, nn.Module]:
        return {"teacher ensemble": self._ensemble} if self._ensemble is not None else {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "teachers": self.teachers.names, "weights": self.weights.tolist()}
