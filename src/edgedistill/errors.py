"""Error types with the exit codes the CLI maps them to.

Bad input (a recipe key, a file, a tensor of the wrong shape) is a ``UserInputError``: the CLI prints
its one-line message and exits with code 2 before anything is written. A run that diverges during
training is a ``TrainingDiverged`` (exit code 3): the last good checkpoint is kept.
"""
from __future__ import annotations


class EdgeDistillError(Exception):
    """Base class for errors that the CLI reports as one line, without a traceback."""

    exit_code = 1


class UserInputError(EdgeDistillError, ValueError):
    """Something the user gave (recipe key, file, tensor, name) is not what was expected."""

    exit_code = 2


class TrainingDiverged(EdgeDistillError, RuntimeError):
    """A loss or parameter became NaN/inf; training stopped and the last good checkpoint was kept."""

    exit_code = 3
