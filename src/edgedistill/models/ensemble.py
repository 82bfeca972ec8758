"""An ensemble of classifiers as one module, for evaluation: log of the mean of their softmax outputs.

Returning log-probabilities keeps it a drop-in "logits" model for every metric (softmax of the output
is the averaged probability). Used to report a regime's ensemble (born-again generations, mutual-learning
peers, averaged teachers); it is never the deliverable, which is one small network.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


class ProbabilityEnsemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module], weights: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        w = torch.ones(len(members)) if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        self.register_buffer("weights", w / w.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = sum(w * torch.softmax(m(x), dim=1) for w, m in zip(self.weights, self.members))
        return torch.log(probs.clamp_min(1e-12))
