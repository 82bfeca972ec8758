"""Learning curves (every training loss term and the validation metric, per network) and the paired per-seed
differences between the distilled student and the student alone.

Inputs are plain data (``plots_sources.Curves``, a summary dict); each function returns a ``Plot`` or None when the
data holds nothing to draw, so the report shows what a run has.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from edgedistill.experiment.plots_common import Plot, colour, figure, grid_shape, tidy
from edgedistill.experiment.plots_sources import Curves


def _series(records: list[dict[str, Any]], get: Any) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        try:
            v = get(r)
        except (KeyError, TypeError):
            continue
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(int(r["epoch"]))
            ys.append(float(v))
    return xs, ys


def _mean_series(per_seed: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    """Mean over seeds at each epoch every seed reached (a seed still training is shorter)."""
    by_epoch: dict[int, list[float]] = {}
    for xs, ys in per_seed:
        for x, y in zip(xs, ys):
            by_epoch.setdefault(x, []).append(y)
    full = [e for e in sorted(by_epoch) if len(by_epoch[e]) == len(per_seed)]
    return full, [sum(by_epoch[e]) / len(by_epoch[e]) for e in full]


def _draw(ax: Any, per_seed: dict[int, list[dict[str, Any]]], get: Any, label: str, col: str) -> bool:
    """Seeds as thin lines, their mean as a thick one (one line when there is one seed). False: nothing drawn."""
    series = [s for s in (_series(recs, get) for recs in per_seed.values()) if s[0]]
    if not series:
        return False
    if len(series) > 1:
        for xs, ys in series:
            ax.plot(xs, ys, color=col, alpha=0.25, linewidth=0.8)
        xs, ys = _mean_series(series)
    else:
        xs, ys = series[0]
    ax.plot(xs, ys, color=col, linewidth=1.8, label=label, marker="o" if len(xs) < 4 else None, markersize=3)
    return True


def loss_curves(curves: list[Curves]) -> Optional[Plot]:
    """One panel per network; one line per training loss term (mean over seeds; seeds thin)."""
    panels = [c for c in curves if any(r.get("train") for recs in c.records.values() for r in recs)]
    if not panels:
        return None
    rows, cols = grid_shape(len(panels))
    fig = figure(4.2 * cols, 3.2 * rows)
    for i, c in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        terms = list(dict.fromkeys(k for recs in c.records.values() for r in recs for k in (r.get("train") or {})))
        # "total" last and dashed: the sum of the weighted terms, what the optimiser saw.
        terms = [t for t in terms if t != "total"] + (["total"] if "total" in terms else [])
        for j, term in enumerate(terms):
            drawn = _draw(ax, c.records, lambda r, t=term: r["train"][t], term, colour("", j))
            if drawn and term == "total":
                ax.lines[-1].set_linestyle("--")
                ax.lines[-1].set_color("black")
        seeds = len(c.records)
        ax.set_title(f"{c.name} ({seeds} seed{'s' if seeds != 1 else ''})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (epoch mean)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    tidy(fig, rows, cols)
    return Plot("curves_loss", "Learning curves: training loss terms", fig,
                "Each training loss term's mean over an epoch's batches, per network; with several seeds the thick line "
                "is their mean and the thin lines the seeds. *total* is the weighted sum the optimiser minimised.")


def validation_curves(curves: list[Curves], task: str) -> Optional[Plot]:
    """The validation metric per epoch, one line per network, and the learning rate of the distilled stage."""
    keys = [("acc", "validation accuracy"), ("nll", "validation NLL")] if task == "classification" \
        else [("rmse", "validation RMSE"), ("r2", "validation R²")]
    have = [(k, lab) for k, lab in keys if any(k in (r.get("val") or {}) for c in curves for recs in c.records.values() for r in recs)]
    if not have:
        return None
    fig = figure(4.2 * (len(have) + 1), 3.4)
    for i, (key, label) in enumerate(have):
        ax = fig.add_subplot(1, len(have) + 1, i + 1)
        for j, c in enumerate(curves):
            _draw(ax, c.records, lambda r, k=key: r["val"][k], c.name, colour(c.name if c.name in ("teacher", "student alone") else "", j))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = fig.add_subplot(1, len(have) + 1, len(have) + 1)
    for j, c in enumerate(curves):
        _draw(ax, c.records, lambda r: r["lr"], c.name, colour(c.name if c.name in ("teacher", "student alone") else "", j))
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    tidy(fig, 1, len(have) + 1)
    return Plot("curves_val", "Learning curves: validation metrics per network", fig,
                "Validation metrics after each epoch for the teacher(s), the student alone and the distilled student "
                "(seeds thin, their mean thick), and the learning rate schedule.")


def paired_differences(summary: dict[str, Any]) -> Optional[Plot]:
    """Method minus student alone, seed by seed (the same initialisation and data order): one bar per seed and metric."""
    rows = {r.get("role"): r for r in summary.get("rows", [])}
    method, alone = rows.get("method"), rows.get("student alone")
    if method is None or alone is None or not method.get("per_seed_test") or not alone.get("per_seed_test"):
        return None
    keys = ["acc", "f1", "ece"] if summary.get("task") == "classification" else ["rmse", "mae", "r2"]
    lower_better = {"ece", "nll", "rmse", "mae"}
    pairs = list(zip(method["per_seed_test"], alone["per_seed_test"]))
    keys = [k for k in keys if all(k in a and k in b for a, b in pairs)]
    if not keys:
        return None
    seeds = summary.get("seeds") or list(range(len(pairs)))
    fig = figure(3.6 * len(keys), 3.2)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        diffs = [a[key] - b[key] for a, b in pairs]
        good = [(d < 0) if key in lower_better else (d > 0) for d in diffs]
        ax.bar([str(s) for s in seeds[: len(diffs)]], diffs, color=["#2ca02c" if g else "#d62728" for g in good])
        ax.axhline(0.0, color="black", linewidth=0.8)
        mean = sum(diffs) / len(diffs)
        ax.axhline(mean, color="grey", linestyle="--", linewidth=1, label=f"mean {mean:+.3f}")
        ax.set_xlabel("seed")
        ax.set_ylabel(f"Δ test {key} (method − alone)")
        ax.set_title(f"{key}: {'lower' if key in lower_better else 'higher'} is better", fontsize=9)
        ax.legend(fontsize=7)
    tidy(fig, 1, len(keys))
    return Plot("paired_seeds", "Paired per-seed differences (method − student alone)", fig,
                f"Test metric of **{method['model']}** minus the student alone's, for each seed (both start from the same "
                "initialisation and see the same batches); green where the method was better.")
