"""A rich progress bar per training stage, or a plain one-line-per-stage log when not on a terminal."""
from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StageProgress:
    """``start`` a stage with its step count, ``advance`` per optimisation step, ``note`` per epoch."""

    def __init__(self, enabled: bool = True, console: Optional[Console] = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.enabled = enabled
        self._progress: Optional[Progress] = None
        self._task = None
        self._label = ""

    def __enter__(self) -> "StageProgress":
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)  # type: ignore[arg-type]
            self._progress = None

    def start(self, label: str, total_steps: int, done: int = 0) -> None:
        self._label = label
        if self._progress is not None:
            self._task = self._progress.add_task(label, total=total_steps, completed=done, note="")

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)

    def note(self, text: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, note=text)

    def finish(self, text: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, note=text)
        elif self.enabled:
            self.console.print(f"{self._label}: {text}", highlight=False)

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)
