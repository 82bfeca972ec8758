"""BD-KD (online): a large network and the compact student trained together, each distilling from the other
with a per-sample balance of forward and reverse KL.

Amara, Sepahvand, Meyer, Gross, Clark, "BD-KD: Balancing the Divergences for Online Knowledge Distillation",
arXiv 2212.12965 (spec: shared/methods/asu-group.md §9). Established [abstract]: logit-based online KD; the
student's AND the teacher's losses use a sample-wise weighting of forward KL(p_T||p_S) and reverse
KL(p_S||p_T), to balance the student's confidence (accuracy and ECE). Student loss (template §9.2)::

    L_S = (1-a) CE(z_S, y) + a T^2 mean_i [ (1-w_i) KL(p_L,i || p_S,i) + w_i KL(p_S,i || p_L,i) ],  z_L detached
    L_L = (1-a) CE(z_L, y) + a T^2 mean_i [ (1-v_i) KL(p_S,i || p_L,i) + v_i KL(p_L,i || p_S,i) ],  z_S detached

p = softmax(z / T). The weight rule is UNKNOWN (no code, paper body unread). OUR choice: the entropy-gap
gate of ``edgedistill.losses.response_extra.balanced_kd_weights`` with each network in the "student" role
of its own loss: w_i = sigmoid((H(p_S,i) - H(p_L,i)) / (log C * gate_width)), v_i = the same with S and L
swapped = 1 - w_i. More reverse (mode-seeking, sharpening) KL where a network is less confident than the
other. Because v = 1 - w, both losses use the SAME per-sample divergence
D_i = (1-w_i) KL(p_L||p_S) + w_i KL(p_S||p_L); each network gets D's gradient for its own logits.
Setting ``balance: false`` forces w = v = 0: standard online KD (DML with two peers, scaled by a, T).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from edgedistill.data.dataset import Batch, DataInfo
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd
from edgedistill.losses.response_extra import balanced_kd
from edgedistill.methods.base import Method, Step
from edgedistill.methods.mutual import build_online_network, check_temperature, require_classification
from edgedistill.registry import METHODS


def balanced_term(own: torch.Tensor, other: torch.Tensor, temperature: float, gate_width: float, balanced: bool) -> torch.Tensor:
    """One network's distillation term: T^2 mean_i [(1-w_i) KL(p_other||p_own) + w_i KL(p_own||p_other)], other
    detached; w from the entropy gap (``balanced_kd_weights``), or w = 0 (forward KL only) when not balanced."""
    other = other.detach()
    if balanced:
        return balanced_kd(own, other, temperature=temperature, gate_width=gate_width)
    return kd(own, other, temperature=temperature)


@METHODS.register("bdkd")
class OnlineBalancedKD(Method):
    """Student + a large network trained together; each distils from the other with balanced KL directions."""

    reserved = ("student", "info")

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        large: Optional[dict[str, Any]] = None,
        alpha: float = 0.5,
        temperature: float = 1.0,
        gate_width: float = 0.1,
        balance: bool = True,
    ) -> None:
        super().__init__(student, info)
        require_classification(info, "bdkd")
        if large is None:
            raise UserInputError("method.params.large: required: the large network trained with the student, "
                                 "e.g. {model: fcn, width: 0.5}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise UserInputError(f"method.params.alpha: must be a number in [0, 1], got {alpha!r}")
        if isinstance(gate_width, bool) or not isinstance(gate_width, (int, float)) or not gate_width >= 0:
            raise UserInputError(f"method.params.gate_width: must be a number >= 0, got {gate_width!r}")
        if not isinstance(balance, bool):
            raise UserInputError(f"method.params.balance: must be true or false, got {balance!r}")
        self.alpha, self.gate_width, self.balanced = float(alpha), float(gate_width), balance
        self.temperature = check_temperature(temperature, "method.params.temperature")
        self.large_model = large.get("model", "?") if isinstance(large, dict) else "?"
        self.networks["large"] = build_online_network(large, info, "method.params.large")
        x = torch.zeros(2, *info.views.get("x", info.input_shape))
        net = self.networks["large"].eval()
        try:
            with torch.no_grad():
                out = net(x)
        except (RuntimeError, ValueError) as exc:
            raise UserInputError(f"method.params.large: cannot run on inputs of shape {tuple(x.shape[1:])}: "
                                 f"{str(exc).splitlines()[0]}") from None
        finally:
            net.train()
        if tuple(out.shape) != (2, info.n_outputs):
            raise UserInputError(f"method.params.large: outputs {tuple(out.shape[1:])} per sample, expected ({info.n_outputs},)")

    trains_own_teacher = "its large network trains with the student from scratch, set in method.params.large"

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        z_s = self.networks["student"](batch["x"])
        z_l = self.networks["large"](batch["x"])
        a, t, g = self.alpha, self.temperature, self.gate_width
        return {
            "ce_student": (1 - a) * ce(z_s, batch["y"]),
            "kl_student": a * balanced_term(z_s, z_l, t, g, self.balanced),
            "ce_large": (1 - a) * ce(z_l, batch["y"]),
            "kl_large": a * balanced_term(z_l, z_s, t, g, self.balanced),
        }

    def evaluated(self) -> dict[str, nn.Module]:
        return {f"large ({self.large_model})": self.networks["large"]}

    def describe(self) -> dict[str, Any]:
        return {"method": "bdkd", "alpha": self.alpha, "temperature": self.temperature, "gate_width": self.gate_width,
                "weights": "entropy gap (ours)" if self.balanced else "w = 0 (online KD)", "large": self.large_model}
