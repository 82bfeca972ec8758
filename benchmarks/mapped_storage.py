"""Training from memory-mapped windows (data.storage: mapped) against splits copied into memory: peak memory and time.

Uses the full-size synthetic PAMAP2 archive of ``benchmarks/pamap2_prepare.py`` (written if absent; kept in --work and
shared with that benchmark), prepares its window cache once, then, each in a fresh process with one thread and for
``data.storage`` memory and mapped: ``prepare_data`` (the splits as a run builds them) and one epoch of a 1-D CNN
student over every training batch (forward, backward, step). Prints the peak resident memory and seconds of each, their
ratio, the size of the windows on disk and the machine's load. Run: ``python benchmarks/mapped_storage.py``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, sys, threading, time
peak_anon = [0]
def sample():  # RssAnon: memory the process owns; ru_maxrss also counts file pages mapped in, which the kernel can drop
    while True:
        with open("/proc/self/status") as fh:
            kb = next((int(l.split()[1]) for l in fh if l.startswith("RssAnon:")), 0)
        peak_anon[0] = max(peak_anon[0], kb)
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
def hwm():  # VmHWM: this process's peak RSS (ru_maxrss would also count the parent's, kept across exec)
    with open("/proc/self/status") as fh:
        return next((int(l.split()[1]) for l in fh if l.startswith("VmHWM:")), 0) / 1024
import torch
from edgedistill.config import DataConfig
from edgedistill.data.prepare import prepare_data
from edgedistill.models import build_model
root, cache, storage, stride = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import os; os.environ["EDGEDISTILL_CACHE"] = cache
if storage == "none":  # the baseline: imports and threads only
    time.sleep(0.2)
    print(json.dumps({"peak_anon_mib": peak_anon[0] / 1024, "peak_rss_mib": hwm()}))
    sys.exit(0)
t0 = time.time()
splits = prepare_data(DataConfig(name="pamap2", root=root, storage=storage, params={"stride": stride}), seed=0)
t1 = time.time()
info = splits.info
model = build_model("cnn1d", info.input_shape[0], info.n_outputs, info.input_shape[1:], width=16, depth=3)
opt = torch.optim.Adam(model.parameters(), 1e-3)
n = 0
for batch in splits.train.batches(64, shuffle=True, generator=torch.Generator().manual_seed(0)):
    loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
    opt.zero_grad(); loss.backward(); opt.step(); n += len(batch["y"])
t2 = time.time()
print(json.dumps({"prepare_s": t1 - t0, "epoch_s": t2 - t1, "train_windows": n, "mapped": splits.train.mapped,
                  "views": {k: list(v) for k, v in info.views.items()}, "sizes": info.sizes,
                  "peak_rss_mib": hwm(), "peak_anon_mib": peak_anon[0] / 1024}))
"""


def _pamap2_prepare():  # the sibling benchmark's archive writer
    spec = importlib.util.spec_from_file_location("pamap2_prepare", Path(__file__).with_name("pamap2_prepare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def child(root: Path, cache: Path, storage: str, stride: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(cache), storage, str(stride)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/pamap2_prepare"))
    ap.add_argument("--rows", type=int, default=None, help="rows of the synthetic archive (default: the real one's)")
    ap.add_argument("--stride", type=int, default=33, help="data.params.stride: smaller gives more windows")
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "mapped_storage.md")
    args = ap.parse_args()
    bench = _pamap2_prepare()
    root, cache = args.work / "data", args.work / "cache-mapped"
    done = root / f"written-{args.rows or bench.ROWS}"  # an interrupted write is written again
    if not done.is_file():
        t = time.time()
        bench.write_archive(root, args.rows or bench.ROWS)
        done.write_text("")
        print(f"synthetic archive written in {time.time() - t:.0f} s", flush=True)
    load = os.getloadavg()[0]
    child(root, cache, "memory", args.stride)  # prepares the window cache, so both below read the same files
    disk = sum(p.stat().st_size for p in cache.rglob("*.npy"))
    runs = {s: child(root, cache, s, args.stride) for s in ("memory", "mapped")}
    base = child(root, cache, "none", args.stride)
    mem, mapped = runs["memory"], runs["mapped"]
    assert mapped["mapped"] and not mem["mapped"]
    lines = [
        "# Training from memory-mapped windows (data.storage: mapped)", "",
        "Made by `python benchmarks/mapped_storage.py` (the synthetic full-size PAMAP2 archive of "
        "benchmarks/pamap2_prepare.py; one thread per process; each row a fresh process).", "",
        f"- {os.cpu_count()} cores, load {load:.2f} at start; protocol: the loader's defaults with stride {args.stride}; "
        f"windows on disk: {disk / 2**30:.2f} GiB (x and the named views "
        f"{', '.join(v for v in mem['views'] if v != 'x')}); splits {mem['sizes']}", "",
        "Peak anonymous memory (RssAnon, sampled every 20 ms) is what the process itself holds; peak RSS also counts "
        "the pages of the mapped files it has read, which the kernel drops under memory pressure.", "",
        "| data.storage | prepare_data | one epoch (cnn1d, batch 64) | peak anonymous memory | peak RSS |", "|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['prepare_s']:.1f} s | {r['epoch_s']:.1f} s | {r['peak_anon_mib']:.0f} MiB | "
                     f"{r['peak_rss_mib']:.0f} MiB |")
    lines.append(f"| (imports only: torch, edgedistill) | | | {base['peak_anon_mib']:.0f} MiB | {base['peak_rss_mib']:.0f} MiB |")
    lines += ["", f"Mapped / memory: peak anonymous memory {mapped['peak_anon_mib'] / mem['peak_anon_mib']:.2f}x, "
              f"peak RSS {mapped['peak_rss_mib'] / mem['peak_rss_mib']:.2f}x, "
              f"prepare {mapped['prepare_s'] / mem['prepare_s']:.2f}x, epoch {mapped['epoch_s'] / mem['epoch_s']:.2f}x. "
              "The epochs see the same batches (tests/test_mapped.py checks the values are identical).", ""]
    print("\n".join(lines))
    if args.results is not None:
        from edgedistill.io import write_text

        write_text(args.results, "\n".join(lines))


if __name__ == "__main__":
    main()
