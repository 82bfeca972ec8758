"""Data-free distillation: a generator and the student trained adversarially; the student never sees data.

Two regimes share one class and differ in their defaults:

* ``dfad`` -- DFAD (Fang et al. 2019): ``max_G min_S mean|t(G(z)) - s(G(z))|`` (L1 between logits).
* ``cudfkd`` -- CuDFKD (Li et al., arXiv 2208.13648), generator loss
  ``L_G = ent*H(mean softmax(t/T_H)) + adv*L_adv + oh*CE(t, argmax t) + bn*L_bn`` with DeepInversion's
  BatchNorm-statistics loss (teacher hooks), DAFL's one-hot and class-entropy terms, the agreement-masked KL
  adversarial term, an easy-to-hard curriculum on ``adv`` and self-paced weights on the student side
  ``v = (1+e^-lam)/(1+e^(l-lam))`` with a growing ``lam``. Default (``preset: official``): the official
  CIFAR-10 scripts' schedules and sizes -- ``adv`` starts at 0 and rises by ``adv_step`` = 0.5 after every epoch
  inside [0.25 E, 0.75 E] (``--grad_adv 0.5``), ``lam = 2 + 1e-4 n`` after n student steps
  (``--lambda_0 2``, alpha 1e-4), generator nz 512, width (ngf) 64 with a 4 x width coarse map.
  ``preset: small`` is the former form: ``adv`` rising to 1.0 at 0.75 E in equal steps, ``lam`` linear 1 -> 3
  over training, generator nz 64, width 32, 2 x width coarse map. Keys a recipe sets override either preset.

Each loop step runs ``rounds`` rounds of {``g_steps`` generator steps; ``kd_steps`` student steps}, each on a
fresh batch of ``batch_size`` generated samples (the runner's loop over real batches only counts steps).

Our choices where the spec is UNKNOWN or does not fit (documented in docs/methods/cudfkd.md):
* self-paced weights are per sample (``l_i`` = mean |s_i - t_i|, ``L_S = mean_i v_i l_i``); the official code
  with its L1 loss computes one weight per batch (``spl: batch`` reproduces that);
* ``n`` counts the student steps of this run (every round's ``kd_steps`` of every loop step), as the official
  ``global_iter`` does; with our few steps per epoch ``lam`` grows far less than in the official 400-step epochs;
* the runner's learning-rate schedule applies to both optimizers (the official generator lr is constant).

The method never reads ``batch["x"]`` or ``batch["y"]``.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import nn

from edgedistill.config import TrainConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.data_free import (
    agreement_kl, bn_statistics_loss, class_entropy, curriculum_adv_weight, linear_ramp, logit_l1, one_hot_loss,
    per_sample_kd, per_sample_l1, self_paced_weight, stepped_adv_weight, stepped_lambda,
)
from edgedistill.methods.base import Method, Step, make_optimizer
from edgedistill.methods.teachers import TeacherNet, Teachers, evaluating
from edgedistill.models.generators import GeneratorParams, build_generator
from edgedistill.params import Params
from edgedistill.registry import METHODS

Pair = Optional[list[float]]


class BatchNormStatistics:
    """Forward hooks on every BatchNorm layer of a (frozen, eval-mode) teacher: while ``recording``, each hook
    adds ``bn_statistics_loss(input, running_mean, running_var)`` of its layer to ``losses``."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                       and m.running_mean is not None and m.running_var is not None]
        self.losses: list[torch.Tensor] = []
        self.recording = False
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self.recording:
            self.losses.append(bn_statistics_loss(inputs[0], module.running_mean, module.running_var))

    def __enter__(self) -> "BatchNormStatistics":
        self.losses, self.recording = [], True
        return self

    def __exit__(self, *exc: object) -> None:
        self.recording = False

    def total(self) -> Optional[torch.Tensor]:
        """Sum over layers of the last recorded forward pass (None when nothing was recorded)."""
        return torch.stack(self.losses).sum() if self.losses else None

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class DFADParams(Params):
    """The data-free regimes' parameters, with DFAD's defaults (``CuDFKDParams`` changes some)."""

    generator: GeneratorParams = Field(default_factory=GeneratorParams,
                                       description="the generator: {name: dcgan, nz, width, output, scale}")
    batch_size: int = Field(64, ge=2, le=100_000, description="generated samples per generator or student step")
    generator_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the generator")
    rounds: int = Field(1, ge=1, le=10_000, description="rounds of {g_steps generator steps; kd_steps student steps} per "
                                             "loop step")
    g_steps: int = Field(1, ge=0, le=10_000, description="generator steps per round")
    kd_steps: int = Field(5, ge=1, le=10_000, description="student steps per round")
    bn: float = Field(0.0, ge=0, description="weight of the teacher's BatchNorm-statistics loss (DeepInversion)")
    one_hot: float = Field(0.0, ge=0, description="weight of the one-hot loss CE(t, argmax t) (DAFL)")
    entropy: float = Field(0.0, description="weight of the class entropy H(mean softmax(t/T_H)) (negative: "
                                            "balanced classes)")
    entropy_temperature: float = Field(1.0, gt=0, description="temperature T_H of the class-entropy term")
    adv_loss: Literal["l1", "kl"] = Field("l1", description="adversarial term: l1 (DFAD: -mean|t - s|) or kl "
                                                            "(CuDFKD: agreement-masked T^2 KL)")
    adv: float = Field(1.0, ge=0, description="weight of the adversarial term: constant without a curriculum; with "
                                              "one, its start value if adv_step is set, else its final value")
    adv_curriculum: Pair = Field(None, min_length=2, max_length=2,
                                 description="[begin, end] fractions of training: the window in which adv rises "
                                             "each epoch; null: constant")
    adv_step: Optional[float] = Field(None, ge=0, description="with a curriculum: adv rises by this after every "
                                      "epoch in the window (official --grad_adv); null: adv is 0 until begin and "
                                      "reaches adv at end in equal steps")
    adv_temperature: float = Field(3.0, gt=0, description="temperature of the kl adversarial term")
    student_loss: Literal["l1", "kd"] = Field("l1", description="student loss per sample: l1 (mean |s - t|) or kd "
                                                                "(T^2 KL at kd_temperature)")
    kd_temperature: float = Field(4.0, gt=0, description="temperature of the kd student loss")
    spl: Literal["none", "sample", "batch"] = Field(
        "none", description="self-paced student weights: none, per sample, or one per batch (official code)")
    lam: Pair = Field(None, min_length=2, max_length=2, validate_default=True,
                      description="[start, end] of the self-paced threshold lam (needed unless spl is none): "
                                  "linear over training, or with lam_rate start + lam_rate x student steps, held "
                                  "at end")
    lam_rate: Optional[float] = Field(None, ge=0, description="lam grows by this per student step (official "
                                      "alpha); null: linear from lam[0] to lam[1] over training")

    @field_validator("adv_curriculum")
    @classmethod
    def _fractions(cls, value: Pair) -> Pair:
        if value is not None and not 0 <= value[0] < value[1] <= 1:
            raise ValueError("expected [begin, end] fractions with 0 <= begin < end <= 1")
        return value

    @field_validator("lam")
    @classmethod
    def _needed(cls, value: Pair, info: ValidationInfo) -> Pair:
        spl = info.data.get("spl", "none")
        if spl != "none" and value is None:
            raise ValueError(f"self-paced weights (spl: {spl}) need lam: [start, end]")
        return value


# The former defaults, kept as ``preset: small``: a recipe's own keys still override them.
SMALL_PRESET: dict[str, Any] = {"generator": {"nz": 64, "width": 32, "coarse": 2}, "adv": 1.0, "adv_step": None,
                                "lam": [1.0, 3.0], "lam_rate": None}


class CuDFKDParams(DFADParams):
    """CuDFKD's defaults: the official CIFAR-10 scripts' (bn 1, one-hot 1, entropy -20, adv 0 + 0.5 per epoch in
    [0.25, 0.75] E, lam 2 + 1e-4 per student step, generator nz 512 / ngf 64); ``preset: small`` the former ones."""

    preset: Literal["official", "small"] = Field(
        "official", description="official: the official scripts' adversarial schedule, lam schedule and generator "
                                "size; small: the former smaller generator and gentler schedules")
    generator: GeneratorParams = Field(default_factory=lambda: GeneratorParams(nz=512, width=64, coarse=4),
                                       description="the generator: {name: dcgan, nz, width, coarse, output, scale}")
    bn: float = Field(1.0, ge=0, description="weight of the teacher's BatchNorm-statistics loss (DeepInversion)")
    one_hot: float = Field(1.0, ge=0, description="weight of the one-hot loss CE(t, argmax t) (DAFL)")
    entropy: float = Field(-20.0, description="weight of the class entropy H(mean softmax(t/T_H)) (negative: "
                                              "balanced classes)")
    entropy_temperature: float = Field(5.0, gt=0, description="temperature T_H of the class-entropy term")
    adv_loss: Literal["l1", "kl"] = Field("kl", description="adversarial term: l1 (DFAD: -mean|t - s|) or kl "
                                                            "(CuDFKD: agreement-masked T^2 KL)")
    adv: float = Field(0.0, ge=0, description="weight of the adversarial term: constant without a curriculum; with "
                                              "one, its start value if adv_step is set, else its final value")
    adv_curriculum: Pair = Field([0.25, 0.75], min_length=2, max_length=2,
                                 description="[begin, end] fractions of training: the window in which adv rises "
                                             "each epoch; null: constant")
    adv_step: Optional[float] = Field(0.5, ge=0, description="with a curriculum: adv rises by this after every "
                                      "epoch in the window (official --grad_adv); null: adv is 0 until begin and "
                                      "reaches adv at end in equal steps")
    spl: Literal["none", "sample", "batch"] = Field(
        "sample", description="self-paced student weights: none, per sample, or one per batch (official code)")
    lam: Pair = Field([2.0, 100.0], min_length=2, max_length=2, validate_default=True,
                      description="[start, end] of the self-paced threshold lam (needed unless spl is none): "
                                  "linear over training, or with lam_rate start + lam_rate x student steps, held "
                                  "at end")
    lam_rate: Optional[float] = Field(1e-4, ge=0, description="lam grows by this per student step (official "
                                      "alpha); null: linear from lam[0] to lam[1] over training")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") == "small":
            return {**SMALL_PRESET, **data}
        return data


class DataFreeDistillation(Method):
    """Generator vs student, the frozen teacher as judge; see the module docstring for the losses."""

    Params = DFADParams
    task = "classification"
    task_why = "distils class distributions"
    manual_optimization = True

    def __init__(self, student: nn.Module, info: DataInfo, teacher: Optional[nn.Module | TeacherNet],
                 **params: Any) -> None:
        super().__init__(student, info, **params)
        name = self.method_name()
        self.teachers = Teachers([teacher] if teacher is not None else [], info, name, maximum=1)
        self.teachers.check_new_inputs(name, "runs the teacher on the generator's samples", gradients=True)
        # The generator makes inputs of view "x" only; a teacher on another view could not read them.
        if self.teachers[-1].view != "x":
            raise UserInputError(f"teacher.view: method '{name}' generates inputs shaped like view 'x' for teacher "
                                 f"and student; a teacher on view '{self.teachers[-1].view}' cannot read them")
        self.teacher = self.teachers[-1].model
        p = self.params
        shape = tuple(info.views.get("x", info.input_shape))
        self.networks["generator"] = build_generator(p.generator, shape, key="method.params.generator")
        self.nz = self.networks["generator"].nz
        self.bn_stats = BatchNormStatistics(self.teacher)
        self._optimizers: dict[str, torch.optim.Optimizer] = {}
        if p.bn > 0 and not self.bn_stats.layers:
            raise UserInputError(f"teacher: method '{name}' with method.params.bn > 0 matches the teacher's "
                                 f"BatchNorm statistics, but the teacher has no BatchNorm layers; set "
                                 f"method.params.bn: 0")

    # ------------------------------------------------------------------------------------------------
    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self.teachers.place(device)

    def optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        student = [p for p in self.networks["student"].parameters() if p.requires_grad]
        gen = list(self.networks["generator"].parameters())
        # Student first: the runner logs the first optimizer's learning rate. Kept here too: ``training_step``
        # steps them itself (the runner only rescales their learning rates and checkpoints them).
        self._optimizers = {"student": make_optimizer(student, cfg),
                            "generator": torch.optim.Adam(gen, lr=self.params.generator_lr, betas=(0.9, 0.99))}
        return self._optimizers

    def adv_weight(self, step: Step) -> float:
        p = self.params
        if p.adv_curriculum is None:
            return p.adv
        if p.adv_step is not None:
            return stepped_adv_weight(step.epoch, step.epochs, p.adv, p.adv_step, *p.adv_curriculum)
        return curriculum_adv_weight(step.epoch, step.epochs, p.adv, *p.adv_curriculum)

    def lam(self, step: Step, student_steps: int) -> float:
        """The self-paced threshold after ``student_steps`` student steps of this run (``step`` gives the progress
        of the linear form)."""
        p = self.params
        if p.lam_rate is not None:
            return stepped_lambda(p.lam[0], p.lam_rate, student_steps, p.lam[1])  # type: ignore[index]
        return linear_ramp(*p.lam, step.progress)  # type: ignore[misc]

    def _device(self) -> torch.device:
        return next(self.networks["student"].parameters()).device

    def _sample(self) -> torch.Tensor:
        z = torch.randn(self.params.batch_size, self.nz, device=self._device())
        return self.networks["generator"](z)

    def generator_terms(self, x: torch.Tensor, step: Step) -> dict[str, torch.Tensor]:
        """Raw generator loss terms on generated ``x`` (gradients reach x through both networks)."""
        p = self.params
        student = self.networks["student"]
        with self.bn_stats:
            t = self.teacher(x)  # type: ignore[misc]
        s = student(x)
        terms: dict[str, torch.Tensor] = {}
        if p.adv_loss == "l1":
            terms["gen_adv"] = -logit_l1(s, t)  # the generator maximises the discrepancy
        else:
            terms["gen_adv"] = agreement_kl(s, t, p.adv_temperature)
        if p.bn > 0:
            terms["gen_bn"] = self.bn_stats.total()  # type: ignore[assignment]
        if p.one_hot > 0:
            terms["gen_one_hot"] = one_hot_loss(t)
        if p.entropy != 0:
            terms["gen_entropy"] = class_entropy(t, p.entropy_temperature)
        return terms

    def generator_loss(self, terms: dict[str, torch.Tensor], step: Step) -> torch.Tensor:
        p = self.params
        weights = {"gen_adv": self.adv_weight(step), "gen_bn": p.bn, "gen_one_hot": p.one_hot,
                   "gen_entropy": p.entropy}
        return sum(weights[k] * v for k, v in terms.items())  # type: ignore[return-value]

    def student_terms(self, x: torch.Tensor, step: Step, student_steps: int = 0) -> dict[str, torch.Tensor]:
        """The student's loss on generated ``x`` (no gradient to the generator), self-paced when configured;
        ``student_steps``: the student steps this run made before this one."""
        p = self.params
        with torch.no_grad():
            t = self.teacher(x)  # type: ignore[misc]
        s = self.networks["student"](x)
        per = per_sample_l1(s, t) if p.student_loss == "l1" else per_sample_kd(s, t, p.kd_temperature)
        if p.spl == "none":
            return {"student_kd": per.mean()}
        lam = self.lam(step, student_steps)
        if p.spl == "sample":
            v = self_paced_weight(per, lam)
            return {"student_kd": (v * per).mean()}
        loss = per.mean()
        return {"student_kd": self_paced_weight(loss, lam) * loss}

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        # ``batch`` only paces the loop: the student is trained on generated samples alone.
        student = self.networks["student"]
        opt_s, opt_g = self._optimizers["student"], self._optimizers["generator"]
        rounds, g_steps, kd_steps = self.params.rounds, self.params.g_steps, self.params.kd_steps
        sums: dict[str, torch.Tensor] = {}

        def add(terms: dict[str, torch.Tensor], n: int) -> None:
            for k, v in terms.items():
                sums[k] = sums.get(k, torch.zeros(())) + v.detach().cpu() / n

        # Student steps before this loop step (resumable: a function of the step, not a counter).
        done = step.step * rounds * kd_steps
        for _ in range(rounds):
            # The student judges in eval mode, as in the official code (its BN statistics are not updated).
            with evaluating(student):
                for _ in range(g_steps):
                    opt_g.zero_grad(set_to_none=True)
                    terms = self.generator_terms(self._sample(), step)
                    self.generator_loss(terms, step).backward()
                    opt_g.step()
                    add(terms, rounds * g_steps)
            for _ in range(kd_steps):
                with torch.no_grad():
                    x = self._sample()
                opt_s.zero_grad(set_to_none=True)
                terms = self.student_terms(x, step, done)
                terms["student_kd"].backward()
                opt_s.step()
                done += 1
                add(terms, rounds * kd_steps)
        opt_g.zero_grad(set_to_none=True)
        return sums

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "data_free": True, "teacher_bn_layers": len(self.bn_stats.layers),
               "generator_params": sum(q.numel() for q in self.networks["generator"].parameters())}
        if getattr(self.params, "preset", None) is not None:
            out["preset"] = self.params.preset
        return out


@METHODS.register("dfad")
class DFAD(DataFreeDistillation):
    """DFAD data-free KD: the generator maximises, the student minimises the teacher-student logit L1 distance."""

    Params = DFADParams


@METHODS.register("cudfkd")
class CuDFKD(DataFreeDistillation):
    """CuDFKD data-free KD: BN-statistics/one-hot/entropy generator, easy-to-hard adversary, self-paced student.

    Defaults follow the official scripts where they fit (bn 1, one-hot 1, entropy -20); see the module docstring."""

    Params = CuDFKDParams
