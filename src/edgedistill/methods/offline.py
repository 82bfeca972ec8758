"""Offline distillation: a frozen teacher, a student, and a weighted list of loss terms from the registry.

The teacher's outputs on the un-augmented training inputs are computed once in ``setup`` and looked up
by ``batch["index"]``: with a frozen teacher in eval mode they are identical every epoch, so running it
each step would only cost time (FACTS: 12.3 s -> ~4 s per epoch on the HAR-sized probe).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from edgedistill.config import Recipe, TermConfig, check_kwargs
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Method, Step, freeze
from edgedistill.methods.terms import TAP_KEYS, BoundTerm, bind_terms, feature_key
from edgedistill.registry import METHODS

if TYPE_CHECKING:
    from edgedistill.models.taps import FeatureTaps


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, data: TensorData, view: str, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Teacher outputs for every row of ``data`` (eval mode, no grad), in row order."""
    outs = [teacher(b[view].to(device)) for b in data.batches(batch_size)]
    return torch.cat(outs)


def feature_taps(model: nn.Module, terms: list[BoundTerm], role: str) -> Optional[FeatureTaps]:
    """Hooks for every tap the terms read from ``model`` in ``role``; None when no term reads features.
    A tap spec is a module path or a name in the model's ``default_taps`` ("feat", "emb", ...)."""
    from edgedistill.models import FeatureTaps

    specs: dict[str, str] = {}
    defaults = getattr(model, "default_taps", {})
    for term in terms:
        spec = term.taps.get(role)
        if spec is None or spec in specs:
            continue
        try:
            specs[spec] = defaults.get(spec, spec)
            FeatureTaps(model, {spec: specs[spec]})  # resolves now: a bad path fails before training
        except UserInputError as exc:
            raise UserInputError(f"{term.key}.{TAP_KEYS[role]}: {exc}") from None
    return FeatureTaps(model, specs) if specs else None


def _features(role: str, taps: Optional[FeatureTaps]) -> dict[str, torch.Tensor]:
    return {feature_key(role, name): value for name, value in taps.outputs.items()} if taps is not None else {}


@METHODS.register("offline")
class OfflineDistillation(Method):
    """Frozen teacher -> student with weighted loss terms (ce, kd, reverse_kd, mse_to_teacher, ...)."""

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        teacher: Optional[nn.Module],
        terms: list[TermConfig],
        teacher_view: str = "x",
        cache_teacher: bool = True,
    ) -> None:
        super().__init__(student, info)
        self.terms = bind_terms(terms, info.task)
        if any(t.needs_teacher for t in self.terms) and teacher is None:
            needy = next(t.label for t in self.terms if t.needs_teacher)
            raise UserInputError(f"method.terms: loss '{needy}' needs a teacher but the recipe has no 'teacher' section")
        if teacher_view not in info.views:
            raise UserInputError(
                f"teacher.view: the dataset has no view '{teacher_view}'; available views: {', '.join(info.views)}"
            )
        self.teacher = freeze(teacher) if teacher is not None else None
        self.teacher_view = teacher_view
        self._student_taps = feature_taps(student, self.terms, "student_feat")
        self._teacher_taps = feature_taps(teacher, self.terms, "teacher_feat") if teacher is not None else None
        # Teacher features are read by hooks during a forward pass, so the teacher runs every step then.
        self.cache_teacher = cache_teacher and self._teacher_taps is None
        self._cached: Optional[torch.Tensor] = None

    takes_terms = True
    reserved = ("student", "info", "teacher", "terms", "teacher_view")

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, student: nn.Module, teacher: Optional[nn.Module], info: DataInfo) -> "OfflineDistillation":
        check_kwargs(cls.__init__, recipe.method.params, "method.params", cls.reserved, what=f"method '{recipe.method.name}'")
        view = recipe.teacher.view if recipe.teacher is not None else "x"
        return cls(student, info, teacher, recipe.method.terms, teacher_view=view, **recipe.method.params)

    def setup(self, train: TensorData, device: torch.device) -> None:
        if self.teacher is None:
            return
        self.teacher.to(device)
        freeze(self.teacher)
        if self.cache_teacher:
            self._cached = teacher_outputs(self.teacher, train, self.teacher_view, device)

    def _teacher(self, batch: Batch) -> torch.Tensor:
        if self._cached is not None:
            return self._cached[batch["index"].to(self._cached.device)]
        with torch.no_grad():
            return self.teacher(batch[self.teacher_view])  # type: ignore[misc]

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        with self._student_taps or contextlib.nullcontext():
            s = self.networks["student"](batch["x"])
        tensors = {"student_logits": s, "student_out": s, "target": batch["y"]}
        tensors.update(_features("student_feat", self._student_taps))
        if self._teacher_taps is not None:
            with torch.no_grad(), self._teacher_taps:
                t = self.teacher(batch[self.teacher_view])  # type: ignore[misc]
            tensors.update(_features("teacher_feat", self._teacher_taps))
        elif self.teacher is not None:
            t = self._teacher(batch)
        if self.teacher is not None:
            tensors.update(teacher_logits=t, teacher_out=t)
        return {term.label: term(tensors) for term in self.terms}

    def describe(self) -> dict[str, Any]:
        return {
            "method": "offline",
            "terms": [{"loss": t.label, "weight": t.weight, **t.params} for t in self.terms],
            "teacher_cached": self._cached is not None,
        }
