"""Topological distillation: a raw-signal teacher and a persistence-image teacher -> a raw-signal student.

Sources: TDA-KD (Asilomar 2022 [CODE], TGD GRaM@ICML 2024 [CODE], TPKD
arXiv 2407.05315 [PAPER-FIG eq. 9 + NOTES]). Teachers k = 1, 2 (in the order of the recipe's ``teachers`` list,
each on its own view, e.g. "x" and "pi"), weights a_1 = alpha, a_2 = 1 - alpha; the student reads "x" only.

    L = w_ce   CE(r(z_S), y)                                                    "ce"     [TDA-KD / TGD / TPKD]
      + w_kd   T^2 sum_k a_k KL(sigma(q(z_k)) || sigma(q(z_S)))                 "kd"
      + w_sim  sum_l MSE(n_row(G(F_S^l)), n_row(sum_k a_k G(F_k^l)))            "sim"    [TGD, merged maps]
      + w_orth sum_l L_orth^l                                                   "orth"   [TPKD; OUR form]
      + w_anneal sum_k a_k MSE(z_S, Phi(e) z_k)   (epochs e < anneal_epochs)     "anneal" [Annealing-KD phase 1]

The weights w are recipe terms naming these own losses (``method.terms``); the default is the papers'
(1 - lam) CE + lam KD with lam = 0.99, plus 200 L_orth (TPKD's beta for PAMAP2) and no similarity term:
``[{loss: ce, weight: 0.01}, {loss: kd, weight: 0.99}, {loss: orth, weight: 200}]``. A term may carry a schedule
(``start_epoch``, ``warmup_epochs``, ``ramp``); the feature taps are built only when ``sim`` or ``orth`` is weighed.

* G(F) = F F^T, the B x B similarity map of a layer's activations flattened per sample; n_row: unit L2 rows.
* Temperature rule ``temperature_rule: std`` (TDA-KD code): q(z) = 2 z / std(z) per sample (unbiased std), and
  r(z) = z / std(z) for the CE; T only multiplies (T^2). ``fixed``: q(z) = z / T, r(z) = z (Hinton).
* ``kl_reduction: mean`` is ``nn.KLDivLoss()``'s default (divides by B*C, as the TDA_KD/TGD code does);
  ``batchmean`` divides by B.
* L_orth, TPKD's "orthogonality imposed on feature correlation maps" (the patching and the operator are UNKNOWN, so
  both forms are our choice), ``correlation``:
  ``orthogonal`` (default, the seed's form): the student's correlation maps are pushed to orthogonality,
  ``losses.multiteacher.correlation_orthogonality``: per group of the batch cut into ``patches``, ||n_row(G_S) - I||^2
  / b^2 (the note's "normalise G, then subtract I"), i.e. different samples' features orthogonal.
  ``match`` (the former form): the diagonal block of the merged teacher map and of the student's map is
  row-normalised (P = n_row(block)) and turned into O(P) = P P^T; L_orth^l = mean over groups of
  ||O(P_T) - O(P_S)||_F^2 / b^2 (matching correlations between teacher and student, not orthogonality).
* Annealing (TPKD: "an annealing strategy in KD"; Annealing-KD, Jafari et al. 2021, which TPKD's background cites):
  the "anneal" term's target is the teachers' logits scaled by Phi(e) = 1 - (T_e - 1) / tau_max, where T_e steps
  from tau_max down to 1 in ``anneal_epochs`` equal phases (T_e = max(1, tau_max - floor(e tau_max /
  anneal_epochs))), so the annealed teacher signal grows from z_k / tau_max to z_k. The term runs for the first
  ``anneal_epochs`` epochs (Annealing-KD's phase 1) and is off after; the other terms' per-term schedules
  (``start_epoch``, ``warmup_epochs``) place the KD phase after it (recipes/topo_kd_anneal.yaml).
* ``init: scratch`` (TPKD/TDA-KD initialise the student from a same-architecture model trained from scratch): the
  plan adds a network named ``student_init`` with the student's architecture, trained on the labels with the
  run's ``train`` settings and seed (cached like a teacher), and the student starts from its weights.

With one teacher (``topo_kd_single``: the PI teacher alone) alpha is 1 and the merged map is that teacher's map.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgedistill.config import Recipe, TeacherConfig, TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.multiteacher import correlation_orthogonality
from edgedistill.methods.base import Step
from edgedistill.methods.teachers import TeacherNet, Teachers, freeze
from edgedistill.methods.terms import OwnTermsMethod, weigh_own_terms
from edgedistill.params import Params
from edgedistill.registry import METHODS

INIT_NAME = "student_init"
#: The regime's own losses, weighted by the recipe's terms.
OWN_TERMS = {"ce": "cross-entropy on r(z_S)", "kd": "T^2 sum_k a_k KL to teacher k (a_1 = alpha, a_2 = 1 - alpha)",
             "sim": "merged similarity-map MSE (TGD)", "orth": "orthogonality on feature correlation maps (TPKD; our form)",
             "anneal": "MSE to the annealed teachers' logits Phi(e) z_k during the first anneal_epochs epochs"}
#: (1 - lam) CE + lam KD with lam = 0.99 (TDA-KD), beta = 200 on the orthogonality term (TPKD, PAMAP2), no sim term.
DEFAULT_TERMS = (TermConfig(loss="ce", weight=1.0 - 0.99), TermConfig(loss="kd", weight=0.99),
                 TermConfig(loss="orth", weight=200.0))
FEATURE_TERMS = ("sim", "orth")


def std_scaled(z: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    """factor * z / std(z) per row (unbiased std, floored so a constant row stays finite)."""
    return factor * z / z.std(dim=1, keepdim=True).clamp_min(1e-8)


def kd_term(z_s: torch.Tensor, z_t: torch.Tensor, temperature: float, rule: str = "std",
            reduction: str = "mean") -> torch.Tensor:
    """T^2 KL(sigma(q(z_t)) || sigma(q(z_s))) with the temperature rule q (see the module docstring)."""
    q = (lambda z: std_scaled(z, 2.0)) if rule == "std" else (lambda z: z / temperature)
    kl = F.kl_div(F.log_softmax(q(z_s), dim=1), F.softmax(q(z_t), dim=1), reduction="sum")
    denom = z_s.numel() if reduction == "mean" else z_s.shape[0]
    return temperature**2 * kl / denom


def similarity_map(f: torch.Tensor) -> torch.Tensor:
    """B x B map F F^T of activations flattened per sample."""
    flat = f.reshape(f.shape[0], -1)
    return flat @ flat.t()


def merged_map(teacher_feats: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_k w_k G(F_k): merged before any normalisation (so the teachers' relative scale matters)."""
    return sum(w * similarity_map(f) for f, w in zip(teacher_feats, weights))  # type: ignore[return-value]


def merged_similarity_loss(student_feat: torch.Tensor, teacher_feats: Sequence[torch.Tensor],
                           weights: Sequence[float]) -> torch.Tensor:
    """TGD: MSE(n_row(G(F_S)), n_row(sum_k w_k G(F_k))), the mean over the B x B entries."""
    g_t = F.normalize(merged_map(teacher_feats, weights), dim=1)
    g_s = F.normalize(similarity_map(student_feat), dim=1)
    return F.mse_loss(g_s, g_t)


def annealing_factor(epoch: int, anneal_epochs: int, max_temperature: float) -> float:
    """Phi(e) = 1 - (T_e - 1) / tau_max with T_e = max(1, tau_max - floor(e tau_max / anneal_epochs)) (module docstring);
    1 when annealing is off (anneal_epochs = 0) or over."""
    if anneal_epochs <= 0 or epoch >= anneal_epochs:
        return 1.0
    t = max(1.0, max_temperature - math.floor(epoch * max_temperature / anneal_epochs))
    return 1.0 - (t - 1.0) / max_temperature


def annealed_mse(z_s: torch.Tensor, z_t: torch.Tensor, factor: float) -> torch.Tensor:
    """Annealing-KD's phase-1 loss MSE(z_S, Phi z_T), the mean over B x C."""
    return F.mse_loss(z_s, factor * z_t)


def _patch_bounds(b: int, patches: int) -> list[tuple[int, int]]:
    k = max(1, min(patches, b))
    edges = [round(i * b / k) for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k) if edges[i + 1] > edges[i]]


def correlation_match_loss(student_feat: torch.Tensor, teacher_feats: Sequence[torch.Tensor], weights: Sequence[float],
                       patches: int = 4) -> torch.Tensor:
    """The former (``correlation: match``) form of TPKD's L_orth (module docstring): per diagonal patch,
    ||O(P_T) - O(P_S)||_F^2 / b^2 with P = n_row(block of the map) and O(P) = P P^T; the mean over patches."""
    g_t, g_s = merged_map(teacher_feats, weights), similarity_map(student_feat)
    total = g_s.new_zeros(())
    bounds = _patch_bounds(g_s.shape[0], patches)
    for lo, hi in bounds:
        p_t = F.normalize(g_t[lo:hi, lo:hi], dim=1)
        p_s = F.normalize(g_s[lo:hi, lo:hi], dim=1)
        total = total + ((p_t @ p_t.t() - p_s @ p_s.t()) ** 2).sum() / (hi - lo) ** 2
    return total / len(bounds)


class TopoKDParams(Params):
    alpha: float = Field(0.3, ge=0.0, le=1.0, description="weight of the first teacher (raw signal); the second (PI) "
                                                         "gets 1 - alpha; ignored with one teacher")
    temperature: float = Field(4.0, gt=0.0, description="T: multiplies the KD terms by T^2 (and divides the logits "
                                                        "under the 'fixed' rule)")
    temperature_rule: Literal["std", "fixed"] = Field(
        "std", description="std: q(z) = 2 z / std(z) per sample (TDA-KD); fixed: q(z) = z / T (Hinton)")
    kl_reduction: Literal["mean", "batchmean"] = Field(
        "mean", description="mean: KL divided by B*C (nn.KLDivLoss default, as the TDA-KD code); batchmean: by B")
    patches: int = Field(4, ge=1, le=4096, description="contiguous batch groups of the orthogonality loss (at most "
                                                       "the batch size: a smaller last batch uses fewer)")
    correlation: Literal["orthogonal", "match"] = Field(
        "orthogonal", description="orth term: orthogonal (the seed: the student's correlation maps pushed to the "
                                  "identity) or match (the former form: teacher and student correlations matched)")
    anneal_epochs: int = Field(0, ge=0, le=100_000, description="epochs of the annealing phase (the 'anneal' term, "
                                                                "teachers' logits scaled by Phi(e)); 0: no annealing")
    anneal_max_temperature: float = Field(10.0, ge=1.0, le=1000.0, description="tau_max of the annealing schedule")
    layers: Optional[list[str]] = Field(None, description="tapped layers (names in the models' default_taps or "
                                                          "module paths); default: stage1, stage2, feat")
    init: Literal["scratch", "none"] = Field(
        "scratch", description="scratch: the student starts from a same-architecture network trained on the labels "
                               "(planned as the extra network 'student_init'); none: random initialisation")


@METHODS.register("topo_kd")
class TopoKD(OwnTermsMethod):
    """One or two frozen teachers on their own views (raw signal, persistence images) -> raw-signal student."""

    Params = TopoKDParams
    own_terms = OWN_TERMS
    default_terms = DEFAULT_TERMS
    task = "classification"

    def __init__(self, student: nn.Module, info: DataInfo, teachers: Sequence[TeacherNet],
                 terms: Sequence[TermConfig] = (), **params: Any) -> None:
        super().__init__(student, info, terms, **params)
        teachers = list(teachers or [])
        init_net = next((t for t in teachers if t.name == INIT_NAME), None)
        try:
            self.teachers = Teachers([t for t in teachers if t.name != INIT_NAME], info, self.method_name(), minimum=1,
                                     maximum=2, hint=" (1: PI; 2: raw signal, PI)")
        except UserInputError as exc:
            if ".view:" not in str(exc):
                raise
            raise UserInputError(f"{exc} (the 'pi' view needs data.topology)") from None
        p = self.params
        self.teacher = self.teachers[-1].model
        self.weights = [1.0] if len(self.teachers) == 1 else [p.alpha, 1.0 - p.alpha]
        self.layers = list(p.layers) if p.layers is not None else ["stage1", "stage2", "feat"]
        if init_net is not None:
            freeze(init_net.model)  # a planned network like the teachers: never trained or switched to train mode here
            if p.init == "scratch":
                # Initialisation from a same-architecture network trained from scratch (TDA-KD/TGD --student-checkpoint).
                student.load_state_dict(init_net.model.state_dict())
        weighed = {t.label for t in self.terms if t.weight != 0.0}
        if "anneal" in weighed and p.anneal_epochs == 0:
            raise UserInputError("method.terms: the 'anneal' term runs during the first method.params.anneal_epochs "
                                 "epochs; set anneal_epochs > 0 (e.g. 20) or drop the term")
        self._student_taps: Any = None
        self._teacher_taps: list[Any] = [None] * len(self.teachers)
        if weighed & set(FEATURE_TERMS):
            from edgedistill.models import FeatureTaps

            def taps(model: nn.Module, role: str, detach: bool) -> Any:
                defaults = getattr(model, "default_taps", {})
                try:
                    return FeatureTaps(model, {n: defaults.get(n, n) for n in self.layers}, detach=detach)
                except UserInputError as exc:
                    raise UserInputError(f"method.params.layers ({role}): {exc}") from None

            self._student_taps = taps(student, "student", False)
            # The orthogonal form reads the student's maps only; the teachers' are tapped when a term compares them.
            if "sim" in weighed or ("orth" in weighed and p.correlation == "match"):
                self._teacher_taps = [taps(t.model, f"teacher {t.name}", True) for t in self.teachers]

    @classmethod
    def teacher_plan(cls, recipe: Recipe, seed: int) -> list[TeacherConfig]:
        plan = recipe.teacher_specs()
        if cls.Params.parse(recipe.method.params, "method.params").init == "scratch":
            spec = {**recipe.student.kwargs, "model": recipe.student.model, "train": recipe.train, "seed": seed,
                    "name": INIT_NAME}
            plan.append(TeacherConfig.model_validate(spec))
        return plan

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self.teachers.place(device)

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        p = self.params
        if self._student_taps is None:
            z_s, f_s = self.networks["student"](batch["x"]), {}
        else:
            with self._student_taps:
                z_s = self.networks["student"](batch["x"])
            f_s = dict(self._student_taps.outputs)
        # Live, on each teacher's own view: the similarity maps need the teachers' features of this very batch.
        z_t, f_t = [], []
        for k, tap in enumerate(self._teacher_taps):
            z_t.append(self.teachers.run(batch, k, taps=tap).to(z_s.dtype))
            f_t.append(dict(tap.outputs) if tap is not None else {})
        ce_in = std_scaled(z_s) if p.temperature_rule == "std" else z_s
        anneal = annealing_factor(step.epoch, p.anneal_epochs, p.anneal_max_temperature)
        losses = {
            "ce": lambda: F.cross_entropy(ce_in, batch["y"]),
            "kd": lambda: sum(w * kd_term(z_s, z, p.temperature, p.temperature_rule, p.kl_reduction)
                              for z, w in zip(z_t, self.weights)),
            "sim": lambda: sum(merged_similarity_loss(f_s[n], [f[n] for f in f_t], self.weights) for n in self.layers),
            "orth": lambda: sum(self._orth(f_s[n], n, f_t) for n in self.layers),
            # Annealing-KD's phase 1 only: after anneal_epochs the term is off (and not computed).
            "anneal": lambda: (sum(w * annealed_mse(z_s, z, anneal) for z, w in zip(z_t, self.weights))
                               if step.epoch < p.anneal_epochs else z_s.new_zeros(())),
        }
        return weigh_own_terms(self.terms, losses, step, z_s)

    def _orth(self, f_s: torch.Tensor, layer: str, f_t: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """L_orth of one layer in the form ``correlation`` names (module docstring)."""
        p = self.params
        if p.correlation == "match":
            return correlation_match_loss(f_s, [f[layer] for f in f_t], self.weights, p.patches)
        return correlation_orthogonality(f_s, patches=min(p.patches, f_s.shape[0]))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "teachers": self.teachers.names, "weights": self.weights,
                "layers": self.layers, "correlation": self.params.correlation}
