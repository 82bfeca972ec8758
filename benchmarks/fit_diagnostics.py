"""How well each network of a finished run fits its TRAINING split, and how soft its targets are.

    python benchmarks/fit_diagnostics.py RUN_DIR [--temperature 4] [--split train]

For every teacher / assistant (weights from the model cache the run used), every student-alone baseline
(cache) and every distilled student (``<method>/seed*/checkpoints/best.pt``) it prints accuracy, mean
probability of the true class (T = 1), and at temperature T the mean entropy (nats) and mean top
probability of the softened predictions, averaged over seeds. The docs use it to tell an under-fitting
student (training accuracy well below 1: regularisers have nothing to remove) from an over-fitting one, and
to compare how soft a teacher's and an assistant's targets are. Needs the run's model cache
(``$EDGEDISTILL_CACHE`` or ~/.cache/edgedistill, or ``--cache``).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from edgedistill.config import load_recipe
from edgedistill.engine import checkpoint as ckpt
from edgedistill.engine.evaluate import predict
from edgedistill.experiment.build import build_network
from edgedistill.experiment.topology import prepare_with_pis
from edgedistill.io import read_json
from edgedistill.paths import default_cache_dir
from edgedistill.registry import METHODS


def fit_stats(logits: torch.Tensor, y: torch.Tensor, temperature: float) -> dict[str, float]:
    p = logits.softmax(1)
    q = (logits / temperature).log_softmax(1)
    return {
        "acc": float((p.argmax(1) == y).float().mean()),
        "p_true": float(p[torch.arange(len(y)), y].mean()),
        f"entropy_T{temperature:g}": float(-(q.exp() * q).sum(1).mean()),
        f"top_T{temperature:g}": float(q.exp().max(1).values.mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--split", choices=["train", "val", "test"], default="train")
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = args.run_dir
    recipe = load_recipe(run / "config.yaml")
    cache = default_cache_dir(args.cache or recipe.cache_dir) / "models"
    splits = prepare_with_pis(recipe.data, seed=recipe.data.split.seed)
    info, data, dev = splits.info, getattr(splits, args.split), torch.device("cpu")
    rows: dict[str, list[dict[str, float]]] = {}

    def add(label: str, cfg, state: dict, view: str = "x") -> None:
        net = build_network(cfg, info, label, view)
        net.load_state_dict(state)
        rows.setdefault(label, []).append(fit_stats(predict(net, data, dev, view=view), data.y, args.temperature))

    plan_cls = METHODS.get(recipe.method.name)
    seen: set[str] = set()
    for seed in recipe.seeds:
        for spec in plan_cls.teacher_plan(recipe, seed):
            folder = run / spec.name
            summary_path = folder / f"seed{seed}" / "summary.json" if (folder / f"seed{seed}").is_dir() else folder / "summary.json"
            key = read_json(summary_path)["cache_key"]
            if key in seen or key.startswith("checkpoint:"):
                continue
            seen.add(key)
            add(spec.name, spec, ckpt.load(cache / key / "weights.pt"), spec.view)
        alone = run / "student_alone" / f"seed{seed}" / "summary.json"
        if alone.is_file():
            add("student alone", recipe.student, ckpt.load(cache / read_json(alone)["cache_key"] / "weights.pt"))
        best = run / recipe.method.name / f"seed{seed}" / "checkpoints" / "best.pt"
        if best.is_file():
            state = ckpt.load(best)
            add(f"student ({recipe.method.name})", recipe.student, state["networks"][state.get("deliverable", "student")])

    print(f"{run}: {args.split} split ({len(data)} rows), mean over seeds; softened at T = {args.temperature:g}")
    keys = list(next(iter(rows.values()))[0])
    print(f"{'network':28s} {'n':>2s} " + " ".join(f"{k:>12s}" for k in keys))
    for label, stats in rows.items():
        means = [sum(s[k] for s in stats) / len(stats) for k in keys]
        spread = "  ".join(f"{k} {min(s[k] for s in stats):.3f}-{max(s[k] for s in stats):.3f}" for k in ("acc", "p_true"))
        print(f"{label:28s} {len(stats):2d} " + " ".join(f"{m:12.3f}" for m in means) + f"   range over seeds: {spread}")
    print(f"(entropy of a uniform prediction over {info.n_outputs} classes: {math.log(info.n_outputs):.3f} nats)")


if __name__ == "__main__":
    main()
