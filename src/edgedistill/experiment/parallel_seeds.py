"""``--jobs N`` on a holdout run: the seeds' student-alone and distilled stages in N worker processes.

The teachers are trained (or read from the model cache) first, in the run's own process and in order: a teacher shared
by every seed is trained once, and an assistant needs its teacher. Then each remaining stage, the student alone and
the distilled student of every seed, is one job for the sweep's ``Workers`` (spawned processes, cores // N torch
threads each). A worker rebuilds the run's plan from the same recipe, reads the teachers from the cache and trains
its stage into the same run directory, in the folder a sequential run uses; its summary comes back to this process,
which writes the run's summary and report as usual. A stage seeds everything from its seed before training, so the
numbers are those of ``--jobs 1`` at the same thread count (tests/test_parallel_seeds.py). A stage that fails is
reported with its seed and the resume command; the finished ones are kept (their folders and the model cache).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.config import Recipe
from edgedistill.errors import EdgeDistillError, UserInputError
from edgedistill.experiment.rundir import resume_command
from edgedistill.progress import StageProgress

#: A worker's plan by job (recipe, overrides, smoke), with its store of shared outputs (data/shared_outputs.py): its
#: next stage of the same run neither prepares the data nor runs the teacher over the training rows again.
_PLANS: dict[str, tuple[Any, dict]] = {}


def check_jobs(recipe: Recipe, jobs: int, on_epoch: Any) -> None:
    """What cannot run its seeds in worker processes, refused before anything is written."""
    from edgedistill.experiment.cross_validation import check_request

    check_request(recipe, jobs, False)  # --jobs >= 1; Python-object models stay in this process
    if jobs > 1 and on_epoch is not None:
        raise UserInputError("--jobs: a per-epoch callback (on_epoch) lives in this process; run the seeds with jobs=1")


def stage_job(job: dict[str, Any]) -> dict[str, Any]:
    """A worker process's stage (``workers.Workers`` target): the student alone or the distilled student of one seed."""
    from edgedistill.experiment.workers import guarded

    return guarded(job, lambda: _stage(job))


def _plan(job: dict[str, Any]) -> Any:
    from edgedistill.config import load_recipe
    from edgedistill.experiment.runner import plan

    key = repr((job["source"], job["overrides"], job["smoke"]))
    if key not in _PLANS:
        recipe = load_recipe(job["source"], job["overrides"])
        if job["smoke"]:
            from edgedistill.experiment.smoke import smoke_recipe

            recipe = smoke_recipe(recipe)
        _PLANS.clear()  # one run's plan at a time
        _PLANS[key] = (plan(recipe, job["smoke"]), {})
    return _PLANS[key]


def _stage(job: dict[str, Any]) -> dict[str, Any]:
    from edgedistill.data.shared_outputs import shared_outputs
    from edgedistill.experiment.runner import Runner

    seed = job["seed"]
    p, store = _plan(job)
    with StageProgress(enabled=False, prefix=job["prefix"]) as prog, shared_outputs(store):
        runner = Runner(p, Path(job["run_dir"]), prog)
        if job["kind"] == "baseline":  # (needs no teacher)
            return runner.baseline(seed)
        teachers = runner.teachers(seed)  # from the model cache: the run's process trained them before
        return runner.distilled(seed, [t for t, _ in teachers])


def run_stages(stages: list[tuple[str, int]], job: dict[str, Any], jobs: int, say: StageProgress) -> dict[tuple[str, int], dict]:
    """Every (kind, seed) stage, ``jobs`` at a time: their summaries. Refused, naming each failed stage, if any failed."""
    from edgedistill.experiment.workers import Workers, worker_threads

    threads = worker_threads(job.pop("fixed_threads"), jobs)
    say.message(f"--jobs {jobs}: {len(stages)} stage(s) in worker processes, {threads or 'default'} thread(s) each")
    done, failed = Workers(jobs, target=stage_job).run_all(
        [((kind, seed), {**job, "kind": kind, "seed": seed, "threads": threads, "prefix": f"{job['prefix']}[seed {seed}] "})
         for kind, seed in stages])
    if failed:
        what = "; ".join(f"{'student alone' if k == 'baseline' else 'distilled student'} seed {s}: {e.splitlines()[0]}"
                         for (k, s), e in sorted(failed.items(), key=lambda kv: kv[0][1]))
        again = resume_command(job["command"], job["run_dir"])
        raise EdgeDistillError(f"--jobs: {len(failed)} stage(s) failed ({what}); the finished ones are kept; resume "
                               f"with: {again}")
    return done
