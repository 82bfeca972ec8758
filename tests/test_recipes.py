"""Every shipped recipe validates and passes --smoke (tiny synthetic data of its kind, one epoch): the method's row
is reported with finite metrics, and every loss term its ``training_step`` returns is logged in the run's
``metrics.jsonl``."""
import json
import math
from pathlib import Path

import pytest
import yaml

import edgedistill
from edgedistill.config import load_recipe
from edgedistill.registry import METHODS

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert any(p.name == "quickstart.yaml" for p in RECIPES)


def _is_sweep(path: Path) -> bool:
    """Study recipes (a top-level `sweep:`) are smoke-tested as sweeps in tests/test_sweep.py."""
    return "sweep" in (yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize("path", [p for p in RECIPES if not _is_sweep(p)], ids=lambda p: p.stem)
def test_recipe_smoke(path, tmp_path, monkeypatch):
    recipe = load_recipe(path)  # the real recipe validates as written
    name = recipe.method.name
    entry = METHODS.entry(name)
    cls, step = entry.obj, entry.obj.training_step
    returned: set[str] = set()

    def spy(self, batch, s):  # records the term names the regime gives the engine; changes nothing
        terms = step(self, batch, s)
        if type(self) is cls:  # not a teacher or baseline trained with a parent class
            returned.update(terms)
        return terms

    monkeypatch.setattr(cls, "training_step", spy)
    summary = edgedistill.run(path, out=tmp_path / "run", smoke=True, progress=False)
    assert summary["smoke"] is True
    assert summary["rows"], "a run reports at least one row"
    assert (tmp_path / "run" / "report.md").is_file()

    # The regime's own row (the deliverable), with finite metrics.
    rows = [r for r in summary["rows"] if r["model"] == summary["deliverable"]]
    assert len(rows) == 1, f"no single row for the deliverable {summary['deliverable']!r}"
    assert rows[0]["role"] == ("student alone" if entry.meta.get("baseline") else "method")
    assert rows[0]["metrics"], "the method's row has no metrics"
    for metric, stat in rows[0]["metrics"].items():
        assert all(isinstance(stat[k], (int, float)) and math.isfinite(stat[k]) for k in ("mean", "std")), (metric, stat)

    # Every term training_step returned is logged in the run's metrics.jsonl (the engine's epoch records).
    assert returned, f"method '{name}' never ran a training step"
    first = tmp_path / "run" / summary["folds"][0]["dir"] if summary.get("folds") else tmp_path / "run"  # a fold's run
    for seed in summary["seeds"]:
        folder = first / name / f"seed{seed}"
        # A staged run (docs/stages.md) logs each stage but the last in stages/<name>/, with that stage's terms only.
        logs = [folder / "metrics.jsonl", *sorted(folder.glob("stages/*/metrics.jsonl"))]
        logged: set[str] = set()
        for log in logs:
            records = [json.loads(line) for line in log.read_text().splitlines()]
            assert records, f"{log} is empty"
            for record in records:
                if len(logs) == 1:
                    assert returned <= set(record["train"]), f"terms {sorted(returned - set(record['train']))} not logged in {log}"
                logged |= set(record["train"])
                assert all(math.isfinite(v) for v in record["train"].values()), record["train"]
        assert returned <= logged, f"terms {sorted(returned - logged)} not logged in any stage's metrics.jsonl under {folder}"
