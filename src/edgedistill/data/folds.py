"""Cross-validation folds (``eval.scheme``): which samples each fold holds out as its test part.

A fold is the test part only; validation is carved from the rest of the samples by ``data.split`` (by subject
where subjects exist), so every fold is selected on data its test numbers are not. Every scheme is deterministic
for the data and ``data.split.seed``:

- ``loso``: one fold per subject, in the subjects' sorted order (fold ``i`` holds out subject ``i``);
- ``group_kfold``: ``k`` folds of whole subjects, subjects shuffled with the seed and each given to the fold
  furthest below an equal share of samples (subjects are never cut in half);
- ``stratified_kfold``: ``k`` folds of samples, every class (or, for regression, every quintile of the first
  target) dealt round-robin over the folds after a seeded shuffle, so each fold holds ~1/k of every class.

Impossible requests fail with ``UserInputError`` naming ``eval.scheme`` / ``eval.folds`` before anything trains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from edgedistill.errors import UserInputError

DEFAULT_FOLDS = 5
SUBJECT_SCHEMES = ("loso", "group_kfold")


@dataclass(frozen=True)
class Fold:
    """Fold ``index`` of ``scheme`` (``folds`` folds for the k-fold schemes, None for loso)."""

    scheme: str
    folds: Optional[int]
    index: int

    def key(self) -> dict[str, Any]:
        """What a data fingerprint records: a teacher trained on fold 2's training part is never reused in fold 3."""
        return {"scheme": self.scheme, "folds": self.folds, "index": self.index}


def fold_of(eval_cfg: Any, index: int) -> Fold:
    """The ``Fold`` of a recipe's ``eval`` section (``config_data.EvalConfig``), k defaulting to ``DEFAULT_FOLDS``."""
    k = None if eval_cfg.scheme == "loso" else (eval_cfg.folds or DEFAULT_FOLDS)
    return Fold(eval_cfg.scheme, k, index)


def assign_folds(fold: Fold, strata: np.ndarray, groups: Optional[np.ndarray], subjects: list[str],
                 seed: int, source: str, classes: Optional[list[str]] = None) -> tuple[np.ndarray, list[str]]:
    """(fold id of every sample, one label per fold): ``strata`` are class codes (``classes`` their names) or, for
    regression, target quintiles; ``groups`` subject codes 0..G-1 with ``subjects[g]`` the original id, or None."""
    n = len(strata)
    if fold.scheme in SUBJECT_SCHEMES:
        if groups is None:
            raise UserInputError(
                f"eval.scheme: '{fold.scheme}' holds out whole subjects but {source} has no subject ids (a 'group' "
                f"array in an .npz, data.columns.group for a .csv); use eval.scheme: stratified_kfold"
            )
        n_subj = len(np.unique(groups))
        if fold.scheme == "loso":
            # One subject tested, and at least two left: one to train on and one to select on.
            if n_subj < 3:
                raise UserInputError(f"eval.scheme: 'loso' needs at least 3 subjects (test, train, validation); "
                                     f"{source} has {n_subj}")
            present = np.unique(groups)
            ids = np.searchsorted(present, groups)
            return ids, [f"subject {subjects[g] if g < len(subjects) else g}" for g in present]
        return _group_folds(fold, groups, subjects, seed, source)
    k = _k(fold)
    if k > n:
        raise UserInputError(f"eval.folds: {k} folds need at least {k} samples; {source} has {n}")
    values, codes, counts = np.unique(strata, return_inverse=True, return_counts=True)
    if classes is not None and counts.min() < k:
        # Every fold's test part should hold every class; with fewer samples than folds some cannot.
        rare = int(np.argmin(counts))
        raise UserInputError(f"eval.folds: {k} stratified folds need at least {k} samples of every class; class "
                             f"'{classes[int(values[rare])]}' of {source} has {int(counts[rare])} (use fewer folds)")
    ids = np.empty(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    offset = 0
    for c in range(len(values)):
        members = rng.permutation(np.flatnonzero(codes.reshape(-1) == c))
        ids[members] = (offset + np.arange(len(members))) % k
        offset += len(members)  # the next class starts where this one stopped: fold sizes stay within one sample
    return ids, [f"~1/{k} of every {'class' if classes is not None else 'target quintile'}" for _ in range(k)]


def _k(fold: Fold) -> int:
    return int(fold.folds or DEFAULT_FOLDS)


def _group_folds(fold: Fold, groups: np.ndarray, subjects: list[str], seed: int, source: str) -> tuple[np.ndarray, list[str]]:
    k = _k(fold)
    present, sizes = np.unique(groups, return_counts=True)
    if k > len(present):
        raise UserInputError(f"eval.folds: {k} folds of whole subjects need at least {k} subjects; {source} has "
                             f"{len(present)} (use eval.scheme: loso, or fewer folds)")
    if len(present) - max(1, len(present) // k) < 2:
        raise UserInputError(f"eval.folds: with {len(present)} subjects in {k} folds, a fold's training side keeps "
                             f"fewer than 2 subjects (one to train on, one to select on); use fewer folds")
    order = np.random.default_rng(seed).permutation(len(present))
    filled = np.zeros(k)
    part = np.empty(len(present), dtype=np.int64)
    for rank, s in enumerate(order):
        f = rank if rank < k else int(np.argmin(filled))  # every fold gets a subject first, then balance samples
        part[s] = f
        filled[f] += sizes[s]
    ids = part[np.searchsorted(present, groups)]
    labels = []
    for f in range(k):
        names = [subjects[g] if g < len(subjects) else str(g) for g in present[part == f]]
        labels.append(f"subject{'s' * (len(names) != 1)} {', '.join(names[:6])}{', ...' if len(names) > 6 else ''}")
    return ids, labels


def check_fold_classes(fold_ids: np.ndarray, y: np.ndarray, classes: Optional[list[str]], labels: list[str],
                       scheme: str, source: str) -> None:
    """Every class of a fold's test part must also be outside it: a model cannot predict a class it never saw."""
    if classes is None:
        return
    for f, label in enumerate(labels):
        inside, outside = set(np.unique(y[fold_ids == f]).tolist()), set(np.unique(y[fold_ids != f]).tolist())
        missing = sorted(inside - outside)
        if missing:
            raise UserInputError(
                f"eval.scheme: with '{scheme}', {label} holds every sample of class(es) "
                f"{[classes[i] for i in missing[:5]]} of {source}, so that fold's training side never sees them; "
                f"use eval.scheme: stratified_kfold or group_kfold with fewer folds"
            )
