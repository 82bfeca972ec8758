"""``edgedistill data list | info NAME | prepare NAME``: the public archives (data/archives), what is present
locally, what a prepared archive holds, and downloading and preparing one (docs/data.md, "Public archives")."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from edgedistill.errors import EdgeDistillError, UserInputError

data_app = typer.Typer(no_args_is_help=True, help="Public archives: list, inspect, download and prepare (docs/data.md).")

ROOT = typer.Option(None, "--root", help="The data root (default $EDGEDISTILL_DATA or ~/.cache/edgedistill/data).")


def _archive(name: str):  # noqa: ANN202 - base.Archive
    from edgedistill.data.archives.registered import archives

    known = archives()
    if name not in known:
        raise UserInputError(f"unknown archive '{name}'; expected one of: {', '.join(sorted(known))}")
    return known[name]


def _params(items: Optional[List[str]]) -> dict:
    from edgedistill.yaml_io import apply_overrides

    return apply_overrides({}, list(items or [])) if items else {}


def _guard(work):  # noqa: ANN001, ANN202 - a command body
    from edgedistill.cli import _environment, _fail

    try:
        return work()
    except EdgeDistillError as exc:
        _fail(exc)
    except OSError as exc:
        _environment(exc)


@data_app.command("list")
def list_archives(root: Optional[Path] = ROOT) -> None:
    """Every known archive, whether it is present under the data root, and how to get it."""
    from rich.console import Console
    from rich.table import Table

    from edgedistill.data.archives.base import data_root, find_folder
    from edgedistill.data.archives.registered import archives

    table = Table(title=f"archives (data root: {data_root(root)})")
    for col in ("name", "present", "folder", "get it"):
        table.add_column(col)
    for name, a in sorted(archives().items()):
        try:
            where = str(find_folder(a, root))
        except UserInputError:
            where = "no"
        table.add_row(name, where, a.folder, "edgedistill data prepare " + name if a.url else a.manual)
    Console(width=max(120, Console().width)).print(table)


@data_app.command("info")
def info(name: str, params: Optional[List[str]] = typer.Argument(None, help="protocol keys, e.g. window=128"),
         root: Optional[Path] = ROOT) -> None:
    """Shapes, classes with counts, subjects, windows and the protocol of a present archive (prepares it if needed)."""
    def work() -> None:
        import numpy as np

        from edgedistill.data.archives.registered import load_cached, protocol

        a = _archive(name)
        raw, cached = load_cached(a, root, _params(params))
        typer.echo(f"{name}: {a.doc}")
        typer.echo(f"protocol: {protocol(a, _params(params))}")
        for part, x, y, g in (("train", raw.x, raw.y, raw.group), ("test", raw.test_x, raw.test_y, raw.test_group)):
            if x is None:
                continue
            values, counts = np.unique(np.asarray(y), return_counts=True) if raw.task == "classification" else ([], [])
            subjects = "" if g is None else f", {len(np.unique(np.asarray(g)))} subjects"
            typer.echo(f"{part}: {len(y)} windows of shape {tuple(np.shape(x)[1:])}{subjects}")
            if len(values):
                typer.echo("  classes: " + ", ".join(f"{v} {c}" for v, c in zip(values, counts)))
        typer.echo(f"channels: {', '.join(map(str, raw.channels or []))}")
        for note in raw.notes:
            typer.echo(f"note: {note}")
        typer.echo(f"cite: {a.citation}")

    _guard(work)


@data_app.command("prepare")
def prepare(name: str, params: Optional[List[str]] = typer.Argument(None, help="protocol keys, e.g. window=128"),
            root: Optional[Path] = ROOT,
            download: bool = typer.Option(True, "--download/--no-download", help="Download when absent and a URL exists.")) -> None:
    """Download the archive if it is absent (where it has a stable URL), then cut and cache its windows."""
    def work() -> None:
        from edgedistill.data.archives.base import find_folder
        from edgedistill.data.archives.download import download as fetch
        from edgedistill.data.archives.registered import load_cached

        a = _archive(name)
        try:
            find_folder(a, root)
        except UserInputError:
            if not download or a.url is None:
                raise
            fetch(a, root, say=typer.echo)
        from edgedistill.data.archives.text_tables import ON_FILE

        start = time.time()
        typer.echo(f"{name}: reading and windowing (the first time can take a minute for a large archive)")
        seen: list[Path] = []

        def tell(path: Path) -> None:  # one line per file parsed: the progress of a long first preparation
            seen.append(path)
            typer.echo(f"  reading {path.name} ({len(seen)}; {time.time() - start:.0f} s so far)")

        token = ON_FILE.set(tell)
        try:
            raw, cached = load_cached(a, root, _params(params))
        finally:
            ON_FILE.reset(token)
        what = "already prepared" if cached else "prepared"
        typer.echo(f"{name}: {what} in {time.time() - start:.1f} s: {len(raw.y)} training windows"
                   f"{'' if raw.test_y is None else f', {len(raw.test_y)} test windows'} of shape {tuple(raw.x.shape[1:])}")

    _guard(work)
