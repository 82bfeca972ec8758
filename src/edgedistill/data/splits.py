"""Index splits: by subject, stratified by class, or at random.

Every function returns integer index arrays (sorted ascending) and is deterministic for a given seed.
Splits fail loudly with ``UserInputError`` rather than hand back an empty part: an empty validation or
test set would only surface later as a NaN metric, far from its cause.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgedistill.errors import UserInputError


def _held_count(n: int, fraction: float, what: str) -> int:
    """How many of ``n`` samples go to the held-out part: at least 1, leaving at least 1 behind."""
    if not 0.0 < fraction < 1.0:
        raise UserInputError(f"{what}: fraction must be between 0 and 1 (exclusive), got {fraction}")
    if n < 2:
        raise UserInputError(f"{what}: cannot split {n} sample(s) into two non-empty parts; need at least 2")
    return int(min(max(round(fraction * n), 1), n - 1))


def random_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (rest, held) with ``len(held) ~= fraction * n``; both parts non-empty."""
    k = _held_count(n, fraction, "random split")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split into (rest, held) keeping every class with >= 2 samples in both parts.

    A class with a single sample cannot be in both parts; it stays in ``rest`` (the training side), where it
    is at least learnable. The held part has ``~fraction * n`` samples overall: per-class quotas are rounded
    by largest remainder so the total matches. If no class has two samples, this falls back to a random split.
    """
    y = np.asarray(y)
    n = len(y)
    target = _held_count(n, fraction, "stratified split")
    classes, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1)
    counts = np.bincount(codes, minlength=len(classes))
    splittable = counts >= 2
    if not splittable.any():
        return random_split(n, fraction, seed)
    ideal = fraction * counts
    lo = np.where(splittable, 1, 0)
    hi = np.where(splittable, counts - 1, 0)
    quota = np.clip(np.floor(ideal).astype(int), lo, hi)
    # Largest remainder: hand out (or take back) single samples until the total matches the target.
    remainder = ideal - quota
    order = np.argsort(-remainder, kind="stable")
    for c in order:
        if quota.sum() >= target:
            break
        if quota[c] < hi[c]:
            quota[c] += 1
    for c in order[::-1]:
        if quota.sum() <= target:
            break
        if quota[c] > lo[c]:
            quota[c] -= 1
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in range(len(classes)):
        members = np.flatnonzero(codes == c)
        held.append(rng.permutation(members)[: quota[c]])
    held_idx = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def subject_split(groups: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split samples into ``len(fractions)`` parts so that every subject lands in exactly one part.

    ``fractions`` are the wanted shares of samples (normalised to sum 1), e.g. ``(0.8, 0.2)``. Subjects are
    shuffled with ``seed``; each part first gets one subject (so none is empty), then every further subject
    goes to the part furthest below its target sample count. Sizes are therefore approximate: a subject
    is never cut in half, because a subject on both sides of a split leaks that person's idiosyncrasies
    into the evaluation.
    """
    groups = np.asarray(groups).reshape(-1)
    fr = np.asarray(list(fractions), dtype=np.float64)
    if fr.ndim != 1 or len(fr) < 1 or np.any(fr <= 0):
        raise UserInputError(f"subject split: fractions must be positive numbers, got {list(fractions)}")
    fr = fr / fr.sum()
    subjects, codes = np.unique(groups, return_inverse=True)
    codes = codes.reshape(-1)
    if len(subjects) < len(fr):
        raise UserInputError(
            f"subject split: {len(subjects)} subject(s) cannot fill {len(fr)} non-empty parts; "
            f"need at least {len(fr)} subjects (use split.by=stratified or random instead)"
        )
    sizes = np.bincount(codes, minlength=len(subjects))
    order = np.random.default_rng(seed).permutation(len(subjects))
    targets = fr * len(groups)
    filled = np.zeros(len(fr))
    part_of = np.empty(len(subjects), dtype=np.int64)
    # Seed the smallest parts first so a large first subject cannot swallow a small part's whole budget.
    seed_order = np.argsort(fr, kind="stable")
    for part, subj in zip(seed_order, order[: len(fr)]):
        part_of[subj] = part
        filled[part] += sizes[subj]
    for subj in order[len(fr) :]:
        part = int(np.argmax(targets - filled))
        part_of[subj] = part
        filled[part] += sizes[subj]
    sample_part = part_of[codes]
    return [np.flatnonzero(sample_part == p) for p in range(len(fr))]
