"""Parameter counts and storage size: the numbers an edge target's flash/RAM budget is checked against."""
from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.parameter import UninitializedParameter

from edgedistill.errors import UserInputError


def _check_initialised(model: nn.Module) -> None:
    # Lazy layers have no shape until the first forward; counting them would silently report 0.
    if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        raise UserInputError(
            f"{type(model).__name__} has uninitialised lazy parameters; run one forward pass before sizing it"
        )


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; shared (tied) parameters are counted once."""
    _check_initialised(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def size_kb(model: nn.Module) -> float:
    """KiB of parameters plus buffers (BN statistics included) in the dtypes they are stored in."""
    _check_initialised(model)
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1024


def describe(model: nn.Module) -> dict[str, Any]:
    """Summary for reports: parameter counts and storage size (no name: callers add the zoo name)."""
    return {
        "params": count_params(model),
        "trainable_params": count_params(model, trainable_only=True),
        "size_kb": round(size_kb(model), 3),
    }
