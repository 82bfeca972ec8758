"""Feature losses trained in stages (methods/stages.py): factor transfer (FT) and activation boundaries (AB).

Both read feature maps ``(N, C, L)`` or ``(N, C, H, W)`` and have trainable parts, so they are modules:

* ``ft`` (Kim, Park & Kwak, NeurIPS 2018): a paraphraser, an auto-encoder on the teacher's map, is trained first on
  the reconstruction loss (``objective: reconstruction``); then, frozen, its encoder gives the teacher's factor,
  a translator on the student's map gives the student's, and the loss is the mean absolute difference of the
  L2-normalised flattened factors (``objective: factor``, the paper's p = 1).
* ``ab`` (Heo, Lee, Yun & Choi, AAAI 2019): a 1x1 connector maps the student's map to the teacher's channels,
  and a squared hinge with a margin pushes each connector output to the side of zero the teacher's neuron is on
  (its activation boundary), in an initialisation stage before the classification stage.

docs/losses/ft.md and docs/losses/ab.md give the formulas, the official code's choices and where we differ.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import min_dims, positive, same_batch, same_shape
from edgedistill.losses.feature import _Adapted, build_adapter, match_positions
from edgedistill.registry import LOSSES

_MAP = "a feature map (N, C, L) or (N, C, H, W)"
_OBJECTIVES = ("factor", "reconstruction")


# ---------------------------------------------------------------- FT


def ft_factor_loss(student_factor: torch.Tensor, teacher_factor: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Factor transfer: mean over batch and entries of |u_s - u_t|^p, u = the flattened factor divided by its L2 norm."""
    same_shape("ft", "student factor", student_factor, "teacher factor", teacher_factor)
    if p not in (1, 2):
        raise UserInputError(f"ft: p must be 1 (the paper's L1) or 2, got {p!r}")
    s = F.normalize(student_factor.flatten(1), dim=1)  # (a zero factor stays 0: its norm is clamped at 1e-12)
    t = F.normalize(teacher_factor.flatten(1), dim=1)
    return (s - t).abs().pow(p).mean()


def _conv_block(dims: int, cin: int, cout: int, transposed: bool = False) -> list[nn.Module]:
    """kernel 3, stride 1, padding 1 (the length is kept), BatchNorm, LeakyReLU(0.1): the official blocks' form."""
    conv = {(1, False): nn.Conv1d, (2, False): nn.Conv2d, (1, True): nn.ConvTranspose1d, (2, True): nn.ConvTranspose2d}
    bn = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return [conv[(dims, transposed)](cin, cout, 3, padding=1), bn(cout), nn.LeakyReLU(0.1)]


@LOSSES.register("ft")
class FT(nn.Module):
    """Factor transfer: paraphraser (teacher auto-encoder, trained first) and translator (student), Kim et al. 2018.

    ``factor_rate`` k: the factor has round(k * C_teacher) channels (paper: 0.5). ``p``: 1 (the paper's) or 2.
    ``objective`` (per term): ``reconstruction`` trains the paraphraser (MSE between the teacher's map and its
    reconstruction; reads no student feature); ``factor`` (default) is the transfer loss, with the paraphraser run
    frozen: in eval mode and without gradient, whatever the stage trains.
    """

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], factor_rate: float = 0.5,
                 p: int = 1) -> None:
        super().__init__()
        if len(student_shape) != len(teacher_shape) or len(student_shape) not in (2, 3):
            raise UserInputError(f"ft: needs feature maps (C, L) or (C, H, W) per sample from both taps, got student "
                                 f"{tuple(student_shape)} and teacher {tuple(teacher_shape)}")
        positive("ft", "factor_rate", factor_rate)
        if p not in (1, 2) or isinstance(p, bool):
            raise UserInputError(f"ft: p must be 1 (the paper's L1) or 2, got {p!r}")
        self.student_shape, self.teacher_shape = tuple(student_shape), tuple(teacher_shape)
        dims, cs, ct = len(student_shape) - 1, int(student_shape[0]), int(teacher_shape[0])
        k = max(1, round(factor_rate * ct))
        self.p = p
        self.paraphraser = nn.ModuleDict({
            "encoder": nn.Sequential(*_conv_block(dims, ct, ct), *_conv_block(dims, ct, k), *_conv_block(dims, k, k)),
            "decoder": nn.Sequential(*_conv_block(dims, k, k, True), *_conv_block(dims, k, ct, True),
                                     *_conv_block(dims, ct, ct, True)),
        })
        self.translator = nn.Sequential(*_conv_block(dims, cs, cs), *_conv_block(dims, cs, k), *_conv_block(dims, k, k))

    @staticmethod
    def trained_parts(objective: str = "factor") -> tuple[str, ...]:
        """What a term's objective trains (a stage's default, and what it must train): methods/stages.py."""
        return ("paraphraser",) if objective == "reconstruction" else ("translator",)

    def _check(self, name: str, t: torch.Tensor, want: tuple[int, ...]) -> None:
        if tuple(t.shape[1:]) != want:
            raise UserInputError(f"ft: {name} has per-sample shape {tuple(t.shape[1:])} but this loss was built for {want}")

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                objective: Literal["factor", "reconstruction"] = "factor") -> torch.Tensor:
        if objective not in _OBJECTIVES:
            raise UserInputError(f"ft: objective must be one of {', '.join(_OBJECTIVES)}, got {objective!r}")
        self._check("teacher_feat", teacher_feat, self.teacher_shape)
        if objective == "reconstruction":
            rebuilt = self.paraphraser["decoder"](self.paraphraser["encoder"](teacher_feat))
            return F.mse_loss(rebuilt, teacher_feat)
        self._check("student_feat", student_feat, self.student_shape)
        same_batch("ft", "student_feat", student_feat, "teacher_feat", teacher_feat)
        encoder, was = self.paraphraser["encoder"], self.paraphraser["encoder"].training
        encoder.eval()  # frozen after its stage: its BatchNorm statistics stay those it was trained with
        with torch.no_grad():
            teacher_factor = encoder(teacher_feat)
        encoder.train(was)
        s, t = match_positions("ft", self.translator(student_feat), teacher_factor)
        return ft_factor_loss(s, t, self.p)


# ---------------------------------------------------------------- AB


def ab_loss(student_pre: torch.Tensor, teacher_feat: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Activation-boundary transfer: per element, (s - m)^2 where the teacher's neuron is active (t > 0) and s < m,
    (s + m)^2 where it is not and s > -m; summed over a sample's elements, averaged over the batch."""
    same_shape("ab", "student_feat", student_pre, "teacher_feat", teacher_feat)
    positive("ab", "margin", margin)
    on = teacher_feat > 0  # the sign of a pre-activation and of its ReLU agree: either may be tapped
    hinge = torch.where(on, F.relu(margin - student_pre), F.relu(margin + student_pre))
    return hinge.pow(2).sum() / student_pre.shape[0]


@LOSSES.register("ab")
class AB(_Adapted):
    """Activation boundaries (Heo et al. 2019): squared hinge of a 1x1 connector of the student's map against the
    side of zero each teacher neuron is on; ``margin`` m (default 1, torchdistill's value)."""

    loss_name = "ab"

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], margin: float = 1.0) -> None:
        positive("ab", "margin", margin)
        if len(student_shape) < 2 or len(teacher_shape) < 2:
            raise UserInputError(f"ab: needs feature maps (C, L) or (C, H, W) per sample, got student "
                                 f"{tuple(student_shape)} and teacher {tuple(teacher_shape)}")
        super().__init__(student_shape, teacher_shape, build_adapter("ab", student_shape, teacher_shape))
        self.margin = float(margin)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        min_dims("ab", "student_feat", student_feat, 3, _MAP)
        s, t = self._prepare(student_feat, teacher_feat)
        return ab_loss(s, t, self.margin)
