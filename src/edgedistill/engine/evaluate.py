"""Predict over a whole split and compute the task's metrics (regression in original units)."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from edgedistill.data.dataset import DataInfo, TensorData, outputs_by_batch
from edgedistill.data.shared_outputs import outputs_once, unshared
from edgedistill.metrics import (classification_metrics, confusion_matrix, ece, fit_temperature, macro_f1, per_class_recall,
                                 regression_metrics)
from edgedistill.models.modes import evaluating, nothing_to_train


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, device: torch.device, view: str = "x", batch_size: int = 256) -> torch.Tensor:
    """``model``'s outputs on every row of ``data[view]`` in eval mode, as float on the CPU (computed once per run for
    the same weights and rows: data/shared_outputs.py)."""
    with evaluating(model):
        return outputs_once(model, data, view, device, "predict",
                            lambda: outputs_by_batch(lambda x: model(x).float().cpu(), data, view, device, batch_size))


def unscale(values: torch.Tensor, info: DataInfo) -> torch.Tensor:
    if info.target_scale is None:
        return values
    mean, std = (torch.tensor(v, dtype=values.dtype) for v in info.target_scale)
    return values.reshape(len(values), -1) * std + mean


def evaluate(model: nn.Module, data: TensorData, info: DataInfo, device: torch.device, view: str = "x") -> dict[str, float]:
    out = predict(model, data, device, view)
    if info.task == "classification":
        return classification_metrics(out, data.y)
    return regression_metrics(unscale(out, info), unscale(data.y.float(), info))


def epoch_scores(deliverable: nn.Module, evaluated: dict[str, nn.Module], val: TensorData, info: DataInfo,
                 device: torch.device) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """One epoch's validation metrics of the network a stage delivers and of each other reported network. Unshared
    (data/shared_outputs.py): weights that change every epoch have nothing to share, so no hash is paid for them. A
    reported network with nothing to train (multi_teacher's teacher ensemble) gives the same pass every epoch: it is
    shared, computed once per run instead of once per epoch (100 epochs of three FCNs over the validation rows were
    nine tenths of a multi_teacher stage's time)."""
    def scored(net: nn.Module) -> dict[str, float]:
        with contextlib.nullcontext() if nothing_to_train(net) else unshared():
            return evaluate(net, val, info, device)

    return scored(deliverable), {name: scored(net) for name, net in evaluated.items()}


def evaluate_val_test(model: nn.Module, val: TensorData, test: TensorData, info: DataInfo,
                      device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Validation and test metrics. For classification with a validation split, test also gets ``ece_ts``, the
    ECE after temperature scaling fitted on validation, and that ``temperature``: whether one scalar would
    calibrate the student (it leaves accuracy unchanged), e.g. DIST's underconfident students (docs/benchmarks.md)."""
    if info.task != "classification" or len(val) == 0:
        return evaluate(model, val, info, device), evaluate(model, test, info, device)
    zv, zt = predict(model, val, device), predict(model, test, device)
    t = fit_temperature(zv, val.y)
    return classification_metrics(zv, val.y), {**classification_metrics(zt, test.y), "ece_ts": ece(zt / t, test.y),
                                                "temperature": t}


def evaluate_detail(model: nn.Module, data: TensorData, info: DataInfo, device: torch.device, view: str = "x") -> dict[str, Any]:
    """What one number hides, from one pass over ``data`` (JSON-safe): for classification the confusion matrix (rows
    true, columns predicted), each class's support and recall, and each subject's accuracy and macro-F1; for
    regression each subject's MAE in original units. A model that wins on average may fail one class or one
    subject, which is what a wearable study is judged on. Subjects are named by ``info.subjects`` where known."""
    out = predict(model, data, device, view)
    groups = [] if data.group is None else sorted(int(g) for g in data.group.unique())
    if info.task == "classification":
        pred = out.argmax(dim=1)
        cm = confusion_matrix(pred, data.y, info.n_outputs)
        subjects = []
        for g in groups:
            rows = data.group == g
            subjects.append({"subject": info.subject_name(g), "n": int(rows.sum()), "acc": float((pred[rows] == data.y[rows]).double().mean()),
                             "f1": macro_f1(pred[rows], data.y[rows], info.n_outputs)})
        return {"n": len(data), "support": cm.sum(dim=1).tolist(), "recall": per_class_recall(cm),
                "confusion": cm.tolist(), "subjects": subjects}
    err = (unscale(out, info) - unscale(data.y.float(), info)).double().abs().reshape(len(data), -1).mean(dim=1)
    subjects = [{"subject": info.subject_name(g), "n": int((data.group == g).sum()), "mae": float(err[data.group == g].mean())}
                for g in groups]
    return {"n": len(data), "subjects": subjects}
