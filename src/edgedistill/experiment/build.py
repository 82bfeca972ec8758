"""Build models and methods from a validated recipe, and check them on one batch before training.

Everything that can be wrong with a recipe (unknown names, bad knobs, weights that do not fit, views
whose shapes the models cannot take, teacher and student disagreeing on the output size) fails here,
before the run directory exists.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from edgedistill.config import ModelConfig, Recipe
from edgedistill.data.dataset import DataInfo, DataSplits
from edgedistill.engine import checkpoint as ckpt
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Method, TeacherNet
from edgedistill.registry import METHODS


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_network(cfg: ModelConfig, info: DataInfo, key: str, view: str = "x", seed: int = 0) -> nn.Module:
    from edgedistill.models import build_model

    seed_everything(seed)
    shape = info.views.get(view, info.input_shape)
    model = build_model(cfg.model, shape[0], info.n_outputs, tuple(shape[1:]), key=key, **cfg.kwargs)
    if cfg.checkpoint is not None:
        state = ckpt.load(cfg.checkpoint)
        state = state.get("networks", {}).get("student", state) if "networks" in state else state
        ckpt.load_state_dict_checked(model, state, f"{key}.checkpoint '{cfg.checkpoint}'")
    return model


def build_method(recipe: Recipe, student: nn.Module, teachers: list[TeacherNet], splits: DataSplits) -> Method:
    cls = METHODS.get(recipe.method.name, key="method.name")
    teacher = teachers[-1].model if teachers else None
    try:
        return cls.from_recipe(recipe, student=student, teacher=teacher, info=splits.info, train=splits.train, teachers=teachers)
    except TypeError as exc:
        raise UserInputError(f"method.params: {exc}") from None


def dry_run(splits: DataSplits, student: nn.Module, teachers: list[TeacherNet]) -> None:
    """One forward pass of each network on two training samples: shape problems surface now, named."""
    batch = splits.train.batch(torch.arange(min(2, len(splits.train))))
    with torch.no_grad():
        s_out = _forward("student", student, batch["x"], "x")
        for t in teachers:
            role = "teacher" if t.name == "teacher" else f"teacher '{t.name}'"
            t_out = _forward(role, t.model, batch[t.view], t.view)
            if s_out.shape[1:] != t_out.shape[1:]:
                raise UserInputError(
                    f"{role} outputs shape {tuple(t_out.shape[1:])} per sample but the student outputs {tuple(s_out.shape[1:])}; "
                    "they must match (same classes or regression targets)"
                )


def _forward(role: str, model: nn.Module, x: torch.Tensor, view: str) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        out = model(x)
    except (RuntimeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0]
        raise UserInputError(f"{role}: cannot run on view '{view}' of shape {tuple(x.shape[1:])} per sample: {msg}") from None
    finally:
        model.train(was)
    if not torch.is_tensor(out) or out.dim() != 2:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise UserInputError(f"{role}: forward must return a (N, outputs) tensor, got {got}")
    return out
