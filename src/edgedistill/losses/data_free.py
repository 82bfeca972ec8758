"""Loss pieces and schedules of the data-free regimes (``methods/data_free.py``: dfad, cudfkd).

CuDFKD and its DFKD baselines DAFL, DFAD, DeepInversion. Pure functions of
logits / features / progress. They take no recipe roles, so they are not registered as recipe losses; the
teacher's BatchNorm statistics are read by forward hooks (``BatchNormStatistics`` in ``methods/data_free.py``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgedistill.losses.response import kl_rows


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
    return -(agree * per_sample_kd(student_logits, teacher_logits, temperature)).mean()


def logit_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DFAD's discrepancy: mean absolute difference of the logits (nn.L1Loss, mean over all entries)."""
    return (student_logits - teacher_logits).abs().mean()


def per_sample_l1(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """(B,) mean absolute logit difference of each sample; its batch mean is ``logit_l1``."""
    return (student_logits - teacher_logits).abs().mean(1)


def per_sample_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B,) T^2 KL(softmax(t/T) || softmax(s/T)) of each sample."""
    return temperature**2 * kl_rows(teacher_logits, student_logits, temperature)


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


def adv_increments(epoch: int, epochs: int, begin: float, end: float) -> int:
    """How many times the official CuDFKD loop has raised ``adv`` before 0-based ``epoch``: once after every epoch
    e with ``int(begin*E) < e < int(end*E)`` (``datafree_kd.py``: ``synthesizer.adv += args.grad_adv``)."""
    lo, hi = int(epochs * begin), int(epochs * end)
    return sum(1 for e in range(epoch) if lo < e < hi)


def stepped_adv_weight(epoch: int, epochs: int, start: float, increment: float, begin: float, end: float) -> float:
    """CuDFKD's official generator schedule: ``start`` (``--adv``) plus ``increment`` (``--grad_adv``, +0.5 in the
    CIFAR-10 scripts) per epoch inside the curriculum window, so the final weight grows with the epochs."""
    return start + increment * adv_increments(epoch, epochs, begin, end)


def stepped_lambda(lam0: float, rate: float, student_steps: int, cap: float = math.inf) -> float:
    """CuDFKD's official self-paced threshold ``lam_n = lam0 + rate * n`` after ``n`` student steps (``--lambda_0``;
    rate 1e-4 for CIFAR-10, 2e-5 otherwise), held at ``cap`` (the code's ``iter_0`` bound)."""
    return min(cap, lam0 + rate * student_steps)
