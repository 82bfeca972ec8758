"""Bind a recipe's loss terms to registered loss functions by argument name.

A loss declares the tensors it needs through its parameter names (``student_logits``, ``teacher_logits``,
``target``, ...); every other parameter is a hyperparameter the term may set. Binding happens once, when
the method is built, so a misspelt hyperparameter or a loss that needs a missing teacher fails before
training starts, naming the term.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from edgedistill.config import TermConfig, check_kwargs
from edgedistill.methods.base import Step
from edgedistill.errors import UserInputError
from edgedistill.registry import LOSSES

# Tensor roles a method can provide. Aliases name the same tensor: outputs are "logits" for
# classification and "out" for regression, and a loss uses whichever name reads right.
ROLES = (
    "student_logits", "student_out", "teacher_logits", "teacher_out", "target", "index",
    "student_feat", "teacher_feat", "student_emb", "teacher_emb",
)
TEACHER_ROLES = ("teacher_logits", "teacher_out", "teacher_feat", "teacher_emb")
# Feature roles are read through forward hooks: role -> (network, recipe key naming the tap, default tap).
# A tap is a module path or a zoo model's default tap name ("feat": last feature map, "emb": pooled embedding).
FEATURE_ROLES = {
    "student_feat": ("student", "student_tap", "feat"),
    "student_emb": ("student", "student_tap", "emb"),
    "teacher_feat": ("teacher", "teacher_tap", "feat"),
    "teacher_emb": ("teacher", "teacher_tap", "emb"),
}
TAP_KEYS = {"student": "student_tap", "teacher": "teacher_tap"}
# Constructor arguments of a loss module that the method fills in from the data and the models.
MODULE_ARGS = ("student_shape", "teacher_shape", "n_data", "train_labels")


def feature_key(network: str, tap: str) -> str:
    """Where a method stores a tapped feature among the tensors it offers the terms."""
    return f"{network}@{tap}"


@dataclass
class BoundTerm:
    label: str  # name logged for this term (loss name, suffixed when a loss appears twice)
    fn: Optional[Callable[..., torch.Tensor]]  # the function, or the built module (None until built)
    weight: float
    roles: tuple[str, ...]
    params: dict[str, Any]  # hyperparameters: call arguments of a function, constructor arguments of a module
    taps: dict[str, str]  # feature role -> tap spec, e.g. {"student_feat": "blocks.2"}
    key: str = ""  # the term's recipe path, for errors: "method.terms[2]"
    module_class: Optional[type] = None  # a loss with trainable parts, built once shapes are known
    config: Optional[TermConfig] = None  # the recipe's term: its schedule (start_epoch, warmup_epochs, ramp)

    @property
    def needs_teacher(self) -> bool:
        return any(r in TEACHER_ROLES for r in self.roles)

    def __call__(self, tensors: dict[str, torch.Tensor], step: Optional[Step] = None) -> torch.Tensor:
        """The weighted loss; with ``step``, times the term's schedule factor. A term not started yet is not
        computed at all (a loss module with state, a memory bank, must not move) and logs 0."""
        factor = self.config.factor(step.epoch) if self.config is not None and step is not None else 1.0
        if factor == 0.0:
            return next(iter(tensors.values())).new_zeros(())
        args = {
            r: tensors[feature_key(FEATURE_ROLES[r][0], self.taps[r])] if r in self.taps else tensors[r]
            for r in self.roles
        }
        extra = {} if self.module_class is not None else self.params
        weight = self.weight if factor == 1.0 else self.weight * factor
        return weight * self.fn(**args, **extra)  # type: ignore[misc]

    def describe(self) -> dict[str, Any]:
        sched = {}
        if self.config is not None and self.config.scheduled:
            sched = {k: getattr(self.config, k) for k in ("start_epoch", "warmup_epochs", "ramp")}
        return {"loss": self.label, "weight": self.weight, **self.params, **sched}


def bind_terms(terms: list[TermConfig], task: str, key: str = "method.terms") -> list[BoundTerm]:
    if not terms:
        raise UserInputError(f"{key}: at least one loss term is needed, e.g. [{{loss: ce, weight: 1.0}}]")
    bound: list[BoundTerm] = []
    seen: dict[str, int] = {}
    for i, term in enumerate(terms):
        where = f"{key}[{i}]"
        entry = LOSSES.entry(term.loss, key=f"{where}.loss")
        wants = entry.meta.get("task")
        if wants and wants != task:
            raise UserInputError(f"{where}: loss '{term.loss}' is for {wants}, but the dataset is a {task} task")
        is_module = inspect.isclass(entry.obj)
        call = entry.obj.forward if is_module else entry.obj
        sig = inspect.signature(call)
        roles = tuple(p for p in sig.parameters if p in ROLES)
        params = dict(term.params)
        specs = {net: params.pop(tap_key, None) for net, tap_key in TAP_KEYS.items()}
        taps = {}
        for net, tap_key in TAP_KEYS.items():
            reads = [r for r in roles if r in FEATURE_ROLES and FEATURE_ROLES[r][0] == net]
            if specs[net] is not None and not reads:
                raise UserInputError(f"{where}.{tap_key}: loss '{term.loss}' reads no {net} features, so it takes no {tap_key}")
            for r in reads:
                taps[r] = str(specs[net]) if specs[net] is not None else FEATURE_ROLES[r][2]
        hyper_fn = entry.obj.__init__ if is_module else entry.obj
        check_kwargs(hyper_fn, params, where, reserved=ROLES + MODULE_ARGS, what=f"loss '{term.loss}'")
        hyper_sig = inspect.signature(hyper_fn)
        for name, value in params.items():
            default = hyper_sig.parameters[name].default
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UserInputError(f"{where}.{name}: expected a number, got {value!r}")
        count = seen.get(term.loss, 0)
        seen[term.loss] = count + 1
        label = term.loss if count == 0 else f"{term.loss}_{count + 1}"
        fn = None if is_module else entry.obj
        module_class = entry.obj if is_module else None
        bound.append(BoundTerm(label, fn, float(term.weight), roles, params, taps, where, module_class, term))
    return bound
