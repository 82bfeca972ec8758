"""2-D models for small images: input ``(N, C, H, W)`` with H, W >= 8, output ``(N, n_outputs)``.

The ResNet and WRN pairs follow the CIFAR benchmark of CRD/RepDistiller (resnet32x4 -> resnet8x4,
wrn_40_2 -> wrn_16_2) so results can be compared with the literature. All stems have stride 1 and every
model ends in global average pooling, so any channel count and any input of at least 8x8 works (e.g.
1x8x8 digits). ``default_taps`` name ``feat`` (last map before pooling), ``emb`` (pooled embedding) and
the intermediate stages.
"""
from __future__ import annotations

import torch
from torch import nn

from edgedistill.models import KnobError
from edgedistill.registry import MODELS


def _positive(knob: str, value: float) -> None:
    if value <= 0:
        raise KnobError(knob, f"must be positive, got {value!r}")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _gap() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


class CNN2d(nn.Module):
    """Conv-BN-ReLU blocks doubling the width, 2x2 max-pool between blocks, GAP, linear head."""

    def __init__(self, in_channels: int, n_outputs: int, depth: int, width: int) -> None:
        super().__init__()
        chans = [in_channels] + [width * 2**i for i in range(depth)]
        blocks = []
        for i in range(depth):
            block = nn.Sequential(_conv3x3(chans[i], chans[i + 1]), nn.BatchNorm2d(chans[i + 1]), nn.ReLU())
            if i < depth - 1:  # ceil_mode keeps at least one pixel however small the input
                block.append(nn.MaxPool2d(2, ceil_mode=True))
            blocks.append(block)
        self.blocks = nn.Sequential(*blocks)
        self.pool = _gap()
        self.head = nn.Linear(chans[-1], n_outputs)
        self.default_taps = {"stage1": "blocks.0", "feat": f"blocks.{depth - 1}", "emb": "pool"}
        if depth >= 3:
            self.default_taps["stage2"] = f"blocks.{depth // 2}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(x)))


@MODELS.register("cnn2d", kind="2d", role="student")
def cnn2d(in_channels: int, n_outputs: int, input_size: tuple[int, ...], depth: int = 3, width: int = 16) -> nn.Module:
    """Small image CNN student: depth=3 conv blocks, width=16 doubling per block, GAP head."""
    _positive("depth", depth)
    _positive("width", width)
    return CNN2d(in_channels, n_outputs, depth, width)


class BasicBlock(nn.Module):
    """Post-activation residual block: two 3x3 convs, projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        if stride != 1 or cin != cout:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem then three stages of BasicBlocks with strides 1-2-2, GAP, linear head."""

    def __init__(self, in_channels: int, n_outputs: int, depth: int, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(_conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.layer1 = self._stage(widths[0], widths[1], n, 1)
        self.layer2 = self._stage(widths[1], widths[2], n, 2)
        self.layer3 = self._stage(widths[2], widths[3], n, 2)
        self.pool = _gap()
        self.head = nn.Linear(widths[3], n_outputs)
        self.default_taps = {"stage1": "layer1", "stage2": "layer2", "feat": "layer3", "emb": "pool"}

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            *(BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(blocks))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(self.pool(x))


_X4_WIDTHS = (32, 64, 128, 256)


@MODELS.register("resnet8x4", kind="2d", role="student")
def resnet8x4(in_channels: int, n_outputs: int, input_size: tuple[int, ...]) -> nn.Module:
    """CIFAR ResNet-8x4 student (CRD benchmark): 1 BasicBlock per stage, widths 32-64-128-256; no knobs."""
    return CifarResNet(in_channels, n_outputs, 8, _X4_WIDTHS)


@MODELS.register("resnet32x4", kind="2d", role="teacher")
def resnet32x4(in_channels: int, n_outputs: int, input_size: tuple[int, ...]) -> nn.Module:
    """CIFAR ResNet-32x4 teacher (CRD benchmark): 5 BasicBlocks per stage, widths 32-64-128-256; no knobs."""
    return CifarResNet(in_channels, n_outputs, 32, _X4_WIDTHS)


class PreActBlock(nn.Module):
    """Wide-ResNet block: BN-ReLU-conv twice; the projection shortcut reads the pre-activated input."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(self.dropout(self.act(self.bn2(self.conv1(pre)))))
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-k: stem conv 16, stages 16k-32k-64k with strides 1-2-2, final BN-ReLU, GAP, linear head."""

    def __init__(self, in_channels: int, n_outputs: int, depth: int, widen: int, dropout: float) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.stem = _conv3x3(in_channels, widths[0])
        self.layer1 = self._stage(widths[0], widths[1], n, 1, dropout)
        self.layer2 = self._stage(widths[1], widths[2], n, 2, dropout)
        self.layer3 = self._stage(widths[2], widths[3], n, 2, dropout)
        # Pre-activation blocks end un-normalised; this BN-ReLU yields the map that is actually pooled.
        self.post = nn.Sequential(nn.BatchNorm2d(widths[3]), nn.ReLU())
        self.pool = _gap()
        self.head = nn.Linear(widths[3], n_outputs)
        self.default_taps = {"stage1": "layer1", "stage2": "layer2", "feat": "post", "emb": "pool"}

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(
            *(PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, dropout) for i in range(blocks))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(self.pool(self.post(x)))


def _wrn(in_channels: int, n_outputs: int, depth: int, dropout: float) -> nn.Module:
    if not 0.0 <= dropout < 1.0:
        raise KnobError("dropout", f"must be in [0, 1), got {dropout!r}")
    return WideResNet(in_channels, n_outputs, depth, 2, dropout)


@MODELS.register("wrn_16_2", kind="2d", role="student")
def wrn_16_2(in_channels: int, n_outputs: int, input_size: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    """Wide ResNet 16-2 student (CRD benchmark): pre-activation, widths 32-64-128; knob dropout=0."""
    return _wrn(in_channels, n_outputs, 16, dropout)


@MODELS.register("wrn_40_2", kind="2d", role="teacher")
def wrn_40_2(in_channels: int, n_outputs: int, input_size: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    """Wide ResNet 40-2 teacher (CRD benchmark): pre-activation, widths 32-64-128; knob dropout=0."""
    return _wrn(in_channels, n_outputs, 40, dropout)
