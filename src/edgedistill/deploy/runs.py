"""Read a finished run directory back: its recipe, its data (re-prepared, same splits and statistics) and
the deliverable student of one seed, from ``<method>/seed<k>/checkpoints/{best,last}.pt``.

Without a seed, the seed whose student scored best on validation is taken (``pick_seed``): the one a user would
ship, chosen on data the test numbers were not, and never seed 0 merely because it comes first."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from edgedistill.errors import UserInputError

Which = Literal["best", "last"]


@dataclass
class LoadedRun:
    run_dir: Path
    recipe: Any  # config.Recipe
    splits: Any  # data.dataset.DataSplits
    student: Any  # torch.nn.Module, eval mode, weights loaded
    seed: int
    which: str
    checkpoint: Path
    seed_reason: str = ""  # why this seed, when the caller gave none

    @property
    def info(self) -> Any:
        return self.splits.info

    def metadata(self) -> Any:
        from edgedistill.deploy.metadata import from_run

        return from_run(self.info, self.recipe.data, self.recipe.student, run_dir=self.run_dir, seed=self.seed,
                        which=self.which)


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` must be an edgedistill run directory (a ``config.yaml`` written by ``edgedistill run``)."""
    path = Path(run_dir)
    if not path.exists():
        raise UserInputError(f"run directory '{path}' does not exist")
    if not path.is_dir():
        raise UserInputError(f"'{path}' is not a run directory (expected a folder made by 'edgedistill run')")
    if not (path / "config.yaml").is_file():
        raise UserInputError(f"'{path}' is not an edgedistill run directory: it has no config.yaml")
    return path


def checkpoint_path(run_dir: str | Path, seed: Optional[int] = None,
                    which: str = "best") -> tuple[Any, int, Path, str]:
    """(recipe, seed, checkpoint file, why this seed: "" when ``seed`` was given) of a run, every problem named."""
    from edgedistill.config import load_recipe

    path = check_run_dir(run_dir)
    if which not in ("best", "last"):
        raise UserInputError(f"--which: expected 'best' or 'last', got {which!r}")
    try:
        recipe = load_recipe(path / "config.yaml")
    except UserInputError as exc:
        raise UserInputError(f"'{path}' holds a config.yaml this toolkit cannot read: {exc}") from None
    only = recipe.eval.only or []
    # A fold's own directory has eval.only: [i] and no fold folders; the cross-validation's has fold<i>/ folders.
    if recipe.eval.scheme != "holdout" and (len(only) != 1 or (path / f"fold{only[0]}" / "config.yaml").is_file()):
        folds = sorted((p.name for p in path.glob("fold*") if (p / "config.yaml").is_file()), key=lambda n: int(n[4:] or 0))
        raise UserInputError(
            f"'{path}' is a cross-validation run (eval.scheme {recipe.eval.scheme}): it has one student per fold and "
            f"seed, each trained without its fold's test part. Export or profile one fold's: "
            f"'{path / (folds[0] if folds else 'fold0')}' ({len(folds)} fold folder(s) here); to ship one student "
            f"trained on all subjects but validation, run the recipe with eval.scheme=holdout"
        )
    reason = ""
    if seed is None:
        seed, reason = choose_seed(path, recipe, which)
    if seed not in recipe.seeds:
        raise UserInputError(f"--seed: the run has seeds {recipe.seeds}, not {seed}")
    ckpt = path / recipe.method.name / f"seed{seed}" / "checkpoints" / f"{which}.pt"
    if not ckpt.is_file():
        raise UserInputError(
            f"'{path}': no student checkpoint at {ckpt.relative_to(path)} (is the run finished? "
            f"resume it with: edgedistill run {shlex.quote(str(path / 'config.yaml'))} --out {shlex.quote(str(path))})"
        )
    return recipe, seed, ckpt, reason


def choose_seed(path: Path, recipe: Any, which: str = "best") -> tuple[int, str]:
    """(seed, one line saying why): the seed whose ``which`` checkpoint scored best on validation, read from each
    seed's ``<method>/seed<k>/summary.json`` (the run's summary keeps test numbers per seed, not validation ones);
    compared as training chose checkpoints (accuracy, then NLL; or RMSE, then MAE). Seeds not finished are skipped."""
    from edgedistill.io import read_json
    from edgedistill.metrics import selection_score

    scores: dict[int, dict[str, float]] = {}
    for k in recipe.seeds:
        file = path / recipe.method.name / f"seed{k}" / "summary.json"
        try:
            val = read_json(file)["val"][which]
            selection_score(val)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        scores[k] = val
    first = recipe.seeds[0]
    if len(recipe.seeds) == 1:
        return first, f"seed {first}: the run's only seed"
    if not scores:
        return first, f"seed {first}: the run's first seed (no seed has a finished summary.json to compare on validation)"
    best = max(scores, key=lambda k: selection_score(scores[k]))  # the first of equals
    key = "acc" if "acc" in scores[best] else "rmse"
    others = ", ".join(f"seed {k} {v[key]:.3f}" for k, v in scores.items() if k != best)
    missing = [k for k in recipe.seeds if k not in scores]
    tied = [k for k in scores if k != best and scores[k][key] == scores[best][key]]
    second = "nll" if key == "acc" else "mae"
    tie = f"; tied with seed(s) {tied}, lower validation {second} {scores[best][second]:.3f}" if tied else ""
    return best, (f"seed {best}: its student had the best validation {key} ({scores[best][key]:.3f}, {which} checkpoint; "
                  f"{others or 'no other seed finished'}{tie}{f'; seeds {missing} unfinished' if missing else ''}); "
                  f"--seed picks another")


def pick_seed(run_dir: str | Path, which: str = "best") -> tuple[int, str]:
    """``choose_seed`` for a run directory, every problem with it named as ``checkpoint_path`` names it."""
    _, seed, _, reason = checkpoint_path(run_dir, None, which)
    return seed, reason


def load_run(run_dir: str | Path, seed: Optional[int] = None, which: str = "best") -> LoadedRun:
    """Rebuild the run's data and its student (``seed``: default the seed best on validation, ``choose_seed``)."""
    from edgedistill.data.folds import fold_of
    from edgedistill.engine import checkpoint as ckpt_io
    from edgedistill.experiment.build import build_network
    from edgedistill.experiment.rundir import check_inputs
    from edgedistill.experiment.topology import prepare_with_pis

    recipe, seed, ckpt, reason = checkpoint_path(run_dir, seed, which)
    # The data file (and start checkpoints) must be the ones the run used, by content: another file's
    # normalisation embedded in the ONNX would pass verification and still be wrong.
    check_inputs(Path(run_dir), "export or profile it")
    fold = fold_of(recipe.eval, recipe.eval.only[0]) if recipe.eval.scheme != "holdout" else None  # one fold's run
    splits = prepare_with_pis(recipe.data, seed=recipe.data.split.seed, fold=fold)
    state = ckpt_io.load(ckpt, hint=f"the run's checkpoint is damaged; rerun the run's command to retrain that stage "
                                   f"(move '{Path(ckpt).parent.parent}' aside first)")
    networks = state.get("networks") if isinstance(state, dict) else None
    key = state.get("deliverable", "student") if isinstance(state, dict) else "student"  # e.g. RoS-KD ships its EMA copy
    if not isinstance(networks, dict) or key not in networks:
        raise UserInputError(f"checkpoint '{ckpt}' has no 'networks.{key}' state dict")
    student_cfg = recipe.student.model_copy(update={"checkpoint": None})
    try:
        student = build_network(student_cfg, splits.info, "student", seed=seed)
    except UserInputError as exc:
        if ":" not in recipe.student.model or recipe.student.model.startswith("object:"):
            raise  # a zoo model's error, or an API object's (which says itself how to export it)
        # The student is the user's class: it is rebuilt from its code, which must still import here.
        raise UserInputError(f"'{run_dir}': the run's student class '{recipe.student.model}' must be importable to "
                             f"export or profile it: {exc}") from None
    ckpt_io.load_state_dict_checked(student, networks[key], f"checkpoint '{ckpt}'")
    student.eval()
    return LoadedRun(Path(run_dir), recipe, splits, student, seed, which, ckpt, reason)


def default_paths(run: LoadedRun, out: Optional[str | Path]) -> tuple[Path, Path]:
    """(fp32 file, int8 file): ``--out FILE`` and ``FILE`` with ``.int8.onnx``, or under ``<run>/export/``."""
    if out is None:
        fp32 = run.run_dir / "export" / f"student_seed{run.seed}_{run.which}.onnx"
    else:
        fp32 = Path(out)
        if fp32.suffix != ".onnx":
            raise UserInputError(f"--out: '{fp32}' must end in .onnx")
    return fp32, fp32.with_name(fp32.name[: -len(".onnx")] + ".int8.onnx")
