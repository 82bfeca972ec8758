"""A run's (or a sweep's, or several runs') report as one self-contained HTML file, plus its Markdown version, and
the plots as PNG under each run's ``plots/``.

The HTML has no script and loads nothing: every image is embedded as base64 PNG, the style is inline. Every run
section lists the same sections (overview, tables, learning curves, reliability, confusion, Pareto, paired seeds);
one with nothing to draw says why (a run from an older version without that metric, a run still in progress), so
a reader always sees what is missing. ``write_run_artifacts`` is what a run calls at its end (``report.plots``);
``build_report`` is ``edgedistill report``.
"""
from __future__ import annotations

import base64
import html
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from edgedistill.errors import EdgeDistillError, EnvironmentProblem, UserInputError
from edgedistill.experiment import plots_curves, plots_eval, plots_reliability
from edgedistill.experiment.plots_common import Plot, png_bytes, save_png
from edgedistill.experiment.plots_sources import RELIABILITY, RunData, kind_of, load_run, load_sweep
from edgedistill.experiment.report_markup import inline, to_html
from edgedistill.io import write_json, write_text

#: (section id, heading, plot key, why it is empty when it is)
SECTIONS = [
    ("curves", "Learning curves", ("curves_loss", "curves_val"),
     "no metrics.jsonl found (no stage has finished an epoch, or the model cache holding them was moved)"),
    ("reliability", "Reliability diagrams", ("reliability",),
     "no plots/reliability.json: the run predates it or ran with report.plots: false (edgedistill report --predict "
     "evaluates its saved weights again), or it is a regression task"),
    ("confusion", "Confusion matrices", ("confusion",),
     "summary.json has no per-class detail (a regression task, a run from an older version, or not finished)"),
    ("pareto", "Accuracy vs size and latency", ("pareto",), "summary.json has no rows with sizes (not finished)"),
    ("paired", "Paired seed differences", ("paired_seeds",),
     "needs both the student alone and the distilled student in summary.json (recipe.baseline, a finished run)"),
]
STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222;max-width:1600px}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th:first-child,td:first-child{text-align:left}thead{background:#f3f3f3}code{background:#f5f5f5;padding:0 .2em}
img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#8a5a00;background:#fff8e6;padding:.3em .6em;border-left:3px solid #e0a800}
.runs{display:grid;gap:1.5em}.caption{font-size:.85em;color:#555}.empty{color:#777;font-style:italic}section{margin-bottom:1.2em}"""


@dataclass
class Drawn:
    """A run's plots as PNG bytes (drawn once: embedded in the HTML and saved as files)."""

    run: RunData
    images: dict[str, tuple[Plot, bytes]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def _warn(line: str) -> None:
    print(f"report: {line}", file=sys.stderr)


def draw_run(run: RunData, warn: Callable[[str], None] = _warn) -> list[Plot]:
    """Every plot the run's files allow; a plot that fails to draw is a warning line, not an exception."""
    makers: list[tuple[str, Callable[[], Optional[Plot]]]] = [
        ("loss curves", lambda: plots_curves.loss_curves(run.curves)),
        ("validation curves", lambda: plots_curves.validation_curves(run.curves, run.task)),
        ("reliability", lambda: plots_reliability.diagram(run.reliability) if run.reliability else None),
        ("confusion", lambda: plots_eval.confusion(run.summary) if run.summary else None),
        ("pareto", lambda: plots_eval.pareto([run])),
        ("paired seeds", lambda: plots_curves.paired_differences(run.summary) if run.summary else None),
    ]
    out = []
    for what, make in makers:
        try:
            plot = make()
        except Exception as exc:  # noqa: BLE001 - a plot lost is a warning, never a failed report or run
            warn(f"{run.name}: {what} plot not drawn ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})")
            continue
        if plot is not None:
            out.append(plot)
    return out


def _render(run: RunData, warn: Callable[[str], None]) -> Drawn:
    drawn = Drawn(run)
    for plot in draw_run(run, warn):
        try:
            drawn.images[plot.key] = (plot, png_bytes(plot.figure))
        except Exception as exc:  # noqa: BLE001
            warn(f"{run.name}: {plot.key} could not be rendered ({type(exc).__name__})")
    return drawn


def _save(drawn: Drawn, folder: Path, warn: Callable[[str], None]) -> None:
    for key, (_, data) in drawn.images.items():
        try:
            drawn.files[key] = save_png(data, folder / f"{key}.png")
        except EnvironmentProblem:
            raise  # a full or read-only disk: exit 4 like any write of the run, and the same command resumes
        except (OSError, EdgeDistillError) as exc:
            warn(f"{drawn.run.name}: {folder / f'{key}.png'} not written ({str(exc).splitlines()[0][:160]})")


def _report_markdown(run: RunData) -> Optional[str]:
    """The run's report.md (what the run wrote, with its deployment profile), else one rendered from summary.json."""
    path = run.path / "report.md"
    if path.is_file():
        text = path.read_text(errors="replace")
        # Its "# name" heading: the run's section already has it.
        return text.split("\n", 1)[1] if text.startswith("# ") and "\n" in text else text
    if run.summary:
        try:
            from edgedistill.experiment import report

            return report.markdown(run.summary)
        except Exception:  # noqa: BLE001 - a summary from another version: the plots still show
            return None
    return None


def _img(plot: Plot, data: bytes) -> str:
    b64 = base64.b64encode(data).decode()
    alt = html.escape(plot.title, quote=True)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{b64}"><figcaption class="caption">{inline(plot.caption)}'
            "</figcaption></figure>")


def run_html(drawn: Drawn, prefix: str, level: int = 2) -> str:
    run = drawn.run
    h = f"h{level}"
    parts = [f'<section id="{prefix}overview" data-section="overview"><{h}>{html.escape(run.name)}</{h}>',
             f"<p><code>{html.escape(str(run.path))}</code></p>"]
    parts += [f'<p class="note">{inline(n)}</p>' for n in run.notes]
    parts.append("</section>")
    text = _report_markdown(run)
    parts.append(f'<section id="{prefix}tables" data-section="tables"><h{level + 1}>Tables</h{level + 1}>'
                 + (to_html(text, demote=level) if text else '<p class="empty">no summary.json yet: no tables</p>') + "</section>")
    for sid, title, keys, why in SECTIONS:
        body = "".join(_img(*drawn.images[k]) for k in keys if k in drawn.images) or f'<p class="empty">Not drawn: {html.escape(why)}.</p>'
        parts.append(f'<section id="{prefix}{sid}" data-section="{sid}"><h{level + 1}>{title}</h{level + 1}>{body}</section>')
    return "\n".join(parts)


def run_markdown(drawn: Drawn, relative_to: Path) -> str:
    run = drawn.run
    lines = [f"## {run.name}", "", f"`{run.path}`", ""]
    lines += [f"> **Note:** {n}\n" for n in run.notes]
    text = _report_markdown(run)
    if text:
        lines += ["\n".join(("##" + ln) if ln.startswith("#") else ln for ln in text.splitlines()), ""]
    for _, title, keys, why in SECTIONS:
        lines += [f"### {title}", ""]
        shown = [k for k in keys if k in drawn.files]
        for k in shown:
            plot = drawn.images[k][0]
            lines += [f"![{plot.title}]({os.path.relpath(drawn.files[k], relative_to)})", "", plot.caption, ""]
        if not shown:
            lines += [f"*Not drawn: {why}.*", ""]
    return "\n".join(lines)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>\n'
            f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n<p class=\"caption\">Written by edgedistill report on "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}; self-contained (no script, nothing loaded).</p>\n</body></html>\n")


def write_run_artifacts(run_dir: Path, recipe: Any = None, splits: Any = None, device: Any = None,
                        smoke: bool = False) -> list[Path]:
    """At the end of a run: reliability bins (when the run's ``splits`` are given: evaluated once more), every plot as
    ``plots/<name>.png``, and ``report.html``. Returns the files written. A plot that cannot be drawn is a warning
    line, never a failed run (this runs after the run has finished); only the machine refusing a write (a full or
    read-only disk) raises, as at any other write of the run: exit 4, and the same command resumes. ``recipe.report.plots: false``: nothing.
    ``smoke``: only the reliability bins (a tenth of a second); drawing six figures would add ~2 s to a run of ~8 s,
    so, like ``report.profile``, the plots are left to ``edgedistill report RUN`` and a line says so."""
    if recipe is not None and not getattr(recipe.report, "plots", True):
        return []
    run_dir = Path(run_dir)
    written: list[Path] = []
    try:
        if recipe is not None and splits is not None:
            import torch

            rel = plots_reliability.compute(run_dir, recipe, splits, device or torch.device("cpu"), _warn)
            if rel is not None:
                write_json(run_dir / "plots" / RELIABILITY, rel)
                written.append(run_dir / "plots" / RELIABILITY)
        if smoke:
            print(f"report.plots: skipped in a smoke run (edgedistill report {run_dir} draws them)", file=sys.stderr)
            return written
        drawn = _render(load_run(run_dir, check_lock=False), _warn)  # (this process holds the run's lock)
        _save(drawn, run_dir / "plots", _warn)
        written += list(drawn.files.values())
        write_text(run_dir / "report.html", page(drawn.run.name, run_html(drawn, "")))
        written.append(run_dir / "report.html")
    except OSError:
        raise  # the machine refused a write (full, read-only): exit 4 like any other write of the run; a rerun resumes
    except Exception as exc:  # noqa: BLE001 - the run is done and its summary written: a plot never fails it
        _warn(f"plots and report.html not written ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
    return written


def _sweep_html(sweep: dict[str, Any], trials: list[RunData], prefix: str, warn: Callable[[str], None]) -> tuple[str, list[str]]:
    parts = [f'<section id="{prefix}overview" data-section="overview"><h2>{html.escape(sweep["name"])} (sweep)</h2>',
             f"<p><code>{html.escape(str(sweep['path']))}</code></p>"]
    parts += [f'<p class="note">{inline(n)}</p>' for n in sweep["notes"]]
    md = [f"## {sweep['name']} (sweep)", "", f"`{sweep['path']}`", ""] + [f"> **Note:** {n}\n" for n in sweep["notes"]]
    parts.append("</section>")
    table = sweep["table"]
    parts.append(f'<section id="{prefix}grid" data-section="grid"><h3>Grid</h3>'
                 + (to_html(table, demote=2) if table else '<p class="empty">no results.md yet</p>') + "</section>")
    md += ["\n".join(("##" + ln) if ln.startswith("#") else ln for ln in (table or "").splitlines()), ""]
    heat = ""
    if sweep["heatmap"] is not None:
        heat = (f'<figure><img alt="heatmap" src="data:image/png;base64,{base64.b64encode(sweep["heatmap"].read_bytes()).decode()}">'
                '<figcaption class="caption">The sweep\'s heatmap (heatmap.png): the method\'s test metric per grid point.</figcaption></figure>')
        md += ["### Heatmap", "", "![heatmap](heatmap.png)", ""]
    parts.append(f'<section id="{prefix}heatmap" data-section="heatmap"><h3>Heatmap</h3>'
                 + (heat or '<p class="empty">no heatmap.png yet</p>') + "</section>")
    plot = None
    try:
        plot = plots_eval.pareto(trials)
    except Exception as exc:  # noqa: BLE001
        warn(f"{sweep['name']}: Pareto plot not drawn ({type(exc).__name__})")
    body = '<p class="empty">no finished trial with a summary</p>'
    if plot is not None:
        data = png_bytes(plot.figure)
        body = _img(plot, data)
        try:
            save_png(data, sweep["path"] / "plots" / "pareto.png")
            md += ["### Accuracy vs size and latency", "", "![pareto](plots/pareto.png)", "", plot.caption, ""]
        except EnvironmentProblem:
            raise
        except (OSError, EdgeDistillError) as exc:
            warn(f"{sweep['name']}: plots/pareto.png not written ({str(exc).splitlines()[0][:160]})")
    parts.append(f'<section id="{prefix}pareto" data-section="pareto"><h3>Accuracy vs size and latency (every trial)</h3>{body}</section>')
    return "\n".join(parts), md


def _comparison(runs: list[RunData]) -> str:
    """One line per run: the deliverable's, the student alone's and the teacher's test metric, and the student's size."""
    head = "| run | deliverable | metric | method | student alone | teacher | params |\n|---|---|---|---|---|---|---|"
    lines = [head]
    for run in runs:
        rows = {r.get("role"): r for r in (run.summary or {}).get("rows", [])}
        key = "acc" if run.task == "classification" else "rmse"
        cell = lambda role: (lambda s: "" if not s else f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if s.get("n", 1) > 1 else ""))(  # noqa: E731
            ((rows.get(role) or {}).get("metrics") or {}).get(key))
        params = (rows.get("method") or {}).get("params")
        lines.append(f"| {run.name} | {(run.summary or {}).get('deliverable', '')} | {key} | {cell('method')} | "
                     f"{cell('student alone')} | {cell('teacher')} | {'' if params is None else f'{params:,}'} |")
    return "\n".join(lines)


def _predict(run: RunData, warn: Callable[[str], None]) -> None:
    """``--predict``: the reliability bins of a finished classification run that has none, from its saved weights."""
    if run.reliability is not None or not run.finished or run.task != "classification" or (run.summary or {}).get("folds"):
        return
    try:
        rel = plots_reliability.recompute(run.path, warn)
    except (EdgeDistillError, OSError, ValueError, RuntimeError) as exc:
        warn(f"{run.name}: --predict could not rebuild the run ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})")
        return
    if rel is not None:
        write_json(run.path / "plots" / RELIABILITY, rel)
        run.reliability = rel
        run.notes = [n for n in run.notes if "reliability" not in n]


def build_report(targets: list[Path], out: Optional[Path] = None, warn: Callable[[str], None] = _warn,
                 predict: bool = False) -> dict[str, Any]:
    """``edgedistill report``: one HTML file (and ``<out>.md``) for runs and sweeps, side by side. Plots are also saved
    under each finished run's ``plots/`` (a run still in progress: beside the report instead). ``predict``: a finished
    run without reliability bins gets them from its saved weights (its data loaded again)."""
    if not targets:
        raise UserInputError("report: give at least one run or sweep directory")
    if out is not None and Path(out).suffix.lower() not in (".html", ".htm"):
        raise UserInputError(f"--out '{out}': expected a file name ending in .html (the Markdown version goes beside it as .md)")
    if out is not None and Path(out).is_dir():
        raise UserInputError(f"--out '{out}' is a folder; give a file name ending in .html")
    kinds = [(Path(t), kind_of(Path(t))) for t in targets]
    out = Path(out) if out is not None else kinds[0][0] / "report.html" if len(kinds) == 1 else Path("report.html")
    md_path = out.with_suffix(".md")
    if any((out.parent / f).exists() for f in ("summary.json", "config.yaml", "sweep.json")):
        md_path = out.with_name(f"{out.stem}_plots.md")  # never over a run's own report.md
    spare = out.parent / f"{out.stem}_plots"
    runs: list[RunData] = []
    html_parts: list[str] = []
    md_parts: list[str] = []
    notes: list[str] = []
    names: list[str] = []
    for i, (path, kind) in enumerate(kinds):
        prefix = f"t{i}-" if len(kinds) > 1 else ""
        if kind == "sweep":
            sweep = load_sweep(path)
            trials = [load_run(t) for t in sweep["trials"]]
            body, md = _sweep_html(sweep, trials, prefix, warn)
            html_parts.append(f"<div>{body}</div>")
            md_parts.append("\n".join(md))
            names.append(f"{sweep['name']} (sweep)")
            notes += [f"{path}: {n}" for n in sweep["notes"]]
            continue
        run = load_run(path)
        names.append(run.name)
        if predict:
            _predict(run, warn)
        runs.append(run)
        notes += [f"{path}: {n}" for n in run.notes]
        drawn = _render(run, warn)
        # A finished run keeps its plots in its own plots/; never write into a run another process is writing.
        _save(drawn, path / "plots" if run.finished else spare / f"{i}-{path.name}", warn)
        html_parts.append(f"<div>{run_html(drawn, prefix)}</div>")
        md_parts.append(run_markdown(drawn, md_path.parent))
    head, head_md = "", ""
    if len(runs) > 1:
        table = _comparison(runs)
        plot = plots_eval.pareto(runs)
        figure_html = ""
        if plot is not None:
            data = png_bytes(plot.figure)
            figure_html = _img(plot, data)
            try:
                save_png(data, spare / "pareto.png")
                head_md = f"![{plot.title}]({os.path.relpath(spare / 'pareto.png', md_path.parent)})\n\n{plot.caption}\n"
            except EnvironmentProblem:
                raise
            except (OSError, EdgeDistillError) as exc:
                warn(f"{spare / 'pareto.png'} not written ({str(exc).splitlines()[0][:160]})")
        head = f'<section id="comparison" data-section="comparison"><h2>Comparison</h2>{to_html(table)}{figure_html}</section>'
        head_md = f"## Comparison\n\n{table}\n\n" + head_md
    columns = len(html_parts)
    title = " vs ".join(names)
    body = (head + f'<div class="runs" style="grid-template-columns:repeat({columns},minmax(0,1fr))">' + "".join(html_parts) + "</div>")
    write_text(out, page(title, body))
    write_text(md_path, f"# {title}\n\n" + head_md + "\n" + "\n\n".join(md_parts) + "\n")
    return {"html": out, "markdown": md_path, "notes": notes, "runs": len(runs), "sweeps": len(kinds) - len(runs)}
