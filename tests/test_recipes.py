"""Every shipped recipe validates and passes --smoke (tiny synthetic data of its kind, one epoch)."""
from pathlib import Path

import pytest
import yaml

import edgedistill
from edgedistill.config import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert any(p.name == "quickstart.yaml" for p in RECIPES)


def _is_sweep(path: Path) -> bool:
    """Study recipes (a top-level `sweep:`) are smoke-tested as sweeps in tests/test_sweep.py."""
    return "sweep" in (yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize("path", [p for p in RECIPES if not _is_sweep(p)], ids=lambda p: p.stem)
def test_recipe_smoke(path, tmp_path):
    load_recipe(path)  # the real recipe validates as written
    summary = edgedistill.run(path, out=tmp_path / "run", smoke=True, progress=False)
    assert summary["smoke"] is True
    assert summary["rows"], "a run reports at least one row"
    assert (tmp_path / "run" / "report.md").is_file()
