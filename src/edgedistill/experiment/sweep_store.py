"""One sweep trial (inline or in a worker process), the worker processes of ``--jobs N``, and the Optuna study that
stores trials: file locks, the grid sampler, opening or joining a study, and the heartbeat that tells other
machines a trial is alive.

Workers are spawned processes that run one trial at a time, each with its own pipe: a worker that dies (killed,
out of memory) fails only the trial it was running, and a fresh worker takes its place; its siblings' trials
go on. Workers die with the sweep process: on Linux the kernel sends them SIGKILL when it exits
(``PR_SET_PDEATHSIG``), elsewhere a watchdog thread sees their parent change, so a killed sweep leaves no
orphaned trainer behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Optional

from edgedistill.errors import EdgeDistillError, UserInputError
from edgedistill.experiment.rundir import redact
from edgedistill.experiment.sweep_report import MAXIMIZE
from edgedistill.io import environment_error, make_dirs

HEARTBEAT_S, GRACE_S, POLL_S = 20, 120, 10.0


# -- one trial (inline, or in a worker process) --------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    make_dirs(path.parent)
    try:
        fh = open(path, "a")
    except OSError as exc:  # a read-only or full sweep folder: exit 4 naming the file, not a traceback
        raise environment_error(exc, path, "create the lock file") from None
    with fh:
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
        # The grid point is chosen on validation (the protocol); test is what the tables report.
        "val": method["val_metrics"][metric] if metric in method.get("val_metrics", {}) else None,
        "teacher": teacher["metrics"][metric]["mean"] if teacher and metric in teacher["metrics"] else None,
        "per_seed": per_m, "alone_per_seed": per_a, "diff": sum(diffs) / len(diffs) if diffs else None,
        "wins": sum(sign * d > 0 for d in diffs) if diffs else None, "n": len(diffs) if diffs else None,
        "seeds": summary["seeds"], "select": summary["select"], "deliverable": summary["deliverable"], "run_dir": summary["run_dir"],
    }


def run_trial(job: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point (a whole ``edgedistill.run`` over the seeds); errors come back as text, never raised."""
    def work() -> dict[str, Any]:
        from edgedistill.experiment.runner import run

        with _locked(Path(job["lock"])):  # a duplicate of this point waits here, then reads the finished run back
            summary = run(job["recipe"], job["overrides"], out=job["run_dir"], smoke=job["smoke"], progress=job["progress"],
                          command=job["command"], deploy_profile=job.get("deploy_profile"), prefix=job.get("prefix", ""))
        return _extract(summary, job["metric"])

    return guarded(job, work)


def guarded(job: dict[str, Any], work: Callable[[], Any]) -> dict[str, Any]:
    """A worker's job: ``work()`` with ``job["threads"]`` torch threads, as ``{"result", "seconds"}``, or any error as
    ``{"error", "seconds"}`` text (a traceback's tail for a bug): one failing job must not stop the others."""
    start = time.time()
    try:
        if job.get("threads"):
            import torch

            torch.set_num_threads(job["threads"])
        return {"result": work(), "seconds": time.time() - start}
    except EdgeDistillError as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.time() - start}
    except Exception as exc:  # noqa: BLE001 - reported as the job's outcome
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-1500:]
        return {"error": f"{type(exc).__name__}: {exc}\n{tb}", "seconds": time.time() - start}


def worker_threads(fixed: bool, jobs: int) -> Optional[int]:
    """Torch threads for each of ``jobs`` worker processes: the cores shared out (one thread per process beats two
    fighting over a core), or None (leave torch's choice or the recipe's engine.threads) with one job or ``fixed``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return None if fixed or jobs == 1 else max(1, cores // jobs)


# -- worker processes (--jobs N) ---------------------------------------------------------------------------
#: Test-only (tests/reliability/test_sweep_faults.py); never set it otherwise. A worker whose trial's run directory
#: name contains this text kills itself with SIGKILL when it receives that trial: a worker dying at a known point.
TEST_KILL_TRIAL = "EDGEDISTILL_TEST_KILL_TRIAL"
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` does: the kernel's parent-death signal on Linux, and a watchdog thread
    (any system) that sees the parent change, in case the signal is unavailable."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # orphaned: nobody will read this trial's result

    threading.Thread(target=watch, daemon=True, name="edgedistill-sweep-watchdog").start()


def worker_main(conn: Any, parent: int, target: Callable[[dict[str, Any]], dict[str, Any]] = run_trial) -> None:
    """A worker's life: run the jobs the parent sends (``target(job)``: a sweep's trials, a cross-validation's folds),
    one at a time, until it sends None or goes away."""
    _die_with_parent(parent)
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            kill = os.environ.get(TEST_KILL_TRIAL)
            if kill and kill in Path(job["run_dir"]).name:
                os.kill(os.getpid(), signal.SIGKILL)
            conn.send(target(job))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the sweep process reports it
        return


def _death(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


class Workers:
    """Up to ``jobs`` spawned worker processes, one job each at a time, each on its own pipe; ``target`` (a module-level
    function, so a spawned process can import it) runs a job and returns its outcome, never raising."""

    def __init__(self, jobs: int, target: Callable[[dict[str, Any]], dict[str, Any]] = run_trial) -> None:
        import multiprocessing

        self.ctx, self.jobs, self.target = multiprocessing.get_context("spawn"), jobs, target
        self.idle: list[tuple[Any, Any]] = []  # (process, connection)
        self.busy: dict[Any, tuple[Any, Hashable, float]] = {}  # connection -> (process, key, start time)

    def _start(self) -> tuple[Any, Any]:
        conn, child = self.ctx.Pipe()
        # Not daemonic: a trial may start processes of its own (persistence images); close() ends workers.
        proc = self.ctx.Process(target=worker_main, args=(child, os.getpid(), self.target), name="edgedistill-worker")
        proc.start()
        child.close()
        return proc, conn

    def submit(self, key: Hashable, job: dict[str, Any]) -> None:
        while self.idle:  # an idle worker may have died after its last result (killed, out of memory)
            proc, conn = self.idle.pop()
            try:
                if proc.is_alive():
                    conn.send(job)
                    break
            except OSError:
                pass
            conn.close()
        else:
            proc, conn = self._start()
            conn.send(job)
        self.busy[conn] = (proc, key, time.time())

    def wait(self) -> list[tuple[Hashable, dict[str, Any]]]:
        """Block until some trial ends; (key, outcome) of each that ended, a dead worker's as an error."""
        from multiprocessing.connection import wait

        ready = set(wait([*self.busy, *(proc.sentinel for proc, _, _ in self.busy.values())]))
        done = []
        for conn, (proc, key, start) in list(self.busy.items()):
            if conn not in ready and proc.sentinel not in ready:
                continue
            del self.busy[conn]
            try:
                if not conn.poll():
                    raise EOFError
                outcome = conn.recv()
                self.idle.append((proc, conn))
            except (EOFError, OSError):
                proc.join(timeout=10)
                conn.close()
                outcome = {"error": f"the worker process running this trial died ({_death(proc.exitcode)}); the other "
                                    "trials go on", "seconds": time.time() - start}
            done.append((key, outcome))
        return done

    def close(self, kill: bool = False) -> None:
        procs = [p for p, _ in self.idle] + [p for p, _, _ in self.busy.values()]
        for proc, conn in self.idle:
            with contextlib.suppress(Exception):
                conn.send(None)
        for proc in procs:
            if kill:
                proc.kill()
            proc.join(timeout=5 if not kill else 2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        for conn in [c for _, c in self.idle] + list(self.busy):
            with contextlib.suppress(Exception):
                conn.close()
        self.idle, self.busy = [], {}


# -- the study -----------------------------------------------------------------------------------------------
def _grid_sampler(space: dict[str, list[Any]]) -> Any:
    import optuna

    class _Grid(optuna.samplers.GridSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            pass  # the sweep decides when it is done (ask-and-tell: GridSampler's study.stop() would raise)

    return _Grid(space, seed=0)


def _retry_once() -> Any:
    """Optuna's callback for a trial whose heartbeat stopped (or whose process died here): queue it once more
    (``max_retry=1``: a point that kills its worker twice is left failed, not retried for ever). The dead owner's
    attributes are not carried over: the retry belongs to whoever pops it."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    class _RetryOnce(RetryHeartbeatStaleTrialCallback):
        def __call__(self, study: Any, trial: Any) -> None:
            trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in ("point", "queued_by")}
            super().__call__(study, trial)

    return _RetryOnce(max_retry=1)


def open_study(url: str, name: str, direction: str, space: dict[str, list[Any]], identity: str,
               retry_stale: bool = False) -> tuple[Any, Any]:
    """The study ``name`` in the Optuna storage ``url`` (created or joined). ``retry_stale``: a trial found stale is
    queued once more (``_retry_once``); the sweep uses it, the tuner samples afresh instead."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if url.startswith("postgres"):  # an unreachable server is an error within seconds, not a hang on the TCP timeout
        kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        for attempt in range(4):
            try:
                storage = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, engine_kwargs=kwargs,
                                                     heartbeat_stale_trial_callback=_retry_once() if retry_stale else None)
                study = optuna.create_study(study_name=name, storage=storage, sampler=_grid_sampler(space),
                                            direction=direction, load_if_exists=True)
                break
            except Exception as exc:  # noqa: BLE001 - sorted below
                # Machines started together on an empty database race to create Optuna's tables: the losers get
                # "already exists" from the server; the tables are there now, so open again.
                import sqlalchemy.exc

                if attempt == 3 or not isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)):
                    raise
                time.sleep(0.5 + attempt)
    except Exception as exc:  # noqa: BLE001 - a bad URL, an unreachable server, a missing driver
        why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]  # drivers' messages span lines: keep one line
        hint = ""
        if isinstance(exc, ImportError) and url.startswith("postgres"):  # SQLAlchemy >= 2.1 reads postgresql:// with psycopg 3
            hint = "; install a driver: pip install 'edgedistill[postgres]' (psycopg 3; with psycopg2 write postgresql+psycopg2://)"
        text = f"--storage '{url}': cannot open it as an Optuna storage ({why}){hint}"
        secret = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:([^\s/]*)@", url)
        if secret and secret.group(1):  # the driver's message may quote the password in its own way
            text = text.replace(secret.group(1), "***")
        raise UserInputError(redact(text)) from None
    found = study.user_attrs.get("edgedistill_sweep")
    if found is None:
        study.set_user_attr("edgedistill_sweep", identity)
    elif found != identity:
        raise UserInputError(f"--study '{name}' in '{redact(url)}' holds a different sweep (recipe, grid, seeds, metric or smoke "
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


@contextlib.contextmanager
def trials_running(study: Any, heartbeat: "_Heartbeat", workers: Optional["Workers"], in_flight: dict) -> Iterator[None]:
    """A sweep's or a tune's trial loop (``in_flight``: key -> (trial, what)): the heartbeat runs; on Ctrl-C the trials
    in flight are failed as "interrupted (Ctrl-C)" and the workers killed; at the end the heartbeat stops and the
    workers are closed (killed if any is still busy)."""
    heartbeat.start()
    try:
        yield
    except KeyboardInterrupt:
        from optuna.trial import TrialState

        for trial, _ in in_flight.values():
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", "interrupted (Ctrl-C)")
                study.tell(trial, state=TrialState.FAIL)
        if workers is not None:
            workers.close(kill=True)
        raise
    finally:
        heartbeat.stop.set()
        if workers is not None:
            workers.close(kill=bool(workers.busy))


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


# -- grid points as queued trials (several processes or machines, one study) -----------------------------------
# GridSampler may hand one point to two workers asking at once (Optuna's docs say so for distributed runs), so the
# sweep does not ask it: every grid point is queued as a WAITING trial, and a worker takes one by moving it to
# RUNNING, which the storage does under a row lock (``set_trial_state_values`` answers False to the loser).
#: A system attribute: the number of the failed trial a resumed sweep queued this one to re-run.
RETRY_OF = "edgedistill_retry_of"


def retry_of(trial: Any) -> Optional[int]:
    """The number of the trial ``trial`` re-runs (None: a first run): Optuna's retry history for a stale trial's
    retry, else the mark ``queue_point`` leaves. With the grid point, the key that tells duplicates apart."""
    history = trial.system_attrs.get("retry_history")
    return history[-1] if history else trial.system_attrs.get(RETRY_OF)


def queue_point(study: Any, params: dict[str, Any], distributions: dict[str, Any], point: str,
                retry: Optional[int] = None) -> None:
    """Queue one grid point as a WAITING trial (``retry``: the failed trial it re-runs)."""
    import optuna

    system: dict[str, Any] = {"fixed_params": params}  # (GridSampler.before_trial leaves such a trial alone)
    if retry is not None:
        system[RETRY_OF] = retry
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, params=params,
                                              distributions=distributions, user_attrs={"point": point}, system_attrs=system))


def take(storage: Any, trial_id: int) -> bool:
    """Move a WAITING trial to RUNNING; False when another process took (or finished) it first."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        return bool(storage.set_trial_state_values(trial_id, TrialState.RUNNING))
    except UpdateFinishedTrialError:
        return False


def fail_dead(study: Any, storage: Any, trial_id: int, why: str) -> bool:
    """Mark a RUNNING trial whose process is known dead (this host, pid gone) FAIL, as ``fail_stale_trials`` does
    for a stopped heartbeat, and run the same retry callback; False when another process marked it first."""
    import copy

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        storage.set_trial_user_attr(trial_id, "error", f"interrupted: {why}")
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return True
