"""One trial of ``edgedistill tune`` (inline, or in a ``--jobs`` worker process): an ``edgedistill run`` of the
recipe with the trial's method section, reporting each epoch's validation score to the study's pruner through
``run(on_epoch=...)``, and stopping at the budget's deadline."""
from __future__ import annotations

import time
from typing import Any

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
            if epoch <= PRUNE_UNTIL * job["epochs"] and trial.should_prune():
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
