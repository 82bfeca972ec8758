"""Time-aware KD as a regression term (TaKD, Jeon et al., arXiv 2506.10265): flat outputs read as curves, the same
arithmetic as ``time_aware_kd``, the synthetic insole -> GRF set, and GaitRec's regression form."""
import json
import math

import numpy as np
import pytest
import torch

import edgedistill
import edgedistill.data.grf_synthetic  # noqa: F401  (registers synthetic_grf)
from edgedistill.errors import UserInputError
from edgedistill.losses import mse, mse_to_teacher
from edgedistill.losses.sequence import as_output_sequences, time_aware_kd, time_aware_regression
from edgedistill.data.grf_synthetic import synthetic_grf
from edgedistill.data.archives.gaitrec import load as load_gaitrec
from edgedistill.registry import LOSSES
from test_archive_gaitrec import value, write_gaitrec


def curves(n=4, c=2, t=12, shift=0.0):
    g = torch.Generator().manual_seed(int(shift * 10))
    base = torch.sin(torch.linspace(0, 3, t) + shift)
    return (base + 0.2 * torch.randn(n, c, t, generator=g, dtype=torch.float32)).reshape(n, c * t)


def test_outputs_are_read_channel_by_channel():
    out = torch.arange(2 * 2 * 5, dtype=torch.float32).reshape(2, 10)
    seq = as_output_sequences("student_out", out, 2)
    assert seq.shape == (2, 2, 5)
    assert seq[0, 1].tolist() == [5, 6, 7, 8, 9]  # the second curve is the second half of the vector


@pytest.mark.parametrize("outputs, channels, message", [
    (7, 2, "7 outputs per sample, which is not 2 channel"),
    (2, 2, "at least 2 time steps"),
    (8, 0, "channels must be an integer >= 1"),
])
def test_outputs_that_are_not_curves_are_refused(outputs, channels, message):
    with pytest.raises(UserInputError, match=message):
        as_output_sequences("student_out", torch.zeros(3, outputs), channels)


def test_same_value_as_time_aware_kd_on_the_curves():
    s, t, y = curves(shift=0.1), curves(shift=0.5), curves(shift=0.9)
    got = time_aware_regression(s, t, y, channels=2, self_similarity_weight=0.5, max_lag=3)
    want = time_aware_kd(s.reshape(4, 2, 12), t.reshape(4, 2, 12), y.reshape(4, 2, 12), self_similarity_weight=0.5,
                         max_lag=3)
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_without_temporal_terms_it_is_mse_plus_mse_to_teacher():
    s, t, y = curves(shift=0.1), curves(shift=0.5), curves(shift=0.9)
    got = time_aware_regression(s, t, y, channels=2, task_weight=0.5, teacher_weight=0.5, similarity_weight=0,
                                difference_weight=0, autocorr_weight=0)
    assert float(got) == pytest.approx(float(0.5 * mse(s, y) + 0.5 * mse_to_teacher(s, t)), rel=1e-6)


def test_temporal_terms_see_shape_the_pointwise_errors_do_not():
    y = curves(shift=0.0)
    flat = y.reshape(4, 2, 12)
    rolled = torch.roll(flat, 1, dims=-1).reshape(4, 24)  # the same values, shifted one step in time
    parts = dict(similarity_weight=0, difference_weight=1, autocorr_weight=1, task_weight=0, teacher_weight=0)
    assert float(time_aware_regression(y, y.clone(), y, channels=2, **parts)) == pytest.approx(0.0, abs=1e-12)
    assert float(time_aware_regression(rolled, y, y, channels=2, **parts)) > 0


def test_registered_for_regression_and_the_teacher_gets_no_gradient():
    assert LOSSES.entry("time_aware_kd").meta["task"] == "regression"
    s, t = curves(shift=0.1).requires_grad_(), curves(shift=0.5).requires_grad_()
    time_aware_regression(s, t, curves(shift=0.9), channels=2).backward()
    assert s.grad is not None and t.grad is None


def test_synthetic_grf_shapes_and_determinism():
    raw = synthetic_grf(n_subjects=3, steps_per_subject=5, sensors=8, length=21, seed=1)
    assert raw.x.shape == (15, 8, 21) and raw.y.shape == (15, 42) and raw.task == "regression"
    assert sorted(set(raw.group.tolist())) == [0, 1, 2]
    vertical, ap = raw.y[:, :21], raw.y[:, 21:]
    assert vertical[:, 10].mean() > 0.5 and abs(vertical[:, 0].mean()) < 0.05  # mid-stance load, ~0 at heel strike
    assert ap[:, 5].mean() < 0 < ap[:, 15].mean()  # braking, then propulsion
    assert (raw.y.std(axis=0) > 0).all()
    again = synthetic_grf(n_subjects=3, steps_per_subject=5, sensors=8, length=21, seed=1)
    np.testing.assert_array_equal(raw.x, again.x)
    with pytest.raises(UserInputError, match=r"data.params.sensors: expected an integer between 2 and 256"):
        synthetic_grf(sensors=1)


def test_gaitrec_regression_form(tmp_path):
    folder = write_gaitrec(tmp_path)
    raw = load_gaitrec(folder, task="regression")
    assert raw.task == "regression" and raw.classes is None
    assert raw.channels == ["F_AP_left", "F_ML_left", "F_AP_right", "F_ML_right"]
    assert raw.x.shape == (2, 4, 101) and raw.y.shape == (2, 202)
    np.testing.assert_allclose(raw.y[1, :101], value(0, 0, 40, 2), atol=1e-4)  # F_V left, then right
    np.testing.assert_allclose(raw.y[1, 101:], value(0, 1, 40, 2), atol=1e-4)
    np.testing.assert_array_equal(raw.views["right"], raw.x[:, 2:])
    with pytest.raises(UserInputError, match="data.params.target: expected one of"):
        load_gaitrec(folder, task="regression", components=["F_V"])
    with pytest.raises(UserInputError, match="data.params.task"):
        load_gaitrec(folder, task="forecast")


def test_a_run_on_synthetic_grf(tmp_path):
    recipe = {
        "name": "time-aware-test",
        "data": {"name": "synthetic_grf", "params": {"n_subjects": 5, "steps_per_subject": 6, "sensors": 4, "length": 16},
                 "split": {"by": "subject", "val": 0.2, "test": 0.2}, "normalize": "per_channel",
                 "normalize_target": False},
        "teacher": {"model": "cnn1d", "width": 8, "depth": 2, "train": {"epochs": 1, "batch_size": 8}},
        "student": {"model": "cnn1d", "width": 4, "depth": 2},
        "method": {"name": "offline", "terms": [{"loss": "time_aware_kd", "weight": 1.0, "channels": 2}]},
        "train": {"epochs": 1, "batch_size": 8}, "seeds": [0], "engine": {"progress": False, "threads": 1},
    }
    edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    train = json.loads((tmp_path / "run" / "offline" / "seed0" / "metrics.jsonl").read_text().splitlines()[0])["train"]
    assert math.isfinite(train["time_aware_kd"]) and train["time_aware_kd"] > 0
    bad = {**recipe, "method": {"name": "offline", "terms": [{"loss": "time_aware_kd", "weight": 1.0, "channels": 3}]}}
    with pytest.raises(UserInputError, match="32 outputs per sample, which is not 3 channel"):
        edgedistill.run(bad, out=tmp_path / "bad", progress=False)
