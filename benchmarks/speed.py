"""What distillation costs over plain training, in one process, through the toolkit's own training loop.

Every arm is the engine's ``Trainer.fit`` on the same student, data, batch size and seed; only the method
differs. Epoch time is what the engine logs per epoch (``time_s`` in metrics.jsonl: the training steps plus
validation on 64 windows). The arms are interleaved round by round and each ratio is taken within a round
(same moment, same machine load) before the median, because the machine is shared.

Arms (``--ratio-n`` synthetic windows):
  plain         the student alone (``Supervised``)
  kd cached     ``OfflineDistillation`` with CE + KD; teacher outputs computed once in ``setup`` (its default)
  kd every step the same with ``cache_teacher=False`` (method parameter): the teacher runs on every batch
  torchdistill  the same KD step written with torchdistill's ``KDLoss`` and ``ForwardHookManager`` (hooks on
                the logit layer of both networks, teacher run every step), when torchdistill is installed
Also: the one-off cost of caching the teacher's outputs, epoch time of plain and cached-KD training at 1k-64k
windows (growth should be linear), peak resident memory of each fit (Linux VmHWM, reset before each), and the
share of a plain epoch spent producing batches. Writes benchmarks/results/speed.md (and .json).

Also ``--pairs`` single training steps of ours and torchdistill's, alternated call by call on one batch: the
paired differences judge the torchdistill target, as the two steps run the same networks and differ only by
microseconds of loss code, well below the epoch ratios' round-to-round noise.

What parallel processes gain (``--jobs``: make demo's run, a sweep) is timed by whole commands, not in one process:
benchmarks/parallel_seeds.py and benchmarks/parallel_sweep.py (``make bench-parallel``).

Run: `python benchmarks/speed.py` (a few minutes on 2 idle cores); `--sizes 256 512 --ratio-n 256 --rounds 1
--pairs 10` for a seconds-long check.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import edgedistill
from edgedistill.config import DataConfig, EngineConfig, ModelConfig, TermConfig, TrainConfig
from edgedistill.data import prepare_data
from edgedistill.data.dataset import Batch, DataInfo, DataSplits
from edgedistill.engine.loop import Stage, Trainer
from edgedistill.experiment.build import build_network
from edgedistill.io import write_json, write_text
from edgedistill.methods.base import Method, Step, freeze
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.methods.teachers import Teachers
from edgedistill.methods.supervised import Supervised

RESULTS = Path(__file__).resolve().parent / "results" / "speed"
STUDENT = {"model": "cnn1d", "width": 32, "depth": 3, "head": "segments"}
TEACHER = {"model": "resnet1d"}
DATA = {"channels": 6, "length": 128, "n_classes": 4}  # a smartwatch-like window: 6 axes x 128 samples
BATCH = 64
VAL = 64  # validation windows evaluated after every epoch (included in the engine's epoch time)
TERMS = [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4.0}]
TARGETS = {"cached": 1.15, "torchdistill": 1.0, "exponent": (0.9, 1.1)}


# ---- data and models -----------------------------------------------------------------------------------
def make_data(n_max: int) -> DataSplits:
    """Synthetic windows with at least ``n_max`` training rows; smaller sets are its first rows."""
    subjects = 16
    per_subject = math.ceil(n_max / 0.9 / subjects) + 1
    cfg = DataConfig(name="synthetic", params={"n_subjects": subjects, "windows_per_subject": per_subject, **DATA},
                     split={"by": "random", "val": 0.05, "test": 0.05})
    return prepare_data(cfg)


def head(splits: DataSplits, n: int) -> DataSplits:
    few = lambda d: d.subset(torch.arange(min(VAL, len(d))))  # noqa: E731 - validation: a small fixed cost per epoch
    return DataSplits(splits.train.subset(torch.arange(n)), few(splits.val), few(splits.test), splits.info)


def student(info: DataInfo) -> torch.nn.Module:
    return build_network(ModelConfig(**STUDENT), info, "student", seed=0)


def teacher(info: DataInfo) -> torch.nn.Module:
    # Untrained weights: a forward pass costs the same whatever the weights are.
    return freeze(build_network(ModelConfig(**TEACHER), info, "teacher", seed=1))


# ---- the torchdistill arm ------------------------------------------------------------------------------
def torchdistill_parts() -> Optional[tuple[type, type]]:
    """(KDLoss, ForwardHookManager), or None when torchdistill is not installed. ``torchdistill.core``'s
    package __init__ pulls in torchvision (which does not import beside the CPU torch wheel); its
    forward_hook module itself does not, so the package is registered without running that __init__."""
    if importlib.util.find_spec("torchdistill") is None:
        return None
    import torchdistill

    core = os.path.join(os.path.dirname(torchdistill.__file__), "core")
    if "torchdistill.core" not in sys.modules:
        pkg = types.ModuleType("torchdistill.core")
        pkg.__path__ = [core]
        sys.modules["torchdistill.core"] = pkg
    from torchdistill.core.forward_hook import ForwardHookManager
    from torchdistill.losses.mid_level import KDLoss

    return KDLoss, ForwardHookManager


class TorchdistillKD(Method):
    """The KD step as torchdistill writes it: hooks on both logit layers, its KDLoss (alpha CE + beta T^2 KL)."""

    def __init__(self, student: torch.nn.Module, info: DataInfo, teacher: torch.nn.Module, parts: tuple[type, type],
                 layer: str = "head") -> None:
        super().__init__(student, info)
        kd_loss, hooks = parts
        self.teacher = freeze(teacher)
        self.s_hooks, self.t_hooks = hooks("cpu"), hooks("cpu")
        self.s_hooks.add_hook(student, layer, requires_input=False)
        self.t_hooks.add_hook(teacher, layer, requires_input=False)
        self.loss = kd_loss(layer, "output", layer, "output", temperature=TERMS[1]["temperature"],
                            alpha=TERMS[0]["weight"], beta=TERMS[1]["weight"])

    def setup(self, train: Any, device: torch.device, val: Any = None) -> None:
        self.teacher.to(device)

    def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
        self.networks["student"](batch["x"])
        with torch.no_grad():
            self.teacher(batch["x"])
        return {"kd": self.loss(self.s_hooks.pop_io_dict(), self.t_hooks.pop_io_dict(), batch["y"])}


def same_loss(info: DataInfo, splits: DataSplits, parts: tuple[type, type]) -> float:
    """|our CE+KD - torchdistill's KDLoss| on one batch with the same networks: the arms compute the same thing."""
    s, t = student(info), teacher(info)
    ours = OfflineDistillation(s, info, t, [TermConfig(**x) for x in TERMS], cache_teacher=False)
    theirs = TorchdistillKD(s, info, t, parts)
    batch = next(splits.train.batches(BATCH))
    step = Step(0, 0, 1, 1)
    with torch.no_grad():
        a = sum(ours.training_step(batch, step).values())
        b = theirs.training_step(batch, step)["kd"]
    return float((a - b).abs())


def paired_steps(info: DataInfo, data: DataSplits, parts: tuple[type, type], n: int) -> dict[str, Any]:
    """CPU ms of one training step (student forward, teacher forward, loss; the backward and optimizer step
    are the same code for both) of ours and torchdistill's, on the same networks and batch, alternating call
    by call and pairing the calls: load drift cancels in each pair's ratio, which the epoch ratios (whole
    fits, minutes apart) cannot do. The median of the pairs' ratios gets a bootstrap 95% interval."""
    import random

    s, t = student(info), teacher(info)
    ours = OfflineDistillation(s, info, t, [TermConfig(**x) for x in TERMS], cache_teacher=False)
    theirs = TorchdistillKD(s, info, t, parts)
    batch, step = next(data.train.batches(BATCH)), Step(0, 0, 1, 1)
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for i in range(n + 2):
        for name in ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours"):
            c = time.process_time()
            sum((ours if name == "ours" else theirs).training_step(batch, step).values())
            if i >= 2:  # two warm-up pairs
                times[name].append(time.process_time() - c)
    ratio = [a / b for a, b in zip(times["ours"], times["theirs"])]
    rng = random.Random(0)
    boot = sorted(statistics.median(rng.choices(ratio, k=len(ratio))) for _ in range(2000))
    return {"n": n, "ours_ms": statistics.median(times["ours"]) * 1e3, "theirs_ms": statistics.median(times["theirs"]) * 1e3,
            "ratio": statistics.median(ratio), "ratio_ci": [boot[49], boot[1949]]}


# ---- measuring -----------------------------------------------------------------------------------------
def clocked(cls: type) -> type:
    """``cls`` that also records the CPU seconds of each epoch's training steps (forward, backward, optimizer
    step), from the first ``training_step`` of an epoch to the last ``after_step``. Unlike wall time this hardly
    moves when other jobs share the cores. Nothing else about the method changes."""

    class Clocked(cls):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Batch, step: Step) -> dict[str, torch.Tensor]:
            if step.step % step.steps_per_epoch == 0:
                self._t0 = time.process_time()
            return super().training_step(batch, step)

        def after_step(self, step: Step) -> None:
            super().after_step(step)
            if (step.step + 1) % step.steps_per_epoch == 0:
                self.cpu_epochs = [*getattr(self, "cpu_epochs", []), time.process_time() - self._t0]

    Clocked.__name__ = cls.__name__
    return Clocked


def _status_kib(field: str) -> Optional[int]:
    """VmHWM (peak resident set) or VmRSS (current) of this process from /proc (Linux); None elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    return None


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS


def fit(trainer: Trainer, make: Callable[[], Method], splits: DataSplits, epochs: int, tmp: Path, label: str) -> dict[str, Any]:
    """One fit through the engine; its per-epoch times from the engine's own log, and peak memory."""
    import json

    directory = Path(tempfile.mkdtemp(prefix=label.replace(" ", "_"), dir=tmp))
    method = make()
    _reset_peak()
    rss0 = _status_kib("VmRSS") or 0
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(method, splits, Stage(label, directory, 0, TrainConfig(epochs=epochs, batch_size=BATCH)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    epochs_s = [json.loads(line)["time_s"] for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return {"epoch_s": epochs_s, "epoch_cpu_s": getattr(method, "cpu_epochs", []), "wall_s": wall, "cpu_s": cpu, "peak_mib": (_status_kib("VmHWM") or 0) / 1024,
            "extra_mib": ((_status_kib("VmHWM") or 0) - rss0) / 1024}


def loading_s(splits: DataSplits) -> float:
    """Producing one epoch's batches as the loop does (shuffled index slicing), without any model."""
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for batch in splits.train.batches(BATCH, shuffle=True, generator=gen, drop_last=True):
        {k: v.to("cpu") for k, v in batch.items()}
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio-n", type=int, default=4000, help="training windows for the arm ratios")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the arm ratios")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per fit (each is timed)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 4000, 16000, 64000])
    ap.add_argument("--pairs", type=int, default=200, help="paired training steps, ours vs torchdistill's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    load_before, t_start = os.getloadavg(), time.time()
    splits_all = make_data(max(args.sizes + [args.ratio_n]))
    info = splits_all.info
    trainer = Trainer(EngineConfig(threads=args.threads, progress=False))
    terms = [TermConfig(**x) for x in TERMS]
    parts = torchdistill_parts()
    arms: dict[str, Callable[[], Method]] = {
        "plain": lambda: clocked(Supervised)(student(info), info),
        "kd cached": lambda: clocked(OfflineDistillation)(student(info), info, teacher(info), terms),
        "kd every step": lambda: clocked(OfflineDistillation)(student(info), info, teacher(info), terms, cache_teacher=False),
    }
    if parts is not None:
        arms["torchdistill"] = lambda: clocked(TorchdistillKD)(student(info), info, teacher(info), parts)
    data = head(splits_all, args.ratio_n)
    res: dict[str, Any] = {"arms": {a: [] for a in arms}, "growth": [], "loss_diff": None}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if parts is not None:
            res["loss_diff"] = same_loss(info, data, parts)
            res["paired"] = paired_steps(info, data, parts, args.pairs)
        for r in range(args.rounds):
            for arm, make in arms.items():
                out = fit(trainer, make, data, args.epochs, tmp, arm)
                res["arms"][arm].append(out)
                print(f"round {r + 1} {arm}: epochs {out['epoch_s']} s, peak {out['peak_mib']:.0f} MiB", flush=True)
        t = Teachers([teacher(info)], info, "offline")
        t.outputs(data.val, torch.device("cpu"))  # warm-up: first-call kernel set-up is not caching
        t0 = time.perf_counter()
        t.outputs(data.train, torch.device("cpu"))
        res["cache_s"] = time.perf_counter() - t0
        for n in args.sizes:
            part = head(splits_all, n)
            row = {"n": n, "loading_s": loading_s(part)}
            for arm in ("plain", "kd cached"):
                out = fit(trainer, arms[arm], part, 1, tmp, f"{arm} {n}")
                row[arm] = out
            res["growth"].append(row)
            print(f"{n} windows: plain {row['plain']['epoch_s'][0]:.2f} s, kd cached {row['kd cached']['epoch_s'][0]:.2f} s, "
                  f"loading {row['loading_s']:.2f} s", flush=True)
    meta = {"command": " ".join(["python benchmarks/speed.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(), "threads": args.threads,
            "torch": torch.__version__, "edgedistill": edgedistill.__version__, "python": platform.python_version(),
            "torchdistill": _version("torchdistill"), "load_before": load_before, "load_after": os.getloadavg(),
            "minutes": round((time.time() - t_start) / 60, 1), "ratio_n": args.ratio_n, "rounds": args.rounds,
            "epochs": args.epochs, "student_params": sum(p.numel() for p in student(info).parameters()),
            "teacher_params": sum(p.numel() for p in teacher(info).parameters())}
    report(res, meta, args.out)


def _version(name: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---- reporting -----------------------------------------------------------------------------------------
def ratios(res: dict[str, Any], num: str, den: str, key: str = "epoch_s") -> list[float]:
    """Per round: median epoch of ``num`` / median epoch of ``den`` (same round, same load)."""
    return [statistics.median(a[key]) / statistics.median(b[key]) for a, b in zip(res["arms"][num], res["arms"][den])]


def slope(ns: list[int], ts: list[float]) -> float:
    """Exponent b of t = a n^b, least squares on logs (1.0 = linear growth)."""
    x, y = [math.log(n) for n in ns], [math.log(t) for t in ts]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def report(res: dict[str, Any], meta: dict[str, Any], out: Path) -> None:
    med = lambda v: statistics.median(v)  # noqa: E731
    arms = res["arms"]
    plain = med([med(o["epoch_s"]) for o in arms["plain"]])
    pairs = [("kd every step", "plain"), ("kd cached", "plain")]
    if "torchdistill" in arms:
        pairs += [("kd every step", "torchdistill"), ("kd cached", "torchdistill")]
    table = {f"{a} / {b}": ratios(res, a, b) for a, b in pairs}
    cpu_table = {f"{a} / {b}": ratios(res, a, b, "epoch_cpu_s") for a, b in pairs}
    checks = {"cached-teacher KD epoch <= 1.15x plain": med(table["kd cached / plain"]) <= TARGETS["cached"]}
    verdicts: dict[str, str] = {}
    if "torchdistill" in arms and "paired" in res:
        # Judged on the paired steps (the epoch ratio's round-to-round spread is several times any difference).
        pr = res["paired"]
        key = "our KD step <= 1.0x torchdistill's (both run the teacher every step; paired steps)"
        checks[key] = pr["ratio"] <= TARGETS["torchdistill"]
        if not checks[key] and pr["ratio_ci"][0] <= TARGETS["torchdistill"]:
            verdicts[key] = f"not distinguishable from 1.0 (median ratio {pr['ratio']:.3f}, 95% interval includes 1.0)"
    growth = res["growth"]
    exps = {}
    if len(growth) >= 2:
        for arm in ("plain", "kd cached"):
            exps[arm] = slope([g["n"] for g in growth], [g[arm]["epoch_cpu_s"][0] for g in growth])
            exps[f"{arm} (wall)"] = slope([g["n"] for g in growth], [g[arm]["epoch_s"][0] for g in growth])
        lo, hi = TARGETS["exponent"]
        # Judged on CPU seconds: the sizes run one after another, so wall time carries the load's drift.
        checks[f"linear growth with data size (CPU-time exponent in [{lo}, {hi}])"] = \
            all(lo <= e <= hi for a, e in exps.items() if "wall" not in a)
    lines = [
        "# Speed: what distillation costs over plain training", "",
        f"Made by `{meta['command']}` on {meta['date']}: {meta['cpus']} CPUs, torch {meta['torch']} with {meta['threads']} "
        f"thread(s), edgedistill {meta['edgedistill']}, torchdistill {meta['torchdistill'] or 'not installed'}, Python "
        f"{meta['python']}; **load average {meta['load_before'][0]:.2f} → {meta['load_after'][0]:.2f}** (1-min; other jobs "
        f"shared the 2 cores when this is above ~1 (this benchmark runs one thread), so absolute times are inflated and noisier; ratios are taken within a "
        f"round); {meta['minutes']} min.", "",
        f"Student `{STUDENT}` ({meta['student_params']:,} params), teacher `{TEACHER}` ({meta['teacher_params']:,} params, "
        f"untrained: cost does not depend on weights), synthetic windows {DATA['channels']} × {DATA['length']}, batch {BATCH}, "
        f"CE 0.1 + KD 0.9 (T = 4). Epoch time = the engine's logged `time_s` (training steps + validation on {VAL} windows).", "",
        f"## Ratios ({meta['ratio_n']:,} windows, {meta['rounds']} interleaved rounds × {meta['epochs']} epochs)", "",
        f"Plain student epoch: {plain:.2f} s (median).", "",
        "| ratio | median (wall) | per round (wall) | median (CPU of the training steps) | per round (CPU) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {k} | {med(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} | {med(cpu_table[k]):.2f} | "
              f"{', '.join(f'{x:.2f}' for x in cpu_table[k])} |" for k, v in table.items()]
    lines += ["", "The cached-KD target is judged on wall time (what a user waits for); the CPU columns are the cross-check."]
    if "paired" in res:
        pr = res["paired"]
        lines += ["", f"Paired steps, ours vs torchdistill's ({pr['n']} pairs on one batch, calls alternated; CPU ms of "
                  f"student forward + teacher forward + loss): ours {pr['ours_ms']:.2f} ms, torchdistill {pr['theirs_ms']:.2f} ms, "
                  f"median of the pairs' ratios {pr['ratio']:.3f}, 95% bootstrap interval [{pr['ratio_ci'][0]:.3f}, "
                  f"{pr['ratio_ci'][1]:.3f}]. The KD-vs-torchdistill "
                  "target is judged here: both steps run the same two networks, so the epoch ratio above is 1 ± its noise."]
    cpu = {a: med([o["cpu_s"] for o in v]) for a, v in arms.items()}
    lines += ["", "Cross-check less sensitive to other jobs: CPU seconds of a whole fit (set-up incl. caching, "
              f"{meta['epochs']} epochs, final evaluation), median over rounds: " +
              ", ".join(f"{a} {c:.1f}" for a, c in cpu.items()) + "; ratios to plain: " +
              ", ".join(f"{a} {c / cpu['plain']:.2f}" for a, c in cpu.items() if a != "plain") + "."]
    lines += ["", f"Caching the teacher's outputs once (before epoch 1): {res['cache_s']:.2f} s = "
              f"{res['cache_s'] / plain:.2f} plain epochs at this size."]
    if res["loss_diff"] is not None:
        lines.append(f"Same computation: |our CE+KD − torchdistill KDLoss| on one batch = {res['loss_diff']:.2e}.")
    else:
        lines.append("torchdistill is not installed: the comparison with it was skipped (`pip install --no-deps torchdistill`).")
    lines += ["", "Memory per fit, median over rounds: peak resident set of the process (MiB; it holds the whole "
              "synthetic set of the growth runs too) and, in brackets, the peak above the resident set at the fit's start: " +
              ", ".join(f"{a} {med([o['peak_mib'] for o in v]):.0f} (+{med([o['extra_mib'] for o in v]):.0f})"
                        for a, v in arms.items()) + ".", ""]
    if growth:
        lines += ["## Growth with data size (one epoch each)", "",
                  "| windows | plain epoch s (wall) | plain CPU s per 1k | KD cached epoch s (wall) | KD cached CPU s per 1k | "
                  "peak MiB (+ above start), plain / KD | batch production share of plain epoch |",
                  "|---|---|---|---|---|---|---|"]
        for g in growth:
            p, k = g["plain"]["epoch_s"][0], g["kd cached"]["epoch_s"][0]
            pc, kc = g["plain"]["epoch_cpu_s"][0], g["kd cached"]["epoch_cpu_s"][0]
            lines.append(f"| {g['n']:,} | {p:.2f} | {pc / g['n'] * 1000:.3f} | {k:.2f} | {kc / g['n'] * 1000:.3f} | "
                         f"{g['plain']['peak_mib']:.0f} (+{g['plain']['extra_mib']:.0f}) / {g['kd cached']['peak_mib']:.0f} "
                         f"(+{g['kd cached']['extra_mib']:.0f}) | {g['loading_s'] / p:.1%} |")
        lines += ["", "Exponent b of epoch time ∝ n^b (least squares on logs; CPU seconds of the training steps, and wall): " +
                  ", ".join(f"{a} {e:.2f}" for a, e in exps.items()) + ".",
                  "", "Memory caveat: one long-lived process runs every fit and the allocator keeps freed memory, so "
                  "\"above start\" depends on what ran before; it is not a per-fit requirement.", ""]
    say = lambda k, v: verdicts.get(k) or ("holds" if v else "does not hold")  # noqa: E731
    lines += ["## Targets", ""] + [f"- {k}: **{say(k, v)}**" for k, v in checks.items()] + [""]
    write_text(out.with_suffix(".md"), "\n".join(lines))
    write_json(out.with_suffix(".json"), {"meta": meta, "results": res, "ratios": table, "exponents": exps, "checks": checks,
                                            "verdicts": {k: say(k, v) for k, v in checks.items()}})
    for k, v in checks.items():
        print(f"target: {k}: {say(k, v).upper()}")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
