"""Data augmentations as pure tensor functions (no datasets, no models), used by training regimes.

``patch_swap``: intra-class patch swap (Choi et al. 2025), dimension-agnostic: m x m patches of images
(N, C, H, W), segments of length m of time series (N, C, L).
"""
from edgedistill.augment.patch_swap import ClassRows, patch_grid, patch_swap, random_patch_mask, same_class_partners

__all__ = ["ClassRows", "patch_grid", "patch_swap", "random_patch_mask", "same_class_partners"]
