"""Pure loss functions on tensors, registered by name for recipes.

A loss's tensor arguments are named by role, and a method binds them by name: ``student_logits`` /
``student_out`` (the student's outputs), ``teacher_logits`` / ``teacher_out``, ``target`` (labels).
Every other argument is a hyperparameter a recipe term may set (``{loss: kd, temperature: 4}``).
"""
from __future__ import annotations

from edgedistill.losses.regression import mse, mse_to_teacher
from edgedistill.losses.response import ce, kd, reverse_kd
from edgedistill.registry import LOSSES

LOSSES.register("ce", task="classification")(ce)
LOSSES.register("kd", task="classification")(kd)
LOSSES.register("reverse_kd", task="classification")(reverse_kd)
LOSSES.register("mse", task="regression")(mse)
# Logit matching (Ba & Caruana) is the same function, so it is allowed on classification logits too.
LOSSES.register("mse_to_teacher")(mse_to_teacher)

__all__ = ["ce", "kd", "reverse_kd", "mse", "mse_to_teacher"]
