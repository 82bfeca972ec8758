"""Shape checks shared by the loss functions: one clear message naming the tensors."""
from __future__ import annotations

import torch

from edgedistill.errors import UserInputError


def same_shape(loss: str, a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise UserInputError(
            f"{loss}: {a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; they must match"
        )


def same_batch(loss: str, a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    """Paired student/teacher tensors must hold the same samples; their widths may differ."""
    if a.shape[0] != b.shape[0]:
        raise UserInputError(
            f"{loss}: {a_name} has {a.shape[0]} samples but {b_name} has {b.shape[0]}; the batch sizes must match"
        )


def min_dims(loss: str, name: str, t: torch.Tensor, dims: int, what: str) -> None:
    if t.dim() < dims:
        raise UserInputError(f"{loss}: {name} must be {what}, got shape {tuple(t.shape)}")


def positive(loss: str, name: str, value: float) -> None:
    """A number > 0 (a recipe may hand a loss null, text or a list: refused by name, never compared)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserInputError(f"{loss}: {name} must be > 0, got {str(value)[:60] if value is not None else 'null'}")


def classes_last(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *rest) -> (N * prod(rest), C): every position becomes a row, so losses are dimension-agnostic."""
    if t.dim() == 2:
        return t
    return t.movedim(1, -1).reshape(-1, t.shape[1])
