"""``edgedistill sweep RECIPE``: run a grid of recipe variants, each over every seed, with Optuna as the trial store.

The grid lives in the recipe under ``sweep: {grid: {dotted.key: [values]}, seeds, metric, name}``. One trial is one
grid point: one ``edgedistill.run`` with those overrides into ``<sweep>/trials/<point id>`` (so a trial re-run
after a crash resumes its own run directory; teachers and student-alone baselines come from the model cache).
Every grid point is validated (recipe keys and the same build-and-check ``edgedistill run`` does) before the
sweep directory exists. The study (``optuna.samplers.GridSampler`` over the grid, non-scalar values encoded as
JSON strings) lives in ``<sweep>/study.db`` or any Optuna RDB storage URL, so several machines can share it.

One process schedules (asks, tells, records heartbeats); trials run inline or in ``--jobs`` spawned worker
processes. A grid point is never handed out while a live trial runs it: scheduling is serialised by a lock file,
each trial's run directory by its own lock, and a RUNNING trial whose sweep process died (same host: its pid is
gone; elsewhere: its heartbeat stopped) is marked failed and run again. Failed points are re-run by the next
invocation, not this one (a deterministic failure would fail again). The table keeps the first finished trial
of each grid point, so every point is counted once whatever happened.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from edgedistill.config import apply_overrides, load_recipe, read_yaml
from edgedistill.errors import EdgeDistillError, UserInputError
from edgedistill.experiment import sweep_report
from edgedistill.experiment.sweep_report import MAXIMIZE, label
from edgedistill.io import read_json, write_json

SPEC_KEYS = ("grid", "seeds", "metric", "name")
METRICS = {"classification": ("acc", "f1", "ece", "nll"), "regression": ("rmse", "mae", "r2")}
HEARTBEAT_S, GRACE_S, POLL_S = 20, 120, 10.0


# -- the grid ------------------------------------------------------------------------------------------------
def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def encode(value: Any) -> Any:
    """A grid value as an Optuna categorical choice: scalars as they are, lists and mappings as JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else _canon(value)


def point_id(point: dict[str, Any]) -> str:
    """Stable folder name of a grid point: readable ``temperature=2,weight=0.5`` plus a hash of the whole point."""
    digest = hashlib.sha256(_canon(sorted(point.items())).encode()).hexdigest()[:8]
    def text(v: Any) -> str:
        flat = isinstance(v, list) and all(x is None or isinstance(x, (bool, int, float, str)) for x in v)
        return "+".join(label(x) for x in v) if flat else label(v)

    slug = ",".join(f"{k.split('.')[-1]}={text(v)}" for k, v in point.items())
    slug = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", slug).strip("_")[:80]
    return f"{slug}-{digest}" if slug else digest


def read_sweep(path: Path, overrides: Optional[list[str]] = None) -> dict[str, Any]:
    """The recipe (without ``sweep``) and the checked sweep section: ``{base, axes, values, seeds, metric, name}``."""
    data = read_yaml(Path(path))
    if overrides:
        data = apply_overrides(data, overrides)
    raw = data.pop("sweep", None)
    if raw is None:
        raise UserInputError(f"recipe '{path}' has no 'sweep' section; add e.g. sweep: {{grid: {{method.terms.1.temperature: "
                             "[1, 2, 4]}}}} (docs/sweep.md)")
    if not isinstance(raw, dict):
        raise UserInputError(f"sweep: expected a mapping with keys {', '.join(SPEC_KEYS)} (got {raw!r})")
    for key in raw:
        if key not in SPEC_KEYS:
            raise UserInputError(f"sweep.{key}: unknown key; expected one of: {', '.join(SPEC_KEYS)}")
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise UserInputError("sweep.grid: expected a mapping of recipe keys to lists of values, e.g. "
                             "{method.terms.1.temperature: [1, 2, 4]}")
    values: dict[str, list[Any]] = {}
    for key, vals in grid.items():
        if not isinstance(key, str) or not key or not all(key.split(".")):
            raise UserInputError(f"sweep.grid.{key}: expected a dotted recipe key such as train.lr")
        if key.split(".")[0] in ("seeds", "name", "sweep"):
            raise UserInputError(f"sweep.grid.{key}: not a grid axis (a trial runs every seed: set sweep.seeds)")
        if not isinstance(vals, list) or not vals:
            raise UserInputError(f"sweep.grid.{key}: expected a non-empty list of values (got {vals!r})")
        for i, v in enumerate(vals):
            if any(_canon(v) == _canon(w) or (encode(v) == encode(w) and not isinstance(v, (list, dict))) for w in vals[:i]):
                raise UserInputError(f"sweep.grid.{key}: the value {label(v)} is listed twice")
            if isinstance(v, float) and v != v:
                raise UserInputError(f"sweep.grid.{key}: NaN is not a grid value")
        codes = [encode(v) for v in vals]
        if len(set(map(_canon, codes))) != len(codes):
            raise UserInputError(f"sweep.grid.{key}: a text value collides with a list/mapping value written as JSON")
        values[key] = vals
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
                              or len(set(seeds)) != len(seeds)):
        raise UserInputError(f"sweep.seeds: expected a non-empty list of distinct integers (got {seeds!r})")
    metric = raw.get("metric")
    if metric is not None and metric not in (*METRICS["classification"], *METRICS["regression"]):
        raise UserInputError(f"sweep.metric: unknown metric {metric!r}; expected one of: "
                             f"{', '.join(METRICS['classification'])} (classification), {', '.join(METRICS['regression'])} (regression)")
    name = raw.get("name", data.get("name", "run"))
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserInputError(f"sweep.name: expected letters, digits, '.', '_' or '-' (got {name!r})")
    # Relative data paths are relative to the recipe file (as for `edgedistill run`); trials get the recipe as a dict.
    d = data.get("data")
    if isinstance(d, dict) and isinstance(d.get("path"), str) and not Path(d["path"]).is_absolute() and not Path(d["path"]).exists():
        d["path"] = str(Path(path).parent / d["path"])
    return {"base": data, "axes": list(values), "values": values, "seeds": seeds, "metric": metric, "name": name}


def points_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    axes = spec["axes"]
    return [dict(zip(axes, combo)) for combo in itertools.product(*(spec["values"][k] for k in axes))]


def trial_overrides(spec: dict[str, Any], point: dict[str, Any], smoke: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {"seeds": spec["seeds"]} if spec["seeds"] is not None else {}
    if smoke:
        extra["report.profile"] = False  # nothing worth timing in a smoke run
    return {**point, **extra}


def _check(spec: dict[str, Any], overrides: dict[str, Any], smoke: bool) -> str:
    """What ``edgedistill run`` checks before training (keys, names, shapes, one forward pass); returns the task."""
    from edgedistill.experiment.runner import plan

    recipe = load_recipe(spec["base"], overrides)
    if smoke:
        from edgedistill.experiment.smoke import smoke_recipe

        recipe = smoke_recipe(recipe)
    return plan(recipe, smoke).splits.info.task


def _shared_smoke_recipe(spec: dict[str, Any], overrides: dict[str, Any], cache: Path) -> Optional[dict[str, Any]]:
    """A smoke run keeps its trained models in its own run directory, so every trial would train its own teacher
    and baseline. Run the smoke recipe as a plain run with one cache for the whole sweep instead: the same
    networks, trained once. Not where a teacher reads a view the synthetic data lacks (smoke mode aliases it)."""
    from edgedistill.config import recipe_to_dict
    from edgedistill.experiment.smoke import smoke_recipe
    from edgedistill.registry import METHODS

    recipe = smoke_recipe(load_recipe(spec["base"], overrides))
    method = METHODS.get(recipe.method.name, key="method.name")
    if any(t.view != "x" for seed in recipe.seeds for t in method.teacher_plan(recipe, seed)):
        return None
    return {**recipe_to_dict(recipe), "cache_dir": str(cache.resolve())}


def _loads(base: dict[str, Any], overrides: dict[str, Any]) -> bool:
    try:
        load_recipe(base, overrides)
    except UserInputError:
        return False
    return True


def validate(spec: dict[str, Any], points: list[dict[str, Any]], smoke: bool) -> tuple[str, str]:
    """Check every grid point; an error names ``sweep.grid.<key>`` (and the value) where one axis is to blame.
    Returns (task, metric)."""
    axes = spec["axes"]
    base_ok = _loads(spec["base"], {})  # (the grid may supply what the recipe leaves out)
    outcome: dict[int, Any] = {}
    for i, point in enumerate(points):
        try:
            outcome[i] = _check(spec, trial_overrides(spec, point, smoke), smoke)
        except UserInputError as exc:
            outcome[i] = exc
    for i, point in enumerate(points):
        exc = outcome[i]
        if not isinstance(exc, UserInputError):
            continue
        text = re.sub(r"\[(\d+)\]", r".\1", str(exc))
        blamed = [k for k in axes if re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", text)]
        if not blamed:  # the axis whose other values make this point valid
            for k in axes:
                if any(not isinstance(outcome[j], UserInputError) for j, q in enumerate(points)
                       if q[k] != point[k] and all(q[o] == point[o] for o in axes if o != k)):
                    blamed = [k]
                    break
        if not blamed and base_ok:  # the axis whose value alone breaks the recipe (an unknown key, a wrong type)
            blamed = [k for k in axes if not _loads(spec["base"], {k: point[k]})]
        if blamed:
            raise UserInputError(f"sweep.grid.{blamed[0]}: {label(point[blamed[0]])}: {exc}")
        if all(isinstance(o, UserInputError) for o in outcome.values()) and not base_ok:
            raise UserInputError(str(exc))
        where = ", ".join(f"{k}={label(point[k])}" for k in axes)
        raise UserInputError(f"sweep.grid ({', '.join(axes)}): the grid point {where}: {exc}")
    tasks = set(outcome.values())
    if len(tasks) != 1:
        raise UserInputError(f"sweep.grid: the grid mixes tasks ({', '.join(sorted(tasks))}); one metric cannot rank them")
    task = tasks.pop()
    metric = spec["metric"] or ("acc" if task == "classification" else "rmse")
    if metric not in METRICS[task]:
        raise UserInputError(f"sweep.metric: '{metric}' is not a {task} metric; expected one of: {', '.join(METRICS[task])}")
    return task, metric


# -- one trial (inline, or in a worker process) --------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _extract(summary: dict[str, Any], metric: str) -> dict[str, Any]:
    rows = summary["rows"]
    method = next((r for r in rows if r["role"] == "method"), None) or [r for r in rows if r["role"] == "student alone"][-1]
    alone = next((r for r in rows if r["role"] == "student alone" and r is not method), None)
    teacher = next((r for r in rows if r["role"] == "teacher"), None)
    per_m = [s[metric] for s in method["per_seed_test"]]
    per_a = [s[metric] for s in alone["per_seed_test"]] if alone else None
    diffs = [m - a for m, a in zip(per_m, per_a)] if per_a else None
    sign = 1 if metric in MAXIMIZE else -1
    return {
        "method": method["metrics"][metric], "alone": alone["metrics"][metric] if alone else None,
        "teacher": teacher["metrics"][metric]["mean"] if teacher and metric in teacher["metrics"] else None,
        "per_seed": per_m, "alone_per_seed": per_a, "diff": sum(diffs) / len(diffs) if diffs else None,
        "wins": sum(sign * d > 0 for d in diffs) if diffs else None, "n": len(diffs) if diffs else None,
        "seeds": summary["seeds"], "select": summary["select"], "deliverable": summary["deliverable"], "run_dir": summary["run_dir"],
    }


def run_trial(job: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point (a whole ``edgedistill.run`` over the seeds); errors come back as text, never raised."""
    start = time.time()
    try:
        if job["threads"]:
            import torch

            torch.set_num_threads(job["threads"])
        from edgedistill.experiment.runner import run

        with _locked(Path(job["lock"])):  # a duplicate of this point waits here, then reads the finished run back
            summary = run(job["recipe"], job["overrides"], out=job["run_dir"], smoke=job["smoke"], progress=job["progress"],
                          command=job["command"])
        return {"result": _extract(summary, job["metric"]), "seconds": time.time() - start}
    except EdgeDistillError as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.time() - start}
    except Exception as exc:  # noqa: BLE001 - one broken grid point must not stop the sweep
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-1500:]
        return {"error": f"{type(exc).__name__}: {exc}\n{tb}", "seconds": time.time() - start}


# -- the study -----------------------------------------------------------------------------------------------
def _grid_sampler(space: dict[str, list[Any]]) -> Any:
    import optuna

    class _Grid(optuna.samplers.GridSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            pass  # the sweep decides when it is done (ask-and-tell: GridSampler's study.stop() would raise)

    return _Grid(space, seed=0)


def open_study(url: str, name: str, direction: str, space: dict[str, list[Any]], identity: str) -> tuple[Any, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, engine_kwargs=kwargs)
        study = optuna.create_study(study_name=name, storage=storage, sampler=_grid_sampler(space), direction=direction,
                                    load_if_exists=True)
    except Exception as exc:  # noqa: BLE001 - a bad URL, an unreachable server, a missing driver
        raise UserInputError(f"--storage '{url}': cannot open it as an Optuna storage ({type(exc).__name__}: {exc})") from None
    found = study.user_attrs.get("edgedistill_sweep")
    if found is None:
        study.set_user_attr("edgedistill_sweep", identity)
    elif found != identity:
        raise UserInputError(f"--study '{name}' in '{url}' holds a different sweep (recipe, grid, seeds, metric or smoke "
                             "differ); choose another --study (or --out)")
    return study, storage


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Heartbeat(threading.Thread):
    """Records a heartbeat for every trial this process is running, so other machines can tell it is alive."""

    def __init__(self, storage: Any) -> None:
        super().__init__(daemon=True, name="edgedistill-sweep-heartbeat")
        self.storage, self.ids, self.stop = storage, set(), threading.Event()

    def beat(self, trial_id: int) -> None:
        with contextlib.suppress(Exception):
            self.storage.record_heartbeat(trial_id)

    def run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            for tid in list(self.ids):
                self.beat(tid)


class Sweep:
    def __init__(self, spec: dict[str, Any], metric: str, sweep_dir: Path, study: Any, storage: Any, *, jobs: int,
                 smoke: bool, progress: bool, command: str, log: Callable[[str], None]) -> None:
        from optuna.distributions import CategoricalDistribution

        self.spec, self.metric, self.dir, self.study, self.storage = spec, metric, sweep_dir, study, storage
        self.jobs, self.smoke, self.progress, self.command, self.log = jobs, smoke, progress, command, log
        self.axes, self.values = spec["axes"], spec["values"]
        self.points = points_of(spec)
        self.ids = [point_id(p) for p in self.points]
        self.by_id = dict(zip(self.ids, self.points))
        self.codes = {k: [encode(v) for v in self.values[k]] for k in self.axes}
        self.dists = {k: CategoricalDistribution(self.codes[k]) for k in self.axes}
        self.session, self.host, self.pid = uuid.uuid4().hex[:8], socket.gethostname(), os.getpid()
        sets_threads = "engine.threads" in self.axes or (spec["base"].get("engine") or {}).get("threads")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = None if sets_threads or jobs == 1 else max(1, cores // jobs)
        self.heartbeat = _Heartbeat(storage)
        self.waiting_said = False

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
        now, s = time.time(), {"complete": {}, "running": {}, "failed": {}, "failed_here": set(), "tried": set(), "errors": {}}
        for t in self.study.get_trials(deepcopy=False):
            pid = self._point_of(t)
            if pid is None:
                continue
            state = t.state
            if state == TrialState.RUNNING:
                why = self._stale(t, now)
                if why is not None:
                    with contextlib.suppress(Exception):
                        self.storage.set_trial_user_attr(t._trial_id, "error", f"interrupted: {why}")
                        self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                    state = TrialState.FAIL
                    s["errors"][pid] = f"interrupted: {why}"
            if state != TrialState.WAITING:
                s["tried"].add(pid)
            if state == TrialState.COMPLETE and "result" in t.user_attrs:
                s["complete"].setdefault(pid, t)  # the first finished trial of a point is the one that counts
            elif state == TrialState.RUNNING:
                s["running"][pid] = t
            elif state == TrialState.FAIL:
                s["failed"][pid] = t
                if t.state != TrialState.RUNNING:  # (one just found stale has its reason already)
                    s["errors"][pid] = t.user_attrs.get("error") or "failed"
                if t.user_attrs.get("session") == self.session:
                    s["failed_here"].add(pid)
        return s

    # -- claiming a grid point -----------------------------------------------------------------------------
    def claim(self) -> Optional[tuple[Any, str]]:
        from optuna.trial import TrialState

        with _locked(self.dir / ".schedule.lock"):
            s = self.snapshot()
            cands = [i for i in self.ids if i not in s["complete"] and i not in s["running"] and i not in s["failed_here"]]
            if not cands:
                return None
            fresh = [i for i in cands if i not in s["tried"]]
            for attempt in range(3):
                if not fresh or attempt:  # GridSampler counts failed points as visited: queue a retry explicitly
                    target = self.by_id[cands[attempt % len(cands)]]
                    self.study.enqueue_trial({k: encode(target[k]) for k in self.axes}, user_attrs={"queued_by": self.session})
                trial = self.study.ask(self.dists)
                trial.set_user_attr("owner", {"host": self.host, "pid": self.pid, "session": self.session})
                trial.set_user_attr("session", self.session)
                self.heartbeat.beat(trial._trial_id)
                pid = self._point_of(trial)
                if pid in cands:
                    trial.set_user_attr("point", pid)
                    trial.set_user_attr("run_dir", str(self.dir / "trials" / pid))
                    self.heartbeat.ids.add(trial._trial_id)
                    return trial, pid
                why = "finished" if pid in s["complete"] else "running" if pid in s["running"] else "not in this grid"
                trial.set_user_attr("skipped", f"duplicate: grid point {pid} is {why}")
                self.study.tell(trial, state=TrialState.PRUNED)
            return None

    def job(self, pid: str) -> dict[str, Any]:
        point = self.by_id[pid]
        overrides = trial_overrides(self.spec, point, self.smoke)
        run_dir = self.dir / "trials" / pid
        cli = " ".join(f"{k}={label(v)}" if re.fullmatch(r"[\w.+-]+", label(v)) else f"'{k}={label(v)}'" for k, v in overrides.items())
        command = f"edgedistill run {self.spec.get('recipe', 'RECIPE')} {cli}{' --smoke' if self.smoke else ''} --out {run_dir}"
        recipe, smoke = self.spec["base"], self.smoke
        shared = _shared_smoke_recipe(self.spec, overrides, self.dir / "smoke-cache") if self.smoke else None
        if shared is not None:  # the smoke recipe itself, run as a plain run: trials share one teacher and baseline
            recipe, overrides, smoke = shared, {}, False
        return {"recipe": recipe, "overrides": overrides, "run_dir": str(run_dir), "lock": str(run_dir) + ".lock",
                "smoke": smoke, "threads": self.threads, "metric": self.metric, "command": command,
                "progress": self.progress and self.jobs == 1}

    def finish(self, trial: Any, pid: str, outcome: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        self.heartbeat.ids.discard(trial._trial_id)
        where = ", ".join(f"{k}={label(v)}" for k, v in self.by_id[pid].items())
        ok = "result" in outcome
        try:
            if ok:
                trial.set_user_attr("result", outcome["result"])
                self.study.tell(trial, outcome["result"]["method"]["mean"])
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
        import multiprocessing
        from concurrent.futures.process import BrokenProcessPool

        def new_pool() -> Optional[cf.ProcessPoolExecutor]:
            return cf.ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn")) if self.jobs > 1 else None

        pool, in_flight = new_pool(), {}
        self.heartbeat.start()
        try:
            while True:
                while len(in_flight) < self.jobs:
                    claimed = self.claim()
                    if claimed is None:
                        break
                    fut: cf.Future = cf.Future()
                    if pool is None:
                        in_flight[fut] = claimed
                        fut.set_result(run_trial(self.job(claimed[1])))
                    else:
                        fut = pool.submit(run_trial, self.job(claimed[1]))
                        in_flight[fut] = claimed
                if in_flight:
                    finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                    broken = False
                    for fut in finished:
                        trial, pid = in_flight.pop(fut)
                        try:
                            outcome = fut.result()
                        except BrokenProcessPool as exc:
                            outcome, broken = {"error": f"the worker process died ({exc})", "seconds": 0.0}, True
                        self.finish(trial, pid, outcome)
                        sweep_report.write_tables(self.dir, self.info(), self.rows())
                    if broken and pool is not None and not in_flight:  # a worker was killed: start a fresh pool
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = new_pool()
                    continue
                running = self.snapshot()["running"]
                if not running:
                    break
                if not self.waiting_said:
                    self.log(f"waiting for {len(running)} grid point(s) that other sweep processes are running")
                    self.waiting_said = True
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            from optuna.trial import TrialState

            for trial, _ in in_flight.values():
                with contextlib.suppress(Exception):
                    trial.set_user_attr("error", "interrupted (Ctrl-C)")
                    self.study.tell(trial, state=TrialState.FAIL)
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None
            raise
        finally:
            self.heartbeat.stop.set()
            if pool is not None:
                pool.shutdown(wait=True)

    # -- the table -----------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        seeds = self.spec["seeds"] if self.spec["seeds"] is not None else self.spec["base"].get("seeds", [0])
        return {"name": self.spec["name"], "axes": self.axes, "metric": self.metric, "seeds": seeds[:1] if self.smoke else seeds,
                "smoke": self.smoke, "command": self.command}

    def rows(self) -> list[dict[str, Any]]:
        s, rows = self.snapshot(), []
        for pid in self.ids:
            row: dict[str, Any] = {"point": self.by_id[pid], "id": pid, "state": "not run", "trial": None, "run_dir": None,
                                   "method": None, "alone": None, "diff": None, "wins": None, "n": None, "teacher": None, "error": None}
            if pid in s["complete"]:
                t = s["complete"][pid]
                r = t.user_attrs["result"]
                row.update(state="complete", trial=t.number, run_dir=r["run_dir"], method=r["method"], alone=r["alone"],
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


def sweep(
    recipe: str | Path,
    overrides: Optional[list[str]] = None,
    *,
    out: Optional[str | Path] = None,
    smoke: bool = False,
    jobs: int = 1,
    storage: Optional[str] = None,
    study: Optional[str] = None,
    progress: bool = False,
    command: Optional[str] = None,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> dict[str, Any]:
    """Run (or resume) the grid in ``recipe``'s ``sweep:`` section; write results.csv, results.md, heatmap.png."""
    if jobs < 1:
        raise UserInputError(f"--jobs: expected at least 1 (got {jobs})")
    with warnings.catch_warnings():
        # Heartbeats are used with ask-and-tell here (Optuna says they are meant for optimize) and are "experimental".
        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
        with contextlib.suppress(ImportError):
            from optuna.exceptions import ExperimentalWarning

            warnings.filterwarnings("ignore", category=ExperimentalWarning)
        return _sweep(recipe, overrides, out=out, smoke=smoke, jobs=jobs, storage=storage, study=study, progress=progress,
                      command=command, log=log)


def _sweep(recipe: str | Path, overrides: Optional[list[str]], *, out: Optional[str | Path], smoke: bool, jobs: int,
           storage: Optional[str], study: Optional[str], progress: bool, command: Optional[str],
           log: Callable[[str], None]) -> dict[str, Any]:
    spec = read_sweep(Path(recipe), overrides)
    spec["recipe"] = str(recipe)
    points = points_of(spec)
    task, metric = validate(spec, points, smoke)
    identity_doc = {"recipe": spec["base"], "grid": spec["values"], "seeds": spec["seeds"], "metric": metric, "smoke": smoke}
    identity = hashlib.sha256(_canon(identity_doc).encode()).hexdigest()[:16]
    command = command or f"edgedistill sweep {recipe}" + (" --smoke" if smoke else "")
    name = spec["name"]
    if out is not None:
        sweep_dir = Path(out)
    elif smoke:
        sweep_dir = Path(tempfile.gettempdir()) / f"edgedistill-sweep-{name}-{uuid.uuid4().hex[:8]}"
    else:
        sweep_dir = Path("sweeps") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    meta_path = sweep_dir / "sweep.json"
    if meta_path.is_file():
        previous = read_json(meta_path)
        if previous.get("identity") != identity:
            old = previous.get("spec", {})
            differs = [k for k in identity_doc if _canon(old.get(k)) != _canon(identity_doc[k])] or ["its definition"]
            raise UserInputError(f"--out '{sweep_dir}' holds a different sweep ({', '.join(differs)} differ); choose another "
                                 "--out, or delete it to start over")
    elif sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise UserInputError(f"--out '{sweep_dir}' exists and is not an edgedistill sweep directory")
    study_name = study or name
    direction = "maximize" if metric in MAXIMIZE else "minimize"
    space = {k: [encode(v) for v in spec["values"][k]] for k in spec["axes"]}
    opened = open_study(storage, study_name, direction, space, identity) if storage else None  # before anything is written
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    if not meta_path.is_file():
        write_json(meta_path, {"identity": identity, "spec": identity_doc, "name": name, "study": study_name,
                               "storage": storage or "study.db", "task": task, "command": command})
    st, store = opened or open_study(url, study_name, direction, space, identity)
    runner = Sweep(spec, metric, sweep_dir, st, store, jobs=jobs, smoke=smoke, progress=progress, command=command, log=log)
    seeds = runner.info()["seeds"]
    already = len(runner.snapshot()["complete"])
    log(f"Sweep directory: {sweep_dir} (study '{study_name}' in {storage or sweep_dir / 'study.db'})")
    log(f"{len(points)} grid points x {len(seeds)} seed(s) {seeds}, ranked by test {metric}; {jobs} job(s)"
        + (f"; {already} point(s) already finished" if already else ""))
    try:
        runner.execute()
    except KeyboardInterrupt:
        again = command if "--out" in command else f"{command} --out {sweep_dir}"
        print(f"Interrupted. Finished trials are kept; resume with: {again}", file=sys.stderr)
        raise
    rows = runner.rows()
    info = runner.info()
    sweep_report.write_tables(sweep_dir, info, rows)
    sweep_report.heatmap(sweep_dir / "heatmap.png", info, rows, spec["values"])
    best = sweep_report.best_row(rows, metric)
    return {
        "name": name, "task": task, "metric": metric, "direction": direction, "axes": spec["axes"], "seeds": seeds,
        "rows": rows, "best": best, "sweep_dir": str(sweep_dir), "study": study_name, "storage": url,
        "complete": sum(r["state"] == "complete" for r in rows), "failed": sum(r["state"] == "failed" for r in rows),
        "total": len(rows),
        "files": {k: str(sweep_dir / f) for k, f in (("csv", "results.csv"), ("markdown", "results.md"), ("heatmap", "heatmap.png"))},
    }
