"""Data augmentations as pure tensor functions (no datasets, no models), used by training regimes.

Importing this package registers every augmentation in ``edgedistill.registry.AUGMENTS`` (its lazy-import
module): ``timeseries`` (jitter, noise, scaling, rotation, permutation, magnitude/time warp, window slice,
shift, removal, mix1, mix2; data "1d"), ``images`` (flip, crop, cutout; "2d") and ``mixing`` (mixup,
partial_mixup, cutmix; batch-level, "any"). See docs/augment.md.

``patch_swap``: intra-class patch swap (Choi et al. 2025), dimension-agnostic: m x m patches of images
(N, C, H, W), segments of length m of time series (N, C, L). It needs same-class partners, so it is used by
the ``patch_swap`` method rather than registered as a recipe augmentation.
"""
from edgedistill.augment import images, mixing, timeseries
from edgedistill.augment.mixing import beta_lambdas, clean_mask, mix_pairs
from edgedistill.augment.patch_swap import ClassRows, patch_grid, patch_swap, random_patch_mask, same_class_partners

__all__ = [
    "ClassRows", "beta_lambdas", "clean_mask", "images", "mix_pairs", "mixing", "patch_grid", "patch_swap",
    "random_patch_mask", "same_class_partners", "timeseries",
]
