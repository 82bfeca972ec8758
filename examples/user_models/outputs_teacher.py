"""Make the two files of examples/user_models/outputs.yaml: a data file and a teacher's outputs on it.

The teacher here is a nearest-class-mean classifier in plain numpy, standing in for a model from any framework
(Keras, JAX, a server-side model): all edgedistill reads is its outputs, one row per sample of ``x`` in the order
of ``x``, and one per sample of ``test_x`` (docs/models.md, "Teacher outputs from a file"). It is fitted on ``x``
only: ``test_x`` is the official test split that no model sees before the report.

    python examples/user_models/outputs_teacher.py            # writes next to this file
    edgedistill run examples/user_models/outputs.yaml
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def make_data(rng: np.random.Generator, n: int, classes: int = 4, channels: int = 3, length: int = 32):
    """Noisy sine bursts whose frequency and channel depend on the class."""
    y = rng.integers(0, classes, n)
    t = np.linspace(0, 1, length)
    x = rng.normal(0, 0.6, size=(n, channels, length))
    x[np.arange(n), y % channels] += np.sin(2 * np.pi * (1 + y)[:, None] * t)
    return x.astype(np.float32), y


def teacher_logits(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Logits of a nearest-class-mean classifier: minus the mean squared distance to each class mean, scaled."""
    flat_fit, flat = x_fit.reshape(len(x_fit), -1), x.reshape(len(x), -1)
    means = np.stack([flat_fit[y_fit == c].mean(axis=0) for c in range(int(y_fit.max()) + 1)])
    dist = ((flat[:, None, :] - means[None]) ** 2).mean(axis=2)
    return (-4.0 * dist).astype(np.float32)


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = make_data(rng, 240)
    test_x, test_y = make_data(rng, 80)
    np.savez(out / "outputs_data.npz", x=x, y=y, test_x=test_x, test_y=test_y)
    # The export: one array per split, rows in the order of x and of test_x.
    np.savez(out / "outputs_teacher.npz", logits=teacher_logits(x, y, x), test_logits=teacher_logits(x, y, test_x))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
