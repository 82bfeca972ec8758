"""Loss pieces and schedules shared by the data-free regimes (``methods/data_free.py``).

Spec: shared/methods/others.md §12 (CuDFKD and its DFKD baselines DAFL, DFAD, DeepInversion). All losses are
pure functions of logits / features; the teacher's BatchNorm statistics are read by forward hooks on its
BatchNorm modules (the model is not rewritten).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def class_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """H(mean_i softmax(z_i / T)): entropy of the batch's mean class distribution (high = balanced classes).
    DAFL's information-entropy term is ``sum p log p = -H`` at T = 1; CuDFKD weights H by ``lmda_ent`` < 0."""
    p = F.softmax(logits / temperature, dim=1).mean(0)
    return -(p * torch.log(p.clamp_min(1e-12))).sum()


def one_hot_loss(teacher_logits: torch.Tensor) -> torch.Tensor:
    """CE(t, argmax t): the teacher should be confident on generated samples (DAFL's one-hot loss)."""
    return F.cross_entropy(teacher_logits, teacher_logits.argmax(1))


def bn_statistics_loss(features: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    """DeepInversion feature-statistics loss for one BatchNorm input ``(N, C, ...)``:
    ``||var_b - running_var||_2 + ||mean_b - running_mean||_2`` with the biased batch variance per channel."""
    dims = [0] + list(range(2, features.dim()))
    mean = features.mean(dims)
    var = features.var(dims, unbiased=False)
    return torch.linalg.vector_norm(var - running_var) + torch.linalg.vector_norm(mean - running_mean)


def agreement_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """CuDFKD's adversarial term (adv_type 'kl'), to be minimised by the generator:
    ``-(1/B) sum_i 1[argmax s_i = argmax t_i] T^2 KL(softmax(t_i/T) || softmax(s_i/T))`` (<= 0). Only samples the
    student already classifies like the teacher push the generator towards disagreement."""
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).to(student_logits.dtype)
    log_t = F.log_softmax(teacher_logits / temperature, dim=1)
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1) * temperature**2
    return -(agree * kl).mean()


def logit_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DFAD's discrepancy: mean absolute difference of the logits (nn.L1Loss, mean over all entries)."""
    return (student_logits - teacher_logits).abs().mean()


def per_sample_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """(B,) mean absolute logit difference of each sample; its batch mean is ``logit_l1``."""
    return (student_logits - teacher_logits).abs().mean(1)


def per_sample_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B,) T^2 KL(softmax(t/T) || softmax(s/T)) of each sample."""
    log_t = F.log_softmax(teacher_logits / temperature, dim=1)
    log_s = F.log_softmax(student_logits / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1) * temperature**2


def self_paced_weight(loss: torch.Tensor, lam: float) -> torch.Tensor:
    """CuDFKD's 'curr_log' self-paced weight ``v = (1 + e^-lam) / (1 + e^(loss - lam))``: v(0) = 1, decreasing in
    the loss, increasing in lam (more hard samples admitted as lam grows). No gradient (a weight, not a loss)."""
    loss = loss.detach()
    return (1.0 + math.exp(-lam)) / (1.0 + torch.exp(loss - lam))


def linear_ramp(start: float, end: float, progress: float) -> float:
    """start -> end linearly over training (``progress`` in [0, 1])."""
    return start + (end - start) * min(max(progress, 0.0), 1.0)


def curriculum_adv_weight(epoch: int, epochs: int, final: float, begin: float, end: float) -> float:
    """CuDFKD's easy-to-hard generator schedule: 0 until ``begin*E``, then one equal increment after every epoch e
    with ``begin*E < e < end*E``, reaching ``final`` when ``end*E`` is passed. ``epoch`` is 0-based (the weight
    used during that epoch counts the increments made after earlier epochs)."""
    increments = [e for e in range(epochs) if begin * epochs < e < end * epochs]
    if not increments:
        return final
    done = sum(1 for e in increments if e < epoch)
    return final * done / len(increments)


class BatchNormStatistics:
    """Forward hooks on every BatchNorm layer of a (frozen, eval-mode) teacher: while ``recording``, each hook
    adds ``bn_statistics_loss(input, running_mean, running_var)`` of its layer to ``losses``."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                       and m.running_mean is not None and m.running_var is not None]
        self.losses: list[torch.Tensor] = []
        self.recording = False
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self.recording:
            self.losses.append(bn_statistics_loss(inputs[0], module.running_mean, module.running_var))

    def __enter__(self) -> "BatchNormStatistics":
        self.losses, self.recording = [], True
        return self

    def __exit__(self, *exc: object) -> None:
        self.recording = False

    def total(self) -> Optional[torch.Tensor]:
        """Sum over layers of the last recorded forward pass (None when nothing was recorded)."""
        return torch.stack(self.losses).sum() if self.losses else None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
