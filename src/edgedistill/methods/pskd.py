"""PSKD-style progressive cross-modal distillation with per-sample teacher selection (OUR design).

Source of the idea: J. Ni, A. H. H. Ngu, Y. Yan, "Progressive Cross-modal Knowledge Distillation for Human
Action Recognition", ACM MM 2022, arXiv 2208.08090 (spec: shared/methods/others.md section 10). The abstract
gives: a smartwatch-accelerometer student, several teachers built from the teacher modality (skeletons) and the
student modality (accelerometer), a *progressive* scheme to close the teacher-student gap, and an
"Adaptive-Confidence Semantic" (ACS) loss by which the student adaptively mimics one of the teachers *or* the
ground-truth label. No code was found; teacher fusion, schedule and the ACS formula are UNKNOWN. Everything
below is our choice, not the paper's method.

Teachers k = 1..K are frozen; each reads its own view (``teachers[i].view``) and its outputs on the training
split are cached once. Admission (progressive scheme): the teachers are ranked by their gap to the student,
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

from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kl_rows
from edgedistill.methods.base import Method, Step, TeacherNet, freeze
from edgedistill.methods.offline import stacked_teacher_outputs, teacher_outputs
from edgedistill.registry import METHODS

ORDERS = ("gap", "recipe")


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


@METHODS.register("pskd")
class PSKD(Method):
    """Teachers on their own views, admitted progressively; per sample: best confident teacher, else the label.

    Per sample the student mimics the best correct-and-confident admitted teacher, or follows the label when
    none is (our ACS rule; the paper's is not published in a source we could read)."""

    reserved = ("student", "info", "teachers")

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        teachers: Sequence[TeacherNet],
        alpha: float = 0.9,
        temperature: float = 4.0,
        min_confidence: float = 0.5,
        order: Literal["gap", "recipe"] = "gap",
        admit: Optional[list[float]] = None,
    ) -> None:
        super().__init__(student, info)
        teachers = list(teachers or [])
        if len(teachers) < 2:
            raise UserInputError(f"teachers: method 'pskd' needs at least 2 teachers in a 'teachers:' list (each with its "
                                 f"own view), got {len(teachers)}; for one teacher use method 'offline' or 'skkd'")
        if info.task != "classification":
            raise UserInputError(f"data: method 'pskd' selects teachers by their class predictions and needs a "
                                 f"classification dataset, got a {info.task} one")
        for i, t in enumerate(teachers):
            if t.view not in info.views:
                raise UserInputError(f"teachers[{i}].view: the dataset has no view '{t.view}'; available: {', '.join(info.views)}")
            freeze(t.model)
        for name, value, ok, want in (("alpha", alpha, lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
                                      ("temperature", temperature, lambda v: v > 0, "> 0"),
                                      ("min_confidence", min_confidence, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise UserInputError(f"method.params.{name}: must be a number {want}, got {value!r}")
        if order not in ORDERS:
            raise UserInputError(f"method.params.order: expected one of {', '.join(ORDERS)}, got {order!r}")
        k = len(teachers)
        admit = [r / k for r in range(k)] if admit is None else admit
        if (not isinstance(admit, (list, tuple)) or len(admit) != k or any(isinstance(a, bool) or not isinstance(a, (int, float)) for a in admit)
                or any(not 0.0 <= a < 1.0 for a in admit) or list(admit) != sorted(admit)):
            raise UserInputError(f"method.params.admit: expected {k} non-decreasing fractions of training in [0, 1) "
                                 f"(when the 1st, 2nd, ... teacher in admission order joins), got {admit!r}")
        self.teachers = teachers
        self.teacher = teachers[-1].model
        self.alpha, self.temperature, self.min_confidence = alpha, temperature, min_confidence
        self.order_by, self.admit = order, [float(a) for a in admit]
        self.rank: list[int] = list(range(k))  # teachers in admission order (indices into self.teachers)
        self._cached: Optional[torch.Tensor] = None  # (K, N, C), in admission order
        self._train_y: Optional[torch.Tensor] = None

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        for t in self.teachers:
            freeze(t.model.to(device))
        if self.order_by == "gap" and val is not None and len(val) > 0:
            self.rank = sorted(range(len(self.teachers)), key=lambda k: self._closeness(k, val, device))
        self._cached = stacked_teacher_outputs([self.teachers[k] for k in self.rank], train, device)
        self._train_y = train.y.to(self._cached.device)

    def _closeness(self, k: int, val: TensorData, device: torch.device) -> tuple[float, float]:
        """Sort key: lower validation accuracy, then higher validation NLL = smaller gap to the student = earlier."""
        t = self.teachers[k]
        z = teacher_outputs(t.model, val, t.view, device).float().cpu()
        acc = float((z.argmax(1) == val.y).float().mean())
        nll = float(F.cross_entropy(z, val.y))
        return acc, -nll

    def admitted(self, progress: float) -> torch.Tensor:
        """(K,) bool in admission order: which teachers the student may follow at this fraction of training."""
        return torch.tensor([progress >= a for a in self.admit])

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        assert self._cached is not None, "setup() caches the teachers' outputs before training"
        z_t = self._cached[:, batch["index"].to(self._cached.device)]
        z_s = self.networks["student"](batch["x"])
        choice = acs_select(z_t, batch["y"], self.min_confidence, self.admitted(step.progress))
        return acs_loss(z_s, z_t, batch["y"], choice, self.alpha, self.temperature)

    def describe(self) -> dict[str, Any]:
        """Admission order and, per stage, the fraction of training rows that follow each teacher or the label.
        The choice depends only on the frozen teachers' cached outputs and the labels, never on the student."""
        names = [self.teachers[k].name for k in self.rank]
        out: dict[str, Any] = {"method": "pskd", "admission_order": names, "admit": self.admit}
        if self._cached is not None and self._train_y is not None:
            stages = []
            for s in range(len(names)):
                mask = torch.arange(len(names)) <= s
                choice = acs_select(self._cached, self._train_y, self.min_confidence, mask).cpu()
                share = {n: round(float((choice == k).float().mean()), 4) for k, n in enumerate(names[: s + 1])}
                stages.append({"from": self.admit[s], **share, "label": round(float((choice < 0).float().mean()), 4)})
            out["followed"] = stages
        return out
