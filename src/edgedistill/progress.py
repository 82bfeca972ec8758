"""A rich progress bar per training stage, or plain stage lines when the bar is off.

The bar is shown when progress is on and stderr is a terminal. Otherwise (``--no-progress``, ``engine.progress:
false``, output piped to a file) each stage still prints one line when it starts and one when it ends, plus at most
one line a minute while a long stage runs, so a long run is never silent and a log file gets no per-batch noise.
Those plain lines go to stdout; stderr keeps warnings and errors only.
``quiet=True`` prints nothing at all (for callers that report on their own).
"""
from __future__ import annotations

import time
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Seconds between two "still running" lines of one stage when the bar is off.
HEARTBEAT_S = 60.0


def _duration(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 100 else f"{minutes // 60} h {minutes % 60:02d} min"


class StageProgress:
    """``start`` a stage with its step count, ``advance`` per optimisation step, ``note`` per epoch, ``finish`` at
    its end; ``message`` prints a line in either mode."""

    def __init__(self, enabled: bool = True, console: Optional[Console] = None, quiet: bool = False,
                 heartbeat_s: float = HEARTBEAT_S, prefix: str = "") -> None:
        # Put before every line and bar label: which fold (or trial) of several running at once a line is about.
        self.prefix = prefix
        self.console = console or Console(stderr=True)
        # Plain lines (no bar) go to stdout: stderr is kept for warnings and the one-line error a failure prints, so a
        # log or a caller reading stderr sees "error: ..." alone. The bar (and a message printed under it) stays on
        # stderr, where rich redraws it.
        self.lines = console or Console()
        self.live = enabled and not quiet and self.console.is_terminal
        self.enabled = enabled
        self.quiet = quiet
        self.heartbeat_s = heartbeat_s
        self._progress: Optional[Progress] = None
        self._task = None
        self._label = ""
        self._open = False  # a stage was started and has not printed its end line
        self._total = self._steps = 0
        self._epochs: Optional[int] = None
        self._t0 = self._last_line = 0.0
        self._note = ""

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

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, *rest)  # type: ignore[arg-type]
            self._progress = None
        elif self._open:  # a stage its caller never finished: say how far it got
            self._end("stopped" if exc_type is not None else "done")

    # -- plain lines ------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        if not self.quiet:
            # soft_wrap: a log file gets whole lines, not rich's 80-column wrapping; markup off: labels are text.
            (self.console if self._progress is not None else self.lines).print(self.prefix + text, highlight=False, markup=False,
                                                                              soft_wrap=True)

    def _position(self) -> str:
        if self._epochs and self._total:
            per_epoch = self._total / self._epochs
            return f"epoch {int(round(self._steps / per_epoch))}/{self._epochs}"
        return f"step {self._steps}/{self._total}" if self._total else ""

    def _end(self, text: str) -> None:
        parts = [p for p in (self._position(), text, _duration(time.perf_counter() - self._t0)) if p]
        self._line(f"{self._label}: " + ", ".join(parts))
        self._open = False

    # -- the stage --------------------------------------------------------------------------------
    def start(self, label: str, total_steps: int, done: int = 0, epochs: Optional[int] = None) -> None:
        """Begin a stage of ``total_steps`` steps, ``done`` of them already (a resumed stage); ``epochs`` lets the
        plain lines count epochs instead of steps."""
        if self._open and self._progress is None:
            self._end("done")
        self._label = label
        self._total, self._steps, self._epochs, self._note = int(total_steps), int(done), epochs, ""
        self._t0 = self._last_line = time.perf_counter()
        if self._progress is not None:
            self._task = self._progress.add_task(self.prefix + label, total=total_steps, completed=done, note="")
            return
        self._open = True
        resumed = f", resuming at {self._position()}" if done else ""
        size = f"{epochs} epoch{'s' * (epochs != 1)}" if epochs else f"{total_steps} step{'s' * (total_steps != 1)}"
        self._line(f"{label}: started ({size}{resumed})")

    def advance(self, steps: int = 1) -> None:
        self._steps += steps
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)

    def note(self, text: str) -> None:
        self._note = text
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, note=text)
        elif self._open and self.heartbeat_s >= 0:
            now = time.perf_counter()
            if now - self._last_line >= self.heartbeat_s:
                self._last_line = now
                self._line(f"{self._label}: {self._position()}, {text}, {_duration(now - self._t0)}")

    def finish(self, text: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, note=text)
        elif self._open:
            self._end(text)
        else:
            self._line(f"{self._label}: {text}")

    def message(self, text: str) -> None:
        self._line(text)
