"""Logit-based baselines: MLKD (multi-level logit distillation), LogitStd (logit standardisation) and DIST+.

Same conventions as ``response_extra.py``: logits are (N, C) or (N, C, *positions) with classes on dim 1 and
every position becomes a row. DIST+ also reads a feature map per network (its feature-level term) and, like
FitNet, reaches the teacher's channel count through a trainable 1x1 adapter (the registered ``DistPlus``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import classes_last, positive
from edgedistill.losses.feature import _Adapted, build_adapter, same_channel_maps
from edgedistill.losses.response import kl_rows
from edgedistill.losses.response_extra import _logit_rows, _non_negative, _pearson_distance, dist, standardize_logits
from edgedistill.registry import LOSSES

# ---------------------------------------------------------------------------------------------------- MLKD


def _temperatures(loss: str, temperatures: Sequence[float]) -> tuple[float, ...]:
    temps = tuple(temperatures) if isinstance(temperatures, (list, tuple)) else ()
    if not temps:
        raise UserInputError(f"{loss}: temperatures must be a non-empty list of numbers > 0, got {temperatures!r}")
    for t in temps:
        positive(loss, "temperatures", t)
    return temps


def mlkd_levels(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
    """(instance, batch, class) alignment at one temperature for (rows, C) logits, as the official MLKD code:
    instance = T^2 * mean_i KL(p_t,i || p_s,i); batch = sum (P_t P_t^T - P_s P_s^T)^2 / rows;
    class = sum (P_t^T P_t - P_s^T P_s)^2 / C, with P the (rows, C) matrix of softmax(z / T)."""
    ps, pt = F.softmax(student_logits / temperature, dim=1), F.softmax(teacher_logits / temperature, dim=1)
    instance = temperature**2 * kl_rows(teacher_logits, student_logits, temperature).mean()
    batch = (pt @ pt.T - ps @ ps.T).pow(2).sum() / ps.shape[0]
    klass = (pt.T @ pt - ps.T @ ps).pow(2).sum() / ps.shape[1]
    return instance, batch, klass


@LOSSES.register("mlkd", task="classification")
def mlkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperatures: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.0),
    instance_weight: float = 1.0,
    batch_weight: float = 1.0,
    class_weight: float = 1.0,
) -> torch.Tensor:
    """MLKD: sum over temperatures of instance (KD), batch (B x B) and class (C x C) alignment of softmaxes (Jin et al. 2023).

    One view only: the official code adds the same terms on a strongly augmented copy of the batch and
    scales its weak-view terms by the fraction of low-confidence samples / classes; see docs/losses/mlkd.md.
    """
    s, t = _logit_rows("mlkd", student_logits, teacher_logits)
    temps = _temperatures("mlkd", temperatures)
    for name, w in (("instance_weight", instance_weight), ("batch_weight", batch_weight), ("class_weight", class_weight)):
        _non_negative("mlkd", name, w)
    total = s.new_zeros(())
    for temperature in temps:
        instance, batch, klass = mlkd_levels(s, t, float(temperature))
        total = total + instance_weight * instance + batch_weight * batch + class_weight * klass
    return total


# ---------------------------------------------------------------------------------------------- LogitStd


@LOSSES.register("logit_std", task="classification")
def logit_std(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Logit standardisation KD: T^2 * mean_i KL(softmax(Z(z_t)/T) || softmax(Z(z_s)/T)), Z a per-sample z-score (Sun et al. 2024).

    The same function as ``std_normalized_kd`` (MIX-KD) with the LogitStd defaults: base temperature 2 (the
    official CIFAR runs use 2, some 3, with KD weight 9 and CE weight 0.1). See docs/losses/logit_std.md.
    """
    s, t = _logit_rows("logit_std", student_logits, teacher_logits)
    positive("logit_std", "temperature", temperature)
    return temperature**2 * kl_rows(standardize_logits(t), standardize_logits(s), temperature).mean()


# ------------------------------------------------------------------------------------------------- DIST+


def dist_features(student_feat: torch.Tensor, teacher_feat: torch.Tensor, beta: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """Feature-level DIST (OUR form): beta * inter + gamma * intra, 1 - Pearson correlation of the raw maps.

    Rows are (sample, position) pairs of (N, C, *positions) maps pooled to a common size: inter = mean over
    rows of the distance across channels, intra = mean over channels of the distance across rows. No softmax
    (a correlation is already invariant to scale and shift). Equal channel counts.
    """
    s, t = same_channel_maps("dist_plus", student_feat, teacher_feat, "they must match (the registered 'dist_plus' "
                             "loss adapts the student's channels)")
    s, t = classes_last(s), classes_last(t)
    return beta * _pearson_distance(s, t).mean() + gamma * _pearson_distance(s.T, t.T).mean()


def dist_plus(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    student_feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    feat_weight: float = 1.0,
) -> torch.Tensor:
    """DIST+ as we build it: ``dist`` on the logits + feat_weight * ``dist_features`` on one tapped map per network.

    DIST+ (Huang et al., TPAMI 2025) adds a teacher-acclimation strategy and a feature-level DIST loss; its
    exact feature form is not public in a source we could read, so the feature term is OUR choice, and the
    teacher acclimation (a change to the teacher's training) is not a loss and not built. docs/losses/dist_plus.md.
    """
    _non_negative("dist_plus", "feat_weight", feat_weight)
    _non_negative("dist_plus", "beta", beta)
    _non_negative("dist_plus", "gamma", gamma)
    logit_part = dist(student_logits, teacher_logits, beta, gamma, temperature)
    return logit_part + feat_weight * dist_features(student_feat, teacher_feat, beta, gamma)


@LOSSES.register("dist_plus", task="classification")
class DistPlus(_Adapted):
    """DIST+ (our build): DIST on logits + DIST on a feature map, the student's map through a 1x1 adapter when widths differ."""

    loss_name = "dist_plus"

    def __init__(
        self,
        student_shape: tuple[int, ...],
        teacher_shape: tuple[int, ...],
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
        feat_weight: float = 1.0,
    ) -> None:
        if len(student_shape) < 2 or len(teacher_shape) < 2:
            raise UserInputError(
                f"dist_plus: needs feature maps (C, L) or (C, H, W) per sample, got {tuple(student_shape)} and "
                f"{tuple(teacher_shape)}"
            )
        positive("dist_plus", "temperature", temperature)
        for name, value in (("beta", beta), ("gamma", gamma), ("feat_weight", feat_weight)):
            _non_negative("dist_plus", name, value)
        same = int(student_shape[0]) == int(teacher_shape[0])
        adapter = torch.nn.Identity() if same else build_adapter("dist_plus", student_shape, teacher_shape)
        super().__init__(student_shape, teacher_shape, adapter)
        self.beta, self.gamma, self.temperature, self.feat_weight = beta, gamma, temperature, feat_weight

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        student_feat: torch.Tensor,
        teacher_feat: torch.Tensor,
    ) -> torch.Tensor:
        s, t = self._prepare(student_feat, teacher_feat)
        return dist_plus(student_logits, teacher_logits, s, t, self.beta, self.gamma, self.temperature, self.feat_weight)
