"""Born-Again Networks: a chain of same-architecture generations, each distilled from the one before.

Furlanello, Lipton, Tschannen, Itti, Anandkumar, "Born Again Neural Networks", ICML 2018, arXiv 1805.04770;
the multi-generation self-distillation procedure studied in Pham et al., "Revisiting Self-Distillation",
arXiv 2206.08491::

    gen0      = the student's architecture trained on the labels
    gen k     = trained from scratch to match gen k-1 (frozen):  L_k = -sum_c p^(k-1)_c log p^(k)_c   (T = 1)
    student   = gen G, trained from gen G-1 by this method's own stage: the last generation is the deliverable
    BAN ensemble = mean of the softmax outputs of gen0 .. gen G (reported, never shipped)

The soft cross-entropy of BAN equals KL(p^(k-1) || p^(k)) + H(p^(k-1)); the entropy of the frozen teacher
does not depend on the student, so both have the same gradient. The default generation loss is therefore
the registered ``kd`` term at T = 1 with weight 1 (``kd`` = T^2 * batch-mean KL). ``method.terms`` replaces
it for every generation (e.g. BAN + labels, or Tf-KD_self's ``(1-a) CE + a T^2 KL``).

The runner trains and caches gen0 .. gen G-1 (``teacher_plan``); each run seed has its own chain, seeded
``generation_seed(seed, k)``, so the seeds of a 3-seed report are three independent chains.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field
from torch import nn

from edgedistill.config import Recipe, TeacherConfig, TermConfig
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods.terms import TermsMethod, TermsParams
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.models.ensemble import ProbabilityEnsemble
from edgedistill.registry import METHODS

#: BAN's loss: soft cross-entropy to the previous generation at T = 1 (same gradient as KD at T = 1).
DEFAULT_TERMS = (TermConfig(loss="kd", weight=1.0, temperature=1.0),)


def generation_seed(seed: int, k: int) -> int:
    """Seed of generation ``k`` in the chain of run seed ``seed``: distinct for every (seed, k) with k < 1000,
    and never equal to a run seed in [0, 999], so gen0 is not a copy of the student-alone baseline."""
    return 1000 * (seed + 1) + k


class BornAgainParams(TermsParams):
    generations: int = Field(2, ge=1, le=20, description="earlier generations gen0 .. gen G-1 the runner trains; the "
                                                  "student is gen G, distilled from gen G-1")


@METHODS.register("born_again")
class BornAgain(TermsMethod):
    """The last of ``generations`` born-again generations; earlier ones are trained by the runner (``teacher_plan``)."""

    Params = BornAgainParams
    default_terms = DEFAULT_TERMS

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        teachers: list[TeacherNet],
        terms: list[TermConfig],
        train: Optional[TensorData] = None,
        **params: Any,
    ) -> None:
        # Parsed here as well (the base class parses again): the count is checked before the last one is bound.
        g = self.Params.parse(params, "method.params", what=f"method '{self.method_name()}'").generations
        if len(teachers) != g:
            raise UserInputError(f"method.params.generations: {g} earlier generation(s) expected from born_again's "
                                 f"teacher plan, got {len(teachers)}")
        # The loss reads the last generation (``self.teacher``); method.terms replaces BAN's loss when given.
        last = Teachers.single(teachers[-1], info, self.method_name())
        super().__init__(student, info, last, terms, train, **params)  # BAN's loss unless method.terms are given
        # gen0 .. gen G-1, frozen: only for the ensemble row.
        self.ancestors = Teachers(teachers, info, self.method_name(), minimum=g, maximum=g)

    @classmethod
    def teacher_plan(cls, recipe: Recipe, seed: int) -> list[TeacherConfig]:
        if recipe.teacher is not None or recipe.teachers:
            raise UserInputError(
                "teacher: born_again trains its own generations from the student's architecture; "
                "remove the 'teacher'/'teachers' section"
            )
        params = cls.Params.parse({**cls.default_params(recipe), **recipe.method.params}, "method.params",
                                  what=f"method '{cls.method_name()}'")
        terms = list(recipe.method.terms) or [t.model_copy() for t in cls.default_terms]
        plan = []
        for k in range(params.generations):
            spec = {
                **recipe.student.kwargs,
                "model": recipe.student.model,  # same architecture and knobs; from scratch (no checkpoint)
                "train": recipe.train,
                "seed": generation_seed(seed, k),
                "name": f"gen{k}",
                "distill_from": f"gen{k - 1}" if k else None,
                "terms": terms if k else [],
            }
            plan.append(TeacherConfig.model_validate(spec))
        return plan

    def setup(self, train: TensorData, device: Any, val: Optional[TensorData] = None) -> None:
        self.ancestors.place(device)
        super().setup(train, device, val)

    def evaluated(self) -> dict[str, nn.Module]:
        # Built on each call: the engine wraps the student after construction. Kept in eval mode so that
        # evaluation leaves the frozen generations in eval mode (predict() restores the mode it found).
        ens = ProbabilityEnsemble([*self.ancestors.models, self.networks["student"]])
        ens.train(False)
        return {f"BAN ensemble (gen0-gen{self.params.generations})": ens}
