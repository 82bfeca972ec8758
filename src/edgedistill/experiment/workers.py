"""The worker processes of ``--jobs N`` (a sweep's trials, a tune's trials, a cross-validation's folds, a run's seeds).

Workers are spawned processes that run one job at a time, each with its own pipe: a worker that dies (killed, out of
memory) fails only the job it was running, and a fresh worker takes its place; its siblings' jobs go on. Workers die
with the process that started them: on Linux the kernel sends them SIGKILL when it exits (``PR_SET_PDEATHSIG``),
elsewhere a watchdog thread sees their parent change, so a killed sweep or run leaves no orphaned trainer behind.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Hashable, Optional

from edgedistill.errors import EdgeDistillError


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


def worker_main(conn: Any, parent: int, target: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
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

    def __init__(self, jobs: int, target: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
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

    def run_all(self, jobs: list[tuple[Hashable, dict[str, Any]]],
                on_done: Optional[Callable[[Hashable, dict[str, Any]], None]] = None) -> tuple[dict, dict]:
        """Every (key, job), at most ``self.jobs`` at a time, then the workers closed (killed on Ctrl-C): ({key: result},
        {key: error text}). ``on_done(key, outcome)`` hears of each job as it ends."""
        pending, done, failed = list(jobs), {}, {}
        try:
            while pending or self.busy:
                while pending and len(self.busy) < self.jobs:
                    self.submit(*pending.pop(0))
                for key, outcome in self.wait():
                    if on_done is not None:
                        on_done(key, outcome)
                    if "error" in outcome:
                        failed[key] = outcome["error"]
                    else:
                        done[key] = outcome["result"]
        except KeyboardInterrupt:
            self.close(kill=True)
            raise
        finally:
            self.close(kill=bool(self.busy))
        return done, failed

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
