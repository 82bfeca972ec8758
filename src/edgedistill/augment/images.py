"""Sample-level augmentations of small images (N, C, H, W): horizontal flip, crop with zero padding, cutout.

Same contract as the time-series ones (``fn(x, generator, **params)``, one draw per sample from the CPU
generator, shape/dtype/device kept, never in place; parameters declared by a registered ``Params`` model). The
defaults are sized for the bundled 8×8 digits and 16×16 synthetic images rather than CIFAR's 32×32 (where the
usual values are padding 4 and cutout 8-16).
"""
from __future__ import annotations

import torch
from pydantic import Field

from edgedistill.augment.timeseries import check_input
from edgedistill.params import Params
from edgedistill.registry import AUGMENTS


class FlipParams(Params):
    """Horizontal flip."""

    p: float = Field(0.5, ge=0, le=1, description="probability that an image is mirrored (W axis); 0 = identity")


class CropParams(Params):
    """Random crop with zero padding."""

    padding: int = Field(2, ge=0, le=1024, description="zero pixels added per side before the H×W crop at a uniform offset "
                                             "(a shift of up to ±padding); 0 = identity")


class CutoutParams(Params):
    """Cutout."""

    size: int = Field(4, ge=0, le=4096, description="side of the zeroed square (clipped at the border); 0 = identity")


@AUGMENTS.register("flip", kind="sample", data="2d", label_preserving=True, params=FlipParams)
def flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Horizontal flip (mirror the W axis) of each image with probability p.

    Label-preserving only where mirrored images keep their class (natural images yes; digits and text not
    really: leave it out of a digits recipe or accept the noise).
    """
    check_input("flip", x, "2d")
    hit = (torch.rand(x.shape[0], generator=generator) < p).view(-1, 1, 1, 1).to(x.device)
    return torch.where(hit, x.flip(-1), x)


@AUGMENTS.register("crop", kind="sample", data="2d", label_preserving=True, params=CropParams)
def crop(x: torch.Tensor, generator: torch.Generator, padding: int = 2) -> torch.Tensor:
    """Random crop with padding: zero-pad ``padding`` pixels per side, crop H×W back at a uniform offset.

    Offset (dy, dx) ∈ {0, ..., 2·padding}², out[h, w] = x_pad[h + dy, w + dx]: a shift by up to ±padding pixels
    with zeros coming in.
    """
    check_input("crop", x, "2d")
    n, c, h, w = x.shape
    off = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    xp = torch.nn.functional.pad(x, (padding,) * 4)
    rows = (torch.arange(h) + off[:, :1]).to(x.device)  # (N, H) source rows in the padded image
    cols = (torch.arange(w) + off[:, 1:]).to(x.device)  # (N, W) source columns
    xp = xp.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * padding))
    return xp.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


@AUGMENTS.register("cutout", kind="sample", data="2d", label_preserving=True, params=CutoutParams)
def cutout(x: torch.Tensor, generator: torch.Generator, size: int = 4) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): zero a size×size square per image whose centre is a uniform pixel.

    As in the original, the square is clipped at the border, so fewer than size² pixels are zeroed when the
    centre is within size/2 of an edge: rows [cy - ⌊size/2⌋, cy - ⌊size/2⌋ + size) ∩ [0, H), columns alike.
    """
    check_input("cutout", x, "2d")
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1), generator=generator) - size // 2
    cx = torch.randint(0, w, (n, 1), generator=generator) - size // 2
    r, c = torch.arange(h), torch.arange(w)
    in_rows = (r >= cy) & (r < cy + size)  # (N, H)
    in_cols = (c >= cx) & (c < cx + size)  # (N, W)
    box = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1).to(x.device)
    return x.masked_fill(box, 0.0)
