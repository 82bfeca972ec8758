"""More response-based losses on logits: DKD, DIST, MIX-KD's standardised KD and a balanced forward/reverse KD.

Same conventions as ``response.py``: logits are (N, C) or (N, C, *positions) with classes on dim 1, every
position becomes a row, and the reduction is the mean over rows (DIST's intra-class term is the exception:
a mean over classes of a correlation taken across the rows).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import classes_last, min_dims, positive, same_shape
from edgedistill.losses.response import kl_rows
from edgedistill.registry import LOSSES


def _logit_rows(loss: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a student/teacher logit pair and return both as (rows, C)."""
    same_shape(loss, "student_logits", student_logits, "teacher_logits", teacher_logits)
    min_dims(loss, "student_logits", student_logits, 2, "(N, C, ...) logits")
    if student_logits.shape[1] < 2:
        raise UserInputError(f"{loss}: student_logits needs at least 2 classes on dim 1, got shape {tuple(student_logits.shape)}")
    return classes_last(student_logits), classes_last(teacher_logits)


def _non_negative(loss: str, name: str, value: float) -> None:
    if not value >= 0:
        raise UserInputError(f"{loss}: {name} must be >= 0, got {value}")


def _target_rows(loss: str, target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Integer labels of shape (N, *positions) -> (rows,), checked against the class count of ``logits``."""
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise UserInputError(f"{loss}: target must hold integer class indices, got dtype {target.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise UserInputError(
            f"{loss}: target has shape {tuple(target.shape)} but student_logits {tuple(logits.shape)} needs {expected}"
        )
    rows = target.reshape(-1).long()
    n_classes = logits.shape[1]
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n_classes):
        raise UserInputError(f"{loss}: target labels must lie in [0, {n_classes}), got {int(rows.min())}..{int(rows.max())}")
    return rows


# ---------------------------------------------------------------------------------------------------- DKD


def _dkd_rows(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row TCKD and NCKD (without T^2) for (rows, C) logits and (rows,) labels."""
    is_target = F.one_hot(y, s.shape[1]).bool()

    def log_parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z / temperature
        lse_all = torch.logsumexp(z, dim=1)
        # log-sum-exp over the non-target classes only: exact, where mdistiller subtracts 1000 from the target logit
        lse_non = torch.logsumexp(z.masked_fill(is_target, float("-inf")), dim=1)
        log_b = torch.stack([z.gather(1, y[:, None]).squeeze(1) - lse_all, lse_non - lse_all], dim=1)  # log[p_y, 1 - p_y]
        # Zero (not -inf) at the target entry so that entry adds exactly 0 below and no inf/NaN reaches the gradient.
        log_hat = (z - lse_non[:, None]).masked_fill(is_target, 0.0)
        return log_b, log_hat

    log_bs, log_hs = log_parts(s)
    log_bt, log_ht = log_parts(t)
    tckd = (log_bt.exp() * (log_bt - log_bs)).sum(dim=1)
    nckd = (log_ht.exp() * (log_ht - log_hs)).masked_fill(is_target, 0.0).sum(dim=1)
    return tckd, nckd


@LOSSES.register("dkd", task="classification")
def dkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Decoupled KD: T^2 * mean_i (alpha*TCKD_i + beta*NCKD_i), target vs non-target class KL (Zhao et al. 2022).

    TCKD_i = KL([p^t_y, 1-p^t_y] || [p^s_y, 1-p^s_y]) on softmax(z/T); NCKD_i = KL of the softmaxes over the
    non-target classes only. Mean over rows (samples, and positions for (N, C, *positions) logits with
    target (N, *positions)). The CE term and DKD's linear warm-up of this term are the method's business.
    """
    s, t = _logit_rows("dkd", student_logits, teacher_logits)
    positive("dkd", "temperature", temperature)
    _non_negative("dkd", "alpha", alpha)
    _non_negative("dkd", "beta", beta)
    y = _target_rows("dkd", target, student_logits)
    tckd, nckd = _dkd_rows(s, t, y, temperature)
    return temperature**2 * (alpha * tckd.mean() + beta * nckd.mean())


# --------------------------------------------------------------------------------------------------- DIST


def _pearson_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - Pearson correlation of matching rows of ``a`` and ``b``: (rows,) values in [0, 2].

    eps in the denominator as in the official DIST code; a constant row therefore has correlation 0.
    """
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return 1.0 - (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@LOSSES.register("dist", task="classification")
def dist(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """DIST: tau^2 * (beta*inter + gamma*intra), 1 - Pearson correlation of softmax(z/tau) (Huang et al. 2022).

    inter = mean over rows of (1 - pearson) across classes; intra = mean over classes of (1 - pearson) across
    the rows of the batch. (N, C, *positions) logits become (N * positions, C) rows, as in the official
    segmentation version. With a single row, intra is the constant 1 (no gradient).
    """
    s, t = _logit_rows("dist", student_logits, teacher_logits)
    positive("dist", "temperature", temperature)
    _non_negative("dist", "beta", beta)
    _non_negative("dist", "gamma", gamma)
    ys = F.softmax(s / temperature, dim=1)
    yt = F.softmax(t / temperature, dim=1)
    inter = _pearson_distance(ys, yt).mean()
    intra = _pearson_distance(ys.T, yt.T).mean()
    return temperature**2 * (beta * inter + gamma * intra)


# ----------------------------------------------------------------------------------------- MIX-KD std KD


def standardize_logits(logits: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each sample's logits by their unbiased (C-1) std over the classes (dim 1), after centring.

    Centring does not change any softmax; it keeps constant rows at 0 instead of 0/0. The variance is
    clamped at ``eps`` so such rows stay finite and have a finite (zero) gradient through the std.
    """
    min_dims("standardize_logits", "logits", logits, 2, "(N, C, ...) logits")
    if logits.shape[1] < 2:
        raise UserInputError(f"standardize_logits: logits needs at least 2 classes on dim 1, got shape {tuple(logits.shape)}")
    centred = logits - logits.mean(dim=1, keepdim=True)
    var = centred.pow(2).sum(dim=1, keepdim=True) / (logits.shape[1] - 1)
    return centred / var.clamp_min(eps).sqrt()


@LOSSES.register("std_normalized_kd", task="classification")
def std_normalized_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """MIX-KD standardised KD: T^2 * mean_i KL(softmax(z_t/(T*std z_t)) || softmax(z_s/(T*std z_s))) (Choi et al. 2023).

    Each sample's logits are divided by their own unbiased std over the classes (an adaptive per-sample
    temperature), so the loss is unchanged when either logit vector is scaled by c > 0. T = 1 is the
    MIX-KD code (MIXSTDLoss, no temperature, no T^2). Mean over rows. The CE term is a separate recipe term.
    """
    s, t = _logit_rows("std_normalized_kd", student_logits, teacher_logits)
    positive("std_normalized_kd", "temperature", temperature)
    return temperature**2 * kl_rows(standardize_logits(t), standardize_logits(s), temperature).mean()


# ------------------------------------------------------------------------------------------------- BD-KD


def _entropy_rows(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-row Shannon entropy (nats) of softmax(logits / T) for (rows, C) logits."""
    log_p = F.log_softmax(logits / temperature, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def balanced_kd_weights(student_logits: torch.Tensor, teacher_logits: torch.Tensor, gate_width: float = 0.1) -> torch.Tensor:
    """Per-row weight w_i of the reverse KL in ``balanced_kd`` (OUR rule, not the paper's; detached).

    w_i = sigmoid((H(p_s,i) - H(p_t,i)) / (log(C) * gate_width)) with entropies of the unsoftened (T = 1)
    softmaxes, i.e. the gap in entropy normalised by its maximum log C. w_i > 1/2 where the student is less
    confident than the teacher. gate_width = 0 is a hard switch (w = 1, 0, or 1/2 on a tie). Returns (rows,).
    """
    s, t = _logit_rows("balanced_kd", student_logits, teacher_logits)
    _non_negative("balanced_kd", "gate_width", gate_width)
    with torch.no_grad():
        # The weights choose the direction per sample; they get no gradient, or the student could lower its
        # loss by changing its entropy to move weight onto whichever KL is currently smaller.
        gap = (_entropy_rows(s) - _entropy_rows(t)) / math.log(s.shape[1])
        if gate_width == 0:
            return torch.heaviside(gap, torch.full_like(gap, 0.5))
        return torch.sigmoid(gap / gate_width)


@LOSSES.register("balanced_kd", task="classification")
def balanced_kd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
    gate_width: float = 0.1,
) -> torch.Tensor:
    """Balanced KD: T^2 * mean_i [(1-w_i) KL(p_t||p_s) + w_i KL(p_s||p_t)], w_i from an entropy gap (BD-KD style).

    The per-sample weight rule is OUR choice (BD-KD's rule is not published in a source we could read): see
    ``balanced_kd_weights``; it moves weight to the mode-seeking reverse KL where the student is less
    confident than the teacher. Offline use (frozen teacher); mean over rows. w = 0 everywhere is ``kd``,
    w = 1 everywhere is ``reverse_kd``.
    """
    positive("balanced_kd", "temperature", temperature)
    w = balanced_kd_weights(student_logits, teacher_logits, gate_width)
    s, t = classes_last(student_logits), classes_last(teacher_logits)
    forward = kl_rows(t, s, temperature)
    reverse = kl_rows(s, t, temperature)
    return temperature**2 * ((1.0 - w) * forward + w * reverse).mean()
