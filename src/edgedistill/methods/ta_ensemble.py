"""Weighted ensemble of teaching assistants (Ganta, Das Gupta, Sheng, arXiv 2206.12005).

Several assistants (TAs), each distilled from the teacher, are combined with weights found by differential
evolution (DE); the student distils from the weighted ensemble:

    p_ens,i = sum_k w_k softmax(z_k,i / T),   w on the simplex (w_k >= 0, sum_k w_k = 1)
    L       = the recipe's terms with T log p_ens as ``teacher_logits``; default
              0.1 CE(z_s, y) + 0.9 T^2 mean_i KL(p_ens,i || softmax(z_s,i / T)),  T = 4

The regime only changes where the soft target comes from: it offers the terms ``teacher_logits`` = T log p_ens,
whose softmax at T is p_ens (softmax(T log q / T) = q), so ``kd``, ``dkd`` ... read the weighted ensemble and the
recipe weights the losses. p_ens depends on T, so the terms reading it must share one temperature (the terms'
``soft_target_temperature``).

What the abstract fixes: several TAs, weighted ensemble, weights from DE. What it does not (all
UNKNOWN) and what we chose:

* Which networks are TAs: every ``teachers`` entry with ``distill_from`` (the top teacher only trains
  them), or the names in ``members``.
* Weight space: raw u in [0, 1]^K searched by DE, w = u / sum(u) (uniform if u = 0); only ratios matter.
* Ensemble space: probabilities (TAKD-style soft targets averaged), not logits.
* DE objective: minimise  -acc_val(w) + nll_weight * NLL_val(w)  of the ensemble sum_k w_k softmax(z_k)
  (T = 1, as the ensemble predicts) on the validation split. Accuracy moves in steps of 1/n_val, so the
  small NLL term only breaks ties among weightings with equal accuracy (exactly so while
  nll_weight * (NLL difference) < 1/n_val). DE is scipy's, seeded, ``polish=False`` (the objective is
  piecewise constant), with the uniform weighting in the initial population (so the result is never worse
  on the objective than plain averaging), and no early stop (tol = atol = 0: all ``de_maxiter`` generations).
* KD form: TAKD's (batch-mean KL, T^2 scaled); default terms 0.1 CE + 0.9 KD at T = 4, the quickstart's.
The TA logits are fixed (frozen, eval mode, clean inputs), so the targets are computed once in ``setup``.
"""
from __future__ import annotations

from typing import Annotated, Any, Optional, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.multiteacher import average_probs
from edgedistill.methods.base import Step
from edgedistill.methods.teachers import TeacherNet, Teachers
from edgedistill.methods.terms import HINTON_TERMS, TermsMethod
from edgedistill.models.ensemble import ProbabilityEnsemble
from edgedistill.params import Params
from edgedistill.registry import METHODS



def ensemble_objective(u: np.ndarray, probs: np.ndarray, y: np.ndarray, nll_weight: float) -> float:
    """-accuracy + nll_weight * NLL of sum_k w_k probs[k], w = u / sum(u). ``probs`` (K, N, C), ``y`` (N,)."""
    s = float(np.sum(u))
    w = u / s if s > 0 else np.full(len(u), 1.0 / len(u))
    p = np.tensordot(w, probs, axes=1)  # (N, C)
    acc = float(np.mean(p.argmax(1) == y))
    nll = float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))
    return -acc + nll_weight * nll


def log_target(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T log q: logits whose softmax at T is the distribution ``probs`` (a probability that underflowed to 0 is
    clamped to the smallest normal number, so the logits stay finite)."""
    return temperature * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))


def de_weights(
    val_logits: Sequence[torch.Tensor], y: torch.Tensor, seed: int = 0, maxiter: int = 100, popsize: int = 15,
    nll_weight: float = 1e-3,
) -> torch.Tensor:
    """Simplex weights (K,) for the TAs' validation logits by seeded differential evolution (see module doc)."""
    from scipy.optimize import differential_evolution

    probs = np.stack([torch.softmax(z.detach().double().cpu(), dim=1).numpy() for z in val_logits])
    labels = y.cpu().numpy()
    k = len(val_logits)
    res = differential_evolution(
        ensemble_objective, [(0.0, 1.0)] * k, args=(probs, labels, nll_weight), seed=seed, maxiter=maxiter,
        popsize=popsize, polish=False, x0=np.ones(k), updating="immediate", workers=1,
        # No early stop: scipy's relative tolerance would end the search as soon as the population shares one
        # accuracy (energies then differ by the tiny NLL term only), before the tie-break has any effect.
        tol=0.0, atol=0.0,
    )
    u = np.asarray(res.x, dtype=np.float64)
    w = u / u.sum() if u.sum() > 0 else np.full(k, 1.0 / k)
    return torch.as_tensor(w, dtype=torch.float64)


class TAEnsembleParams(Params):
    members: Optional[list[str]] = Field(None, description="names of the teachers in the ensemble (default: every "
                                                          "teacher with 'distill_from', i.e. the assistants)")
    weights: Optional[list[Annotated[float, Field(ge=0.0)]]] = Field(
        None, description="fixed ensemble weights, one per member (renormalised); default: found by differential "
                          "evolution on the validation split")
    de_seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the differential evolution")
    de_maxiter: int = Field(100, ge=1, le=100_000, description="differential evolution generations (no early stop)")
    de_popsize: int = Field(15, ge=1, le=1000, description="differential evolution population size multiplier (scipy's popsize)")
    nll_weight: float = Field(1e-3, ge=0.0, description="weight of the validation NLL that breaks accuracy ties in "
                                                        "the DE objective")

    @field_validator("weights")
    @classmethod
    def _positive_sum(cls, value: Optional[list[float]]) -> Optional[list[float]]:
        if value is not None and sum(value) <= 0:
            raise ValueError(f"non-negative numbers with a positive sum (one per assistant), got {value}")
        return value


@METHODS.register("ta_ensemble")
class TAEnsemble(TermsMethod):
    """The student distils from a DE-weighted probability ensemble of frozen teaching assistants: the ensemble is
    the terms' soft target (default 0.1 CE + 0.9 KD, T = 4)."""

    Params = TAEnsembleParams
    task = "classification"
    task_why = "weights classifiers' probabilities"
    default_terms = HINTON_TERMS
    # The targets are computed once on clean inputs and the CE reads integer labels: no augmented teacher input,
    # no mixed labels.
    augmentation_support = frozenset()

    def __init__(self, student: nn.Module, info: DataInfo, teachers: Sequence[TeacherNet],
                 terms: Sequence[TermConfig] = (), train: Optional[TensorData] = None, **params: Any) -> None:
        # Parsed here as well (the base class parses again): the members are chosen before the base is built.
        parsed = self.Params.parse(params, "method.params", what=f"method '{self.method_name()}'")
        members, weights = parsed.members, parsed.weights
        names = [t.name for t in teachers]
        if members is None:
            chosen = [t for t in teachers if t.config.distill_from is not None]
        else:
            chosen = Teachers.named(teachers, members, "method.params.members")
        if len(chosen) < 2:
            key = "method.params.members" if members is not None else "teachers"
            raise UserInputError(
                f"{key}: ta_ensemble needs at least two assistants (teachers with 'distill_from', or names in "
                f"method.params.members), got {len(chosen)}: {[t.name for t in chosen]}"
            )
        for t in chosen:
            if t.view != "x":
                raise UserInputError(f"teachers[{names.index(t.name)}].view: ta_ensemble members read the student's view 'x'")
        group = Teachers(chosen, info, self.method_name(), minimum=2)
        if weights is not None and len(weights) != len(chosen):
            raise UserInputError(
                f"method.params.weights: {len(chosen)} non-negative numbers with a positive sum (one per assistant), got {weights}"
            )
        if weights is None and info.sizes.get("val", 1) == 0:
            raise UserInputError("data.split.val: ta_ensemble finds its weights on the validation split; it has none")
        self.weights: Optional[torch.Tensor] = None  # set in setup (before it, the shape probe averages uniformly)
        self._targets: Optional[torch.Tensor] = None  # (N, C) p_ens on the training rows
        self._target_logits: Optional[torch.Tensor] = None  # (N, C) T log p_ens
        super().__init__(student, info, group, terms, train, **params)  # self.teacher: the last member
        self.assistants = self.teachers.names
        self.temperature = self.soft_target_temperature()  # the T of p_ens: the terms' one temperature
        self._ensemble: Optional[nn.Module] = None
        self._val_acc: dict[str, float] = {}

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self.teachers.place(device)
        p = self.params
        if p.weights is not None:
            w = torch.as_tensor(p.weights, dtype=torch.float64)
            self.weights = w / w.sum()
        else:
            if val is None or len(val) == 0:
                raise UserInputError("data.split.val: ta_ensemble finds its weights on the validation split; it has none")
            val_logits = [self.teachers.outputs(val, device, k).cpu() for k in range(len(self.teachers))]
            self.weights = de_weights(val_logits, val.y, seed=p.de_seed, maxiter=p.de_maxiter, popsize=p.de_popsize,
                                      nll_weight=p.nll_weight)
            for name, z in zip(self.assistants, val_logits):
                self._val_acc[name] = float((z.argmax(1) == val.y).double().mean())
            ens = average_probs(val_logits, 1.0, self.weights)
            self._val_acc["weighted ensemble"] = float((ens.argmax(1) == val.y).double().mean())
            self._val_acc["uniform ensemble"] = float((average_probs(val_logits, 1.0).argmax(1) == val.y).double().mean())
        # The members are frozen and read clean inputs: the targets are the same every epoch, computed once.
        self.teachers.cache(train, device)
        self._targets = average_probs(list(self.teachers.cached_stack()), self.temperature, self.weights.to(device))
        self._target_logits = log_target(self._targets, self.temperature)
        self._ensemble = ProbabilityEnsemble(self.teachers.models, self.weights.tolist()).to(device).eval()

    def teacher_logits(self, batch: Batch, step: Optional[Step], use_cache: bool = True) -> torch.Tensor:
        """T log p_ens for the batch's rows, looked up in the targets of ``setup``; run live (uniform weights before
        ``setup``, in the shape probe) when ``use_cache`` is off."""
        if use_cache and self._target_logits is not None:
            return self._target_logits[batch["index"].to(self._target_logits.device)]
        z = [self.teachers.run(batch, k) for k in range(len(self.teachers))]
        w = self.weights.to(z[0].device) if self.weights is not None else None
        t = self.soft_target_temperature()
        return log_target(average_probs(z, t, w), t)

    def evaluated(self) -> dict[str, nn.Module]:
        return {"weighted TA ensemble": self._ensemble} if self._ensemble is not None else {}

    def describe(self) -> dict[str, Any]:
        w = self.weights.tolist() if self.weights is not None else None
        p = self.params
        de = {"seed": p.de_seed, "maxiter": p.de_maxiter, "popsize": p.de_popsize, "nll_weight": p.nll_weight}
        return {
            **super().describe(),
            "weights": dict(zip(self.assistants, w)) if w is not None else None,
            "weights_from": "method.params.weights" if p.weights is not None else {"differential_evolution": de},
            "val_acc": self._val_acc,
        }
