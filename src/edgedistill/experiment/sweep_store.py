"""One sweep trial (inline or in a worker process) and the Optuna study that stores trials: file locks, the grid
sampler, opening or joining a study, and the heartbeat that tells other machines a trial is alive."""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from edgedistill.errors import EdgeDistillError, UserInputError
from edgedistill.experiment.sweep_report import MAXIMIZE

HEARTBEAT_S, GRACE_S, POLL_S = 20, 120, 10.0


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
        # The grid point is chosen on validation (the protocol); test is what the tables report.
        "val": method["val_metrics"][metric] if metric in method.get("val_metrics", {}) else None,
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
                          command=job["command"], deploy_profile=job.get("deploy_profile"))
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
