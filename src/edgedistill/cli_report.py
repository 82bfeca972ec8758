"""``edgedistill report RUN_DIR|SWEEP_DIR [...] [--out report.html]``: the command (experiment/html_report.py does
the work; docs/report.md). Registered on the main app when ``edgedistill.cli`` imports this module."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from edgedistill.cli import _environment, _fail, app
from edgedistill.errors import EdgeDistillError


@app.command("report")
def report(
    targets: List[Path] = typer.Argument(..., help="Run directories (edgedistill run --out) and/or sweep directories; several are shown side by side."),
    out: Optional[Path] = typer.Option(None, "--out", help="The HTML file (default <run>/report.html for one run or sweep, else ./report.html); the Markdown version is written beside it as .md."),
    predict: bool = typer.Option(False, "--predict", help="For a finished run without plots/reliability.json (an older version, report.plots: false): load its data and evaluate its saved weights again for the reliability diagrams."),
) -> None:
    """One self-contained HTML report (plots embedded, no network, no script) and its Markdown version; every plot
    also as PNG under each finished run's plots/."""
    try:
        from edgedistill.experiment.html_report import build_report

        result = build_report(list(targets), out, warn=lambda line: typer.echo(f"warning: {line}", err=True), predict=predict)
    except EdgeDistillError as exc:
        _fail(exc)
    except OSError as exc:
        _environment(exc)
    for note in result["notes"]:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"Report: {result['html']} (Markdown: {result['markdown']})")
