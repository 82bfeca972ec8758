"""Staged training in a run (the stages themselves: methods/stages.py, docs/stages.md).

Each stage is one ``Trainer.fit``: every stage but the last in ``<stage folder>/stages/<name>/``, the last in the
stage folder itself, so a finished staged run has its ``summary.json``, ``metrics.jsonl`` and checkpoints where a
one-stage run has them. Resume: a stage that finished (its ``summary.json`` exists) is not trained again; its
``last.pt`` gives the weights and the random state the next stage started from, so a run resumed between stages
continues exactly as the uninterrupted run did; a stage interrupted mid-way resumes from its own ``last.pt``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from edgedistill.data.dataset import DataSplits
from edgedistill.engine import checkpoint as ckpt
from edgedistill.engine.loop import Stage, Trainer
from edgedistill.io import read_json_record
from edgedistill.methods.base import Method
from edgedistill.methods.stages import enter_stage


def fit(trainer: Trainer, method: Method, splits: DataSplits, stage: Stage) -> dict[str, Any]:
    """``trainer.fit(method, splits, stage)``, stage by stage when the method has stages; the last stage's summary."""
    stages = getattr(method, "stages", None)
    if not stages:
        return trainer.fit(method, splits, stage)
    summary: dict[str, Any] = {}
    for i, plan in enumerate(stages):
        last = i == len(stages) - 1
        enter_stage(method, i)  # type: ignore[arg-type]
        train = stage.train.model_copy(update={"epochs": plan.epochs, **({"lr": plan.lr} if plan.lr is not None else {})})
        directory = stage.directory if last else stage.directory / "stages" / plan.name
        if not last and read_json_record(directory / "summary.json") is not None:
            _continue_from(method, directory)
            continue
        sub = replace(stage, label=f"{stage.label} {plan.name}", directory=directory, train=train,
                      swa=stage.swa and last, on_epoch=stage.on_epoch if last else None)
        summary = trainer.fit(method, splits, sub)
    return summary


def _continue_from(method: Method, directory: Any) -> None:
    """A finished stage's last weights and random state, as the uninterrupted run had them when it ended."""
    path = directory / "checkpoints" / "last.pt"
    state = ckpt.load(path, hint=f"move the folder '{directory}' aside and run the same command again")
    for name, net in method.networks.items():
        ckpt.load_state_dict_checked(getattr(net, "_forward_module", net), state["networks"][name], str(path))
    ckpt.set_rng_state(state["rng"])
