"""``--jobs N`` on a holdout run: the seeds' student-alone and distilled stages in N slots, the run's own process and
N - 1 worker processes; ``--jobs auto`` (``auto_jobs``) chooses N.

The teachers are trained (or read from the model cache) first, in the run's own process and in order: a teacher shared
by every seed is trained once, and an assistant needs its teacher; two or more independent teachers are trained side by
side in the slots before that (``StageWorkers.train_teachers``), so the run's process reads them. Then each remaining
stage, the student alone and the distilled student of every seed, is one job for the sweep's ``Workers``: spawned
processes, started when the run starts, and a thread of the run's process (``StageWorkers``), with cores // N torch
threads each. A worker rebuilds
the run's plan from the same recipe (the thread uses the run's), reads the teachers from the cache and trains its stage
into the same run directory, in the folder a sequential run uses; its progress and its summary come back to the run's
process, which shows the one and writes the run's summary and report from the others as usual. A stage seeds
everything from its seed before training, so the numbers are those of ``--jobs 1`` at the same thread count
(tests/test_parallel_seeds.py). A stage that fails is reported with its seed, its exit code and the resume command;
the finished ones are kept (their folders and the model cache).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgedistill.config import Recipe
from edgedistill.errors import UserInputError
from edgedistill.experiment.rundir import as_environment_problem, resume_command
from edgedistill.progress import StageProgress

#: A worker's plan by job (recipe, overrides, smoke), with its store of shared outputs (data/shared_outputs.py): its
#: next stage of the same run neither prepares the data nor runs the teacher over the training rows again.
_PLANS: dict[str, tuple[Any, dict]] = {}


def stage_kinds(recipe: Recipe) -> tuple[str, ...]:
    """A seed's stages once its teachers exist: the student alone (unless the recipe has none, or the regime is the
    student alone) and the distilled student."""
    from edgedistill.registry import METHODS

    alone = bool(METHODS.entry(recipe.method.name).meta.get("baseline"))
    return ("baseline", "distilled") if recipe.baseline and not alone else ("distilled",)


def auto_jobs(recipe: Recipe, p: Any, smoke: bool, teachers_only: bool = False, on_epoch: Any = None,
              fold: Any = None) -> tuple[int, str]:
    """``--jobs auto`` for a run: ``job_slots.slots`` over its parallel units (the seeds' stages, or a
    cross-validation's folds), and why. One slot where ``job_slots.footprint`` says so, for stages too short to pay
    for a worker's start, and where a run has nothing to run side by side: teachers only, a per-epoch callback (it
    lives in this process), one fold of a cross-validation (its folds are the parallel units)."""
    from edgedistill.experiment.job_slots import footprint, short, slots
    from edgedistill.experiment.cross_validation import fold_indices

    f, folded = footprint(recipe, p, smoke), recipe.eval.scheme != "holdout" and fold is None
    alone = ("teachers only" if teachers_only else "a per-epoch callback" if on_epoch
             else "one fold of a cross-validation" if fold is not None else f.alone or short(f.work, "short stages"))
    if alone:
        return 1, alone
    if folded:
        return slots(len(fold_indices(recipe, p.splits.info.fold["count"])), "fold", f.need)
    return slots(len(recipe.seeds) * len(stage_kinds(recipe)), "stage", f.need)


def check_jobs(recipe: Recipe, jobs: int, on_epoch: Any) -> None:
    """What cannot run its seeds in worker processes, refused before anything is written."""
    from edgedistill.experiment.cross_validation import check_request

    check_request(recipe, jobs, False)  # Python-object models stay in this process
    if jobs > 1 and on_epoch is not None:
        raise UserInputError("--jobs: a per-epoch callback (on_epoch) lives in this process; run the seeds with jobs=1")


def side_by_side_teachers(p: Any, jobs: int) -> list[tuple[str, int]]:
    """(name, a seed that needs it) of the teachers to train in ``jobs`` slots before the rest: those no other teacher
    makes and no file gives, once each (a teacher shared by the seeds has one seed), two or more, in whole rounds of the
    slots. One left over trains afterwards in the run's process with every thread rather than alone in a slot at
    cores // jobs (3 teachers on 2 cores: 2 side by side, then 1 with both cores)."""
    found: dict[tuple[str, int], int] = {}
    for seed in p.recipe.seeds:
        for spec in p.teachers[seed]:
            if not spec.given and not spec.distill_from:
                found.setdefault((spec.name, spec.seed), seed)
    independent = [(name, seed) for (name, _), seed in found.items()]
    whole = independent if len(independent) <= jobs else independent[:len(independent) // jobs * jobs]
    return whole if len(whole) > 1 else []


def stage_job(job: dict[str, Any]) -> dict[str, Any]:
    """A slot's stage (``workers.Workers`` target): an independent teacher, or the student alone or the distilled
    student of one seed."""
    from edgedistill.experiment.workers import guarded

    return guarded(job, lambda: _stage(job))


def _plan_key(job: dict[str, Any]) -> str:
    return repr((job["source"], job["overrides"], job["smoke"]))


def _plan(job: dict[str, Any]) -> Any:
    from edgedistill.config import load_recipe
    from edgedistill.experiment.runner import plan

    key = _plan_key(job)
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
    from edgedistill.experiment.workers import forwarded

    seed, run_dir = job["seed"], Path(job["run_dir"])
    p, store = _plan(job)
    try:  # (the display: the run's process shows it)
        with forwarded() or StageProgress(enabled=False, prefix=job["prefix"]) as prog, shared_outputs(store):
            runner = Runner(p, run_dir, prog)
            if job["kind"] == "teacher":  # an independent teacher, into the model cache (its summary: the run writes it)
                runner.teacher(next(s for s in p.teachers[seed] if s.name == job["name"]))
                return {}
            if job["kind"] == "baseline":  # (needs no teacher)
                return runner.baseline(seed)
            teachers = runner.teachers(seed)  # from the model cache: the run's process trained them before
            return runner.distilled(seed, [t for t, _ in teachers])
    except OSError as exc:  # a full or read-only disk: an environment problem here as in a sequential run (exit 4)
        problem = as_environment_problem(exc, run_dir)
        if problem is None:
            raise
        raise problem from None


class StageWorkers:
    """The ``jobs`` slots of a run's parallel stages: the run's own process (a thread, which would otherwise only wait)
    and jobs - 1 worker processes, started when the run starts (``with``) so that their own start (the interpreter,
    torch, the toolkit: about two seconds each) overlaps the teachers' stage in the run's process."""

    def __init__(self, job: dict[str, Any], jobs: int, p: Any, why: str) -> None:
        from edgedistill.experiment.workers import Workers, worker_threads

        self.job, self.jobs, self.why = job, jobs, why  # why: --jobs auto's reason for ``jobs``, or ""
        _PLANS.clear()
        _PLANS[_plan_key(job)] = (p, {})  # the thread slot trains on the run's own plan, as a sequential run does
        self.fixed = p.recipe.engine.threads  # the recipe's threads for every slot, or None: cores // jobs each
        self.threads = worker_threads(self.fixed is not None, jobs)
        # Every (kind, seed) stage after the teachers, in the order a sequential run trains them.
        self.stages = [(kind, seed) for seed in p.recipe.seeds for kind in stage_kinds(p.recipe)]
        self.teachers = side_by_side_teachers(p, jobs)
        self.workers = Workers(jobs, target=stage_job, preload=("edgedistill.experiment.runner",), local=True)
        self.workers.prestart(max(len(self.stages), len(self.teachers)))

    def __enter__(self) -> "StageWorkers":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.workers.close(kill=exc_type is not None)  # (a teacher that failed: the idle workers are not needed)
        _PLANS.clear()  # (the run's plan is not kept in this process after the run)

    def train_teachers(self, say: StageProgress) -> None:
        """Two or more independent teachers (``self.teachers``): side by side in the slots, into the model cache, from
        which the run's process then reads them in order (and trains the assistants). One alone trains in the run's
        process, with every thread: a single long stage gains nothing from slots beside it."""
        if not self.teachers:
            return
        say.message(f"--jobs {self.jobs}: {len(self.teachers)} independent teachers side by side first")
        self.workers.on_progress = say.relay(lambda key: "")  # (a teacher's lines name it)
        self.workers.unit = "teacher"
        _, failed = self.workers.run_all([((name, seed), {**self.job, "kind": "teacher", "seed": seed, "name": name,
                                                          "threads": self.threads}) for name, seed in self.teachers],
                                         keep=True)
        self._refuse(failed, "teacher", lambda key: f"teacher '{key[0]}'")

    def run(self, say: StageProgress) -> dict[tuple[str, int], dict]:
        """Every stage, ``jobs`` at a time: their summaries by (kind, seed). Refused, naming each failed stage, if any
        failed, with the error class (exit code) the stages had."""
        job, why, stages = self.job, self.why, self.stages
        say.message(f"--jobs {self.jobs}{f' (auto: {why})' if why else ''}: {len(stages)} stage(s) in this process and "
                    f"{self.jobs - 1} worker process(es), {self.threads or self.fixed} thread(s) each")
        # Each stage's bar (or its plain lines) in this process's display, named by its seed.
        self.workers.on_progress = say.relay(lambda key: f"[seed {key[1]}] ")
        self.workers.unit = "stage"
        done, failed = self.workers.run_all(
            [((kind, seed), {**job, "kind": kind, "seed": seed, "threads": self.threads,
                             "prefix": f"{job['prefix']}[seed {seed}] "}) for kind, seed in stages],
            reap_later=True)  # (the workers end while this process writes the report; __exit__ waits for them)
        self._refuse(failed, "stage", lambda key: f"{'student alone' if key[0] == 'baseline' else 'distilled student'} "
                                                  f"seed {key[1]}")
        return done

    def _refuse(self, failed: dict[Any, str], what: str, named: Any) -> None:
        """Refused, naming each failed job (``named(key)``) and its first line, with the error class (exit code) the
        jobs had and the command that resumes the run; nothing when none failed."""
        from edgedistill.experiment.workers import failure

        if failed:
            lines = "; ".join(f"{named(k)}: {e.splitlines()[0]}" for k, e in sorted(failed.items(), key=lambda kv: kv[0][1]))
            again = resume_command(self.job["command"], self.job["run_dir"])
            raise failure(self.workers.failed_codes)(f"--jobs: {len(failed)} {what}(s) failed ({lines}); the finished "
                                                     f"ones are kept; resume with: {again}")
