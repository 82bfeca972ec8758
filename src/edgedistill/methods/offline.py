"""Offline distillation: a frozen teacher, a student, and a weighted list of loss terms from the registry.

The teacher's outputs on the un-augmented training inputs are computed once in ``setup`` (``Teachers.cache``)
and looked up by ``batch["index"]``; a term that reads teacher features runs the teacher every step instead.
Everything but the teacher's check lives in ``methods.terms.TermsMethod``, shared with the chains (born-again,
TAKD, SKKD) and the regimes that build their soft target otherwise.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from torch import nn

from edgedistill.config import Recipe, StageConfig, TermConfig
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.methods.base import Method
from edgedistill.methods.stages import stage_epochs
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.methods.terms import TermsMethod
from edgedistill.registry import METHODS


@METHODS.register("offline", label_from_terms=True)
class OfflineDistillation(TermsMethod):
    """Frozen teacher -> student with weighted loss terms (ce, kd, reverse_kd, mse_to_teacher, ...).

    ``teacher`` is a ``TeacherNet`` (what a recipe gives) or a bare module reading ``teacher_view``. ``stages``
    (``method.stages``, their epochs filled in): staged training, methods/stages.py."""

    def __init__(self, student: nn.Module, info: DataInfo, teacher: Optional[nn.Module | TeacherNet],
                 terms: list[TermConfig], teacher_view: str = "x", train: Optional[TensorData] = None,
                 stages: Sequence[StageConfig] = (), **params: Any) -> None:
        teachers = Teachers.single(teacher, info, self.method_name(), view=teacher_view)
        super().__init__(student, info, teachers, terms, train, stages, **params)
        self.teacher_view = teachers[-1].view if len(teachers) else teacher_view

    @classmethod
    def from_recipe(cls, recipe: Recipe, **given: Any) -> Method:
        if not recipe.method.stages:
            return super().from_recipe(recipe, **given)
        teachers = given.get("teachers") or []
        teacher = teachers[-1] if teachers else given.get("teacher")
        return cls(given["student"], given["info"], teacher, [], train=given.get("train"),
                   stages=stage_epochs(recipe), **{**cls.default_params(recipe), **recipe.method.params})
