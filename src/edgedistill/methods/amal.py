"""AMAL: per-sample mixing weights between the label loss and the KD loss, learned by a meta-gradient.

Sivasubramanian, Maheshwari, Shenoy, Prathosh, Ramakrishnan, "Adaptive Mixing of Auxiliary Losses in Supervised
Learning", AAAI 2023, arXiv 2202.03250. Every training sample i has its own
weight λ_i in [0, 1]::

    inner:  L_train(θ, λ) = 1/B Σ_i [ (1 - λ_i) CE(f_θ(x_i), y_i) + λ_i T² KL(p^t_i || p^s_i) ]
    outer:  λ* = argmin_λ L_val(θ*(λ)),   L_val = mean CE on the meta (validation) split

solved, as meta-reweighting methods do, with a one-step look-ahead per batch::

    θ'(λ) = θ - η ∇_θ L_train(θ, λ)           g_i = ∂ L_val(θ'(λ)) / ∂ λ_i

computed exactly with ``torch.func`` (``grad`` of a function that itself takes ``grad`` through
``functional_call``), equal to the spec's closed form -(η/B) ∇_θ' L_val · (∇_θ KD_i - ∇_θ CE_i).

Our choices where the spec says UNKNOWN (docs/methods/amal.md):
* one λ per training sample on the convex pair (1 - λ_i, λ_i), all initialised to ``init_lambda``;
* λ is kept in [0, 1] by clipping (projected descent), no sigmoid, so g is the gradient the spec's vector checks;
* the step on the batch's λ is normalised by the root mean square of its meta-gradient:
  λ_b <- clip(λ_b - meta_lr · g_b / rms(g_b), 0, 1). g carries the factor η/B and the scale of the
  network's gradients, both of which change during training; normalising makes ``meta_lr`` the typical change
  of a weight per visit, whatever the model, batch size and learning-rate schedule;
* η (the look-ahead step) is the student optimizer's current learning rate unless ``lookahead_lr`` is set
  (the real step may be AdamW's: the look-ahead is the usual SGD approximation);
* every step: meta-gradient at θ (before this step's update), update λ_b, then the student's loss with the new λ_b;
* the meta split is the validation split (as in the paper's bi-level set-up). It is also the model-selection
  split, so best-on-validation numbers select on data the weights were fitted to; the docs report the last
  epoch too. The test split is never seen.
* BatchNorm in the look-ahead uses batch statistics (as the real training forward does) but does not update
  its running statistics: only the real forward pass moves them.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses import kl_rows
from edgedistill.methods.base import Method, Step
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.params import Params
from edgedistill.registry import METHODS


def per_sample_losses(student_logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE_i, T² KL(softmax(z_t/T) || softmax(z_s/T))_i), each of shape (N,): no reduction, for per-sample weights."""
    ce_i = F.cross_entropy(student_logits, target, reduction="none")
    return ce_i, temperature**2 * kl_rows(teacher_logits, student_logits, temperature)


def mixed_loss(student_logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor,
               lam: torch.Tensor, temperature: float) -> torch.Tensor:
    """1/B Σ_i (1 - λ_i) CE_i + λ_i T² KL_i."""
    ce_i, kd_i = per_sample_losses(student_logits, target, teacher_logits, temperature)
    return ((1 - lam) * ce_i + lam * kd_i).mean()


@contextlib.contextmanager
def batch_stats_only(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics and leave their running statistics untouched.

    ``torch.func.grad`` refuses in-place updates of captured buffers, and a look-ahead pass must not move
    the real running statistics anyway: with ``track_running_stats`` off in train mode, ``BatchNorm`` passes
    no running buffers to ``F.batch_norm`` and skips ``num_batches_tracked``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, s in zip(norms, saved):
            m.track_running_stats = s


def meta_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor, lam: torch.Tensor,
                  x_val: torch.Tensor, y_val: torch.Tensor, lookahead_lr: float,
                  temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L_val(θ'(λ))/∂λ, L_val(θ')) for the one-step look-ahead θ' = θ - η ∇_θ L_train(θ, λ).

    Exact (second-order) through ``torch.func``; the model's parameters and buffers are not changed."""
    from torch.func import functional_call, grad

    params = {k: p.detach() for k, p in model.named_parameters()}

    def train_loss(p: dict[str, torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        return mixed_loss(functional_call(model, p, (x,)), y, teacher_logits, weights, temperature)

    def val_after_step(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = grad(train_loss)(params, weights)
        stepped = {k: params[k] - lookahead_lr * g[k] for k in params}
        loss = F.cross_entropy(functional_call(model, stepped, (x_val,)), y_val)
        return loss, loss.detach()

    with batch_stats_only(model):
        return grad(val_after_step, has_aux=True)(lam.detach())


def _plain(net: nn.Module) -> nn.Module:
    """The user's module inside Fabric's wrapper (its parameter names are the ones functional_call needs).
    Checked by class name so this file does not import lightning_fabric (slow) outside training."""
    return net.module if type(net).__name__ == "_FabricModule" else net


class SampleWeights(nn.Module):
    """λ_i for every training row, a buffer: checkpointed with the networks, so a resumed run continues exactly."""

    def __init__(self, n: int, init: float) -> None:
        super().__init__()
        self.register_buffer("lam", torch.full((n,), float(init)))

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.lam[index]


class AMALParams(Params):
    temperature: float = Field(4.0, gt=0.0, description="softmax temperature of the KD term (scaled by T^2)")
    init_lambda: float = Field(0.5, ge=0.0, le=1.0, description="initial KD weight λ_i of every training sample")
    meta_lr: float = Field(0.05, ge=0.0, description="typical change of a sample's λ per visit (the meta step is "
                                                      "normalised by its RMS); 0 keeps every weight at init_lambda")
    lookahead_lr: Optional[float] = Field(None, gt=0.0, description="step η of the one-step look-ahead; null: the "
                                                                     "student optimizer's current lr")
    val_batch_size: int = Field(64, ge=1, le=100_000, description="validation rows drawn (seeded by step) for each meta-gradient")


@METHODS.register("amal")
class AdaptiveMixing(Method):
    """Frozen teacher -> student with per-sample (1 - λ_i) CE + λ_i KD, λ learned on validation by a meta-gradient."""

    Params = AMALParams
    task = "classification"
    task_why = "mixes CE and KD on class labels"

    def __init__(self, student: nn.Module, info: DataInfo, teacher: Optional[nn.Module | TeacherNet],
                 train: Optional[TensorData] = None, **params: Any) -> None:
        super().__init__(student, info, **params)
        self.teachers = Teachers([teacher] if teacher is not None else [], info, self.method_name(), maximum=1)
        self.teacher = self.teachers[-1].model
        n = len(train) if train is not None else info.sizes.get("train", 0)
        if n < 1:
            raise UserInputError("amal: the training split is empty; it needs one weight per training sample")
        self.networks["weights"] = SampleWeights(n, self.params.init_lambda)
        # Drawn after the runner seeded and built the student: the same per seed, and on resume.
        self._seed = int(torch.randint(0, 2**62, (1,)))
        self._val: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self.last_val_loss = float("nan")

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        if val is None or len(val) == 0:
            raise UserInputError("data.split.val: amal learns its weights on the validation split, which is empty")
        if len(train) != len(self.networks["weights"].lam):
            raise UserInputError(f"amal: built for {len(self.networks['weights'].lam)} training rows, got {len(train)}")
        self.teachers.place(device)
        # The teacher is frozen and reads clean inputs: its outputs are the same every epoch.
        self.teachers.cache(train, device)
        self._val = (val.x.to(device), val.y.to(device))

    def optimizers(self, cfg: Any) -> dict[str, torch.optim.Optimizer]:
        opts = super().optimizers(cfg)
        self._optimizer = opts["student"]  # its current lr (schedule applied by the loop) is the look-ahead η
        return opts

    def _val_batch(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        xv, yv = self._val  # type: ignore[misc]
        if len(yv) <= self.params.val_batch_size:
            return xv, yv
        g = torch.Generator().manual_seed(self._seed + step.step)  # seeded by step: a resumed run draws the same
        pick = torch.randperm(len(yv), generator=g)[: self.params.val_batch_size].to(yv.device)
        return xv[pick], yv[pick]

    def _eta(self) -> float:
        if self.params.lookahead_lr is not None:
            return self.params.lookahead_lr
        if self._optimizer is None:
            raise UserInputError("method.params.lookahead_lr: no optimizer is known yet; set lookahead_lr")
        return float(self._optimizer.param_groups[0]["lr"])

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        if not self.teachers.cached:
            raise RuntimeError("amal: setup() was not called")
        y, index = batch["y"], batch["index"]
        if y.is_floating_point():
            raise UserInputError("augment.mix: amal weights integer-labelled samples and cannot train on mixed labels")
        teacher = self.teachers.logits(batch)
        student = self.networks["student"]
        weights = self.networks["weights"]
        lam = weights(index)
        meta_lr, temperature = self.params.meta_lr, self.params.temperature
        if meta_lr > 0:
            xv, yv = self._val_batch(step)
            g, val_loss = meta_gradient(_plain(student), batch["x"], y, teacher, lam, xv, yv, self._eta(), temperature)
            self.last_val_loss = float(val_loss)
            rms = g.pow(2).mean().sqrt()
            if torch.isfinite(rms) and rms > 0:
                lam = (lam - meta_lr * g / rms).clamp(0.0, 1.0)
                _plain(weights).lam[index] = lam
        ce_i, kd_i = per_sample_losses(student(batch["x"]), y, teacher, temperature)
        return {"ce": ((1 - lam) * ce_i).mean(), "kd": (lam * kd_i).mean()}

    def lambdas(self) -> torch.Tensor:
        return _plain(self.networks["weights"]).lam.detach().cpu()

    def describe(self) -> dict[str, Any]:
        lam = self.lambdas()
        return {**super().describe(), "meta_split": "validation",
                "lambda": {"mean": round(float(lam.mean()), 4), "std": round(float(lam.std()), 4),
                           "at_0": round(float((lam == 0).float().mean()), 4),
                           "at_1": round(float((lam == 1).float().mean()), 4)}}
