"""One sweep trial (inline or in a worker process, experiment/workers.py) and the Optuna study that stores trials:
file locks, the grid sampler, opening or joining a study, the heartbeat that tells other machines a trial is alive,
and grid points as queued trials."""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from edgedistill.errors import UserInputError
from edgedistill.experiment.rundir import redact
from edgedistill.experiment.workers import Workers, guarded
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
                          command=job["command"], deploy_profile=job.get("deploy_profile"), prefix=job.get("prefix", ""),
                          jobs=job.get("jobs", 1))
        return _extract(summary, job["metric"])

    return guarded(job, work)


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
                # Processes started together on an empty database race to create Optuna's tables: the losers get
                # "already exists" from the server (an OperationalError from SQLite, whose file may also be "locked"
                # while the winner writes); the tables are there now, so open again.
                import sqlalchemy.exc

                lost = isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) or (
                    isinstance(exc, sqlalchemy.exc.OperationalError) and ("already exists" in str(exc) or "locked" in str(exc)))
                if attempt == 3 or not lost:
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
def quiet_optuna() -> Iterator[None]:
    """Optuna's warnings about how a sweep or a tune uses it, silenced: heartbeats with ask-and-tell (Optuna says they
    are meant for optimize) and "experimental" features."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
        with contextlib.suppress(ImportError):
            from optuna.exceptions import ExperimentalWarning

            warnings.filterwarnings("ignore", category=ExperimentalWarning)
        yield


@contextlib.contextmanager
def trials_running(study: Any, heartbeat: "_Heartbeat", workers: Optional["Workers"], in_flight: dict) -> Iterator[None]:
    """A sweep's or a tune's trial loop (``in_flight``: key -> (trial, what)): the heartbeat runs; on Ctrl-C the trials
    in flight are failed as "interrupted (Ctrl-C or SIGTERM)" and the workers killed; at the end the heartbeat stops and the
    workers are closed (killed if any is still busy)."""
    heartbeat.start()
    try:
        yield
    except KeyboardInterrupt:
        from optuna.trial import TrialState

        for trial, _ in in_flight.values():
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM)")
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
