"""Feature-map losses: FitNet hints, attention transfer (AT), similarity preserving (SP), channel-Gram matching.

They read intermediate maps ``(N, C, L)`` or ``(N, C, H, W)`` (``fitnet`` and ``sp`` also take ``(N, D)``).
Where a loss compares positions and the two maps' temporal/spatial sizes differ, the larger map is
adaptive-average-pooled to the smaller size (size by size), so no learned resampling is involved.
AT and SP never compare channels, so the student's and the teacher's channel counts may differ; FitNet
and Gram compare channels and reach the teacher's count through a learned 1x1 adapter (the registered
``FitNet``/``Gram`` modules). The teacher side is not detached: in the offline method it carries no
gradient anyway, and mutual-learning regimes may want it to.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import min_dims, positive, same_batch, same_shape
from edgedistill.registry import LOSSES

_POOL: dict[int, Callable[..., torch.Tensor]] = {
    1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d,
}
_MAP = "a feature map (N, C, L) or (N, C, H, W)"


def match_positions(
    loss: str, student_feat: torch.Tensor, teacher_feat: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool whichever map is larger to the smaller temporal/spatial size (per dimension)."""
    s_size, t_size = tuple(student_feat.shape[2:]), tuple(teacher_feat.shape[2:])
    if len(s_size) != len(t_size):
        raise UserInputError(
            f"{loss}: student_feat has shape {tuple(student_feat.shape)} but teacher_feat has shape "
            f"{tuple(teacher_feat.shape)}; both must have the same number of temporal/spatial dimensions"
        )
    if s_size == t_size:
        return student_feat, teacher_feat
    if len(s_size) not in _POOL:
        raise UserInputError(
            f"{loss}: can only pool 1-3 temporal/spatial dimensions to a common size, got {s_size} and {t_size}"
        )
    size = tuple(min(a, b) for a, b in zip(s_size, t_size))
    pool = _POOL[len(size)]
    s = student_feat if s_size == size else pool(student_feat, size)
    t = teacher_feat if t_size == size else pool(teacher_feat, size)
    return s, t


def same_channel_maps(loss: str, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                      why: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two feature maps of one batch with equal channel counts, pooled to common positions (``match_positions``):
    the check every channel-by-channel loss starts with. ``why`` ends the channel-count error (what to do instead)."""
    min_dims(loss, "student_feat", student_feat, 3, _MAP)
    min_dims(loss, "teacher_feat", teacher_feat, 3, _MAP)
    same_batch(loss, "student_feat", student_feat, "teacher_feat", teacher_feat)
    if student_feat.shape[1] != teacher_feat.shape[1]:
        raise UserInputError(f"{loss}: student_feat has {student_feat.shape[1]} channels but teacher_feat has "
                             f"{teacher_feat.shape[1]}; {why}")
    return match_positions(loss, student_feat, teacher_feat)


# ---------------------------------------------------------------- FitNet


def fitnet(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """FitNet hint loss: mean squared error over every element of two same-shape feature maps."""
    same_shape("fitnet", "student_feat", student_feat, "teacher_feat", teacher_feat)
    return F.mse_loss(student_feat, teacher_feat)


def build_adapter(loss: str, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """Student-to-teacher channel adapter from per-sample shapes: Linear for (D,), 1x1 Conv1d + BN for (C, L),
    1x1 Conv2d + BN for (C, H, W). No bias on the convolutions: the BatchNorm's shift replaces it."""
    if len(student_shape) != len(teacher_shape) or not 1 <= len(student_shape) <= 3:
        raise UserInputError(
            f"{loss}: cannot adapt a student feature of per-sample shape {tuple(student_shape)} to a teacher feature of "
            f"shape {tuple(teacher_shape)}; both must be (D,), (C, L) or (C, H, W)"
        )
    cs, ct = int(student_shape[0]), int(teacher_shape[0])
    if len(student_shape) == 1:
        return nn.Linear(cs, ct)
    if len(student_shape) == 2:
        return nn.Sequential(nn.Conv1d(cs, ct, 1, bias=False), nn.BatchNorm1d(ct))
    return nn.Sequential(nn.Conv2d(cs, ct, 1, bias=False), nn.BatchNorm2d(ct))


class _Adapted(nn.Module):
    """Shared plumbing: check the shapes the module was built for, match positions, adapt the student."""

    loss_name = ""

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], adapter: nn.Module) -> None:
        super().__init__()
        self.student_shape = tuple(int(d) for d in student_shape)
        self.teacher_shape = tuple(int(d) for d in teacher_shape)
        self.adapter = adapter

    def _prepare(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = (("student_feat", student_feat, self.student_shape), ("teacher_feat", teacher_feat, self.teacher_shape))
        for name, t, want in pairs:
            if tuple(t.shape[1:]) != want:
                raise UserInputError(
                    f"{self.loss_name}: {name} has per-sample shape {tuple(t.shape[1:])} but this loss was built for {want}"
                )
        same_batch(self.loss_name, "student_feat", student_feat, "teacher_feat", teacher_feat)
        if student_feat.dim() > 2:  # pool first: a 1x1 adapter commutes with it and runs on fewer positions
            student_feat, teacher_feat = match_positions(self.loss_name, student_feat, teacher_feat)
        return self.adapter(student_feat), teacher_feat


@LOSSES.register("fitnet")
class FitNet(_Adapted):
    """FitNet hints: MSE between a learned 1x1 adapter of the student's feature map and the teacher's (Romero et al. 2015)."""

    loss_name = "fitnet"

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        super().__init__(student_shape, teacher_shape, build_adapter("fitnet", student_shape, teacher_shape))

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        s, t = self._prepare(student_feat, teacher_feat)
        return fitnet(s, t)


# ---------------------------------------------------------------- attention transfer


def attention_map(feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(N, C, *positions) -> (N, P): mean over channels of |f|^p, flattened, L2-normalised per sample."""
    a = feat.abs().pow(p).mean(dim=1).reshape(feat.shape[0], -1)
    return F.normalize(a, p=2, dim=1)  # norm clamped at 1e-12, as RepDistiller and the reference


@LOSSES.register("at")
def attention_transfer(student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention transfer: mean over batch and positions of (a_s - a_t)^2, a = normalised mean_c |f|^p (Zagoruyko & Komodakis 2017)."""
    min_dims("at", "student_feat", student_feat, 3, _MAP)
    min_dims("at", "teacher_feat", teacher_feat, 3, _MAP)
    positive("at", "p", p)
    same_batch("at", "student_feat", student_feat, "teacher_feat", teacher_feat)
    s, t = match_positions("at", student_feat, teacher_feat)
    # RepDistiller's reduction: mean over all N x P entries, i.e. (1/N) sum_i ||a_s,i - a_t,i||^2 / P.
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()


# ---------------------------------------------------------------- similarity preserving


def unit_rows(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise along ``dim`` like F.normalize, except that a (near-)zero vector stays 0 with a zero gradient.

    F.normalize divides a zero vector by eps, so its gradient is 1/eps = 1e12 (1e23 after two normalisations):
    one dead, all-zero sample in a batch would wreck a step. Values differ from F.normalize only there.
    """
    norm = x.norm(dim=dim, keepdim=True)
    return torch.where(norm > eps, x / norm.clamp_min(eps), torch.zeros_like(x))


def batch_gram(feat: torch.Tensor) -> torch.Tensor:
    """B x B inter-sample Gram matrix F F^T of features flattened per sample."""
    flat = feat.flatten(1)
    return flat @ flat.T


def batch_similarity(feat: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, N): Gram matrix of the flattened samples, each row L2-normalised (a zero row stays 0)."""
    return unit_rows(batch_gram(feat))


@LOSSES.register("sp")
def similarity_preserving(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Similarity preserving: ||G_s - G_t||_F^2 / N^2 of row-normalised N x N batch Gram matrices (Tung & Mori 2019)."""
    min_dims("sp", "student_feat", student_feat, 2, "(N, ...) features")
    min_dims("sp", "teacher_feat", teacher_feat, 2, "(N, ...) features")
    same_batch("sp", "student_feat", student_feat, "teacher_feat", teacher_feat)
    n = student_feat.shape[0]
    return (batch_similarity(student_feat) - batch_similarity(teacher_feat)).pow(2).sum() / (n * n)


# ---------------------------------------------------------------- channel Gram


def channel_gram(feat: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """(N, C, *positions) -> (N, C, C): per-sample F F^T over the flattened positions (divided by their count if normalize)."""
    f = feat.reshape(feat.shape[0], feat.shape[1], -1)
    g = f @ f.transpose(1, 2)
    return g / f.shape[2] if normalize else g


def gram(student_feat: torch.Tensor, teacher_feat: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Channel-Gram matching: mean over batch and C x C entries of (G_s - G_t)^2, G = F F^T per sample."""
    s, t = same_channel_maps("gram", student_feat, teacher_feat, "the C x C Gram matrices need equal counts (the "
                             "registered 'gram' loss adapts the student's channels)")
    return (channel_gram(s, normalize) - channel_gram(t, normalize)).pow(2).mean()


@LOSSES.register("gram")
class Gram(_Adapted):
    """Channel-Gram matching: MSE of per-sample C x C Gram matrices (a 1x1 adapter if the channel counts differ)."""

    loss_name = "gram"

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], normalize: bool = False) -> None:
        if len(student_shape) < 2 or len(teacher_shape) < 2:
            raise UserInputError(
                f"gram: needs feature maps (C, L) or (C, H, W) per sample, got {tuple(student_shape)} and {tuple(teacher_shape)}"
            )
        # Equal channel counts need no projection: then this is the spec's parameter-free form.
        same = int(student_shape[0]) == int(teacher_shape[0])
        adapter = nn.Identity() if same else build_adapter("gram", student_shape, teacher_shape)
        if not isinstance(normalize, bool):
            raise UserInputError(f"gram: normalize must be true or false, got {normalize!r}")
        super().__init__(student_shape, teacher_shape, adapter)
        self.normalize = normalize

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        s, t = self._prepare(student_feat, teacher_feat)
        return gram(s, t, self.normalize)
