"""Small label-only training inside a regime's ``setup``: fresh copies of a network, fitted on (a part of) the
training split before the student's own training starts.

Regimes need this where the method itself trains an auxiliary network on labels:

* CES-KD's cross-fitted difficulty (``methods/ceskd.py``): K copies of the largest expert's architecture, each
  trained on K-1 folds, predict the held-out fold;
* cGAN-KD (``methods/cgan_kd.py``): the separately trained feature network of the density ratio, and the
  student's warm start from a label-trained state (the paper's vanilla-trained checkpoint).

The engine's training loop cannot be used from a regime (the import layers put ``engine`` above ``methods``),
and these fits need none of its machinery (no validation, checkpoints, schedules or logs): a fixed number of
epochs of shuffled minibatches with the recipe's optimizer, drawn from a private generator so the run's global
RNG stream is untouched.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.config import TrainConfig
from edgedistill.methods.base import make_optimizer


def fresh_copy(model: nn.Module) -> nn.Module:
    """The same architecture with freshly initialised parameters (every submodule's ``reset_parameters``), in train
    mode with gradients on: a copy to train from scratch, leaving ``model`` untouched."""
    clone = copy.deepcopy(model)
    for m in clone.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    clone.requires_grad_(True)
    return clone.train()


def label_loss(out: torch.Tensor, y: torch.Tensor, classification: bool) -> torch.Tensor:
    """CE for class labels, MSE for targets (shaped as the outputs)."""
    if classification:
        return F.cross_entropy(out, y.long())
    return F.mse_loss(out, y.reshape(out.shape).to(out.dtype))


def fit_on_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, classification: bool,
                  generator: torch.Generator) -> nn.Module:
    """Train ``model`` in place on ``(x, y)`` for ``cfg.epochs`` epochs of shuffled minibatches of
    ``cfg.batch_size`` (the last, smaller one kept unless it has a single row, which BatchNorm cannot train on),
    with ``cfg``'s optimizer and constant learning rate; returns it in eval mode."""
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    n, b = len(x), min(cfg.batch_size, len(x))
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for i in range(0, n, b):
            idx = order[i:i + b]
            if len(idx) < 2 and n >= 2:
                continue
            loss = label_loss(model(x[idx]), y[idx], classification)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """``model``'s outputs on ``x`` in eval mode, in chunks."""
    model.eval()
    return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])
