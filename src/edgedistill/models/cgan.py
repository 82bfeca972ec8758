"""A small conditional GAN for 1-D windows (C, L) and small images (C, H, W), and a conditional density-ratio net.

Used by the cGAN-KD method (``methods/cgan_kd.py``) to synthesise training samples. The condition is a class
label (``n_classes`` > 0, an embedding) or a regression target vector (``n_targets`` > 0, a linear map), so one
pair of classes serves both tasks. Sizes are chosen to train on a laptop CPU in minutes on the bundled sets.

These are not zoo models (their ``forward`` takes a condition beside the input), so they are deliberately not
registered in ``MODELS``: ``edgedistill list models`` offers only networks a recipe can train as a student or
teacher.

* ``ConditionalGenerator``: noise z and the condition -> an MLP -> a (width, ceil(size/4)) map -> two
  (nearest x2 upsample, conv, BatchNorm, ReLU) stages -> a conv to the data's channels, cropped to its size.
* ``ProjectionDiscriminator``: two strided convs (spectral norm, LeakyReLU) -> adaptive pool to 4 (or 4x4) ->
  a flat feature h; the score is ``w^T h + <embed(condition), h>`` (the projection discriminator of Miyato &
  Koyama 2018, as BigGAN and SAGAN-based CcGAN use; for a continuous target the embedding is linear in it).
* ``DensityRatioNet``: an MLP on ``[phi(x), condition]`` with a softplus output, so the ratio r >= 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from edgedistill.errors import UserInputError


def _check_condition(n_classes: int, n_targets: int) -> None:
    if (n_classes > 0) == (n_targets > 0):
        raise UserInputError(f"cgan: give exactly one of n_classes or n_targets (got {n_classes}, {n_targets})")


def _convs(shape: tuple[int, ...]) -> tuple[type[nn.Module], type[nn.Module], int]:
    if len(shape) == 2:
        return nn.Conv1d, nn.BatchNorm1d, 5
    if len(shape) == 3:
        return nn.Conv2d, nn.BatchNorm2d, 3
    raise UserInputError(f"cgan: sample shape must be (channels, length) or (channels, h, w), got {tuple(shape)}")


class Condition(nn.Module):
    """Class label -> embedding, or regression target (N,) / (N, k) -> linear map, both to ``dim``."""

    def __init__(self, dim: int, n_classes: int = 0, n_targets: int = 0, bias: bool = True) -> None:
        super().__init__()
        _check_condition(n_classes, n_targets)
        self.n_classes, self.n_targets = n_classes, n_targets
        self.map: nn.Module = nn.Embedding(n_classes, dim) if n_classes else nn.Linear(n_targets, dim, bias=bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.n_classes:
            return self.map(y.long())
        return self.map(y.reshape(len(y), self.n_targets).to(self.map.weight.dtype))


class ConditionalGenerator(nn.Module):
    """G(z, y) -> a sample of ``shape``; z is (N, ``noise_dim``) standard normal noise."""

    def __init__(self, shape: tuple[int, ...], n_classes: int = 0, n_targets: int = 0, noise_dim: int = 32,
                 width: int = 32) -> None:
        super().__init__()
        conv, norm, k = _convs(shape)
        self.shape, self.noise_dim, self.width = tuple(shape), noise_dim, width
        self.base = tuple(math.ceil(s / 4) for s in shape[1:])  # two x2 upsamplings reach >= the data size
        self.cond = Condition(noise_dim, n_classes, n_targets)
        self.fc = nn.Sequential(nn.Linear(2 * noise_dim, width * math.prod(self.base)), nn.ReLU())
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), conv(width, width, k, padding=k // 2), norm(width), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), conv(width, width, k, padding=k // 2), norm(width), nn.ReLU(),
            conv(width, shape[0], k, padding=k // 2),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.cond(y)], dim=1)).view(len(z), self.width, *self.base)
        out = self.up(h)
        if out.dim() == 3:
            return out[:, :, : self.shape[1]]
        return out[:, :, : self.shape[1], : self.shape[2]]


class ProjectionDiscriminator(nn.Module):
    """D(x, y) -> a real/fake score (N,): ``w^T h(x) + <embed(y), h(x)>``."""

    def __init__(self, shape: tuple[int, ...], n_classes: int = 0, n_targets: int = 0, width: int = 32) -> None:
        super().__init__()
        conv, _, k = _convs(shape)
        pool = nn.AdaptiveAvgPool1d(4) if len(shape) == 2 else nn.AdaptiveAvgPool2d(4)
        self.features = nn.Sequential(
            spectral_norm(conv(shape[0], width, k, stride=2, padding=k // 2)), nn.LeakyReLU(0.2),
            spectral_norm(conv(width, 2 * width, k, stride=2, padding=k // 2)), nn.LeakyReLU(0.2),
            pool, nn.Flatten(),
        )
        dim = 2 * width * 4 ** (len(shape) - 1)
        self.out = spectral_norm(nn.Linear(dim, 1))
        self.cond = Condition(dim, n_classes, n_targets, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.out(h).squeeze(1) + (self.cond(y) * h).sum(1)


class DensityRatioNet(nn.Module):
    """r(phi, y) >= 0: an MLP on the features ``phi`` (N, D) and the condition (one-hot class or target)."""

    def __init__(self, feature_dim: int, n_classes: int = 0, n_targets: int = 0, hidden: int = 128) -> None:
        super().__init__()
        _check_condition(n_classes, n_targets)
        self.n_classes, self.n_targets = n_classes, n_targets
        self.net = nn.Sequential(
            nn.Linear(feature_dim + (n_classes or n_targets), hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1), nn.Softplus(),
        )

    def forward(self, phi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.n_classes:
            c = F.one_hot(y.long(), self.n_classes).to(phi.dtype)
        else:
            c = y.reshape(len(y), self.n_targets).to(phi.dtype)
        return self.net(torch.cat([phi.flatten(1), c], dim=1)).squeeze(1)
