"""CIFAR-100 with RepDistiller's protocol: resnet32x4 -> resnet8x4 and wrn_40_2 -> wrn_16_2, our accuracy beside the
published one. Not run in CI (a GPU and hours); ``--smoke`` runs the same code on a tiny synthetic stand-in.

Protocol (Tian et al., *Contrastive Representation Distillation*, ICLR 2020; code: HobbitLong/RepDistiller): 240
epochs, SGD lr 0.05, momentum 0.9, weight decay 5e-4, lr x0.1 at epochs 150, 180 and 210, batch 64, random crop 32
with 4 pixels of padding and horizontal flip; the teacher trained the same way on its own (no distillation), then
frozen. Every run goes through ``edgedistill.run``: a ``supervised`` run trains each teacher (with the augmentation:
``teacher.train`` in a distillation recipe would train it without), its last-epoch weights are given to the
distillation runs as ``teacher: {model, load}``, and each method is a recipe (terms below).

Method settings (from the official scripts and configs): KD 0.1 CE + 0.9 KD at T = 4; FitNet CE + 100 MSE hints at
the middle stage (``stage2``); AT CE + 1000 AT at the three stages; CRD CE + 0.8 CRD on the pooled embeddings (16384
negatives, feature dim 128, our defaults); DKD CE + DKD (alpha 1, beta 8 on resnet8x4, 6 on wrn_16_2, T = 4, a 20-epoch
linear warm-up, mdistiller); DIST CE + 2 x (inter + intra) at T = 4 (DIST's CIFAR beta = gamma = 2); ReviewKD CE + 5 HCL
(20-epoch warm-up), student stages 1, 2, 3 and the pooled embedding against the teacher's (the official script's
weight for both pairs).

Where we differ from RepDistiller: 1,000 of the 50,000 training images are held out as validation (a recipe needs a
validation split); the reported number is the last epoch's test accuracy (RepDistiller logs the best test accuracy
over epochs, which selects on the test set); the images are normalised per channel before the crop, so the 4 padded
pixels are the channel mean (torchvision pads black pixels before normalising); the teacher is trained here, not
downloaded. ReviewKD's official code trains with batch 128, lr 0.1 and pre-ReLU teacher features; here it gets the
protocol above and our zoo's stage outputs (after their ReLU), its four stages named as a list of taps per network.

Published top-1 test accuracy (%, CIFAR-100). RepDistiller README "Benchmark Results on CIFAR-100" (CRD paper
Table 1; teacher, student and every method but the last three rows):

| method | wrn_40_2 -> wrn_16_2 | resnet32x4 -> resnet8x4 |
|---|---|---|
| teacher | 75.61 | 79.42 |
| student alone | 73.26 | 72.50 |
| KD | 74.92 | 73.33 |
| FitNet | 73.58 | 73.50 |
| AT | 74.08 | 73.44 |
| SP | 73.83 | 72.94 |
| CC | 73.56 | 72.97 |
| VID | 74.11 | 73.09 |
| RKD | 73.35 | 71.90 |
| PKT | 74.54 | 73.64 |
| AB | 72.50 | 73.17 |
| FT | 73.25 | 72.86 |
| FSP | 72.91 | 72.62 |
| NST | 73.68 | 73.30 |
| CRD | 75.48 | 75.51 |
| DKD | 76.23 | 76.32 |
| ReviewKD | 76.12 | 75.63 |
| DIST | - | 76.31 |

DKD: mdistiller README, "Main Benchmark Results" (Zhao et al., CVPR 2022). ReviewKD: Chen et al., CVPR 2021, Table 1
(75.63 also on its Papers-with-Code entry; 76.12 for wrn_16_2 is from the paper's table and was not re-checked against
a second source). DIST: Huang et al., NeurIPS 2022, CIFAR-100 table (76.31, not re-checked against a second source; the
paper gives no wrn_40_2 -> wrn_16_2 row that we could confirm, so none is compared).

Run: ``python benchmarks/cifar100.py --data <folder holding cifar-100-python's train/test/meta> [--out runs/cifar100]
[--pairs resnet8x4,wrn_16_2] [--methods kd,...] [--seeds 0,1,2]``; results go to ``<out>/results.json`` and the table
to ``<out>/results.md``. ``--smoke``: a stand-in of the same shape (3 x 32 x 32, 100 classes, 2 images per class) in
``<out>/standin``, one epoch, a quarter held out (the stand-in is too small for 1,000), on the CPU.
"""
from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

import edgedistill
from edgedistill.errors import UserInputError
from edgedistill.io import make_dirs, write_json, write_text

ROOT = Path(__file__).resolve().parent.parent

# ---- the protocol --------------------------------------------------------------------------------------
PAIRS = {"resnet8x4": "resnet32x4", "wrn_16_2": "wrn_40_2"}  # student -> teacher
EPOCHS = 240
TRAIN = {"epochs": EPOCHS, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
         "schedule": "step", "milestones": [150 / EPOCHS, 180 / EPOCHS, 210 / EPOCHS], "gamma": 0.1}
AUGMENT = {"student": [{"name": "crop", "padding": 4}, {"name": "flip"}], "teacher_sees": "same"}
VAL = 1000 / 50000
REVIEW_TAPS = ["stage1", "stage2", "feat", "emb"]


def terms(method: str, student: str, review_taps: Any = REVIEW_TAPS) -> list[dict[str, Any]]:
    ce = {"loss": "ce", "weight": 1.0}
    return {
        "kd": [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}],
        "fitnet": [ce, {"loss": "fitnet", "weight": 100, "student_tap": "stage2", "teacher_tap": "stage2"}],
        "at": [ce] + [{"loss": "at", "weight": 1000, "student_tap": t, "teacher_tap": t} for t in ("stage1", "stage2", "feat")],
        "crd": [ce, {"loss": "crd", "weight": 0.8, "student_tap": "emb", "teacher_tap": "emb"}],
        "dkd": [ce, {"loss": "dkd", "weight": 1.0, "alpha": 1.0, "beta": 8.0 if student == "resnet8x4" else 6.0,
                     "temperature": 4, "warmup_epochs": 20}],
        "dist": [ce, {"loss": "dist", "weight": 2.0, "beta": 1.0, "gamma": 1.0, "temperature": 4}],
        "reviewkd": [ce, {"loss": "reviewkd", "weight": 5.0, "warmup_epochs": 20, "student_tap": review_taps,
                          "teacher_tap": review_taps}],
    }[method]


METHODS = ["kd", "fitnet", "at", "crd", "dkd", "dist", "reviewkd"]
# Published top-1 (%), per student (see the docstring for the sources); None: no published number we could confirm.
PUBLISHED: dict[str, dict[str, Optional[float]]] = {
    "resnet8x4": {"teacher": 79.42, "student alone": 72.50, "kd": 73.33, "fitnet": 73.50, "at": 73.44, "crd": 75.51,
                  "dkd": 76.32, "dist": 76.31, "reviewkd": 75.63},
    "wrn_16_2": {"teacher": 75.61, "student alone": 73.26, "kd": 74.92, "fitnet": 73.58, "at": 74.08, "crd": 75.48,
                 "dkd": 76.23, "dist": None, "reviewkd": 76.12},
}


# ---- recipes -------------------------------------------------------------------------------------------
def data_section(folder: Path, val: float) -> dict[str, Any]:
    return {"name": "cifar100", "root": str(folder), "params": {"labels": "fine"}, "split": {"val": val},
            "normalize": "per_channel"}


def common(folder: Path, val: float, train: dict[str, Any], seeds: list[int], accelerator: str,
           cache: Path) -> dict[str, Any]:
    """What every run shares; ``cache``: the model cache of this benchmark's runs (teachers' and students' reuse)."""
    return {"data": data_section(folder, val), "augment": AUGMENT, "train": train, "seeds": seeds, "cache_dir": str(cache),
            "report": {"select": "last", "plots": False}, "engine": {"accelerator": accelerator, "progress": False}}


def teacher_recipe(teacher: str, folder: Path, val: float, train: dict[str, Any], accelerator: str,
                   cache: Path) -> dict[str, Any]:
    return {"name": f"cifar100-{teacher}", "student": {"model": teacher}, "method": {"name": "supervised"},
            **common(folder, val, train, [0], accelerator, cache)}


def method_recipe(student: str, method: str, weights: Path, folder: Path, val: float, train: dict[str, Any],
                  seeds: list[int], accelerator: str, review_taps: Any, cache: Path) -> dict[str, Any]:
    return {"name": f"cifar100-{method}-{student}", "student": {"model": student},
            "teacher": {"model": PAIRS[student], "load": str(weights)},
            "method": {"name": "offline", "terms": terms(method, student, review_taps)},
            **common(folder, val, train, seeds, accelerator, cache)}


# ---- the synthetic stand-in ----------------------------------------------------------------------------
def write_standin(folder: Path, per_class: int = 2, seed: int = 0, test_per_class: Optional[int] = None) -> Path:
    """``cifar-100-python``'s three files with random images of the real shape and class structure: (n, 3072) uint8
    rows, 100 fine labels (20 coarse), ``per_class`` training and ``test_per_class`` (default ``per_class // 2``, at
    least 1) test images each."""
    rng = np.random.default_rng(seed)
    make_dirs(folder)

    def batch(n_each: int) -> dict[str, Any]:
        fine = np.repeat(np.arange(100), n_each)
        base = rng.integers(0, 256, size=(100, 3072))  # a class's mean image, so the stand-in is learnable
        data = np.clip(base[fine] + rng.normal(0, 40, size=(len(fine), 3072)), 0, 255).astype(np.uint8)
        return {"data": data, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()}

    parts = {"train": batch(per_class), "test": batch(test_per_class or max(1, per_class // 2)),
             "meta": {"fine_label_names": [f"class{i}" for i in range(100)],
                      "coarse_label_names": [f"super{i}" for i in range(20)]}}
    for name, content in parts.items():
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(pickle.dumps(content, protocol=4))  # protocol 2 from Python 3 names _codecs.encode
        tmp.replace(folder / name)  # atomic: a reader never sees half a file
    return folder


# ---- running and reporting -----------------------------------------------------------------------------
def _acc(summary: dict[str, Any], role: str) -> Optional[float]:
    row = next((r for r in summary["rows"] if r["role"] == role), None)
    return None if row is None else 100.0 * row["metrics"]["acc"]["mean"]


def run(folder: Path, out: Path, students: list[str], methods: list[str], seeds: list[int], *, smoke: bool = False,
        accelerator: str = "auto", cost: bool = False) -> dict[str, Any]:
    """The table (``smoke``: one epoch on the small stand-in; ``cost``: one epoch of every run on a full-size stand-in,
    whose minutes, times the protocol's epochs, project what the real table costs on this machine)."""
    from edgedistill.engine.loop import deliverable_weights

    import torch

    train = dict(TRAIN, epochs=1) if smoke or cost else TRAIN
    val = 0.25 if smoke else VAL
    review_taps = REVIEW_TAPS
    results: dict[str, Any] = {"protocol": {"train": train, "augment": AUGMENT, "val": val, "seeds": seeds,
                                            "smoke": smoke, "cost": cost, "reviewkd_taps": review_taps},
                                "pairs": {}}
    for student in students:
        teacher = PAIRS[student]
        t0 = time.time()
        t_run = out / "teachers" / teacher
        s = edgedistill.run(teacher_recipe(teacher, folder, val, train, accelerator, out / "cache"), out=t_run,
                            progress=False)
        weights = out / "teachers" / f"{teacher}.pt"
        if not weights.exists():
            tmp = weights.with_suffix(".tmp")
            torch.save(deliverable_weights(t_run / "supervised" / "seed0", "last"), tmp)
            tmp.replace(weights)
        # A supervised run reports its one network as the student alone: here, the teacher.
        pair: dict[str, Any] = {"teacher": teacher, "ours": {"teacher": _acc(s, "student alone")}, "minutes": {}}
        pair["minutes"]["teacher"] = round((time.time() - t0) / 60, 2)
        if cost:
            pair["epoch_s"] = {"teacher": _epoch_s(t_run / "supervised" / "seed0"),
                               "student alone": None}
        for method in methods:
            t1 = time.time()
            r = method_recipe(student, method, weights, folder, val, train, seeds, accelerator, review_taps, out / "cache")
            s = edgedistill.run(r, out=out / student / method, progress=False)
            pair["ours"].setdefault("student alone", _acc(s, "student alone"))
            pair["ours"][method] = _acc(s, "method")
            pair["minutes"][method] = round((time.time() - t1) / 60, 2)
            if cost:
                pair["epoch_s"][method] = _epoch_s(out / student / method / "offline" / "seed0")
                pair["epoch_s"]["student alone"] = pair["epoch_s"]["student alone"] or _alone_epoch_s(out / "cache", student)
            print(f"[{teacher} -> {student}] {method}: {pair['ours'][method]:.2f} "
                  f"(published {PUBLISHED[student].get(method)}) {pair['minutes'][method]} min", flush=True)
            results["pairs"][student] = pair
            table = _write(results, methods, out, cost)  # after every run: an interrupted table keeps what finished
        results["pairs"][student] = pair
    table = _write(results, methods, out, cost)
    print(table)
    return results


def _write(results: dict[str, Any], methods: list[str], out: Path, cost: bool) -> str:
    write_json(out / "results.json", results)
    table = render(results, methods) + (cost_table(results, methods) if cost else "")
    write_text(out / "results.md", table)
    return table


def render(results: dict[str, Any], methods: list[str]) -> str:
    students = list(results["pairs"])
    head = "| method | " + " | ".join(f"{results['pairs'][s]['teacher']} -> {s}: ours | published" for s in students) + " |"
    lines = [head, "|---|" + "---|---|" * len(students)]
    for method in ["teacher", "student alone", *methods]:
        cells = []
        for s in students:
            ours, pub = results["pairs"][s]["ours"].get(method), PUBLISHED[s].get(method)
            cells += [f"{ours:.2f}" if ours is not None else "-", f"{pub:.2f}" if pub is not None else "-"]
        label = "reviewkd (one tap: feat)" if method == "reviewkd" and results["protocol"]["reviewkd_taps"] == "feat" else method
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    note = " Smoke run on a synthetic stand-in: the numbers mean nothing." if results["protocol"]["smoke"] else ""
    return "\n".join(lines) + f"\n\nTop-1 test accuracy (%), last epoch, seeds {results['protocol']['seeds']}.{note}\n"


def _epoch_s(stage: Path) -> Optional[float]:
    """The engine's own time of epoch 1 (training steps and validation), from the stage's metrics.jsonl."""
    path = stage / "metrics.jsonl"
    if not path.is_file():
        return None
    return float(json.loads(path.read_text().splitlines()[0])["time_s"])


def _alone_epoch_s(cache: Path, student: str) -> Optional[float]:
    """The student alone's epoch, from its model-cache entry (the baseline is trained once, then reused)."""
    for key in sorted(cache.glob("models/*/key.json")):
        k = json.loads(key.read_text())
        if k.get("role") == "student" and k.get("model", {}).get("name") == student:
            return _epoch_s(key.parent)
    return None


def cost_table(results: dict[str, Any], methods: list[str]) -> str:
    """Seconds of one epoch per run (the engine's time: training steps and validation) and the protocol's projected
    hours (x EPOCHS), one seed."""
    lines = ["", f"Cost on this machine: seconds of one epoch per run (the engine's epoch time), and x {EPOCHS} epochs "
             "in hours (the accuracy above means nothing: a random stand-in, one epoch).", "",
             "| run | " + " | ".join(f"{results['pairs'][s]['teacher']} -> {s}" for s in results["pairs"]) + " |",
             "|---|" + "---|" * len(results["pairs"])]
    for run_name in ["teacher", "student alone", *methods]:
        cells = []
        for s in results["pairs"]:
            sec = results["pairs"][s]["epoch_s"].get(run_name)
            cells.append("-" if sec is None else f"{sec:.1f} s/epoch → {sec * EPOCHS / 3600:.2f} h")
        lines.append(f"| {run_name} | " + " | ".join(cells) + " |")
    total = sum(v or 0.0 for p in results["pairs"].values() for v in p["epoch_s"].values()) * EPOCHS / 3600
    return "\n".join(lines) + f"\n\nThe runs timed above, one seed, epochs alone (no set-up or final evaluation): about {total:.1f} h.\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="folder holding CIFAR-100's python files (train, test, meta)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "cifar100")
    p.add_argument("--pairs", default=",".join(PAIRS), help=f"students, comma-separated: {', '.join(PAIRS)}")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--smoke", action="store_true", help="a tiny synthetic stand-in of the same shape, one epoch, CPU")
    p.add_argument("--cost", action="store_true", help="one epoch of every run on a full-size synthetic stand-in "
                   "(50,000 + 10,000 images) on this machine's accelerator: minutes per epoch and projected hours")
    a = p.parse_args(argv)
    students, methods = [s for s in a.pairs.split(",") if s], [m for m in a.methods.split(",") if m]
    bad = [s for s in students if s not in PAIRS] + [m for m in methods if m not in METHODS]
    if bad:
        raise UserInputError(f"--pairs/--methods: unknown {bad}; students: {list(PAIRS)}, methods: {METHODS}")
    try:
        seeds = [int(x) for x in a.seeds.split(",")]
    except ValueError:
        raise UserInputError(f"--seeds: comma-separated integers, got {a.seeds!r}") from None
    if a.smoke:
        folder = write_standin(a.out / "standin" / "cifar-100-python")
        return run(folder, a.out, students, methods, seeds, smoke=True, accelerator="cpu")
    if a.cost:
        folder = write_standin(a.out / "standin-full" / "cifar-100-python", per_class=500, test_per_class=100)
        return run(folder, a.out / "cost", students, methods, seeds, cost=True)
    if a.data is None:
        raise UserInputError("--data: the folder holding CIFAR-100's python files (train, test, meta) is needed "
                             "(or --smoke for the synthetic stand-in)")
    return run(a.data, a.out, students, methods, seeds)


if __name__ == "__main__":
    main()
