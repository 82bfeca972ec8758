"""The command line: typer commands with no logic of their own. Heavy modules are imported lazily so
``edgedistill --help`` answers at once."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgedistill.errors import EdgeDistillError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Knowledge distillation for wearable time series and small images.")

QUICKSTART = "quickstart.yaml"


def find_recipe(name: str) -> Path:
    """A recipe path as given, else under ./recipes/, else the recipes shipped beside the package."""
    for candidate in (Path(name), Path("recipes") / name, Path(__file__).resolve().parents[2] / "recipes" / name):
        if candidate.is_file():
            return candidate
    return Path(name)


def _fail(exc: EdgeDistillError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


@app.command()
def run(
    recipe: Optional[str] = typer.Argument(None, help="Recipe YAML (default: recipes/quickstart.yaml)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. train.epochs=20"),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny synthetic data of the same kind, one short epoch."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<name>-<time>); an existing one with the same config is resumed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train (or reuse) the teacher, the student alone and the distilled student; print the table."""
    items = list(overrides or [])
    if recipe is not None and "=" in recipe:
        items.insert(0, recipe)
        recipe = None
    path = find_recipe(recipe or QUICKSTART)
    try:
        from edgedistill.experiment.runner import command_line, run as run_recipe

        summary = run_recipe(path, items, out=out, smoke=smoke, progress=progress, command=command_line())
    except EdgeDistillError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None  # the runner has printed how to resume
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from edgedistill.experiment.report import table_rows

    header, rows = table_rows(summary, compact=True)
    what = "best-on-validation" if summary["select"] == "best" else "last-epoch"
    table = Table(title=f"{summary['name']}: test metrics ({what} checkpoint), mean ± std over seeds {summary['seeds']}")
    for h in header:
        text = h in ("model", "role")
        table.add_column(h, justify="left" if text else "right", no_wrap=not text)  # never split "0.720 ± 0.063"
    for r in rows:
        table.add_row(*r)
    console = Console(width=max(120, Console().width))  # the table needs ~120 columns even when piped
    console.print(table)
    if summary.get("verdict"):
        console.print(summary["verdict"].replace("**", ""))
    console.print(f"Report: {Path(summary['run_dir']) / 'report.md'}")


@app.command("list")
def list_(kind: str = typer.Argument(..., help="methods, losses, datasets or models")) -> None:
    """List what is registered, with one-line docs."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from edgedistill.registry import REGISTRIES

    if kind not in REGISTRIES:
        typer.echo(f"error: unknown kind '{kind}'; expected one of: {', '.join(REGISTRIES)}", err=True)
        raise typer.Exit(2)
    table = Table(title=kind)
    table.add_column("name")
    table.add_column("tags")
    table.add_column("description")
    for entry in REGISTRIES[kind]:
        tags = " ".join(f"{k}={v}" for k, v in entry.meta.items())
        table.add_row(entry.name, escape(tags), escape(entry.doc))
    Console(width=max(100, Console().width)).print(table)


def main() -> None:
    try:
        app()
    except EdgeDistillError as exc:  # raised outside a command body (should be rare)
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
