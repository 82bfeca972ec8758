"""Deep Mutual Learning: K networks trained together from scratch, each also matching the others' predictions.

Zhang, Xiang, Hospedales, Lu, "Deep Mutual Learning", CVPR 2018, arXiv 1706.00384.
No pre-trained teacher. For every network k of the K peers (the student is peer 0)::

    L_k = CE(z_k, y) + 1/(K-1) * sum_{l != k} T^2 * KL( softmax(z_l / T) || softmax(z_k / T) )

with the other peers' logits z_l treated as constants (detached). T = 1 is the paper's setting.

Update order (our choice, see docs/methods/dml.md): the paper updates the peers in turn on each mini-batch,
recomputing the predictions after each update [RECALL-UNVERIFIED]. We update all peers simultaneously: one
forward pass per network, the K losses summed, one backward, one optimizer step. Because every target is
detached, each peer's gradient is exactly the gradient of its own L_k; the only difference from the paper's
loop is that peer k sees the other peers' predictions from before (not after) this batch's update.

The student is the deliverable; the peers and their probability ensemble are reported as extra rows.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from pydantic import Field
from torch import nn

from edgedistill.config import ModelConfig, Recipe
from edgedistill.data.dataset import Batch, DataInfo
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd
from edgedistill.methods.base import Method, Step
from edgedistill.models.ensemble import ProbabilityEnsemble
from edgedistill.models.online import build_online_network, check_online_outputs
from edgedistill.params import Params
from edgedistill.registry import METHODS


def fresh_copy(model: nn.Module) -> nn.Module:
    """Same architecture, new random initialisation (every layer's ``reset_parameters``)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return twin


def mutual_kl(logits: list[torch.Tensor], k: int, temperature: float) -> torch.Tensor:
    """1/(K-1) * sum_{l != k} T^2 * mean_i KL(softmax(z_l/T) || softmax(z_k/T)), the other peers detached."""
    others = [z.detach() for l, z in enumerate(logits) if l != k]
    return sum(kd(logits[k], z, temperature) for z in others) / len(others)


class DMLParams(Params):
    peers: Optional[list[ModelConfig]] = Field(
        None, min_length=1, description="the peers' model sections ({model: name, **knobs}), trained from scratch; "
                                        "a recipe's default is one peer with the student's own section")
    temperature: float = Field(1.0, gt=0.0, description="temperature T of the mutual KL terms (T^2 scaling)")


@METHODS.register("dml")
class DeepMutualLearning(Method):
    """Student + K-1 peers trained together; each learns from the labels and the other peers' predictions."""

    Params = DMLParams
    task = "classification"
    trains_own_teacher = "its peers train from scratch, set in method.params.peers"

    def __init__(self, student: nn.Module, info: DataInfo, **params: Any) -> None:
        super().__init__(student, info, **params)
        peers = self.params.peers
        if peers is None:
            nets = [fresh_copy(student)]  # a recipe passes the student's own section instead (default_params)
            self.peer_models = [type(student).__name__]
        else:
            nets = [build_online_network(cfg, info, f"method.params.peers[{i}]") for i, cfg in enumerate(peers)]
            self.peer_models = [cfg.label for cfg in peers]
        for i, net in enumerate(nets, start=1):
            self.networks[f"peer{i}"] = net
        self._check_outputs()

    def _check_outputs(self) -> None:
        """One forward pass on zeros: every peer must output (N, classes) like the student, named if not."""
        for name, net in self.networks.items():
            check_online_outputs(net, self.info, f"method.params.peers[{self._index(name)}]")

    @staticmethod
    def _index(name: str) -> int:
        return int(name[4:]) - 1 if name.startswith("peer") else -1

    @classmethod
    def default_params(cls, recipe: Recipe) -> dict[str, Any]:
        # One peer with the student's architecture (its own section, without the student's checkpoint).
        return {"peers": [{"model": recipe.student.model, **recipe.student.kwargs}]}

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        names = list(self.networks)
        logits = [self.networks[n](batch["x"]) for n in names]
        terms: dict[str, torch.Tensor] = {}
        for k, name in enumerate(names):
            terms[f"ce_{name}"] = ce(logits[k], batch["y"])
            terms[f"kl_{name}"] = mutual_kl(logits, k, self.params.temperature)
        return terms

    def evaluated(self) -> dict[str, nn.Module]:
        peers = {f"{n} ({self.peer_models[self._index(n)]})": net for n, net in self.networks.items() if n != "student"}
        members = list(self.networks.values())
        return {**peers, f"ensemble of {len(members)} (softmax mean)": ProbabilityEnsemble(members)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "peer_models": self.peer_models,
                "update": "simultaneous (one backward; targets detached)"}
