"""Sample-level augmentations of sensor time series (N, C, L), plus the input check every augmentation module
shares.

Each function is ``fn(x, generator, **params) -> Tensor``: every sample gets its own draw from the (CPU)
``generator``, the result has the input's shape, dtype and device, and the input is never modified. Its
parameters are declared once, as a ``Params`` model registered with it (``AUGMENTS.register(..., params=...)``):
defaults, bounds, choices and a doc per field. A recipe's values are validated through that model when the
augmentation pipeline is built (``augment.student[1].sigma: ...``); the functions themselves only check what
depends on the data (rank and dtype of ``x``, ``segments`` against L, ``groups`` against C). The
wearable-KD study (Jeon et al., IEEE IoT-J 2022, arXiv 2201.00111) uses ``removal``,
``noise``, ``shift`` and the hybrids ``mix1`` = removal → shift and ``mix2`` = removal → noise → shift; the
others follow Um et al. (ICMI 2017, "Data augmentation of wearable sensor data ...") and Le Guennec et al.
(2016, window slicing). See docs/augment.md for the defaults and what we chose where the papers are silent.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional, Sequence

import torch
from pydantic import Field, field_validator

from edgedistill.errors import UserInputError
from edgedistill.params import Params
from edgedistill.registry import AUGMENTS

_SHAPES = {"1d": "(N, C, L)", "2d": "(N, C, H, W)", "any": "(N, C, L) or (N, C, H, W)"}
_RANKS = {"1d": (3,), "2d": (4,), "any": (3, 4)}


# -- shared input check (images.py and mixing.py import it) -----------------------------------------------------
def check_input(aug: str, x: Any, data: str) -> torch.Tensor:
    """``x`` must be a floating tensor of the rank ``data`` asks for, with at least one sample."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() not in _RANKS[data] or x.shape[0] < 1:
        got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise UserInputError(f"augment {aug}: expected a float tensor of shape {_SHAPES[data]}, got {got}")
    return x


def draw_dtype(x: torch.Tensor) -> torch.dtype:
    """Draw in float64 for float64 data (keeps its precision), float32 otherwise (half types are cast after)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# -- internals ---------------------------------------------------------------------------------------------------
def _interp(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of x (N, C, L) at fractional positions pos (N, L') in [0, L-1], all channels:
    out[n, c, j] = (1 - w) x[n, c, ⌊p⌋] + w x[n, c, ⌊p⌋ + 1] with w = p - ⌊p⌋ (exact at integer p)."""
    n, c, length = x.shape
    lo = pos.floor().clamp(0, max(length - 2, 0))
    w = (pos - lo).to(x.dtype).unsqueeze(1)
    lo = lo.long()
    hi = (lo + 1).clamp(max=length - 1)
    take = lambda i: x.gather(2, i.unsqueeze(1).expand(n, c, i.shape[1]))  # noqa: E731
    return take(lo) * (1 - w) + take(hi) * w


def _curves(n: int, length: int, knots: int, sigma: float, interpolation: str, generator: torch.Generator,
            dtype: torch.dtype) -> torch.Tensor:
    """n smooth random curves of ``length`` samples through knots+2 equally spaced values ~ N(1, sigma²) at
    positions 0, h, ..., L-1 (Um et al.). ``cubic``: Catmull-Rom Hermite spline (C¹, passes through the knots,
    no linear solve), tangents m_k = (p_{k+1} - p_{k-1}) / 2 (one-sided at the ends); ``linear``: piecewise linear."""
    k = knots + 2
    p = 1 + sigma * torch.randn(n, k, generator=generator, dtype=dtype)
    t = torch.arange(length, dtype=dtype) * (k - 1) / max(length - 1, 1)  # position in knot units
    j = t.floor().clamp(max=k - 2).long()
    u = t - j
    p0, p1 = p[:, j], p[:, j + 1]
    if interpolation == "linear":
        return p0 + u * (p1 - p0)
    m = torch.cat([p[:, 1:2] - p[:, :1], (p[:, 2:] - p[:, :-2]) / 2, p[:, -1:] - p[:, -2:-1]], dim=1)
    h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
    return h00 * p0 + h10 * m[:, j] + h01 * p1 + h11 * m[:, j + 1]


def _gaussian(x: torch.Tensor, generator: torch.Generator, sigma: float) -> torch.Tensor:
    eps = torch.randn(x.shape, generator=generator, dtype=draw_dtype(x)).to(device=x.device, dtype=x.dtype)
    return x + sigma * eps  # sigma = 0 gives x exactly (x + 0 = x for finite eps)


def _removal(x: torch.Tensor, generator: torch.Generator, fraction: float, fill: str) -> torch.Tensor:
    n, _, length = x.shape
    k = round(fraction * length)
    start = torch.randint(0, length - k + 1, (n, 1), generator=generator)
    t = torch.arange(length)
    gone = ((t >= start) & (t < start + k)).unsqueeze(1).to(x.device)  # (N, 1, L): all channels lose the segment
    if fill == "zero":
        return x.masked_fill(gone, 0.0)
    # "mean": the kept samples' per-channel mean, not the whole window's (the removed values count as unknown)
    kept = (~gone).to(x.dtype)
    mean = (x * kept).sum(2, keepdim=True) / kept.sum(2, keepdim=True).clamp(min=1)
    return torch.where(gone, mean, x)


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: float, mode: str) -> torch.Tensor:
    n, c, length = x.shape
    m = round(max_shift * length)
    s = torch.randint(-m, m + 1, (n, 1), generator=generator)
    src = torch.arange(length) - s  # out[t] = x[t - s]: a positive s delays the signal
    out = x.gather(2, (src % length).to(x.device).unsqueeze(1).expand(n, c, length))
    if mode == "pad":
        out = out.masked_fill(((src < 0) | (src >= length)).to(x.device).unsqueeze(1), 0.0)
    return out


# -- the seed paper's augmentations (Jeon et al. 2022) -------------------------------------------------------
class NoiseParams(Params):
    """Gaussian noise of the wearable-KD study."""

    sigma: float = Field(0.06, ge=0, description="std of the added noise, in data units (the study: 0.06, 0.09, 0.12); 0 = identity")


class RemovalParams(Params):
    """One removed segment per sample."""

    fraction: float = Field(0.15, ge=0, le=1, description="removed share of the window, k = round(fraction·L) samples (the study: 0.15, 0.22, 0.30)")
    fill: Literal["zero", "mean"] = Field("zero", description="value of the removed segment: 0, or each channel's mean over the kept samples")


class ShiftParams(Params):
    """Temporal shift."""

    max_shift: float = Field(0.1, ge=0, le=1, description="largest shift as a share of L: s ~ U{-m, ..., m}, m = round(max_shift·L)")
    mode: Literal["roll", "pad"] = Field("roll", description="roll: circular shift; pad: zeros come in where the window is left")


# The hybrids take the parameters of their steps. Bases in reverse order: pydantic lists the last base's fields first.
class Mix1Params(ShiftParams, RemovalParams):
    """Removal, then shift: the parameters of both."""


class Mix2Params(ShiftParams, NoiseParams, RemovalParams):
    """Removal, then noise, then shift: the parameters of all three."""


@AUGMENTS.register("noise", kind="sample", data="1d", label_preserving=True, params=NoiseParams)
def noise(x: torch.Tensor, generator: torch.Generator, sigma: float = 0.06) -> torch.Tensor:
    """Gaussian noise injection of the wearable-KD study: x + σ·ε, ε ~ N(0, 1) (σ in {0.06, 0.09, 0.12})."""
    return _gaussian(check_input("noise", x, "1d"), generator, sigma)


@AUGMENTS.register("removal", kind="sample", data="1d", label_preserving=True, params=RemovalParams)
def removal(x: torch.Tensor, generator: torch.Generator, fraction: float = 0.15, fill: str = "zero") -> torch.Tensor:
    """Remove one contiguous segment of exactly round(fraction·L) samples per sample, all channels at once.

    The start is uniform in [0, L - k]. ``fill="zero"`` sets the segment to 0 (the default); ``"mean"`` to
    each channel's mean over the kept samples. Missing ratios of the study: {0.15, 0.22, 0.30}.
    """
    return _removal(check_input("removal", x, "1d"), generator, fraction, fill)


@AUGMENTS.register("shift", kind="sample", data="1d", label_preserving=True, params=ShiftParams)
def shift(x: torch.Tensor, generator: torch.Generator, max_shift: float = 0.1, mode: str = "roll") -> torch.Tensor:
    """Temporal shift by s ~ U{-m, ..., m} samples, m = round(max_shift·L), keeping the length L.

    out[t] = x[(t - s) mod L] (``mode="roll"``, circular: every value is kept) or x[t - s] with zeros where
    t - s falls outside the window (``mode="pad"``).
    """
    return _shift(check_input("shift", x, "1d"), generator, max_shift, mode)


@AUGMENTS.register("mix1", kind="sample", data="1d", label_preserving=True, params=Mix1Params)
def mix1(x: torch.Tensor, generator: torch.Generator, fraction: float = 0.15, max_shift: float = 0.1,
         fill: str = "zero", mode: str = "roll") -> torch.Tensor:
    """Mix1 of the wearable-KD study: removal, then shift (= shift(removal(x)) with the same draws)."""
    check_input("mix1", x, "1d")
    return _shift(_removal(x, generator, fraction, fill), generator, max_shift, mode)


@AUGMENTS.register("mix2", kind="sample", data="1d", label_preserving=True, params=Mix2Params)
def mix2(x: torch.Tensor, generator: torch.Generator, fraction: float = 0.15, sigma: float = 0.06,
         max_shift: float = 0.1, fill: str = "zero", mode: str = "roll") -> torch.Tensor:
    """Mix2 of the wearable-KD study: removal, then Gaussian noise, then shift (the composition, same draws)."""
    check_input("mix2", x, "1d")
    x = _gaussian(_removal(x, generator, fraction, fill), generator, sigma)
    return _shift(x, generator, max_shift, mode)


# -- Um et al. 2017 / Le Guennec et al. 2016 ---------------------------------------------------------------------
class JitterParams(Params):
    """Additive Gaussian noise (Um et al.)."""

    sigma: float = Field(0.03, ge=0, description="std of the added noise, in data units; 0 = identity")


class ScalingParams(Params):
    """One random gain per sample and channel."""

    sigma: float = Field(0.1, ge=0, description="std of the gain s ~ N(1, σ²); 0 = identity")


_Triple = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=3, max_length=3)]


class RotationParams(Params):
    """Random 3-D rotation of 3-axis channel groups."""

    groups: Optional[Annotated[list[_Triple], Field(min_length=1)]] = Field(
        None, description="channel triples [[i, j, k], ...] rotated as 3-axis sensors (distinct channels); default: 0-2, 3-5, ... (C a multiple of 3)")
    max_angle: float = Field(180.0, ge=0, le=180, description="largest rotation angle in degrees: θ ~ U(-max_angle, max_angle)")
    shared: bool = Field(False, description="one rotation per sample for all groups (sensors mounted together)")

    @field_validator("groups")
    @classmethod
    def _distinct(cls, groups: Optional[list[list[int]]]) -> Optional[list[list[int]]]:
        flat = [i for g in groups or [] for i in g]
        twice = sorted({i for i in flat if flat.count(i) > 1})
        if twice:
            raise ValueError(f"channel {twice[0]} appears twice; a group's channels are distinct and groups do not share one")
        return groups


class PermutationParams(Params):
    """Segment permutation."""

    segments: int = Field(4, ge=1, le=100_000, description="number of near-equal pieces put back in a random order (at most L); 1 = identity")


class _WarpParams(Params):
    sigma: float = Field(0.2, ge=0, description="std of the knot values ~ N(1, σ²) of the smooth random curve; 0 = identity")
    knots: int = Field(4, ge=0, description="interior knots: the curve passes through knots + 2 equally spaced values")
    interpolation: Literal["cubic", "linear"] = Field("cubic", description="between knots: Catmull-Rom cubic or linear")


class MagnitudeWarpParams(_WarpParams):
    """Magnitude warping: a smooth random gain curve."""


class TimeWarpParams(_WarpParams):
    """Time warping: a smooth random speed curve."""


class WindowSliceParams(Params):
    """Window slicing."""

    ratio: float = Field(0.9, gt=0, le=1, description="share of L cropped and stretched back to L; 1 = identity")


@AUGMENTS.register("jitter", kind="sample", data="1d", label_preserving=True, params=JitterParams)
def jitter(x: torch.Tensor, generator: torch.Generator, sigma: float = 0.03) -> torch.Tensor:
    """Jitter: additive Gaussian noise x + σ·ε, ε ~ N(0, 1) per value (Um et al. 2017)."""
    return _gaussian(check_input("jitter", x, "1d"), generator, sigma)


@AUGMENTS.register("scaling", kind="sample", data="1d", label_preserving=True, params=ScalingParams)
def scaling(x: torch.Tensor, generator: torch.Generator, sigma: float = 0.1) -> torch.Tensor:
    """Scaling: x[n, c, :] · s[n, c] with one factor s ~ N(1, σ²) per sample and channel."""
    check_input("scaling", x, "1d")
    s = 1 + sigma * torch.randn(x.shape[0], x.shape[1], 1, generator=generator, dtype=draw_dtype(x))
    return x * s.to(device=x.device, dtype=x.dtype)


def _groups(x: torch.Tensor, groups: Optional[Sequence[Sequence[int]]]) -> list[list[int]]:
    """The channel triples to rotate; RotationParams has checked their form, this checks them against C."""
    c = x.shape[1]
    if groups is None:
        if c % 3:
            raise UserInputError(f"augment rotation: {c} channels is not a multiple of 3; give groups=[[i, j, k], ...] (3-axis channel triples)")
        return [[i, i + 1, i + 2] for i in range(0, c, 3)]
    out = [list(g) for g in groups]
    if any(i >= c for g in out for i in g):
        raise UserInputError(f"augment rotation: groups {out} name a channel the data does not have (channels 0 to {c - 1})")
    return out


@AUGMENTS.register("rotation", kind="sample", data="1d", label_preserving=True, params=RotationParams)
def rotation(x: torch.Tensor, generator: torch.Generator, groups: Optional[list[list[int]]] = None,
             max_angle: float = 180.0, shared: bool = False) -> torch.Tensor:
    """Random 3-D rotation of each 3-axis channel group (accelerometer/gyroscope x, y, z), per sample.

    Axis a uniform on the unit sphere, angle θ ~ U(-max_angle, max_angle) degrees, R = I + sin θ K + (1 - cos θ) K²
    (Rodrigues, K the cross-product matrix of a); each group's (3, L) block becomes R·block, so the norm of every
    group at every time step is kept. ``groups``: channel triples (default 0-2, 3-5, ...); channels in no group are
    left alone; ``shared``: one rotation per sample for all groups (sensors rigidly mounted together).
    """
    check_input("rotation", x, "1d")
    idx = _groups(x, groups)
    n, g, length = x.shape[0], len(idx), x.shape[2]
    draws = 1 if shared else g
    axis = torch.randn(n, draws, 3, generator=generator, dtype=torch.float64)
    axis = axis / axis.norm(dim=2, keepdim=True).clamp(min=1e-12)
    theta = (2 * torch.rand(n, draws, 1, 1, generator=generator, dtype=torch.float64) - 1) * math.radians(max_angle)
    zero = torch.zeros_like(axis[..., 0])
    a0, a1, a2 = axis.unbind(-1)
    k = torch.stack([zero, -a2, a1, a2, zero, -a0, -a1, a0, zero], -1).view(n, draws, 3, 3)
    r = torch.eye(3, dtype=torch.float64) + theta.sin() * k + (1 - theta.cos()) * (k @ k)  # float64: orthogonal to 1e-16
    r = r.expand(n, g, 3, 3).to(device=x.device, dtype=x.dtype)
    cols = torch.tensor([i for t in idx for i in t], device=x.device)
    out = x.clone()
    out[:, cols] = (r @ x[:, cols].reshape(n, g, 3, length)).reshape(n, 3 * g, length)
    return out


@AUGMENTS.register("permutation", kind="sample", data="1d", label_preserving=True, params=PermutationParams)
def permutation(x: torch.Tensor, generator: torch.Generator, segments: int = 4) -> torch.Tensor:
    """Permutation: cut the series into ``segments`` pieces and put them back in a random order.

    Pieces are near-equal (lengths differ by at most 1, as numpy's array_split); one order per sample, the
    same for all its channels, so each channel keeps its multiset of values.
    """
    check_input("permutation", x, "1d")
    n, c, length = x.shape
    if not 1 <= segments <= length:  # the data's side of the bound: at most one piece per sample
        raise UserInputError(f"augment permutation: segments={segments} does not fit a series of length {length} (1 to {length})")
    s = segments
    lens = torch.tensor([length // s + (i < length % s) for i in range(s)])
    starts = lens.cumsum(0) - lens
    perm = torch.rand(n, s, generator=generator).argsort(dim=1)  # a random order of the pieces per sample
    plen = lens[perm]
    ends = plen.cumsum(1)
    t = torch.arange(length).expand(n, length).contiguous()
    j = torch.searchsorted(ends, t, right=True)  # output position t lies in the j-th placed piece
    src = starts[perm].gather(1, j) + t - (ends - plen).gather(1, j)
    return x.gather(2, src.to(x.device).unsqueeze(1).expand(n, c, length))


@AUGMENTS.register("magnitude_warp", kind="sample", data="1d", label_preserving=True, params=MagnitudeWarpParams)
def magnitude_warp(x: torch.Tensor, generator: torch.Generator, sigma: float = 0.2, knots: int = 4,
                   interpolation: str = "cubic") -> torch.Tensor:
    """Magnitude warping: multiply each sample and channel by a smooth random curve around 1.

    x[n, c, t] · w[n, c, t], w through knots+2 equally spaced values ~ N(1, σ²) at 0, ..., L-1 (cubic
    Catmull-Rom or linear interpolation), one curve per sample and channel.
    """
    check_input("magnitude_warp", x, "1d")
    n, c, length = x.shape
    w = _curves(n * c, length, knots, sigma, interpolation, generator, draw_dtype(x)).view(n, c, length)
    return x * w.to(device=x.device, dtype=x.dtype)


@AUGMENTS.register("time_warp", kind="sample", data="1d", label_preserving=True, params=TimeWarpParams)
def time_warp(x: torch.Tensor, generator: torch.Generator, sigma: float = 0.2, knots: int = 4,
              interpolation: str = "cubic") -> torch.Tensor:
    """Time warping: resample x at a smooth, strictly increasing time map τ with τ(0) = 0, τ(L-1) = L-1.

    A smooth speed curve v ~ (knots, N(1, σ²)) as in magnitude_warp is floored at 0.01 (so τ is monotone even
    where the curve dips below 0), τ(t) = (L-1)·Σ_{s<t} v_s / Σ_{s<L-1} v_s, and out[:, t] = x(τ(t)) by linear
    interpolation. One map per sample, shared by its channels (they were recorded on one clock).
    """
    check_input("time_warp", x, "1d")
    n, _, length = x.shape
    v = _curves(n, length, knots, sigma, interpolation, generator, torch.float64).clamp(min=0.01)
    if length < 2:
        return x.clone()
    tau = torch.cat([torch.zeros(n, 1, dtype=torch.float64), v[:, :-1].cumsum(1)], dim=1)
    tau = (tau * ((length - 1) / tau[:, -1:])).clamp(0, length - 1)
    return _interp(x, tau.to(x.device))


@AUGMENTS.register("window_slice", kind="sample", data="1d", label_preserving=True, params=WindowSliceParams)
def window_slice(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.9) -> torch.Tensor:
    """Window slicing: crop a window of ratio·L samples at a random start and stretch it back to L.

    w = max(1, round(ratio·L)), start uniform in [0, L - w], out[:, t] = x(start + t·(w-1)/(L-1)) by linear
    interpolation; ratio = 1 is the identity.
    """
    check_input("window_slice", x, "1d")
    n, _, length = x.shape
    w = max(1, round(ratio * length))
    start = torch.randint(0, length - w + 1, (n, 1), generator=generator).to(torch.float64)
    pos = start + torch.arange(length, dtype=torch.float64) * ((w - 1) / max(length - 1, 1))
    return _interp(x, pos.to(x.device))
