"""Teacher selection (issue 18): stochastic weight averaging in the training loop, and the report's warning when the
best-on-validation epoch rests on a small validation set."""
import pytest
import torch

from edgedistill.config import EngineConfig, TrainConfig
from edgedistill.engine import checkpoint as ckpt
from edgedistill.engine.loop import Stage, Trainer, deliverable_weights
from edgedistill.engine.swa import first_averaged_epoch
from edgedistill.errors import UserInputError
from edgedistill.experiment.teacher_select import noise_threshold, selection_warning
from edgedistill.methods.supervised import Supervised
from tests.helpers import tiny_net, toy_splits

ENGINE = EngineConfig(progress=False)
EPOCHS = 12  # window: epochs 10, 11, 12
# A constant rate keeps the weights moving to the end, so the average is clearly not the last epoch's weights.
CFG = TrainConfig(epochs=EPOCHS, batch_size=16, lr=3e-2, schedule="constant")


class Interrupt(Exception):
    pass


def _fit(directory, swa=True, stop_after=None, record=None):
    """Train the toy model; ``record`` collects the student's weights at each epoch's end; ``stop_after``: raise
    right after that epoch's last.pt is written (a kill at a deterministic point)."""
    splits = toy_splits()
    torch.manual_seed(0)
    method = Supervised(tiny_net(), splits.info)
    trainer = Trainer(ENGINE)
    real_save = trainer._save_last

    def save(method_, opts, ckdir, epoch, best, best_epoch):
        real_save(method_, opts, ckdir, epoch, best, best_epoch)
        if record is not None and epoch > 0:
            record[epoch] = {k: v.detach().clone() for k, v in method_.networks["student"].state_dict().items()}
        if epoch == stop_after:
            raise Interrupt

    trainer._save_last = save
    return trainer.fit(method, splits, Stage("t", directory, 0, CFG, swa=swa)), splits


def _swa_student(directory):
    state = ckpt.load(directory / "checkpoints" / "swa.pt")
    assert state["deliverable"] == "student" and set(state) == {"networks", "epoch", "deliverable"}
    return state["networks"]["student"]


def test_window_is_the_last_quarter_and_at_least_one_epoch():
    assert [first_averaged_epoch(e) for e in (1, 2, 4, 5, 12, 100)] == [1, 2, 4, 4, 10, 76]


def test_swa_is_the_mean_of_the_window_epochs_with_batchnorm_statistics_recomputed(tmp_path):
    record = {}
    summary, splits = _fit(tmp_path / "s", record=record)
    window = [record[e] for e in range(first_averaged_epoch(EPOCHS), EPOCHS + 1)]
    assert len(window) == 3 and summary["swa_epochs"] == [10, 12]
    got = _swa_student(tmp_path / "s")
    mean = {k: torch.stack([w[k].double() for w in window]).mean(0) for k in window[0]}
    for key in ("0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias"):  # conv, BN affine, linear
        assert torch.allclose(got[key].double(), mean[key], atol=1e-6), key
        assert not torch.allclose(got[key], window[-1][key], atol=1e-4), f"{key}: the average is the last epoch's"

    # BatchNorm statistics: one pass over the training rows in training's batches (16, incomplete batch dropped),
    # each batch weighing the same, computed here by hand from the averaged convolution.
    x = splits.train.views["x"]
    h = torch.nn.functional.conv1d(x.double(), got["0.weight"].double(), got["0.bias"].double(), padding=1)
    batches = [h[i:i + 16] for i in range(0, len(x) - len(x) % 16, 16)]
    means = torch.stack([b.mean(dim=(0, 2)) for b in batches]).mean(0)
    variances = torch.stack([b.transpose(0, 1).reshape(h.shape[1], -1).var(dim=1) for b in batches]).mean(0)
    assert torch.allclose(got["1.running_mean"].double(), means, atol=1e-5)
    assert torch.allclose(got["1.running_var"].double(), variances, atol=1e-4)
    assert not torch.allclose(got["1.running_mean"].double(), mean["1.running_mean"], atol=1e-3)  # not the naive mean


def test_summary_and_deliverable_weights_give_the_average(tmp_path):
    summary, _ = _fit(tmp_path / "s")
    for split in ("val", "test"):
        assert list(summary[split]) == ["best", "last", "swa"]
        assert set(summary[split]["swa"]) == set(summary[split]["best"])
    weights = deliverable_weights(tmp_path / "s", "swa")
    for key, value in _swa_student(tmp_path / "s").items():
        assert torch.equal(weights[key], value)
    # The scores are the averaged network's (the toy task is easy, so compare a continuous metric): reload it.
    from edgedistill.engine.evaluate import evaluate

    splits = toy_splits()
    net = tiny_net()
    net.load_state_dict(weights)
    nll = evaluate(net, splits.test, splits.info, torch.device("cpu"))["nll"]
    assert nll == pytest.approx(summary["test"]["swa"]["nll"], rel=1e-5)
    assert nll != pytest.approx(summary["test"]["last"]["nll"], rel=1e-3)


def test_without_swa_nothing_changes(tmp_path):
    summary, _ = _fit(tmp_path / "s", swa=False)
    assert list(summary["val"]) == ["best", "last"] and list(summary["test"]) == ["best", "last"]
    assert "swa_epochs" not in summary
    assert not (tmp_path / "s" / "checkpoints" / "swa.pt").exists()
    assert "swa" not in ckpt.load(tmp_path / "s" / "checkpoints" / "last.pt")
    with pytest.raises(UserInputError, match=r"teacher.select: 'swa'.*without weight averaging"):
        deliverable_weights(tmp_path / "s", "swa")
    with pytest.raises(ValueError, match="best, last, swa"):
        deliverable_weights(tmp_path / "s", "ema")


def test_resume_in_the_middle_of_the_average_writes_the_same_swa(tmp_path):
    straight, _ = _fit(tmp_path / "straight")
    with pytest.raises(Interrupt):
        _fit(tmp_path / "resumed", stop_after=EPOCHS - 1)  # two of the three window epochs averaged
    saved = ckpt.load(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert saved["swa"]["count"] == 2
    torch.manual_seed(123)  # a different global RNG state: the resume must not depend on it
    resumed, _ = _fit(tmp_path / "resumed")
    a, b = _swa_student(tmp_path / "straight"), _swa_student(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["val"]["swa"] == straight["val"]["swa"] and resumed["test"]["swa"] == straight["test"]["swa"]


def test_resume_without_the_average_in_last_pt_restarts_the_stage(tmp_path, capsys):
    with pytest.raises(Interrupt):
        _fit(tmp_path / "s", swa=False, stop_after=EPOCHS - 1)
    summary, _ = _fit(tmp_path / "s")  # now with swa: last.pt cannot continue an average it never kept
    assert "lacks swa" in capsys.readouterr().err
    assert summary["swa_epochs"] == [10, 12]


# -- the report's warning --------------------------------------------------------------------------------------
def _summary(best, last, key="acc", **extra):
    return {"best_epoch": 4, "epochs": 30, "val": {"best": {key: best}, "last": {key: last}}, **extra}


def test_warning_fires_on_a_real_gap_with_few_subjects():
    text = selection_warning(_summary(0.90, 0.70), n_val_subjects=2, n_val=300, task="classification", select="best")
    assert text is not None
    for part in ("epoch 4 of 30", "0.900", "0.700", "only 2 subjects", "teacher.select: last or swa", "loso"):
        assert part in text, part


def test_warning_stays_silent_within_noise_with_many_subjects_or_without_choosing_on_validation():
    cls = dict(task="classification", select="best")
    se2 = noise_threshold("classification", 0.80, 0.78, 300)  # 2 * sqrt(0.79 * 0.21 / 300) = 0.047
    assert 0.02 < se2
    assert selection_warning(_summary(0.80, 0.78), n_val_subjects=2, n_val=300, **cls) is None  # within noise
    assert selection_warning(_summary(0.90, 0.70), n_val_subjects=6, n_val=300, **cls) is None  # enough subjects
    assert selection_warning(_summary(0.90, 0.70), n_val_subjects=4, n_val=300, **cls) is not None
    for select in ("last", "swa"):
        assert selection_warning(_summary(0.90, 0.70), 2, 300, "classification", select) is None
    given = _summary(0.90, 0.70, given="teacher.load 'a.pt'")
    assert selection_warning(given, 2, 300, "classification", "best") is None


def test_warning_without_subjects_reads_the_sample_count():
    cls = dict(n_val_subjects=None, task="classification", select="best")
    text = selection_warning(_summary(0.90, 0.80), n_val=150, **cls)
    assert text is not None and "only 150 samples and no subjects" in text and "stratified_kfold" in text
    assert selection_warning(_summary(0.90, 0.80), n_val=5000, **cls) is None  # a large validation set
    assert selection_warning(_summary(0.90, 0.80), 0, 5000, "classification", "best") is None  # 0 subjects: none known
    # The same gap on more samples is more than noise; on fewer samples it is not.
    assert selection_warning(_summary(0.90, 0.85), n_val=350, **cls) is not None
    assert selection_warning(_summary(0.90, 0.85), n_val=60, **cls) is None


def test_warning_for_regression_compares_rmse():
    reg = dict(n_val_subjects=3, task="regression", select="best")
    text = selection_warning(_summary(0.40, 0.55, key="rmse"), n_val=200, **reg)
    assert text is not None and "RMSE 0.400" in text and "0.550" in text
    # 2 * 0.475 / sqrt(400) = 0.0475: a 0.03 gap is noise, on 200 samples, and a 0.1 gap is not.
    assert selection_warning(_summary(0.46, 0.49, key="rmse"), n_val=200, **reg) is None
    assert selection_warning(_summary(0.40, 0.50, key="rmse"), n_val=200, **reg) is not None
    assert selection_warning(_summary(0.40, 0.55, key="rmse"), n_val=200, n_val_subjects=8, task="regression",
                             select="best") is None


# -- through a run: the recipe key reaches the teacher row, the cache and the report -------------------------------
def test_teacher_select_last_is_what_the_run_reports_and_caches_apart(tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from edgedistill.cli import app

    recipe = {
        "name": "sel", "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 10, "length": 32}},
        "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 3, "batch_size": 16}},
        "student": {"model": "cnn1d", "width": 4, "depth": 2}, "train": {"epochs": 1, "batch_size": 16},
        "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5}]},
        "engine": {"progress": False},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    keys = {}
    for select in ("best", "last"):
        out = tmp_path / select
        result = CliRunner().invoke(app, ["run", str(path), f"teacher.select={select}", "--out", str(out), "--no-progress"])
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        teacher = json.loads((out / "teacher" / "summary.json").read_text())
        row = summary["rows"][0]
        assert row["role"] == "teacher" and row["checkpoint"] == select
        assert row["per_seed_test"] == [teacher["test"][select]]
        keys[select] = teacher["cache_key"]
        words = "its last epoch" if select == "last" else "its best epoch on validation"
        assert words in (out / "report.md").read_text()
    assert keys["best"] != keys["last"]  # another checkpoint's weights: never served from the other's cache entry
