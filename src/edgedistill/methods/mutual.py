"""Deep Mutual Learning: K networks trained together from scratch, each also matching the others' predictions.

Zhang, Xiang, Hospedales, Lu, "Deep Mutual Learning", CVPR 2018, arXiv 1706.00384 (spec: shared/methods/
others.md §17.1). No pre-trained teacher. For every network k of the K peers (the student is peer 0)::

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
from pydantic import ValidationError
from torch import nn

from edgedistill.config import ModelConfig, Recipe
from edgedistill.data.dataset import Batch, DataInfo
from edgedistill.errors import UserInputError
from edgedistill.losses.response import ce, kd
from edgedistill.methods.base import Method, Step
from edgedistill.models.ensemble import ProbabilityEnsemble
from edgedistill.registry import METHODS


def build_online_network(cfg: Any, info: DataInfo, key: str) -> nn.Module:
    """A network trained from scratch alongside the student, from a recipe dict ``{model: name, **knobs}``.

    Built with the global RNG as the runner left it after seeding and building the student, so its
    initialisation differs from the student's and follows the run seed. Errors name ``key``.
    """
    if isinstance(cfg, ModelConfig):
        cfg = {"model": cfg.model, **cfg.kwargs}
    if not isinstance(cfg, dict):
        raise UserInputError(f"{key}: expected a model section such as {{model: cnn1d, width: 16}}, got {cfg!r}")
    try:
        parsed = ModelConfig.model_validate(cfg)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserInputError(f"{key}.{where}: {first['msg']}") from None
    if parsed.checkpoint is not None:
        # Online regimes train every network from scratch; a warm-started peer would be a teacher.
        raise UserInputError(f"{key}.checkpoint: networks of an online regime are trained from scratch; remove it")
    from edgedistill.models import build_model

    shape = info.views.get("x", info.input_shape)
    return build_model(parsed.model, shape[0], info.n_outputs, tuple(shape[1:]), key=key, **parsed.kwargs)


def fresh_copy(model: nn.Module) -> nn.Module:
    """Same architecture, new random initialisation (every layer's ``reset_parameters``)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return twin


def require_classification(info: DataInfo, name: str) -> None:
    if info.task != "classification":
        raise UserInputError(f"method.name: '{name}' matches class distributions and needs a classification task, "
                             f"got task '{info.task}'")


def check_temperature(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserInputError(f"{key}: must be a number > 0, got {value!r}")
    return float(value)


def mutual_kl(logits: list[torch.Tensor], k: int, temperature: float) -> torch.Tensor:
    """1/(K-1) * sum_{l != k} T^2 * mean_i KL(softmax(z_l/T) || softmax(z_k/T)), the other peers detached."""
    others = [z.detach() for l, z in enumerate(logits) if l != k]
    return sum(kd(logits[k], z, temperature) for z in others) / len(others)


@METHODS.register("dml")
class DeepMutualLearning(Method):
    """Student + K-1 peers trained together; each learns from the labels and the other peers' predictions."""

    reserved = ("student", "info")

    def __init__(
        self,
        student: nn.Module,
        info: DataInfo,
        peers: Optional[list[dict[str, Any]]] = None,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(student, info)
        require_classification(info, "dml")
        self.temperature = check_temperature(temperature, "method.params.temperature")
        if peers is None:
            nets = [fresh_copy(student)]  # from_recipe passes the student's own section instead
            self.peer_models = [type(student).__name__]
        else:
            if not isinstance(peers, list) or not peers:
                raise UserInputError(f"method.params.peers: expected a non-empty list of model sections, got {peers!r}")
            nets = [build_online_network(cfg, info, f"method.params.peers[{i}]") for i, cfg in enumerate(peers)]
            self.peer_models = [cfg.get("model", "?") if isinstance(cfg, dict) else "?" for cfg in peers]
        for i, net in enumerate(nets, start=1):
            self.networks[f"peer{i}"] = net
        self._check_outputs()

    def _check_outputs(self) -> None:
        """One forward pass on zeros: every peer must output (N, classes) like the student, named if not."""
        x = torch.zeros(2, *self.info.views.get("x", self.info.input_shape))
        for name, net in self.networks.items():
            was = net.training
            net.eval()
            try:
                with torch.no_grad():
                    out = net(x)
            except (RuntimeError, ValueError) as exc:
                raise UserInputError(f"method.params.peers[{self._index(name)}]: cannot run on inputs of shape "
                                     f"{tuple(x.shape[1:])}: {str(exc).splitlines()[0]}") from None
            finally:
                net.train(was)
            if tuple(out.shape) != (2, self.info.n_outputs):
                raise UserInputError(f"method.params.peers[{self._index(name)}]: outputs {tuple(out.shape[1:])} per sample, "
                                     f"expected ({self.info.n_outputs},)")

    @staticmethod
    def _index(name: str) -> int:
        return int(name[4:]) - 1 if name.startswith("peer") else -1

    trains_own_teacher = "its peers train from scratch, set in method.params.peers"

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
            terms[f"kl_{name}"] = mutual_kl(logits, k, self.temperature)
        return terms

    def evaluated(self) -> dict[str, nn.Module]:
        peers = {f"{n} ({self.peer_models[self._index(n)]})": net for n, net in self.networks.items() if n != "student"}
        members = list(self.networks.values())
        return {**peers, f"ensemble of {len(members)} (softmax mean)": ProbabilityEnsemble(members)}

    def describe(self) -> dict[str, Any]:
        return {"method": "dml", "temperature": self.temperature, "peers": self.peer_models,
                "update": "simultaneous (one backward; targets detached)"}
