"""Intra-class Patch Swap (ICPS) self-distillation: one network, no teacher.

Choi, Jeon, Shukla, Turaga, "Intra-class Patch Swap for Self-Distillation", Neurocomputing 2025,
arXiv 2505.14124. For each training sample x_a the method draws another training
sample x_b of the same class, swaps a random set of patches between them with probability p_r
(``edgedistill.augment.patch_swap``) and distils, per pair, from the more confident view to the other::

    L = CE(f(x~a), y) + CE(f(x~b), y) + lambda * tau^2 * mean_i KL( sg[softmax(z_T,i / tau)] || softmax(z_S,i / tau) )

(T, S) = (a, b) if p_a(y) >= p_b(y) else (b, a), with p = softmax(z) at temperature 1 (docs/methods/patch_swap.md). This loss
is the spec's *hypothesis* [RECALL, unverified]: the paper's code could not be read. The abstract establishes
only the teacher-free pairing of same-class samples of different confidence and an instance-to-instance KL.

What we chose (the paper's values are UNKNOWN): the swapped patches are an exact fraction ``swap_ratio`` of
the patches, drawn uniformly per pair; ``patch`` defaults to 1/8 of each spatial dimension, rounded up (8
segments of a series, an 8 x 8 grid of an image); the KL is one-directional, the teacher chosen per sample; an
unswapped pair (probability 1 - p_r) is still distilled between its two original samples; both views go
through the network in one batch (BatchNorm sees both).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
from pydantic import Field, field_validator
from torch import nn

from edgedistill.augment.patch_swap import ClassRows, patch_sizes, patch_swap
from edgedistill.config import TermConfig
from edgedistill.data.dataset import Batch, DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd
from edgedistill.methods.base import Step
from edgedistill.methods.terms import OwnTermsMethod, weigh_own_terms
from edgedistill.params import Params
from edgedistill.registry import METHODS


def icps_loss(za: torch.Tensor, zb: torch.Tensor, target: torch.Tensor, temperature: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE_a + CE_b, tau^2 * batch-mean KL(sg[p_T^tau] || p_S^tau)); per row the teacher is the view whose
    softmax (tau = 1) gives the true class the higher probability (view a on ties)."""
    with torch.no_grad():
        rows = torch.arange(len(target), device=target.device)
        teacher_is_a = torch.softmax(za, 1)[rows, target] >= torch.softmax(zb, 1)[rows, target]
    pick = teacher_is_a[:, None]
    z_teacher = torch.where(pick, za, zb).detach()  # stop-gradient: the confident view is a fixed target
    z_student = torch.where(pick, zb, za)
    return ce(za, target) + ce(zb, target), kd(z_student, z_teacher, temperature)


def _patch(patch: Union[int, float, Sequence[Union[int, float]]], spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Patch length per spatial dimension: an int is a length in samples, a float in (0, 1] a fraction of the
    dimension (rounded up), so one recipe fits any series length or image size; one value or one per dim."""
    values = list(patch) if isinstance(patch, (list, tuple)) else [patch] * len(spatial)
    if len(values) != len(spatial):
        raise UserInputError(f"method.params.patch: expected a number or {len(spatial)} numbers (one per spatial "
                             f"dimension of {spatial}), got {patch!r}")
    sizes = [math.ceil(v * s) if isinstance(v, float) else v for v, s in zip(values, spatial)]
    try:
        return patch_sizes(spatial, sizes)
    except UserInputError as exc:
        raise UserInputError(f"method.params.patch: {exc}") from None


#: The regime's own losses, weighted by the recipe's terms (default: both 1, lambda = 1).
OWN_TERMS = {"ce": "cross-entropy of both patch-swapped views", "icps_kd": "instance-to-instance KD, the more "
             "confident view teaching the other"}
DEFAULT_TERMS = (TermConfig(loss="ce", weight=1.0), TermConfig(loss="icps_kd", weight=1.0))


class PatchSwapParams(Params):
    patch: Union[int, float, list[Union[int, float]]] = Field(
        0.125, description="patch length per spatial dimension: an int in samples, a float in (0, 1] a fraction of "
                           "the dimension (rounded up); one value for every dimension or one per dimension")
    swap_prob: float = Field(0.5, ge=0.0, le=1.0, description="probability p_r that a pair swaps patches at all")
    swap_ratio: float = Field(0.5, ge=0.0, le=1.0, description="fraction of the patches a swapped pair exchanges")
    temperature: float = Field(4.0, gt=0.0, description="temperature tau of the KD term (tau^2 scaling)")

    @field_validator("patch")
    @classmethod
    def _fractions_in_unit_interval(cls, value: Union[int, float, list[Union[int, float]]]) -> Any:
        if any(isinstance(v, float) and not 0.0 < v <= 1.0 for v in (value if isinstance(value, list) else [value])):
            raise ValueError("a fraction must be in (0, 1] (an integer is a length in samples)")
        return value


@METHODS.register("patch_swap")
class IntraClassPatchSwap(OwnTermsMethod):
    """Self-distillation between two patch-swapped views of same-class pairs (teacher-free)."""

    Params = PatchSwapParams
    own_terms = OWN_TERMS
    default_terms = DEFAULT_TERMS
    task = "classification"
    trains_own_teacher = "the more confident view of a pair teaches the other"


    def __init__(self, student: nn.Module, info: DataInfo, terms: Sequence[TermConfig] = (), **params: Any) -> None:
        super().__init__(student, info, terms, **params)
        self.patch = _patch(self.params.patch, tuple(info.views["x"][1:]))  # the sizes, from the data's shape
        self._x: Optional[torch.Tensor] = None
        self._classes: Optional[ClassRows] = None
        self._seed = 0

    def setup(self, train: TensorData, device: torch.device, val: Optional[TensorData] = None) -> None:
        # Partners come from the whole training split, not the batch: every sample has one of its class.
        self._x = train.x.to(device)
        self._classes = ClassRows(train.y)
        # The engine seeds torch with the run seed just before training: pairs and masks follow it, and are
        # drawn from a generator derived from the step, so a resumed run draws the same ones.
        self._seed = torch.initial_seed()

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        if self._x is None or self._classes is None:
            raise RuntimeError("patch_swap: setup() must run before training_step()")
        g = torch.Generator().manual_seed((self._seed * 1_000_003 + step.step + 1) % 2**63)
        partner = self._classes.partners(batch["index"], g).to(self._x.device)
        p = self.params
        xa, xb = patch_swap(batch["x"], self._x[partner], self.patch, generator=g, ratio=p.swap_ratio, p=p.swap_prob)
        za, zb = self.networks["student"](torch.cat([xa, xb])).chunk(2)
        ce_ab, kl = icps_loss(za, zb, batch["y"], p.temperature)
        return weigh_own_terms(self.terms, {"ce": lambda: ce_ab, "icps_kd": lambda: kl}, step, za)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "patch_sizes": list(self.patch)}
