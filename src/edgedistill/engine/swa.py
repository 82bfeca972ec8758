"""Stochastic weight averaging (SWA) over a stage's final epochs, for the training loop (``Stage(swa=True)``).

SWA (Izmailov et al., "Averaging Weights Leads to Wider Optima and Better Generalization", UAI 2018; official code
github.com/timgaripov/swa) takes an equal-weight average of the weights reached at the end of each epoch once
averaging has started, then recomputes BatchNorm's running statistics for the averaged weights with one pass over
the training data: the running statistics collected during training belong to the individual epochs' weights, not
to their average, and an averaged network evaluated with averaged statistics can be far off.

Window: the last quarter of the epochs, at least the last one (``first_averaged_epoch``), so every averaged
snapshot is taken at or after 75% of the steps. The paper averages with a constant (or cyclical) learning rate after
a conventional first phase; our default schedule is cosine to 0, which from 75% of the steps on runs at under 15% of
the base rate, so averaging that tail is close to SWA with a low constant rate, while training itself is unchanged.
PyTorch Lightning's ``StochasticWeightAveraging`` callback starts at 80% of the epochs by default
(``swa_epoch_start=0.8``), a similar choice. A recipe with ``train.schedule: constant`` gets the paper's
constant-rate SWA over the same window. With cosine to 0 the last epochs move the weights little, so the
average stays close to the last epoch's weights: SWA here is a cheap guard against a noisy last epoch, not a
different optimiser.

Interruption: the running average and its count are part of ``last.pt`` (``state()``/``resumed``), so a resumed
stage continues the same average and writes the same ``swa.pt`` as an uninterrupted run.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from edgedistill.data.dataset import TensorData

#: Fraction of the epochs, at the end, whose end-of-epoch weights are averaged (at least one epoch).
WINDOW_FRACTION = 0.25


def first_averaged_epoch(epochs: int) -> int:
    """The 1-based epoch whose end-of-epoch weights are the first in the average."""
    return epochs - max(1, math.ceil(WINDOW_FRACTION * epochs)) + 1


class WeightAverage:
    """Equal-weight running average of every network's state over the window's epochs.

    Floating-point entries (parameters and float buffers) are averaged; integer entries (BatchNorm's
    ``num_batches_tracked``) take the latest value. The average is kept on the CPU in float64 and cast back to
    each entry's dtype when applied, so a mean over many epochs loses nothing to rounding."""

    def __init__(self, epochs: int, average: dict[str, dict[str, torch.Tensor]] | None = None, count: int = 0) -> None:
        self.start = first_averaged_epoch(epochs)
        self.epochs = epochs
        self.average = average or {}
        self.count = count

    @classmethod
    def resumed(cls, epochs: int, saved: dict[str, Any]) -> "WeightAverage":
        """The average as ``state()`` left it in ``last.pt``."""
        return cls(epochs, {n: dict(sd) for n, sd in saved["average"].items()}, int(saved["count"]))

    def state(self) -> dict[str, Any]:
        """What ``last.pt`` keeps (tensors and plain numbers: loadable with ``weights_only``)."""
        return {"average": self.average, "count": self.count, "start": self.start}

    @torch.no_grad()
    def update(self, networks: nn.ModuleDict, epoch: int) -> None:
        """Add the weights at the end of 1-based ``epoch`` to the average if the epoch is in the window."""
        if epoch < self.start:
            return
        n = self.count + 1
        for name, net in networks.items():
            avg = self.average.setdefault(name, {})
            for key, value in net.state_dict().items():
                value = value.detach().cpu()
                if value.is_floating_point():
                    value = value.double()
                    avg[key] = value.clone() if key not in avg else avg[key] + (value - avg[key]) / n
                else:
                    avg[key] = value.clone()
        self.count = n

    @property
    def epochs_averaged(self) -> list[int]:
        """First and last 1-based epoch in the average."""
        return [self.start, self.start + self.count - 1]

    @torch.no_grad()
    def apply(self, networks: nn.ModuleDict, recompute: Iterable[nn.Module], train: TensorData, batch_size: int,
              device: torch.device, seed: int) -> None:
        """Load the averaged weights into ``networks``, then recompute the BatchNorm statistics of each module in
        ``recompute`` (those that read the input ``x``: the deliverable and networks reported beside it) with one
        pass over ``train``, unaugmented, in training's batches (same size and final-batch rule, no shuffle).
        Dropout is active in that pass as in training (as ``torch.optim.swa_utils.update_bn`` and the paper's code
        do); it draws from a forked generator seeded with ``seed``, so the result is reproducible and the caller's
        random state is untouched. Other networks (adapters used only by a loss) keep their averaged buffers."""
        from torch.optim.swa_utils import update_bn

        if self.count == 0:
            raise RuntimeError("SWA: no epoch was averaged")  # the window always holds the last epoch
        for name, net in networks.items():
            current = net.state_dict()
            net.load_state_dict({k: v.to(current[k].dtype) for k, v in self.average[name].items()})
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            for net in recompute:
                update_bn((b["x"] for b in train.batches(batch_size, drop_last=True)), net, device=device)


def networks_reading_x(networks: nn.ModuleDict, deliverable: nn.Module, evaluated: Iterable[nn.Module]) -> list[nn.Module]:
    """The trained networks fed the input directly: the deliverable and any of ``networks`` reported beside it.
    Ensembles in ``evaluated`` are left out: they hold frozen teachers whose statistics must not change."""
    out: list[nn.Module] = [deliverable]
    for net in evaluated:
        if any(net is n for n in networks.values()) and not any(net is o for o in out):
            out.append(net)
    return out
