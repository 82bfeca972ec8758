"""PSKD-style progressive cross-modal distillation with per-sample teacher selection (OUR design).

Source of the idea: J. Ni, A. H. H. Ngu, Y. Yan, "Progressive Cross-modal Knowledge Distillation for Human
Action Recognition", ACM MM 2022, arXiv 2208.08090. The abstract
gives: a smartwatch-accelerometer student, several teachers built from the teacher modality (skeletons) and the
student modality (accelerometer), a *progressive* scheme to close the teacher-student gap, and an
"Adaptive-Confidence Semantic" (ACS) loss by which the student adaptively mimics one of the teachers *or* the
ground-truth label. No code was found; teacher fusion, schedule and the ACS formula are UNKNOWN. Everything
below is our choice, not the paper's method.

Teachers k = 1..K are frozen; each reads its own view (``teachers[i].view``) and its outputs on the training
split are cached once (``Teachers.cache``, in admission order). Admission (progressive scheme): the teachers are ranked by their gap to the student,
smallest first -- measured as the teacher's validation accuracy (then validation NLL, higher first), since the
student's own accuracy is common to every gap -- and teacher of rank r is admitted once
``step.progress >= admit[r]`` (default admit[r] = r / K). ACS selection, per sample i, among admitted teachers:

    eligible_k,i = [argmax_c p_k,i(c) = y_i]  and  [p_k,i(y_i) >= min_confidence]        p_k = softmax(z_k), T = 1
    c_i          = the eligible k with the largest p_k,i(y_i) (ties: earliest admitted); none eligible -> label
    L = mean_i  m_i [ (1 - alpha) CE_i + alpha T^2 KL(softmax(z_c_i,i / T) || softmax(z_s,i / T)) ]
              + (1 - m_i) CE_i                                                          m_i = [a teacher was chosen]

so a sample no teacher gets right follows the label with the full weight, and when every sample picks the
same teacher L is exactly Hinton KD from it, (1 - alpha) CE + alpha KD.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kl_rows
from edgedistill.methods.base import Method, Step
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.params import Params
from edgedistill.registry import METHODS


def acs_select(teacher_logits: torch.Tensor, target: torch.Tensor, min_confidence: float = 0.5,
               admitted: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample choice (B,) from (K, B, C) teacher logits: the index of the admitted teacher that is correct and
    confident with the highest true-class probability, or -1 (follow the label) when there is none."""
    probs = F.softmax(teacher_logits.float(), dim=-1)  # the selection is a decision, not a gradient path
    true_p = probs.gather(2, target.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(2)  # (K, B)
    ok = (probs.argmax(dim=2) == target.view(1, -1)) & (true_p >= min_confidence)
    if admitted is not None:
        ok &= admitted.view(-1, 1).to(ok.device)
    score = torch.where(ok, true_p, torch.full_like(true_p, -1.0))
    best = score.argmax(dim=0)  # first maximum: the earliest teacher in the given (admission) order wins ties
    return torch.where(ok.any(dim=0), best, torch.full_like(best, -1))


def acs_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, choice: torch.Tensor,
             alpha: float = 0.9, temperature: float = 4.0) -> dict[str, torch.Tensor]:
    """The two weighted terms of L above for a given per-sample ``choice`` (-1 = label); they sum to L."""
    chosen = choice >= 0
    ce_rows = F.cross_entropy(student_logits, target, reduction="none")
    ce_w = torch.where(chosen, torch.full_like(ce_rows, 1.0 - alpha), torch.ones_like(ce_rows))
    picked = teacher_logits[choice.clamp_min(0), torch.arange(len(target), device=target.device)]  # (B, C)
    rows = temperature**2 * kl_rows(picked.to(student_logits.dtype), student_logits, temperature)
    return {"ce": (ce_w * ce_rows).mean(), "kd": alpha * (chosen.to(rows.dtype) * rows).mean()}


class PSKDParams(Params):
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the KD term for a sample that follows a teacher "
                                                          "(its CE gets 1 - alpha; a sample that follows the label, 1)")
    temperature: float = Field(4.0, gt=0.0, description="softmax temperature T of the KD term")
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="least true-class probability (T = 1) for a "
                                                                   "correct teacher to be followed")
    order: Literal["gap", "recipe"] = Field("gap", description="admission order: gap (smallest gap to the student "
                                                               "first, by validation accuracy then NLL) or recipe")
    admit: Optional[list[Annotated[float, Field(ge=0.0, lt=1.0)]]] = Field(
        None, description="per teacher in admission order, the fraction of training at which it joins "
                          "(non-decreasing); default r / K for rank r")

    @field_validator("admit")
    @classmethod
    def _non_decreasing(cls, value: Optional[list[float]]) -> Optional[list[float]]:
        if value is not None and value != sorted(value):
            raise ValueError("expected non-decreasing fractions of training (when the 1st, 2nd, ... teacher in "
                             "admission order joins)")
        return value


@METHODS.register("pskd")
class PSKD(Method):
    """Teachers on their own views, admitted progressively; per sample: best confident teacher, else the label.

    Per sample the student mimics the best correct-and-confident admitted teacher, or follows the label when
    none is (our ACS rule; the paper's is not published in a source we could read)."""

    Params = PSKDParams
    task = "classification"
    task_why = "selects teachers by their class predictions"

    def __init__(self, student: nn.Module, info: DataInfo, teachers: Sequence[TeacherNet], **params: Any) -> None:
        super().__init__(student, info, **params)
        self.teachers = Teachers(teachers, info, self.method_name(), minimum=2,
                                 hint="; for one teacher use method 'offline' or 'skkd'")
        k = len(self.teachers)
        admit = [r / k for r in range(k)] if self.params.admit is None else self.params.admit
        if len(admit) != k:
            raise UserInputError(f"method.params.admit: expected {k} non-decreasing fractions of training in [0, 1) "
                                 f"(when the 1st, 2nd, ... teacher in admission order joins), got {list(admit)!r}")
        self.teacher = self.teachers[-1].model
        self.admit = [float(a) for a in admit]
        # The recipe's teacher indices in admission order; ``self.teachers`` is kept in that order from setup on.
        self.rank: list[int] = list(range(k))
        self._train_y: Optional[torch.Tensor] = None

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self.teachers.place(device)
        order = list(range(len(self.teachers)))
        if self.params.order == "gap" and val is not None and len(val) > 0:
            order = sorted(order, key=lambda k: self._closeness(k, val, device))
        self.teachers.reorder(order)  # a stable sort: a second setup (resume) keeps the order it found
        self.rank = [self.rank[k] for k in order]
        if self.teachers.cache(train, device, input_changes=self.teacher_input_changes):
            self._train_y = train.y.to(self.teachers.cached_stack().device)

    def _closeness(self, k: int, val: TensorData, device: torch.device) -> tuple[float, float]:
        """Sort key: lower validation accuracy, then higher validation NLL = smaller gap to the student = earlier."""
        z = self.teachers.outputs(val, device, k).float().cpu()
        acc = float((z.argmax(1) == val.y).float().mean())
        nll = float(F.cross_entropy(z, val.y))
        return acc, -nll

    def admitted(self, progress: float) -> torch.Tensor:
        """(K,) bool in admission order: which teachers the student may follow at this fraction of training."""
        return torch.tensor([progress >= a for a in self.admit])

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        z_t = torch.stack(self.teachers.all_logits(batch))  # (K, B, C), in admission order
        z_s = self.networks["student"](batch["x"])
        p = self.params
        choice = acs_select(z_t, batch["y"], p.min_confidence, self.admitted(step.progress))
        return acs_loss(z_s, z_t, batch["y"], choice, p.alpha, p.temperature)

    def describe(self) -> dict[str, Any]:
        """Admission order and, per stage, the fraction of training rows that follow each teacher or the label.
        The choice depends only on the frozen teachers' cached outputs and the labels, never on the student."""
        names = self.teachers.names
        out: dict[str, Any] = {**super().describe(), "admission_order": names, "admit": self.admit}
        if self.teachers.cached and self._train_y is not None:
            stages = []
            for s in range(len(names)):
                mask = torch.arange(len(names)) <= s
                choice = acs_select(self.teachers.cached_stack(), self._train_y, self.params.min_confidence, mask).cpu()
                share = {n: round(float((choice == k).float().mean()), 4) for k, n in enumerate(names[: s + 1])}
                stages.append({"from": self.admit[s], **share, "label": round(float((choice < 0).float().mean()), 4)})
            out["followed"] = stages
        return out
