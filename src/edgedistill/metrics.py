"""Evaluation metrics on full prediction arrays (not batch averages).

Classification: accuracy, macro-F1, NLL and expected calibration error (15 equal-width confidence bins,
Guo et al. 2017). Regression: MAE, RMSE, R^2, computed in the targets' original units.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).double().mean())


def macro_f1(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y`` or ``pred`` (either one; sklearn's default).

    A class absent from both is left out of the mean (it has no F1 at all), so ``n_classes`` only bounds the
    labels. Per class F1 = 2TP / (2TP + FP + FN), from the confusion matrix: the value of
    ``sklearn.metrics.f1_score(average="macro")`` (tests/test_metrics.py), without its import (1.3 s, once per
    process) and its argument checks (~4 ms a call, every epoch's validation)."""
    p, t = pred.reshape(-1).long().cpu(), y.reshape(-1).long().cpu()
    both = torch.cat([t, p])
    if both.numel() == 0:
        return 0.0
    low, high = int(both.min()), int(both.max())
    if low < 0 or high >= n_classes:
        raise ValueError(f"macro_f1: labels must lie in [0, {n_classes}), got {low}..{high}")
    cm = confusion_matrix(p, t, n_classes).double()
    tp = cm.diagonal()
    wrong = cm.sum(dim=0) + cm.sum(dim=1) - 2 * tp  # FP + FN
    present = (cm.sum(dim=0) + cm.sum(dim=1)) > 0
    return float((2 * tp[present] / (2 * tp[present] + wrong[present])).mean())


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


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Counts, int64 (n_classes, n_classes): rows are the true class, columns the predicted one (sklearn's layout),
    so a row's sum is the class's support and its diagonal entry over that sum is the class's recall."""
    y, pred = y.reshape(-1).long().cpu(), pred.reshape(-1).long().cpu()
    return torch.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_recall(confusion: torch.Tensor) -> list[Optional[float]]:
    """Recall of each class (diagonal / row sum); None for a class absent from the split (no recall at all)."""
    support = confusion.sum(dim=1)
    return [float(confusion[c, c]) / float(support[c]) if support[c] > 0 else None for c in range(len(support))]


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, iters: int = 80) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising NLL(logits / T), fitted on held-out data.

    NLL(beta * z) is convex in beta = 1/T (log-sum-exp of a linear function minus a linear one), hence unimodal
    in log beta: a golden-section search over beta in [1e-3, 1e3] finds it. Dividing by T changes no argmax,
    so accuracy is untouched; only the probabilities move. When every held-out sample is classified right
    the NLL keeps falling as T -> 0 and the fit stops at its bound T = 1e-3 (a hard-argmax classifier)."""
    z, t = logits.detach().double(), y
    f = lambda log_beta: float(F.cross_entropy(z * math.exp(log_beta), t))  # noqa: E731
    lo, hi, g = math.log(1e-3), math.log(1e3), (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    return math.exp(-(lo + hi) / 2)


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
