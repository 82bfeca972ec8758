"""Per-class and per-subject results and the data section (summary.json ``detail``, report.md), and old summaries."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.engine.evaluate import evaluate_detail
from edgedistill.experiment.report import markdown

RECIPE = {
    "name": "detail",
    "data": {"name": "synthetic", "params": {"n_subjects": 8, "windows_per_subject": 12, "channels": 3, "length": 32},
             "split": {"by": "subject", "val": 0.25, "test": 0.4}},
    "teacher": {"model": "cnn1d", "width": 8, "depth": 2, "train": {"epochs": 4, "batch_size": 16}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 4}]},
    "train": {"epochs": 3, "batch_size": 16},
    "seeds": [0, 1],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detail")
    recipe = {**RECIPE, "cache_dir": str(tmp / "cache")}
    summary = edgedistill.run(recipe, out=tmp / "run", progress=False)
    return summary, tmp / "run", recipe


def test_detail_is_consistent_with_the_main_table(run):
    summary, run_dir, _ = run
    assert json.loads((run_dir / "summary.json").read_text())["rows"] == summary["rows"]
    data = summary["data"]
    assert data["input_shape"] == [3, 32]
    assert sum(len(v) for v in data["subjects"].values()) == 8 and len(data["subjects"]["test"]) >= 2
    assert not set(data["subjects"]["train"]) & set(data["subjects"]["test"])
    for split, n in data["sizes"].items():
        assert sum(data["class_counts"][split]) == n
    rows = {r["role"]: r for r in summary["rows"]}
    assert set(rows) == {"teacher", "student alone", "method"}
    for role, row in rows.items():
        d = row["detail"]
        # The teacher is trained once for both seeds (one model); the students are averaged over the two seeds.
        assert d["seeds"] == (1 if role == "teacher" else 2) and d["checkpoint"] == "best"
        cm = np.array(d["confusion"], dtype=float)
        assert cm.sum() == pytest.approx(data["sizes"]["test"])
        assert d["support"] == data["class_counts"]["test"] == [int(v) for v in cm.sum(axis=1)]
        for c, recall in enumerate(d["recall"]):
            assert recall == pytest.approx(cm[c, c] / cm[c].sum())
        # Test accuracy of the reported checkpoint, mean over seeds = subjects' accuracies weighted by their sizes.
        subj = d["subjects"]
        assert [s["subject"] for s in subj] == data["subjects"]["test"]
        weighted = sum(s["n"] * s["acc"] for s in subj) / sum(s["n"] for s in subj)
        assert weighted == pytest.approx(row["metrics"]["acc"]["mean"], abs=1e-9), role
        assert np.trace(cm) / cm.sum() == pytest.approx(row["metrics"]["acc"]["mean"], abs=1e-9), role


def test_report_sections(run):
    summary, run_dir, _ = run
    text = (run_dir / "report.md").read_text()
    for section in ("## Per-class recall (test)", "## Confusion matrix of cnn1d + ce+kd", "## Per-subject accuracy",
                    "## Data", "mean over 2 seeds", "Input shape (per sample, channels first): (3, 32)"):
        assert section in text, section
    for name in summary["data"]["subjects"]["test"]:
        assert f"| {name} |" in text
    assert text == markdown(summary)


def test_old_summary_without_detail_renders(run):
    old = copy.deepcopy(run[0])
    for row in old["rows"]:
        del row["detail"]
    for key in ("input_shape", "class_counts", "subjects"):
        del old["data"][key]
    text = markdown(old)
    assert "| cnn1d + ce+kd | method |" in text
    assert "## Per-class" not in text and "## Per-subject" not in text and "## Data" not in text


def _fixed_model(n_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, n_classes))


def test_evaluate_detail_against_a_direct_count():
    """Confusion, recall and per-subject scores of a fixed model, against numpy/sklearn on its argmax."""
    from sklearn.metrics import confusion_matrix, f1_score

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 2, 4, generator=g), torch.randint(0, 3, (60,), generator=g)
    group = torch.tensor([0] * 25 + [2] * 35)
    info = DataInfo("t", "classification", (2, 4), 3, subjects=["s01", "s02", "s03"])
    model = _fixed_model(3)
    d = evaluate_detail(model, TensorData({"x": x}, y, group), info, torch.device("cpu"))
    pred = model(x).argmax(1).numpy()
    cm = confusion_matrix(y.numpy(), pred, labels=[0, 1, 2])
    assert d["confusion"] == cm.tolist() and d["support"] == cm.sum(1).tolist()
    assert d["recall"] == pytest.approx(list(np.diag(cm) / cm.sum(1)))
    assert [s["subject"] for s in d["subjects"]] == ["s01", "s03"] and [s["n"] for s in d["subjects"]] == [25, 35]
    for s, rows in zip(d["subjects"], (slice(0, 25), slice(25, 60))):
        assert s["acc"] == pytest.approx(float((pred[rows] == y.numpy()[rows]).mean()))
        f1 = f1_score(y.numpy()[rows], pred[rows], labels=np.union1d(y.numpy()[rows], pred[rows]), average="macro")
        assert s["f1"] == pytest.approx(f1)


def test_regression_detail_is_per_subject_mae():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(20, 2, 4, generator=g), torch.randn(20, generator=g)
    info = DataInfo("r", "regression", (2, 4), 1, target_scale=([1.0], [2.0]))
    model = _fixed_model(1)
    d = evaluate_detail(model, TensorData({"x": x}, y, torch.tensor([0] * 5 + [1] * 15)), info, torch.device("cpu"))
    err = ((model(x).detach().reshape(-1) - y) * 2).abs()
    assert "confusion" not in d
    assert [s["subject"] for s in d["subjects"]] == ["0", "1"]  # no names known: the codes
    assert [s["mae"] for s in d["subjects"]] == pytest.approx([float(err[:5].mean()), float(err[5:].mean())])


def test_a_model_that_cannot_be_evaluated_again_loses_only_its_detail(run, tmp_path, capsys):
    """A resumed run whose method checkpoint was moved away: the summary and report are still written, that row
    has no detail and stderr says why; the other rows keep theirs."""
    import shutil

    _, run_dir, recipe = run
    copy_dir = tmp_path / "run"
    shutil.copytree(run_dir, copy_dir)
    (copy_dir / "offline" / "seed1" / "checkpoints" / "best.pt").unlink()
    again = edgedistill.run(recipe, out=copy_dir, progress=False)
    rows = {r["role"]: r for r in again["rows"]}
    assert "detail" not in rows["method"] and "detail" in rows["teacher"] and "detail" in rows["student alone"]
    assert "no per-class/per-subject detail for cnn1d + ce+kd (method)" in capsys.readouterr().err
    assert "## Per-class recall" in (copy_dir / "report.md").read_text()
