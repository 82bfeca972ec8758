"""A rich progress bar per training stage, or plain stage lines when the bar is off.

The bar is shown when progress is on and stderr is a terminal. Otherwise (``--no-progress``, ``engine.progress:
false``, output piped to a file) each stage still prints one line when it starts and one when it ends, plus at most
one line a minute while a long stage runs, so a long run is never silent and a log file gets no per-batch noise.
Those plain lines go to stdout; stderr keeps warnings and errors only.
``quiet=True`` prints nothing at all (for callers that report on their own).

Stages that run in ``--jobs`` worker processes report through ``ForwardedProgress``: the worker sends each call to the
run's process, which shows it in a ``child`` of its own display (a bar per stage, or its plain lines), so a parallel
run looks like a sequential one, with the stages' bars side by side.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Hashable, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: Seconds between two "still running" lines of one stage when the bar is off.
HEARTBEAT_S = 60.0
#: A forwarding worker sends its summed steps at most this often (every call would be one pipe message per batch).
FORWARD_S = 0.25
#: The calls a forwarding worker may make on the display of the run's process (nothing else it sends is run).
FORWARDED = ("start", "advance", "note", "finish", "message")


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

    def child(self, prefix: str) -> "StageProgress":
        """A view of this display for one of several stages running at once: its own bar among this one's bars, or
        its own plain lines, each starting with ``prefix``. Lives as long as this display; never entered itself."""
        view = StageProgress(self.enabled, self.console, self.quiet, self.heartbeat_s, prefix)
        view.lines, view.live, view._progress = self.lines, self.live, self._progress
        return view

    def relay(self, prefix_of: Callable[[Hashable], str]) -> Callable[[Hashable, Any], None]:
        """``(key, (call, args))`` from a ``ForwardedProgress`` in a worker, shown in this process: each key (a job)
        gets a ``child`` view whose lines start with ``prefix_of(key)``. Calls outside ``FORWARDED`` are ignored."""
        views: dict[Hashable, StageProgress] = {}

        def show(key: Hashable, event: Any) -> None:
            call, args = event
            if call in FORWARDED:
                if key not in views:
                    views[key] = self.child(self.prefix + prefix_of(key))
                getattr(views[key], call)(*args)

        return show

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
            # escape: a prefix such as "[seed 0] " or "[fold1] " is text, not rich markup (which would swallow it)
            self._task = self._progress.add_task(escape(self.prefix + label), total=total_steps, completed=done, note="")
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
            self._progress.update(self._task, note=escape(text))
        elif self._open and self.heartbeat_s >= 0:
            now = time.perf_counter()
            if now - self._last_line >= self.heartbeat_s:
                self._last_line = now
                self._line(f"{self._label}: {self._position()}, {text}, {_duration(now - self._t0)}")

    def finish(self, text: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, note=escape(text))
        elif self._open:
            self._end(text)
        else:
            self._line(f"{self._label}: {text}")

    def message(self, text: str) -> None:
        self._line(text)


class ForwardedProgress(StageProgress):
    """The display of a stage that runs in a ``--jobs`` slot (a worker process, or the run's own thread): every call
    is sent as ``(call, args)`` through ``send`` to the dispatcher (``StageProgress.relay`` shows it); steps are summed
    and sent every ``FORWARD_S``."""

    def __init__(self, send: Callable[[tuple[str, tuple]], None]) -> None:
        super().__init__(enabled=False, quiet=True)
        self._send, self._pending, self._sent_at = send, 0, 0.0

    def _flush(self) -> None:
        if self._pending:
            self._send(("advance", (self._pending,)))
            self._pending = 0
        self._sent_at = time.perf_counter()

    def start(self, label: str, total_steps: int, done: int = 0, epochs: Optional[int] = None) -> None:
        self._flush()
        self._send(("start", (label, int(total_steps), int(done), epochs)))

    def advance(self, steps: int = 1) -> None:
        self._pending += steps
        if time.perf_counter() - self._sent_at >= FORWARD_S:
            self._flush()

    def note(self, text: str) -> None:
        self._flush()
        self._send(("note", (text,)))

    def finish(self, text: str) -> None:
        self._flush()
        self._send(("finish", (text,)))

    def message(self, text: str) -> None:
        self._flush()
        self._send(("message", (text,)))
