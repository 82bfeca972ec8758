"""``make demo`` (``edgedistill run``: recipes/quickstart.yaml) with ``--jobs 1`` against the default (``--jobs auto``),
the teacher cached, then as a second run (the students alone cached too), then as a first run (an empty cache).

The teacher is trained once into a warm-up cache (a one-seed run without the student alone); each arm then starts from
a copy of that cache, so both train the same stages (every seed's student alone and distilled student) and neither
reads the other's results. The second-run rounds start from the cache the first --jobs 1 run left (teacher and
students alone): only the distilled students train, as when a user runs ``make demo`` again. Each arm is a fresh ``edgedistill run`` process timed end to end (imports, data, stages,
report, profile). Prints the wall times, their ratio against the issue's target (>= 1.6x on 2 cores), whether the two
runs' per-seed test numbers are identical, the machine's load, and where the time went: the stages' epochs (read
from their metrics.jsonl) against everything else, and from those the best ratio any --jobs could reach.
Run: ``python benchmarks/parallel_seeds.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

EDGEDISTILL = [str(Path(sys.executable).parent / "edgedistill")]  # the installed command, as make demo runs it


def edgedistill(args: list[str], cache: Path, command: str = "run") -> tuple[float, str]:
    """One ``edgedistill run`` (or another ``command``), timed end to end: (seconds, what it printed)."""
    env = {**os.environ, "EDGEDISTILL_CACHE": str(cache)}
    env.pop("OMP_NUM_THREADS", None)  # each arm chooses its threads: torch's default, or cores // jobs in the workers
    start = time.perf_counter()
    out = subprocess.run([*EDGEDISTILL, command, *args, "--no-progress"], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stdout[-2000:] + out.stderr[-2000:])
    return time.perf_counter() - start, out.stdout


def slots_used(printed: str) -> int:
    """The parallel slots a run used (its process and the workers), from its "--jobs N ...: k stage(s) in this process
    and N - 1 worker process(es)" line; 1 without one."""
    found = re.search(r"^--jobs (\d+)\b.*stage\(s\) in this process and", printed, re.M)
    return int(found.group(1)) if found else 1


def rounds(recipe: str, warm: Path, flags: dict[str, list[str]], count: int, work: Path, tag: str,
           command: str = "run", used_of: Callable[[str], Any] = slots_used) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """``count`` timed pairs of fresh ``command`` processes (``run``, or ``sweep``: benchmarks/parallel_sweep.py), each
    arm from a copy of the ``warm`` cache into ``<work>/<tag>jobs<arm>-<round>``, in alternating order (a slow spell of a
    shared machine hits both arms alike): the wall times, and what each arm used (``used_of`` what it printed)."""
    times: dict[str, list[float]] = {arm: [] for arm in flags}
    used: dict[str, Any] = {}
    for r in range(count):
        for arm in (list(flags) if r % 2 == 0 else list(flags)[::-1]):
            cache, out = work / f"{tag}cache-{arm}-{r}", work / f"{tag}jobs{arm}-{r}"
            shutil.copytree(warm, cache)
            seconds, printed = edgedistill([recipe, "--out", str(out), *flags[arm]], cache, command)
            times[arm].append(seconds)
            used[arm] = used_of(printed)
            print(f"{tag or 'teacher cached, '}round {r + 1}, --jobs {arm} (used: {used[arm]}): {seconds:.1f} s", flush=True)
    return times, used


def median_ratio(slow: list[float], fast: list[float]) -> tuple[float, list[float]]:
    """The median over rounds of slow / fast, and the rounds' ratios."""
    pairs = sorted(a / b for a, b in zip(slow, fast))
    mid = len(pairs) // 2
    return (pairs[mid] if len(pairs) % 2 else (pairs[mid - 1] + pairs[mid]) / 2), [a / b for a, b in zip(slow, fast)]


def per_seed(run_dir: Path) -> list:
    return [r.get("per_seed_test") for r in json.loads((run_dir / "summary.json").read_text())["rows"]]


def stage_logs(run_dir: Path, cache: Path, warm: Path) -> list[Path]:
    """The metrics.jsonl of every stage the arm trained: the distilled students' in the run directory, the students
    alone's in the model cache (they train into it), less the entries the arm found there (the cached teacher)."""
    found = {p.name for p in (warm / "models").iterdir()} if (warm / "models").is_dir() else set()
    return sorted(run_dir.glob("*/seed*/metrics.jsonl")) + sorted(
        p for p in cache.glob("models/*/metrics.jsonl") if p.parent.name not in found)


def epoch_seconds(logs: list[Path]) -> float:
    """The stages' training time: every epoch's ``time_s`` in those logs, summed."""
    return sum(json.loads(line)["time_s"] for log in logs for line in log.read_text().splitlines() if line.strip())


def ceiling(wall_1: float, serial: float, epochs_1: float, epochs_n: float, jobs: int) -> float:
    """The best --jobs N could do: the part no stage runs in (``serial``: a rerun of the finished run, which reads
    every stage back and redoes start, summary, report and profile) kept as it is, and the rest, the stages, slowed
    by the thread count as their epochs are (``epochs_n / epochs_1``) and shared perfectly over N workers that cost
    nothing to start."""
    return wall_1 / (serial + (wall_1 - serial) * epochs_n / epochs_1 / jobs)


def publish(lines: list[str], path: Path) -> None:
    """The report: printed, and written (atomically) to ``path``."""
    from edgedistill.io import write_text

    print("\n".join(lines))
    write_text(path, "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="default", help="the second arm: 'default' (no --jobs: the command's auto) or a count")
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--rounds", type=int, default=3, help="timed pairs of runs, in alternating order")
    ap.add_argument("--empty-rounds", type=int, default=1, help="timed pairs from an empty cache (make demo's first run)")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "parallel_seeds.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgedistill-parallel-"))
    try:
        load = os.getloadavg()[0]
        warm = work / "cache-warm"
        # An existing cache folder, as after a user's first run: the bundled set's parsed arrays and the size budget's
        # verdicts are kept in it from the warm-up on (they are written only into a cache folder that exists).
        warm.mkdir()
        t_teacher, _ = edgedistill([args.recipe, "seeds=[0]", "baseline=false", "train.epochs=1", "report.profile=false",
                                 "--out", str(work / "warm")], warm)
        other = args.jobs  # the second arm's label: "default", or a count given on this command line
        flags = {"1": ["--jobs", "1"], other: [] if other == "default" else ["--jobs", other]}
        times, used = rounds(args.recipe, warm, flags, args.rounds, work, "")
        # A user's second make demo: the students alone are in the cache too (round 1's --jobs 1 arm trained them).
        again, _ = rounds(args.recipe, work / "cache-1-0", flags, args.rounds, work, "second run, ")
        # A user's first make demo: nothing in the cache (the teacher trains in the run's own process, first).
        (work / "cache-empty").mkdir()
        empty, _ = rounds(args.recipe, work / "cache-empty", flags, args.empty_rounds, work, "empty cache, ")
        jobs = used[other]
        same = per_seed(work / "jobs1-0") == per_seed(work / f"jobs{other}-0")
        logs = {j: stage_logs(work / f"jobs{j}-0", work / f"cache-{j}-0", warm) for j in times}  # round 1's runs
        epochs = {j: epoch_seconds(lg) for j, lg in logs.items()}
        profiled = work / "jobs1-0" / "profile.json"  # (a recipe without report.profile has none)
        profile_s = json.loads(profiled.read_text())["seconds"] if profiled.is_file() else None
        serial, _ = edgedistill([args.recipe, "--out", str(work / "jobs1-0"), "--jobs", "1"], work / "cache-1-0")  # read back
        best = ceiling(times["1"][0], serial, epochs["1"], epochs[other], jobs)
        ratio, pairs = median_ratio(times["1"], times[other])
        ratio2, pairs2 = median_ratio(again["1"], again[other])
        ratio0, pairs0 = median_ratio(empty["1"], empty[other]) if args.empty_rounds else (None, [])
        arms = {j: sum(t) / len(t) for j, t in times.items()}
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        name = f"the default (auto: {jobs} slots)" if other == "default" else f"--jobs {other}"
        lines = [
            f"# Seeds in parallel: `edgedistill run` with --jobs 1 and with its default "
            f"({'make demo' if args.recipe == 'quickstart' else args.recipe})", "",
            f"Made by `python benchmarks/parallel_seeds.py{''.join(f' {a}' for a in sys.argv[1:])}` ({args.recipe}, {cores} cores, load {load:.2f} at start; the "
            f"teacher trained first in {t_teacher:.0f} s and cached; each arm a fresh process from a copy of that cache).", "",
            "| --jobs | slots (this process + workers) | cache holds | wall time per round | mean |", "|---|---|---|---|---|",
            *(f"| {j} | {used[j]} | the teacher | {', '.join(f'{x:.1f} s' for x in times[j])} | {t:.1f} s |"
              for j, t in arms.items()),
            *(f"| {j} | {used[j]} | the teacher and the students alone (a second run) | "
              f"{', '.join(f'{x:.1f} s' for x in t)} | {sum(t) / len(t):.1f} s |" for j, t in again.items()),
            *(f"| {j} | {used[j]} | nothing (a first run: the teacher trains in the run) | "
              f"{', '.join(f'{x:.1f} s' for x in t)} | {sum(t) / len(t):.1f} s |" for j, t in empty.items() if t), "",
            f"Speed-up of {name} over --jobs 1 with the teacher cached, median of the rounds' ratios "
            f"({', '.join(f'{x:.2f}' for x in pairs)}): **{ratio:.2f}x** (target: >= 1.6x on 2 cores: "
            f"{'met' if ratio >= 1.6 else 'not met'}).",
            f"On a second run (only the distilled students train: 3 stages for 2 slots): **{ratio2:.2f}x** "
            f"(rounds {', '.join(f'{x:.2f}' for x in pairs2)}).",
            *([f"With an empty cache (a first run; the teachers train before the other stages in both arms): "
               f"**{ratio0:.2f}x** (rounds {', '.join(f'{x:.2f}' for x in pairs0)})."] if pairs0 else []),
            f"Per-seed test numbers identical between the arms: {'yes' if same else 'no'} (--jobs 1 runs at torch's default "
            "thread count, the workers at cores // jobs; tests/test_parallel_seeds.py checks identity at equal threads).", "",
            "## Where round 1's time went", "",
            f"- Training epochs, summed over the {len(logs['1'])} stages: "
            f"{epochs['1']:.1f} s with --jobs 1 (torch's default threads, {cores} here), {epochs[other]:.1f} s "
            f"in {jobs} slots (cores // {jobs} threads each): intra-op threads make one stage "
            f"{epochs[other] / max(epochs['1'], 1e-9):.2f}x faster than one thread does.",
            f"- Outside every stage (the same --jobs 1 command again on its finished run: every stage read back; start, "
            f"data, summary, report, plots and deployment profile redone): {serial:.1f} s of {times['1'][0]:.1f} s"
            + (f"; the profile alone {profile_s:.1f} s." if profile_s is not None else "."),
            f"- The ceiling: that part kept, the stages ({times['1'][0] - serial:.1f} s) slowed as their epochs are at "
            f"cores // {jobs} threads and shared perfectly over {jobs} slots that cost nothing to start: "
            f"{times['1'][0] / best:.1f} s, **{best:.2f}x** ({'above' if best >= 1.6 else 'below'} the 1.6x target).", ""]
        publish(lines, args.results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
