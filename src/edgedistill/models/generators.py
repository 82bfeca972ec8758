"""Generators for data-free distillation: Gaussian noise ``(N, nz)`` -> a 1-D window ``(N, C, L)`` or a small
image ``(N, C, H, W)``, sized from the dataset's ``input_shape``.

Shape of the network (DCGAN-style, as the CMI/CuDFKD code base uses for CIFAR): a linear layer to a coarse map
of ``coarse*width`` channels at a quarter of the target length (or side), BatchNorm, then two rounds of
{nearest-neighbour upsampling x2, conv, BatchNorm, LeakyReLU(0.2)} (to ``2*width``, then ``width`` channels), a
final conv to ``C`` channels, a crop to the exact target size, and an output layer. ``coarse: 2`` is the CMI /
DFAD ``Generator(ngf)`` layout (2w -> 2w -> w); ``coarse: 4`` is CuDFKD's ``DCGAN_Generator_CIFAR10(ngf, d=2)``
(4w -> 2w -> w), which the cudfkd regime uses with the official sizes nz 512, width (ngf) 64.

Output layer (our choice; the spec's image generators end in tanh/sigmoid for pixel ranges): ``"bn"``, a
BatchNorm without affine parameters, so every generated batch has zero mean and unit variance per channel --
the statistics of data normalised ``per_channel``, which every recipe of ours uses. ``"tanh"`` (range
[-scale, scale]) and ``"linear"`` are available for data with other ranges.

Generators are not classifiers, so they live in their own registry (``GENERATORS``) rather than ``MODELS``,
whose entries all map inputs to class outputs.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.params import Params
from edgedistill.registry import Registry

GENERATORS: Registry = Registry("generator")

Output = Literal["bn", "tanh", "linear"]


class DCGANParams(Params):
    """The ``dcgan`` generator's settings (a recipe's ``method.params.generator`` section, ``name`` aside)."""

    nz: int = Field(64, ge=1, description="noise dimension: the generator maps N(0, I) noise of this size to a sample")
    width: int = Field(32, ge=1, description="channels of the last hidden conv (the coarse map has coarse x width)")
    coarse: Literal[2, 4] = Field(2, description="channels of the coarse map as a multiple of width: 2 (CMI/DFAD "
                                                 "Generator) or 4 (CuDFKD's DCGAN generator, depth 2)")
    output: Output = Field(
        "bn", description="output layer: bn (per-channel zero mean, unit variance, for per_channel-normalised "
                          "data), tanh (range [-scale, scale]) or linear")
    scale: float = Field(3.0, gt=0, description="range of the tanh output layer")


class GeneratorParams(DCGANParams):
    """A recipe's generator section: which registered generator (``GENERATORS``) and its settings."""

    name: str = Field("dcgan", description="registered generator (edgedistill list: GENERATORS); only dcgan ships")


class _OutputLayer(nn.Module):
    def __init__(self, kind: str, channels: int, dims: int, scale: float) -> None:
        super().__init__()
        self.kind, self.scale = kind, float(scale)
        bn = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.norm = bn(channels, affine=False) if kind == "bn" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "tanh":
            return self.scale * torch.tanh(x)
        return self.norm(x)


class WindowGenerator(nn.Module):
    """Noise -> (C, L) sensor window."""

    def __init__(self, channels: int, length: int, nz: int = 64, width: int = 32, output: Output = "bn",
                 scale: float = 3.0, coarse: int = 2) -> None:
        super().__init__()
        self.nz, self.channels, self.length = nz, channels, length
        self.base = max(1, math.ceil(length / 4))
        self.fc = nn.Linear(nz, coarse * width * self.base)
        self.body = nn.Sequential(
            nn.BatchNorm1d(coarse * width),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv1d(coarse * width, 2 * width, 5, padding=2, bias=False), nn.BatchNorm1d(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv1d(2 * width, width, 5, padding=2, bias=False), nn.BatchNorm1d(width), nn.LeakyReLU(0.2),
            # No bias before a BN output: the normalisation would cancel it (a parameter that never learns).
            nn.Conv1d(width, channels, 5, padding=2, bias=output != "bn"),
        )
        self.out = _OutputLayer(output, channels, 1, scale)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], -1, self.base)
        return self.out(self.body(h)[:, :, : self.length])


class ImageGenerator(nn.Module):
    """Noise -> (C, H, W) small image."""

    def __init__(self, channels: int, height: int, width_px: int, nz: int = 64, width: int = 32,
                 output: Output = "bn", scale: float = 3.0, coarse: int = 2) -> None:
        super().__init__()
        self.nz, self.channels, self.size = nz, channels, (height, width_px)
        self.base = (max(1, math.ceil(height / 4)), max(1, math.ceil(width_px / 4)))
        self.fc = nn.Linear(nz, coarse * width * self.base[0] * self.base[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(coarse * width),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(coarse * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1, bias=output != "bn"),
        )
        self.out = _OutputLayer(output, channels, 2, scale)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], -1, *self.base)
        return self.out(self.body(h)[:, :, : self.size[0], : self.size[1]])


def dcgan_init(module: nn.Module) -> nn.Module:
    """DCGAN initialisation N(0, 0.02) for conv/linear weights, N(1, 0.02) for BN scales (as the CuDFKD code
    re-initialises its generator)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


@GENERATORS.register("dcgan", params=DCGANParams)
def dcgan(input_shape: tuple[int, ...], key: str = "method.params.generator", **params: Any) -> nn.Module:
    """DCGAN-style generator: noise -> (C, L) window or (C, H, W) image, chosen from ``input_shape``;
    ``params`` are ``DCGANParams`` (checked here, errors named ``key.<field>``)."""
    p = DCGANParams.parse(params, key, what="generator 'dcgan'")
    nz, width, output, scale, coarse = p.nz, p.width, p.output, p.scale, p.coarse
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        net: nn.Module = WindowGenerator(shape[0], shape[1], nz, width, output, scale, coarse)  # type: ignore[arg-type]
    elif len(shape) == 3:
        net = ImageGenerator(shape[0], shape[1], shape[2], nz, width, output, scale, coarse)  # type: ignore[arg-type]
    else:
        raise UserInputError(f"{key}: generators make (C, L) windows or (C, H, W) images; the data has input "
                             f"shape {shape}")
    return dcgan_init(net)


def build_generator(cfg: object, input_shape: tuple[int, ...], key: str = "method.params.generator") -> nn.Module:
    """A generator from a recipe section: a ``GeneratorParams`` or a mapping ``{name: dcgan, nz: 64, width: 32,
    ...}`` (``name`` defaults to dcgan; None is every default)."""
    if cfg is None:
        cfg = {}
    if isinstance(cfg, GeneratorParams):
        cfg = cfg.model_dump()
    if not isinstance(cfg, dict):
        raise UserInputError(f"{key}: expected a mapping such as {{name: dcgan, nz: 64, width: 32}}, got {cfg!r}")
    p = GeneratorParams.parse(cfg, key, what="a generator")
    settings = p.model_dump(exclude={"name"})
    factory = GENERATORS.get(p.name, key=f"{key}.name")
    return factory(input_shape, key=key, **settings)
