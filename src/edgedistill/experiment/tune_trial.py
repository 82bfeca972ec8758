"""One trial of ``edgedistill tune`` (inline, or in a ``--jobs`` worker process): an ``edgedistill run`` of the
recipe with the trial's method section, reporting each epoch's validation score to the study's pruner through
``run(on_epoch=...)``, and stopping at the budget's deadline."""
from __future__ import annotations

import time
from typing import Any, NamedTuple

from edgedistill.experiment.job_slots import Footprint, footprint
from edgedistill.experiment.sweep_store import _extract
from edgedistill.experiment.tune_select import tiebreak
from edgedistill.experiment.workers import guarded


#: The share of a trial's epochs after which it is never pruned (the rest costs less than what was spent).
PRUNE_UNTIL = 0.5


def pruner(epochs: int) -> Any:
    """Successive halving on epochs: a trial is first judged after ~1/9 of its epochs, then at 3x that, keeping the
    best third at each rung (Optuna's ASHA, reduction factor 3). Only rungs in the first half of training are
    consulted (``PRUNE_UNTIL``): a third rung at 99 of 100 epochs would throw away a nearly finished trial to save 1%."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, epochs // 9), reduction_factor=3)


class _BudgetOut(Exception):
    """The budget's deadline passed during a trial: it stops at this epoch (not a pruning decision)."""


def run_tune_trial(job: dict[str, Any]) -> dict[str, Any]:
    """One trial (inline or in a worker): the run, reporting each epoch's validation score to the study's pruner.
    The outcome's ``result`` holds ``state`` complete/pruned/stopped with the epochs reached; errors come back as text."""
    def work() -> dict[str, Any]:
        import optuna

        from edgedistill.experiment.runner import run

        study = optuna.load_study(study_name=job["study"], storage=job["storage"], pruner=pruner(job["epochs"]))
        trial = optuna.trial.Trial(study, job["trial_id"])
        metric, reached = job["metric"], {"epoch": 0, "value": None}

        def on_epoch(epoch: int, val: dict[str, float]) -> None:
            reached.update(epoch=epoch, value=val[metric])
            trial.report(val[metric], epoch)
            if epoch >= job["epochs"]:  # the last epoch: the trial is finished, whatever the clock or the pruner says
                return
            if time.time() > job["deadline"]:
                raise _BudgetOut()
            if job.get("prunable", True) and epoch <= PRUNE_UNTIL * job["epochs"] and trial.should_prune():
                raise optuna.TrialPruned()

        try:
            summary = run(job["recipe"], job["overrides"], out=job["run_dir"], smoke=job["smoke"], progress=job["progress"],
                          command=job["command"], prefix=job["prefix"], on_epoch=on_epoch)
        except optuna.TrialPruned:
            return {"state": "pruned", **reached}
        except _BudgetOut:
            return {"state": "stopped", **reached}
        r = _extract(summary, metric)
        return {"state": "complete", "epoch": reached["epoch"], "value": r["val"]["mean"], "run": r,
                "tiebreak": tiebreak(summary, metric)}

    return guarded(job, work)


class TrialCost(NamedTuple):
    """``estimate_trial_cost``'s measurement."""

    setup_s: float
    epoch_s: float
    epochs: int
    footprint: Footprint


def estimate_trial_cost(base: dict[str, Any], smoke: bool = False, steps: int = 3) -> TrialCost:
    """Measured lower bound of one trial's cost (``TrialCost``: setup seconds: loading the data and building the
    networks, as every run does; seconds of one training epoch of the distilled student: its forward and backward on
    real batches, times the steps per epoch, plus a validation pass; the epochs of one trial), with the trial's
    ``job_slots.Footprint`` for ``--jobs auto``. The teachers' forward is left out:
    most regimes cache the teachers' outputs; feature losses (a teacher forward every step) and a first trial whose
    teacher and student alone are not cached yet cost more. Once trials finish, their median time replaces this."""
    import torch

    from edgedistill.config import load_recipe
    from edgedistill.experiment.runner import plan

    recipe = load_recipe(base)
    if smoke:
        from edgedistill.experiment.smoke import smoke_recipe

        recipe = smoke_recipe(recipe)
    setup = time.perf_counter()
    p = plan(recipe, smoke)
    setup = time.perf_counter() - setup
    cfg = recipe.train
    batch = p.splits.train.batch(torch.arange(min(cfg.batch_size, len(p.splits.train))))
    student = p.student
    student.train()

    def step() -> None:
        student(batch["x"]).float().pow(2).mean().backward()
        student.zero_grad(set_to_none=True)

    step()  # warm-up: first-call allocations
    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    batches = max(1, p.splits.train.num_batches(cfg.batch_size, drop_last=True))
    val_steps = max(1, -(-len(p.splits.val) // max(1, cfg.batch_size)))
    return TrialCost(setup, per_step * batches + per_step * val_steps / 3, cfg.epochs, footprint(recipe, p, smoke))
