"""Multi-teacher building blocks: CA-MKD confidence weights and an orthogonality constraint on correlation maps.

CA-MKD (official code Rorozhl/CA-MKD) and TPKD's L_Oth (arXiv 2407.05315, whose exact form is unknown: ours is stated below).
Both are functional helpers for multi-teacher regimes, not recipe terms.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import classes_last, min_dims, positive
from edgedistill.losses.feature import batch_similarity

Tensors = Union[torch.Tensor, Sequence[torch.Tensor]]


def _stack(name: str, tensors: Tensors, what: str) -> list[torch.Tensor]:
    items = list(tensors.unbind(0)) if isinstance(tensors, torch.Tensor) else list(tensors)
    if not items:
        raise UserInputError(f"{name}: expected at least one {what}, got none")
    return items


def confidence_weights(teacher_logits_list: Tensors, target: torch.Tensor) -> torch.Tensor:
    """CA-MKD per-sample teacher weights (Zhang et al. 2022): w[k, i] = (1 - softmax over k of CE_k,i) / (K - 1).

    CE_k,i is teacher k's cross-entropy on sample i with the true label (mean over positions for
    (B, C, *positions) logits); the softmax runs over the K teachers, so every column sums to 1 and a
    teacher with lower CE gets a larger weight, each in [0, 1/(K-1)]. Input: K logit tensors of equal
    shape (B, C, ...) or one (K, B, C, ...) tensor. Returns (K, B); no reduction. Needs K >= 2.
    """
    logits = _stack("confidence_weights", teacher_logits_list, "teacher logit tensor")
    if len(logits) < 2:
        raise UserInputError(f"confidence_weights: needs at least 2 teachers, got {len(logits)}")
    for k, z in enumerate(logits):
        min_dims("confidence_weights", f"teacher_logits_list[{k}]", z, 2, "(B, C, ...) logits")
        if z.shape != logits[0].shape:
            raise UserInputError(
                f"confidence_weights: teacher_logits_list[{k}] has shape {tuple(z.shape)} but "
                f"teacher_logits_list[0] has shape {tuple(logits[0].shape)}; they must match"
            )
    if target.dtype.is_floating_point or target.shape != (logits[0].shape[0], *logits[0].shape[2:]):
        raise UserInputError(
            f"confidence_weights: target must hold integer class indices of shape "
            f"{(logits[0].shape[0], *logits[0].shape[2:])}, got dtype {target.dtype} and shape {tuple(target.shape)}"
        )
    batch = logits[0].shape[0]
    flat_target = target.reshape(-1)
    ce = torch.stack(
        [F.cross_entropy(classes_last(z), flat_target, reduction="none").view(batch, -1).mean(dim=1) for z in logits]
    )
    return (1.0 - ce.softmax(dim=0)) / (len(logits) - 1)


def correlation_map(feature_map: torch.Tensor) -> torch.Tensor:
    """Row-normalised B x B correlation (similarity) map n_row(F F^T) of one layer, as in TGD / TPKD."""
    min_dims("correlation_map", "feature_map", feature_map, 2, "(B, ...) features")
    return batch_similarity(feature_map)


def correlation_orthogonality(feature_maps: Tensors, patches: int = 1) -> torch.Tensor:
    """Orthogonality constraint on feature-correlation maps (TPKD's L_Oth, OUR form): mean ||n_row(G) - I||_F^2 / b^2.

    For each feature map (B, ...) in ``feature_maps`` (one tensor, or a sequence, e.g. one per layer or per
    teacher), the batch is cut into ``patches`` consecutive groups of b samples; each group's Gram map G
    (b x b) is row-normalised and pushed to the identity, i.e. different samples' features orthogonal.
    Reduction: mean over maps and groups of the squared Frobenius distance divided by b^2. The paper's
    operator and patching are unknown; this follows the lab notes' guess "normalise G, then subtract I" and
    is our choice, not a verified paper formula.
    """
    if isinstance(feature_maps, torch.Tensor):
        maps = [feature_maps]
    else:
        maps = _stack("correlation_orthogonality", feature_maps, "feature map")
    if isinstance(patches, bool) or not isinstance(patches, int) or patches < 1:
        raise UserInputError(f"correlation_orthogonality: patches must be an integer >= 1, got {patches!r}")
    values = []
    for j, fm in enumerate(maps):
        min_dims("correlation_orthogonality", f"feature_maps[{j}]", fm, 2, "(B, ...) features")
        if fm.shape[0] < patches:
            raise UserInputError(
                f"correlation_orthogonality: feature_maps[{j}] has {fm.shape[0]} samples, fewer than patches={patches}"
            )
        for group in torch.tensor_split(fm, patches, dim=0):
            eye = torch.eye(group.shape[0], dtype=group.dtype, device=group.device)
            values.append((correlation_map(group) - eye).pow(2).sum() / group.shape[0] ** 2)
    return torch.stack(values).mean()


__all__ = ["confidence_weights", "correlation_map", "correlation_orthogonality"]


def average_probs(teacher_logits_list: Tensors, temperature: float = 1.0, weights: Optional[Sequence[float] | torch.Tensor] = None) -> torch.Tensor:
    """sum_k w_k softmax(z_k / T): the teachers' softened predictions averaged in probability space.

    ``weights`` (K,) default to uniform and are renormalised to sum to 1 (so only their ratios matter);
    they must be non-negative with a positive sum. Returns (N, C) probabilities.
    """
    logits = _stack("average_probs", teacher_logits_list, "teacher logits")
    positive("average_probs", "temperature", temperature)
    w = torch.ones(len(logits)) if weights is None else torch.as_tensor(weights, dtype=torch.float64).flatten()
    if len(w) != len(logits) or (w < 0).any() or float(w.sum()) <= 0:
        raise UserInputError(
            f"average_probs: weights must be {len(logits)} non-negative numbers with a positive sum, got {w.tolist()}"
        )
    w = (w / w.sum()).to(logits[0].dtype)
    return sum(wk * F.softmax(z / temperature, dim=1) for wk, z in zip(w, logits))
