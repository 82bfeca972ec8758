"""Weighted ensemble of teaching assistants (Ganta, Das Gupta, Sheng, arXiv 2206.12005).

Several assistants (TAs), each distilled from the teacher, are combined with weights found by differential
evolution (DE); the student distils from the weighted ensemble:

    p_ens,i = sum_k w_k softmax(z_k,i / T),   w on the simplex (w_k >= 0, sum_k w_k = 1)
    L       = (1 - alpha) CE(z_s, y) + alpha T^2 mean_i KL(p_ens,i || softmax(z_s,i / T))

What the abstract fixes: several TAs, weighted ensemble, weights from DE. What it does not (spec
shared/methods/others.md section 3, all UNKNOWN) and what we chose:

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
* KD form: TAKD's (batch-mean KL, T^2 scaled); alpha = 0.9, T = 4 as in the quickstart.
The TA logits are fixed (frozen, eval mode), so the targets are computed once in ``setup``.
"""
from __future__ import annotations

from typing import Annotated, Any, Optional, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.multiteacher import average_probs
from edgedistill.losses.response import ce, kd_to_distribution
from edgedistill.methods.base import Method, Step
from edgedistill.methods.teachers import TeacherNet, Teachers
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
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the KD term; 1 - alpha weighs the CE term")
    temperature: float = Field(4.0, gt=0.0, description="softmax temperature of the ensemble target and the KD term")
    weights: Optional[list[Annotated[float, Field(ge=0.0)]]] = Field(
        None, description="fixed ensemble weights, one per member (renormalised); default: found by differential "
                          "evolution on the validation split")
    de_seed: int = Field(0, ge=0, description="seed of the differential evolution")
    de_maxiter: int = Field(100, ge=1, description="differential evolution generations (no early stop)")
    de_popsize: int = Field(15, ge=1, description="differential evolution population size multiplier (scipy's popsize)")
    nll_weight: float = Field(1e-3, ge=0.0, description="weight of the validation NLL that breaks accuracy ties in "
                                                        "the DE objective")

    @field_validator("weights")
    @classmethod
    def _positive_sum(cls, value: Optional[list[float]]) -> Optional[list[float]]:
        if value is not None and sum(value) <= 0:
            raise ValueError(f"non-negative numbers with a positive sum (one per assistant), got {value}")
        return value


@METHODS.register("ta_ensemble")
class TAEnsemble(Method):
    """The student distils from a DE-weighted probability ensemble of frozen teaching assistants."""

    Params = TAEnsembleParams

    def __init__(self, student: nn.Module, info: DataInfo, teachers: list[TeacherNet], **params: Any) -> None:
        super().__init__(student, info, **params)
        members, weights = self.params.members, self.params.weights
        names = [t.name for t in teachers]
        if members is None:
            chosen = [t for t in teachers if t.config.distill_from is not None]
        else:
            for m in members:
                if m not in names:
                    raise UserInputError(f"method.params.members: no teacher named '{m}'; teachers are: {', '.join(names)}")
            if len(set(members)) != len(members):
                raise UserInputError(f"method.params.members: a name is listed twice: {members}")
            chosen = [teachers[names.index(m)] for m in members]
        if len(chosen) < 2:
            key = "method.params.members" if members is not None else "teachers"
            raise UserInputError(
                f"{key}: ta_ensemble needs at least two assistants (teachers with 'distill_from', or names in "
                f"method.params.members), got {len(chosen)}: {[t.name for t in chosen]}"
            )
        for t in chosen:
            if t.view != "x":
                raise UserInputError(f"teachers[{names.index(t.name)}].view: ta_ensemble members read the student's view 'x'")
        self.teachers = Teachers(chosen, info, self.method_name(), minimum=2, task="classification",
                                 why="weights classifiers' probabilities")
        if weights is not None and len(weights) != len(chosen):
            raise UserInputError(
                f"method.params.weights: {len(chosen)} non-negative numbers with a positive sum (one per assistant), got {weights}"
            )
        if weights is None and info.sizes.get("val", 1) == 0:
            raise UserInputError("data.split.val: ta_ensemble finds its weights on the validation split; it has none")
        self.assistants = self.teachers.names
        self.teacher = self.teachers[-1].model  # needs_teacher; the targets come from all members
        self.weights: Optional[torch.Tensor] = None
        self._targets: Optional[torch.Tensor] = None
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
        train_logits = [self.teachers.outputs(train, device, k) for k in range(len(self.teachers))]
        self._targets = average_probs(train_logits, p.temperature, self.weights.to(device))
        self._ensemble = ProbabilityEnsemble(self.teachers.models, self.weights.tolist()).to(device).eval()

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        s = self.networks["student"](batch["x"])
        q = self._targets[batch["index"].to(self._targets.device)]  # type: ignore[index]
        alpha = self.params.alpha
        return {"ce": (1 - alpha) * ce(s, batch["y"]), "kd": alpha * kd_to_distribution(s, q, self.params.temperature)}

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
