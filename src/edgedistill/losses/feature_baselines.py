"""Classic feature-distillation baselines: NST, CC, ICKD (one tap per network) and FSP, KD-SVD (two or more).

Same conventions as ``feature.py``: maps are ``(N, C, L)`` or ``(N, C, H, W)``; where a loss compares positions
and the sizes differ, the larger map is adaptive-average-pooled to the smaller (``match_positions``); the
teacher side is not detached. FSP and KD-SVD relate *consecutive layers of one network*, so their
``student_feat`` / ``teacher_feat`` are sequences of maps (a term names several taps per network); given one
tensor they refuse with a message that says so. Each function's docstring says where we follow the official
code and where the form is our choice; the docs pages (docs/losses/<name>.md) give the details.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import min_dims, positive, same_batch
from edgedistill.losses.feature import _Adapted, build_adapter, match_positions, same_channel_maps, unit_rows
from edgedistill.registry import LOSSES

_MAP = "a feature map (N, C, L) or (N, C, H, W)"
Maps = Union[torch.Tensor, Sequence[torch.Tensor]]


def _maps(loss: str, name: str, value: Maps) -> list[torch.Tensor]:
    """A sequence of >= 2 maps from a term that names several taps; one tensor is refused with how to give more."""
    if isinstance(value, torch.Tensor):
        raise UserInputError(
            f"{loss}: {name} must be a list of at least 2 feature maps of consecutive layers (in a recipe term: "
            f"{name.split('_')[0]}_tap: [stage1, feat]), got one tensor of shape {tuple(value.shape)}"
        )
    maps = list(value)
    if len(maps) < 2:
        raise UserInputError(f"{loss}: {name} must hold at least 2 feature maps, got {len(maps)}")
    for i, m in enumerate(maps):
        min_dims(loss, f"{name}[{i}]", m, 3, _MAP)
    return maps


def _paired(loss: str, student_feat: Maps, teacher_feat: Maps) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    s, t = _maps(loss, "student_feat", student_feat), _maps(loss, "teacher_feat", teacher_feat)
    if len(s) != len(t):
        raise UserInputError(f"{loss}: student_feat has {len(s)} maps but teacher_feat has {len(t)}; they must pair up")
    for i, (a, b) in enumerate(zip(s, t)):
        same_batch(loss, f"student_feat[{i}]", a, f"teacher_feat[{i}]", b)
    return s, t


def _flat(feat: torch.Tensor) -> torch.Tensor:
    """(N, C, *positions) -> (N, C, P)."""
    return feat.reshape(feat.shape[0], feat.shape[1], -1)


# ---------------------------------------------------------------- NST


def _poly_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch and all (i, j) channel pairs of k(a_i, b_j) = (a_i . b_j)^2 for (N, C, P) inputs."""
    return (a @ b.transpose(1, 2)).pow(2).mean()


@LOSSES.register("nst")
def nst(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Neuron selectivity transfer: squared MMD, polynomial kernel (x.y)^2, between channel activation patterns (Huang & Wang 2017).

    Each channel's map over the positions is one sample of the network's distribution, L2-normalised;
    L = mean k(t_i, t_j) + mean k(s_i, s_j) - 2 mean k(s_i, t_j) over channel pairs and the batch, as the
    RepDistiller/mdistiller code (kernel d = 2, c = 0, the paper's best). Channel counts may differ; positions
    are pooled to the smaller size. A dead (all-zero) channel stays 0 with a zero gradient (``unit_rows``).
    """
    min_dims("nst", "student_feat", student_feat, 3, _MAP)
    min_dims("nst", "teacher_feat", teacher_feat, 3, _MAP)
    same_batch("nst", "student_feat", student_feat, "teacher_feat", teacher_feat)
    s, t = match_positions("nst", student_feat, teacher_feat)
    s, t = unit_rows(_flat(s)), unit_rows(_flat(t))
    return _poly_mean(t, t) + _poly_mean(s, s) - 2.0 * _poly_mean(s, t)


# ---------------------------------------------------------------- CC


def correlation_matrix(emb: torch.Tensor, gamma: float = 0.4, order: int = 2) -> torch.Tensor:
    """(N, ...) -> (N, N): Gaussian-RBF kernel exp(-gamma ||x_i - x_j||^2) of L2-normalised rows, by its Taylor
    series to ``order``: exp(-2 gamma) * sum_{p=0..order} (2 gamma)^p / p! * (x_i . x_j)^p (exact as order grows)."""
    x = unit_rows(emb.reshape(emb.shape[0], -1))
    sim = x @ x.T
    out = torch.ones_like(sim)
    for p in range(1, order + 1):
        out = out + (2.0 * gamma) ** p / math.factorial(p) * sim.pow(p)
    return math.exp(-2.0 * gamma) * out


@LOSSES.register("cc")
def cc(student_emb: torch.Tensor, teacher_emb: torch.Tensor, gamma: float = 0.4, order: int = 2) -> torch.Tensor:
    """Correlation congruence: mean over N x N entries of (C_s - C_t)^2, C a Taylor-expanded RBF kernel matrix (Peng et al. 2019).

    The paper's 1/n^2 ||psi(F_t) - psi(F_s)||^2 on L2-normalised embeddings; gamma = 0.4 and order 2 as
    torchdistill's CCKD config. The embedding widths may differ (only N x N matrices are compared).
    """
    min_dims("cc", "student_emb", student_emb, 2, "(N, ...) embeddings")
    min_dims("cc", "teacher_emb", teacher_emb, 2, "(N, ...) embeddings")
    same_batch("cc", "student_emb", student_emb, "teacher_emb", teacher_emb)
    positive("cc", "gamma", gamma)
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise UserInputError(f"cc: order must be an integer >= 1 (terms of the Taylor series), got {order!r}")
    return (correlation_matrix(student_emb, gamma, order) - correlation_matrix(teacher_emb, gamma, order)).pow(2).mean()


# ---------------------------------------------------------------- ICKD


def inter_channel_correlation(feat: torch.Tensor) -> torch.Tensor:
    """(N, C, *positions) -> (N, C, C): per-sample F F^T, each row L2-normalised (a zero row stays 0)."""
    f = _flat(feat)
    return unit_rows(f @ f.transpose(1, 2))


def ickd(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """ICKD: sum of (G_s - G_t)^2 over C x C entries and the batch, divided by N*C; G row-normalised F F^T (Liu et al. 2021)."""
    s, t = same_channel_maps("ickd", student_feat, teacher_feat, "the C x C matrices need equal counts (the registered "
                             "'ickd' loss embeds the student's channels)")
    n, c = s.shape[0], s.shape[1]
    return (inter_channel_correlation(s) - inter_channel_correlation(t)).pow(2).sum() / (n * c)


@LOSSES.register("ickd")
class ICKD(_Adapted):
    """ICKD: inter-channel correlation matching through a trainable 1x1 conv + BN embedding of the student's map."""

    loss_name = "ickd"

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        if len(student_shape) < 2 or len(teacher_shape) < 2:
            raise UserInputError(
                f"ickd: needs feature maps (C, L) or (C, H, W) per sample, got {tuple(student_shape)} and {tuple(teacher_shape)}"
            )
        # The official code always embeds (Conv 1x1 without bias + BatchNorm), even at equal widths.
        super().__init__(student_shape, teacher_shape, build_adapter("ickd", student_shape, teacher_shape))

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        s, t = self._prepare(student_feat, teacher_feat)
        return ickd(s, t)


# ---------------------------------------------------------------- FSP


def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(N, C1, *pos), (N, C2, *pos') -> (N, C1, C2): mean over positions of first_i * second_j (pooled to a common size)."""
    a, b = match_positions("fsp", first, second)
    a, b = _flat(a), _flat(b)
    return a @ b.transpose(1, 2) / a.shape[2]


@LOSSES.register("fsp")
def fsp(student_feat: Maps, teacher_feat: Maps) -> torch.Tensor:
    """FSP: sum over consecutive tap pairs of the MSE between the student's and teacher's FSP (Gram) matrices (Yim et al. 2017).

    ``student_feat`` / ``teacher_feat`` are lists of >= 2 maps of one network (taps in order); pair k compares
    G(map_k, map_k+1), a C_k x C_k+1 matrix, so the student's and the teacher's channel counts must agree
    tap by tap. Reduction as RepDistiller: mean over batch and matrix entries, summed over pairs (weights 1).
    """
    s, t = _paired("fsp", student_feat, teacher_feat)
    total = s[0].new_zeros(())
    for k in range(len(s) - 1):
        gs, gt = fsp_matrix(s[k], s[k + 1]), fsp_matrix(t[k], t[k + 1])
        if gs.shape != gt.shape:
            raise UserInputError(
                f"fsp: taps {k} and {k + 1} give a student FSP matrix of shape {tuple(gs.shape[1:])} (channels of "
                f"student_feat[{k}], student_feat[{k + 1}]) but a teacher one of {tuple(gt.shape[1:])}; "
                "FSP needs equal channel counts at each tap"
            )
        total = total + (gs - gt).pow(2).mean()
    return total


# ---------------------------------------------------------------- KD-SVD


class _ThinSVD(torch.autograd.Function):
    """(…, m, n) -> singular values (…, k) and right singular vectors (…, n, k), k = min(m, n), with the official
    KD-SVD code's gradient: the entries of 1/(s_j^2 - s_i^2) and 1/s that are not finite (repeated or zero singular
    values, common in ReLU maps with dead channels) are 0. Torch's own SVD backward returns NaN there, which stopped
    a run at its first step (BasicMotions, benchmarks/matched_channels.py). Townsend's thin-SVD adjoint, no U term."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        ctx.save_for_backward(u, s, vh)
        ctx.wide = x.shape[-2] < x.shape[-1]
        return s, vh.mT

    @staticmethod
    def backward(ctx: Any, gs: Optional[torch.Tensor], gv: Optional[torch.Tensor]) -> torch.Tensor:
        u, s, vh = ctx.saved_tensors
        v = vh.mT
        gs = torch.zeros_like(s) if gs is None else gs
        gv = torch.zeros_like(v) if gv is None else gv
        s2 = s * s
        f = 1.0 / (s2[..., None, :] - s2[..., :, None])  # f[i, j] = 1 / (s_j^2 - s_i^2); inf on the diagonal
        f = torch.where(torch.isfinite(f), f, torch.zeros_like(f))
        vgv = v.mT @ gv
        grad = u @ (torch.diag_embed(gs) + s[..., :, None] * (f * (vgv - vgv.mT))) @ vh
        if ctx.wide:  # V is n x k with k < n: the part of gV outside V's span, U S^-1 gV^T (I - V V^T)
            inv = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
            grad = grad + (u * inv[..., None, :]) @ (gv.mT - (gv.mT @ v) @ vh)
        return grad


def _right_singular(feat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, *pos) -> V (N, C, k), the top-k right singular vectors of the (P, C) matrix of each sample, and
    the k singular values L2-normalised over k (N, k)."""
    x = _flat(feat).transpose(1, 2)  # (N, P, C): positions are observations, channels are variables
    sv, v_all = _ThinSVD.apply(x)
    v = v_all[:, :, :k]
    # OUR choice: a singular vector's sign is arbitrary (LAPACK's), and the RBF relations between taps depend on
    # it; fixing it (largest-magnitude entry positive) makes the loss the same in every library.
    big = v.abs().argmax(dim=1, keepdim=True)
    v = v * torch.where(v.gather(1, big) < 0, -1.0, 1.0).to(v.dtype)
    return v, F.normalize(sv[:, :k], dim=1)


def _align(v_s: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """For each teacher vector, the student vector (of the k+3 kept) with the largest |cosine|, sign-flipped to agree."""
    cos = v_s.transpose(1, 2) @ v_t  # (N, k_s, k_t)
    pick = cos.abs().argmax(dim=1, keepdim=True)  # (N, 1, k_t)
    mask = torch.zeros_like(cos).scatter(1, pick, torch.sign(cos.gather(1, pick)))
    return v_s @ mask  # (N, C, k_t)


@LOSSES.register("kdsvd")
def kdsvd(student_feat: Maps, teacher_feat: Maps, k: int = 1) -> torch.Tensor:
    """KD-SVD: match RBF relations between consecutive taps' top singular vectors (Lee, Kim & Song, ECCV 2018).

    Per tap: SVD of each sample's (positions x channels) matrix; the teacher keeps k right singular vectors,
    the student k + 3, aligned to the teacher's by |cosine| with signs fixed; both scaled by the teacher's
    normalised singular values. Per consecutive pair: R = exp(-(v_a - v_b)^2 / 8) over every channel pair
    and vector; loss = sum over pairs of sum((R_s - R_t)^2) / N (as the official TF code and mdistiller;
    K = 1 there). Channel counts must agree tap by tap; lengths / spatial sizes may differ.
    """
    s, t = _paired("kdsvd", student_feat, teacher_feat)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserInputError(f"kdsvd: k must be an integer >= 1 (singular vectors kept), got {k!r}")
    prev: tuple[torch.Tensor, torch.Tensor] | None = None
    total = s[0].new_zeros(())
    for i, (fs, ft) in enumerate(zip(s, t)):
        if fs.shape[1] != ft.shape[1]:
            raise UserInputError(
                f"kdsvd: student_feat[{i}] has {fs.shape[1]} channels but teacher_feat[{i}] has {ft.shape[1]}; "
                "the singular vectors are aligned channel by channel, so the counts must match"
            )
        rank = min(ft.shape[1], _flat(ft).shape[2], _flat(fs).shape[2])
        if rank < k:
            raise UserInputError(f"kdsvd: k = {k} but tap {i} has rank at most {rank} (min of channels, positions)")
        v_t, sv_t = _right_singular(ft, k)
        v_s, _ = _right_singular(fs, min(k + 3, rank))
        v_s = _align(v_s, v_t) * sv_t[:, None, :]
        v_t = v_t * sv_t[:, None, :]
        if prev is not None:
            r_s = torch.exp(-(v_s[:, :, None, :] - prev[0][:, None, :, :]).pow(2) / 8.0)
            r_t = torch.exp(-(v_t[:, :, None, :] - prev[1][:, None, :, :]).pow(2) / 8.0)
            total = total + (r_s - r_t).pow(2).sum() / fs.shape[0]
        prev = (v_s, v_t)
    return total
