"""Distil your own PyTorch modules from Python: edgedistill.fit_teacher, edgedistill.distill, DistilledClassifier.

    python examples/user_models/python_api.py [OUT_FOLDER]

Runs in seconds on a CPU: 120 synthetic windows (3 channels x 32 steps, 3 classes), a small conv teacher and a
smaller student, a few epochs. Each call writes a run directory (config.yaml, report.md, checkpoints) as
`edgedistill run` does, and trained teachers are cached: run it twice and the teacher is reused.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edgedistill


class ConvNet(nn.Module):
    """Any nn.Module mapping (batch, channels, length) to (batch, classes) works; this one is two layers."""

    def __init__(self, channels: int = 3, classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, width, kernel_size=5, padding=2)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=-1))


def windows(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): activity k raises channel k, under noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 1.0, (n, 3, 32)).astype(np.float32)
    x[np.arange(n), y] += 2.0
    return x, np.array(["walk", "run", "sit"])[y]


def main(out: Path, epochs: int = 20) -> dict:
    x, y = windows()
    torch.manual_seed(0)
    # 1. Train the teacher as a run trains one (cached under $EDGEDISTILL_CACHE or ~/.cache/edgedistill).
    fitted = edgedistill.fit_teacher(ConvNet(width=16), (x, y), out=out / "teacher", progress=False,
                                     train__epochs=epochs, train__lr=0.01)
    # 2. Distil it into the student: a trained module is used as given (evaluated, not retrained). Its outputs must
    #    follow the run's class order (sorted labels: run, sit, walk), as they do when it was fitted on the same y.
    result = edgedistill.distill(teacher=fitted.teacher, student=ConvNet(width=4), data=(x, y), out=out / "kd",
                                 progress=False, train__epochs=epochs, train__lr=0.01)
    print(f"teacher test accuracy {fitted.summary['rows'][0]['metrics']['acc']['mean']:.3f} "
          f"(reused from cache: {fitted.summary['teacher']['cached']})")
    for row in result.summary["rows"]:
        print(f"{row['role']:>14}: test accuracy {row['metrics']['acc']['mean']:.3f}")
    print(f"report: {result.run_dir / 'report.md'}")
    # 3. The same in one line, scikit-learn style: predictions apply the run's normalisation.
    clf = edgedistill.DistilledClassifier(fitted.teacher, ConvNet(width=4), out=out / "clf",
                                          train__epochs=epochs, train__lr=0.01).fit(x, y)
    print("predicted:", " ".join(clf.predict(x[:6])), "| true:", " ".join(y[:6]))
    return {"fitted": fitted, "distilled": result, "classifier": clf}


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs") / "python_api")
