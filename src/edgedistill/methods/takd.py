"""TAKD: teacher-assistant knowledge distillation, T -> TA1 -> ... -> TAn -> student.

Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh, "Improved Knowledge Distillation via Teacher
Assistant", AAAI 2020, arXiv 1902.03393; official code imirzadeh/Teacher-Assistant-Knowledge-Distillation.
When the teacher-student capacity gap is large, intermediate-size assistants are put between them. Every
link is plain KD from the previous, frozen, best-on-validation network (paper eq. 3):

    L = (1 - lambda) * CE(z_s, y) + lambda * T^2 * mean_i KL(softmax(z_t,i / T) || softmax(z_s,i / T))

The chain is the recipe's ``teachers`` list: the first entry is trained on labels, every later one has
``distill_from: <the entry before it>`` and ``terms`` (the runner trains and caches each link as a KD student
of its predecessor), and the student is distilled from the last link with ``method.terms``. So this class
only checks that the list *is* a chain and otherwise is ``OfflineDistillation`` from the last link.

Paper vs official code: the code's ``nn.KLDivLoss()`` averages over batch x classes, i.e. its KD term is the
paper's batch-mean term divided by C (and its searched lambda is not transferable). We follow the paper
(batch-mean KL, ``edgedistill.losses.kd``); ``tests/test_method_takd.py`` checks both forms against the
spec's vector (lambda 0.5, T 4: code 0.269135, batch-mean 0.365510).
"""
from __future__ import annotations

from typing import Any, Optional

from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods.terms import TermsMethod
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.registry import METHODS


def check_chain(teachers: Optional[list[TeacherNet]]) -> None:
    """Raise ``UserInputError`` unless ``teachers`` is T -> TA1 -> ... : at least two entries, the first
    trained on labels, each later one distilled from the one before it."""
    if not teachers or len(teachers) < 2:
        found = len(teachers or [])
        raise UserInputError(
            f"teachers: method 'takd' needs a chain of at least two networks (a teacher, then an assistant with "
            f"'distill_from: teacher'), got {found}; for plain KD from one teacher use method 'offline'"
        )
    if teachers[0].config.distill_from is not None:
        raise UserInputError(
            f"teachers[0].distill_from: the first network of a takd chain is trained on labels, "
            f"but '{teachers[0].name}' distils from '{teachers[0].config.distill_from}'"
        )
    for i in range(1, len(teachers)):
        got, want = teachers[i].config.distill_from, teachers[i - 1].name
        if got != want:
            raise UserInputError(
                f"teachers[{i}].distill_from: takd needs a chain T -> TA1 -> ... -> student, so '{teachers[i].name}' "
                f"must distil from '{want}' (the entry before it), got {got!r}"
            )


@METHODS.register("takd")
class TAKD(TermsMethod):
    """Offline KD from the last link of a checked teacher-assistant chain (the links are trained by the runner)."""

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        teachers: list[TeacherNet],
        terms: list[TermConfig],
        train: Optional[TensorData] = None,
        **params: Any,
    ) -> None:
        check_chain(teachers)
        if not terms:
            raise UserInputError(
                "method.terms: takd distils the student from the last assistant with loss terms, e.g. "
                "[{loss: ce, weight: 0.1}, {loss: kd, weight: 0.9, temperature: 4}]"
            )
        super().__init__(student, info, Teachers.single(teachers[-1], info, self.method_name()), terms, train, **params)
        self.chain = tuple(t.name for t in teachers)  # the networks' names, teacher first

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "chain": [*self.chain, "student"]}
