"""Cross-validation (``eval.scheme``): every fold a run of its own, then one summary over folds x seeds.

Fold ``i`` is an ordinary run in ``<run>/fold<i>`` of the recipe with ``eval.only: [i]`` (its config.yaml says so),
so it resumes, reports and exports like any run, and its teachers are cached under a data fingerprint that names
the fold (a teacher never sees the test part of the fold it serves). The folds run one after another, or ``jobs``
at a time in spawned worker processes (the sweep's ``Workers``), each with cores // jobs threads. When they are
done, ``cv_report`` writes ``<run>/summary.json`` and ``report.md`` over all of them.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgedistill.config import Recipe
from edgedistill.errors import EdgeDistillError, UserInputError
from edgedistill.experiment import cv_report
from edgedistill.experiment.rundir import resume_command, say_interrupted
from edgedistill.io import read_json_record, write_json, write_text
from edgedistill.progress import StageProgress


def fold_recipe(recipe: Recipe, fold: int) -> Recipe:
    """The recipe fold ``fold`` runs: ``eval.only: [fold]``; no deployment profile (one per fold says nothing new)."""
    if recipe.eval.scheme == "holdout":
        raise UserInputError(f"fold: {fold} names a fold of a cross-validation, but eval.scheme is holdout")
    return recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"only": [fold]}),
                                     "report": recipe.report.model_copy(update={"profile": False})})


def first_fold(recipe: Recipe) -> int:
    return recipe.eval.only[0] if recipe.eval.only else 0


def check_request(recipe: Recipe, jobs: int, teachers_only: bool) -> None:
    """What a cross-validation cannot do, refused before anything is written."""
    if teachers_only:
        raise UserInputError(f"eval.scheme: '{recipe.eval.scheme}' trains one teacher per fold; fitting one teacher "
                             "needs eval.scheme: holdout")
    if jobs > 1 and object_models(recipe):  # (a count below 1 is refused earlier: job_slots.requested)
        raise UserInputError("--jobs: a model passed as a Python object lives in this process and cannot be sent to worker "
                             "processes; run the folds with jobs=1, or give the model by import path (docs/models.md)")


def object_models(recipe: Recipe) -> bool:
    """Whether the recipe's student or a teacher is a Python object (it lives in this process: no worker can get it)."""
    models = [recipe.student.model, *(t.model or "" for t in [recipe.teacher, *recipe.teachers] if t is not None)]
    return any(m.startswith("object:") for m in models)


def fold_indices(recipe: Recipe, count: int) -> list[int]:
    """The folds to run: ``eval.only`` (checked against the data's fold count) or all of them."""
    if recipe.eval.only is None:
        return list(range(count))
    bad = [i for i in recipe.eval.only if i >= count]
    if bad:
        raise UserInputError(f"eval.only: fold(s) {bad} do not exist; eval.scheme '{recipe.eval.scheme}' gives {count} "
                             f"folds of this data (0..{count - 1})")
    return sorted(set(recipe.eval.only))


def fold_job(job: dict[str, Any]) -> dict[str, Any]:
    """A worker process's fold (``workers.Workers`` target): the fold's run; its summary path, or the error."""
    from edgedistill.experiment.runner import run
    from edgedistill.experiment.workers import guarded

    return guarded(job, lambda: run(job["source"], job["overrides"], out=job["run_dir"], smoke=job["smoke"],
                                    progress=False, command=job["command"], fold=job["fold"])["run_dir"])


class Folds:
    """Runs the folds of one cross-validation into ``run_dir`` and writes the combined summary."""

    def __init__(self, source: Any, overrides: Any, recipe: Recipe, first_plan: Any, run_dir: Path, smoke: bool,
                 progress: bool, command: str, jobs: int, why: str = "") -> None:
        self.source, self.overrides, self.recipe, self.dir = source, overrides, recipe, run_dir
        self.smoke, self.progress, self.jobs, self.why = smoke, progress, jobs, why  # why: --jobs auto's reason
        fold = first_plan.splits.info.fold
        self.count, self.labels = fold["count"], fold["labels"]
        self.indices = fold_indices(recipe, self.count)
        # A fold's interruption hint must resume the whole cross-validation, not start one inside the fold.
        self.command = resume_command(command, run_dir)

    def run(self) -> dict[str, Any]:
        ev = self.recipe.eval
        with StageProgress(enabled=False) as say:  # plain lines, printed with or without --no-progress
            say.message(f"Run directory: {self.dir}")
            say.message(f"Cross-validation {ev.scheme}: {len(self.indices)} of {self.count} folds x {len(self.recipe.seeds)} "
                        f"seed(s), {self.jobs} at a time{f' (--jobs auto: {self.why})' if self.why else ''}; each fold is a run in "
                        f"{self.dir}/fold<i>")
            start = time.time()
            try:
                if self.jobs == 1:
                    self._sequential()
                else:
                    self._parallel(say)
            except KeyboardInterrupt:  # (Ctrl-C, or SIGTERM taken as it: said once here, not by each fold's run)
                say_interrupted("Finished folds and stages and the last finished epoch are kept", self.command, self.dir)
                raise
            say.message(f"Cross-validation: {len(self.indices)} fold(s) in {time.time() - start:.0f} s")
        summaries = []
        for i in self.indices:
            s = read_json_record(self.dir / f"fold{i}" / "summary.json")
            if s is None:
                raise EdgeDistillError(f"fold{i}: its run finished but wrote no readable summary.json; rerun: {self.command}")
            summaries.append(s)
        section = {"scheme": ev.scheme, "folds": ev.folds, "count": self.count, "run": self.indices, "labels": self.labels}
        summary = cv_report.combine(summaries, section, self.command, str(self.dir))
        write_json(self.dir / "summary.json", summary)
        write_text(self.dir / "report.md", cv_report.markdown(summary))
        if self.recipe.report.profile:
            print(f"report.profile: a cross-validation has one student per fold and seed; profile one with: "
                  f"edgedistill profile {self.dir}/fold<i>", flush=True)
        return summary

    def _sequential(self) -> None:
        from edgedistill.experiment.runner import run

        for i in self.indices:
            run(self.source, self.overrides, out=self.dir / f"fold{i}", smoke=self.smoke, progress=self.progress,
                command=self.command, fold=i)

    def _parallel(self, say: StageProgress) -> None:
        from edgedistill.experiment.workers import Workers, failure, worker_threads

        threads = worker_threads(self.recipe.engine.threads is not None, self.jobs)

        def said(i: int, outcome: dict) -> None:
            if "error" in outcome:
                say.message(f"fold{i}: FAILED after {outcome['seconds']:.0f} s: {outcome['error'].splitlines()[0]}")
            else:
                say.message(f"fold{i} ({self.labels[i]}): done in {outcome['seconds']:.0f} s")

        # Every slot a worker process: one in this process's thread (as a run's stages have) was tried and made 2 and 4
        # folds on 2 cores slower by under a second; the workers' starts overlap each other, so it saved nothing.
        workers = Workers(self.jobs, target=fold_job, unit="fold", on_progress=say.relay(lambda i: f"[fold{i}] "))
        _, failed = workers.run_all(
            [(i, {"source": self.source, "overrides": self.overrides, "run_dir": str(self.dir / f"fold{i}"),
                  "smoke": self.smoke, "command": self.command, "fold": i, "threads": threads}) for i in self.indices],
            said)
        if failed:
            first = next(iter(failed.values())).splitlines()[0]
            raise failure(workers.failed_codes)(f"cross-validation: fold(s) {sorted(failed)} failed (first: {first}); the "
                                                f"other folds are kept. Fix the cause and resume with: {self.command}")
