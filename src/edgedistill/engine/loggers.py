"""``engine.loggers``: each training stage's records also go to CSV, TensorBoard or MLflow, through Fabric's logger
interface (``lightning_fabric.loggers.Logger``).

What is logged, per stage (teacher, student alone, distilled student, each seed): at the start the hyperparameters
(the stage's training config, the method's description and, when the stage lies in a run directory, the resolved
recipe of its ``config.yaml``); after each epoch the epoch record of ``metrics.jsonl`` (every training loss term,
the learning rate, the validation metrics, of the other evaluated networks too) at step = epoch; at the end the
final summary's metrics (``final/test/best/acc`` ...). Only rank 0 logs (``fabric.is_global_zero``).

Where: ``<stage>/logs/csv/version_<n>/metrics.csv`` and ``<stage>/logs/tensorboard/version_<n>/`` (a resumed stage
starts a new version, as Lightning does); MLflow to ``$MLFLOW_TRACKING_URI`` when set, else to a SQLite store in the
run directory (``sqlite:///<run>/mlflow.db``; a cached teacher or student alone: in its stage folder; MLflow 3
refuses its plain-file store by default), experiment = the run's name, MLflow run = the stage's label.
TensorBoard and MLflow are optional extras: a recipe asking for one that is not installed is refused before
training starts (``require``).
"""
from __future__ import annotations

import atexit
import importlib.util
import json
import math
import os
from argparse import Namespace
from pathlib import Path
from typing import Any, Optional, Union

from edgedistill.errors import UserInputError

#: logger name -> (module it needs, the extra that installs it)
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def require(names: list[str]) -> None:
    """Refuse (exit 2, before anything trains) a logger whose optional package is not installed."""
    for name in names:
        if name not in ("csv", *EXTRAS):
            raise UserInputError(f"engine.loggers: unknown logger '{name}'; expected csv, tensorboard or mlflow")
        if name in EXTRAS and importlib.util.find_spec(EXTRAS[name][0]) is None:
            module, extra = EXTRAS[name]
            raise UserInputError(f"engine.loggers: '{name}' needs the '{module}' package, which is not installed; "
                                 f"pip install 'edgedistill[{extra}]' (or remove '{name}' from engine.loggers)")


def flatten(obj: Any, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested dicts as one level (``{"train": {"kd": 0.1}}`` -> ``{"train/kd": 0.1}``); lists kept as JSON text."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{sep}{k}" if prefix else str(k), sep))
    elif isinstance(obj, (list, tuple)):
        out[prefix] = json.dumps(obj, default=str)
    else:
        out[prefix] = obj
    return out


def numbers(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) record, flattened: what a metrics logger takes (booleans as 0/1)."""
    out = {}
    for k, v in flatten(record, prefix).items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


def _base() -> type:
    from lightning_fabric.loggers.logger import Logger

    return Logger


def mlflow_logger_class() -> type:
    """``MLflowLogger`` (built on first use: Fabric's ``Logger`` is imported only when a logger is asked for)."""
    global _MLFLOW_CLASS
    if _MLFLOW_CLASS is not None:
        return _MLFLOW_CLASS
    Logger = _base()

    class MLflowLogger(Logger):  # type: ignore[misc, valid-type]
        """Fabric's logger interface over the MLflow client: one MLflow run per stage, in experiment ``experiment``."""

        def __init__(self, tracking_uri: str, experiment: str, run_name: str, tags: Optional[dict[str, str]] = None) -> None:
            from mlflow.tracking import MlflowClient

            self.tracking_uri, self._experiment, self._run_name = tracking_uri, experiment, run_name
            self.client = MlflowClient(tracking_uri=tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags or {}).info.run_id

        @property
        def name(self) -> str:
            return self._experiment

        @property
        def version(self) -> str:
            return self.run_id

        def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
            from mlflow.entities import Metric

            import time

            now = int(time.time() * 1000)
            # MLflow metric names may not hold every character: "/" is allowed, spaces and quotes are not.
            batch = [Metric(_key(k), float(v), now, step or 0) for k, v in metrics.items()]
            for i in range(0, len(batch), 1000):
                self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

        def log_hyperparams(self, params: Union[dict[str, Any], Namespace], *args: Any, **kwargs: Any) -> None:
            from mlflow.entities import Param

            flat = flatten(vars(params) if isinstance(params, Namespace) else params, sep=".")
            items = [Param(_key(k), str(v)[:6000]) for k, v in flat.items()]  # MLflow's limit on a value's length
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i:i + 100])

        def finalize(self, status: str) -> None:
            state = {"success": "FINISHED", "failed": "FAILED", "aborted": "KILLED"}.get(status, "FINISHED")
            self.client.set_terminated(self.run_id, status=state)

    _MLFLOW_CLASS = MLflowLogger
    return MLflowLogger


_MLFLOW_CLASS: Optional[type] = None


def csv_logger_class() -> type:
    """Fabric's ``CSVLogger`` (metrics.csv), which refuses hyperparameters: these go to ``hparams.yaml`` beside it."""
    from lightning_fabric.loggers import CSVLogger

    class HparamsCSVLogger(CSVLogger):  # type: ignore[misc, valid-type]
        def log_hyperparams(self, params: Union[dict[str, Any], Namespace], *args: Any, **kwargs: Any) -> None:
            import yaml

            from edgedistill.io import write_text

            params = vars(params) if isinstance(params, Namespace) else params
            _ = self.experiment  # the metrics writer first: it warns about (and clears) a folder it finds non-empty
            write_text(Path(self.log_dir) / "hparams.yaml", yaml.safe_dump(params, sort_keys=False))

    return HparamsCSVLogger


def _key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _run_config(stage_dir: Path) -> tuple[Optional[dict[str, Any]], Optional[Path]]:
    """The resolved recipe of the run directory holding this stage (``<run>/<method>/seed<k>``), and that folder."""
    import yaml

    for folder in (stage_dir.parent, stage_dir.parent.parent):
        path = folder / "config.yaml"
        if path.is_file():
            try:
                config = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                return None, folder
            return (config if isinstance(config, dict) else None), folder
    return None, None


def build(names: list[str], stage_dir: Path, label: str, experiment: str, store: Optional[Path] = None) -> list[Any]:
    """The logger objects for one stage (Fabric's ``Logger`` interface); ``store``: the folder of the local MLflow
    store (default the stage's)."""
    require(names)
    out: list[Any] = []
    logs = Path(stage_dir) / "logs"
    for name in names:
        if name == "csv":
            out.append(csv_logger_class()(root_dir=str(logs), name="csv"))
        elif name == "tensorboard":
            from lightning_fabric.loggers import TensorBoardLogger

            out.append(TensorBoardLogger(root_dir=str(logs), name="tensorboard", default_hp_metric=False))
        elif name == "mlflow":
            uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(store or stage_dir) / 'mlflow.db').resolve()}"
            import logging

            logging.getLogger("mlflow").setLevel(logging.WARNING)  # not two INFO lines per stage about its tables
            out.append(mlflow_logger_class()(uri, experiment, label, tags={"edgedistill.stage_dir": str(stage_dir)}))
    return out


class StageLog:
    """What the training loop calls: ``start`` once, ``epoch`` after each epoch, ``end`` with the stage's summary.
    With no loggers configured, or off rank 0, every call does nothing."""

    def __init__(self, loggers: list[Any]) -> None:
        self.loggers = loggers
        self._open = bool(loggers)
        if self._open:  # a stage that raises (diverged, interrupted) still closes its MLflow run and event files
            atexit.register(self._abort)

    @classmethod
    def open(cls, names: list[str], stage: Any, fabric: Any, method: Any = None,
             recipe: Optional[dict[str, Any]] = None) -> "StageLog":
        """Loggers for ``stage`` (engine/loop.py's Stage), hyperparameters logged. ``recipe``: the resolved recipe, if
        the caller has it; else the run directory's config.yaml when the stage lies in one."""
        if not names or not getattr(fabric, "is_global_zero", True):
            return cls([])
        found, run_dir = _run_config(Path(stage.directory))
        recipe = recipe if recipe is not None else found
        name = str((recipe or {}).get("name") or (run_dir.name if run_dir else "edgedistill"))
        # A run's distilled stages share one MLflow store in the run directory (creating a SQLite store takes
        # seconds); a cached stage (teacher, student alone) keeps its own in its cache folder.
        log = cls(build(list(names), Path(stage.directory), stage.label, name, store=run_dir))
        params: dict[str, Any] = {"stage": {"label": stage.label, "seed": stage.seed},
                                  "train": stage.train.model_dump(mode="json")}
        if method is not None and hasattr(method, "describe"):
            params["method_description"] = method.describe()
        if recipe is not None:
            params["recipe"] = recipe
        log.start(params)
        return log

    def start(self, hparams: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_hyperparams(json.loads(json.dumps(hparams, default=str)))

    def epoch(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record, at step = its epoch."""
        if not self.loggers:
            return
        metrics = numbers({k: v for k, v in record.items() if k != "epoch"})
        for lg in self.loggers:
            lg.log_metrics(metrics, step=int(record["epoch"]))
            lg.save()  # each epoch on disk: a killed stage keeps its curves up to there

    def end(self, summary: dict[str, Any]) -> None:
        """The stage's final summary (val/test metrics of each checkpoint), then close every logger."""
        if not self.loggers:
            return
        final = numbers({k: summary[k] for k in ("val", "test", "best_epoch") if k in summary}, "final")
        for lg in self.loggers:
            lg.log_metrics(final, step=int(summary.get("epochs", 0)))
        self._close("success")

    def _abort(self) -> None:
        self._close("failed")

    def _close(self, status: str) -> None:
        if not self._open:
            return
        self._open = False
        atexit.unregister(self._abort)
        for lg in self.loggers:
            try:
                lg.finalize(status)
            except Exception:  # noqa: BLE001 - closing a log must never hide the stage's own outcome
                pass
