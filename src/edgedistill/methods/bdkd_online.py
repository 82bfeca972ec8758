"""BD-KD (online): a large network and the compact student trained together, each distilling from the other;
the student's distillation loss balances forward and reverse KL per sample.

Amara, Sepahvand, Meyer, Gross, Clark, "BD-KD: Balancing the Divergences for Online Knowledge Distillation",
arXiv 2212.12965. The abstract: logit-based online KD that adaptively balances the reverse and forward divergences
"at the level of the student distillation loss", shifting the focus to the compact student "without limiting the
teacher network's learning process", for accuracy and calibration (ECE). Losses (docs/methods/bdkd.md)::

    L_S = (1-a) CE(z_S, y) + a T^2 mean_i [ (1-w_i) KL(p_L,i || p_S,i) + w_i KL(p_S,i || p_L,i) ],  z_L detached
    L_L = (1-a) CE(z_L, y) + a T^2 mean_i [ (1-v_i) KL(p_S,i || p_L,i) + v_i KL(p_L,i || p_S,i) ],  z_S detached

p = softmax(z / T). ``balance`` says where the per-sample balance applies:

* ``student`` (default, the seed's form): w_i from the rule below, v_i = 0: the large network keeps the plain online
  KD loss (its forward KL to the student, as in DML), so only the student's loss is balanced.
* ``both`` (the former default): the rule mirrored on the large network, v_i = the same gate with S and L swapped =
  1 - w_i, so both losses use the SAME per-sample divergence D_i = (1-w_i) KL(p_L||p_S) + w_i KL(p_S||p_L).
* ``none``: w = v = 0: standard online KD (DML with two peers, scaled by a, T).

The weight rule is UNKNOWN (no code, paper body unread). OUR choice: the entropy-gap gate of
``edgedistill.losses.response_extra.balanced_kd_weights``: w_i = sigmoid((H(p_S,i) - H(p_L,i)) / (log C * gate_width)),
more reverse (mode-seeking, sharpening) KL where the student is less confident than the large network.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import torch
from pydantic import Field
from torch import nn

from edgedistill.config import ModelConfig, TermConfig
from edgedistill.data.dataset import Batch, DataInfo
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd
from edgedistill.losses.response_extra import balanced_kd
from edgedistill.methods.base import Step
from edgedistill.methods.terms import OwnTermsMethod, weigh_own_terms
from edgedistill.models.online import build_online_network, check_online_outputs
from edgedistill.params import Params
from edgedistill.registry import METHODS


def balanced_term(own: torch.Tensor, other: torch.Tensor, temperature: float, gate_width: float, balanced: bool) -> torch.Tensor:
    """One network's distillation term: T^2 mean_i [(1-w_i) KL(p_other||p_own) + w_i KL(p_own||p_other)], other
    detached; w from the entropy gap (``balanced_kd_weights``, ``own`` in the student role), or w = 0 (forward KL
    only) when not balanced."""
    other = other.detach()
    if balanced:
        return balanced_kd(own, other, temperature=temperature, gate_width=gate_width)
    return kd(own, other, temperature=temperature)


#: Each network's loss is its own CE and its balanced KL to the other; the recipe's terms weight the four.
OWN_TERMS = {"ce_student": "the student's label cross-entropy", "kl_student": "the student's balanced KL to the large "
             "network", "ce_large": "the large network's label cross-entropy", "kl_large": "the large network's "
             "KL to the student (forward; balanced with balance: both)"}
#: alpha = 0.5: (1 - alpha) CE + alpha KL for both networks.
DEFAULT_TERMS = tuple(TermConfig(loss=name, weight=0.5) for name in OWN_TERMS)


class OnlineBalancedKDParams(Params):
    large: Optional[ModelConfig] = Field(None, description="required: the large network's model section ({model: "
                                                           "name, **knobs}), trained from scratch with the student")
    temperature: float = Field(1.0, gt=0.0, description="temperature T of the KL terms (T^2 scaling)")
    gate_width: float = Field(0.1, ge=0.0, description="width of the entropy-gap gate, in units of log C (0: a hard "
                                                       "switch)")
    balance: Literal["student", "both", "none"] = Field(
        "student", description="where the per-sample forward/reverse KL balance applies: student (the seed: the "
                               "student's loss only), both (mirrored on the large network), none (online KD = DML)")


@METHODS.register("bdkd")
class OnlineBalancedKD(OwnTermsMethod):
    """Student + a large network trained together, each distilling from the other; the student's KL (and with
    ``balance: both`` the large network's too) balances forward and reverse KL per sample."""

    Params = OnlineBalancedKDParams
    own_terms = OWN_TERMS
    default_terms = DEFAULT_TERMS
    task = "classification"
    trains_own_teacher = "its large network trains with the student from scratch, set in method.params.large"


    def __init__(self, student: nn.Module, info: DataInfo, terms: Sequence[TermConfig] = (), **params: Any) -> None:
        super().__init__(student, info, terms, **params)
        large = self.params.large
        if large is None:
            raise UserInputError("method.params.large: required: the large network trained with the student, "
                                 "e.g. {model: fcn, width: 0.5}")
        self.networks["large"] = build_online_network(large, info, "method.params.large")
        check_online_outputs(self.networks["large"], info, "method.params.large")

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        z_s = self.networks["student"](batch["x"])
        z_l = self.networks["large"](batch["x"])
        t, g, balance = self.params.temperature, self.params.gate_width, self.params.balance
        losses = {
            "ce_student": lambda: ce(z_s, batch["y"]),
            "kl_student": lambda: balanced_term(z_s, z_l, t, g, balance != "none"),
            "ce_large": lambda: ce(z_l, batch["y"]),
            "kl_large": lambda: balanced_term(z_l, z_s, t, g, balance == "both"),
        }
        return weigh_own_terms(self.terms, losses, step, z_s)

    def evaluated(self) -> dict[str, nn.Module]:
        return {f"large ({self.params.large.model})": self.networks["large"]}

    def describe(self) -> dict[str, Any]:
        weights = {"student": "entropy gap (ours) on the student's loss; large network: forward KL",
                   "both": "entropy gap (ours) on both networks' losses", "none": "w = v = 0 (online KD)"}
        return {**super().describe(), "balance": self.params.balance, "weights": weights[self.params.balance]}
