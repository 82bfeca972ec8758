"""The layer architecture (the import-linter contract in pyproject.toml) and a rule that spans layers: a regime
that does its own backward pass (``manual_optimization``) is refused mixed precision before anything is written."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import edgedistill
from edgedistill.config import load_recipe
from edgedistill.errors import UserInputError
from edgedistill.experiment.build import MIXED_PRECISION, check_precision
from edgedistill.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    beside = Path(sys.executable).parent / "lint-imports"
    exe = str(beside) if beside.is_file() else shutil.which("lint-imports")
    if exe is None:
        pytest.skip("lint-imports (import-linter, in the 'test' extra) is not installed")
    return exe


def test_the_layer_contract_holds():
    res = subprocess.run([_lint_imports(), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "1 kept, 0 broken" in res.stdout


def _manual_methods() -> list[str]:
    names = [e.name for e in METHODS if getattr(e.obj, "manual_optimization", False)]
    if not names:
        pytest.skip("no registered regime sets manual_optimization")
    return names


def _recipe(method: str, precision: str) -> dict:
    return {"name": "precision", "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 4}},
            "student": {"model": "cnn1d", "width": 4}, "method": {"name": method},
            "train": {"epochs": 1, "batch_size": 8}, "seeds": [0], "engine": {"precision": precision, "progress": False}}


@pytest.mark.parametrize("precision", MIXED_PRECISION)
def test_manual_optimisation_is_refused_mixed_precision_before_a_run_directory_exists(tmp_path, precision):
    for name in _manual_methods():
        with pytest.raises(UserInputError, match=f"engine.precision: '{precision}'.*method '{name}'"):
            check_precision(load_recipe(_recipe(name, precision)))
        out = tmp_path / f"run-{name}"
        with pytest.raises(UserInputError, match="engine.precision"):
            edgedistill.run(_recipe(name, precision), out=out, progress=False)
        assert not out.exists()


def test_full_precision_and_ordinary_regimes_are_not_refused():
    for name in _manual_methods():
        for precision in ("32-true", "64-true"):
            check_precision(load_recipe(_recipe(name, precision)))
    for precision in MIXED_PRECISION:  # Fabric's own backward scales the loss of a regime it optimises
        if precision == "16-mixed" and not torch.cuda.is_available():  # float16 autocast needs a GPU: refused here
            with pytest.raises(UserInputError, match="engine.precision: '16-mixed'.*needs a GPU"):
                check_precision(load_recipe(_recipe("supervised", precision)))
            continue
        check_precision(load_recipe(_recipe("supervised", precision)))
