"""Build models and methods from a validated recipe, and check them on one batch before training.

Everything that can be wrong with a recipe (unknown names, bad knobs, weights that do not fit, views
whose shapes the models cannot take, teacher and student disagreeing on the output size) fails here,
before the run directory exists.
"""
from __future__ import annotations

import inspect
import random
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from edgedistill.config import ModelConfig, Recipe, TermConfig
from edgedistill.data.dataset import DataInfo, DataSplits
from edgedistill.errors import UserInputError
from edgedistill.augment.pipeline import Augmenter
from edgedistill.methods.base import Method, TeacherNet
from edgedistill.registry import LOSSES, METHODS
from edgedistill.models.modes import evaluating


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_network(cfg: ModelConfig, info: DataInfo, key: str, view: str = "x", seed: int = 0) -> nn.Module:
    from edgedistill.models import build_model

    seed_everything(seed)
    if getattr(cfg, "outputs", None) is not None:  # a teacher given by its outputs on the data: no network to build
        from edgedistill.experiment.teacher_outputs import recorded_teacher

        return recorded_teacher(cfg, info, key)
    if getattr(cfg, "load", None) is not None:  # a saved teacher: weights of cfg.model, or a program (TorchScript, ...)
        from edgedistill.experiment.saved_teacher import load_teacher

        return load_teacher(cfg, info, key, view)
    shape = info.views.get(view, info.input_shape)
    model = build_model(cfg.model, shape[0], info.n_outputs, tuple(shape[1:]), key=key, **cfg.kwargs)
    if cfg.checkpoint is not None:  # the same weights-only reading as a saved teacher: Lightning, run checkpoints
        from edgedistill.experiment.saved_teacher import load_weights

        load_weights(model, cfg.checkpoint, f"{key}.checkpoint")
    return model


def build_method(
    recipe: Recipe, student: nn.Module, teachers: list[TeacherNet], splits: DataSplits, augmenter: Optional[Augmenter] = None
) -> Method:
    cls = METHODS.get(recipe.method.name, key="method.name")
    with torch.random.fork_rng(devices=[]):  # the checks build loss modules: the run's random stream stays as it was
        check_chains(recipe, teachers, splits)
        if cls.takes_terms and not cls.own_terms and recipe.method.terms:
            probe_terms(recipe.method.terms, splits, "method.terms")
        for i, stage in enumerate(recipe.method.stages):  # (staged training, docs/stages.md: every stage's terms now)
            probe_terms(stage.terms, splits, f"method.stages[{i}].terms")
    teacher = teachers[-1].model if teachers else None
    # method.params are validated by the regime's typed Params (key-named UserInputErrors); a TypeError from here on
    # is a bug in the regime, and is not dressed up as a recipe error.
    method = cls.from_recipe(recipe, student=student, teacher=teacher, info=splits.info, train=splits.train, teachers=teachers)
    if augmenter is not None:
        check_augmentation(recipe, method, bool(teachers), augmenter)
        method.teacher_input_changes = augmenter.teacher_input_changes
    return method


def check_chains(recipe: Recipe, teachers: list[TeacherNet], splits: DataSplits) -> None:
    """Bind the terms of every teacher distilled from another (assistant chains) as its training will, now: a bad
    loss name, keyword, value or tap fails with its key (``teachers[1].terms[0]...``) when the plan is built, not
    after the teachers before it trained. ``teachers`` are the plan's networks, in training order."""
    from edgedistill.methods.offline import OfflineDistillation

    by_name = {t.name: t for t in teachers}
    keys = {t.name or f"teacher{i + 1}": f"teachers[{i}]" for i, t in enumerate(recipe.teachers)}
    for t in teachers:
        spec = t.config
        if spec is None or not spec.distill_from or spec.distill_from not in by_name:
            continue
        key = f"{keys.get(t.name, t.name)}.terms"
        if spec.terms:  # (a regime may chain teachers with its default terms)
            probe_terms(spec.terms, splits, key)  # names, keywords, their types and values, with the key
        try:  # what binding alone cannot see: taps that do not resolve, loss modules that cannot be built
            OfflineDistillation(t.model, splits.info, by_name[spec.distill_from], list(spec.terms), train=splits.train)
        except UserInputError as exc:
            raise UserInputError(str(exc).replace("method.terms", key)) from None


def probe_terms(terms: Sequence[TermConfig], splits: DataSplits, key: str) -> None:
    """Bind ``terms`` (names, keywords, their types) and call each stateless loss that reads only outputs and labels
    once, on the first training labels and made-up outputs of their shape, so a value the loss itself refuses (``kd: temperature must be > 0``) fails now, with
    the term's key, not at the first step of its stage. Only what the loss raises as a ``UserInputError`` counts:
    made-up outputs are not the real ones, and the dry run and the first step check those."""
    from edgedistill.methods.terms import bind_terms

    info = splits.info
    g = torch.Generator().manual_seed(0)
    target = splits.train.y[: min(4, len(splits.train))]
    student, teacher = (torch.randn(len(target), max(1, int(info.n_outputs)), generator=g) for _ in range(2))
    tensors = {"student_logits": student, "student_out": student, "teacher_logits": teacher, "teacher_out": teacher,
               "target": target}
    for term in bind_terms(list(terms), info.task, key=key):
        if term.fn is None or not set(term.roles) <= set(tensors):
            continue  # a loss module (built from real shapes) or one reading features or indices
        try:
            with torch.no_grad():
                term.fn(**{r: tensors[r] for r in term.roles}, **term.params)
        except UserInputError as exc:
            raise UserInputError(f"{term.key}: {exc}") from None
        except Exception:  # noqa: BLE001 - made-up tensors may not suit the loss; the real first step will tell
            pass


#: Fabric precisions that run the forward pass under autocast and need Fabric's backward (16-mixed scales the loss).
MIXED_PRECISION = ("16-mixed", "bf16-mixed")


def check_precision(recipe: Recipe) -> None:
    """Refuse, before anything is loaded or written, mixed precision for a regime with ``manual_optimization``: it
    calls ``backward()`` and steps its optimizers itself, so Fabric's loss scaling (16-mixed) never applies and its
    optimizers are not set up by Fabric."""
    from edgedistill.engine.loop import check_accelerator

    if recipe.engine.precision in MIXED_PRECISION:
        cls = METHODS.get(recipe.method.name, key="method.name")
        if getattr(cls, "manual_optimization", False):
            raise UserInputError(
                f"engine.precision: '{recipe.engine.precision}' is mixed precision, which method '{recipe.method.name}' "
                "cannot train with: it calls backward() and steps its own optimizers (manual optimisation), so the loss "
                "is never scaled; use 32-true (or 64-true)"
            )
    check_accelerator(recipe.engine)  # (here: the one engine check every plan makes before writing)


def check_augmentation(recipe: Recipe, method: Method, has_teachers: bool, augmenter: Augmenter) -> None:
    """Refuse, before training, an augmentation the regime would silently ignore or misread."""
    name, support = recipe.method.name, method.augmentation_support
    if augmenter.mixes_labels and "soft_targets" not in support:
        raise UserInputError(f"augment.mix: method '{name}' reads integer labels and cannot train on mixed ones; "
                             "mixing works with offline and supervised")
    if has_teachers and augmenter.teacher_input_changes and "teacher_input" not in support:
        raise UserInputError(
            f"augment.teacher_sees: method '{name}' computes its teachers' outputs once on clean inputs, so its "
            f"teachers cannot see '{augmenter.teacher_sees}' augmented inputs; set augment.teacher_sees: clean"
        )
    for i, term in enumerate(recipe.method.terms if augmenter.mixes_labels else []):
        entry = LOSSES.entry(term.loss)
        loss = entry.obj
        if not entry.meta.get("soft_targets") and "target" in inspect.signature(loss.forward if inspect.isclass(loss) else loss).parameters:
            raise UserInputError(f"method.terms[{i}]: loss '{term.loss}' reads integer labels and cannot take the mixed "
                                 "labels of augment.mix")


def dry_run(splits: DataSplits, student: nn.Module, teachers: list[TeacherNet], augmenter: Optional[Augmenter] = None) -> None:
    """One forward pass of each network on two training samples (augmented as in training): shape problems and
    augmentations that do not fit the data surface now, named."""
    batch = splits.train.batch(torch.arange(min(2, len(splits.train))))
    if augmenter is not None:
        from edgedistill.augment.pipeline import step_generator

        batch = augmenter(batch, step_generator(0, 0))
        for key in ("x", "x_teacher"):
            if batch[key].shape != batch["x_clean"].shape:
                raise UserInputError(f"augment: the pipeline changed the input shape {tuple(batch['x_clean'].shape[1:])} "
                                     f"to {tuple(batch[key].shape[1:])}; augmentations must keep it")
    with torch.no_grad():
        s_out = _forward("student", student, batch["x"], "x", splits.info)
        for t in teachers:
            role = "teacher" if t.name == "teacher" else f"teacher '{t.name}'"
            t_out = _forward(role, t.model, batch[t.view], t.view, splits.info)
            if s_out.shape[1:] != t_out.shape[1:]:
                raise UserInputError(
                    f"{role} outputs shape {tuple(t_out.shape[1:])} per sample but the student outputs {tuple(s_out.shape[1:])}; "
                    "they must match (same classes or regression targets)"
                )


def _forward(role: str, model: nn.Module, x: torch.Tensor, view: str, info: DataInfo) -> torch.Tensor:
    try:
        with evaluating(model):
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - filtered below: the user's own class may raise anything
        if not isinstance(exc, (RuntimeError, ValueError)) and type(model).__module__.startswith("edgedistill."):
            raise  # a zoo model raising something else is a bug here, not a recipe mistake
        msg = (str(exc).strip().splitlines() or [""])[0]
        msg = msg if isinstance(exc, (RuntimeError, ValueError)) else f"{type(exc).__name__}: {msg}"
        raise UserInputError(f"{role}: cannot run on view '{view}' of shape {tuple(x.shape[1:])} per sample: {msg}") from None
    if not torch.is_tensor(out) or out.dim() != 2:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise UserInputError(f"{role}: forward must return a (N, outputs) tensor, got {got}")
    if out.shape[1] != info.n_outputs:  # the user's class may ignore n_outputs, or hard-code another count
        what = "classes" if info.task == "classification" else "regression targets"
        raise UserInputError(f"{role}: model {type(model).__name__} outputs {out.shape[1]} values per sample but the "
                             f"data has {info.n_outputs} {what}")
    return out
