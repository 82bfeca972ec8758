"""A recipe's ``augment`` section as one callable the engine applies to every training batch.

The student's input ``x`` goes through the sample-level steps in order, then the optional batch-level mix
(which also turns the labels into mixed class probabilities). What a teacher reading view ``x`` sees is put
in ``batch["x_teacher"]``: the same augmented tensor, the clean one, or its own augmentation. The clean input
stays in ``batch["x_clean"]``. Evaluation never augments. Every draw comes from the generator the engine
seeds per step, so an interrupted run resumes to the same result.

Each step's parameters are validated once, here, when the pipeline is built (before training): through the
``Params`` model the augmentation is registered with, so a bad value fails with the recipe key that holds it
(``augment.student[1].sigma: Input should be greater than or equal to 0, got -1``). An augmentation registered
without a model (a user's own) only has its keyword names checked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from edgedistill.config import AugmentConfig, AugmentStep
from edgedistill.data.dataset import Batch, DataInfo
from edgedistill.errors import UserInputError
from edgedistill.params import signature_params
from edgedistill.registry import AUGMENTS, typed_params


@dataclass
class _Step:
    name: str
    fn: Callable[..., Any]
    params: dict[str, Any]


def _resolve(step: AugmentStep, key: str, kind: str, data: str) -> _Step:
    entry = AUGMENTS.entry(step.name, key=f"{key}.name")
    if entry.meta.get("kind") != kind:
        where = "augment.mix" if entry.meta.get("kind") == "batch" else "augment.student / augment.teacher"
        raise UserInputError(f"{key}: '{step.name}' is a {entry.meta.get('kind')}-level augmentation; put it in {where}")
    wants = entry.meta.get("data", "any")
    if wants not in ("any", data):
        raise UserInputError(f"{key}: '{step.name}' is for {wants} data, but this dataset is {data}")
    what = f"augmentation '{step.name}'"
    model = typed_params(entry)
    if model is None:
        reserved = ("x", "generator") if kind == "sample" else ("x", "y", "generator")
        signature_params(entry.obj, skip=reserved).parse(step.params, key, what)
        return _Step(step.name, entry.obj, step.params)
    return _Step(step.name, entry.obj, model.parse(step.params, key, what).model_dump())


class Augmenter:
    """``augmenter(batch, generator) -> batch`` with ``x`` augmented, ``x_clean``, ``x_teacher`` and, with a
    mix, soft ``y``."""

    def __init__(self, cfg: AugmentConfig, info: DataInfo) -> None:
        data = "2d" if len(info.input_shape) == 3 else "1d"
        self.student = [_resolve(s, f"augment.student[{i}]", "sample", data) for i, s in enumerate(cfg.student)]
        self.teacher = [_resolve(s, f"augment.teacher[{i}]", "sample", data) for i, s in enumerate(cfg.teacher)]
        self.mix: Optional[_Step] = _resolve(cfg.mix, "augment.mix", "batch", data) if cfg.mix is not None else None
        if self.mix is not None and info.task != "classification":
            raise UserInputError(f"augment.mix: '{cfg.mix.name}' mixes class labels; the dataset is a {info.task} task")
        self.teacher_sees = cfg.teacher_sees
        self.n_classes = info.n_outputs
        self.cfg = cfg

    @property
    def teacher_input_changes(self) -> bool:
        """True when a teacher reading ``x`` sees something different every step (its outputs cannot be cached)."""
        return self.teacher_sees != "clean" and bool(self.student or self.teacher or self.mix)

    @property
    def mixes_labels(self) -> bool:
        return self.mix is not None

    @staticmethod
    def _apply(steps: list[_Step], x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for s in steps:
            x = s.fn(x, generator, **s.params)
        return x

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        clean = batch["x"]
        x = self._apply(self.student, clean, generator)
        out = dict(batch, x_clean=clean)
        if self.mix is not None:
            y = F.one_hot(batch["y"], self.n_classes).to(x.dtype)
            x, out["y"] = self.mix.fn(x, y, generator, **self.mix.params)
        out["x"] = x
        if self.teacher_sees == "same":
            out["x_teacher"] = x
        elif self.teacher_sees == "clean":
            out["x_teacher"] = clean
        else:
            out["x_teacher"] = self._apply(self.teacher, clean, generator)
        return out

    def describe(self) -> dict[str, Any]:
        return self.cfg.model_dump(mode="json")


def step_generator(seed: int, step: int) -> torch.Generator:
    """The augmentation generator of one optimisation step: a function of (run seed, step) only, so a resumed
    run draws exactly what an uninterrupted one would."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1))
