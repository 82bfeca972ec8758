"""Angular losses of the ASU Geometric Media Lab: AMD (distillation), AMC and the OS regulariser (training aids).

``amd`` follows the official code
(jeunsom/AMD_loss ``AngularPenaltyLoss``): element-mean MSEs, averaged over the three terms. ``amc`` follows
hchoi71/AMC-Loss. The OS regulariser's exact form in the paper is unknown; see ``orthogonal_sphere``.
All three are recipe terms: ``amc`` and ``orthogonal_sphere`` read the student's pooled embedding
(``student_emb``, tap ``emb``) and, for ``amc``, the labels (``target``); docs/losses/amc.md.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import min_dims, positive
from edgedistill.registry import LOSSES

_CLIP_EPS = 1e-7  # arccos argument clip of the official AMD code
_ATT_EPS = 1e-6  # added to the attention-map norm in the official AMD code
_VARIANTS = ("A", "B", "C")


def positive_map(feat: torch.Tensor) -> torch.Tensor:
    """Positive map Q_p of AMD: channel energy sum_c F_c^2 per position, L2-normalised over positions.

    (N, C, *spatial) -> (N, *spatial), entries in [0, 1], read as cos(theta). Independent of the channel
    count and order, and (up to the 1e-6 of the code) of a positive rescaling of the features.
    """
    energy = feat.pow(2).sum(dim=1)
    norm = energy.flatten(1).norm(dim=1).view(-1, *([1] * (energy.dim() - 1)))
    return energy / (norm + _ATT_EPS)


def _amd_parts(q: torch.Tensor, margin: float, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, P, N) of a flattened (N, positions) positive map, as in the official code."""
    theta = torch.acos(q.clamp(-1 + _CLIP_EPS, 1 - _CLIP_EPS))
    pos = scale * torch.cos(margin * theta)  # SphereFace-style multiplicative margin; may go negative
    neg = scale * (1.0 - q)
    # A = P - log(e^P + e^N) = -softplus(N - P): the stable form of the code's explicit log-sum-exp.
    return -F.softplus(neg - pos), pos, neg


def _amd_terms_from_maps(
    qs: torch.Tensor, qt: torch.Tensor, margin: float, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    student = _amd_parts(qs.flatten(1), margin, scale)
    teacher = _amd_parts(qt.flatten(1), margin, scale)
    # Each vector is L2-normalised over positions, then an element-mean MSE (the code; the paper sums).
    a, p, n = (F.mse_loss(F.normalize(s, dim=1), F.normalize(t, dim=1)) for s, t in zip(student, teacher))
    return a, p, n


def _check_maps(loss: str, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> None:
    min_dims(loss, "student_feat", student_feat, 3, "a (N, C, L) or (N, C, H, W) feature map")
    min_dims(loss, "teacher_feat", teacher_feat, 3, "a (N, C, L) or (N, C, H, W) feature map")
    if student_feat.shape[0] != teacher_feat.shape[0] or student_feat.shape[2:] != teacher_feat.shape[2:]:
        raise UserInputError(
            f"{loss}: student_feat has shape {tuple(student_feat.shape)} but teacher_feat has shape "
            f"{tuple(teacher_feat.shape)}; batch and spatial sizes must match (channel counts may differ)"
        )


def amd_terms(
    student_feat: torch.Tensor, teacher_feat: torch.Tensor, margin: float = 1.35, scale: float = 64.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three global AMD terms (A, P, N), each an element-mean MSE of L2-normalised maps; amd is their mean."""
    _check_maps("amd", student_feat, teacher_feat)
    return _amd_terms_from_maps(positive_map(student_feat), positive_map(teacher_feat), margin, scale)


def _blocks(q: torch.Tensor, splits: int) -> list[torch.Tensor]:
    """Cut an (N, *spatial) map into splits^d blocks (quadrants for 2-D and splits=2, segments for 1-D)."""
    blocks = [q]
    for axis in range(1, q.dim()):
        blocks = [part for b in blocks for part in torch.tensor_split(b, splits, dim=axis)]
    return blocks


@LOSSES.register("amd")
def amd(
    student_feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    margin: float = 1.35,
    scale: float = 64.0,
    local_weight: float = 0.0,
    local_splits: int = 2,
) -> torch.Tensor:
    """AMD angular-margin distillation of one feature-map pair (Jeon et al. 2023), official-code reduction.

    L_AM = (mse(n(A_S), n(A_T)) + mse(n(P_S), n(P_T)) + mse(n(N_S), n(N_T))) / 3, with Q_p the
    normalised channel-energy map, P = s*cos(m*arccos(Q_p)), N = s*(1 - Q_p), A = log-sigmoid(P - N),
    n = L2 normalisation over positions and mse the mean over batch and positions.

    ``local_weight`` w > 0 gives (1 - w) * global + w * mean over local blocks (the paper's global + local
    form; the code uses w = 0.2). Blocks cut the full-map Q_p, without re-normalising, into ``local_splits``
    pieces per spatial axis (2x2 quadrants for images, halves for time series); each block gets its own
    1 - Q_p. Batch and spatial sizes must match; channel counts may differ.
    """
    _check_maps("amd", student_feat, teacher_feat)
    positive("amd", "margin", margin)
    positive("amd", "scale", scale)
    if not 0.0 <= local_weight <= 1.0:
        raise UserInputError(f"amd: local_weight must be in [0, 1], got {local_weight}")
    if isinstance(local_splits, bool) or not isinstance(local_splits, int) or local_splits < 1:
        raise UserInputError(f"amd: local_splits must be an integer >= 1, got {local_splits!r}")
    qs, qt = positive_map(student_feat), positive_map(teacher_feat)
    total = torch.stack(_amd_terms_from_maps(qs, qt, margin, scale)).mean()
    if local_weight > 0:
        pairs = list(zip(_blocks(qs, local_splits), _blocks(qt, local_splits)))
        local = torch.stack([torch.stack(_amd_terms_from_maps(s, t, margin, scale)).mean() for s, t in pairs])
        total = (1.0 - local_weight) * total + local_weight * local.mean()
    return total


@LOSSES.register("amc", task="classification")
def amc(student_emb: torch.Tensor, target: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """AMC-Loss (Choi et al. 2020): geodesic contrastive loss on the pairs (i, i + B/2), mean over pairs.

    theta_i = arccos(<e_i, e_{i+B/2}>) of the L2-normalised embeddings (clipped to 1e-7 from +-1);
    a same-label pair costs theta^2, a different-label pair max(0, margin - theta)^2. As in the code, an
    odd last sample has no partner and is left out. ``target`` may be ground truth or predicted labels.
    A recipe term (``{loss: amc, weight: 10, start_epoch: 1, warmup_epochs: 50, ramp: sigmoid}``, the code's
    w(t) = 0.1 * 100 * exp(-5 (1 - t/50)^2)) reads the student's pooled embedding (tap ``emb``) and the labels.
    The batch order is the pairing: a shuffled loader makes the pairs random, as in the code.
    """
    min_dims("amc", "student_emb", student_emb, 2, "(B, D) embeddings")
    if target.dtype.is_floating_point or target.shape != student_emb.shape[:1]:
        raise UserInputError(
            f"amc: target must be integer class indices of shape ({student_emb.shape[0]},), "
            f"got dtype {target.dtype} and shape {tuple(target.shape)}"
        )
    if student_emb.shape[0] < 2:
        raise UserInputError(f"amc: needs a batch of at least 2 embeddings to form a pair, got {student_emb.shape[0]}")
    positive("amc", "margin", margin)
    half = student_emb.shape[0] // 2
    unit = F.normalize(student_emb.flatten(1), dim=1)
    cos = (unit[:half] * unit[half : 2 * half]).sum(dim=1)
    theta = torch.acos(cos.clamp(-1 + _CLIP_EPS, 1 - _CLIP_EPS))
    same = target[:half] == target[half : 2 * half]
    return torch.where(same, theta.pow(2), (margin - theta).clamp_min(0).pow(2)).mean()


@LOSSES.register("orthogonal_sphere")
def orthogonal_sphere(student_emb: torch.Tensor, variant: Literal["A", "B", "C"] = "A") -> torch.Tensor:
    """Orthogonal-Sphere (OS) regulariser on (B, D) features ``student_emb``; variant A (default), B or C, see below.

    A: ||Phi^T Phi - I_D||_F, Phi = rows (samples) L2-normalised, not squared (the only form seen in code).
    B: ||Psi^T Psi - I_D||_F^2, Psi = columns (feature dimensions over the batch) L2-normalised.
    C: ||Phi Phi^T - I_B||_F^2 (sample Gram; listed for completeness, it fights class clustering).
    The paper's exact form is unknown; A is our default choice, not a verified paper formula. Reduction:
    a matrix norm over the whole batch, no mean. Extra dimensions of ``student_emb`` are flattened per sample.
    A recipe term (``{loss: orthogonal_sphere, weight: 0.1, variant: B}``) reads the student's pooled embedding
    (tap ``emb``; another tap with ``student_tap``) and adds lambda * L_OS to the other terms (CE).
    """
    min_dims("orthogonal_sphere", "student_emb", student_emb, 2, "(B, D) features")
    if variant not in _VARIANTS:
        raise UserInputError(f"orthogonal_sphere: variant must be one of {', '.join(_VARIANTS)}, got {variant!r}")
    flat = student_emb.flatten(1)
    if variant == "B":
        psi = F.normalize(flat, dim=0)
        eye = torch.eye(flat.shape[1], dtype=flat.dtype, device=flat.device)
        return (psi.T @ psi - eye).pow(2).sum()
    phi = F.normalize(flat, dim=1)
    if variant == "C":
        eye = torch.eye(flat.shape[0], dtype=flat.dtype, device=flat.device)
        return (phi @ phi.T - eye).pow(2).sum()
    eye = torch.eye(flat.shape[1], dtype=flat.dtype, device=flat.device)
    # matrix_norm has a zero (not NaN) gradient at an exactly orthonormal Phi, where the norm is 0.
    return torch.linalg.matrix_norm(phi.T @ phi - eye)


__all__ = ["amd", "amd_terms", "positive_map", "amc", "orthogonal_sphere"]
