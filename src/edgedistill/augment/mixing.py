"""Batch-level mixing augmentations: ``fn(x, y, generator, **params) -> (x~, y~)`` with y (N, K) class
probabilities (one-hot for clean labels) and y~ the mixed probabilities (rows still sum to 1). Work on series
(N, C, L) and images (N, C, H, W). None preserves labels.

``mixup`` and ``partial_mixup`` follow MIX-KD's code (Choi et al., WACV 2023, arXiv 2211.03946):
two independent permutations rp1, rp2 of the batch, λ_i ~ Beta(a, a) per sample, and

    x~_i = λ_i x_{rp1(i)} + (1 - λ_i) x_{rp2(i)}        y~_i = λ_i y_{rp1(i)} + (1 - λ_i) y_{rp2(i)}

so row i of the output is not derived from input row i (a consumer pairing outputs with clean inputs must not
assume it). Partial mixup (PMU) forces λ = 1 (a clean sample) on k = int(B·clean_fraction) indices; the
official code draws them WITH replacement, so the expected clean fraction is 1 - (1 - 1/B)^k, not
clean_fraction (0.5925 for B = 64, 0.9): ``with_replacement`` picks the code (True) or the stated intent.
Beta draws come from numpy (torch's Beta takes no generator), seeded by one draw from ``generator``. Parameters
are declared by the ``Params`` model each function is registered with.
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from edgedistill.augment.timeseries import check_input
from edgedistill.errors import UserInputError
from edgedistill.params import Params
from edgedistill.registry import AUGMENTS


class MixupParams(Params):
    """Mixup (MIX-KD's full mixup)."""

    alpha: float = Field(1.0, ge=0, description="λ ~ Beta(α, α) per sample; 0 = no mixing (λ ≡ 1)")


class PartialMixupParams(MixupParams):
    """Partial mixup (MIX-KD's PMU)."""

    clean_fraction: float = Field(0.9, ge=0, le=1, description="k = int(B·clean_fraction) drawn indices are kept clean (λ = 1); the code's partmixup")
    with_replacement: bool = Field(True, description="draw the k indices with replacement, as MIX-KD's code (fewer clean rows), or exactly k")


class CutMixParams(Params):
    """CutMix."""

    alpha: float = Field(1.0, ge=0, description="λ ~ Beta(α, α) per sample sets the pasted box, area ≈ 1 - λ; 0 = nothing pasted")


def _check(aug: str, x: torch.Tensor, y: torch.Tensor) -> None:
    check_input(aug, x, "any")
    if not isinstance(y, torch.Tensor) or not y.is_floating_point() or y.dim() != 2 or y.shape[0] != x.shape[0]:
        got = f"shape {tuple(y.shape)} dtype {y.dtype}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise UserInputError(f"augment {aug}: y must be ({x.shape[0]}, K) float class probabilities, got {got}")


def beta_lambdas(n: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """n draws λ ~ Beta(alpha, alpha) as float64; alpha = 0 means no mixing (λ ≡ 1), the limit of "off"."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))  # drawn even when alpha = 0: same stream after
    if alpha == 0:
        return torch.ones(n, dtype=torch.float64)
    lam = np.random.default_rng(seed).beta(alpha, alpha, size=n)
    return torch.from_numpy(np.clip(np.nan_to_num(lam, nan=1.0), 0.0, 1.0))  # guard tiny alpha edge cases


def clean_mask(n: int, clean_fraction: float, with_replacement: bool, generator: torch.Generator) -> torch.Tensor:
    """(n,) bool, True = kept clean (λ = 1). k = int(n·clean_fraction) indices are drawn: with replacement
    (``torch.randint``, as MIX-KD's PMU code: E[clean fraction] = 1 - (1 - 1/n)^k) or without (exactly k clean)."""
    k = int(n * clean_fraction)
    if with_replacement:
        idx = torch.randint(0, n, (k,), generator=generator)
    else:
        idx = torch.randperm(n, generator=generator)[:k]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return mask


def mix_pairs(x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, rp1: torch.Tensor,
              rp2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x~_i = λ_i x_{rp1(i)} + (1 - λ_i) x_{rp2(i)}, y~ likewise (MIX-KD's code). λ_i = 1 returns x_{rp1(i)} exactly."""
    rp1, rp2 = rp1.to(x.device), rp2.to(x.device)
    lx = lam.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    ly = lam.to(device=y.device, dtype=y.dtype).view(-1, 1)
    return lx * x[rp1] + (1 - lx) * x[rp2], ly * y[rp1] + (1 - ly) * y[rp2]


@AUGMENTS.register("mixup", kind="batch", data="any", label_preserving=False, params=MixupParams)
def mixup(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup, MIX-KD's full mixup (FMU): every sample is λ·x_{rp1(i)} + (1-λ)·x_{rp2(i)}, λ ~ Beta(α, α).

    Two independent permutations rp1, rp2 and one λ per sample, as MIX-KD's code; α = 0: no mixing
    (λ ≡ 1, the output is the batch reordered by rp1, each input still with its own target).
    """
    _check("mixup", x, y)
    n = x.shape[0]
    rp1, rp2 = torch.randperm(n, generator=generator), torch.randperm(n, generator=generator)
    return mix_pairs(x, y, beta_lambdas(n, alpha, generator), rp1, rp2)


@AUGMENTS.register("partial_mixup", kind="batch", data="any", label_preserving=False, params=PartialMixupParams)
def partial_mixup(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, alpha: float = 1.0,
                  clean_fraction: float = 0.9, with_replacement: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial mixup (MIX-KD's PMU): mixup with λ = 1 forced on k = int(B·clean_fraction) drawn indices.

    ``clean_fraction`` is the code's ``partmixup``. ``with_replacement=True`` reproduces the official code, whose
    expected clean fraction is 1 - (1 - 1/B)^k (0.5925 for B = 64, 0.9: about 41% mixed, not 10%);
    ``False`` gives exactly k clean samples, the stated intent.
    """
    _check("partial_mixup", x, y)
    n = x.shape[0]
    rp1, rp2 = torch.randperm(n, generator=generator), torch.randperm(n, generator=generator)
    lam = beta_lambdas(n, alpha, generator)
    lam[clean_mask(n, clean_fraction, with_replacement, generator)] = 1.0
    return mix_pairs(x, y, lam, rp1, rp2)


def _span(length: int, cut: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, length) bool: a run of ``cut`` samples centred at a uniform position, clipped to [0, length)."""
    lo = torch.randint(0, length, (cut.shape[0], 1), generator=generator) - cut.view(-1, 1) // 2
    t = torch.arange(length)
    return (t >= lo) & (t < lo + cut.view(-1, 1))


@AUGMENTS.register("cutmix", kind="batch", data="any", label_preserving=False, params=CutMixParams)
def cutmix(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix: paste a box (image) or time span (series) of a partner into each sample; target = pasted fraction.

    Per sample λ ~ Beta(α, α) sets the box: span round((1-λ)·L), or sides round(H·√(1-λ)) × round(W·√(1-λ));
    the centre is uniform and the box is clipped at the border (Yun et al. 2019), so the target is
    y~_i = (1 - a_i) y_i + a_i y_{rp(i)} with a_i the pasted area over the whole area, after clipping.
    One permutation rp; α = 0: nothing pasted, inputs returned exactly.
    """
    _check("cutmix", x, y)
    n = x.shape[0]
    rp = torch.randperm(n, generator=generator)
    lam = beta_lambdas(n, alpha, generator)
    if x.dim() == 3:
        box = _span(x.shape[2], torch.round((1 - lam) * x.shape[2]).long(), generator)  # (N, L)
    else:
        side = torch.sqrt(1 - lam)
        rows = _span(x.shape[2], torch.round(side * x.shape[2]).long(), generator)
        cols = _span(x.shape[3], torch.round(side * x.shape[3]).long(), generator)
        box = rows[:, :, None] & cols[:, None, :]  # (N, H, W)
    area = box.flatten(1).double().mean(1)  # the actual pasted fraction a_i
    box = box.unsqueeze(1).to(x.device)
    xm = torch.where(box, x[rp.to(x.device)], x)
    a = area.to(device=y.device, dtype=y.dtype).view(-1, 1)
    return xm, (1 - a) * y + a * y[rp.to(y.device)]


__all__ = ["beta_lambdas", "clean_mask", "cutmix", "mix_pairs", "mixup", "partial_mixup"]
