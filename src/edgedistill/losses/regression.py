"""Regression losses: to the labels and to the teacher's outputs (batch mean of squared errors)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgedistill.losses._checks import same_shape


def mse(student_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error to the regression targets, averaged over every element."""
    target = target.reshape(student_out.shape) if target.numel() == student_out.numel() else target
    same_shape("mse", "student_out", student_out, "target", target)
    return F.mse_loss(student_out, target.to(student_out.dtype))


def mse_to_teacher(student_out: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """Mean squared error between student and (frozen) teacher outputs: regression KD."""
    same_shape("mse_to_teacher", "student_out", student_out, "teacher_out", teacher_out)
    return F.mse_loss(student_out, teacher_out.detach())
