"""engine.loggers end to end: a run with ``engine.loggers: [csv]`` logs every stage it trains (the teacher and the
student alone in their model-cache folders, the distilled student in the run directory), one row per epoch, and a
logger whose extra is missing is refused with exit 2 before anything is written."""
import csv
import importlib.util
import json

from edgedistill.cli import app
from tests.helpers import TINY_RECIPE, recipe_file


def test_a_run_logs_every_stage_every_epoch(tmp_path):
    from edgedistill.experiment.runner import run

    recipe = {**TINY_RECIPE, "seeds": [0], "cache_dir": str(tmp_path / "cache"),
              "engine": {"progress": False, "loggers": ["csv"]}, "report": {"plots": False}}
    run(recipe, out=tmp_path / "run", progress=False)
    stage = tmp_path / "run" / "offline" / "seed0"
    (metrics,) = stage.glob("logs/csv/version_*/metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("train/kd")]
    logged = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    assert [float(r["train/kd"]) for r in rows] == [rec["train"]["kd"] for rec in logged]
    assert [float(r["val/acc"]) for r in rows] == [rec["val"]["acc"] for rec in logged]
    assert "offline seed 0" in (metrics.parent / "hparams.yaml").read_text()
    # The teacher and the student alone trained in the model cache: their logs went with them.
    assert len(list((tmp_path / "cache" / "models").glob("*/logs/csv/version_0/metrics.csv"))) == 2


def test_missing_extra_exits_2_before_anything_is_written(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    path = recipe_file(tmp_path, engine={"progress": False, "loggers": ["tensorboard"]})
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "engine.loggers" in result.output and "edgedistill[tensorboard]" in result.output
    assert not (tmp_path / "run").exists()
