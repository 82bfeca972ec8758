"""Error types with the exit codes the CLI maps them to.

Exit codes (docs/reliability.md): 0 done; 1 a run finished but some of it failed (sweep grid points);
2 bad input (a recipe key, a file, a tensor of the wrong shape, a name): the CLI prints one line and nothing is
written; 3 training diverged (the last good checkpoint is kept); 4 the environment, not the input (a folder that
cannot be written, a full disk, a run directory another live process holds): nothing half-written, rerun the same
command once the cause is removed; 130 interrupted (finished stages are kept; the same command resumes).
"""
from __future__ import annotations

from typing import Any

#: The most characters of an error message the CLI prints: a message built from user input stays one readable line.
MESSAGE_LIMIT = 600


class EdgeDistillError(Exception):
    """Base class for errors that the CLI reports as one line, without a traceback."""

    exit_code = 1


class UserInputError(EdgeDistillError, ValueError):
    """Something the user gave (recipe key, file, tensor, name) is not what was expected."""

    exit_code = 2


class TrainingDiverged(EdgeDistillError, RuntimeError):
    """A loss or parameter became NaN/inf; training stopped and the last good checkpoint was kept."""

    exit_code = 3


class EnvironmentProblem(EdgeDistillError, OSError):
    """The machine, not the input: a read-only or full folder, a run directory locked by a live process."""

    exit_code = 4


def one_line(exc: BaseException | str, limit: int = MESSAGE_LIMIT) -> str:
    """The message on one line (newlines become '; '), cut to ``limit`` characters with a note of how much was cut."""
    text = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages quote user input, never all of it)."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4300 digits has no repr
        return f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
