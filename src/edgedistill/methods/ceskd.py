"""CES-KD: curriculum-based expert selection (Amara, Ziaeefard, Meyer, Gross, Clark, arXiv 2209.07606).

Several experts (a teacher and teaching assistants of decreasing capacity); every training sample is taught
by ONE expert, chosen by how hard the sample is: easy samples by a small expert, hard ones by a large one.

    L = the recipe's terms with expert E(i)'s logits of row i as ``teacher_logits``; default
        mean_i [ 0.1 CE(z_s,i, y_i) + 0.9 T^2 KL(softmax(z_E(i),i / T) || softmax(z_s,i / T)) ],  T = 4

The regime only changes where the soft target comes from: row by row, the selected expert's logits
(``selected_logits``), so a ``kd`` term computes exactly ``selected_kd``, and the recipe weights the losses.

The abstract fixes only that (one expert per input, chosen by a difficulty-driven "stratified teaching
curriculum", gradually guided). The paper's difficulty measure, strata and schedule are UNKNOWN
(no official code). OUR choices:

* Experts: the recipe's ``teachers`` (or the names in ``experts``), ordered by parameter count, smallest
  first (ties keep list order).
* Difficulty of training sample i: d_i = 1 - p(y_i | x_i) under the largest expert's architecture (T = 1),
  computed once in ``setup`` (inputs are not augmented). ``difficulty: cross_fitted`` (default): the training
  rows are split into ``folds`` = K folds (drawn with the run seed); K fresh copies of the largest expert's
  architecture, each trained on labels on K-1 folds (the expert's own ``train`` settings, constant learning rate,
  or ``difficulty_epochs``), predict the fold they did not see. The largest expert itself has seen every
  training row and is nearly always confident on them, so its in-sample p(y_i | x_i) hardly ranks anything.
  Cost: K extra trainings of the largest expert, each on (K-1)/K of the rows. ``difficulty: in_sample`` is the
  former form: the trained largest expert's own predictions on its training rows.
* Strata: K equal-count bins of the difficulty rank (``strata``, default K = number of experts E); stratum
  j (0 = easiest) is taught in the end by expert round(j (E - 1) / (K - 1)), so the easiest stratum gets the
  smallest expert and the hardest the largest.
* Schedule ``gradual`` (default): a curriculum over epochs. The largest expert allowed at epoch e is
  level(e) = min(E - 1, floor(E e / (ramp * epochs))), and stratum j uses min(final expert of j, level(e)):
  in the first epochs everyone learns from the smallest expert, then the harder strata move up to larger
  experts one level at a time until, after ``ramp`` of training, each stratum has its final expert.
  Why: the student first imitates the target closest to its own capacity, and the hard samples, where the
  small experts are least reliable, get the strongest expert once the student can follow it.
  ``static`` uses the final assignment from the first epoch.
Assignment is per epoch (constant within one), so the per-epoch counts in ``describe()`` are exact.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import torch
from pydantic import Field, field_validator
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kd
from edgedistill.config import TrainConfig
from edgedistill.methods.base import Step
from edgedistill.methods.label_fit import fit_on_labels, fresh_copy, predict
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.methods.terms import HINTON_TERMS, TermsMethod
from edgedistill.params import Params
from edgedistill.models.size import count_params
from edgedistill.registry import METHODS



def stratify(difficulty: torch.Tensor, n_strata: int) -> torch.Tensor:
    """Stratum (0 = easiest) of every sample: K equal-count bins of the difficulty rank (ties by row order)."""
    order = torch.sort(difficulty, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return torch.div(rank * n_strata, len(order), rounding_mode="floor")


def final_expert(strata: torch.Tensor, n_strata: int, n_experts: int) -> torch.Tensor:
    """Expert (0 = smallest) that teaches stratum j once the curriculum is over: round(j (E-1) / (K-1))."""
    return torch.div(strata * 2 * (n_experts - 1) + (n_strata - 1), 2 * (n_strata - 1), rounding_mode="floor")


def fold_ids(n: int, folds: int, generator: torch.Generator) -> torch.Tensor:
    """Fold (0..K-1) of each of ``n`` rows: a random permutation cut into K near-equal parts."""
    if n < folds:
        raise UserInputError(f"method.params.folds: {folds} folds need at least {folds} training rows, got {n}")
    fold = torch.empty(n, dtype=torch.long)
    fold[torch.randperm(n, generator=generator)] = torch.arange(n) * folds // n
    return fold


def expert_level(epoch: int, epochs: int, n_experts: int, schedule: str, ramp: float) -> int:
    """The largest expert any sample may use at ``epoch`` (0-based)."""
    if schedule == "static" or ramp <= 0:
        return n_experts - 1
    return min(n_experts - 1, int(n_experts * epoch // (ramp * epochs)))


def selected_logits(expert_logits: torch.Tensor, selection: torch.Tensor) -> torch.Tensor:
    """Row i of expert sel_i: (B, C) from ``expert_logits`` (E, B, C) and ``selection`` (B,)."""
    return expert_logits[selection, torch.arange(len(selection), device=selection.device)]


def selected_kd(student_logits: torch.Tensor, expert_logits: torch.Tensor, selection: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 mean_i KL(softmax(z_{sel_i}, i / T) || softmax(z_s,i / T)); ``expert_logits`` (E, B, C), ``selection`` (B,)."""
    return kd(student_logits, selected_logits(expert_logits, selection), temperature)


class CESKDParams(Params):
    experts: Optional[list[str]] = Field(None, description="names of the teachers used as experts (default: every "
                                                          "teacher); ordered by parameter count, smallest first")
    strata: Optional[int] = Field(None, ge=2, le=10_000, description="number of equal-count difficulty strata (default: the "
                                                          "number of experts)")
    schedule: Literal["gradual", "static"] = Field(
        "gradual", description="gradual: small-to-large expert curriculum over the epochs; static: the final "
                               "assignment from the first epoch")
    ramp: float = Field(0.5, ge=0.0, le=1.0, description="fraction of training after which every stratum has its "
                                                        "final expert (gradual schedule)")
    difficulty: Literal["cross_fitted", "in_sample"] = Field(
        "cross_fitted", description="cross_fitted: held-out predictions of K copies of the largest expert's "
                                    "architecture, each trained on K-1 folds; in_sample: the largest expert's own "
                                    "predictions on its training rows (the former form)")
    folds: int = Field(3, ge=2, le=20, description="folds K of the cross-fitted difficulty (K extra trainings of the "
                                                   "largest expert's architecture)")
    difficulty_epochs: Optional[int] = Field(None, ge=1, le=100_000, description="epochs of each cross-fitted copy "
                                             "(default: the largest expert's train.epochs)")

    @field_validator("experts")
    @classmethod
    def _distinct(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"a list of distinct teacher names, got {value!r}")
        return value


@METHODS.register("ceskd")
class CESKD(TermsMethod):
    """Per-sample expert selection by difficulty stratum, with an optional small-to-large curriculum; the selected
    experts' logits are the terms' soft target (default 0.1 CE + 0.9 KD, T = 4)."""

    Params = CESKDParams
    task = "classification"
    task_why = "ranks samples by p(true class)"
    default_terms = HINTON_TERMS
    # The experts' outputs are cached once on clean inputs and the CE reads integer labels: no augmented teacher
    # input, no mixed labels.
    augmentation_support = frozenset()

    def __init__(self, student: nn.Module, info: DataInfo, teachers: Sequence[TeacherNet],
                 terms: Sequence[TermConfig] = (), train: Optional[TensorData] = None, **params: Any) -> None:
        # Parsed here as well (the base class parses again): the experts are chosen before the base is built.
        experts = self.Params.parse(params, "method.params", what=f"method '{self.method_name()}'").experts
        picked = {t.name for t in Teachers.named(teachers, experts or [], "method.params.experts")}
        chosen = [t for t in teachers if experts is None or t.name in picked]  # recipe order: ties in size keep it
        if len(chosen) < 2:
            key = "method.params.experts" if experts is not None else "teachers"
            raise UserInputError(f"{key}: ceskd needs at least two experts (a teacher and an assistant), got {len(chosen)}")
        group = Teachers(chosen, info, self.method_name(), minimum=2)
        sizes = [count_params(t.model) for t in group]
        for t, n in zip(group, sizes):
            if n is None:
                raise UserInputError(f"teachers: ceskd orders its experts by size, and teacher '{t.name}' "
                                     f"({t.model.edgedistill_outputs_only}) has no known size; give it as a model")
        group.reorder(sorted(range(len(sizes)), key=sizes.__getitem__))  # stable: equal sizes keep list order
        super().__init__(student, info, group, terms, train, **params)  # self.teacher: the largest expert
        self.experts = self.teachers.names
        self.sizes = sorted(sizes)
        self.n_strata = len(chosen) if self.params.strata is None else self.params.strata
        self._logits: Optional[torch.Tensor] = None  # (E, N, C) expert logits on the training rows
        self._final: Optional[torch.Tensor] = None  # (N,) final expert per training row
        self._strata: Optional[torch.Tensor] = None
        self._taught: dict[int, list[int]] = {}  # epoch (1-based) -> samples each expert taught
        self._seed = torch.initial_seed()  # build_network seeded the global RNG with the run seed just before
        self.cross_fit: dict[str, Any] = {}

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self.teachers.place(device)
        self.teachers.cache(train, device)  # frozen experts on clean inputs: the same logits every epoch
        self._logits = self.teachers.cached_stack()
        y = train.y.to(device)
        logits = self._logits[-1] if self.params.difficulty == "in_sample" else self.cross_fitted_logits(train, device)
        p_true = torch.softmax(logits.double(), dim=1)[torch.arange(len(y), device=device), y]
        self._strata = stratify(1.0 - p_true, self.n_strata)
        self._final = final_expert(self._strata, self.n_strata, len(self.teachers))

    def cross_fitted_logits(self, train: TensorData, device: torch.device) -> torch.Tensor:
        """(N, C) held-out logits: fold k's rows predicted by a fresh copy of the largest expert's architecture
        trained on labels on the other folds. Drawn from a private generator seeded by the run seed (the
        student's RNG stream is untouched; a resumed run recomputes the same folds and fits)."""
        largest = self.teachers[-1]
        x, y = train.tensor(largest.view).to(device), train.y.to(device)
        cfg = largest.config.train
        if self.params.difficulty_epochs is not None:
            cfg = cfg.model_copy(update={"epochs": self.params.difficulty_epochs})
        cfg = TrainConfig.model_validate({**cfg.model_dump(), "schedule": "constant"})
        out = torch.empty(len(y), self.info.n_outputs, device=device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed)
            g = torch.Generator().manual_seed(self._seed)
            fold = fold_ids(len(y), self.params.folds, g).to(device)
            for k in range(self.params.folds):
                held = fold == k
                copy = fit_on_labels(fresh_copy(largest.model).to(device), x[~held], y[~held], cfg, True, g)
                out[held] = predict(copy, x[held]).to(out.dtype)
        self.cross_fit = {"folds": self.params.folds, "epochs": cfg.epochs,
                          "held_out_acc": round(float((out.argmax(1) == y).float().mean()), 4),
                          "in_sample_acc": round(float((self._logits[-1].argmax(1) == y).float().mean()), 4)}  # type: ignore[index]
        return out

    def selection(self, index: torch.Tensor, step: Step) -> torch.Tensor:
        """The expert (0 = smallest) teaching each of the rows ``index`` at this step."""
        level = expert_level(step.epoch, step.epochs, len(self.teachers), self.params.schedule, self.params.ramp)
        return self._final[index].clamp(max=level)  # type: ignore[index]

    def teacher_logits(self, batch: Batch, step: Optional[Step], use_cache: bool = True) -> torch.Tensor:
        """Row i's logits from the expert teaching it at this step (counted in ``taught_per_epoch``); in the shape
        probe before training (``step`` None), the largest expert's."""
        if step is None:
            return self.teachers.logits(batch) if use_cache else self.teachers.run(batch)
        index = batch["index"].to(self._logits.device)  # type: ignore[union-attr]
        sel = self.selection(index, step)
        counts = torch.bincount(sel, minlength=len(self.teachers)).tolist()
        done = self._taught.setdefault(step.epoch + 1, [0] * len(self.teachers))
        self._taught[step.epoch + 1] = [a + b for a, b in zip(done, counts)]
        target = (self._logits[:, index] if use_cache  # type: ignore[index]
                  else torch.stack([self.teachers.run(batch, k) for k in range(len(self.teachers))]))
        return selected_logits(target, sel)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {**super().describe(), "experts_small_to_large": dict(zip(self.experts, self.sizes)),
                               "strata": self.n_strata, "difficulty": self.params.difficulty}
        if self.cross_fit:
            out["cross_fit"] = self.cross_fit
        if self._final is not None:
            out["stratum_sizes"] = torch.bincount(self._strata, minlength=self.n_strata).tolist()  # type: ignore[arg-type]
            out["final_assignment"] = torch.bincount(self._final, minlength=len(self.teachers)).tolist()
        out["taught_per_epoch"] = self._taught  # actual samples per expert (drop_last rows excluded); since last start
        return out
