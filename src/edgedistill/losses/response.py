"""Response-based losses on logits: cross-entropy and Hinton KD in both directions.

All take logits of shape (N, C) or (N, C, *positions) (class dimension 1) and return the mean over
samples (and positions): the mathematical batch-mean, not PyTorch's element-mean ``reduction='mean'``
of ``kl_div``, which divides by the class count as well (a bug in several official codes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import classes_last, min_dims, positive, same_shape


def ce(student_logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with the labels, batch mean: mean_i -log softmax(z_i)[y_i]; with soft targets (mixup),
    ``target`` holds class probabilities shaped like the logits: mean_i -sum_c y_ic log softmax(z_i)_c."""
    min_dims("ce", "student_logits", student_logits, 2, "(N, C, ...) logits")
    if target.dtype.is_floating_point and target.shape != student_logits.shape:
        raise UserInputError(
            f"ce: target must hold integer class indices, or class probabilities shaped like the logits "
            f"{tuple(student_logits.shape)}; got dtype {target.dtype}, shape {tuple(target.shape)}"
        )
    return F.cross_entropy(student_logits, target, label_smoothing=label_smoothing)


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-row KL(softmax(p/T) || softmax(q/T)) for (rows, C) logits, no T^2 and no reduction: the piece every
    per-sample weighted KD (CA-MKD, PSKD, AMAL, the data-free regimes) is built from. ``T^2 * kl_rows(t, s, T)``
    is Hinton's per-sample KD term."""
    log_p = F.log_softmax(p_logits / temperature, dim=1)
    log_q = F.log_softmax(q_logits / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton KD: T^2 * mean_i KL(softmax(z_t/T) || softmax(z_s/T)) (batch mean; Hinton et al. 2015)."""
    same_shape("kd", "student_logits", student_logits, "teacher_logits", teacher_logits)
    min_dims("kd", "student_logits", student_logits, 2, "(N, C, ...) logits")
    positive("kd", "temperature", temperature)
    rows = kl_rows(classes_last(teacher_logits), classes_last(student_logits), temperature)
    return temperature**2 * rows.mean()


def reverse_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Reverse KD: T^2 * mean_i KL(softmax(z_s/T) || softmax(z_t/T)), the mode-seeking direction."""
    same_shape("reverse_kd", "student_logits", student_logits, "teacher_logits", teacher_logits)
    min_dims("reverse_kd", "student_logits", student_logits, 2, "(N, C, ...) logits")
    positive("reverse_kd", "temperature", temperature)
    rows = kl_rows(classes_last(student_logits), classes_last(teacher_logits), temperature)
    return temperature**2 * rows.mean()


def kd_to_distribution(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """T^2 * mean_i KL(q_i || softmax(z_s,i / T)) for a given target distribution q (rows sum to 1).

    The KD term when the target is not one teacher's softened logits: an average of teachers'
    probabilities, a virtual teacher, a per-sample choice of expert. Rows with q = 0 contribute 0 log 0 = 0.
    """
    same_shape("kd_to_distribution", "student_logits", student_logits, "target_probs", target_probs)
    min_dims("kd_to_distribution", "student_logits", student_logits, 2, "(N, C, ...) logits")
    positive("kd_to_distribution", "temperature", temperature)
    q = classes_last(target_probs)
    log_s = F.log_softmax(classes_last(student_logits) / temperature, dim=1)
    rows = (torch.xlogy(q, q) - q * log_s).sum(dim=1)
    return temperature**2 * rows.mean()
