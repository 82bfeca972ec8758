"""Tiny in-memory datasets and models for engine and method tests (no zoo, no loaders)."""
import torch
from torch import nn

from edgedistill.data.dataset import DataInfo, DataSplits, TensorData


def toy_splits(n: int = 96, channels: int = 3, length: int = 16, classes: int = 3, seed: int = 0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, channels, length, generator=g) * 0.5
    x[torch.arange(n), y % channels, :] += 1.0 + y.float()[:, None]  # class-dependent, learnable
    data = TensorData({"x": x}, y)
    a, b = int(n * 0.6), int(n * 0.8)
    info = DataInfo(name="toy", task="classification", input_shape=(channels, length), n_outputs=classes,
                    classes=[str(c) for c in range(classes)], views={"x": (channels, length)},
                    sizes={"train": a, "val": b - a, "test": n - b})
    return DataSplits(data.subset(range(a)), data.subset(range(a, b)), data.subset(range(b, n)), info)


def tiny_net(channels: int = 3, classes: int = 3, width: int = 8, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(channels, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, classes),
    )
