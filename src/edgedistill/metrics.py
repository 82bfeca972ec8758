"""Evaluation metrics on full prediction arrays (not batch averages).

Classification: accuracy, macro-F1, NLL and expected calibration error (15 equal-width confidence bins,
Guo et al. 2017). Regression: MAE, RMSE, R^2, computed in the targets' original units.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).double().mean())


def macro_f1(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes present in ``y`` or ``pred`` (sklearn's convention)."""
    p, t = pred.cpu().numpy(), y.cpu().numpy()
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    tp = np.diag(cm).astype(float)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    present = (cm.sum(0) + cm.sum(1)) > 0
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def nll(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.double(), y))


def ece(logits: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error: sum_b |B_b|/n * |acc(B_b) - conf(B_b)| over equal-width bins of (0, 1]."""
    prob = logits.double().softmax(dim=1)
    conf, pred = prob.max(dim=1)
    correct = (pred == y).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.double().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(total)


def classification_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    logits = logits.detach().float()
    return {
        "acc": accuracy(logits, y),
        "f1": macro_f1(logits.argmax(dim=1), y, logits.shape[1]),
        "nll": nll(logits, y),
        "ece": ece(logits, y),
    }


def regression_metrics(pred: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """MAE, RMSE and R^2 averaged over targets; inputs already in original units."""
    pred = pred.detach().double().reshape(len(pred), -1)
    y = y.double().reshape(len(y), -1)
    err = pred - y
    ss_res = (err**2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300), torch.zeros_like(ss_tot))
    return {
        "mae": float(err.abs().mean()),
        "rmse": float((err**2).mean(0).sqrt().mean()),
        "r2": float(r2.mean()),
    }


# Model selection on validation: higher is better for these keys (regression uses -rmse).
def selection_score(metrics: dict[str, float]) -> tuple[float, float]:
    """Primary score and tie-break, both higher-is-better: (acc, -nll) or (-rmse, -mae)."""
    if "acc" in metrics:
        return (metrics["acc"], -metrics["nll"])
    return (-metrics["rmse"], -metrics["mae"])
