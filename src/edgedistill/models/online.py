"""Networks an online regime trains from scratch next to the student (DML's peers, BD-KD's large network),
built from a validated model section and checked on one input before training."""
from __future__ import annotations

import torch
from torch import nn

from edgedistill.config import ModelConfig
from edgedistill.data.dataset import DataInfo
from edgedistill.errors import UserInputError
from edgedistill.models.modes import evaluating


def build_online_network(cfg: ModelConfig, info: DataInfo, key: str) -> nn.Module:
    """A network trained from scratch alongside the student, from its model section (``{model: name, **knobs}``).

    Built with the global RNG as the runner left it after seeding and building the student, so its
    initialisation differs from the student's and follows the run seed. Errors name ``key``.
    """
    if cfg.checkpoint is not None:
        # Online regimes train every network from scratch; a warm-started peer would be a teacher.
        raise UserInputError(f"{key}.checkpoint: networks of an online regime are trained from scratch; remove it")
    from edgedistill.models import build_model

    shape = info.views.get("x", info.input_shape)
    return build_model(cfg.model, shape[0], info.n_outputs, tuple(shape[1:]), key=key, **cfg.kwargs)


def check_online_outputs(net: nn.Module, info: DataInfo, key: str) -> None:
    """One forward pass on zeros (eval mode, the network's mode restored): it must output (N, classes) like the
    student, or the error names ``key``."""
    x = torch.zeros(2, *info.views.get("x", info.input_shape))
    try:
        with evaluating(net), torch.no_grad():
            out = net(x)
    except (RuntimeError, ValueError) as exc:
        raise UserInputError(f"{key}: cannot run on inputs of shape {tuple(x.shape[1:])}: "
                             f"{str(exc).splitlines()[0]}") from None
    if tuple(out.shape) != (2, info.n_outputs):
        raise UserInputError(f"{key}: outputs {tuple(out.shape[1:])} per sample, expected ({info.n_outputs},)")
