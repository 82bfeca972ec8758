"""``--jobs auto``, the command line's default for ``run``, ``sweep`` and ``tune``: how many slots (processes side by
side, each with cores // N torch threads) the cores and the memory allow for the work's model and data, and why.

What the three share: a ``Footprint`` of the work (what keeps it to one process whatever the cores, how long a stage
trains, what a slot needs in memory), read from a built plan, and ``slots`` (one per core, at most one per parallel
unit, as many as half the available memory holds). What differs is the unit (a run's stages or folds, a sweep's grid
points, a tune's trials) and a few reasons of their own, which each caller adds: ``parallel_seeds.auto_jobs``,
``sweep.auto_jobs``, ``tune.auto_jobs``. Stages side by side rather than intra-op threads: a small model gains little
from a second thread (benchmarks/parallel_seeds.py measures it), and independent work shares nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from edgedistill.config import Recipe
from edgedistill.errors import UserInputError

#: Below this many training rows x epochs the work lasts about as long as a worker takes to start (~2 s: the
#: quickstart's 150 rows x 100 epochs take 4-6 s on one core), so ``--jobs auto`` keeps it in one process.
SHORT_ROW_EPOCHS = 5000

#: A worker's own memory before any data: the interpreter, torch and the toolkit (about 0.65 GB peak RSS measured for
#: a one-seed quickstart run), rounded up. ``--jobs auto`` adds the run's data and the student to it.
WORKER_BYTES = 768 * 2**20


def requested(jobs: Any) -> tuple[int, bool]:
    """``jobs`` as asked: (N, False) for a count, (1, True) for "auto" (the count is chosen once a plan is built).
    Anything else is refused, naming --jobs."""
    if jobs == "auto":
        return 1, True
    if isinstance(jobs, bool) or not isinstance(jobs, int):
        raise UserInputError(f"--jobs: expected a whole number >= 1 or 'auto' (got {jobs!r})")
    if jobs < 1:
        raise UserInputError(f"--jobs: expected at least 1 (got {jobs})")
    return jobs, False


@dataclass(frozen=True)
class Footprint:
    """What ``--jobs auto`` needs to know of one recipe's work, from its built plan."""

    alone: str  # why it keeps to one process whatever the cores ("" when nothing does)
    work: int  # training rows x epochs of one training stage
    need: int  # bytes a slot needs: WORKER_BYTES + the in-memory data + 16 per student parameter


def footprint(recipe: Recipe, p: Any, smoke: bool) -> Footprint:
    """One process for a smoke run (it lasts less than a worker takes to start), several ranks or an accelerator
    (the run's device serves its stages in turn), a model passed as a Python object (it lives in this process) or one
    core. A slot's memory: ``WORKER_BYTES`` plus the plan's in-memory data and 16 bytes per student parameter (weights,
    gradients, Adam's two moments)."""
    from edgedistill.engine import devices
    from edgedistill.experiment.cross_validation import object_models
    from edgedistill.machine import available_cores

    cores, device = available_cores(), devices.accelerator(recipe.engine)
    alone = ("a smoke run" if smoke else "several ranks" if devices.world_size(recipe.engine) > 1
             else f"the run is on {device}" if device != "cpu"
             else "a model passed as a Python object" if object_models(recipe)
             else f"{cores} core" if cores < 2 else "")
    data = sum(t.nbytes for part in (p.splits.train, p.splits.val, p.splits.test)
               for t in (*part.views.values(), part.y) if isinstance(t, torch.Tensor))
    need = WORKER_BYTES + data + 16 * sum(w.numel() for w in p.student.parameters())
    return Footprint(alone, len(p.splits.train) * recipe.train.epochs, need)


def short(work: int, what: str) -> str:
    """``what`` and the work, when there is too little of it to pay for a worker's start; otherwise ""."""
    return f"{what} ({work} training rows x epochs)" if work < SHORT_ROW_EPOCHS else ""


def slots(units: Optional[int], unit: str, need: int, plural: Optional[str] = None) -> tuple[int, str]:
    """One slot per core, at most one per parallel unit (``units`` of ``unit``, ``plural`` for several: ``unit`` + "s"
    unless given; None: no bound, a tune's trials), and no more than half the available memory holds at ``need`` bytes
    each; and why."""
    from edgedistill.machine import available_cores, available_memory

    cores, plural = available_cores(), plural or f"{unit}s"
    if units is not None and units < 2:
        return 1, f"one {unit}" if units else f"no {plural}"
    free = available_memory()
    bound = cores if units is None else min(cores, units)
    fits = max(1, free // 2 // need) if free else bound
    memory = f", memory for {fits} (about {need / 2**30:.1f} GB each)" if fits < bound else ""
    return min(bound, fits), f"{cores} cores" + (f", {units} {plural}" if units is not None else "") + memory
