"""The contract between a dataset loader and the preparation pipeline.

A loader registered in ``DATASETS`` returns a ``RawData``: numpy arrays exactly as the source gives them
(labels may be strings), with an official test split where the source has one. Everything else
(windowing, label encoding, splits, normalisation, tensors) happens once, in ``prepare.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from edgedistill.data.dataset import Task


@dataclass
class RawData:
    x: np.ndarray  # (n, channels, length) or (n, channels, h, w), float
    y: np.ndarray  # (n,) labels of any hashable type, or (n,) / (n, k) float regression targets
    task: Task
    group: Optional[np.ndarray] = None  # (n,) subject ids (any hashable type)
    views: dict[str, np.ndarray] = field(default_factory=dict)  # privileged views, first dim n
    test_x: Optional[np.ndarray] = None  # official test split, if the source has one
    test_y: Optional[np.ndarray] = None
    test_group: Optional[np.ndarray] = None
    test_views: dict[str, np.ndarray] = field(default_factory=dict)
    classes: Optional[list[str]] = None  # label order; default: sorted unique labels
    name: str = "data"
