"""SK-KD: similarity-keeping distillation from a teacher on a denser view (Huang, Chen, Wei, arXiv 2212.03329).

X.-Y. Huang, S.-Y. Chen, C.-S. Wei, "Enhancing Low-Density EEG-Based Brain-Computer Interfacing with
Similarity-Keeping Knowledge Distillation", IEEE TETCI 8 (2024) 1156-1166.
What the paper establishes: a teacher pre-trained on high-density EEG, a student on a low-density
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

from typing import Any, Literal, Optional

from pydantic import Field, field_validator
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods.terms import TermsMethod, TermsParams
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.registry import METHODS

# method.params that shape the default terms; with explicit method.terms they would be silently ignored.
DEFAULT_TERM_PARAMS = ("form", "tap", "ce_weight", "kd_weight", "sk_weight", "temperature")


class SKKDParams(TermsParams):
    form: Literal["cosine", "sp"] = Field("cosine", description="similarity-keeping form: cosine rows of the B x B "
                                                                "similarities, or SP's row-normalised Frobenius form")
    tap: str = Field("emb", description="the tap both networks' similarity is computed on (pooled embedding)")
    ce_weight: float = Field(0.1, ge=0.0, description="weight of the label CE term (0 drops it)")
    kd_weight: float = Field(0.9, ge=0.0, description="weight of the KD term (0 drops it)")
    sk_weight: float = Field(1.0, description="weight of the similarity-keeping term, > 0 (without it, use method "
                                              "'offline')")
    temperature: float = Field(4.0, gt=0.0, description="temperature T of the KD term")

    @field_validator("sk_weight")
    @classmethod
    def _keeps_similarity(cls, value: float) -> float:
        if not value > 0:
            raise ValueError("must be > 0 (without similarity keeping use method 'offline')")
        return value


def default_terms(form: str = "cosine", tap: str = "emb", ce_weight: float = 0.1, kd_weight: float = 0.9,
                  sk_weight: float = 1.0, temperature: float = 4.0) -> list[TermConfig]:
    """CE + KD + similarity keeping on ``tap`` of both networks (a zero weight drops a term); the values are
    ``SKKDParams``' fields, checked there."""
    terms = [
        TermConfig(loss="ce", weight=ce_weight),
        TermConfig(loss="kd", weight=kd_weight, temperature=temperature),
        TermConfig(loss="similarity_keeping", weight=sk_weight, form=form, student_tap=tap, teacher_tap=tap),
    ]
    return [t for t in terms if t.weight > 0]


@METHODS.register("skkd")
class SKKD(TermsMethod):
    """Offline KD across views: teacher on a denser view, student on ``x``; CE + KD + similarity keeping."""

    Params = SKKDParams

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        teacher: Optional[nn.Module | TeacherNet],
        terms: Optional[list[TermConfig]] = None,
        teacher_view: str = "x",
        train: Optional[TensorData] = None,
        **params: Any,
    ) -> None:
        if teacher is None:
            raise UserInputError("teacher: method 'skkd' needs a teacher on a denser view (a 'teacher' section with 'view')")
        teachers = Teachers.single(teacher, info, self.method_name(), view=teacher_view)
        if teachers[-1].view == "x":
            raise UserInputError(
                "teacher.view: method 'skkd' distils across views, so the teacher must read a view the student does not "
                "see (e.g. data.views: {x: [0, 1, 2], full: [0, 1, 2, 3, 4, 5]} and teacher.view: full); it reads 'x', "
                "the student's own input: use method 'offline' for same-view distillation"
            )
        chosen = self.Params.parse(params, "method.params", what=f"method '{self.method_name()}'")
        if terms:
            clash = [k for k in DEFAULT_TERM_PARAMS if k in chosen.model_fields_set]
            if clash:
                raise UserInputError(
                    f"method.params.{clash[0]}: only shapes the default terms, but method.terms is given; "
                    f"set it in the terms themselves (or drop method.terms)"
                )
            if not any(t.loss == "similarity_keeping" for t in terms):
                raise UserInputError(
                    "method.terms: method 'skkd' needs a similarity_keeping term (or leave method.terms empty for the "
                    "default CE + KD + similarity keeping); without it use method 'offline'"
                )
        else:
            terms = default_terms(**chosen.model_dump(include=set(DEFAULT_TERM_PARAMS)))
        super().__init__(student, info, teachers, terms, train, **params)
        self.teacher_view = teachers[-1].view

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "teacher_view": self.teacher_view}
