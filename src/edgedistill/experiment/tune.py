"""``edgedistill tune RECIPE --budget 30m``: choose the distillation for a recipe within a wall-clock budget.

The space (``tune_space``): the regimes that apply to the recipe's data and models, each with its key
hyperparameters, optionally the student's width and depth. Optuna's TPE sampler proposes a point; a trial is one
``edgedistill run`` of the recipe with that ``method`` section on the recipe's first seed, into
``<tune>/trials/<number>`` (teachers and the student alone come from the model cache, so a trial trains only the
distilled student). After every epoch the trial reports its validation accuracy (or RMSE) to a successive-halving
pruner, which stops the trials that trail the others at the same epoch. The study lives where a sweep's does
(``<tune>/study.db``, or any Optuna RDB URL; ``sweep_store.open_study``), so the same ``--out`` resumes it, and
trials run inline or in ``--jobs`` spawned workers (``workers.Workers``).

The budget is wall-clock for the search: no trial starts when less than its measured cost is left, and a trial
still running at the deadline stops at its next epoch (reported as stopped, never as finished). The winner is the
finished trial with the best VALIDATION score; it is then retrained over every seed of the recipe and reported
on test with ``edgedistill run``'s paired verdict (``<tune>/best-trial<n>``), and written as ``best_recipe.yaml``.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from edgedistill.engine.devices import check_one_process
from edgedistill.errors import UserInputError
from edgedistill.experiment import tune_report
from edgedistill.experiment.rundir import (DirLock, only_the_lock, output_folder, redact, resume_command,
                                          say_interrupted, usable_folder)
from edgedistill.experiment.sweep_grid import _canon
from edgedistill.experiment.sweep_store import _extract, _Heartbeat, _pid_alive, open_study, quiet_optuna, trials_running
from edgedistill.experiment.workers import Workers, worker_threads
from edgedistill.experiment import tune_select
from edgedistill.experiment.job_slots import Footprint, requested, slots
from edgedistill.experiment.tune_trial import estimate_trial_cost, pruner, run_tune_trial
from edgedistill.experiment.tune_space import Space, build_space, read_recipe, recipe_point
from edgedistill.io import read_json_record, write_json

MAX_FAILURES_IN_A_ROW = 3
#: A trial's run reports only its numbers: no deployment profile, classical baselines or plots (~2 s a run; the
#: winner's retraining over the seeds draws them).
TRIAL_REPORT = {"report.profile": False, "report.classical": [], "report.plots": False}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_budget(text: str | float | int) -> float:
    """``90s``, ``30m``, ``2h``, ``1h30m`` (or a number of seconds) -> seconds; anything else is refused naming --budget."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", str(text).strip().lower())
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", str(text).strip().lower()).strip():
            raise UserInputError(f"--budget: expected a duration such as 90s, 30m, 2h or 1h30m (got {text!r})")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds > 0:
        raise UserInputError(f"--budget: expected a positive duration (got {text!r})")
    return seconds


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class Tuner:
    def __init__(self, space: Space, tune_dir: Path, study: Any, store: Any, url: str, study_name: str, *, base: dict[str, Any],
                 smoke: bool, seed: int, jobs: int, deadline: float, floor: float, epochs: int, progress: bool,
                 command: str, log: Callable[[str], None], max_trials: Optional[int] = None,
                 held: Callable[[], float] = lambda: 0.0) -> None:
        self.space, self.dir, self.study, self.store, self.url, self.study_name = space, tune_dir, study, store, url, study_name
        self.base, self.smoke, self.seed, self.jobs, self.deadline = base, smoke, seed, jobs, deadline
        self.floor, self.epochs, self.progress, self.command, self.log = floor, epochs, progress, command, log
        self.session, self.host, self.pid = uuid.uuid4().hex[:8], socket.gethostname(), os.getpid()
        self.threads = worker_threads(bool((base.get("engine") or {}).get("threads")), jobs)
        self.heartbeat = _Heartbeat(store)
        self.started, self.max_trials = 0, max_trials  # trials started by this invocation, and its cap (--trials)
        self.held = held  # seconds of the budget kept for the finalists' re-check (tune_select.reserve)

    def recover(self) -> int:
        """Trials RUNNING in the store whose tune process died (this host: pid gone; elsewhere: heartbeat stopped)
        are marked failed; a resumed search samples afresh instead. Returns how many."""
        import optuna
        from optuna.trial import TrialState

        with contextlib.suppress(Exception):
            optuna.storages.fail_stale_trials(self.study)
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get("owner") or {}
            if owner.get("host") == self.host and not _pid_alive(int(owner.get("pid", 0))):
                with contextlib.suppress(Exception):
                    self.store.set_trial_user_attr(t._trial_id, "error", "interrupted: its tune process died")
                    self.store.set_trial_state_values(t._trial_id, TrialState.FAIL)
                    n += 1
        return n

    def trial_cost(self) -> float:
        """Seconds a full trial is expected to take: the median of the finished (unpruned) trials, else the measured floor."""
        from optuna.trial import TrialState

        took = sorted(t.user_attrs["seconds"] for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                      if t.user_attrs.get("seconds"))
        return took[len(took) // 2] if took else self.floor

    def resume_command(self) -> str:
        """The tune's command with its --out: what an interrupted trial's run prints as the way to resume."""
        return resume_command(self.command, self.dir)

    def claim(self) -> tuple[Any, dict[str, Any]]:
        trial = self.study.ask()
        name, values, overrides = self.space.suggest(trial)
        run_dir = self.dir / "trials" / f"{trial.number:04d}"
        for k, v in (("owner", {"host": self.host, "pid": self.pid, "session": self.session}), ("candidate", name),
                     ("values", values), ("choice", overrides), ("run_dir", str(run_dir))):
            trial.set_user_attr(k, v)
        self.heartbeat.beat(trial._trial_id)
        self.heartbeat.ids.add(trial._trial_id)
        extra = {"seeds": [self.seed], **TRIAL_REPORT}
        where = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
        job = {"recipe": self.base, "overrides": {**overrides, **extra}, "run_dir": str(run_dir), "smoke": self.smoke,
               "threads": self.threads, "metric": self.space.metric, "study": self.study_name, "storage": self.url,
               "trial_id": trial._trial_id, "epochs": self.epochs, "deadline": self.deadline,
               # The recipe's own setting runs whole: the reference every trial is judged against at each rung (alone
               # at its rungs, one trial at a time never prunes it; side by side, it could be).
               "prunable": not trial.user_attrs.get("recipe_setting"),
               "progress": self.progress and self.jobs == 1, "command": self.resume_command(),
               "prefix": f"[trial {trial.number}] " if self.jobs > 1 else "", "label": f"{name} {where}"}
        self.started += 1
        return trial, job

    def finish(self, trial: Any, job: dict[str, Any], outcome: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        self.heartbeat.ids.discard(trial._trial_id)
        secs = outcome["seconds"]
        r = outcome.get("result") or {}
        state = r.get("state", "failed")
        try:
            trial.set_user_attr("seconds", round(secs, 2))
            trial.set_user_attr("epochs_run", r.get("epoch", 0))
            if state == "complete":
                trial.set_user_attr("result", r["run"])
                trial.set_user_attr("tiebreak", r.get("tiebreak"))
                self.study.tell(trial, r["value"])
            elif state == "pruned":
                trial.set_user_attr("pruned_at", r["epoch"])
                self.study.tell(trial, state=TrialState.PRUNED)
            elif state == "stopped":
                trial.set_user_attr("error", f"stopped: the budget ran out at epoch {r['epoch']} of {self.epochs}")
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                trial.set_user_attr("error", outcome.get("error", "failed")[:4000])
                self.study.tell(trial, state=TrialState.FAIL)
        except Exception as exc:  # noqa: BLE001 - e.g. marked stale meanwhile: the run directory keeps what it did
            self.log(f"warning: could not record trial {trial.number} ({type(exc).__name__}: {exc})")
        left = max(0.0, self.deadline - time.time())
        score = f"val {self.space.metric} {r['value']:.4f}" if r.get("value") is not None else ""
        what = {"complete": f"{score} after {r.get('epoch')} epochs", "pruned": f"pruned at epoch {r.get('epoch')} ({score})",
                "stopped": f"stopped by the budget at epoch {r.get('epoch')}"}.get(state) or \
            f"FAILED: {outcome.get('error', 'failed').splitlines()[0]}"
        self.log(f"[trial {trial.number}] {job['label']}: {what}, {secs:.0f} s; budget left {_duration(left)}")

    def execute(self) -> None:
        workers = Workers(self.jobs, target=run_tune_trial, unit="trial") if self.jobs > 1 else None
        failures = 0  # in a row: a recipe every trial fails on (a missing file, a bad key) stops the search, not the budget
        in_flight: dict[int, tuple[Any, dict[str, Any]]] = {}
        with trials_running(self.study, self.heartbeat, workers, in_flight):
            while True:
                ended: list[tuple[int, dict[str, Any]]] = []
                while (len(in_flight) < self.jobs and failures < MAX_FAILURES_IN_A_ROW
                       and (self.max_trials is None or self.started < self.max_trials)
                       and self.deadline - time.time() - self.held() >= self.trial_cost()):
                    trial, job = self.claim()
                    in_flight[trial.number] = (trial, job)
                    if workers is None:
                        ended.append((trial.number, run_tune_trial(job)))
                    else:
                        workers.submit(trial.number, job)
                if not in_flight:
                    break
                for key, outcome in ended or workers.wait():
                    trial, job = in_flight.pop(key)
                    self.finish(trial, job, outcome)
                    failures = failures + 1 if "error" in outcome else 0
                    if failures == MAX_FAILURES_IN_A_ROW:
                        self.log(f"stopping: {failures} trials in a row failed (the last: "
                                 f"{outcome['error'].splitlines()[0]}); see report.md")
                    tune_report.write(self.dir, self.info(), self.study, self.space)

    def info(self) -> dict[str, Any]:
        return {"name": self.base.get("name", "run"), "metric": self.space.metric, "direction": self.space.direction,
                "seed": self.seed, "epochs": self.epochs, "smoke": self.smoke, "command": self.command,
                "excluded": self.space.excluded, "student_note": self.space.student_note}


def _rechecker(tuner: Tuner, base: dict[str, Any], smoke: bool) -> Callable[[Any, int], dict[str, Any]]:
    """``tune_select.recheck``'s runner: the finished trial's method on another seed, validation read back, run in
    ``<out>/trials/<number>/seed<s>`` of this tune (not the trial's ``run_dir``, which may be another machine's)."""
    def run_again(trial: Any, seed: int) -> dict[str, Any]:
        from edgedistill.experiment.runner import run

        overrides = {**trial.user_attrs["choice"], "seeds": [seed], **TRIAL_REPORT}
        out = tuner.dir / "trials" / f"{trial.number:04d}" / f"seed{seed}"
        summary = run(base, overrides, out=out, smoke=smoke, progress=tuner.progress, command=tuner.resume_command())
        return {"value": _extract(summary, tuner.space.metric)["val"]["mean"],
                "tiebreak": tune_select.tiebreak(summary, tuner.space.metric)}

    return run_again


def auto_jobs(fp: Footprint, smoke: bool, max_trials: Optional[int]) -> tuple[int, str]:
    """``--jobs auto`` for a tune: ``job_slots.slots`` over its trials (no bound but ``--trials``: the budget decides how
    many run); one process for a smoke tune and where the trial's footprint says so (an accelerator, one core). Trials
    are never too short to pay for the workers' start: the budget is spent on many of them."""
    alone = "a smoke run" if smoke else fp.alone
    return (1, alone) if alone else slots(max_trials, "trial", fp.need)


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


#: The budget when none is given: a real search's, and a smoke tune's (one-epoch trials on tiny data: a minute shows
#: the whole pipeline; the real default would run thousands of them).
DEFAULT_BUDGET, SMOKE_BUDGET = "30m", "1m"


def tune(
    recipe: str | Path | dict[str, Any],
    overrides: Optional[list[str]] = None,
    *,
    budget: Optional[str | float] = None,
    out: Optional[str | Path] = None,
    storage: Optional[str] = None,
    jobs: int | str = 1,
    max_params: Optional[int] = None,
    max_latency_us: Optional[float] = None,
    methods: Optional[list[str]] = None,
    include_data_free: bool = False,
    max_trials: Optional[int] = None,
    smoke: bool = False,
    retrain: bool = True,
    progress: bool = False,
    command: Optional[str] = None,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
    deploy_profile: Optional[Callable[[Path, bool], None]] = None,
    latency: Optional[Callable[..., dict[str, float]]] = None,
) -> dict[str, Any]:
    """Search (or resume searching) the distillation for ``recipe`` within ``budget`` (default ``DEFAULT_BUDGET``, or
    ``SMOKE_BUDGET`` with ``smoke``); retrain the winner over the recipe's seeds (``retrain``) and write report.md,
    trials.csv and best_recipe.yaml into the tune directory.
    ``max_trials``: also stop after this many trials in this invocation (the budget still bounds them).
    ``deploy_profile`` goes to the winner's retraining run; ``latency(model, window, runs, warmup)`` times a student
    for ``max_latency_us`` (both from the deploy layer: ``edgedistill.deploy.profile``)."""
    count, auto = requested(jobs)  # ("auto": chosen once a trial's cost is measured)
    if max_trials is not None and max_trials < 1:
        raise UserInputError(f"--trials: expected at least 1 (got {max_trials})")
    if max_params is not None and max_params < 1:
        raise UserInputError(f"--max-params: expected a positive number of parameters (got {max_params})")
    if max_latency_us is not None and not max_latency_us > 0:
        raise UserInputError(f"--max-latency-us: expected a positive latency in microseconds (got {max_latency_us})")
    with quiet_optuna():
        budget = parse_budget(budget if budget is not None else SMOKE_BUDGET if smoke else DEFAULT_BUDGET)
        return _tune(recipe, overrides, budget=budget, out=out, storage=storage, jobs=count, auto=auto, max_params=max_params,
                     max_latency_us=max_latency_us, methods=methods, include_data_free=include_data_free, max_trials=max_trials,
                     smoke=smoke, retrain=retrain, progress=progress, command=command, log=log, deploy_profile=deploy_profile,
                     latency=latency)


def _tune(recipe: Any, overrides: Optional[list[str]], *, budget: float, out: Any, storage: Optional[str], jobs: int, auto: bool,
          max_params: Optional[int], max_latency_us: Optional[float], methods: Optional[list[str]], include_data_free: bool,
          max_trials: Optional[int], smoke: bool, retrain: bool, progress: bool, command: Optional[str], log: Callable[[str], None],
          deploy_profile: Optional[Callable[[Path, bool], None]],
          latency: Optional[Callable[..., dict[str, float]]]) -> dict[str, Any]:
    from edgedistill.config import load_recipe
    from edgedistill.experiment.sweep_grid import _shared_smoke_recipe

    start = time.time()
    base, name = read_recipe(recipe, overrides)
    checked = load_recipe(base)  # (validates the recipe before anything else)
    check_one_process(checked.engine, "edgedistill tune")
    seeds = checked.seeds
    command = redact(command or f"edgedistill tune {recipe if not isinstance(recipe, dict) else '<dict>'} --budget {budget:.0f}s")
    tune_dir = output_folder(out, "tunes", name, smoke)
    # Trials run the recipe as given; a smoke tune runs the smoke recipe with one model cache for all its trials.
    trial_base, trial_smoke = base, False
    if smoke:
        shared = _shared_smoke_recipe({"base": base}, {}, tune_dir / "smoke-cache")
        trial_base, trial_smoke = (shared, False) if shared is not None else (base, True)
    meta_path = usable_folder(tune_dir) / "tune.json"
    previous = read_json_record(meta_path) if meta_path.is_file() else None
    limits = {"max_params": max_params, "max_latency_us": max_latency_us}
    measured = (previous or {}).get("spec", {}).get("students") if (previous or {}).get("spec", {}).get("limits") == limits else None
    space = build_space(trial_base, smoke=trial_smoke, methods=methods, include_data_free=include_data_free,
                        max_params=max_params, max_latency_us=max_latency_us, students=measured,
                        latency=latency)
    setup_s, epoch_s, epochs, fp = estimate_trial_cost(trial_base, trial_smoke)
    asked = "auto" if auto else jobs  # (the winner's retraining over the seeds runs its stages with the same --jobs)
    jobs, why = auto_jobs(fp, smoke, max_trials) if auto else (jobs, "")
    floor, left = setup_s + epoch_s * epochs, start + budget - time.time()
    if left < floor:  # refused before anything is written
        raise UserInputError(f"--budget {_duration(budget)}: one trial ({epochs} epochs of the distilled student) is estimated "
                             f"at {_duration(floor)} or more on this machine (measured: {setup_s:.1f} s to load and build, {epoch_s:.2f} s per epoch), and "
                             f"{_duration(max(0.0, left))} is left after setup; give at least --budget {int(floor * 1.5 + (budget - left)) + 1}s")
    # The tune's identity: the recipe, the space and its limits (the measured student shapes are kept, not re-timed).
    described = {k: v for k, v in space.describe().items() if k != "students"}
    identity_doc = {"recipe": base, "space": described, "limits": limits, "smoke": smoke, "seed": seeds[0]}
    identity = "tune-" + hashlib.sha256(_canon(identity_doc).encode()).hexdigest()[:16]
    if meta_path.is_file():
        if previous is None or previous.get("identity") != identity:
            raise UserInputError(f"--out '{tune_dir}' holds a different tune (recipe, search space, limits, seed or smoke differ, "
                                 "or its tune.json is damaged); choose another --out, or delete it to start over")
    elif tune_dir.exists() and not (tune_dir.is_dir() and only_the_lock(tune_dir)):
        raise UserInputError(f"--out '{tune_dir}' exists and is not an edgedistill tune directory")
    study_name = f"tune-{name}"
    opened = open_study(storage, study_name, space.direction, {}, identity) if storage else None  # before writing
    with DirLock(tune_dir, "tune directory", note=log):
        url = storage or f"sqlite:///{(tune_dir / 'study.db').resolve()}"
        if not meta_path.is_file():
            write_json(meta_path, {"identity": identity, "spec": {**identity_doc, "students": space.students}, "name": name, "study": study_name,
                                   "storage": redact(url), "command": command})
        _, store = opened or open_study(url, study_name, space.direction, {}, identity)
        import optuna

        study = optuna.load_study(study_name=study_name, storage=store, pruner=pruner(epochs),
                                  sampler=optuna.samplers.TPESampler(seed=None, multivariate=False))
        deadline = start + budget
        tuner = Tuner(space, tune_dir, study, store, url, study_name, base=trial_base, smoke=trial_smoke, seed=seeds[0],
                      jobs=jobs, deadline=deadline, floor=floor, epochs=epochs, progress=progress, command=command, log=log,
                      max_trials=max_trials, held=lambda: tune_select.reserve(study, space.direction, seeds, budget))
        recovered = tuner.recover()
        point = recipe_point(space.candidates, base.get("method") or {}, space.task)
        shape = {"width": (base.get("student") or {}).get("width"), "depth": (base.get("student") or {}).get("depth")}
        if point is not None and shape in space.students:  # and the recipe's own student, when it is within the limits
            point["student"] = f"{shape['width']}x{shape['depth']}"
        if not study.get_trials(deepcopy=False):  # the recipe's own setting is trial 0, then each regime's defaults
            if point is not None:
                study.enqueue_trial(point, user_attrs={"recipe_setting": True})
            for default in tune_select.portfolio(space, point):
                study.enqueue_trial(default, user_attrs={"documented_defaults": True})
        cost = tuner.trial_cost()
        done_before = sum(t.state.name != "WAITING" for t in study.get_trials(deepcopy=False))
        log(f"Tune directory: {tune_dir} (study '{study_name}' in {redact(storage) if storage else tune_dir / 'study.db'})")
        log(f"Searching {len(space.candidates)} regime(s) ({', '.join(c.name for c in space.candidates)}) on seed {seeds[0]}, "
            f"chosen on validation {space.metric}; {epochs} epochs per trial, about {_duration(cost)} each; budget "
            f"{_duration(budget)}; {jobs} job(s)" + (f" (--jobs auto: {why})" if why else "") + (f"; {done_before} earlier trial(s) resumed" if done_before else "")
            + (f"; {recovered} interrupted trial(s) marked failed" if recovered else ""))
        for cname, why in space.excluded.items():
            log(f"  not searched: {cname}: {why}")
        try:
            tuner.execute()
        except KeyboardInterrupt:
            say_interrupted("Finished trials are kept", command, tune_dir)
            raise
        if len(seeds) > 1:
            tune_select.recheck(study, space.direction, seeds[1], deadline, _rechecker(tuner, trial_base, trial_smoke), log)
        searched = time.time() - start
        winner = tune_select.winner(study, space.direction)
        final, final_dir = None, None
        if winner is not None:
            choice = winner.user_attrs["choice"]
            tune_report.write_best_recipe(tune_dir / "best_recipe.yaml", load_recipe(base, choice), name, winner, command,
                                          space.metric, seeds[0])
            if retrain:
                final_dir = tune_dir / f"best-trial{winner.number:04d}"
                log(f"Winner on validation: trial {winner.number} ({winner.user_attrs['candidate']}); retraining it over the "
                    f"recipe's seeds{' (smoke: one)' if smoke else ''} into {final_dir}")
                from edgedistill.experiment.runner import run

                summary = run(trial_base, choice, out=final_dir, smoke=trial_smoke, progress=progress, jobs=asked,
                              command=f"edgedistill run {shlex.quote(str(tune_dir / 'best_recipe.yaml'))}", deploy_profile=deploy_profile)
                final = _extract(summary, space.metric)
        else:
            log("No trial finished within the budget: no winner (a larger --budget, or the same --out again, continues)")
        result = tune_report.write(tune_dir, tuner.info(), study, space, final=final, searched_s=searched)
        return {"name": name, "tune_dir": str(tune_dir), "metric": space.metric, "direction": space.direction,
                "candidates": [c.name for c in space.candidates], "excluded": space.excluded, "trials": result["rows"],
                "importances": result["importances"], "winner": result["winner"], "final": final,
                "final_dir": str(final_dir) if final_dir else None, "study": study_name, "storage": redact(url),
                "searched_s": searched, "files": result["files"]}
