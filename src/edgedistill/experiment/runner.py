"""recipe -> runs: teacher (cached) -> student alone (cached) -> distilled student, over seeds -> report.

Everything is built and checked (data, models, method, one forward pass) before the run directory is
created, so bad input leaves nothing behind. A run directory that already holds the same resolved
config is resumed: finished stages are read back, an interrupted stage continues from its last epoch.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from edgedistill import __version__
from edgedistill.config import Recipe, load_recipe, recipe_to_dict, safe_load
from edgedistill.data.dataset import DataSplits
from edgedistill.engine.loop import Stage, Trainer, deliverable_weights
from edgedistill.engine.evaluate import evaluate
from edgedistill.engine.progress import StageProgress
from edgedistill.errors import UserInputError
from edgedistill.experiment import report
from edgedistill.experiment.build import build_method, build_network, dry_run, seed_everything
from edgedistill.experiment.teacher_cache import ModelCache, cache_key, default_cache_dir
from edgedistill.io import read_json, write_json, write_text
from edgedistill.methods.supervised import Supervised


@dataclass
class Plan:
    recipe: Recipe
    splits: DataSplits
    data_key: str
    smoke: bool
    student: torch.nn.Module  # the checked, untrained student: its size goes into the report


def plan(recipe: Recipe, smoke: bool = False) -> Plan:
    """Load the data and build every network and the method once, to fail early. Writes nothing."""
    from edgedistill.data import dataset_fingerprint, prepare_data

    splits = prepare_data(recipe.data, seed=recipe.data.split.seed)
    info = splits.info
    if smoke and recipe.teacher is not None and recipe.teacher.view not in info.views:
        # Synthetic smoke data has only "x": let a privileged-view teacher read it under its own name.
        for part in (splits.train, splits.val, splits.test):
            part.views[recipe.teacher.view] = part.views["x"]
        info.views[recipe.teacher.view] = info.views["x"]
    if recipe.teacher is not None:
        view = recipe.teacher.view
        for name in ("train", "val", "test"):
            if view not in getattr(splits, name).views:
                # The teacher is selected on validation and reported on test, on its own view.
                raise UserInputError(
                    f"teacher.view: the {name} split has no view '{view}' (for a .npz, add 'test_{view}'); "
                    "the teacher reads it in every split"
                )
    teacher = build_network(recipe.teacher, info, "teacher", recipe.teacher.view) if recipe.teacher else None
    student = build_network(recipe.student, info, "student")
    build_method(recipe, student, teacher, splits)
    dry_run(splits, student, teacher, recipe.teacher.view if recipe.teacher else "x")
    return Plan(recipe, splits, dataset_fingerprint(recipe.data, seed=recipe.data.split.seed), smoke, student)


def open_run_dir(out: Path, recipe: Recipe) -> Path:
    resolved = recipe_to_dict(recipe)
    cfg_path = out / "config.yaml"
    if out.exists():
        if cfg_path.is_file():
            with cfg_path.open() as fh:
                previous = safe_load(fh)
            if previous != resolved:
                raise UserInputError(
                    f"--out '{out}' holds a run with a different config; choose another --out, or delete it to start over"
                )
            return out  # same config: resume
        if any(out.iterdir()):
            raise UserInputError(f"--out '{out}' exists and is not an edgedistill run directory")
    out.mkdir(parents=True, exist_ok=True)
    write_text(cfg_path, yaml.safe_dump(resolved, sort_keys=False))
    return out


def _model_row(name: str, role: str, model: torch.nn.Module, per_seed: list[dict], select: str) -> dict[str, Any]:
    """Test metrics (what is reported) and validation metrics (what choices are made on), mean ± std."""
    from edgedistill.models import describe

    return {
        "model": name,
        "role": role,
        **describe(model),
        "metrics": report.aggregate(per_seed, select),
        "val_metrics": report.aggregate(per_seed, select, split="val"),
        "per_seed_test": [s["test"][select] for s in per_seed],
    }


class Runner:
    def __init__(self, p: Plan, run_dir: Path, progress: StageProgress) -> None:
        self.p, self.r, self.dir, self.progress = p, p.recipe, run_dir, progress
        cache_root = run_dir / "cache" if p.smoke else default_cache_dir(self.r.cache_dir)
        self.cache = ModelCache(cache_root)
        self.trainer = Trainer(self.r.engine, progress)

    # -- cached supervised networks (the teacher, the student alone) ---------------------------------
    def _cached_supervised(self, role: str, cfg: Any, train_cfg: Any, seed: int, view: str) -> tuple[torch.nn.Module, dict]:
        info = self.p.splits.info
        parts = {
            "version": __version__,  # a new toolkit version may train differently: never reuse across versions
            "precision": self.r.engine.precision,
            "role": role,
            "data": self.p.data_key,
            "model": {"name": cfg.model, **cfg.kwargs},
            "train": train_cfg.model_dump(mode="json"),
            "seed": seed,
            "view": view,
        }
        key = cache_key(parts)
        net = build_network(cfg, info, role, view, seed=seed)

        def train(partial: Path) -> tuple[dict, dict]:
            seed_everything(seed)
            method = Supervised(net, info)
            splits = self.p.splits if view == "x" else _view_as_x(self.p.splits, view)
            summary = self.trainer.fit(method, splits, Stage(f"{role} seed {seed}", partial, seed, train_cfg))
            return deliverable_weights(partial, "best"), summary

        state, summary, cached = self.cache.get_or_train(key, parts, train)
        net.load_state_dict(state)
        if cached:
            self.progress.message(f"{role} seed {seed}: reused from cache ({self.cache.entry(key)})")
        summary = {**summary, "cache_key": key, "cached": cached}
        return net, summary

    def teacher(self) -> tuple[Optional[torch.nn.Module], Optional[dict]]:
        t = self.r.teacher
        if t is None:
            return None, None
        info, device = self.p.splits.info, self.trainer.fabric.device
        if t.checkpoint is not None:
            net = build_network(t, info, "teacher", t.view, seed=t.seed)
            splits = _view_as_x(self.p.splits, t.view)
            metrics = {split: evaluate(net, getattr(splits, split), info, device) for split in ("val", "test")}
            summary = {"label": "teacher", "checkpoint": str(t.checkpoint), "val": {"best": metrics["val"], "last": metrics["val"]},
                       "test": {"best": metrics["test"], "last": metrics["test"]}}
        else:
            net, summary = self._cached_supervised("teacher", t, t.train, t.seed, t.view)
        write_json(self.dir / "teacher" / "summary.json", summary)
        return net, summary

    def baseline(self, seed: int) -> dict:
        net, summary = self._cached_supervised("student", self.r.student, self.r.train, seed, "x")
        write_json(self.dir / "student_alone" / f"seed{seed}" / "summary.json", summary)
        return summary

    def distilled(self, seed: int, teacher: Optional[torch.nn.Module]) -> dict:
        stage_dir = self.dir / self.r.method.name / f"seed{seed}"
        if (stage_dir / "summary.json").is_file():
            return read_json(stage_dir / "summary.json")
        student = build_network(self.r.student, self.p.splits.info, "student", seed=seed)
        method = build_method(self.r, student, teacher, self.p.splits)
        seed_everything(seed)
        return self.trainer.fit(method, self.p.splits, Stage(f"{self.r.method.name} seed {seed}", stage_dir, seed, self.r.train))


def _view_as_x(splits: DataSplits, view: str) -> DataSplits:
    """The same splits with ``view`` in the "x" slot: a teacher trains and evaluates on its own view."""
    if view == "x":
        return splits
    swap = lambda d: type(d)({**d.views, "x": d.views[view]}, d.y, d.group)  # noqa: E731
    return DataSplits(swap(splits.train), swap(splits.val), swap(splits.test), splits.info)


def method_label(recipe: Recipe) -> str:
    if recipe.method.name == "offline" and recipe.method.terms:
        return "+".join(t.loss for t in recipe.method.terms)
    return recipe.method.name


def run(
    source: str | Path | dict[str, Any],
    overrides: Optional[list[str] | dict[str, Any]] = None,
    *,
    out: Optional[str | Path] = None,
    smoke: bool = False,
    progress: bool = True,
    command: Optional[str] = None,
) -> dict[str, Any]:
    """Run a recipe end to end and return its summary (also written to ``<run>/summary.json``)."""
    recipe = load_recipe(source, overrides)
    if smoke:
        from edgedistill.experiment.smoke import smoke_recipe

        recipe = smoke_recipe(recipe)
    p = plan(recipe, smoke)
    run_dir = Path(out) if out else Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = open_run_dir(run_dir, recipe)
    select = recipe.report.select
    # Thread count and deterministic mode are process-wide torch settings: restore them for the caller.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    command = command or "edgedistill.run(" + repr(str(source) if not isinstance(source, dict) else "<dict>") + ")"
    try:
        with StageProgress(enabled=progress and recipe.engine.progress) as prog:
            prog.message(f"Run directory: {run_dir}")
            runner = Runner(p, run_dir, prog)
            teacher, t_summary = runner.teacher()
            baselines, results = [], []
            for seed in recipe.seeds:
                if recipe.baseline and recipe.method.name != "supervised":
                    baselines.append(runner.baseline(seed))
                results.append(runner.distilled(seed, teacher))
    except KeyboardInterrupt:
        again = command if "--out" in command else f"{command} --out {run_dir}"
        print(f"Interrupted. Finished stages and the last finished epoch are kept; resume with: {again}", file=sys.stderr)
        raise
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)

    info, student = p.splits.info, p.student
    rows = []
    if teacher is not None:
        rows.append(_model_row(recipe.teacher.model, "teacher", teacher, [t_summary], "best"))
    if baselines:
        rows.append(_model_row(recipe.student.model, "student alone", student, baselines, select))
    role = "student alone" if recipe.method.name == "supervised" else "method"
    rows.append(_model_row(f"{recipe.student.model} + {method_label(recipe)}", role, student, results, select))
    if info.task == "classification" and teacher is not None and baselines:
        t_acc, s_acc = rows[0]["metrics"]["acc"]["mean"], rows[1]["metrics"]["acc"]["mean"]
        noise = rows[1]["metrics"]["acc"]["std"]
        for row in rows[2:]:
            row["gap_closed"] = report.gap_closed(row["metrics"]["acc"]["mean"], s_acc, t_acc, noise)
    summary: dict[str, Any] = {
        "name": recipe.name,
        "task": info.task,
        "select": select,
        "seeds": recipe.seeds,
        "teacher_seed": recipe.teacher.seed if recipe.teacher else None,
        "smoke": smoke,
        "data": {"name": info.name, "sizes": info.sizes, "split_by": info.split_by, "official_test": info.official_test,
                 "classes": info.classes},
        "rows": rows,
        "run_dir": str(run_dir),
        "command": command,
    }
    summary["verdict"] = report.verdict(summary)
    write_json(run_dir / "summary.json", summary)
    write_text(run_dir / "report.md", report.markdown(summary))
    return summary


def command_line() -> str:
    return "edgedistill " + " ".join(sys.argv[1:])
