"""Bind a recipe's loss terms to registered loss functions by argument name.

A loss declares the tensors it needs through its parameter names (``student_logits``, ``teacher_logits``,
``target``, ...); every other parameter is a hyperparameter the term may set. Binding happens once, when
the method is built, so a misspelt hyperparameter or a loss that needs a missing teacher fails before
training starts, naming the term.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch

from edgedistill.config import TermConfig, check_kwargs
from edgedistill.errors import UserInputError
from edgedistill.registry import LOSSES

# Tensor roles a method can provide. Aliases name the same tensor: outputs are "logits" for
# classification and "out" for regression, and a loss uses whichever name reads right.
ROLES = ("student_logits", "student_out", "teacher_logits", "teacher_out", "target", "student_feat", "teacher_feat")
TEACHER_ROLES = ("teacher_logits", "teacher_out", "teacher_feat")
# Feature roles are read through forward hooks; the term says where with these keys (a module path, or a
# zoo model's default tap name such as "feat"). Without one, the model's default "feat" tap is used.
TAP_KEYS = {"student_feat": "student_tap", "teacher_feat": "teacher_tap"}


@dataclass
class BoundTerm:
    label: str  # name logged for this term (loss name, suffixed when a loss appears twice)
    fn: Callable[..., torch.Tensor]
    weight: float
    roles: tuple[str, ...]
    params: dict[str, Any]
    taps: dict[str, str]  # feature role -> tap spec, e.g. {"student_feat": "blocks.2"}
    key: str = ""  # the term's recipe path, for errors: "method.terms[2]"

    @property
    def needs_teacher(self) -> bool:
        return any(r in TEACHER_ROLES for r in self.roles)

    def __call__(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        args = {r: tensors[feature_key(r, self.taps[r])] if r in self.taps else tensors[r] for r in self.roles}
        return self.weight * self.fn(**args, **self.params)


def feature_key(role: str, tap: str) -> str:
    """Where a method stores a tapped feature among the tensors it offers the terms."""
    return f"{role}@{tap}"


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
        sig = inspect.signature(entry.obj)
        roles = tuple(p for p in sig.parameters if p in ROLES)
        params = dict(term.params)
        taps = {}
        for role, tap_key in TAP_KEYS.items():
            spec = params.pop(tap_key, None)
            if role in roles:
                taps[role] = str(spec) if spec is not None else "feat"
            elif spec is not None:
                raise UserInputError(f"{where}.{tap_key}: loss '{term.loss}' reads no features, so it takes no {tap_key}")
        check_kwargs(entry.obj, params, where, reserved=ROLES, what=f"loss '{term.loss}'")
        for name, value in params.items():
            default = sig.parameters[name].default
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise UserInputError(f"{where}.{name}: expected a number, got {value!r}")
        count = seen.get(term.loss, 0)
        seen[term.loss] = count + 1
        label = term.loss if count == 0 else f"{term.loss}_{count + 1}"
        bound.append(BoundTerm(label, entry.obj, float(term.weight), roles, params, taps, where))
    return bound
