"""Feature losses with trainable parts from the classic benchmarks: VID (a Gaussian predictive model of the teacher's
features) and OFD (a student connector and a margin ReLU on the teacher's features).

Both read feature maps ``(N, C, L)`` or ``(N, C, H, W)`` (and pooled ``(N, D)`` embeddings). Where the two maps'
temporal/spatial sizes differ, the larger is adaptive-average-pooled to the smaller size (``match_positions``), as
for FitNet; the official codes need equal sizes (OFD) or pool square maps the same way (VID, RepDistiller).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import positive, same_batch, same_shape
from edgedistill.losses.feature import match_positions
from edgedistill.registry import LOSSES

_CONV = {2: nn.Conv1d, 3: nn.Conv2d}
_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm2d}


def _check_shapes(loss: str, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(per-sample dims, C_s, C_t) for per-sample shapes (D,), (C, L) or (C, H, W) of the same kind."""
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) != len(t) or not 1 <= len(s) <= 3:
        raise UserInputError(f"{loss}: cannot match a student feature of per-sample shape {s} to a teacher feature of "
                             f"shape {t}; both must be (D,), (C, L) or (C, H, W)")
    return len(s), int(s[0]), int(t[0])


def _pointwise(dims: int, cin: int, cout: int, bias: bool = False) -> nn.Module:
    """A 1x1 convolution for maps, a Linear layer for (D,) embeddings (the same map applied at every position)."""
    return nn.Linear(cin, cout, bias=bias) if dims == 1 else _CONV[dims](cin, cout, 1, bias=bias)


class _Paired(nn.Module):
    """Check the per-sample shapes the module was built for, then pool the larger map to the smaller size."""

    loss_name = ""

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.dims, self.c_s, self.c_t = _check_shapes(self.loss_name, student_shape, teacher_shape)
        self.student_shape = tuple(int(d) for d in student_shape)
        self.teacher_shape = tuple(int(d) for d in teacher_shape)

    def _pair(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for name, t, want in (("student_feat", student_feat, self.student_shape),
                              ("teacher_feat", teacher_feat, self.teacher_shape)):
            if tuple(t.shape[1:]) != want:
                raise UserInputError(f"{self.loss_name}: {name} has per-sample shape {tuple(t.shape[1:])} but this loss "
                                     f"was built for {want}")
        same_batch(self.loss_name, "student_feat", student_feat, "teacher_feat", teacher_feat)
        if student_feat.dim() > 2:
            return match_positions(self.loss_name, student_feat, teacher_feat)
        return student_feat, teacher_feat


# ---------------------------------------------------------------- VID


def vid_nll(pred_mean: torch.Tensor, teacher_feat: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """VID's loss: mean over every element of the Gaussian negative log-likelihood of the teacher's features,
    0.5 * ((t - mu)^2 / var + log var), without the constant 0.5 log 2 pi. ``variance`` holds one value per channel
    (dim 1 of the maps), broadcast over batch and positions."""
    same_shape("vid", "pred_mean", pred_mean, "teacher_feat", teacher_feat)
    if variance.dim() != 1 or variance.shape[0] != teacher_feat.shape[1]:
        raise UserInputError(f"vid: variance must hold one value per teacher channel ({teacher_feat.shape[1]}), got "
                             f"shape {tuple(variance.shape)}")
    var = variance.reshape(1, -1, *([1] * (teacher_feat.dim() - 2)))
    return (0.5 * ((teacher_feat - pred_mean).pow(2) / var + var.log())).mean()


@LOSSES.register("vid")
class VID(_Paired):
    """Variational information distillation: Gaussian NLL of the teacher's map under a mean regressed from the
    student's (three 1x1 convs) and a learned per-channel variance softplus(alpha) + eps (Ahn et al. 2019)."""

    loss_name = "vid"

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], mid_channels: int = 0,
                 init_variance: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__(student_shape, teacher_shape)
        positive("vid", "init_variance", init_variance)
        positive("vid", "eps", eps)
        if isinstance(mid_channels, bool) or not isinstance(mid_channels, int) or mid_channels < 0:
            raise UserInputError(f"vid: mid_channels must be an integer >= 0 (0: the teacher's channel count), got "
                                 f"{mid_channels!r}")
        if init_variance <= eps:
            raise UserInputError(f"vid: init_variance ({init_variance:g}) must be larger than eps ({eps:g})")
        mid = mid_channels or self.c_t  # RepDistiller builds VIDLoss(C_s, C_t, C_t)
        self.regressor = nn.Sequential(
            _pointwise(self.dims, self.c_s, mid), nn.ReLU(),
            _pointwise(self.dims, mid, mid), nn.ReLU(),
            _pointwise(self.dims, mid, self.c_t),
        )
        self.eps = float(eps)
        # softplus(alpha) + eps starts at init_variance: alpha = log(exp(init_variance - eps) - 1), kept finite
        # for large values (softplus^-1(v) -> v).
        v = init_variance - eps
        start = v + math.log(-math.expm1(-v))
        self.alpha = nn.Parameter(torch.full((self.c_t,), start))

    def variance(self) -> torch.Tensor:
        return F.softplus(self.alpha) + self.eps

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        s, t = self._pair(student_feat, teacher_feat)
        return vid_nll(self.regressor(s), t, self.variance())


# ---------------------------------------------------------------- OFD


def margin_from_bn(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """OFD's margin from the BatchNorm right before a ReLU: E[x | x < 0] per channel for x ~ N(beta, gamma^2), the
    BN's output distribution (its shift and scale); -3|gamma| where P(x < 0) <= 0.001 (the official code's rule)."""
    if bn.weight is None or bn.bias is None:
        raise UserInputError("ofd: margin_from_bn needs a BatchNorm with affine parameters (affine=True)")
    return gaussian_margin(bn.bias.detach().double(), bn.weight.detach().double().abs()).to(bn.weight.dtype)


def gaussian_margin(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """E[x | x < 0] for x ~ N(mean, std^2), per entry: mean - std * pdf(a) / cdf(a), a = -mean / std; -3 std where
    cdf(a) <= 0.001 (the official code's cut-off, which avoids dividing by a vanishing probability)."""
    std = std.clamp_min(1e-12)
    a = -mean / std
    cdf = 0.5 * torch.erfc(-a / math.sqrt(2.0))
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    return torch.where(cdf > 1e-3, mean - std * pdf / cdf.clamp_min(1e-3), -3.0 * std)


def ofd(student_feat: torch.Tensor, teacher_feat: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """OFD's partial L2: target = max(teacher, margin) per channel; (s - target)^2 where s > target or target > 0,
    summed over channels and positions, averaged over the batch."""
    same_shape("ofd", "student_feat", student_feat, "teacher_feat", teacher_feat)
    if margin.dim() != 1 or margin.shape[0] != teacher_feat.shape[1]:
        raise UserInputError(f"ofd: margin must hold one value per teacher channel ({teacher_feat.shape[1]}), got "
                             f"shape {tuple(margin.shape)}")
    m = margin.to(teacher_feat.dtype).reshape(1, -1, *([1] * (teacher_feat.dim() - 2)))
    target = torch.maximum(teacher_feat, m)
    keep = (student_feat > target) | (target > 0)
    return ((student_feat - target).pow(2) * keep).sum() / student_feat.shape[0]


@LOSSES.register("ofd")
class OFD(_Paired):
    """Overhaul of feature distillation: a 1x1 conv + BN connector of the student's map, the teacher's map through a
    per-channel margin ReLU, partial L2 (Heo et al. 2019). The margin is estimated from the teacher's responses seen
    in training (E[t | t < 0] per channel; 0 while none was negative), unless fixed with ``fix_margin``."""

    loss_name = "ofd"

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        super().__init__(student_shape, teacher_shape)
        layer = _pointwise(self.dims, self.c_s, self.c_t)
        # The official connector's initialisation: He normal with fan-out, BN weight 1 and shift 0.
        nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        self.connector = nn.Sequential(layer, (nn.BatchNorm1d if self.dims < 3 else nn.BatchNorm2d)(self.c_t))
        # Running sums of the negative teacher responses per channel, in float64 (a sum over an epoch of maps).
        self.register_buffer("neg_sum", torch.zeros(self.c_t, dtype=torch.float64))
        self.register_buffer("neg_count", torch.zeros(self.c_t, dtype=torch.float64))
        self.register_buffer("fixed", torch.zeros((), dtype=torch.bool))
        self.register_buffer("fixed_margin", torch.zeros(self.c_t, dtype=torch.float64))

    def fix_margin(self, margin: torch.Tensor) -> None:
        """Use this margin from now on (e.g. ``margin_from_bn(teacher.bn)``, the official choice) instead of the
        estimate from the teacher's responses."""
        margin = torch.as_tensor(margin, dtype=torch.float64).detach().reshape(-1)
        if margin.shape[0] != self.c_t or not torch.isfinite(margin).all() or (margin > 0).any():
            raise UserInputError(f"ofd: a margin must be {self.c_t} finite values <= 0 (one per teacher channel), got "
                                 f"shape {tuple(margin.shape)}")
        self.fixed_margin.copy_(margin.to(self.fixed_margin.device))
        self.fixed.fill_(True)

    def margin(self) -> torch.Tensor:
        if bool(self.fixed):
            return self.fixed_margin
        return torch.where(self.neg_count > 0, self.neg_sum / self.neg_count.clamp_min(1.0), torch.zeros_like(self.neg_sum))

    @torch.no_grad()
    def _observe(self, teacher_feat: torch.Tensor) -> None:
        t = teacher_feat.detach().double().transpose(0, 1).reshape(self.c_t, -1)
        neg = t.clamp_max(0.0)
        self.neg_sum += neg.sum(1)
        self.neg_count += (t < 0).sum(1).double()

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        s, t = self._pair(student_feat, teacher_feat)
        if self.training and not bool(self.fixed):
            self._observe(t)
        return ofd(self.connector(s), t, self.margin())
