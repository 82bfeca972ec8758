"""Intra-class patch swap (Choi, Jeon, Shukla, Turaga, Neurocomputing 2025, arXiv 2505.14124),
for any number of spatial dimensions.

Two samples of the same class, x_a and x_b of shape (C, *spatial), are cut into patches of ``patch`` samples
per spatial dimension (m x m patches of an image, segments of length m of a series; the last patch of a
dimension is shorter when m does not divide it). A patch mask M (1 = swap) is upsampled to the samples and::

    x~a = (1 - M) * x_a + M * x_b        x~b = (1 - M) * x_b + M * x_a

so x~a + x~b = x_a + x_b, M = 0 returns the originals, M = 1 exchanges them, and both views keep the label.
Pure functions: the caller passes an explicit mask or a ``torch.Generator`` (deterministic under its seed).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from edgedistill.errors import UserInputError

Patch = Union[int, Sequence[int]]


def patch_sizes(spatial: Sequence[int], patch: Patch) -> tuple[int, ...]:
    """``patch`` as one size per spatial dimension (an int applies to every dimension), each in [1, size]."""
    sizes = (int(patch),) * len(spatial) if isinstance(patch, int) else tuple(int(m) for m in patch)
    if len(sizes) != len(spatial):
        raise UserInputError(f"patch_swap: patch {tuple(sizes)} gives {len(sizes)} sizes for {len(spatial)} spatial dims {tuple(spatial)}")
    if any(m < 1 or m > s for m, s in zip(sizes, spatial)):
        raise UserInputError(f"patch_swap: each patch size must be in [1, size of its dimension]; got {sizes} for {tuple(spatial)}")
    return sizes


def patch_grid(spatial: Sequence[int], patch: Patch) -> tuple[int, ...]:
    """Number of patches along each spatial dimension."""
    return tuple(math.ceil(s / m) for s, m in zip(spatial, patch_sizes(spatial, patch)))


def random_patch_mask(
    n: int, grid: Sequence[int], ratio: float = 0.5, p: float = 1.0, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """(n, *grid) bool mask: for each pair, with probability ``p``, exactly round(ratio * patches) patches drawn
    uniformly without replacement are swapped; otherwise none. Drawn on the CPU from ``generator``. ``ratio`` and
    ``p`` are in [0, 1]: the caller's typed parameters check them (the ``patch_swap`` method's ``swap_ratio`` and
    ``swap_prob``)."""
    total = math.prod(grid)
    k = round(ratio * total)
    rank = torch.rand(n, total, generator=generator).argsort(dim=1).argsort(dim=1)  # a random permutation per row
    mask = rank < k
    mask &= (torch.rand(n, generator=generator) < p)[:, None]
    return mask.view(n, *grid)


def _upsample(mask: torch.Tensor, sizes: Sequence[int], spatial: Sequence[int]) -> torch.Tensor:
    """(N, *grid) patch mask -> (N, 1, *spatial) sample mask (Kronecker product with ones, cropped)."""
    for d, (m, s) in enumerate(zip(sizes, spatial)):
        mask = mask.repeat_interleave(m, dim=1 + d).narrow(1 + d, 0, s)
    return mask.unsqueeze(1)


def patch_swap(
    xa: torch.Tensor,
    xb: torch.Tensor,
    patch: Patch,
    *,
    mask: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    ratio: float = 0.5,
    p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap the masked patches between paired samples ``xa[i]`` and ``xb[i]`` (shape (N, C, *spatial)).

    ``mask``: (N, *grid) or (*grid) (the same for every pair), 1/True = swap; when None it is drawn by
    ``random_patch_mask(N, grid, ratio, p, generator)``. Returns (x~a, x~b) with the inputs' shape and dtype.
    """
    if xa.shape != xb.shape or xa.dim() < 3:
        raise UserInputError(f"patch_swap: xa and xb must have the same (N, C, *spatial) shape, got {tuple(xa.shape)} and {tuple(xb.shape)}")
    spatial = tuple(xa.shape[2:])
    sizes = patch_sizes(spatial, patch)
    grid = patch_grid(spatial, sizes)
    if mask is None:
        mask = random_patch_mask(len(xa), grid, ratio, p, generator)
    mask = torch.as_tensor(mask).bool()
    if tuple(mask.shape) == grid:
        mask = mask.expand(len(xa), *grid)
    if tuple(mask.shape) != (len(xa), *grid):
        raise UserInputError(f"patch_swap: mask must have shape {(len(xa), *grid)} or {grid}, got {tuple(mask.shape)}")
    swap = _upsample(mask.to(xa.device), sizes, spatial)
    return torch.where(swap, xb, xa), torch.where(swap, xa, xb)


class ClassRows:
    """Rows of a labelled set grouped by class, to draw a same-class partner for each row in O(batch)."""

    def __init__(self, labels: torch.Tensor) -> None:
        labels = labels.long().cpu()
        self.labels = labels
        self.order = torch.argsort(labels, stable=True)  # rows sorted by class
        counts = torch.bincount(labels)
        self.count = counts[labels]  # per row: how many rows share its class
        starts = torch.cumsum(counts, 0) - counts
        self.start = starts[labels]  # per row: where its class begins in ``order``
        self.pos = torch.empty_like(labels)
        self.pos[self.order] = torch.arange(len(labels)) - starts[labels[self.order]]  # its place in its class

    def partners(self, rows: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """For each row, another row of the same class drawn uniformly (the row itself if it is alone)."""
        rows = rows.long().cpu()
        n, pos = self.count[rows], self.pos[rows]
        k = (torch.rand(len(rows), generator=generator) * (n - 1).clamp(min=1)).long()
        k += ((k >= pos) & (n > 1)).long()  # skip the row itself
        return self.order[self.start[rows] + k]


def same_class_partners(rows: torch.Tensor, labels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """For each of ``rows`` (indices into ``labels``), a different row of the same class, drawn uniformly."""
    return ClassRows(labels).partners(rows, generator)
