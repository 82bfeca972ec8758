"""CES-KD: curriculum-based expert selection (Amara, Ziaeefard, Meyer, Gross, Clark, arXiv 2209.07606).

Several experts (a teacher and teaching assistants of decreasing capacity); every training sample is taught
by ONE expert, chosen by how hard the sample is: easy samples by a small expert, hard ones by a large one.

    L = mean_i [ (1 - alpha) CE(z_s,i, y_i) + alpha T^2 KL(softmax(z_E(i),i / T) || softmax(z_s,i / T)) ]

The abstract fixes only that (one expert per input, chosen by a difficulty-driven "stratified teaching
curriculum", gradually guided). The paper's difficulty measure, strata and schedule are UNKNOWN
(shared/methods/others.md section 4; no official code). OUR choices:

* Experts: the recipe's ``teachers`` (or the names in ``experts``), ordered by parameter count, smallest
  first (ties keep list order).
* Difficulty of training sample i: d_i = 1 - p(y_i | x_i) under the LARGEST expert (T = 1), computed once
  in ``setup`` (experts are frozen, inputs are not augmented).
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

from typing import Any, Optional

import torch
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd
from edgedistill.methods.base import Method, Step, TeacherNet, freeze
from edgedistill.methods.offline import teacher_outputs
from edgedistill.registry import METHODS

SCHEDULES = ("gradual", "static")


def stratify(difficulty: torch.Tensor, n_strata: int) -> torch.Tensor:
    """Stratum (0 = easiest) of every sample: K equal-count bins of the difficulty rank (ties by row order)."""
    order = torch.sort(difficulty, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return torch.div(rank * n_strata, len(order), rounding_mode="floor")


def final_expert(strata: torch.Tensor, n_strata: int, n_experts: int) -> torch.Tensor:
    """Expert (0 = smallest) that teaches stratum j once the curriculum is over: round(j (E-1) / (K-1))."""
    return torch.div(strata * 2 * (n_experts - 1) + (n_strata - 1), 2 * (n_strata - 1), rounding_mode="floor")


def expert_level(epoch: int, epochs: int, n_experts: int, schedule: str, ramp: float) -> int:
    """The largest expert any sample may use at ``epoch`` (0-based)."""
    if schedule == "static" or ramp <= 0:
        return n_experts - 1
    return min(n_experts - 1, int(n_experts * epoch // (ramp * epochs)))


def selected_kd(student_logits: torch.Tensor, expert_logits: torch.Tensor, selection: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 mean_i KL(softmax(z_{sel_i}, i / T) || softmax(z_s,i / T)); ``expert_logits`` (E, B, C), ``selection`` (B,)."""
    rows = torch.arange(student_logits.shape[0], device=student_logits.device)
    return kd(student_logits, expert_logits[selection, rows], temperature)


@METHODS.register("ceskd")
class CESKD(Method):
    """Per-sample expert selection by difficulty stratum, with an optional small-to-large curriculum."""

    reserved = ("student", "info", "teachers")

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        teachers: list[TeacherNet],
        experts: Optional[list[str]] = None,
        alpha: float = 0.9,
        temperature: float = 4.0,
        strata: Optional[int] = None,
        schedule: str = "gradual",
        ramp: float = 0.5,
    ) -> None:
        super().__init__(student, info)
        if info.task != "classification":
            raise UserInputError("method.name: ceskd ranks samples by p(true class); the task is regression")
        names = [t.name for t in teachers]
        if experts is not None:
            if isinstance(experts, str) or not all(isinstance(e, str) for e in experts) or len(set(experts)) != len(experts):
                raise UserInputError(f"method.params.experts: a list of distinct teacher names, got {experts!r}")
            for e in experts:
                if e not in names:
                    raise UserInputError(f"method.params.experts: no teacher named '{e}'; teachers are: {', '.join(names)}")
        chosen = [t for t in teachers if experts is None or t.name in experts]
        if len(chosen) < 2:
            key = "method.params.experts" if experts is not None else "teachers"
            raise UserInputError(f"{key}: ceskd needs at least two experts (a teacher and an assistant), got {len(chosen)}")
        k = len(chosen) if strata is None else strata
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise UserInputError(f"method.params.strata: an integer >= 2, got {strata!r}")
        if schedule not in SCHEDULES:
            raise UserInputError(f"method.params.schedule: one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if not 0.0 <= alpha <= 1.0:
            raise UserInputError(f"method.params.alpha: must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise UserInputError(f"method.params.temperature: must be > 0, got {temperature}")
        if not 0.0 <= ramp <= 1.0:
            raise UserInputError(f"method.params.ramp: a fraction of training in [0, 1], got {ramp}")
        size = lambda t: sum(p.numel() for p in t.model.parameters())  # noqa: E731
        chosen = sorted(chosen, key=size)  # stable: equal sizes keep list order
        self.experts = [t.name for t in chosen]
        self.sizes = [size(t) for t in chosen]
        self.models = [freeze(t.model) for t in chosen]
        self.views = [t.view for t in chosen]
        self.teacher = self.models[-1]
        self.alpha, self.temperature, self.n_strata, self.schedule, self.ramp = alpha, temperature, k, schedule, ramp
        self._logits: Optional[torch.Tensor] = None  # (E, N, C) expert logits on the training rows
        self._final: Optional[torch.Tensor] = None  # (N,) final expert per training row
        self._strata: Optional[torch.Tensor] = None
        self._taught: dict[int, list[int]] = {}  # epoch (1-based) -> samples each expert taught

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        for m in self.models:
            freeze(m.to(device))
        self._logits = torch.stack([teacher_outputs(m, train, v, device) for m, v in zip(self.models, self.views)])
        y = train.y.to(device)
        p_true = torch.softmax(self._logits[-1].double(), dim=1)[torch.arange(len(y), device=device), y]
        self._strata = stratify(1.0 - p_true, self.n_strata)
        self._final = final_expert(self._strata, self.n_strata, len(self.models))

    def selection(self, index: torch.Tensor, step: Step) -> torch.Tensor:
        """The expert (0 = smallest) teaching each of the rows ``index`` at this step."""
        level = expert_level(step.epoch, step.epochs, len(self.models), self.schedule, self.ramp)
        return self._final[index].clamp(max=level)  # type: ignore[index]

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        s = self.networks["student"](batch["x"])
        index = batch["index"].to(self._logits.device)  # type: ignore[union-attr]
        sel = self.selection(index, step)
        counts = torch.bincount(sel, minlength=len(self.models)).tolist()
        done = self._taught.setdefault(step.epoch + 1, [0] * len(self.models))
        self._taught[step.epoch + 1] = [a + b for a, b in zip(done, counts)]
        target = self._logits[:, index]  # type: ignore[index]
        return {"ce": (1 - self.alpha) * ce(s, batch["y"]),
                "kd": self.alpha * selected_kd(s, target, sel, self.temperature)}

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": "ceskd", "alpha": self.alpha, "temperature": self.temperature, "schedule": self.schedule,
            "ramp": self.ramp, "experts_small_to_large": dict(zip(self.experts, self.sizes)), "strata": self.n_strata,
        }
        if self._final is not None:
            e = len(self.models)
            out["stratum_sizes"] = torch.bincount(self._strata, minlength=self.n_strata).tolist()  # type: ignore[arg-type]
            out["final_assignment"] = torch.bincount(self._final, minlength=e).tolist()
        out["taught_per_epoch"] = self._taught  # actual samples per expert (drop_last rows excluded); since last start
        return out
