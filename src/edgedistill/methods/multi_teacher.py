"""Averaged teachers: the student learns from the (weighted) mean of several frozen teachers' predictions.

    q_i = sum_k w_k softmax(z_k,i / T)                       (space: probs, the default)
    q_i = softmax( sum_k w_k z_k,i / T )                     (space: logits)
    L   = (1 - alpha) CE(z_s, y) + alpha T^2 mean_i KL(q_i || softmax(z_s,i / T))

w defaults to uniform and is renormalised to sum to 1. This is the classic multi-teacher baseline (Hinton et
al. 2015 distil an ensemble; the weighted form is the TA-ensemble target of Ganta et al., arXiv 2206.12005,
shared/methods/others.md section 3, whose averaging space is UNKNOWN: both are offered, probabilities by our
choice as the default; its differential-evolution search for w is not implemented). The teachers' outputs
on the training split are cached once in ``setup``. The helpers here (``check_teachers``, ``check_params``)
are shared with the other multi-teacher regimes (camkd, roskd).
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.multiteacher import average_probs
from edgedistill.losses.response import ce, kd_to_distribution
from edgedistill.methods.base import Method, Step, TeacherNet, freeze
from edgedistill.methods.offline import stacked_teacher_outputs
from edgedistill.models.ensemble import ProbabilityEnsemble
from edgedistill.registry import METHODS

SPACES = ("probs", "logits")


def check_teachers(teachers: Optional[Sequence[TeacherNet]], method: str, info: DataInfo, minimum: int = 2) -> list[TeacherNet]:
    """The recipe's teachers, frozen; a regime that averages or weighs teachers needs at least ``minimum``."""
    teachers = list(teachers or [])
    if len(teachers) < minimum:
        raise UserInputError(
            f"teachers: method '{method}' needs at least {minimum} teachers in a 'teachers:' list, got {len(teachers)}"
        )
    if info.task != "classification":
        raise UserInputError(f"data: method '{method}' distils class probabilities and needs a classification dataset, "
                             f"got a {info.task} one")
    for i, t in enumerate(teachers):
        if t.view not in info.views:
            raise UserInputError(f"teachers[{i}].view: the dataset has no view '{t.view}'; available: {', '.join(info.views)}")
        freeze(t.model)
    return teachers


def check_params(method: str, *, alpha: Optional[float] = None, temperature: Optional[float] = None) -> None:
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise UserInputError(f"method.params.alpha: must be in [0, 1] for method '{method}', got {alpha}")
    if temperature is not None and not temperature > 0:
        raise UserInputError(f"method.params.temperature: must be > 0 for method '{method}', got {temperature}")


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


@METHODS.register("multi_teacher")
class MultiTeacher(Method):
    """(1 - alpha) CE + alpha T^2 KL(mean of the teachers' softened predictions || student); teachers frozen."""

    reserved = ("student", "info", "teachers")

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        teachers: Sequence[TeacherNet],
        alpha: float = 0.9,
        temperature: float = 4.0,
        space: Literal["probs", "logits"] = "probs",
        weights: Optional[list[float]] = None,
        cache_teacher: bool = True,
    ) -> None:
        super().__init__(student, info)
        self.teachers = check_teachers(teachers, "multi_teacher", info)
        check_params("multi_teacher", alpha=alpha, temperature=temperature)
        if space not in SPACES:
            raise UserInputError(f"method.params.space: expected one of {', '.join(SPACES)}, got {space!r}")
        k = len(self.teachers)
        if weights is None:
            w = torch.ones(k)
        else:
            w = torch.as_tensor(weights, dtype=torch.float32).flatten() if isinstance(weights, (list, tuple)) else None
            if w is None or len(w) != k or bool((w < 0).any()) or float(w.sum()) <= 0:
                raise UserInputError(f"method.params.weights: expected {k} non-negative numbers (one per teacher) with a "
                                     f"positive sum, got {weights!r}")
        self.weights = w / w.sum()
        self.alpha, self.temperature, self.space, self.cache_teacher = alpha, temperature, space, cache_teacher
        self.teacher = self.teachers[-1].model
        self._cached: Optional[torch.Tensor] = None
        self._ensemble: Optional[nn.Module] = None

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        for t in self.teachers:
            freeze(t.model.to(device))
        if self.cache_teacher:
            self._cached = stacked_teacher_outputs(self.teachers, train, device)
        if all(t.view == "x" for t in self.teachers):
            # Reported as an extra row; only when every teacher reads the student's view, since the engine
            # evaluates extra networks on "x". Built in eval mode so evaluation never flips the teachers to train.
            models = [t.model for t in self.teachers]
            ens = (ProbabilityEnsemble(models, self.weights.tolist()) if self.space == "probs"
                   else LogitEnsemble(models, self.weights))
            self._ensemble = freeze(ens.to(device))

    def teacher_logits(self, batch: Batch) -> list[torch.Tensor]:
        if self._cached is not None:
            return list(self._cached[:, batch["index"].to(self._cached.device)])
        with torch.no_grad():
            return [t.model(batch[t.view]) for t in self.teachers]

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        s = self.networks["student"](batch["x"])
        q = ensemble_target(self.teacher_logits(batch), self.temperature, self.space, self.weights.to(s.device))
        return {"ce": (1.0 - self.alpha) * ce(s, batch["y"]), "kd": self.alpha * kd_to_distribution(s, q, self.temperature)}

    def evaluated(self) -> dict[str, nn.Module]:
        return {"teacher ensemble": self._ensemble} if self._ensemble is not None else {}

    def describe(self) -> dict[str, Any]:
        return {"method": "multi_teacher", "teachers": [t.name for t in self.teachers], "alpha": self.alpha,
                "temperature": self.temperature, "space": self.space, "weights": self.weights.tolist(),
                "teacher_cached": self._cached is not None}
