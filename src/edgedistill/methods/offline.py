"""Offline distillation: a frozen teacher, a student, and a weighted list of loss terms from the registry.

The teacher's outputs on the un-augmented training inputs are computed once in ``setup`` and looked up
by ``batch["index"]``: with a frozen teacher in eval mode they are identical every epoch, so running it
each step would only cost time (FACTS: 12.3 s -> ~4 s per epoch on the HAR-sized probe).
"""
from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from torch import nn

from edgedistill.config import Recipe, TermConfig, check_kwargs
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.engine.evaluate import outputs_by_batch
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Method, Step, TeacherNet, freeze
from edgedistill.methods.terms import FEATURE_ROLES, MODULE_ARGS, TAP_KEYS, BoundTerm, bind_terms, feature_key
from edgedistill.registry import METHODS

if TYPE_CHECKING:
    from edgedistill.models.taps import FeatureTaps


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, data: TensorData, view: str, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Teacher outputs for every row of ``data`` (eval mode, no grad), in row order."""
    with torch.no_grad():
        return outputs_by_batch(teacher, data, view, device, batch_size)


def stacked_teacher_outputs(teachers: Sequence[TeacherNet], data: TensorData, device: torch.device) -> torch.Tensor:
    """(K, N, C): every teacher's outputs on every row of ``data``, each on its own view, in row order."""
    return torch.stack([teacher_outputs(t.model.to(device), data, t.view, device) for t in teachers])


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
        train: Optional[TensorData] = None,
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
        self._student_taps = feature_taps(student, self.terms, "student")
        self._teacher_taps = feature_taps(teacher, self.terms, "teacher") if teacher is not None else None
        # Teacher features are read by hooks during a forward pass, so the teacher runs every step then.
        self.cache_teacher = cache_teacher and self._teacher_taps is None
        self._cached: Optional[torch.Tensor] = None
        if any(t.module_class is not None for t in self.terms):
            self._build_loss_modules(train)

    def _build_loss_modules(self, train: Optional[TensorData]) -> None:
        """Losses with trainable parts (adapters, embedding heads, memory banks) are built from the shapes of
        what they read, found by one forward pass on zeros; they train and checkpoint with the student."""
        views = self.info.views
        batch = {"x": torch.zeros(2, *views["x"]), self.teacher_view: torch.zeros(2, *views[self.teacher_view])}
        batch.update(y=torch.zeros(2, dtype=torch.long), index=torch.arange(2))
        nets = [self.networks["student"]] + ([self.teacher] if self.teacher is not None else [])
        modes = [n.training for n in nets]
        for n in nets:
            n.eval()
        try:
            with torch.no_grad():
                tensors = self._tensors(batch, use_cache=False)
        finally:
            for n, mode in zip(nets, modes):
                n.train(mode)
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
    reserved = ("student", "info", "teacher", "terms", "teacher_view", "train")

    @classmethod
    def from_recipe(
        cls,
        recipe: Recipe,
        *,
        student: nn.Module,
        teacher: Optional[nn.Module],
        info: DataInfo,
        train: Optional[TensorData] = None,
        teachers: Optional[list[TeacherNet]] = None,
    ) -> "OfflineDistillation":
        check_kwargs(cls.__init__, recipe.method.params, "method.params", cls.reserved, what=f"method '{recipe.method.name}'")
        # The student learns from the last teacher listed; earlier ones are its ancestors in a chain.
        view = teachers[-1].view if teachers else (recipe.teacher.view if recipe.teacher is not None else "x")
        return cls(student, info, teacher, recipe.method.terms, teacher_view=view, train=train, **recipe.method.params)

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        if self.teacher is None:
            return
        self.teacher.to(device)
        freeze(self.teacher)
        # A teacher that sees an augmented input every step cannot be cached (the "switches itself off").
        if self.cache_teacher and not (self.teacher_input_changes and self.teacher_view == "x"):
            self._cached = teacher_outputs(self.teacher, train, self.teacher_view, device)

    def _teacher_input(self, batch: Batch) -> torch.Tensor:
        """What the teacher reads: its own view, or for view "x" what ``augment.teacher_sees`` gives it."""
        if self.teacher_view == "x":
            return batch.get("x_teacher", batch["x"])
        return batch[self.teacher_view]

    def _teacher(self, batch: Batch) -> torch.Tensor:
        if self._cached is not None:
            return self._cached[batch["index"].to(self._cached.device)]
        with torch.no_grad():
            return self.teacher(self._teacher_input(batch))  # type: ignore[misc]

    def _tensors(self, batch: Batch, use_cache: bool = True) -> dict[str, torch.Tensor]:
        """Everything a term may read: outputs, labels, indices and the tapped features of both networks."""
        with self._student_taps or contextlib.nullcontext():
            s = self.networks["student"](batch["x"])
        tensors = {"student_logits": s, "student_out": s, "target": batch["y"], "index": batch["index"]}
        tensors.update(_features("student", self._student_taps))
        if self.teacher is None:
            return tensors
        if self._teacher_taps is not None or not use_cache:
            with torch.no_grad(), self._teacher_taps or contextlib.nullcontext():
                t = self.teacher(self._teacher_input(batch))
            tensors.update(_features("teacher", self._teacher_taps))
        else:
            t = self._teacher(batch)
        tensors.update(teacher_logits=t, teacher_out=t)
        return tensors

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        tensors = self._tensors(batch)
        return {term.label: term(tensors) for term in self.terms}

    def describe(self) -> dict[str, Any]:
        return {
            "method": "offline",
            "terms": [{"loss": t.label, "weight": t.weight, **t.params} for t in self.terms],
            "teacher_cached": self._cached is not None,
        }
