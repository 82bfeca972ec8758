"""The figures of docs/reliability.md: run N seeded fuzz cases (tests/reliability/fuzz_cases.py) and, with
--faults, the fault tests (tests/reliability/test_faults.py), then print the table; with --write-doc, put it into
docs/reliability.md between the marker comments (atomically).

    .venv/bin/python scripts/reliability_figures.py --cases 1000 --seed 16            # make fuzz
    .venv/bin/python scripts/reliability_figures.py --cases 1000 --seed 16 --faults --write-doc docs/reliability.md

Cases run in one worker process (torch is imported once) with its address space capped (--memory-gb), so an input
that would take gigabytes ends in a MemoryError ("memory") instead of swapping the machine. Each case has a time
limit (--limit-s, an alarm inside the worker); a worker that does not answer 30 s after that is killed ("hang") and
a fresh one takes the next case. A worker that dies (a crash) counts as a traceback.
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the case generators live beside the tests that run a few hundred of them

from reliability.fuzz_cases import FAMILIES, draw_cases  # noqa: E402
from reliability.fuzz_harness import FAILURE_FLAGS, FAILURES, is_failure, signature  # noqa: E402

BEGIN, END = "<!-- reliability-figures:begin -->", "<!-- reliability-figures:end -->"


def _worker(conn: Any, base: str, limit_s: float, memory_gb: float) -> None:
    import resource

    if memory_gb > 0:
        cap = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    from reliability.fuzz_harness import run_case

    while True:
        msg = conn.recv()
        if msg is None:
            return
        index, case = msg
        try:
            result = run_case(case, Path(base), index, limit_s)
        except MemoryError:
            result = {"kind": case.kind, "expect": case.expect, "note": case.note, "outcome": "memory", "flags": [],
                      "message": "MemoryError in the harness"}
        conn.send(result)


class Pool:
    """One worker process at a time; replaced when it hangs or dies."""

    def __init__(self, base: Path, limit_s: float, memory_gb: float) -> None:
        self.args, self.ctx, self.proc, self.conn = (str(base), limit_s, memory_gb), mp.get_context("spawn"), None, None

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.proc.start()

    def run(self, index: int, case: Any) -> dict[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((index, case))
        if self.conn.poll(self.args[1] + 60):  # the alarm fires at limit_s; a first case also imports torch
            try:
                return self.conn.recv()
            except EOFError:
                pass
        alive = self.proc.is_alive()
        self.close(kill=True)
        base = {"kind": case.kind, "expect": case.expect, "note": case.note, "flags": [], "exit": None}
        if alive:
            return {**base, "outcome": "hang", "message": "no answer after the time limit; worker killed"}
        return {**base, "outcome": "traceback", "message": f"worker died (exit {self.proc.exitcode})", "where": "crash"}

    def close(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.conn.send(None)
        self.proc.join(10)
        self.proc, self.conn = None, None


def run_cases(n: int, seed: int, families: tuple[str, ...], limit_s: float, memory_gb: float, log: Optional[Path],
              workdir: Optional[Path]) -> list[dict[str, Any]]:
    cases = draw_cases(n, seed, families)
    base = Path(workdir or tempfile.mkdtemp(prefix="edgedistill-fuzz-"))
    base.mkdir(parents=True, exist_ok=True)
    pool, results, started = Pool(base, limit_s, memory_gb), [], time.monotonic()
    out = log.open("w") if log else None
    try:
        for i, case in enumerate(cases):
            r = pool.run(i, case)
            r["index"] = i
            results.append(r)
            if out:
                out.write(json.dumps(r, default=str) + "\n")
                out.flush()
            if is_failure(r):
                print(f"  #{i} {signature(r)}: {r['note'][:80]!r} -> {r.get('message', '')[:160]}", flush=True)
            if (i + 1) % 50 == 0:
                print(f"{i + 1}/{len(cases)} cases, {time.monotonic() - started:.0f} s", flush=True)
    finally:
        pool.close()
        if out:
            out.close()
    return results


def run_faults() -> dict[str, str]:
    """Each fault test's outcome (passed / failed / skipped), the long variants included."""
    env = {**os.environ, "EDGEDISTILL_FAULTS_LONG": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/reliability/test_faults.py", "-q", "-rA", "-p",
                           "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True, text=True)
    outcomes = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\s+(?:\[\d+\]\s+)?(\S+)", line)
        if m:
            outcomes[m.group(2).split("::")[-1]] = m.group(1).lower()
    return outcomes


def _sandboxed(text: str) -> str:
    """A message with the case's temporary folder written as <sandbox>: the doc names no path of this machine."""
    return re.sub(r"""[^\s'"]*/case-\d+/""", "<sandbox>/", text)


def figures(results: list[dict[str, Any]]) -> dict[str, int]:
    count = collections.Counter(r["outcome"] for r in results)
    flags = collections.Counter(f for r in results for f in r["flags"])
    return {
        "cases tried": len(results),
        "clean errors (exit 2/3/4, one line)": count["clean"],
        "accepted runs (exit 0)": count["accepted"],
        "untidy errors (several lines, or a folder made first)": count["untidy"],
        "tracebacks": count["traceback"],
        "hangs": count["hang"],
        "memory (gigabytes used)": count["memory"],
        "silent wrong results (exit 0 where a refusal was owed)": flags["silent_wrong"],
        "writes outside the run directory": flags["writes_outside"],
        "data lost (a file that was there changed or removed)": flags["data_lost"],
        "refused although valid": flags["false_refusal"],
    }


def table(fig: dict[str, int], faults: dict[str, str], command: str, results: list[dict[str, Any]]) -> str:
    lines = [f"Produced by `{command}` ({time.strftime('%Y-%m-%d')}).", "", "| figure | count |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in fig.items()]
    rows = collections.defaultdict(collections.Counter)
    for r in results:
        rows[r["kind"]].update([r["outcome"], "n"] + (["failure"] if is_failure(r) else []))
    lines += ["", "| category | cases | clean errors | accepted | untidy | failures |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {k} | {c['n']} | {c['clean']} | {c['accepted']} | {c['untidy']} | {c['failure']} |"
              for k, c in sorted(rows.items())]
    failing = collections.OrderedDict()
    for r in results:
        if is_failure(r):
            failing.setdefault(signature(r), r)
    if failing:
        lines += ["", f"Distinct failures ({len(failing)}; what went wrong | family | where, with one example):", ""]
        lines += [f"- `{k}`: {r['note'][:80]!r} -> {_sandboxed(r.get('message', ''))[:160]}" for k, r in failing.items()]
    if faults:
        passed = sum(v == "passed" for v in faults.values())
        lines += ["", f"Fault tests (tests/reliability/test_faults.py, long variants on): {passed} of {len(faults)} "
                  "passed.", "", "| fault test | outcome |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in faults.items()]
    return "\n".join(lines)


def per_category(results: list[dict[str, Any]]) -> str:
    cols = ["clean", "accepted", "untidy", *FAILURES, *FAILURE_FLAGS, "false_refusal"]
    rows = collections.defaultdict(collections.Counter)
    for r in results:
        rows[r["kind"]][r["outcome"]] += 1
        rows[r["kind"]].update(r["flags"])
        rows[r["kind"]]["n"] += 1
    head = f"{'category':22} {'n':>5} " + " ".join(f"{c[:10]:>10}" for c in cols)
    body = [f"{k:22} {v['n']:>5} " + " ".join(f"{v[c]:>10}" for c in cols) for k, v in sorted(rows.items())]
    return "\n".join([head, *body])


def write_doc(path: Path, text: str) -> None:
    """Replace what is between the markers (appending them if absent); temp file + rename, never half-written."""
    old = path.read_text() if path.is_file() else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated subset of {', '.join(FAMILIES)}")
    ap.add_argument("--limit-s", type=float, default=20.0, help="per-case time limit (then: hang)")
    ap.add_argument("--memory-gb", type=float, default=6.0, help="address-space cap of the worker (0: none)")
    ap.add_argument("--fresh-seed", type=int, help="also run --cases fresh cases from this seed and count failures "
                    "whose root cause the first set did not show (the issue's 'nothing new in 1,000 fresh cases')")
    ap.add_argument("--faults", action="store_true", help="also run tests/reliability/test_faults.py (long variants)")
    ap.add_argument("--log", type=Path, help="every case's result, one JSON object a line")
    ap.add_argument("--workdir", type=Path, help="sandboxes and the shared cache (default: a new temporary folder)")
    ap.add_argument("--write-doc", type=Path, help="put the table into this markdown file between the markers")
    a = ap.parse_args(argv)
    families = tuple(f for f in a.families.split(",") if f)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        ap.error(f"unknown families {sorted(unknown)}")
    started = time.monotonic()
    results = run_cases(a.cases, a.seed, families, a.limit_s, a.memory_gb, a.log, a.workdir)
    fresh: list[dict[str, Any]] = []
    if a.fresh_seed is not None:
        print(f"\nFresh cases (seed {a.fresh_seed}):")
        fresh = run_cases(a.cases, a.fresh_seed, families, a.limit_s, a.memory_gb, None,
                          a.workdir / "fresh" if a.workdir else None)
    faults = run_faults() if a.faults else {}
    command = f"python scripts/reliability_figures.py --cases {a.cases} --seed {a.seed}" + (" --faults" if a.faults else "")
    if families != tuple(FAMILIES):
        command += f" --families {','.join(families)}"
    if a.fresh_seed is not None:
        command += f" --fresh-seed {a.fresh_seed}"
    if a.faults and a.cases == 1000 and a.seed == 16 and a.fresh_seed == 2026 and families == tuple(FAMILIES):
        command = "make reliability"
    fig = figures(results)
    print("\nPer category:\n" + per_category(results))
    sigs = collections.OrderedDict()
    for r in results:
        if is_failure(r):
            sigs.setdefault(signature(r), []).append(r)
    print(f"\nDistinct failures ({len(sigs)}):")
    for s, rs in sigs.items():
        print(f"  {len(rs):3d} x {s}: e.g. {rs[0]['note'][:80]!r} -> {rs[0].get('message', '')[:200]}")
    text = table(fig, faults, command, results)
    if fresh:
        known = {signature(r) for r in results if is_failure(r)}
        bad = [r for r in fresh if is_failure(r)]
        new_sigs = sorted({signature(r) for r in bad} - known)
        text += (f"\n\nFresh cases (seed {a.fresh_seed}): {len(fresh)} tried, {len(bad)} failures, "
                 f"{len(new_sigs)} distinct failures not seen with seed {a.seed}"
                 + "".join(f"\n- `{sig}`" for sig in new_sigs) + ".")
    print("\n" + text + f"\n\n({time.monotonic() - started:.0f} s)")
    if a.write_doc:
        write_doc(a.write_doc, text)
        print(f"written to {a.write_doc}")
    bad = sum(fig[k] for k in ("tracebacks", "hangs", "memory (gigabytes used)")) + sum(
        fig[k] for k in fig if k.startswith(("silent", "writes", "data lost"))) + sum(map(is_failure, fresh))
    return 1 if bad or any(v in ("failed", "error") for v in faults.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
