"""Teacher-free KD with a manually designed (virtual) teacher: Tf-KD_reg.

Yuan, Tay, Li, Wang, Feng, "Revisiting Knowledge Distillation via Label Smoothing Regularization", CVPR 2020,
arXiv 1909.11723 ("Teacher-free KD"). The virtual teacher puts probability ``a`` on the
true class and spreads the rest uniformly::

    p^d_c = a if c = y else (1 - a) / (C - 1)
    L = the recipe's terms with log p^d as ``teacher_logits``; default (alpha = 0.1, T = 20)
        (1 - alpha) * CE(z, y) + alpha * T^2 * mean_i KL(p^d_T,i || softmax(z_i / T))
    p^d_T = softmax(log p^d / T)          (the virtual teacher's distribution at temperature T)

The regime only supplies the virtual teacher: a ``kd`` term at temperature T reads softmax(log p^d / T) = p^d_T,
so the recipe weights CE and KD as in every other regime.

Our form, not the official code's (``my_loss_function.loss_kd_regularization``), which computes
``nn.KLDivLoss()(log_softmax(z), softmax(p^d / T)) * multiplier``: (i) it applies softmax to an already
normalised distribution divided by T, which for its T = 20 / 40 is almost uniform (e.g. C = 100, a = 0.99,
T = 20: the true class gets 1.05 %, the others 1.00 %), so it acts as a pull towards the uniform
distribution; (ii) ``nn.KLDivLoss()`` averages over B*C elements (batch-mean KL / C), compensated by the
per-experiment ``multiplier``; (iii) the student side is at T = 1 and there is no T^2. We keep the paper's
notion of "the virtual teacher at temperature T" as the teacher whose logits are log p^d (at T = 1 the target
is p^d itself) and the batch-mean KL with Hinton's T^2, so the weight means the same as in ``kd``.

Tf-KD_self (a trained copy of the student as its teacher) is ``born_again`` with ``generations: 1`` and
the terms ``[{loss: ce, weight: 1-alpha}, {loss: kd, weight: alpha, temperature: T}]``; it has no code here.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from pydantic import Field
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.virtual import soften, virtual_teacher
from edgedistill.methods.base import Step
from edgedistill.methods.teachers import Teachers
from edgedistill.methods.terms import TermsMethod
from edgedistill.params import Params
from edgedistill.registry import METHODS

__all__ = ["TeacherFreeKD", "TfKDParams", "soften", "virtual_teacher"]


#: Tf-KD_reg's loss with the paper's CIFAR settings alpha = 0.1, T = 20: 0.9 CE + 0.1 T^2 KL(p^d_T || p_T).
TFKD_TERMS = (TermConfig(loss="ce", weight=0.9), TermConfig(loss="kd", weight=0.1, temperature=20.0))


class TfKDParams(Params):
    correct_prob: float = Field(0.99, ge=0.0, le=1.0, description="the virtual teacher's probability a on the true "
                                                                 "class, at least 1/C (the rest spread uniformly)")


@METHODS.register("tfkd")
class TeacherFreeKD(TermsMethod):
    """The student alone with a label-derived virtual teacher as the terms' soft target (default 0.9 CE + 0.1 KD,
    T = 20)."""

    Params = TfKDParams
    task = "classification"
    task_why = "builds its virtual teacher from class labels"
    default_terms = TFKD_TERMS
    virtual_teacher = True
    augmentation_support = frozenset()  # the virtual teacher is built from integer labels: no mixed labels
    trains_own_teacher = "its teacher is built from the labels"

    def __init__(self, student: nn.Module, info: DataInfo, terms: Sequence[TermConfig] = (),
                 train: Optional[TensorData] = None, **params: Any) -> None:
        super().__init__(student, info, Teachers([], info, self.method_name(), minimum=0), terms, train, **params)
        c = info.n_outputs
        if self.params.correct_prob < 1.0 / c:  # a < 1/C would make the virtual teacher prefer the wrong classes
            raise UserInputError(f"method.params.correct_prob: expected a number in [1/C, 1] = [{1 / c:.3g}, 1], "
                                 f"got {self.params.correct_prob!r}")

    def teacher_logits(self, batch: Batch, step: Optional[Step], use_cache: bool = True) -> torch.Tensor:
        """log p^d, the logits of the virtual teacher (a = 1 leaves zeros: their log is clamped to the dtype's
        lowest finite value, which softmax still maps to 0)."""
        dtype = batch["x"].dtype if batch["x"].is_floating_point() else torch.get_default_dtype()
        p = virtual_teacher(batch["y"], self.info.n_outputs, self.params.correct_prob, dtype=dtype)
        return torch.log(p).clamp_min(torch.finfo(dtype).min)
