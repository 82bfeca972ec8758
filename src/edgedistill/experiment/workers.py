"""The worker processes of ``--jobs N`` (a sweep's trials, a tune's trials, a cross-validation's folds, a run's seeds).

Workers are spawned processes that run one job at a time, each with its own pipe: a worker that dies (killed, out of
memory) fails only the job it was running, and a fresh worker takes its place; its siblings' jobs go on. Workers die
with the process that started them: on Linux the kernel sends them SIGKILL when it exits (``PR_SET_PDEATHSIG``),
elsewhere a watchdog thread sees their parent change, so a killed sweep or run leaves no orphaned trainer behind.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Hashable, Optional

from edgedistill.errors import EdgeDistillError, EnvironmentProblem, TrainingDiverged, UserInputError


def guarded(job: dict[str, Any], work: Callable[[], Any]) -> dict[str, Any]:
    """A worker's job: ``work()`` with ``job["threads"]`` torch threads, as ``{"result", "seconds"}``, or any error as
    ``{"error", "seconds"}`` text (a traceback's tail for a bug): one failing job must not stop the others."""
    start = time.time()
    try:
        if job.get("threads"):
            import torch

            torch.set_num_threads(job["threads"])
        return {"result": work(), "seconds": time.time() - start}
    except EdgeDistillError as exc:  # (its exit code travels with it: a full disk in a worker is still exit 4)
        return {"error": f"{type(exc).__name__}: {exc}", "exit_code": exc.exit_code, "seconds": time.time() - start}
    except Exception as exc:  # noqa: BLE001 - reported as the job's outcome
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-1500:]
        return {"error": f"{type(exc).__name__}: {exc}\n{tb}", "seconds": time.time() - start}


#: An error class by its exit code (errors.py), for jobs that failed in workers with that code.
_BY_CODE = {cls.exit_code: cls for cls in (UserInputError, TrainingDiverged, EnvironmentProblem)}


def failure(codes: set[int]) -> type[EdgeDistillError]:
    """The error to raise for jobs that failed in workers with these exit codes: their own class when they agree (a
    full disk in a worker is exit 4, as in one process), the base class (exit 1) otherwise."""
    return _BY_CODE.get(next(iter(codes)), EdgeDistillError) if len(codes) == 1 else EdgeDistillError


def worker_threads(fixed: bool, jobs: int) -> Optional[int]:
    """Torch threads for each of ``jobs`` worker processes: the cores shared out (one thread per process beats two
    fighting over a core), or None (leave torch's choice or the recipe's engine.threads) with one job or ``fixed``."""
    from edgedistill.machine import available_cores

    return None if fixed or jobs == 1 else max(1, available_cores() // jobs)


# -- worker processes (--jobs N) ---------------------------------------------------------------------------
#: Test-only (tests/reliability/test_sweep_faults.py); never set it otherwise. A worker whose trial's run directory
#: name contains this text kills itself with SIGKILL when it receives that trial: a worker dying at a known point.
TEST_KILL_TRIAL = "EDGEDISTILL_TEST_KILL_TRIAL"
_PR_SET_PDEATHSIG = 1
#: The job key that asks a worker to forward the job's progress (set by a ``Workers`` with ``on_progress``).
_RELAYED = "_relay_progress"


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


#: While a worker (a process, or this process's own slot) runs a job whose starter shows its progress: ``.channel``,
#: the pipe to that process (``forwarded()``). Per thread: a local slot's job is not the dispatching thread's.
_job = threading.local()


def forwarded() -> Any:
    """The display for the job this worker runs, when the process that started it shows the job's progress
    (``Workers(on_progress=...)``): a ``ForwardedProgress`` whose calls go there. None otherwise (not in a worker, or a
    starter that does not show it): the caller prints its own lines."""
    from edgedistill.progress import ForwardedProgress

    channel = getattr(_job, "channel", None)
    return None if channel is None else ForwardedProgress(lambda event: channel.send(("progress", event)))


def _serve(conn: Any, target: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The jobs ``conn`` brings, one at a time, each answered with ``target(job)``, until None or a closed pipe."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        kill = os.environ.get(TEST_KILL_TRIAL)
        if kill and kill in Path(job["run_dir"]).name and threading.current_thread() is threading.main_thread():
            os.kill(os.getpid(), signal.SIGKILL)
        _job.channel = conn if job.get(_RELAYED) else None
        try:
            outcome = target(job)
        finally:
            _job.channel = None
        try:
            conn.send(outcome)
        except OSError:  # (the starter closed the pipe: it stopped waiting for this job)
            return


class _LocalSlot:
    """The starting process's own slot (``Workers(local=True)``): a daemon thread serving jobs like a worker process,
    so the process that would otherwise wait for its workers trains too, with nothing to start. It looks like a worker
    process to ``Workers``; it cannot be killed, but a job that reports progress stops at its next report once its
    pipe is closed (the report fails), and the thread ends with the process."""

    sentinel = None  # (no process to end: a failed job is an outcome, a closed pipe an EOF)
    exitcode = None

    def __init__(self, conn: Any, target: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        def serve() -> None:
            try:
                _serve(conn, target)
            finally:
                conn.close()

        self.thread = threading.Thread(target=serve, daemon=True, name="edgedistill-local-slot")
        self.thread.start()

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> None:
        self.thread.join(timeout)

    def kill(self) -> None:
        pass  # (close() closes its pipe: the job stops at its next progress report)


def worker_main(conn: Any, parent: int, target: Callable[[dict[str, Any]], dict[str, Any]],
                preload: tuple[str, ...] = ()) -> None:
    """A worker's life: import ``preload`` (what its jobs will need, while it waits for the first), then run the jobs
    the parent sends (``target(job)``: a sweep's trials, a cross-validation's folds), one at a time, until it sends
    None or goes away."""
    _die_with_parent(parent)
    try:
        for module in preload:
            importlib.import_module(module)
        _serve(conn, target)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the sweep process reports it
        return


def _death(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


_MAIN_GUARD = re.compile(r"""__name__\s*==\s*['"]__main__['"]|['"]__main__['"]\s*==\s*__name__""")


def check_main_guarded(jobs: int) -> None:
    """Spawned workers import the main script again (Python's rule for spawned processes), running whatever it does at
    import. A script that calls ``edgedistill.run(..., jobs=2)`` outside ``if __name__ == "__main__":`` would start the
    whole call again in every worker (which then stops on the run directory being in use, or on Python's bootstrapping
    error): refused before any worker starts. (A script whose guard is there but leaves the call outside it is caught
    in the worker instead: ``check_not_spawning``.)"""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return  # an interactive session or a notebook: nothing is imported again
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return
    if not _MAIN_GUARD.search(text):
        raise UserInputError(
            f"jobs: {jobs} starts worker processes, and each imports your script '{path}' again (Python's spawn), "
            "which would run its edgedistill call again; put the call under `if __name__ == \"__main__\":`, or use jobs=1")


def check_not_spawning() -> None:
    """Refuse an ``edgedistill`` call made while a spawned worker imports the main script again (see
    ``check_main_guarded``), with the fix, instead of a second run colliding with the first."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):  # (CPython's own test in spawn.py)
        raise UserInputError("an edgedistill call ran while a worker process was importing your script again (workers "
                             "are spawned, and import the main script); put the call under "
                             "`if __name__ == \"__main__\":`")


class Workers:
    """Up to ``jobs`` spawned worker processes, one job each at a time, each on its own pipe; ``target`` (a module-level
    function, so a spawned process can import it) runs a job and returns its outcome, never raising. With ``local``,
    one of the ``jobs`` is a thread of this process (``_LocalSlot``) instead: for jobs that are safe to run beside the
    dispatching thread (a run's stages; not whole runs, whose process-wide settings a thread would share)."""

    def __init__(self, jobs: int, target: Callable[[dict[str, Any]], dict[str, Any]],
                 on_progress: Optional[Callable[[Hashable, Any], None]] = None, preload: tuple[str, ...] = (),
                 local: bool = False, unit: str = "job") -> None:
        import multiprocessing

        self.ctx, self.jobs, self.target, self.preload = multiprocessing.get_context("spawn"), jobs, target, preload
        self.local = local  # one of the ``jobs`` slots is this process (a thread): one process fewer to start
        self.unit = unit  # what a job is, in a dead worker's message: "trial", "fold", "stage", "teacher"
        self.slot: Optional[_LocalSlot] = None
        self.on_progress = on_progress  # (key, event): what a job's ``forwarded()`` display sends while it runs
        self.failed_codes: set[int] = set()  # exit codes of the jobs that failed (1 for a bug or a dead worker)
        self.idle: list[tuple[Any, Any]] = []  # (process, connection)
        self.busy: dict[Any, tuple[Any, Hashable, float]] = {}  # connection -> (process, key, start time)
        self.leaving: list[tuple[Any, Any]] = []  # (process, connection): told to end, not yet waited for
        self.spawned = False  # whether a worker process was started (the first start checks the main script)

    def _start(self) -> tuple[Any, Any]:
        conn, child = self.ctx.Pipe()
        if self.local and (self.slot is None or not self.slot.is_alive()):
            self.slot = _LocalSlot(child, self.target)
            return self.slot, conn
        if not self.spawned:
            check_main_guarded(self.jobs)
            self.spawned = True
        # Not daemonic: a trial may start processes of its own (persistence images); close() ends workers.
        proc = self.ctx.Process(target=worker_main, args=(child, os.getpid(), self.target, self.preload),
                                name="edgedistill-worker")
        proc.start()
        child.close()
        return proc, conn

    def prestart(self, count: int) -> "Workers":
        """Start ``count`` workers now (at most ``jobs``), idle until the first jobs come: their start (the interpreter,
        torch, ``preload``) overlaps what the caller does meanwhile instead of delaying the jobs."""
        while len(self.idle) + len(self.busy) < min(count, self.jobs):
            self.idle.append(self._start())
        return self

    def submit(self, key: Hashable, job: dict[str, Any]) -> None:
        if self.on_progress is not None:
            job = {**job, _RELAYED: True}  # the worker's forwarded() sends the job's progress here
        self.idle.sort(key=lambda pc: isinstance(pc[0], _LocalSlot))  # the local slot first: it has nothing to start
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

        ready = set(wait([*self.busy, *(p.sentinel for p, _, _ in self.busy.values() if p.sentinel is not None)]))
        done = []
        for conn, (proc, key, start) in list(self.busy.items()):
            if conn not in ready and proc.sentinel not in ready:
                continue
            outcome = self._read(conn, key)
            if outcome is None and proc.sentinel not in ready and not conn.closed:
                continue  # only progress so far: the job goes on
            del self.busy[conn]
            if isinstance(outcome, dict):
                self.idle.append((proc, conn))
            else:  # the pipe closed, or the process ended, without an outcome
                proc.join(timeout=10)
                conn.close()
                outcome = {"error": f"the worker process running this {self.unit} died ({_death(proc.exitcode)}); the "
                                    f"other {self.unit}s go on", "seconds": time.time() - start}
            done.append((key, outcome))
        return done

    def _read(self, conn: Any, key: Hashable) -> Optional[dict[str, Any]]:
        """What the job's worker sent: its progress events passed on, then its outcome (a dict); None when it has sent
        nothing more yet, or its pipe is closed (``wait`` tells the two apart by ``conn.closed``)."""
        try:
            while conn.poll():
                message = conn.recv()
                if isinstance(message, dict):
                    return message
                if self.on_progress is not None:
                    self.on_progress(key, message[1])
        except (EOFError, OSError):
            conn.close()
        return None

    def run_all(self, jobs: list[tuple[Hashable, dict[str, Any]]],
                on_done: Optional[Callable[[Hashable, dict[str, Any]], None]] = None,
                reap_later: bool = False, keep: bool = False) -> tuple[dict, dict]:
        """Every (key, job), at most ``self.jobs`` at a time, then the workers closed (killed on Ctrl-C): ({key: result},
        {key: error text}). ``on_done(key, outcome)`` hears of each job as it ends. ``reap_later``: the workers are told
        to end but not waited for (their exit overlaps the caller's next work); a later ``close()`` waits. ``keep``: left
        running for the caller's next jobs once all of these have ended (closed as usual if any is still running)."""
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
                        self.failed_codes.add(outcome.get("exit_code", 1))
                    else:
                        done[key] = outcome["result"]
        except KeyboardInterrupt:
            self.close(kill=True)
            raise
        finally:
            if not keep or self.busy:
                self.close(kill=bool(self.busy), wait=not reap_later)
        return done, failed

    def close(self, kill: bool = False, wait: bool = True) -> None:
        """End the workers: idle ones are told to end; busy ones (and all, with ``kill``) are killed. ``wait=False``
        (idle workers only): return at once; the next ``close()`` waits for them."""
        for proc, conn in self.idle:
            with contextlib.suppress(Exception):
                conn.send(None)
        if not wait and not kill and not self.busy:
            self.leaving += self.idle
            self.idle = []
            return
        procs = [*self.leaving, *self.idle, *((p, c) for c, (p, _, _) in self.busy.items())]
        for proc, conn in procs:
            if kill:
                proc.kill()
                if isinstance(proc, _LocalSlot):  # its job's next progress report fails: the thread ends there
                    conn.close()
            proc.join(timeout=5 if not kill else 2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        for conn in [c for _, c in self.leaving + self.idle] + list(self.busy):
            with contextlib.suppress(Exception):
                conn.close()
        self.idle, self.busy, self.leaving = [], {}, []
