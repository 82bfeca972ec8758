"""RoS-KD-style stochastic multi-teacher distillation with a weight-averaged (EMA) student.

Source: Jaiswal et al., "RoS-KD: A Robust Stochastic Knowledge Distillation Approach for Noisy Medical
Imaging", arXiv 2210.08388. What the abstract verifies: several
teachers, each trained on an overlapping subset of the (noisy) training data, and a "stochastic" student
that learns "a smooth" manifold. Everything else is UNKNOWN (no official code). This module implements the
spec's flagged prototype reading, NOT a verified paper formula:

    k_t ~ Uniform{1..K}, drawn once per optimisation step t (seeded by the step, so a resume is exact)
    L_t = the recipe's terms with teacher k_t's logits as ``teacher_logits``; default
          0.1 CE(z_s, y) + 0.9 T^2 KL(softmax(z_k_t / T) || softmax(z_s / T)), T = 4
    theta_bar <- m theta_bar + (1 - m) theta     after every step (buffers, e.g. BN statistics, copied),
                                                 bias-corrected as Adam does (``debiased_momentum``)

The EMA copy ``networks["ema"]`` (no gradients, checkpointed) is the deliverable; the raw student is reported
as an extra row. The teachers' subsets come from the recipe (``teachers[i].train_subset`` + ``seed``).
Our choices where the paper is UNKNOWN (docs/methods/roskd.md, "What we chose"): subsets set by the recipe
(0.7 in recipes/roskd.yaml), one uniform draw per step (not per sample), m = 0.99, the EMA bias-corrected and
updated from step 0 (``ema_start_step`` delays it), buffers copied rather than averaged, Hinton KD with 0.1 CE + 0.9 KD at T = 4.
"""
from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import torch
from pydantic import Field
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.methods.base import Step
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.methods.terms import HINTON_TERMS, TermsMethod, TermsParams
from edgedistill.registry import METHODS



def debiased_momentum(m: float, n: int) -> float:
    """The momentum of update ``n`` (1-based; <= 0: not averaging yet, a copy) that makes ``ema_update`` keep the
    bias-corrected average S_n / (1 - m^n) of the weights θ_1..θ_n, where S_n = m S_(n-1) + (1 - m) θ_n and
    S_0 = 0 (Adam's correction). A plain EMA started at the initial weights keeps m^n of them: 0.99^200 = 13 %
    after 100 epochs of 2 steps on a 38-window set, which left that student near its random start."""
    if n <= 1 or m == 0.0:
        return 0.0
    return m * (1.0 - m ** (n - 1)) / (1.0 - m ** n)


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, momentum: float) -> None:
    """theta_bar <- m theta_bar + (1 - m) theta for parameters; buffers (BN running statistics) are copied."""
    pairs = list(zip(average.parameters(), model.parameters()))
    if len(pairs) != len(list(model.parameters())):
        raise ValueError("ema_update: the average and the model have different parameter lists")
    for p_bar, p in pairs:
        p_bar.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)
    for b_bar, b in zip(average.buffers(), model.buffers()):
        b_bar.copy_(b)


def draw_teacher(n_teachers: int, step: int, seed: int) -> int:
    """The teacher of step ``step``: uniform, from a generator seeded by (seed, step) alone, so resuming is exact."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return int(torch.randint(n_teachers, (1,), generator=g))


class RoSKDParams(TermsParams):
    ema_momentum: float = Field(0.99, ge=0.0, lt=1.0, description="momentum m of the (bias-corrected) weight average")
    ema_start_step: int = Field(0, ge=0, description="optimisation step from which the average is taken (before it, "
                                                     "the average follows the student)")
    sample_seed: Optional[int] = Field(None, ge=0, le=2**32 - 1, description="seed of the per-step teacher draw; default the run seed")


@METHODS.register("roskd")
class RoSKD(TermsMethod):
    """One teacher drawn at random per step as the terms' soft target (default Hinton KD); the EMA of the student
    is the deliverable."""

    Params = RoSKDParams
    task = "classification"
    default_terms = HINTON_TERMS
    deliverable_key = "ema"

    def __init__(self, student: nn.Module, info: DataInfo, teachers: Sequence[TeacherNet],
                 terms: Sequence[TermConfig] = (), train: Optional[TensorData] = None, **params: Any) -> None:
        group = Teachers(teachers, info, self.method_name(), minimum=2)
        super().__init__(student, info, group, terms, train, **params)
        # Default: the run seed (the runner seeds torch with it right before building the method), so each
        # seed of a recipe gets its own teacher sequence and a resumed run draws the same one again.
        seed = self.params.sample_seed
        self.sample_seed = seed if seed is not None else torch.initial_seed() % 2**31
        ema = copy.deepcopy(student)
        ema.requires_grad_(False)  # in `networks` so it checkpoints; the optimizer skips it (no grad)
        self.networks["ema"] = ema
        self.last_teacher: Optional[int] = None

    def teacher_logits(self, batch: Batch, step: Optional[Step], use_cache: bool = True) -> torch.Tensor:
        """The logits of this step's teacher (the last one in the shape probe before training)."""
        k = draw_teacher(len(self.teachers), step.step, self.sample_seed) if step is not None else len(self.teachers) - 1
        self.last_teacher = k
        return self.teachers.logits(batch, k) if use_cache else self.teachers.run(batch, k)

    def after_step(self, step: Step) -> None:
        # Before ema_start_step the average just follows the student; from then on it is the bias-corrected EMA
        # of the weights after each step (below), so the initial weights never linger in it.
        n = step.step - self.params.ema_start_step + 1
        ema_update(self.networks["ema"], self.networks["student"], debiased_momentum(self.params.ema_momentum, n))

    def evaluated(self) -> dict[str, nn.Module]:
        return {"student without EMA": self.networks["student"]}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "teachers": self.teachers.names, "sample_seed": self.sample_seed,
                "train_subsets": [t.config.train_subset for t in self.teachers]}
