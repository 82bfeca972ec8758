"""``edgedistill sweep RECIPE``: run a grid of recipe variants, each over every seed, with Optuna as the trial store.

The grid lives in the recipe under ``sweep: {grid: {dotted.key: [values]}, seeds, metric, name}``. One trial is one
grid point: one ``edgedistill.run`` with those overrides into ``<sweep>/trials/<point id>`` (so a trial re-run
after a crash resumes its own run directory; teachers and student-alone baselines come from the model cache).
Every grid point is validated (recipe keys and the same build-and-check ``edgedistill run`` does) before the
sweep directory exists. The study (``optuna.samplers.GridSampler`` over the grid, non-scalar values encoded as
JSON strings) lives in ``<sweep>/study.db`` or any Optuna RDB storage URL, so several machines can share it.

One process schedules (asks, tells, records heartbeats) and holds the sweep directory's lock (``rundir.DirLock``);
trials run inline or in ``--jobs`` spawned worker processes (``workers.Workers``: a worker that dies fails
only its own trial, and workers die with the sweep process). Every grid point is queued as a WAITING trial and
taken by one atomic WAITING -> RUNNING update in the storage, so processes on several machines never take one point
twice (``sweep_store.take``). A RUNNING trial whose sweep process died (this host: its pid is gone; elsewhere: its
heartbeat stopped) is marked failed and queued once more by Optuna's retry callback; a point that failed before a
sweep process started is queued again by it. The table keeps the first finished trial
of each grid point, so every point is counted once whatever happened.

The grid (reading, naming, validating points) is in ``sweep_grid``; one trial and the Optuna study in
``sweep_store``; the table and heatmap in ``sweep_report``. This module schedules.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import itertools
import os
import shlex
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from edgedistill.errors import UserInputError
from edgedistill.experiment import sweep_report
from edgedistill.experiment.sweep_report import MAXIMIZE, label
from edgedistill.experiment.sweep_grid import (
    _canon, encode, point_id, read_sweep, points_of, trial_overrides, _shared_smoke_recipe, validate,
)
from edgedistill.experiment.rundir import (DirLock, only_the_lock, output_folder, redact,
                                          say_interrupted, usable_folder)
from edgedistill.experiment.sweep_store import (
    GRACE_S, POLL_S, _locked, run_trial, open_study, _pid_alive, _Heartbeat, fail_dead, queue_point, retry_of, take,
    trials_running, quiet_optuna,
)
from edgedistill.experiment.job_slots import Footprint, requested, short, slots
from edgedistill.experiment.workers import Workers, worker_threads
from edgedistill.io import read_json_record, write_json
from edgedistill.paths import inside


class Sweep:
    def __init__(self, spec: dict[str, Any], metric: str, sweep_dir: Path, study: Any, storage: Any, *, jobs: int,
                 smoke: bool, progress: bool, command: str, log: Callable[[str], None],
                 deploy_profile: Optional[Callable[[Path, bool], None]] = None) -> None:
        from optuna.distributions import CategoricalDistribution

        self.spec, self.metric, self.dir, self.study, self.storage = spec, metric, sweep_dir, study, storage
        self.smoke, self.progress, self.command, self.log = smoke, progress, command, log
        self.deploy_profile = deploy_profile
        self.axes, self.values = spec["axes"], spec["values"]
        self.points = points_of(spec)
        self.ids = [point_id(p) for p in self.points]
        self.by_id = dict(zip(self.ids, self.points))
        self.codes = {k: [encode(v) for v in self.values[k]] for k in self.axes}
        self.dists = {k: CategoricalDistribution(self.codes[k]) for k in self.axes}
        self.session, self.host, self.pid = uuid.uuid4().hex[:8], socket.gethostname(), os.getpid()
        self.fixed = bool("engine.threads" in self.axes or (spec["base"].get("engine") or {}).get("threads"))
        self.use(jobs)
        self.heartbeat = _Heartbeat(storage)
        self.waiting_said = False
        self.started = datetime.datetime.now()  # (naive local time, as Optuna stores a trial's end)

    def use(self, jobs: int, auto: bool = False) -> None:
        """Run ``jobs`` trials at a time, each with cores // jobs threads (unless the recipe or the grid sets them).
        ``auto``: chosen by ``--jobs auto``; when that is one trial at a time (one grid point left, say), each trial's
        run chooses its own slots for its seeds' stages (``edgedistill run``'s default)."""
        self.jobs, self.threads, self.auto = jobs, worker_threads(self.fixed, jobs), auto

    # -- reading the store --------------------------------------------------------------------------------
    def _point_of(self, trial: Any) -> Optional[str]:
        try:
            point = {k: self.values[k][self.codes[k].index(trial.params[k])] for k in self.axes}
        except (KeyError, ValueError):
            return None
        pid = point_id(point)
        return pid if pid in self.by_id else None

    def _stale(self, t: Any, now: float) -> Optional[str]:
        owner = t.user_attrs.get("owner")
        if owner:
            if owner.get("session") == self.session:
                return None
            pid = int(owner.get("pid", 0))
            if owner.get("host") == self.host and (pid == self.pid or not _pid_alive(pid)):  # (a reused pid: this one)
                return f"its sweep process (pid {owner.get('pid')}) died"
            return None  # another machine's, or alive: its heartbeat tells (optuna.storages.fail_stale_trials)
        started = t.datetime_start.timestamp() if t.datetime_start else now
        return "claimed by a process that died before it started" if now - started > GRACE_S else None

    def snapshot(self) -> dict[str, Any]:
        import optuna
        from optuna.trial import TrialState

        with contextlib.suppress(Exception):
            optuna.storages.fail_stale_trials(self.study)
        now = time.time()
        s: dict[str, Any] = {"complete": {}, "running": {}, "failed": {}, "errors": {}, "waiting": set()}
        for t in self.study.get_trials(deepcopy=False):
            pid = self._point_of(t)
            if pid is None:
                continue
            state = t.state
            if state == TrialState.RUNNING:
                why = self._stale(t, now)
                if why is not None:
                    with contextlib.suppress(Exception):  # (and queued once more by Optuna's retry callback)
                        fail_dead(self.study, self.storage, t._trial_id, why)
                    state = TrialState.FAIL
                    s["errors"][pid] = f"interrupted: {why}"
            if state == TrialState.WAITING:
                s["waiting"].add(pid)
            elif state == TrialState.COMPLETE and "result" in t.user_attrs:
                s["complete"].setdefault(pid, t)  # the first finished trial of a point is the one that counts
            elif state == TrialState.RUNNING:
                s["running"][pid] = t
            elif state == TrialState.FAIL:
                s["failed"][pid] = t
                if t.state != TrialState.RUNNING:  # (one just found stale has its reason already)
                    s["errors"][pid] = t.user_attrs.get("error") or "failed"
        return s

    # -- claiming a grid point -----------------------------------------------------------------------------
    def queue(self, s: dict[str, Any]) -> None:
        """Queue as WAITING trials the grid points never queued, and once more each point that had failed before this
        process started (a failure while it runs is not retried by it: a deterministic error would fail again; a
        dead worker's trial is retried once by Optuna's callback, ``sweep_store._retry_once``)."""
        trials = self.study.get_trials(deepcopy=False)
        queued = {self._point_of(t) for t in trials if retry_of(t) is None}
        retried = {retry_of(t) for t in trials}
        for pid in self.ids:
            if pid in s["complete"] or pid in s["running"] or pid in s["waiting"]:
                continue
            params = {k: encode(self.by_id[pid][k]) for k in self.axes}
            if pid not in queued:
                queue_point(self.study, params, self.dists, pid)
            elif pid in s["failed"]:
                failed = s["failed"][pid]  # (the point's last failed trial)
                ended = failed.datetime_complete
                if failed.number not in retried and ended is not None and ended < self.started:
                    queue_point(self.study, params, self.dists, pid, retry=failed.number)

    def _duplicate(self, t: Any, pid: str) -> Optional[str]:
        """Why the trial just taken must not run: its point finished or runs elsewhere, or a lower-numbered trial
        queued for the same purpose (two processes queued one point at once) is the one that counts."""
        from optuna.trial import TrialState

        key = retry_of(t)
        for o in self.study.get_trials(deepcopy=False):
            if o.number == t.number or self._point_of(o) != pid:
                continue
            if o.state == TrialState.COMPLETE:
                return "is finished"
            if o.number < t.number and (o.state == TrialState.RUNNING or retry_of(o) == key):
                return f"is trial {o.number}'s"
        return None

    def claim(self) -> Optional[tuple[Any, str]]:
        import optuna
        from optuna.trial import TrialState

        # This machine's sweep processes take turns here; across machines, take() (the storage's row lock) decides.
        with _locked(self.dir / ".schedule.lock"):
            s = self.snapshot()
            self.queue(s)
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                pid = self._point_of(t)
                if pid is None or not take(self.storage, t._trial_id):
                    continue
                trial = optuna.trial.Trial(self.study, t._trial_id)
                why = self._duplicate(t, pid)
                if why is not None:
                    trial.set_user_attr("skipped", f"duplicate: grid point {pid} {why}")
                    self.study.tell(trial, state=TrialState.PRUNED)
                    continue
                trial.set_user_attr("owner", {"host": self.host, "pid": self.pid, "session": self.session})
                trial.set_user_attr("session", self.session)
                trial.set_user_attr("point", pid)
                trial.set_user_attr("run_dir", str(inside(self.dir / "trials", pid, what="sweep point")))
                self.heartbeat.beat(trial._trial_id)
                self.heartbeat.ids.add(trial._trial_id)
                return trial, pid
            return None

    def job(self, pid: str) -> dict[str, Any]:
        point = self.by_id[pid]
        overrides = trial_overrides(self.spec, point, self.smoke)
        run_dir = inside(self.dir / "trials", pid, what="sweep point")
        cli = " ".join(shlex.quote(f"{k}={label(v)}") for k, v in overrides.items())  # (pasted into a shell)
        command = (f"edgedistill run {shlex.quote(str(self.spec.get('recipe', 'RECIPE')))} {cli}"
                   f"{' --smoke' if self.smoke else ''} --out {shlex.quote(str(run_dir))}")
        recipe, smoke = self.spec["base"], self.smoke
        shared = _shared_smoke_recipe(self.spec, overrides, self.dir / "smoke-cache") if self.smoke else None
        if shared is not None:  # the smoke recipe itself, run as a plain run: trials share one teacher and baseline
            recipe, overrides, smoke = shared, {}, False
        return {"recipe": recipe, "overrides": overrides, "run_dir": str(run_dir), "lock": str(run_dir) + ".lock",
                "smoke": smoke, "threads": self.threads, "metric": self.metric, "command": command,
                "jobs": "auto" if self.auto and self.jobs == 1 else 1,
                "progress": self.progress and self.jobs == 1, "deploy_profile": self.deploy_profile,
                "prefix": f"[{pid}] " if self.jobs > 1 else ""}  # parallel trials' lines interleave: say whose

    def finish(self, trial: Any, pid: str, outcome: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        self.heartbeat.ids.discard(trial._trial_id)
        where = ", ".join(f"{k}={label(v)}" for k, v in self.by_id[pid].items())
        ok = "result" in outcome
        try:
            if ok:
                trial.set_user_attr("result", outcome["result"])
                self.study.tell(trial, sweep_report.selection_value(outcome["result"]))
            else:
                trial.set_user_attr("error", outcome["error"][:4000])
                self.study.tell(trial, state=TrialState.FAIL)
        except Exception as exc:  # noqa: BLE001 - e.g. marked stale meanwhile: the run directory still holds the result
            self.log(f"warning: could not record trial {trial.number} ({type(exc).__name__}: {exc})")
        done = len(self.snapshot()["complete"])  # from the store: other processes may be finishing points too
        secs = f"{outcome['seconds']:.0f} s"
        if ok:
            r = outcome["result"]
            vs = ""
            if r["alone"] is not None:
                vs = f" vs student alone {sweep_report._fmt(r['alone'])} (paired {r['diff']:+.3f}, won {r['wins']}/{r['n']})"
            self.log(f"[{done}/{len(self.ids)}] {where}: {self.metric} {sweep_report._fmt(r['method'])}{vs}, {secs}")
        else:
            self.log(f"[{done}/{len(self.ids)}] {where}: FAILED after {secs}: {outcome['error'].splitlines()[0]}")

    # -- the loop ------------------------------------------------------------------------------------------
    def execute(self) -> None:
        workers = Workers(self.jobs, target=run_trial, unit="trial") if self.jobs > 1 else None
        in_flight: dict[int, tuple[Any, str]] = {}  # submission number -> (trial, grid point)
        numbers = itertools.count()
        with trials_running(self.study, self.heartbeat, workers, in_flight):
            while True:
                ended: list[tuple[Any, dict[str, Any]]] = []
                while len(in_flight) < self.jobs:
                    claimed = self.claim()
                    if claimed is None:
                        break
                    key = next(numbers)
                    in_flight[key] = claimed
                    if workers is None:
                        ended.append((key, run_trial(self.job(claimed[1]))))
                    else:
                        workers.submit(key, self.job(claimed[1]))
                if in_flight:
                    # A worker that died fails only its own trial; the others' trials go on in their workers.
                    for key, outcome in ended or workers.wait():
                        trial, pid = in_flight.pop(key)
                        self.finish(trial, pid, outcome)
                        sweep_report.write_tables(self.dir, self.info(), self.rows())
                    continue
                now = self.snapshot()
                running = now["running"]
                if not running and not now["waiting"]:  # (a retry another process's callback just queued: take it)
                    break
                if not self.waiting_said:
                    self.log(f"waiting for {len(running)} grid point(s) that other sweep processes are running")
                    self.waiting_said = True
                time.sleep(POLL_S)

    # -- the table -----------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        seeds = self.spec["seeds"] if self.spec["seeds"] is not None else self.spec["base"].get("seeds", [0])
        return {"name": self.spec["name"], "axes": self.axes, "metric": self.metric, "seeds": seeds[:1] if self.smoke else seeds,
                "smoke": self.smoke, "command": self.command}

    def rows(self) -> list[dict[str, Any]]:
        s, rows = self.snapshot(), []
        for pid in self.ids:
            row: dict[str, Any] = {"point": self.by_id[pid], "id": pid, "state": "not run", "trial": None, "run_dir": None,
                                   "method": None, "val": None, "alone": None, "diff": None, "wins": None, "n": None,
                                   "teacher": None, "error": None}
            if pid in s["complete"]:
                t = s["complete"][pid]
                r = t.user_attrs["result"]
                row.update(state="complete", trial=t.number, run_dir=r["run_dir"], method=r["method"], val=r.get("val"), alone=r["alone"],
                           diff=r["diff"], wins=r["wins"], n=r["n"], teacher=r["teacher"])
            elif pid in s["running"]:
                t = s["running"][pid]
                row.update(state="running", trial=t.number, run_dir=t.user_attrs.get("run_dir"))
            elif pid in s["failed"]:
                t = s["failed"][pid]
                row.update(state="failed", trial=t.number, run_dir=t.user_attrs.get("run_dir"),
                           error=s["errors"].get(pid, "failed").splitlines()[0])
            rows.append(row)
        return rows


def auto_jobs(prints: list[Footprint], left: int, seeds: int) -> tuple[int, str]:
    """``--jobs auto`` for a sweep: ``job_slots.slots`` over the grid points ``left``, at the largest point's memory;
    one process where a point's footprint says so (a smoke sweep, an accelerator), or where the whole grid's training
    (every point, ``seeds`` each) is too short to pay for the workers' start."""
    alone = next((f.alone for f in prints if f.alone), "") or short(sum(f.work for f in prints) * seeds, "a short grid")
    return (1, alone) if alone else slots(left, "grid point left", max(f.need for f in prints), "grid points left")


def sweep(
    recipe: str | Path,
    overrides: Optional[list[str]] = None,
    *,
    out: Optional[str | Path] = None,
    smoke: bool = False,
    jobs: int | str = 1,
    storage: Optional[str] = None,
    study: Optional[str] = None,
    progress: bool = False,
    command: Optional[str] = None,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
    deploy_profile: Optional[Callable[[Path, bool], None]] = None,
) -> dict[str, Any]:
    """Run (or resume) the grid in ``recipe``'s ``sweep:`` section; write results.csv, results.md, heatmap.png.
    ``deploy_profile`` goes to every trial's ``runner.run`` (what ``report.profile`` calls; picklable). ``jobs``: trials
    at a time, or "auto" (``auto_jobs``: the command line's default)."""
    count, auto = requested(jobs)  # (refused before anything is read; "auto": chosen once the grid is checked)
    with quiet_optuna():
        return _sweep(recipe, overrides, out=out, smoke=smoke, jobs=count, auto=auto, storage=storage, study=study,
                      progress=progress, command=command, log=log, deploy_profile=deploy_profile)


def _sweep(recipe: str | Path, overrides: Optional[list[str]], *, out: Optional[str | Path], smoke: bool, jobs: int, auto: bool,
           storage: Optional[str], study: Optional[str], progress: bool, command: Optional[str],
           log: Callable[[str], None], deploy_profile: Optional[Callable[[Path, bool], None]] = None) -> dict[str, Any]:
    spec = read_sweep(Path(recipe), overrides)
    spec["recipe"] = str(recipe)
    points = points_of(spec)
    task, metric, prints = validate(spec, points, smoke)
    identity_doc = {"recipe": spec["base"], "grid": spec["values"], "seeds": spec["seeds"], "metric": metric, "smoke": smoke}
    identity = hashlib.sha256(_canon(identity_doc).encode()).hexdigest()[:16]
    command = redact(command or f"edgedistill sweep {recipe}" + (" --smoke" if smoke else ""))  # no storage password
    name = spec["name"]
    sweep_dir = output_folder(out, "sweeps", name, smoke)
    meta_path = usable_folder(sweep_dir) / "sweep.json"
    if meta_path.is_file():
        previous = read_json_record(meta_path)
        if previous is None:
            raise UserInputError(f"--out '{sweep_dir}': its sweep.json is damaged, so which sweep it holds is unknown; "
                                 "choose another --out, or delete it to start over")
        if previous.get("identity") != identity:
            old = previous.get("spec", {})
            differs = [k for k in identity_doc if _canon(old.get(k)) != _canon(identity_doc[k])] or ["its definition"]
            raise UserInputError(f"--out '{sweep_dir}' holds a different sweep ({', '.join(differs)} differ); choose another "
                                 "--out, or delete it to start over")
    elif sweep_dir.exists() and not (sweep_dir.is_dir() and only_the_lock(sweep_dir)):
        raise UserInputError(f"--out '{sweep_dir}' exists and is not an edgedistill sweep directory")
    study_name = study or name
    direction = "maximize" if metric in MAXIMIZE else "minimize"
    space = {k: [encode(v) for v in spec["values"][k]] for k in spec["axes"]}
    opened = open_study(storage, study_name, direction, space, identity, True) if storage else None  # before anything is written
    # One sweep process per sweep directory (its table, heatmap and log would interleave); the trials run under it.
    with DirLock(sweep_dir, "sweep directory", note=log):
        url = storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
        shown = redact(storage) if storage else "study.db"
        if not meta_path.is_file():
            write_json(meta_path, {"identity": identity, "spec": identity_doc, "name": name, "study": study_name,
                                   "storage": shown, "task": task, "command": command})
        st, store = opened or open_study(url, study_name, direction, space, identity, True)  # True: retry_stale
        runner = Sweep(spec, metric, sweep_dir, st, store, jobs=jobs, smoke=smoke, progress=progress, command=command, log=log,
                       deploy_profile=deploy_profile)
        seeds = runner.info()["seeds"]
        already = len(runner.snapshot()["complete"])
        why = ""
        if auto:
            jobs, why = auto_jobs(prints, len(points) - already, len(seeds))
            runner.use(jobs, auto)
        log(f"Sweep directory: {sweep_dir} (study '{study_name}' in {redact(storage) if storage else sweep_dir / 'study.db'})")
        log(f"{len(points)} grid point(s) x {len(seeds)} seed(s) {seeds}, best chosen on validation {metric}; {jobs} job(s)"
            + (f" (--jobs auto: {why})" if why else "")
            + (f"; {already} point(s) already finished" if already else ""))
        try:
            runner.execute()
        except KeyboardInterrupt:
            say_interrupted("Finished trials are kept", command, sweep_dir)
            raise
        rows = runner.rows()
        info = runner.info()
        sweep_report.write_tables(sweep_dir, info, rows)
        sweep_report.heatmap(sweep_dir / "heatmap.png", info, rows, spec["values"])
        best = sweep_report.best_row(rows, metric)
        return {
            "name": name, "task": task, "metric": metric, "direction": direction, "axes": spec["axes"], "seeds": seeds,
            "rows": rows, "best": best, "sweep_dir": str(sweep_dir), "study": study_name, "storage": redact(url),
            "complete": sum(r["state"] == "complete" for r in rows), "failed": sum(r["state"] == "failed" for r in rows),
            "total": len(rows),
            "files": {k: str(sweep_dir / f) for k, f in (("csv", "results.csv"), ("markdown", "results.md"), ("heatmap", "heatmap.png"))},
        }
