"""Per-class confusion matrices (from summary.json's per-class detail) and the Pareto trade-off of every student
tried: accuracy vs parameters, vs int8 size and vs batch-1 latency (those two from a run's deployment profile)."""
from __future__ import annotations

from typing import Any, Optional

from edgedistill.experiment.plots_common import Plot, figure, grid_shape, tidy

MAXIMIZE = {"acc", "f1", "r2"}


def confusion(summary: dict[str, Any]) -> Optional[Plot]:
    """Row-normalised confusion matrix (recall on the diagonal) of each network with per-class detail, counts written
    in the cells when there are few classes."""
    rows = [r for r in summary.get("rows", []) if isinstance(r.get("detail"), dict) and r["detail"].get("confusion")]
    if not rows:
        return None
    classes = [str(c) for c in (summary.get("data") or {}).get("classes") or []]
    n = len(rows[0]["detail"]["confusion"])
    names = classes if len(classes) == n else [str(i) for i in range(n)]
    r_, c_ = grid_shape(len(rows))
    side = min(6.0, 2.2 + 0.35 * n)
    fig = figure(side * c_ + 0.6, side * r_)
    for i, row in enumerate(rows):
        cm = row["detail"]["confusion"]
        norm = [[v / max(sum(line), 1e-12) for v in line] for line in cm]
        ax = fig.add_subplot(r_, c_, i + 1)
        im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
        if n <= 12:
            for a in range(n):
                for b in range(n):
                    v = cm[a][b]
                    ax.text(b, a, str(int(v)) if float(v).is_integer() else f"{v:.1f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[a][b] > 0.5 else "black")
        step = max(1, n // 15)  # at most ~15 tick labels per axis
        ax.set_xticks(range(0, n, step), names[::step], rotation=45 if max(map(len, names)) > 3 else 0, fontsize=7)
        ax.set_yticks(range(0, n, step), names[::step], fontsize=7)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        k = row["detail"].get("seeds", 1)
        ax.set_title(f"{row['model']} ({row['role']})" + (f", mean of {k} seeds" if k > 1 else ""), fontsize=8)
    tidy(fig, r_, c_, right=1.2, gap=1.0)
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label="fraction of the true class (row)")
    return Plot("confusion", "Confusion matrices (test)", fig,
                "Rows are the true class, columns the predicted one; colour is the fraction of the row (the diagonal is "
                "each class's recall), numbers are counts (means over seeds).")


def _front(points: list[tuple[float, float]], maximize: bool) -> list[tuple[float, float]]:
    """Non-dominated points, by increasing cost (x): each is better (y) than every cheaper one."""
    out: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if maximize else p[1])):
        if not out or (y > out[-1][1] if maximize else y < out[-1][1]):
            out.append((x, y))
    return out


def pareto_points(runs: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """(metric, points): each reported network of each run with its size, plus the profiled student's int8 size and
    latency. ``runs``: ``plots_sources.RunData`` (several for a comparison or a sweep's trials)."""
    points: list[dict[str, Any]] = []
    task = next((r.summary.get("task") for r in runs if r.summary), "classification")
    metric = "acc" if task == "classification" else "rmse"
    for run in runs:
        if not run.summary or run.summary.get("folds"):
            continue
        for row in run.summary.get("rows", []):
            stat = (row.get("metrics") or {}).get(metric)
            if not stat or row.get("role", "").startswith("also trained") or row.get("params") is None:
                continue
            point = {"run": run.name, "model": row["model"], "role": row["role"], "y": stat["mean"],
                     "params": row.get("params"), "size_kb": row.get("size_kb")}
            if row["role"] == "method" and run.profile:
                variants = {v.get("variant"): v for v in run.profile.get("rows", [])}
                q8 = variants.get("onnxruntime int8")
                fp32 = variants.get("onnxruntime fp32") or variants.get("pytorch eager")
                if q8:
                    point["int8_kb"] = q8["size_bytes"] / 1024
                lat = q8 or fp32
                if lat and lat.get("median_us") is not None:
                    point["latency_us"] = lat["median_us"]
                    point["latency_of"] = lat["variant"]
            points.append(point)
    return metric, points


def pareto(runs: list[Any]) -> Optional[Plot]:
    metric, points = pareto_points(runs)
    if not points:
        return None
    maximize = metric in MAXIMIZE
    several = len({p["run"] for p in points}) > 1
    panels = [("params", "parameters", True), ("int8_kb", "int8 ONNX size (KB)", True),
              ("latency_us", "batch-1 latency (µs, median, one thread)", True)]
    fig = figure(4.4 * len(panels), 3.8)
    markers = {"teacher": "s", "student alone": "o", "method": "D"}
    for i, (key, label, log) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        have = [p for p in points if p.get(key) is not None]
        for p in have:
            role = p["role"] if p["role"] in markers else "teacher" if p["role"].startswith(("teacher", "assistant")) else "method"
            ax.scatter(p[key], p["y"], marker=markers[role], s=30, alpha=0.8,
                       color={"teacher": "#1f77b4", "student alone": "#ff7f0e", "method": "#2ca02c"}[role])
            if len(have) <= 12:
                ax.annotate(f"{p['run']}: {p['model']}" if several else p["model"], (p[key], p["y"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        front = _front([(p[key], p["y"]) for p in have], maximize)
        if len(front) > 1:
            ax.step([x for x, _ in front], [y for _, y in front], where="post", color="grey", linestyle="--",
                    linewidth=1, label="Pareto front")
            ax.legend(fontsize=7)
        if not have:
            ax.text(0.5, 0.5, "no deployment profile\n(report.profile: true,\nor edgedistill profile RUN)",
                    ha="center", va="center", fontsize=8, transform=ax.transAxes)
        elif log and min(p[key] for p in have) > 0 and max(p[key] for p in have) / min(p[key] for p in have) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {metric}" + ("" if maximize else " (lower is better)"))
        ax.set_title(f"test {metric} vs {label.split(' (')[0]}", fontsize=9)
        ax.grid(alpha=0.3)
    # One legend for the roles (markers), on the first panel.
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker=m, linestyle="", color=c, label=r) for r, m, c in
               (("teacher", "s", "#1f77b4"), ("student alone", "o", "#ff7f0e"), ("distilled student", "D", "#2ca02c"))]
    fig.axes[0].legend(handles=handles + [h for h in fig.axes[0].get_legend_handles_labels()[0]], fontsize=7, loc="lower right")
    tidy(fig, 1, len(panels))
    return Plot("pareto", "Accuracy vs size and latency (Pareto)", fig,
                f"Test {metric} of every network against its parameter count, and of each profiled student against its int8 "
                "ONNX size and batch-1 latency (the deployment profile). The dashed line links the points no cheaper "
                "network beats.")
