"""Checkpoints: weights-only files written atomically, loaded with ``weights_only=True``.

``best.pt`` and the deliverable hold only network state dicts. ``last.pt`` also holds what an exact
resume needs: optimizer states, the epoch, the best score so far and the RNG states (stored as tensors
and plain numbers so that ``weights_only`` loading accepts them).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgedistill.errors import UserInputError
from edgedistill.io import atomic_write


def save(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(Path(path), lambda fh: torch.save(obj, fh), mode="wb")


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise UserInputError(f"checkpoint '{path}' cannot be read as a weights-only torch file: {exc}") from None


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, Any], source: str) -> None:
    """Load weights, turning a key/shape mismatch into one line naming the file and the first problem."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:3]) or first[0]
        raise UserInputError(f"{source}: weights do not fit {type(model).__name__}: {detail}") from None
