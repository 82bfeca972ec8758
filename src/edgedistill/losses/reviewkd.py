"""ReviewKD (Chen et al., *Distilling Knowledge via Knowledge Review*, CVPR 2021): the student's stages, deepest
first, are fused by attention-based fusion (ABF) blocks, each passing its fused map on to the next shallower stage,
and every fused output is compared with the teacher's map of the same stage by the hierarchical context loss (HCL).

The module works on lists of maps ``(N, C, L)`` or ``(N, C, H, W)``, shallow to deep, one per tapped stage; a pooled
``(N, D)`` embedding among them (the official code's last "stage") is taken as a map of size 1. A single tensor per
side is a one-stage review: one ABF without fusion, then HCL.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.losses._checks import same_batch, same_shape
from edgedistill.registry import LOSSES

Maps = Union[torch.Tensor, Sequence[torch.Tensor]]
_POOL = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d}
_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in levels):
        raise UserInputError(f"reviewkd: levels must be a list of pooled sizes >= 1, e.g. [4, 2, 1], got {levels!r}")
    return tuple(int(v) for v in levels)


def hcl_level_sizes(positions: tuple[int, ...], levels: Sequence[int]) -> list[tuple[int, ...]]:
    """The pooled sizes HCL adds for a map of temporal/spatial size ``positions``: each level l pooled to min(l, size)
    per dimension, skipped when that is the map itself (the official ``l >= h`` rule for square maps)."""
    out = []
    for level in levels:
        size = tuple(min(level, d) for d in positions)
        if size != tuple(positions):
            out.append(size)
    return out


def hcl(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
        levels: Sequence[int] = (4, 2, 1)) -> torch.Tensor:
    """Hierarchical context loss, summed over stages: per stage, (MSE + sum_k w_k MSE(pool_k(s), pool_k(t))) /
    (1 + sum_k w_k) with w_k = 1/2, 1/4, ... for the pooled levels that apply (``hcl_level_sizes``)."""
    levels = _check_levels(levels)
    if len(student_feats) != len(teacher_feats) or not len(student_feats):
        raise UserInputError(f"reviewkd: hcl needs as many student maps as teacher maps (at least one), got "
                             f"{len(student_feats)} and {len(teacher_feats)}")
    total = student_feats[0].new_zeros(())
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        same_shape("reviewkd", f"fused student map {i}", s, f"teacher map {i}", t)
        loss, weight, norm = F.mse_loss(s, t), 1.0, 1.0
        for size in hcl_level_sizes(tuple(s.shape[2:]), levels):
            pool = _POOL[len(size)]
            weight /= 2.0
            loss = loss + weight * F.mse_loss(pool(s, size), pool(t, size))
            norm += weight
        total = total + loss / norm
    return total


class ABF(nn.Module):
    """Attention-based fusion of one student stage: 1x1 conv + BN to ``mid`` channels; with ``fuse``, a per-position
    sigmoid gate pair (a 1x1 conv on both maps) mixes in the deeper stage's map, resized (nearest) to this one; the
    result, resized (nearest) to the teacher's size, goes through a 3x3 conv + BN to the teacher's channels."""

    def __init__(self, dims: int, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        conv, bn = _CONV[dims], _BN[dims]
        self.conv1 = nn.Sequential(conv(in_channels, mid_channels, 1, bias=False), bn(mid_channels))
        self.conv2 = nn.Sequential(conv(mid_channels, out_channels, 3, padding=1, bias=False), bn(out_channels))
        self.att = nn.Sequential(conv(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        for layer in (self.conv1[0], self.conv2[0]):  # the official initialisation
            nn.init.kaiming_uniform_(layer.weight, a=1)

    def forward(self, x: torch.Tensor, deeper: torch.Tensor | None, out_size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        if self.att is not None and deeper is not None:
            deeper = F.interpolate(deeper, size=tuple(x.shape[2:]), mode="nearest")
            gates = self.att(torch.cat([x, deeper], dim=1))
            x = x * gates[:, :1] + deeper * gates[:, 1:]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _shape_list(name: str, shape: object) -> list[tuple[int, ...]]:
    """One per-sample shape (a tuple of ints) or several (a list of them) -> a list of shapes."""
    if isinstance(shape, Sequence) and shape and all(isinstance(d, int) for d in shape):
        return [tuple(int(d) for d in shape)]  # type: ignore[union-attr]
    if isinstance(shape, Sequence) and shape and all(
            isinstance(s, Sequence) and s and all(isinstance(d, int) for d in s) for s in shape):
        return [tuple(int(d) for d in s) for s in shape]  # type: ignore[union-attr]
    raise UserInputError(f"reviewkd: {name} must be one per-sample shape or a list of them, got {shape!r}")


def _as_list(x: Maps) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else list(x)


@LOSSES.register("reviewkd")
class ReviewKD(nn.Module):
    """ReviewKD: attention-based fusion of the student's stages (deepest first) and the hierarchical context loss
    against the teacher's stages (Chen et al. 2021). Taps list the stages shallow to deep, as many per side."""

    loss_name = "reviewkd"

    def __init__(self, student_shape: Sequence, teacher_shape: Sequence, mid_channels: int = 0,
                 levels: tuple[int, ...] = (4, 2, 1)) -> None:
        super().__init__()
        s_shapes, t_shapes = _shape_list("student_shape", student_shape), _shape_list("teacher_shape", teacher_shape)
        if len(s_shapes) != len(t_shapes):
            raise UserInputError(f"reviewkd: {len(s_shapes)} student taps but {len(t_shapes)} teacher taps; each student "
                                 "stage is reviewed against the teacher's stage in the same place of the list")
        dims = {len(s) for s in s_shapes + t_shapes if len(s) > 1}
        if len(dims) > 1 or any(len(s) > 3 for s in s_shapes + t_shapes):
            raise UserInputError(f"reviewkd: the taps must all be (C, L) maps or all (C, H, W) maps (pooled (D,) "
                                 f"embeddings may join either), got student {s_shapes} and teacher {t_shapes}")
        self.map_dims = (dims.pop() - 1) if dims else 1
        if isinstance(mid_channels, bool) or not isinstance(mid_channels, int) or mid_channels < 0:
            raise UserInputError(f"reviewkd: mid_channels must be an integer >= 0 (0: min(512, the deepest student "
                                 f"stage's channels)), got {mid_channels!r}")
        self.levels = _check_levels(levels)
        self.student_shapes, self.teacher_shapes = s_shapes, t_shapes
        mid = mid_channels or min(512, s_shapes[-1][0])  # the official default
        last = len(s_shapes) - 1
        self.abfs = nn.ModuleList(
            ABF(self.map_dims, s[0], mid, t[0], fuse=i < last) for i, (s, t) in enumerate(zip(s_shapes, t_shapes))
        )

    def _maps(self, name: str, given: Maps, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        maps = _as_list(given)
        if len(maps) != len(shapes):
            raise UserInputError(f"reviewkd: {name} has {len(maps)} maps but this loss was built for {len(shapes)}")
        out = []
        for i, (m, want) in enumerate(zip(maps, shapes)):
            if tuple(m.shape[1:]) != want:
                raise UserInputError(f"reviewkd: {name}[{i}] has per-sample shape {tuple(m.shape[1:])} but this loss "
                                     f"was built for {want}")
            out.append(m.reshape(*m.shape, *([1] * self.map_dims)) if m.dim() == 2 else m)  # (N, D) -> size 1
        return out

    def fuse(self, student_feat: Maps) -> list[torch.Tensor]:
        """The fused student maps, shallow to deep, each of its teacher stage's shape."""
        xs = self._maps("student_feat", student_feat, self.student_shapes)
        sizes = [tuple(t[1:]) or (1,) * self.map_dims for t in self.teacher_shapes]
        out: list[torch.Tensor] = [torch.empty(0)] * len(xs)
        deeper = None
        for i in reversed(range(len(xs))):
            out[i], deeper = self.abfs[i](xs[i], deeper, sizes[i])
        return out

    def forward(self, student_feat: Maps, teacher_feat: Maps) -> torch.Tensor:
        ts = self._maps("teacher_feat", teacher_feat, self.teacher_shapes)
        same_batch("reviewkd", "student_feat", _as_list(student_feat)[0], "teacher_feat", ts[0])
        return hcl(self.fuse(student_feat), ts, self.levels)
