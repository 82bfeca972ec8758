"""Data-free distillation: a generator and the student trained adversarially; the student never sees data.

Spec: shared/methods/others.md §12. Two regimes share one class and differ in their defaults:

* ``dfad`` -- DFAD (Fang et al. 2019): ``max_G min_S mean|t(G(z)) - s(G(z))|`` (L1 between logits).
* ``cudfkd`` -- CuDFKD (Li et al., arXiv 2208.13648), generator loss
  ``L_G = ent*H(mean softmax(t/T_H)) + adv*L_adv + oh*CE(t, argmax t) + bn*L_bn`` with DeepInversion's
  BatchNorm-statistics loss (teacher hooks), DAFL's one-hot and class-entropy terms, the agreement-masked KL
  adversarial term, an easy-to-hard curriculum on ``adv`` (0 until ``begin*E``, then rising each epoch to its
  final value at ``end*E``) and self-paced weights on the student side
  ``v = (1+e^-lam)/(1+e^(l-lam))`` with ``lam`` growing linearly over training.

Each loop step runs ``rounds`` rounds of {``g_steps`` generator steps; ``kd_steps`` student steps}, each on a
fresh batch of ``batch_size`` generated samples (the runner's loop over real batches only counts steps).

Our choices where the spec is UNKNOWN or does not fit (documented in docs/methods/cudfkd.md):
* self-paced weights are per sample (``l_i`` = mean |s_i - t_i|, ``L_S = mean_i v_i l_i``); the official code
  with its L1 loss computes one weight per batch (``spl: batch`` reproduces that);
* ``lam`` runs linearly from ``lam[0]`` to ``lam[1]`` over training instead of ``lam0 + alpha*n``;
* the curriculum is given by its final weight (``adv``) instead of a per-epoch increment;
* the runner's learning-rate schedule applies to both optimizers (the official generator lr is constant).

The method never reads ``batch["x"]`` or ``batch["y"]``.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

from edgedistill.config import Recipe, TrainConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.methods._data_free_common import (
    BatchNormStatistics, agreement_kl, class_entropy, curriculum_adv_weight, linear_ramp, logit_l1,
    one_hot_loss, per_sample_kd, per_sample_l1, self_paced_weight,
)
from edgedistill.methods.base import Method, Step, TeacherNet, freeze, make_optimizer, param_number
from edgedistill.models.generators import build_generator
from edgedistill.registry import METHODS


def _count(value: Any, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserInputError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    return value


def _choice(value: Any, key: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UserInputError(f"{key}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _pair(value: Any, key: str) -> Optional[tuple[float, float]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UserInputError(f"{key}: expected a pair [start, end] or null, got {value!r}")
    name = key.removeprefix("method.params.")
    return (param_number(f"{name}[0]", value[0], math.isfinite, "a finite number"),
            param_number(f"{name}[1]", value[1], math.isfinite, "a finite number"))


class DataFreeDistillation(Method):
    """Generator vs student, the frozen teacher as judge; see the module docstring for the losses."""

    manual_optimization = True
    reserved = ("student", "info", "teacher")
    name = "data_free"

    #: Every method.params key and its default (DFAD's settings; CuDFKD overrides some).
    defaults: dict[str, Any] = {
        "generator": None, "batch_size": 64, "generator_lr": 1e-3, "rounds": 1, "g_steps": 1, "kd_steps": 5,
        "bn": 0.0, "one_hot": 0.0, "entropy": 0.0, "entropy_temperature": 1.0,
        "adv_loss": "l1", "adv": 1.0, "adv_curriculum": None, "adv_temperature": 3.0,
        "student_loss": "l1", "kd_temperature": 4.0, "spl": "none", "lam": None,
    }

    def __init__(self, student: nn.Module, info: DataInfo, teacher: Optional[nn.Module], **params: Any) -> None:
        p = "method.params"
        for key in params:
            if key not in self.defaults:
                raise UserInputError(f"{p}.{key}: unknown parameter for method '{self.name}'; expected one of: "
                                     f"{', '.join(self.defaults)}")
        cfg = {**self.defaults, **params}
        generator, batch_size, generator_lr = cfg["generator"], cfg["batch_size"], cfg["generator_lr"]
        rounds, g_steps, kd_steps = cfg["rounds"], cfg["g_steps"], cfg["kd_steps"]
        bn, one_hot, entropy, entropy_temperature = cfg["bn"], cfg["one_hot"], cfg["entropy"], cfg["entropy_temperature"]
        adv_loss, adv, adv_curriculum, adv_temperature = cfg["adv_loss"], cfg["adv"], cfg["adv_curriculum"], cfg["adv_temperature"]
        student_loss, kd_temperature, spl, lam = cfg["student_loss"], cfg["kd_temperature"], cfg["spl"], cfg["lam"]
        super().__init__(student, info)
        if info.task != "classification":
            raise UserInputError(f"method.name: '{self.name}' distils class distributions and needs a classification "
                                 f"task, got task '{info.task}'")
        if teacher is None:
            raise UserInputError(f"teacher: method '{self.name}' needs a trained teacher (add a 'teacher' section)")
        self.teacher = freeze(teacher)
        self.batch_size = _count(batch_size, f"{p}.batch_size", 2)
        self.generator_lr = param_number("generator_lr", generator_lr, lambda v: v > 0, "a number > 0")
        self.rounds, self.g_steps = _count(rounds, f"{p}.rounds"), _count(g_steps, f"{p}.g_steps", 0)
        self.kd_steps = _count(kd_steps, f"{p}.kd_steps")
        self.w_bn = param_number("bn", bn, lambda v: v >= 0, "a number >= 0")
        self.w_oh = param_number("one_hot", one_hot, lambda v: v >= 0, "a number >= 0")
        self.w_ent = param_number("entropy", entropy, math.isfinite, "a finite number")
        self.t_ent = param_number("entropy_temperature", entropy_temperature, lambda v: v > 0, "a number > 0")
        self.adv_loss = _choice(adv_loss, f"{p}.adv_loss", ("l1", "kl"))
        self.w_adv = param_number("adv", adv, lambda v: v >= 0, "a number >= 0")
        self.adv_curriculum = _pair(adv_curriculum, f"{p}.adv_curriculum")
        if self.adv_curriculum is not None and not 0 <= self.adv_curriculum[0] < self.adv_curriculum[1] <= 1:
            raise UserInputError(f"{p}.adv_curriculum: expected [begin, end] fractions with 0 <= begin < end <= 1, "
                                 f"got {list(adv_curriculum or [])}")
        self.t_adv = param_number("adv_temperature", adv_temperature, lambda v: v > 0, "a number > 0")
        self.student_loss = _choice(student_loss, f"{p}.student_loss", ("l1", "kd"))
        self.t_kd = param_number("kd_temperature", kd_temperature, lambda v: v > 0, "a number > 0")
        self.spl = _choice(spl, f"{p}.spl", ("none", "sample", "batch"))
        self.lam = _pair(lam, f"{p}.lam")
        if self.spl != "none" and self.lam is None:
            raise UserInputError(f"{p}.lam: self-paced weights (spl: {self.spl}) need lam: [start, end]")
        shape = tuple(info.views.get("x", info.input_shape))
        self.networks["generator"] = build_generator(generator, shape, key=f"{p}.generator")
        self.nz = self.networks["generator"].nz
        self.bn_stats = BatchNormStatistics(self.teacher)
        self._optimizers: dict[str, torch.optim.Optimizer] = {}
        if self.w_bn > 0 and not self.bn_stats.layers:
            raise UserInputError(f"teacher: method '{self.name}' with {p}.bn > 0 matches the teacher's BatchNorm "
                                 f"statistics, but the teacher has no BatchNorm layers; set {p}.bn: 0")

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, student: nn.Module, teacher: Optional[nn.Module], info: DataInfo,
                    train: Optional[TensorData] = None, teachers: Optional[list[TeacherNet]] = None) -> "Method":
        # The generator makes inputs of view "x" only; a teacher on another view could not read them.
        if teachers and teachers[-1].view != "x":
            raise UserInputError(f"teacher.view: method '{recipe.method.name}' generates inputs shaped like view 'x' "
                                 f"for teacher and student; a teacher on view '{teachers[-1].view}' cannot read them")
        return super().from_recipe(recipe, student=student, teacher=teacher, info=info, train=train, teachers=teachers)

    # ------------------------------------------------------------------------------------------------
    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self.teacher.to(device)  # type: ignore[union-attr]
        freeze(self.teacher)  # type: ignore[arg-type]

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        student = [p for p in self.networks["student"].parameters() if p.requires_grad]
        gen = list(self.networks["generator"].parameters())
        # Student first: the runner logs the first optimizer's learning rate. Kept here too: ``training_step``
        # steps them itself (the runner only rescales their learning rates and checkpoints them).
        self._optimizers = {"student": make_optimizer(student, cfg),
                            "generator": torch.optim.Adam(gen, lr=self.generator_lr, betas=(0.9, 0.99))}
        return self._optimizers

    def adv_weight(self, step: Step) -> float:
        if self.adv_curriculum is None:
            return self.w_adv
        return curriculum_adv_weight(step.epoch, step.epochs, self.w_adv, *self.adv_curriculum)

    def _device(self) -> torch.device:
        return next(self.networks["student"].parameters()).device

    def _sample(self) -> torch.Tensor:
        z = torch.randn(self.batch_size, self.nz, device=self._device())
        return self.networks["generator"](z)

    def generator_terms(self, x: torch.Tensor, step: Step) -> dict[str, torch.Tensor]:
        """Raw generator loss terms on generated ``x`` (gradients reach x through both networks)."""
        student = self.networks["student"]
        with self.bn_stats:
            t = self.teacher(x)  # type: ignore[misc]
        s = student(x)
        terms: dict[str, torch.Tensor] = {}
        if self.adv_loss == "l1":
            terms["gen_adv"] = -logit_l1(s, t)  # the generator maximises the discrepancy
        else:
            terms["gen_adv"] = agreement_kl(s, t, self.t_adv)
        if self.w_bn > 0:
            terms["gen_bn"] = self.bn_stats.total()  # type: ignore[assignment]
        if self.w_oh > 0:
            terms["gen_one_hot"] = one_hot_loss(t)
        if self.w_ent != 0:
            terms["gen_entropy"] = class_entropy(t, self.t_ent)
        return terms

    def generator_loss(self, terms: dict[str, torch.Tensor], step: Step) -> torch.Tensor:
        weights = {"gen_adv": self.adv_weight(step), "gen_bn": self.w_bn, "gen_one_hot": self.w_oh,
                   "gen_entropy": self.w_ent}
        return sum(weights[k] * v for k, v in terms.items())  # type: ignore[return-value]

    def student_terms(self, x: torch.Tensor, step: Step) -> dict[str, torch.Tensor]:
        """The student's loss on generated ``x`` (no gradient to the generator), self-paced when configured."""
        with torch.no_grad():
            t = self.teacher(x)  # type: ignore[misc]
        s = self.networks["student"](x)
        per = per_sample_l1(s, t) if self.student_loss == "l1" else per_sample_kd(s, t, self.t_kd)
        if self.spl == "none":
            return {"student_kd": per.mean()}
        lam = linear_ramp(*self.lam, step.progress)  # type: ignore[misc]
        if self.spl == "sample":
            v = self_paced_weight(per, lam)
            return {"student_kd": (v * per).mean()}
        loss = per.mean()
        return {"student_kd": self_paced_weight(loss, lam) * loss}

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        # ``batch`` only paces the loop: the student is trained on generated samples alone.
        student = self.networks["student"]
        opt_s, opt_g = self._optimizers["student"], self._optimizers["generator"]
        sums: dict[str, torch.Tensor] = {}

        def add(terms: dict[str, torch.Tensor], n: int) -> None:
            for k, v in terms.items():
                sums[k] = sums.get(k, torch.zeros(())) + v.detach().cpu() / n

        for _ in range(self.rounds):
            student.eval()  # the student judges, as in the official code; its BN statistics are not updated
            for _ in range(self.g_steps):
                opt_g.zero_grad(set_to_none=True)
                terms = self.generator_terms(self._sample(), step)
                self.generator_loss(terms, step).backward()
                opt_g.step()
                add(terms, self.rounds * self.g_steps)
            student.train()
            for _ in range(self.kd_steps):
                with torch.no_grad():
                    x = self._sample()
                opt_s.zero_grad(set_to_none=True)
                terms = self.student_terms(x, step)
                terms["student_kd"].backward()
                opt_s.step()
                add(terms, self.rounds * self.kd_steps)
        opt_g.zero_grad(set_to_none=True)
        return sums

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "data_free": True, "generator_batch": self.batch_size, "rounds": self.rounds,
                "g_steps": self.g_steps, "kd_steps": self.kd_steps,
                "generator_loss": {"adv": [self.adv_loss, self.w_adv, self.adv_curriculum], "bn": self.w_bn,
                                   "one_hot": self.w_oh, "entropy": [self.w_ent, self.t_ent]},
                "student_loss": [self.student_loss, self.spl, self.lam]}


@METHODS.register("dfad")
class DFAD(DataFreeDistillation):
    """DFAD data-free KD: the generator maximises, the student minimises the teacher-student logit L1 distance."""

    name = "dfad"


@METHODS.register("cudfkd")
class CuDFKD(DataFreeDistillation):
    """CuDFKD data-free KD: BN-statistics/one-hot/entropy generator, easy-to-hard adversary, self-paced student.

    Defaults follow the official scripts where they fit (bn 1, one-hot 1, entropy -20); see the module docstring."""

    name = "cudfkd"
    defaults = {**DataFreeDistillation.defaults, "bn": 1.0, "one_hot": 1.0, "entropy": -20.0,
                "entropy_temperature": 5.0, "adv_loss": "kl", "adv_curriculum": [0.25, 0.75], "spl": "sample",
                "lam": [1.0, 3.0]}
