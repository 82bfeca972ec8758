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


#: A recipe that trains in seconds on synthetic 5-subject data (the CLI's end-to-end tests start from it).
TINY_RECIPE = {
    "name": "e2e",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}, "split": {"by": "subject"}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 2, "batch_size": 16}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 2}]},
    "train": {"epochs": 2, "batch_size": 16},
    "seeds": [0, 1],
    "engine": {"progress": False},
    "report": {"plots": False},  # (drawing the plots costs ~2 s a run; tests/test_plots*.py and test_html_report*.py ask for them)
}


def recipe_file(tmp_path, base: dict = TINY_RECIPE, **changes):
    """``base`` with top-level ``changes``, written as ``tmp_path/recipe.yaml``."""
    import json

    import yaml

    data = json.loads(json.dumps(base))
    data.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli_run(*args):
    """``edgedistill run ARGS --no-progress`` in this process (typer's CliRunner): exit code and output."""
    from typer.testing import CliRunner

    from edgedistill.cli import app

    return CliRunner().invoke(app, ["run", *map(str, args), "--no-progress"])
