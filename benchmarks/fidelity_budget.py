"""The budget of the seed-fidelity benchmarks (``seed_fidelity_{a,b,c}.py``): short by default, the protocol's with
``--protocol``.

Short (how they were first measured): seeds 0-2 and the cut epochs each script names, about a quarter of an hour of
one core per script. ``--protocol``: the budget of docs/benchmarks.md, seeds 0-4 and every student and teacher at its
shipped recipe's epochs; runs and results then go to ``*_protocol`` paths so that both stay side by side. The flag
is read from the command line at import, because each script builds its arms (recipes with their epochs) at import.
"""
from __future__ import annotations

import argparse
import sys

PROTOCOL = "--protocol" in sys.argv[1:]
SEEDS = [0, 1, 2, 3, 4] if PROTOCOL else [0, 1, 2]
SUFFIX = "_protocol" if PROTOCOL else ""


def epochs(short: int, shipped: int) -> int:
    """``shipped`` (the recipe's) under --protocol, else the script's cut ``short``."""
    return shipped if PROTOCOL else short


def add_arguments(ap: argparse.ArgumentParser, stem: str, items: list[str]) -> None:
    """--only (some of ``items``), --protocol, --runs and --results (defaults under runs/ and benchmarks/results/,
    ``_protocol`` when set)."""
    ap.add_argument("--only", choices=items, nargs="*", default=items)
    ap.add_argument("--protocol", action="store_true", help="seeds 0-4 and the shipped recipes' epochs "
                    "(docs/benchmarks.md's protocol) instead of the short budget")
    ap.add_argument("--runs", default=f"runs/{stem}{SUFFIX}")
    ap.add_argument("--results", default=f"benchmarks/results/{stem}{SUFFIX}")


def command(stem: str, only: list[str], items: list[str]) -> str:
    """The command line that reproduces a pass, for the results file."""
    return (f"python benchmarks/{stem}.py" + (" --protocol" if PROTOCOL else "")
            + (f" --only {' '.join(only)}" if only != items else ""))
