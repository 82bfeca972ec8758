"""The label-derived virtual teacher of Tf-KD_reg (Yuan et al., CVPR 2020), shared by the teacher-free regimes
(``tfkd``, ``tasked``): its distribution p^d and that distribution at a temperature."""
from __future__ import annotations

from typing import Optional

import torch

from edgedistill.errors import UserInputError


def virtual_teacher(target: torch.Tensor, n_classes: int, a: float = 0.99, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """(N, C) distribution p^d: ``a`` on each row's class ``target[i]``, ``(1 - a) / (C - 1)`` on the others."""
    if n_classes < 2:
        raise UserInputError(f"virtual_teacher: needs at least 2 classes, got {n_classes}")
    if not 0.0 < a <= 1.0:
        raise UserInputError(f"virtual_teacher: a must be in (0, 1], got {a!r}")
    p = torch.full((len(target), n_classes), (1.0 - a) / (n_classes - 1), dtype=dtype or torch.get_default_dtype(),
                   device=target.device)
    return p.scatter_(1, target.long().view(-1, 1), a)


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log p / T): the distribution of a teacher whose logits are log p, at temperature T (rows of 0
    stay 0). At T = 1 it returns p."""
    return torch.softmax(torch.log(probs) / temperature, dim=1)
