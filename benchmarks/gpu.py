"""GPU readiness timings (issue 21 item 5), through the engine's own ``Trainer``: a teacher epoch (32-true and
bf16-mixed), a cached-KD epoch and, with more than one GPU, a DDP epoch, on the synthetic HAR-scale set (64k windows
of 9 channels x 128 samples, 6 activities); writes benchmarks/results/gpu.md. ``benchmarks/gpu.sh`` runs the GPU
tests first, then this.

Run on one H200 on 2026-12-04 (benchmarks/results/gpu.md; the DDP arm needs two GPUs and was skipped there). ``--dry-run``
runs the same code on the CPU at tiny
sizes (tests/test_gpu.py does, and so does ``benchmarks/gpu.sh --dry-run``), the DDP arm as 2 CPU processes, and
writes its report to a temporary folder instead.

Epoch time is what the engine logs per epoch (``time_s`` in metrics.jsonl: the training steps plus validation on
1024 windows). The first epoch includes CUDA's warm-up (kernel selection, allocator growth), so both are shown.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from edgedistill.config import DataConfig, EngineConfig, ModelConfig, TermConfig, TrainConfig
from edgedistill.data import prepare_data
from edgedistill.data.dataset import DataSplits
from edgedistill.engine.loop import Stage, Trainer
from edgedistill.experiment.build import build_network
from edgedistill.io import write_json, write_text
from edgedistill.methods.base import freeze
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.methods.supervised import Supervised

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.md"
DATA = {"channels": 9, "length": 128, "n_classes": 6}  # UCI-HAR's shape: 9 inertial channels x 128 samples
STUDENT = {"model": "cnn1d", "width": 32, "depth": 3, "head": "segments"}
TEACHER = {"model": "resnet1d"}
TERMS = [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4.0}]
BATCH = 64
HELD_OUT = 1024  # validation and test windows kept: a small fixed cost per epoch


def make_data(windows: int) -> DataSplits:
    subjects = 16
    per_subject = math.ceil(windows / 0.9 / subjects)
    cfg = DataConfig(name="synthetic", params={"n_subjects": subjects, "windows_per_subject": per_subject, **DATA},
                     split={"by": "random", "val": 0.05, "test": 0.05})
    s = prepare_data(cfg)
    few = lambda d: d.subset(torch.arange(min(HELD_OUT, len(d))))  # noqa: E731
    return DataSplits(s.train.subset(torch.arange(min(windows, len(s.train)))), few(s.val), few(s.test), s.info)


def fit(arm: str, engine: EngineConfig, splits: DataSplits, epochs: int, folder: Path, tiny: bool = False) -> dict[str, Any]:
    """One arm through the engine: its per-epoch times (the engine's log) and wall time. ``tiny``: a narrow teacher
    (the dry run's seconds on a CPU)."""
    info = splits.info
    spec = ModelConfig(**TEACHER, **({"width": 8} if tiny else {}))
    if arm == "teacher":
        method: Any = Supervised(build_network(spec, info, "teacher", seed=0), info)
    else:  # KD from a frozen teacher whose outputs are computed once, in setup (the default): untrained weights cost the same
        teacher = freeze(build_network(spec, info, "teacher", seed=1))
        method = OfflineDistillation(build_network(ModelConfig(**STUDENT), info, "student", seed=0), info, teacher,
                                     [TermConfig(**t) for t in TERMS], train=splits.train)
    directory = Path(tempfile.mkdtemp(prefix=arm, dir=folder))
    t0 = time.perf_counter()
    Trainer(engine).fit(method, splits, Stage(arm, directory, 0, TrainConfig(epochs=epochs, batch_size=BATCH)))
    wall = time.perf_counter() - t0
    log = (directory / "metrics.jsonl")
    times = [json.loads(line)["time_s"] for line in log.read_text().splitlines()] if log.exists() else []
    return {"arm": arm, "precision": engine.precision, "devices": engine.devices, "epoch_s": times, "wall_s": round(wall, 2)}


def ddp_arm(args: argparse.Namespace, devices: int, accelerator: str, precision: str, folder: Path) -> dict[str, Any]:
    """The teacher arm on ``devices`` processes started by torchrun (rank 0 reports)."""
    out = folder / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}", __file__,
           "--arm", "teacher", "--devices", str(devices), "--accelerator", accelerator, "--precision", precision,
           "--windows", str(args.windows), "--epochs", str(args.epochs), "--json", str(out), "--folder", str(folder),
           *(["--dry-run"] if args.dry_run else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.ddp_timeout)
    if done.returncode != 0:
        return {"arm": "teacher (DDP)", "error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return {**json.loads(out.read_text()), "arm": "teacher (DDP)"}


def report(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    lines = ["# GPU readiness (benchmarks/gpu.sh)", "",
             f"{meta['date']}, {meta['device']}; torch {meta['torch']}; {meta['windows']} training windows of {DATA['channels']} x "
             f"{DATA['length']}, batch {BATCH}; {meta['epochs']} epoch(s) per arm; total {meta['total_s']:.0f} s.", ""]
    if meta.get("tests"):
        lines += [f"GPU tests: {meta['tests']}", ""]
    lines += ["| arm | devices | precision | epoch 1 (s) | later epochs (s) | wall (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['arm']} | | | failed: {' '.join(r['error'])} | | |")
            continue
        e = r["epoch_s"]
        later = ", ".join(f"{t:.2f}" for t in e[1:]) or "-"
        lines.append(f"| {r['arm']} | {r['devices']} | {r['precision']} | {e[0]:.2f} | {later} | {r['wall_s']:.1f} |" if e else
                     f"| {r['arm']} | {r['devices']} | {r['precision']} | - | - | {r['wall_s']:.1f} |")
    lines += ["", *meta["notes"], ""]
    write_text(out, "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=64_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true", help="the CPU path at tiny sizes (no GPU needed); report to a temp folder")
    ap.add_argument("--out", type=Path, default=None, help=f"the report (default {RESULTS.name} in benchmarks/results)")
    ap.add_argument("--tests", default="", help="the GPU tests' summary line, for the report (gpu.sh passes it)")
    ap.add_argument("--ddp-timeout", type=int, default=240)
    # Internal: one arm in this process (a DDP rank started by torchrun).
    ap.add_argument("--arm", choices=["teacher", "kd"], default=None)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--accelerator", default="cuda")
    ap.add_argument("--precision", default="bf16-mixed")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--folder", type=Path, default=None)
    args = ap.parse_args()
    if args.dry_run:
        args.windows, args.epochs = min(args.windows, 256), 1

    if args.arm is not None:  # a rank of the DDP arm
        engine = EngineConfig(accelerator=args.accelerator, devices=args.devices, precision=args.precision, progress=False)
        row = fit(args.arm, engine, make_data(args.windows), args.epochs, args.folder or Path(tempfile.mkdtemp()), args.dry_run)
        if int(os.environ.get("RANK", "0")) == 0 and args.json is not None:
            write_json(args.json, row)
        return

    t0 = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        raise SystemExit("benchmarks/gpu.py: torch sees no CUDA device; use --dry-run for the CPU path")
    accelerator, mixed = ("cuda", "bf16-mixed") if cuda else ("cpu", "32-true")
    splits = make_data(args.windows)
    folder = Path(tempfile.mkdtemp(prefix="edgedistill-gpu-"))
    tiny = args.dry_run
    rows = [fit("teacher", EngineConfig(accelerator=accelerator, precision="32-true", progress=False), splits, args.epochs, folder, tiny)]
    if cuda:
        rows.append(fit("teacher", EngineConfig(accelerator=accelerator, precision=mixed, progress=False), splits, args.epochs, folder))
    rows.append(fit("kd", EngineConfig(accelerator=accelerator, precision=mixed, progress=False), splits, args.epochs, folder, tiny))
    notes = ["Epoch 1 includes CUDA's warm-up; later epochs are the steady state. kd: CE + KD from a frozen resnet1d "
             "whose outputs are computed once before training (not included in the epoch time)."]
    gpus = torch.cuda.device_count() if cuda else min(2, os.cpu_count() or 1)
    if gpus > 1:
        rows.append(ddp_arm(args, gpus, accelerator, mixed, folder))
        notes.append(f"teacher (DDP): {gpus} processes started by torchrun, the same global batch of {BATCH} split "
                     "between them (engine.devices; docs/scale.md).")
    else:
        notes.append("DDP epoch: skipped, one GPU here (it needs at least two).")
    device = torch.cuda.get_device_name(0) if cuda else f"CPU dry run ({platform.processor() or platform.machine()})"
    meta = {"date": time.strftime("%Y-%m-%d"), "device": device, "torch": torch.__version__, "windows": len(splits.train), "epochs": args.epochs,
            "total_s": time.perf_counter() - t0, "tests": args.tests, "notes": notes}
    out = args.out or (folder / "gpu.md" if args.dry_run else RESULTS)
    report(rows, meta, out)
    print(out.read_text())
    print(f"written: {out}")


if __name__ == "__main__":
    main()
