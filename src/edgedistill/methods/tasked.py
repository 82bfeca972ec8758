"""TASKED: a (transformer) HAR model trained with subject-adversarial alignment, MMD and teacher-free self-KD.

Suh, Fortes Rey, Lukowicz, "TASKED: Transformer-based Adversarial learning for human activity recognition
using wearable sensors via Self-KnowledgE Distillation", Knowledge-Based Systems 260:110143 (2023),
arXiv 2209.09092. No official code exists; the abstract names the parts, not their
formulas, so every formula below is a standard form we chose (docs/methods/tasked.md, "What we chose")::

    L = w_ce   CE(z, y)                                           "ce"           task loss
      + w_kd   T^2 KL(p^d_T || softmax(z / T))                    "self_kd"      teacher-free self-KD (Tf-KD_reg)
      + w_adv  CE(D(GRL(e)), s)                                   "adversarial"  subject-adversarial alignment (DANN)
      + w_mmd  r(p) mean_{a<b} MMD^2_sigma(e[s = a], e[s = b])    "mmd"          MMD between the subjects of the batch

The weights w are recipe terms naming these four own losses (``method.terms``; default 0.5, 0.5, 0.1, 0.5, i.e.
alpha = 0.5 between CE and self-KD); a term may carry a schedule, which multiplies its weight. DANN's ramp r(p) is
part of the method, not a weight: it runs per step over training progress, inside the ``mmd`` loss and the GRL.

``e`` is the model's pooled embedding (tap ``emb``), ``s`` the subject id (``batch["group"]``), ``D`` an MLP
subject classifier (trained, checkpointed, not the deliverable). The gradient-reversal layer (GRL) is the
identity forward and multiplies the gradient by ``-grl_max r(p)`` backward; ``r(p) = 2 / (1 + exp(-grl_gamma
p)) - 1`` is DANN's ramp over training progress ``p``: 0 at the start, so the model first learns the task and
the subject classifier learns the subjects, and the same ramp scales the MMD weight. MMD^2 is the biased
Gaussian-kernel V-statistic of ``losses.relation.mmd``, averaged over every unordered pair of subjects with
at least 2 windows in the batch; by default class-balanced over the activities both subjects show (without
it, the different activity mix of ~6 windows per subject is penalised as if it were a subject difference and
training stalls at chance, measured). The bandwidth sigma is the median pairwise distance of the batch's
embeddings (detached) unless ``mmd_sigma`` fixes it, so shrinking all embeddings cannot make the term vanish.
The self-KD target p^d is ``losses.virtual.virtual_teacher``: probability ``correct_prob`` on the label, the rest
uniform, softened as softmax(log p^d / T) (``losses.virtual.soften``); with only the ``ce`` and ``self_kd`` terms this
method is exactly ``tfkd`` (terms ce and kd at the same weights and T).
"""
from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from pydantic import Field
from torch import nn

from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd_to_distribution
from edgedistill.losses.virtual import soften, virtual_teacher
from edgedistill.methods.base import Step
from edgedistill.methods.teachers import evaluating
from edgedistill.methods.terms import OwnTermsMethod, weigh_own_terms
from edgedistill.params import Params
from edgedistill.registry import METHODS

if TYPE_CHECKING:
    from edgedistill.models.taps import FeatureTaps


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Gradient-reversal layer (Ganin & Lempitsky 2015): identity forward, gradient times ``-scale`` backward."""
    return _GradReverse.apply(x, scale)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's adaptation factor 2 / (1 + exp(-gamma p)) - 1: 0 at p = 0, -> 1 as training goes on."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def _sq_distances(e: torch.Tensor) -> torch.Tensor:
    # The expansion (as in losses.relation.mmd) has a finite gradient at zero distance, unlike cdist's sqrt.
    sq = e.pow(2).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * e @ e.T).clamp_min(0.0)


def median_bandwidth(emb: torch.Tensor) -> float:
    """The median heuristic: median Euclidean distance between distinct rows (detached; 1 if all coincide)."""
    e = emb.detach().reshape(emb.shape[0], -1)
    d = _sq_distances(e)[~torch.eye(len(e), dtype=torch.bool, device=e.device)].sqrt()
    med = float(d.median()) if d.numel() else 0.0
    return med if med > 1e-6 else 1.0


def subject_mmd(emb: torch.Tensor, subject: torch.Tensor, sigma: Optional[float] = None,
                labels: Optional[torch.Tensor] = None, min_windows: int = 2) -> torch.Tensor:
    """Mean over all unordered pairs (a, b) of subjects with >= ``min_windows`` rows of the biased Gaussian
    MMD^2 between their embeddings (subject < 0: unknown, skipped). Zero, on the graph, if no pair qualifies.

    Each pair is u^T K u with K_ij = exp(-|e_i - e_j|^2 / (2 sigma^2)) and u = w_a - w_b: with w_a = 1/n_a on
    subject a's rows this is exactly ``losses.relation.mmd(e[a], e[b], sigma)`` (one kernel matrix serves every
    pair). With ``labels`` the weights are class-balanced over the classes both subjects show in the batch
    (w_a,i = 1 / (m_ab n_a,c_i), Yan et al. 2017's weighted MMD), so a different mix of activities among a
    subject's few windows is not counted as a subject difference. ``sigma`` None: the median heuristic.
    """
    e = emb.reshape(emb.shape[0], -1)
    ids, counts = torch.unique(subject[subject >= 0], return_counts=True)
    present = ids[counts >= min_windows]
    if len(present) < 2:
        return e.sum() * 0.0
    member = (subject[:, None] == present[None, :]).to(e.dtype)  # (B, S)
    ia, ib = torch.triu_indices(len(present), len(present), 1, device=e.device)
    if labels is None:
        w = member / member.sum(0)
        u = w[:, ia] - w[:, ib]  # (B, P)
    else:
        n = member.T @ nn.functional.one_hot(labels.long()).to(e.dtype)  # (S, C) windows per subject and class
        shared = (n[ia] > 0) & (n[ib] > 0)  # (P, C) classes both subjects show
        keep = shared.any(1)
        ia, ib, shared = ia[keep], ib[keep], shared[keep].to(e.dtype)
        if len(ia) == 0:
            return e.sum() * 0.0
        per_class = shared / shared.sum(1, keepdim=True)  # (P, C): each shared class weighs 1 / m_ab

        def side(i: torch.Tensor) -> torch.Tensor:  # (B, P): row weight inside subject i of each pair
            return member[:, i] * (per_class / n[i].clamp_min(1.0))[:, labels].T

        u = side(ia) - side(ib)
    bw = median_bandwidth(e) if sigma is None else sigma
    k = torch.exp(-_sq_distances(e) / (2.0 * bw**2))
    return ((k @ u) * u).sum(0).mean()


#: The regime's own losses, weighted by the recipe's terms.
OWN_TERMS = {"ce": "task cross-entropy", "self_kd": "T^2 KL to the Tf-KD_reg virtual teacher",
             "adversarial": "subject classifier's CE behind the gradient-reversal layer (its weight 0: no classifier)",
             "mmd": "subject MMD times DANN's ramp"}
#: alpha = 0.5 between the task CE and self-KD, w_adv = 0.1, w_mmd = 0.5 (set once before any run, not tuned).
DEFAULT_TERMS = (TermConfig(loss="ce", weight=1.0 - 0.5), TermConfig(loss="self_kd", weight=0.5),
                 TermConfig(loss="adversarial", weight=0.1), TermConfig(loss="mmd", weight=0.5))


class TaskedParams(Params):
    temperature: float = Field(4.0, gt=0.0, description="temperature T of the self-KD term (T^2 scaling)")
    correct_prob: float = Field(0.9, ge=0.0, le=1.0, description="the virtual teacher's probability on the true "
                                                                "class, at least 1/C (the rest spread uniformly)")
    mmd_sigma: Optional[float] = Field(None, gt=0.0, description="Gaussian kernel bandwidth of the MMD; null: the "
                                                                 "median heuristic on each batch")
    mmd_class_balanced: bool = Field(True, description="weight each subject pair's MMD over the activities both show")
    grl_max: float = Field(1.0, ge=0.0, description="gradient-reversal scale at the end of the ramp")
    grl_gamma: float = Field(10.0, ge=0.0, description="steepness gamma of DANN's ramp 2 / (1 + exp(-gamma p)) - 1")
    subject_hidden: int = Field(64, gt=0, le=65_536, description="hidden width of the MLP subject classifier")
    embedding_tap: str = Field("emb", description="the student's embedding the alignment reads (a tap name or "
                                                  "module path)")


@METHODS.register("tasked")
class Tasked(OwnTermsMethod):
    """Task CE + Tf-KD_reg self-distillation + subject-adversarial (GRL) and MMD alignment of the embedding."""

    Params = TaskedParams
    own_terms = OWN_TERMS
    default_terms = DEFAULT_TERMS
    task = "classification"
    task_why = "recognises activities"
    trains_own_teacher = "it distils from a virtual teacher built from the labels"

    def __init__(self, student: nn.Module, info: DataInfo, terms: Sequence[TermConfig] = (),
                 train: Optional[TensorData] = None, **params: Any) -> None:
        super().__init__(student, info, terms, **params)
        p, c = self.params, info.n_outputs
        if p.correct_prob < 1.0 / c:
            raise UserInputError(f"method.params.correct_prob: expected a number in [1/C, 1] = [{1 / c:.3g}, 1], "
                                 f"got {p.correct_prob!r}")
        weighs = {t.label for t in self.terms if t.weight != 0.0}
        self.aligns = bool(weighs & {"adversarial", "mmd"})
        self._subjects = torch.zeros(0, dtype=torch.long)
        self._taps: Optional[FeatureTaps] = None
        if not self.aligns:
            return  # the embedding is only read for subject alignment
        self._subjects = self._training_subjects(info, train)
        from edgedistill.models import FeatureTaps

        spec = getattr(student, "default_taps", {}).get(p.embedding_tap, p.embedding_tap)
        try:
            self._taps = FeatureTaps(student, {"emb": spec})
        except UserInputError as exc:
            raise UserInputError(f"method.params.embedding_tap: {exc}") from None
        if "adversarial" in weighs:
            dim = self._embedding_dim(student, info)
            self.networks["subject_classifier"] = nn.Sequential(
                nn.Linear(dim, p.subject_hidden), nn.ReLU(), nn.Linear(p.subject_hidden, len(self._subjects)))

    @staticmethod
    def _training_subjects(info: DataInfo, train: Optional[TensorData]) -> torch.Tensor:
        """Sorted subject ids of the training split; a clear error when the data has none."""
        if not info.has_groups or train is None or train.group is None:
            raise UserInputError(
                f"data: method 'tasked' aligns subjects and needs subject ids, but dataset '{info.name}' has none "
                "(use data with a subject/group column, e.g. data.name: synthetic), or weigh only ce and self_kd, "
                "method.terms: [{loss: ce, weight: 0.5}, {loss: self_kd, weight: 0.5}], to train with "
                "self-distillation only"
            )
        ids = torch.unique(train.group[train.group >= 0])
        if len(ids) < 2:
            raise UserInputError(f"data: method 'tasked' aligns subjects, but the training split holds {len(ids)} "
                                 "subject(s); it needs at least 2 (split by subject with more subjects)")
        return ids

    def _embedding_dim(self, student: nn.Module, info: DataInfo) -> int:
        with evaluating(student), torch.no_grad(), self._taps:
            student(torch.zeros(2, *info.input_shape))
        if "emb" not in self._taps.outputs:
            raise UserInputError(f"method.params.embedding_tap: '{self._taps.paths['emb']}' is not run by forward()")
        return int(self._taps.outputs["emb"][0].numel())

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        self._subjects = self._subjects.to(device)

    def subject_index(self, group: torch.Tensor) -> torch.Tensor:
        """Raw subject ids -> 0..S-1 (the classifier's classes); -1 for unknown ids or ids not in training."""
        if len(self._subjects) == 0:
            return torch.full_like(group, -1)
        pos = torch.searchsorted(self._subjects, group).clamp(max=len(self._subjects) - 1)
        return torch.where(self._subjects[pos] == group, pos, torch.full_like(pos, -1))

    def ramp(self, step: Step) -> float:
        """DANN's schedule, 0 -> 1 over training: the GRL's scale (times grl_max) and the MMD weight's factor."""
        return dann_lambda(step.progress, self.params.grl_gamma)

    def self_kd(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """T^2 KL(p^d_T || softmax(z / T)), batch mean: zero when z = log p^d + a per-row constant."""
        t = self.params.temperature
        p = soften(virtual_teacher(target, logits.shape[1], self.params.correct_prob).to(logits.dtype), t)
        return kd_to_distribution(logits, p, t)

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        with self._taps or contextlib.nullcontext():
            z = self.networks["student"](batch["x"])
        y, p = batch["y"], self.params
        if self.aligns:
            assert self._taps is not None
            emb = self._taps.outputs["emb"].reshape(len(z), -1)
            subject = self.subject_index(batch["group"])

        def adversarial() -> torch.Tensor:
            known = subject >= 0
            logits = self.networks["subject_classifier"](grad_reverse(emb[known], p.grl_max * self.ramp(step)))
            # A batch with no known subject still returns the term (0, on the graph) so the log has every key.
            return ce(logits, subject[known]) if known.any() else logits.sum() * 0.0

        def mmd() -> torch.Tensor:
            labels = y if p.mmd_class_balanced else None
            return self.ramp(step) * subject_mmd(emb, subject, p.mmd_sigma, labels)

        losses = {"ce": lambda: ce(z, y), "self_kd": lambda: self.self_kd(z, y), "adversarial": adversarial, "mmd": mmd}
        return weigh_own_terms(self.terms, losses, step, z)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "subjects": len(self._subjects)}
