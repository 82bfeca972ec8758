"""1-D models for wearable time series: input ``(N, C, L)``, output ``(N, n_outputs)``.

Teachers follow the time-series-classification baselines (Wang et al. 2017 FCN/ResNet, Fawaz et al.
2020 InceptionTime); students are small conv nets and a GRU. Every model exposes ``default_taps``
(``feat``: last feature map, ``emb``: pooled embedding, plus intermediate stages) so feature-based
distillation can hook them by path without touching the model code.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from edgedistill.models import KnobError
from edgedistill.registry import MODELS


def _positive(knob: str, value: float) -> None:
    if value <= 0:
        raise KnobError(knob, f"must be positive, got {value!r}")


def _same_conv(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    """Conv keeping the time axis length, so taps line up with the input window for any kernel size."""
    if kernel % 2:
        return [nn.Conv1d(cin, cout, kernel, padding=kernel // 2, bias=False)]
    # Even kernels (8 in FCN/ResNet) need one more zero on the right; explicit padding avoids the copy
    # and warning of padding="same" and exports as a plain Pad op.
    return [nn.ConstantPad1d((kernel // 2 - 1, kernel // 2), 0.0), nn.Conv1d(cin, cout, kernel, bias=False)]


def _conv_bn_relu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    # No inplace ReLU anywhere: a tap on the BN would otherwise see its output rewritten after the hook.
    return nn.Sequential(*_same_conv(cin, cout, kernel), nn.BatchNorm1d(cout), nn.ReLU())


def _gap() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())


class FCN(nn.Module):
    """Three conv blocks, global average pooling, linear head."""

    def __init__(self, in_channels: int, n_outputs: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        kernels = (8, 5, 3)
        chans = (in_channels, *widths)
        self.blocks = nn.Sequential(*(_conv_bn_relu(chans[i], chans[i + 1], kernels[i]) for i in range(3)))
        self.pool = _gap()
        self.head = nn.Linear(widths[-1], n_outputs)
        self.default_taps = {"stage1": "blocks.0", "stage2": "blocks.1", "feat": "blocks.2", "emb": "pool"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(x)))


@MODELS.register("fcn", kind="1d", role="teacher")
def fcn(in_channels: int, n_outputs: int, input_size: tuple[int, ...], width: float = 1.0) -> nn.Module:
    """FCN teacher (Wang et al. 2017): conv 128-256-128, kernels 8-5-3, BN+ReLU, GAP; knob width (x1.0)."""
    _positive("width", width)
    widths = tuple(max(1, round(c * width)) for c in (128, 256, 128))
    return FCN(in_channels, n_outputs, widths)  # type: ignore[arg-type]


class ResBlock1d(nn.Module):
    """Three conv-BN(-ReLU) layers (kernels 8, 5, 3) plus a shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_relu(cin, cout, 8),
            _conv_bn_relu(cout, cout, 5),
            *_same_conv(cout, cout, 3),
            nn.BatchNorm1d(cout),
        )
        # Projection only when the channel count changes; otherwise BN on the identity as in the paper.
        if cin != cout:
            self.shortcut: nn.Module = nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout))
        else:
            self.shortcut = nn.BatchNorm1d(cout)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet1d(nn.Module):
    """Three residual blocks, global average pooling, linear head."""

    def __init__(self, in_channels: int, n_outputs: int, width: int) -> None:
        super().__init__()
        chans = (in_channels, width, 2 * width, 2 * width)
        self.blocks = nn.Sequential(*(ResBlock1d(chans[i], chans[i + 1]) for i in range(3)))
        self.pool = _gap()
        self.head = nn.Linear(chans[-1], n_outputs)
        self.default_taps = {"stage1": "blocks.0", "stage2": "blocks.1", "feat": "blocks.2", "emb": "pool"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(x)))


@MODELS.register("resnet1d", kind="1d", role="teacher")
def resnet1d(in_channels: int, n_outputs: int, input_size: tuple[int, ...], width: int = 64) -> nn.Module:
    """ResNet teacher (Wang et al. 2017): 3 residual blocks of kernels 8-5-3, filters 64-128-128; knob width."""
    _positive("width", width)
    return ResNet1d(in_channels, n_outputs, width)


class InceptionModule(nn.Module):
    """Bottleneck, three parallel long convs and a max-pool branch, concatenated then BN+ReLU."""

    def __init__(self, cin: int, filters: int, kernels: tuple[int, ...], bottleneck: int) -> None:
        super().__init__()
        use_bottleneck = bottleneck > 0 and cin > 1
        width = bottleneck if use_bottleneck else cin
        self.bottleneck = nn.Conv1d(cin, width, 1, bias=False) if use_bottleneck else nn.Identity()
        self.convs = nn.ModuleList(nn.Conv1d(width, filters, k, padding=k // 2, bias=False) for k in kernels)
        self.pool_branch = nn.Sequential(
            nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(cin, filters, 1, bias=False)
        )
        self.bn = nn.BatchNorm1d(filters * (len(kernels) + 1))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bottleneck(x)
        out = torch.cat([conv(z) for conv in self.convs] + [self.pool_branch(x)], dim=1)
        return self.act(self.bn(out))


class InceptionStage(nn.Module):
    """Up to three inception modules wrapped by one residual shortcut (1x1 conv + BN)."""

    def __init__(self, cin: int, n_modules: int, filters: int, kernels: tuple[int, ...], bottleneck: int,
                 residual: bool) -> None:
        super().__init__()
        cout = filters * (len(kernels) + 1)
        self.layers = nn.Sequential(
            *(InceptionModule(cin if i == 0 else cout, filters, kernels, bottleneck) for i in range(n_modules))
        )
        self.shortcut = (
            nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout)) if residual else None
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out if self.shortcut is None else self.act(out + self.shortcut(x))


class InceptionTime(nn.Module):
    """One InceptionTime network (the paper ensembles five; one is enough as a teacher)."""

    def __init__(self, in_channels: int, n_outputs: int, depth: int, filters: int, kernel_size: int,
                 bottleneck: int, residual: bool) -> None:
        super().__init__()
        # Kernels 40/20/10 become 39/19/9: odd sizes give symmetric "same" padding.
        kernels = tuple(max(1, k - 1 if k % 2 == 0 else k) for k in (kernel_size, kernel_size // 2, kernel_size // 4))
        sizes = [min(3, depth - i) for i in range(0, depth, 3)]
        cout = filters * (len(kernels) + 1)
        self.stages = nn.Sequential(
            *(InceptionStage(in_channels if i == 0 else cout, n, filters, kernels, bottleneck, residual)
              for i, n in enumerate(sizes))
        )
        self.pool = _gap()
        self.head = nn.Linear(cout, n_outputs)
        last = len(sizes) - 1
        self.default_taps = {"stage1": "stages.0", "feat": f"stages.{last}", "emb": "pool"}
        if last >= 2:
            self.default_taps["stage2"] = "stages.1"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(x)))


@MODELS.register("inceptiontime", kind="1d", role="teacher")
def inceptiontime(
    in_channels: int,
    n_outputs: int,
    input_size: tuple[int, ...],
    depth: int = 6,
    filters: int = 32,
    kernel_size: int = 40,
    bottleneck: int = 32,
    residual: bool = True,
) -> nn.Module:
    """InceptionTime teacher (Fawaz et al. 2020), one network; knobs depth=6, filters=32, kernel_size=40."""
    for knob, value in (("depth", depth), ("filters", filters), ("kernel_size", kernel_size)):
        _positive(knob, value)
    if bottleneck < 0:
        raise KnobError("bottleneck", f"must be >= 0 (0 disables it), got {bottleneck!r}")
    return InceptionTime(in_channels, n_outputs, depth, filters, kernel_size, bottleneck, residual)


class CNN1d(nn.Module):
    """``depth`` conv blocks of constant width, optional max-pooling, GAP or time-segment head."""

    def __init__(self, in_channels: int, n_outputs: int, depth: int, width: int, kernel_size: int,
                 pool_every: int, head: str, segments: int) -> None:
        super().__init__()
        blocks = []
        for i in range(depth):
            block = _conv_bn_relu(in_channels if i == 0 else width, width, kernel_size)
            # Never pool after the last block: "feat" stays the full-resolution final map.
            if pool_every and (i + 1) % pool_every == 0 and i < depth - 1:
                block.append(nn.MaxPool1d(2, ceil_mode=True))
            blocks.append(block)
        self.blocks = nn.Sequential(*blocks)
        n_bins = 1 if head == "gap" else segments
        self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(n_bins), nn.Flatten())
        self.head = nn.Linear(width * n_bins, n_outputs)
        self.default_taps = {"stage1": "blocks.0", "feat": f"blocks.{depth - 1}", "emb": "pool"}
        if depth >= 3:
            self.default_taps["stage2"] = f"blocks.{depth // 2}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(x)))


@MODELS.register("cnn1d", kind="1d", role="student")
def cnn1d(
    in_channels: int,
    n_outputs: int,
    input_size: tuple[int, ...],
    depth: int = 3,
    width: int = 16,
    kernel_size: int = 5,
    pool_every: int = 0,
    head: Literal["gap", "segments"] = "gap",
    segments: int = 4,
) -> nn.Module:
    """Small conv student: depth=3 blocks of width=16, kernel_size=5, pool_every=0, head=gap|segments."""
    for knob, value in (("depth", depth), ("width", width), ("kernel_size", kernel_size), ("segments", segments)):
        _positive(knob, value)
    if pool_every < 0:
        raise KnobError("pool_every", f"must be >= 0 (0 disables pooling), got {pool_every!r}")
    if head not in ("gap", "segments"):
        raise KnobError("head", f"expected 'gap' or 'segments', got {head!r}")
    return CNN1d(in_channels, n_outputs, depth, width, kernel_size, pool_every, head, segments)


class SequenceGRU(nn.Module):
    """One GRU layer on ``(N, C, L)`` returning only the sequence ``(N, H, L)``, so it can be tapped."""

    def __init__(self, cin: int, hidden: int, bidirectional: bool, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(cin, hidden, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.rnn(self.dropout(x).transpose(1, 2))
        return seq.transpose(1, 2)


class Readout(nn.Module):
    """Sequence ``(N, D, L)`` -> embedding ``(N, D)``: last step per direction, or the mean over time."""

    def __init__(self, mode: str, hidden: int, bidirectional: bool) -> None:
        super().__init__()
        self.mode, self.hidden, self.bidirectional = mode, hidden, bidirectional

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return seq.mean(dim=-1)
        if not self.bidirectional:
            return seq[:, :, -1]
        # The backward direction has read the whole window at time step 0.
        return torch.cat([seq[:, : self.hidden, -1], seq[:, self.hidden :, 0]], dim=1)


class GRUNet(nn.Module):
    """Stacked GRU layers (one module each, so every layer is tappable), readout, linear head."""

    def __init__(self, in_channels: int, n_outputs: int, hidden: int, layers: int, bidirectional: bool,
                 readout: str, dropout: float) -> None:
        super().__init__()
        dim = hidden * (2 if bidirectional else 1)
        self.rnn = nn.Sequential(
            *(SequenceGRU(in_channels if i == 0 else dim, hidden, bidirectional, dropout if i else 0.0)
              for i in range(layers))
        )
        self.pool = Readout(readout, hidden, bidirectional)
        self.head = nn.Linear(dim, n_outputs)
        self.default_taps = {"stage1": "rnn.0", "feat": "rnn", "emb": "pool"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.rnn(x)))


@MODELS.register("gru", kind="1d", role="any")
def gru(
    in_channels: int,
    n_outputs: int,
    input_size: tuple[int, ...],
    hidden: int = 64,
    layers: int = 1,
    bidirectional: bool = False,
    readout: Literal["last", "mean"] = "last",
    dropout: float = 0.0,
) -> nn.Module:
    """GRU student/teacher: hidden=64, layers=1, bidirectional=false, readout=last|mean, dropout=0."""
    _positive("hidden", hidden)
    _positive("layers", layers)
    if readout not in ("last", "mean"):
        raise KnobError("readout", f"expected 'last' or 'mean', got {readout!r}")
    if not 0.0 <= dropout < 1.0:
        raise KnobError("dropout", f"must be in [0, 1), got {dropout!r}")
    return GRUNet(in_channels, n_outputs, hidden, layers, bidirectional, readout, dropout)
