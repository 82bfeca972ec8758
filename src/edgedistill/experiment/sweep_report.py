"""A sweep's outputs: ``results.csv``, ``results.md`` (one row per grid point) and ``heatmap.png``.

Rows are plain dicts built by :mod:`edgedistill.experiment.sweep` from the trial store, one per grid point:
``{"point": {key: value}, "id", "state", "trial", "run_dir", "method": {mean, std, n} | None, "alone": ... | None,
"diff": paired mean difference | None, "wins": int | None, "n": int | None, "teacher": float | None, "error"}``.
Every file is written atomically (a temporary file renamed over the target).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional

import yaml

from edgedistill.io import atomic_write, write_text

MAXIMIZE = {"acc", "f1", "r2"}  # every other metric (ece, nll, mae, rmse) is better when lower


def label(value: Any) -> str:
    """A grid value as text that reads back as the same YAML value (``[removal, shift]``, ``0.5``, ``null``)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (int, str)):
        return str(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()


def _fmt(stat: Optional[dict[str, float]], digits: int = 3) -> str:
    if not stat:
        return ""
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _num(x: Optional[float]) -> str:
    return "" if x is None else repr(float(x))


def selection_value(row: dict[str, Any]) -> float:
    """What a grid point is chosen by: the method's validation mean (select on validation, report on test).
    Results stored before validation was recorded fall back to the test mean."""
    return (row.get("val") or row["method"])["mean"]


def best_row(rows: list[dict[str, Any]], metric: str) -> Optional[dict[str, Any]]:
    done = [r for r in rows if r["method"] is not None]
    if not done:
        return None
    sign = 1 if metric in MAXIMIZE else -1
    return max(done, key=lambda r: sign * selection_value(r))


def csv_text(rows: list[dict[str, Any]], axes: list[str], metric: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*axes, "state", f"{metric}_mean", f"{metric}_std", "seeds", f"val_{metric}_mean", f"alone_{metric}_mean", f"alone_{metric}_std",
                "paired_diff_mean", "wins", f"teacher_{metric}", "trial", "run_dir", "error"])
    for r in rows:
        m, a = r["method"] or {}, r["alone"] or {}
        w.writerow([*(label(r["point"][k]) for k in axes), r["state"], _num(m.get("mean")), _num(m.get("std")),
                    m.get("n", ""), _num((r.get("val") or {}).get("mean")), _num(a.get("mean")), _num(a.get("std")), _num(r["diff"]),
                    "" if r["wins"] is None else r["wins"], _num(r["teacher"]), "" if r["trial"] is None else r["trial"],
                    r["run_dir"] or "", r["error"] or ""])
    return buf.getvalue()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(info: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    axes, metric = info["axes"], info["metric"]
    better = "higher" if metric in MAXIMIZE else "lower"
    done = sum(r["state"] == "complete" for r in rows)
    failed = [r for r in rows if r["state"] == "failed"]
    lines = [
        f"# {info['name']}: sweep over {', '.join(f'`{a}`' for a in axes)}",
        "",
        f"Test **{metric}** ({better} is better) of the method's student, mean ± sample std over seeds {info['seeds']}; "
        f"the best grid point is chosen on the validation {metric}, never on test"
        f"{' (smoke mode: tiny synthetic data, one epoch)' if info.get('smoke') else ''}. *paired diff* = method − student "
        "alone, averaged over seeds (seed k of both starts from the same initialisation and data order); *wins* = seeds on "
        f"which the method was better. {len(rows)} grid points: {done} finished"
        + (f", {len(failed)} failed" if failed else "") + (f", {len(rows) - done - len(failed)} not finished" if len(rows) - done - len(failed) else "") + ".",
        "",
    ]
    header = [*axes, f"method {metric}", f"method val {metric}", "student alone", "paired diff", "wins", f"teacher {metric}", "run"]
    lines += ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        if r["method"] is not None:
            wins = "" if r["wins"] is None else f"{r['wins']}/{r['n']}"
            diff = "" if r["diff"] is None else f"{r['diff']:+.3f}"
            teacher = "" if r["teacher"] is None else f"{r['teacher']:.3f}"
            cells = [_fmt(r["method"]), _fmt(r.get("val")), _fmt(r["alone"]), diff, wins, teacher, f"`{r['run_dir']}`"]
        else:
            cells = [r["state"], "", "", "", "", "", f"`{r['run_dir']}`" if r["run_dir"] else ""]
        lines.append("| " + " | ".join(_cell(c) for c in [*(label(r["point"][k]) for k in axes), *cells]) + " |")
    best = best_row(rows, metric)
    if best is not None:
        where = ", ".join(f"{k}={label(best['point'][k])}" for k in axes)
        alone = f" (student alone {_fmt(best['alone'])})" if best["alone"] else ""
        how = f"validation {metric} {_fmt(best['val'])}" if best.get("val") else "test (no validation recorded)"
        lines += ["", f"Best on {how}: {where}: test {metric} {_fmt(best['method'])}{alone}."]
    for r in failed:
        where = ", ".join(f"{k}={label(r['point'][k])}" for k in axes)
        lines += ["", f"Failed: {where}: {r['error']}"]
    if failed or done < len(rows):
        lines += ["", "Run the same command (with the same `--out`) again to run what is not finished."]
    lines += ["", f"Command: `{info['command']}`", ""]
    return "\n".join(lines)


def write_tables(sweep_dir: Path, info: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    write_text(sweep_dir / "results.csv", csv_text(rows, info["axes"], info["metric"]))
    write_text(sweep_dir / "results.md", markdown(info, rows))


def cell_points(done: list[dict[str, Any]], axes: list[str], values: dict[str, list[Any]],
                metric: str) -> dict[tuple[int, int], dict[str, Any]]:
    """The finished row each heatmap cell (index along the first, second axis) shows: with more than two axes,
    the one best on validation among those sharing the cell (its test value is what is drawn)."""
    sign = 1 if metric in MAXIMIZE else -1
    l0, l1 = [label(v) for v in values[axes[0]]], [label(v) for v in values[axes[1]]]
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for r in done:
        ij = (l0.index(label(r["point"][axes[0]])), l1.index(label(r["point"][axes[1]])))
        if ij not in cells or sign * selection_value(r) > sign * selection_value(cells[ij]):
            cells[ij] = r
    return cells


def heatmap(path: Path, info: dict[str, Any], rows: list[dict[str, Any]], values: dict[str, list[Any]]) -> None:
    """Method test mean per grid point: a bar chart (one axis), a heatmap (two), or the first two axes with,
    in each cell, the point best on validation over the others (more than two). Drawn without pyplot (no global backend change), saved atomically."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    axes, metric = info["axes"], info["metric"]
    sign = 1 if metric in MAXIMIZE else -1
    done = {r["id"]: r for r in rows if r["method"] is not None}
    alone = {round(r["alone"]["mean"], 12) for r in done.values() if r["alone"]}
    alone_txt = ""
    if len(alone) == 1:
        a = next(r["alone"] for r in done.values() if r["alone"])
        alone_txt = f"student alone {_fmt(a)}"
    title = f"{info['name']}: test {metric} of the method, mean over seeds {info['seeds']}"
    fig = Figure(figsize=(7.5, 5.0) if len(axes) == 1 else (1.6 + 1.3 * max(3, len(values[axes[1]])), 1.6 + 0.9 * max(3, len(values[axes[0]]))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if len(axes) == 1:
        key = axes[0]
        by_value = {label(r["point"][key]): r for r in done.values()}
        names = [label(v) for v in values[key]]
        means = [by_value[n]["method"]["mean"] if n in by_value else np.nan for n in names]
        stds = [by_value[n]["method"]["std"] if n in by_value else 0.0 for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="#4c72b0", label="method (± seed std)")
        if alone_txt:
            ax.axhline(a["mean"], color="#c44e52", linestyle="--", label=alone_txt)
        ax.set_xticks(range(len(names)), names, rotation=30 if max(map(len, names)) > 8 else 0, ha="right" if max(map(len, names)) > 8 else "center")
        ax.set_xlabel(key)
        ax.set_ylabel(f"test {metric}")
        finite = [m for m in means if not math.isnan(m)]
        if finite:
            lo = min(min(finite), a["mean"] if alone_txt else min(finite))
            hi = max(m + s for m, s in zip(means, stds) if not math.isnan(m))
            pad = 0.15 * max(hi - lo, 1e-3)
            ax.set_ylim(lo - pad if lo - pad > 0 or metric not in MAXIMIZE else 0, hi + pad)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14 if max(map(len, names)) <= 8 else -0.3), ncol=2, fontsize=8,
                  frameon=False)
    else:
        k0, k1 = axes[0], axes[1]
        grid = np.full((len(values[k0]), len(values[k1])), np.nan)
        text = [["" for _ in values[k1]] for _ in values[k0]]
        l0, l1 = [label(v) for v in values[k0]], [label(v) for v in values[k1]]
        for (i, j), r in cell_points(list(done.values()), axes, values, metric).items():
            grid[i, j] = r["method"]["mean"]
            text[i][j] = _fmt(r["method"], 3).replace(" ± ", "\n± ")
            if len(axes) > 2:
                text[i][j] += "\n" + ", ".join(f"{k.split('.')[-1]}={label(r['point'][k])}" for k in axes[2:])
        cmap = "viridis" if sign > 0 else "viridis_r"
        im = ax.imshow(grid, cmap=cmap, aspect="auto")
        fig.colorbar(im, ax=ax, label=f"test {metric}" + ("" if sign > 0 else " (lower is better)"))
        ax.set_yticks(range(len(l0)), l0)
        ax.set_xticks(range(len(l1)), l1, rotation=30 if max(map(len, l1)) > 8 else 0, ha="right" if max(map(len, l1)) > 8 else "center")
        ax.set_ylabel(k0)
        ax.set_xlabel(k1)
        finite = grid[~np.isnan(grid)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(len(l0)):
            for j in range(len(l1)):
                if text[i][j]:
                    dark = (grid[i, j] < mid) if sign > 0 else (grid[i, j] > mid)
                    ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7, color="white" if dark else "black")
        if len(axes) > 2:
            title += f"\neach cell: the point best on validation over {', '.join(axes[2:])}"
    if alone_txt and len(axes) > 1:
        title += f"\n{alone_txt}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120), mode="wb")
