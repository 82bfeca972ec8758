"""Data augmentations as pure tensor functions (no datasets, no models), used by training regimes.

Importing this package registers every augmentation in ``edgedistill.registry.AUGMENTS`` (its lazy-import
module): ``timeseries`` (jitter, noise, scaling, rotation, permutation, magnitude/time warp, window slice,
shift, removal, mix1, mix2; data "1d"), ``images`` (flip, crop, cutout; "2d") and ``mixing`` (mixup,
partial_mixup, cutmix; batch-level, "any"). See docs/augment.md. Each is registered with the ``Params`` model
of its parameters (``params=``); ``augment_params(name)`` returns it.

``patch_swap``: intra-class patch swap (Choi et al. 2025), dimension-agnostic: m x m patches of images
(N, C, H, W), segments of length m of time series (N, C, L). It needs same-class partners, so it is used by
the ``patch_swap`` method rather than registered as a recipe augmentation.
"""
from __future__ import annotations

from typing import Optional

from edgedistill.augment import images, mixing, timeseries
from edgedistill.augment.mixing import beta_lambdas, clean_mask, mix_pairs
from edgedistill.augment.patch_swap import ClassRows, patch_grid, patch_swap, random_patch_mask, same_class_partners
from edgedistill.params import Params
from edgedistill.registry import AUGMENTS, typed_params


def augment_params(name: str) -> Optional[type[Params]]:
    """The ``Params`` model of registered augmentation ``name`` (its keys, defaults, bounds and docs), or None
    when it was registered without one. An unknown name raises ``UserInputError`` with the registered names."""
    return typed_params(AUGMENTS.entry(name))


__all__ = [
    "ClassRows", "augment_params", "beta_lambdas", "clean_mask", "images", "mix_pairs", "mixing", "patch_grid",
    "patch_swap", "random_patch_mask", "same_class_partners", "timeseries",
]
