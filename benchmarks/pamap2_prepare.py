"""Preparing a full-size PAMAP2 archive: time, peak memory, and the second start from the window cache.

Writes a synthetic folder in PAMAP2's own format (``PAMAP2_Dataset/Protocol/subject101.dat`` .. ``subject109.dat``:
54 space-separated columns, 100 Hz timestamps, activity ids in runs, heart rate NaN except every 11th row, a few
IMU dropouts as NaN), about 3.8 million rows in all as the real archive has, then, each in a fresh process with one
thread: (1) prepare it (parse in one worker process per core, window, write the cache) and (2) start again from
the cache. Prints the seconds and the peak resident memory of each (and of the largest parsing worker), against the targets of the archive issue (prepare <= 60 s and <= 2 GiB on
2 cores, second start <= 5 s), and the machine's load. Run: ``python benchmarks/pamap2_prepare.py`` (the folder,
about 1.6 GB, goes to --work; it is kept for reruns with --keep).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS = 3_850_000
ACTIVITIES = [1, 2, 3, 4, 5, 6, 7, 12, 13, 16, 17, 24, 0]


def write_archive(root: Path, rows: int, seed: int = 0) -> None:
    protocol = root / "PAMAP2_Dataset" / "Protocol"
    protocol.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = rows // 9
    for k, subject in enumerate(range(101, 110)):
        t = np.arange(per) / 100.0 + 5.0
        runs = np.repeat(rng.choice(ACTIVITIES, size=per // 6000 + 1), 6000)[:per]  # 60 s runs
        table = rng.normal(size=(per, 54)).astype(np.float32)
        table[:, 0], table[:, 1] = t, runs
        table[:, 2] = np.where(np.arange(per) % 11 == 0, 100.0, np.nan)  # heart rate at ~9 Hz
        table[rng.random(per) < 0.001, 4:7] = np.nan  # IMU dropouts
        with open(protocol / f"subject{subject}.dat", "w") as fh:
            for chunk in range(0, per, 200_000):
                block = table[chunk:chunk + 200_000]
                fh.write("\n".join(" ".join("NaN" if v != v else f"{v:.6g}" for v in row) for row in block.tolist()))
                fh.write("\n")
        print(f"wrote subject{subject}.dat ({k + 1}/9)", flush=True)


CHILD = """
import json, resource, sys, time
t0 = time.time()
from edgedistill.data.archives import registered
from edgedistill.data.archives.pamap2 import ARCHIVE
t1 = time.time()
raw, cached = registered.load_cached(ARCHIVE, sys.argv[1], {}, cache_root=__import__('pathlib').Path(sys.argv[2]))
n = len(raw.y)
t2 = time.time()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "cached": cached, "windows": n, "shape": list(raw.x.shape[1:]),
                  "peak_rss_mib": int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))) / 1024,
                  "peak_child_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def tree_rss_mib(pid: int) -> float:
    """The summed VmRSS of ``pid`` and its child processes (the parsing workers), from /proc."""
    total, family = 0, {pid}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # field 4 of stat: the parent's pid
                family.add(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    for p in family:
        try:
            status = Path(f"/proc/{p}/status").read_text().splitlines()
            total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total / 1024


def measure(root: Path, cache: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(cache)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    peak = 0.0
    while proc.poll() is None:  # every 100 ms: the whole family's memory at once, which no rusage field gives
        peak = max(peak, tree_rss_mib(proc.pid))
        time.sleep(0.1)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(stderr[-3000:])
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_total_rss_mib": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/pamap2_prepare"))
    ap.add_argument("--rows", type=int, default=ROWS)
    ap.add_argument("--keep", action="store_true", help="reuse the synthetic archive of an earlier run")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "pamap2_prepare.md")
    args = ap.parse_args()
    root, cache = args.work / "data", args.work / "cache"
    if not (args.keep and (root / "PAMAP2_Dataset").is_dir()):
        shutil.rmtree(root, ignore_errors=True)
        t = time.time()
        write_archive(root, args.rows)
        print(f"synthetic archive written in {time.time() - t:.0f} s")
    shutil.rmtree(cache, ignore_errors=True)
    load = os.getloadavg()[0]
    first = measure(root, cache)
    second = measure(root, cache)
    size = sum(p.stat().st_size for p in (root / "PAMAP2_Dataset").rglob("*.dat"))
    lines = [
        "# Preparing a full-size PAMAP2 archive", "",
        "Made by `python benchmarks/pamap2_prepare.py` (synthetic data in PAMAP2's format; one thread per process).", "",
        f"- archive: {args.rows:,} rows, {size / 2**30:.2f} GiB of text; {os.cpu_count()} cores, load {load:.2f} at start",
        f"- prepare (parse, window, cache): {first['load_s']:.1f} s, peak RSS {first['peak_rss_mib']:.0f} MiB "
        f"(targets: <= 60 s, <= 2048 MiB); {first['windows']:,} windows of {tuple(first['shape'])}; the largest "
        f"parsing worker process peaked at {first['peak_child_rss_mib']:.0f} MiB (one per core); the process and its "
        f"workers together peaked at {first['peak_total_rss_mib']:.0f} MiB (summed VmRSS, sampled every 100 ms)",
        f"- second start from the cache: {second['load_s']:.2f} s (+{second['import_s']:.1f} s of imports), "
        f"peak RSS {second['peak_rss_mib']:.0f} MiB (target: <= 5 s)", ""]
    print("\n".join(lines))
    if args.results is not None:
        from edgedistill.io import write_text

        write_text(args.results, "\n".join(lines))


if __name__ == "__main__":
    main()
