"""Offline distillation: a frozen teacher, a student, and a weighted list of loss terms from the registry.

The teacher's outputs on the un-augmented training inputs are computed once in ``setup`` (``Teachers.cache``)
and looked up by ``batch["index"]``; a term that reads teacher features runs the teacher every step instead.
Everything but the teacher's check lives in ``methods.terms.TermsMethod``, shared with the chains (born-again,
TAKD, SKKD) and the regimes that build their soft target otherwise.
"""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.methods.terms import TermsMethod
from edgedistill.registry import METHODS


@METHODS.register("offline", label_from_terms=True)
class OfflineDistillation(TermsMethod):
    """Frozen teacher -> student with weighted loss terms (ce, kd, reverse_kd, mse_to_teacher, ...).

    ``teacher`` is a ``TeacherNet`` (what a recipe gives) or a bare module reading ``teacher_view``."""

    def __init__(self, student: nn.Module, info: DataInfo, teacher: Optional[nn.Module | TeacherNet],
                 terms: list[TermConfig], teacher_view: str = "x", train: Optional[TensorData] = None,
                 **params: Any) -> None:
        teachers = Teachers.single(teacher, info, self.method_name(), view=teacher_view)
        super().__init__(student, info, teachers, terms, train, **params)
        self.teacher_view = teachers[-1].view if len(teachers) else teacher_view
