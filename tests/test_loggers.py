"""engine.loggers (engine/loggers.py): CSV, TensorBoard and MLflow through Fabric's logger interface, read back with
each library's own reader. TensorBoard and MLflow are optional extras: their tests skip, saying so, without them."""
import csv
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgedistill.config import TrainConfig
from edgedistill.engine import loggers
from edgedistill.engine.loop import Stage
from edgedistill.errors import UserInputError
from edgedistill.io import write_text

RECORDS = [
    {"epoch": 1, "lr": 0.003, "train": {"ce": 1.2, "kd": 0.5, "total": 1.7}, "val": {"acc": 0.4, "nll": 1.1},
     "val_others": {"peer": {"acc": 0.35}}, "best": True, "time_s": 0.1},
    {"epoch": 2, "lr": 0.0015, "train": {"ce": 0.9, "kd": 0.3, "total": 1.2}, "val": {"acc": 0.6, "nll": 0.9},
     "val_others": {"peer": {"acc": 0.5}}, "best": True, "time_s": 0.1},
]
SUMMARY = {"epochs": 2, "best_epoch": 2, "val": {"best": {"acc": 0.6}}, "test": {"best": {"acc": 0.55, "ece": 0.1}}}


def _run_stage(tmp_path: Path, names: list[str]) -> Path:
    """A run directory's distilled stage, logged the way Trainer.fit logs it: start, each epoch, end."""
    run = tmp_path / "run"
    write_text(run / "config.yaml", "name: logged-run\nseeds: [0]\n")
    stage = Stage("kd seed 0", run / "kd" / "seed0", 0, TrainConfig(epochs=2))
    log = loggers.StageLog.open(names, stage, SimpleNamespace(is_global_zero=True), method=None)
    for record in RECORDS:
        log.epoch(record)
    log.end(SUMMARY)
    return stage.directory


def test_csv_logger_writes_every_term_per_epoch(tmp_path):
    stage = _run_stage(tmp_path, ["csv"])
    files = list((stage / "logs" / "csv").glob("version_*/metrics.csv"))
    assert len(files) == 1
    rows = [r for r in csv.DictReader(files[0].open()) if r.get("train/kd")]
    assert [float(r["train/kd"]) for r in rows] == [0.5, 0.3]
    assert [float(r["val/acc"]) for r in rows] == [0.4, 0.6]
    assert [float(r["val_others/peer/acc"]) for r in rows] == [0.35, 0.5]
    assert [int(r["step"]) for r in rows] == [1, 2]
    hparams = (files[0].parent / "hparams.yaml").read_text()
    assert "logged-run" in hparams and "kd seed 0" in hparams  # the resolved recipe and the stage


def test_off_rank_zero_and_without_loggers_nothing_is_written(tmp_path):
    stage = Stage("s", tmp_path / "stage", 0, TrainConfig(epochs=1))
    for names, rank0 in ((["csv"], False), ([], True)):
        log = loggers.StageLog.open(names, stage, SimpleNamespace(is_global_zero=rank0))
        log.epoch(RECORDS[0])
        log.end(SUMMARY)
    assert not (tmp_path / "stage").exists()


def test_missing_extra_is_refused_naming_the_key_and_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "mlflow") else real(name, *a))
    for name in ("tensorboard", "mlflow"):
        with pytest.raises(UserInputError, match=rf"engine.loggers: '{name}' needs .*pip install 'edgedistill\[{name}\]'"):
            loggers.require(["csv", name])
    loggers.require(["csv"])  # csv comes with Fabric: never refused


def test_recipe_with_a_missing_extra_exits_2_before_training(monkeypatch, tmp_path):
    from edgedistill.config import load_recipe

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    from tests.helpers import TINY_RECIPE

    recipe = load_recipe({**TINY_RECIPE, "engine": {"progress": False, "loggers": ["mlflow"]}})
    with pytest.raises(UserInputError) as err:
        loggers.require(recipe.engine.loggers)
    assert err.value.exit_code == 2


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="the tensorboard extra is not installed (pip install 'edgedistill[tensorboard]')")
def test_tensorboard_event_file_reads_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stage = _run_stage(tmp_path, ["tensorboard"])
    versions = list((stage / "logs" / "tensorboard").glob("version_*"))
    assert len(versions) == 1 and list(versions[0].glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(versions[0]))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"train/ce", "train/kd", "train/total", "val/acc", "lr", "final/test/best/acc"} <= set(scalars)
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("train/kd")] == [(1, 0.5), (2, 0.3)]
    assert [round(e.value, 4) for e in acc.Scalars("final/test/best/acc")] == [0.55]


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                    reason="the mlflow extra is not installed (pip install 'edgedistill[mlflow]')")
def test_mlflow_run_reads_back_with_the_mlflow_client(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stage = _run_stage(tmp_path, ["mlflow"])
    db = stage.parent.parent / "mlflow.db"
    assert db.is_file()  # the local store lies in the run directory
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("logged-run")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "kd seed 0" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/kd")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.3)]
    assert run.data.metrics["final/test/best/acc"] == 0.55
    assert run.data.params["train.epochs"] == "2" and run.data.params["recipe.name"] == "logged-run"


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                    reason="the mlflow extra is not installed (pip install 'edgedistill[mlflow]')")
def test_mlflow_tracking_uri_from_the_environment(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'central.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    stage = _run_stage(tmp_path, ["mlflow"])
    assert not (stage.parent.parent / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=uri)
    assert client.search_runs([client.get_experiment_by_name("logged-run").experiment_id])
