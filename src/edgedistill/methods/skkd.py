"""SK-KD: similarity-keeping distillation from a teacher on a denser view (Huang, Chen, Wei, arXiv 2212.03329).

X.-Y. Huang, S.-Y. Chen, C.-S. Wei, "Enhancing Low-Density EEG-Based Brain-Computer Interfacing with
Similarity-Keeping Knowledge Distillation", IEEE TETCI 8 (2024) 1156-1166. Spec: shared/methods/asu-group.md
section 10. What the paper establishes: a teacher pre-trained on high-density EEG, a student on a low-density
montage (a subset of the electrodes), and a loss that makes the student keep the teacher's *inter-sample
similarity* within a mini-batch. Its formula, layer and weights are UNKNOWN (no code was found). Default here:

    L = w_ce CE(z_s, y) + w_kd T^2 mean_i KL(softmax(z_t,i/T) || softmax(z_s,i/T)) + w_sk L_SK(e_s, e_t)
    L_SK = 1 - (1/B) sum_i cos(S_s[i,:], S_t[i,:]),   S = n(E) n(E)^T   (B x B cosine similarities)

with E the pooled embeddings ("emb" tap) of the batch, z the logits, the teacher reading its own view (all
channels) and the student the subset "x". This is the spec's template (a) with the SK term of template (b)
(the same lab's "similarity-keeping" code, MUSE_EEG); ``form: sp`` gives template (a)'s SP-style term
||n_row(E_s E_s^T) - n_row(E_t E_t^T)||_F^2 / B^2 instead. Both are ``edgedistill.losses.similarity_keeping``.
Our choices (not the paper's): the cosine form, the pooled-embedding layer, w = 0.1 / 0.9 / 1.0 and T = 4.

The regime is ``OfflineDistillation`` restricted to the cross-view case: the teacher must read a view the
student does not (``teacher.view``), and ``method.terms`` defaults to the three terms above.
"""
from __future__ import annotations

from typing import Literal, Optional

from torch import nn

from edgedistill.config import Recipe, TermConfig, check_kwargs
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods.base import TeacherNet
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.registry import METHODS

FORMS = ("cosine", "sp")
# method.params that shape the default terms; with explicit method.terms they would be silently ignored.
DEFAULT_TERM_PARAMS = ("form", "tap", "ce_weight", "kd_weight", "sk_weight", "temperature")


def default_terms(form: str = "cosine", tap: str = "emb", ce_weight: float = 0.1, kd_weight: float = 0.9,
                  sk_weight: float = 1.0, temperature: float = 4.0) -> list[TermConfig]:
    """CE + KD + similarity keeping on ``tap`` of both networks (a zero weight drops a term)."""
    if form not in FORMS:
        raise UserInputError(f"method.params.form: expected one of {', '.join(FORMS)}, got {form!r}")
    for name, value in (("ce_weight", ce_weight), ("kd_weight", kd_weight), ("sk_weight", sk_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise UserInputError(f"method.params.{name}: must be a number >= 0, got {value!r}")
    if not sk_weight > 0:
        raise UserInputError("method.params.sk_weight: must be > 0 (without similarity keeping use method 'offline')")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise UserInputError(f"method.params.temperature: must be a number > 0, got {temperature!r}")
    terms = [
        TermConfig(loss="ce", weight=ce_weight),
        TermConfig(loss="kd", weight=kd_weight, temperature=temperature),
        TermConfig(loss="similarity_keeping", weight=sk_weight, form=form, student_tap=tap, teacher_tap=tap),
    ]
    return [t for t in terms if t.weight > 0]


@METHODS.register("skkd")
class SKKD(OfflineDistillation):
    """Offline KD across views: teacher on a denser view, student on ``x``; CE + KD + similarity keeping."""

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        teacher: Optional[nn.Module],
        terms: Optional[list[TermConfig]] = None,
        teacher_view: str = "x",
        cache_teacher: bool = True,
        train: Optional[TensorData] = None,
        form: Literal["cosine", "sp"] = "cosine",
        tap: str = "emb",
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        sk_weight: float = 1.0,
        temperature: float = 4.0,
    ) -> None:
        if teacher is None:
            raise UserInputError("teacher: method 'skkd' needs a teacher on a denser view (a 'teacher' section with 'view')")
        if teacher_view == "x":
            raise UserInputError(
                "teacher.view: method 'skkd' distils across views, so the teacher must read a view the student does not "
                "see (e.g. data.views: {x: [0, 1, 2], full: [0, 1, 2, 3, 4, 5]} and teacher.view: full); it reads 'x', "
                "the student's own input: use method 'offline' for same-view distillation"
            )
        if not terms:
            terms = default_terms(form, tap, ce_weight, kd_weight, sk_weight, temperature)
        elif not any(t.loss == "similarity_keeping" for t in terms):
            raise UserInputError(
                "method.terms: method 'skkd' needs a similarity_keeping term (or leave method.terms empty for the "
                "default CE + KD + similarity keeping); without it use method 'offline'"
            )
        super().__init__(student, info, teacher, terms, teacher_view=teacher_view, cache_teacher=cache_teacher, train=train)

    @classmethod
    def from_recipe(
        cls,
        recipe: Recipe,
        *,
        student: nn.Module,
        teacher: Optional[nn.Module],
        info: DataInfo,
        train: Optional[TensorData] = None,
        teachers: Optional[list[TeacherNet]] = None,
    ) -> "SKKD":
        params = recipe.method.params
        check_kwargs(cls.__init__, params, "method.params", cls.reserved, what="method 'skkd'")
        if recipe.method.terms:
            clash = [k for k in DEFAULT_TERM_PARAMS if k in params]
            if clash:
                raise UserInputError(
                    f"method.params.{clash[0]}: only shapes the default terms, but method.terms is given; "
                    f"set it in the terms themselves (or drop method.terms)"
                )
        view = teachers[-1].view if teachers else (recipe.teacher.view if recipe.teacher is not None else "x")
        return cls(student, info, teacher, list(recipe.method.terms), teacher_view=view, train=train, **params)

    def describe(self) -> dict:
        return {**super().describe(), "method": "skkd", "teacher_view": self.teacher_view}
