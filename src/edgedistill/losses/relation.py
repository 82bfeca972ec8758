"""Relation-based losses on pooled embeddings: RKD and PKT, plus a Gaussian-kernel MMD helper.

RKD and PKT compare how the samples of a batch relate to each other (distances, angles, cosine
similarities), never the embeddings themselves, so the student's and the teacher's embedding widths may
differ. Both take ``(N, D)`` embeddings (any trailing shape is flattened to ``(N, D)``, as in RepDistiller)
and need at least two samples per batch. The teacher side is not detached here: with the frozen teachers
of the offline method it carries no gradient anyway.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import min_dims, positive, same_batch
from edgedistill.registry import LOSSES

# RepDistiller's pdist clamps squared distances here before the square root: it keeps sqrt's gradient finite.
_SQ_DIST_FLOOR = 1e-12
# PKT: the official code adds 1e-7 to the norm and inside the log ratio.
_PKT_EPS = 1e-7


def _rows(loss: str, name: str, t: torch.Tensor) -> torch.Tensor:
    """(N, D, ...) -> (N, D'): every sample becomes one flat embedding vector."""
    min_dims(loss, name, t, 2, "(N, D) embeddings")
    return t.reshape(t.shape[0], -1)


def _pair(loss: str, student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = _rows(loss, "student_emb", student_emb), _rows(loss, "teacher_emb", teacher_emb)
    same_batch(loss, "student_emb", s, "teacher_emb", t)
    if s.shape[0] < 2:
        raise UserInputError(f"{loss}: needs at least 2 samples per batch to form relations, got {s.shape[0]}")
    return s, t


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances (N, N), zero diagonal, divided by the mean off-diagonal distance."""
    sq = (e[:, None, :] - e[None, :, :]).pow(2).sum(-1).clamp_min(_SQ_DIST_FLOOR)
    off = ~torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    d = torch.where(off, sq.sqrt(), torch.zeros_like(sq))
    # With the floor every off-diagonal distance is > 0, so this is RepDistiller's "mean of d[d > 0]".
    return d / d[off].mean()


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at vertex a between b and c, for every (a, b, c): shape (N, N, N).
    The unit vector of e_a - e_a is the zero vector (F.normalize's 1e-12 floor), so those cosines are 0."""
    unit = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # unit[a, b] = (e_b - e_a) / |e_b - e_a|
    return torch.bmm(unit, unit.transpose(1, 2))


@LOSSES.register("rkd")
def rkd(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> torch.Tensor:
    """Relational KD: w_d * Huber on mean-normalised pairwise distances + w_a * Huber on triplet angles (Park et al. 2019).

    Reduction: the distance term is the mean of smooth-L1 (beta = 1) over all N x N pairs (diagonal
    included, where both sides are 0); the angle term is the mean over all N x N x N triplets. Both are
    RepDistiller's ``RKDLoss`` reductions. Invariant to batch order, to scaling and translating either
    embedding. ``distance_weight=1, angle_weight=0`` gives the distance term alone, and vice versa.
    """
    s, t = _pair("rkd", student_emb, teacher_emb)
    dist = F.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t), reduction="mean", beta=1.0)
    angle = F.smooth_l1_loss(_angles(s), _angles(t), reduction="mean", beta=1.0)
    return distance_weight * dist + angle_weight * angle


def _cosine_conditionals(e: torch.Tensor) -> torch.Tensor:
    """P_ij = K_ij / sum_j K_ij with K_ij = (cos(e_i, e_j) + 1) / 2, self-pairs included (as the code does)."""
    unit = e / (e.norm(dim=1, keepdim=True) + _PKT_EPS)
    kernel = (unit @ unit.T + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


@LOSSES.register("pkt")
def pkt(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Probabilistic KT: KL between teacher and student cosine-kernel conditional probabilities (Passalis & Tefas 2018).

    L = mean over all N x N entries of P^T_ij * log((P^T_ij + 1e-7) / (P^S_ij + 1e-7)), RepDistiller's
    ``PKT`` reduction (a mean over the N^2 entries, i.e. the row-summed KL divided by N once more).
    Zero when the student's cosine-similarity matrix equals the teacher's.
    """
    s, t = _pair("pkt", student_emb, teacher_emb)
    p_s, p_t = _cosine_conditionals(s), _cosine_conditionals(t)
    return (p_t * torch.log((p_t + _PKT_EPS) / (p_s + _PKT_EPS))).mean()


def mmd(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Biased squared MMD with a Gaussian kernel: mean k(x,x) + mean k(y,y) - 2 mean k(x,y).

    k(a, b) = exp(-||a - b||^2 / (2 sigma^2)). ``x`` is (n, D) and ``y`` is (m, D) (trailing shapes are
    flattened); n and m may differ. This is the V-statistic (diagonal terms included), so it is >= 0 and
    exactly 0 for identical sets. A helper for domain alignment, not a teacher/student loss, so it is not
    registered for recipes.
    """
    a, b = _rows("mmd", "x", x), _rows("mmd", "y", y)
    if a.shape[1] != b.shape[1]:
        raise UserInputError(f"mmd: x has {a.shape[1]} features per row but y has {b.shape[1]}; they must match")
    positive("mmd", "sigma", sigma)

    def kernel_mean(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # Expanded ||u - v||^2 keeps memory at n*m (not n*m*D); the clamp removes tiny negative round-off.
        sq = (u.pow(2).sum(1)[:, None] + v.pow(2).sum(1)[None, :] - 2.0 * u @ v.T).clamp_min(0.0)
        return torch.exp(-sq / (2.0 * sigma**2)).mean()

    return kernel_mean(a, a) + kernel_mean(b, b) - 2.0 * kernel_mean(a, b)
