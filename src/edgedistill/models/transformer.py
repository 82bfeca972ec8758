"""A small transformer for wearable windows: sensor-patch tokens, learned positions, pre-norm encoder.

Input ``(N, C, L)``. The channels are cut into sensors of ``sensor_channels`` axes (3 = one
accelerometer or gyroscope; the last sensor is zero-padded when ``C`` is not a multiple), and each sensor's
window into patches of ``patch`` time steps (the window is zero-padded on the right to whole patches).
Every (sensor, patch) pair is one token, embedded by that sensor's own linear patch projection (a grouped
``Conv1d`` with kernel = stride = ``patch``), so the model can treat each body position and orientation on
its own, and attention can relate sensors to each other and patches over time. This follows the idea of
TASKED (Suh et al. 2023, arXiv 2209.09092: a transformer over "individual sensor orientations" and
"spatial and temporal features"); its exact architecture is not public, so this is our design, sized for
an edge device (about 20k parameters with the defaults on 9 x 128 windows).

Learned positional embeddings are sized from ``input_size`` at build time: a time embedding per patch plus
a sensor embedding per sensor. Pre-norm encoder layers (``nn.TransformerEncoderLayer``, ``batch_first``,
``norm_first``) are wrapped so every tap is channels-first ``(N, d_model, tokens)`` like the conv zoo's
``(N, D, L)`` maps (tokens are ordered sensor-major, patch-minor), then a final LayerNorm, mean pooling
over tokens and a linear ``head``.
"""
from __future__ import annotations

import torch
from torch import nn

from edgedistill.models import KnobError
from edgedistill.registry import MODELS


class PatchEmbed(nn.Module):
    """``(N, C, L)`` -> tokens ``(N, S * P, d)``: per-sensor patch projection + time and sensor embeddings."""

    def __init__(self, in_channels: int, length: int, d_model: int, patch: int, sensor_channels: int) -> None:
        super().__init__()
        group = min(sensor_channels, in_channels)
        self.sensors = -(-in_channels // group)
        self.patches = -(-length // patch)
        self.length = length
        pad_c, pad_t = self.sensors * group - in_channels, self.patches * patch - length
        # Zero padding (not "same" convs) keeps the tokens exactly the patches of the window; a Pad op exports cleanly.
        self.pad = nn.ConstantPad2d((0, pad_t, 0, pad_c), 0.0) if pad_c or pad_t else nn.Identity()
        self.proj = nn.Conv1d(self.sensors * group, self.sensors * d_model, patch, stride=patch, groups=self.sensors)
        # Small init (ViT uses trunc-normal 0.02): positions start as a gentle bias, not noise drowning the patches.
        self.time_pos = nn.Parameter(0.02 * torch.randn(1, 1, self.patches, d_model))
        self.sensor_pos = nn.Parameter(0.02 * torch.randn(1, self.sensors, 1, d_model))
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.length:
            raise ValueError(
                f"the transformer was built for windows of length {self.length} (its positional embedding is sized "
                f"from input_size), got length {x.shape[-1]}"
            )
        z = self.proj(self.pad(x.unsqueeze(1)).squeeze(1))  # (N, S * d, P)
        n = z.shape[0]
        z = z.reshape(n, self.sensors, self.d_model, self.patches).transpose(2, 3)  # (N, S, P, d)
        z = z + self.time_pos + self.sensor_pos
        return z.reshape(n, self.sensors * self.patches, self.d_model)


class ChannelsFirst(nn.Module):
    """Run a token-major module ``(N, T, d)`` on channels-first features ``(N, d, T)`` and return them so."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.transpose(1, 2)).transpose(1, 2)


class Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class SensorTransformer(nn.Module):
    """Patch tokens -> ``depth`` pre-norm encoder layers -> LayerNorm -> mean over tokens -> linear head."""

    def __init__(self, in_channels: int, n_outputs: int, length: int, d_model: int, depth: int, heads: int,
                 patch: int, dropout: float, sensor_channels: int, mlp_ratio: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(PatchEmbed(in_channels, length, d_model, patch, sensor_channels), Transpose())
        self.blocks = nn.Sequential(*(
            ChannelsFirst(nn.TransformerEncoderLayer(
                d_model, heads, dim_feedforward=mlp_ratio * d_model, dropout=dropout, activation="gelu",
                batch_first=True, norm_first=True,
            ))
            for _ in range(depth)
        ))
        self.norm = ChannelsFirst(nn.LayerNorm(d_model))  # pre-norm layers leave the last output un-normalised
        self.pool = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.head = nn.Linear(d_model, n_outputs)
        self.default_taps = {"stage1": "blocks.0", "feat": "norm", "emb": "pool"}
        if depth >= 3:
            self.default_taps["stage2"] = f"blocks.{depth // 2}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.norm(self.blocks(self.embed(x)))))


@MODELS.register("transformer", kind="1d", role="student")
def transformer(
    in_channels: int,
    n_outputs: int,
    input_size: tuple[int, ...],
    d_model: int = 32,
    depth: int = 2,
    heads: int = 4,
    patch: int = 8,
    dropout: float = 0.1,
    sensor_channels: int = 3,
    mlp_ratio: int = 2,
) -> nn.Module:
    """Small sensor-patch transformer (TASKED-style): d_model=32, depth=2, heads=4, patch=8, sensor_channels=3."""
    for knob, value in (("d_model", d_model), ("depth", depth), ("heads", heads), ("patch", patch),
                        ("sensor_channels", sensor_channels), ("mlp_ratio", mlp_ratio)):
        if value <= 0:
            raise KnobError(knob, f"must be positive, got {value!r}")
    if d_model % heads:
        raise KnobError("heads", f"must divide d_model ({d_model}), got {heads}")
    if not 0.0 <= dropout < 1.0:
        raise KnobError("dropout", f"must be in [0, 1), got {dropout!r}")
    return SensorTransformer(in_channels, n_outputs, int(input_size[0]), d_model, depth, heads, patch, dropout,
                             sensor_channels, mlp_ratio)
