"""Offline distillation: a frozen teacher, a student, and a weighted list of loss terms from the registry.

The teacher's outputs on the un-augmented training inputs are computed once in ``setup`` (``Teachers.cache``)
and looked up by ``batch["index"]``; a term that reads teacher features runs the teacher every step instead.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any, Optional

import torch
from pydantic import Field
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Method, Step
from edgedistill.methods.teachers import TeacherNet, Teachers, evaluating
from edgedistill.methods.terms import FEATURE_ROLES, MODULE_ARGS, TAP_KEYS, BoundTerm, bind_terms, feature_key
from edgedistill.params import Params
from edgedistill.registry import METHODS

if TYPE_CHECKING:
    from edgedistill.models.taps import FeatureTaps


def feature_taps(model: nn.Module, terms: list[BoundTerm], network: str) -> Optional[FeatureTaps]:
    """Hooks for every tap the terms read from ``model`` (``network`` is "student" or "teacher"); None when
    no term reads its features. A tap spec is a module path or a name in the model's ``default_taps``."""
    from edgedistill.models import FeatureTaps

    specs: dict[str, str] = {}
    defaults = getattr(model, "default_taps", {})
    for term in terms:
        for role, spec in term.taps.items():
            if FEATURE_ROLES[role][0] != network or spec in specs:
                continue
            try:
                specs[spec] = defaults.get(spec, spec)
                FeatureTaps(model, {spec: specs[spec]})  # resolves now: a bad path fails before training
            except UserInputError as exc:
                raise UserInputError(f"{term.key}.{TAP_KEYS[network]}: {exc}") from None
    return FeatureTaps(model, specs) if specs else None


def _features(network: str, taps: Optional[FeatureTaps]) -> dict[str, torch.Tensor]:
    return {feature_key(network, name): value for name, value in taps.outputs.items()} if taps is not None else {}


def _per_sample_shape(term: BoundTerm, network: str, tensors: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """Shape (without batch) of the first tensor of ``network`` the term reads: feature, embedding or logits."""
    for role in (f"{network}_feat", f"{network}_emb", f"{network}_logits"):
        if role in term.roles:
            name = feature_key(network, term.taps[role]) if role in term.taps else role
            return tuple(tensors[name].shape[1:])
    return ()


class OfflineParams(Params):
    cache_teacher: bool = Field(True, description="look the teacher's outputs up by training row instead of running "
                                                 "it each step (off, or ignored, when a term reads teacher features)")


@METHODS.register("offline", label_from_terms=True)
class OfflineDistillation(Method):
    """Frozen teacher -> student with weighted loss terms (ce, kd, reverse_kd, mse_to_teacher, ...).

    ``teacher`` is a ``TeacherNet`` (what a recipe gives) or a bare module reading ``teacher_view``."""

    Params = OfflineParams

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        teacher: Optional[nn.Module | TeacherNet],
        terms: list[TermConfig],
        teacher_view: str = "x",
        train: Optional[TensorData] = None,
        **params: Any,
    ) -> None:
        super().__init__(student, info, **params)
        self.terms = bind_terms(terms, info.task)
        if any(t.needs_teacher for t in self.terms) and teacher is None:
            needy = next(t.label for t in self.terms if t.needs_teacher)
            raise UserInputError(f"method.terms: loss '{needy}' needs a teacher but the recipe has no 'teacher' section")
        self.teachers = Teachers([teacher] if teacher is not None else [], info, self.method_name(), minimum=0,
                                 maximum=1, view=teacher_view)
        self.teacher = self.teachers[-1].model if teacher is not None else None
        self.teacher_view = self.teachers[-1].view if teacher is not None else teacher_view
        self._student_taps = feature_taps(student, self.terms, "student")
        self._teacher_taps = feature_taps(self.teacher, self.terms, "teacher") if self.teacher is not None else None
        # Teacher features are read by hooks during a forward pass, so the teacher runs every step then.
        self.cache_teacher = self.params.cache_teacher and self._teacher_taps is None
        if any(t.module_class is not None for t in self.terms):
            self._build_loss_modules(train)

    def _build_loss_modules(self, train: Optional[TensorData]) -> None:
        """Losses with trainable parts (adapters, embedding heads, memory banks) are built from the shapes of
        what they read, found by one forward pass on zeros; they train and checkpoint with the student."""
        views = self.info.views
        batch = {"x": torch.zeros(2, *views["x"]), self.teacher_view: torch.zeros(2, *views[self.teacher_view])}
        batch.update(y=torch.zeros(2, dtype=torch.long), index=torch.arange(2))
        with evaluating(self.networks["student"], self.teacher), torch.no_grad():
            tensors = self._tensors(batch, use_cache=False)
        filled = {
            "n_data": self.info.sizes.get("train", len(train) if train is not None else 0),
            "train_labels": train.y if train is not None and self.info.task == "classification" else None,
        }
        for term in self.terms:
            if term.module_class is None:
                continue
            filled.update(student_shape=_per_sample_shape(term, "student", tensors),
                          teacher_shape=_per_sample_shape(term, "teacher", tensors))
            accepts = inspect.signature(term.module_class.__init__).parameters
            given = {k: v for k, v in filled.items() if k in accepts and k in MODULE_ARGS}
            try:
                term.fn = term.module_class(**given, **term.params)
            except (TypeError, ValueError) as exc:
                raise UserInputError(f"{term.key}: cannot build loss '{term.label}': {exc}") from None
            self.networks[f"loss_{term.label}"] = term.fn

    takes_terms = True
    augmentation_support = frozenset({"teacher_input", "soft_targets"})

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        if self.teacher is None:
            return
        self.teachers.place(device)
        if self.cache_teacher:
            # Not when the teacher sees an augmented input every step: Teachers.cache then declines.
            self.teachers.cache(train, device, input_changes=self.teacher_input_changes)

    def _tensors(self, batch: Batch, use_cache: bool = True) -> dict[str, torch.Tensor]:
        """Everything a term may read: outputs, labels, indices and the tapped features of both networks."""
        with self._student_taps or contextlib.nullcontext():
            s = self.networks["student"](batch["x"])
        tensors = {"student_logits": s, "student_out": s, "target": batch["y"], "index": batch["index"]}
        tensors.update(_features("student", self._student_taps))
        if self.teacher is None:
            return tensors
        if self._teacher_taps is not None or not use_cache:
            t = self.teachers.run(batch, taps=self._teacher_taps)
            tensors.update(_features("teacher", self._teacher_taps))
        else:
            t = self.teachers.logits(batch)
        tensors.update(teacher_logits=t, teacher_out=t)
        return tensors

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        tensors = self._tensors(batch)
        return {term.label: term(tensors, step) for term in self.terms}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "terms": [t.describe() for t in self.terms], "teacher_cached": self.teachers.cached}


# Transitional, removed once no regime imports them (every regime moves to methods.teachers.Teachers).
def teacher_outputs(teacher: nn.Module, data: TensorData, view: str, device: torch.device) -> torch.Tensor:
    from edgedistill.data.dataset import outputs_by_batch

    with torch.no_grad():
        return outputs_by_batch(teacher, data, view, device)


def stacked_teacher_outputs(teachers: Any, data: TensorData, device: torch.device) -> torch.Tensor:
    return torch.stack([teacher_outputs(t.model.to(device), data, t.view, device) for t in teachers])
