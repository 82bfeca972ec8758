"""How a run's cached, clean-trained teacher classifies AUGMENTED training windows.

    python benchmarks/teacher_under_augmentation.py RUN_DIR [AUGMENTATION ...]

With ``augment.teacher_sees: same`` the teacher's soft targets are computed on the student's augmented input;
a teacher trained on clean data may not recognise it. This prints the teacher's training-split accuracy on
clean input and under each augmentation (default: the wearable study's removal, noise, shift, mix1, mix2,
at their defaults; one fixed draw, seed 0). Needs the run's model cache ($EDGEDISTILL_CACHE or ~/.cache).
"""
from __future__ import annotations

import sys

import torch

from edgedistill.config import load_recipe
from edgedistill.engine import checkpoint as ckpt
from edgedistill.experiment.build import build_network
from edgedistill.experiment.topology import prepare_with_pis
from edgedistill.io import read_json
from edgedistill.paths import default_cache_dir
from edgedistill.registry import AUGMENTS


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    run, names = sys.argv[1], sys.argv[2:] or ["removal", "noise", "shift", "mix1", "mix2"]
    torch.set_num_threads(1)
    recipe = load_recipe(f"{run}/config.yaml")
    splits = prepare_with_pis(recipe.data, seed=recipe.data.split.seed)
    key = read_json(f"{run}/teacher/summary.json")["cache_key"]
    teacher = build_network(recipe.teacher, splits.info, "teacher")
    teacher.load_state_dict(ckpt.load(default_cache_dir(recipe.cache_dir) / "models" / key / "weights.pt"))
    teacher.eval()
    x, y = splits.train.x, splits.train.y
    for name in ["clean", *names]:
        xa = x if name == "clean" else AUGMENTS.get(name)(x, torch.Generator().manual_seed(0))
        with torch.no_grad():
            acc = float((teacher(xa).argmax(1) == y).float().mean())
        print(f"{splits.info.name:14s} {name:8s} teacher accuracy on the training split: {acc:.3f}")


if __name__ == "__main__":
    main()
