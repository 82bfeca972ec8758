"""``edgedistill sweep`` (recipes/sweep_example.yaml: 8 grid points x 3 seeds on the quickstart data) with ``--jobs 1``
against the default (``--jobs auto``), the teacher and the students alone cached, as they are for every trial of a
sweep after its first.

A one-point sweep first trains the teacher and the three students alone into a warm-up cache; each arm then runs the
whole grid as a fresh ``edgedistill sweep`` process, from its own copy of that cache, into its own folder, and is
timed end to end. Rounds alternate the arms' order (a slow spell of a shared machine hits both alike). Prints the
wall times, the median ratio, the slots each arm used (the sweep's "N job(s)" line), whether the two arms' tables
agree, and the machine's load; writes benchmarks/results/parallel_sweep.md.
Run: ``python benchmarks/parallel_sweep.py`` (about 12 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import tempfile
from pathlib import Path

from parallel_seeds import edgedistill, median_ratio, publish, rounds


def jobs_chosen(printed: str) -> str:
    """What the sweep said it runs at a time, from its "...; N job(s) (--jobs auto: why)" line."""
    found = re.search(r"; (\d+) job\(s\)( \(--jobs auto: [^)]*\))?", printed)
    return found.group(0)[2:] if found else "?"


def table(sweep_dir: Path) -> dict[tuple, tuple]:
    """Every grid point's test metric (mean, std over seeds), from results.csv (the axes come before "state", the
    metric's mean and std after it)."""
    with open(sweep_dir / "results.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        at = header.index("state")
        return {tuple(row[:at]): tuple(row[at + 1:at + 3]) for row in reader}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="sweep_example")
    ap.add_argument("--rounds", type=int, default=2, help="timed pairs of sweeps, in alternating order")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "parallel_sweep.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgedistill-sweep-"))
    try:
        load = os.getloadavg()[0]
        warm = work / "cache-warm"
        warm.mkdir()
        t_warm, _ = edgedistill([args.recipe, "sweep.grid={method.terms.1.temperature: [4]}", "--out", str(work / "warm")],
                                warm, "sweep")
        flags = {"1": ["--jobs", "1"], "default": []}
        times, used = rounds(args.recipe, warm, flags, args.rounds, work, "", "sweep", jobs_chosen)
        ratio, pairs = median_ratio(times["1"], times["default"])
        same = table(work / "jobs1-0") == table(work / "jobsdefault-0")
        points = len(table(work / "jobs1-0"))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        lines = [
            "# Trials in parallel: `edgedistill sweep` with --jobs 1 and with its default", "",
            f"Made by `python benchmarks/parallel_sweep.py` ({args.recipe}: {points} grid points x 3 seeds, {cores} cores, "
            f"load {load:.2f} at start; the teacher and the students alone trained first, in {t_warm:.0f} s, by a one-point "
            "sweep; each arm a fresh process from a copy of that cache).", "",
            "| --jobs | what the sweep chose | wall time per round | mean |", "|---|---|---|---|",
            *(f"| {arm} | {used[arm]} | {', '.join(f'{x:.1f} s' for x in t)} | {sum(t) / len(t):.1f} s |"
              for arm, t in times.items()), "",
            f"Speed-up of the default over --jobs 1, median of the rounds' ratios ({', '.join(f'{x:.2f}' for x in pairs)}): "
            f"**{ratio:.2f}x**.",
            f"Every grid point's test metric identical between the arms: {'yes' if same else 'no'} (--jobs 1 trains at "
            "torch's default thread count, parallel trials at cores // jobs; set engine.threads for equal numbers).", ""]
        publish(lines, args.results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
