"""Labels as the models see them: class names to int64 codes 0..C-1 with one mapping for every split, or float64
regression targets (``prepare.split_windows`` step "encode")."""
from __future__ import annotations

from typing import Optional

import numpy as np

from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError


def _natural_sorted(labels: list[str]) -> list[str]:
    """Sort numerically when every label is a number ('2' before '10'), else as text."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def _encode(y: np.ndarray, index: dict[str, int], source: str, part: str) -> np.ndarray:
    keys = [str(v) for v in np.asarray(y).reshape(-1)]
    unseen = sorted({k for k in keys if k not in index})
    if unseen:
        raise UserInputError(
            f"{source}: the {part} split has label(s) {unseen[:5]} that are not among the classes {list(index)[:20]}"
        )
    return np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))


def encode_targets(raw: RawData, official: bool, source: str) -> tuple[Optional[list[str]], np.ndarray, Optional[np.ndarray]]:
    """(class names, training targets, official test targets): int64 codes 0..C-1 with one mapping for every
    split, or float64 regression targets."""
    if raw.task == "classification":
        if np.asarray(raw.y).ndim != 1:
            raise UserInputError(f"{source}: class labels y must be 1-D (one per sample), got shape {np.shape(raw.y)}")
        classes = [str(c) for c in raw.classes] if raw.classes else _natural_sorted(sorted({str(v) for v in raw.y}))
        index = {c: i for i, c in enumerate(classes)}
        y_test = _encode(raw.test_y, index, source, "official test") if official else None  # type: ignore[arg-type]
        return classes, _encode(raw.y, index, source, "training"), y_test
    for part, yy in (("y", raw.y), ("test_y", raw.test_y if official else None)):
        if yy is not None and (np.asarray(yy).dtype.kind not in "iuf" or np.asarray(yy).ndim not in (1, 2)):
            raise UserInputError(
                f"{source}: regression targets '{part}' must be numbers of shape (n,) or (n, k), "
                f"got dtype {np.asarray(yy).dtype} and shape {np.shape(yy)}"
            )
    y_test = np.asarray(raw.test_y, dtype=np.float64) if official else None
    return None, np.asarray(raw.y, dtype=np.float64), y_test
