"""The synthetic wearable and image generators: deterministic, fast, learnable but not trivial."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edgedistill.data.synthetic import synthetic, synthetic_images
from edgedistill.errors import UserInputError
from edgedistill.registry import DATASETS


def _spectrum(x: np.ndarray) -> np.ndarray:
    """Per-channel magnitude spectrum (low bins) and std: a classic hand-made HAR feature set."""
    f = np.abs(np.fft.rfft(x - x.mean(-1, keepdims=True), axis=-1))[..., 1:20]
    return np.concatenate([f.reshape(len(x), -1), x.std(-1)], axis=1)


def _fit_score(features: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    mu, sd = features[train].mean(0), features[train].std(0) + 1e-8
    z = (features - mu) / sd
    clf = LogisticRegression(max_iter=2000).fit(z[train], y[train])
    return float(clf.score(z[~train], y[~train]))


def test_registered_with_metadata() -> None:
    e = DATASETS.entry("synthetic")
    assert {k: v for k, v in e.meta.items() if k != "check"} == {"task": "classification", "kind": "1d"} and "3-9" in e.doc
    assert e.meta["check"](n_subjects=2) == (2, 40, 4, 3, 128, "classification", 0.3, 0)  # bounds, nothing generated
    assert DATASETS.entry("synthetic_images").meta["kind"] == "2d"


def test_shapes_groups_and_balance() -> None:
    r = synthetic(n_subjects=5, windows_per_subject=12, n_classes=3, channels=6, length=64)
    assert r.x.shape == (60, 6, 64) and r.task == "classification" and r.test_x is None
    assert r.group.tolist() == sorted(r.group.tolist()) and set(r.group.tolist()) == set(range(5))
    assert np.bincount(r.y).tolist() == [20, 20, 20]
    assert np.isfinite(r.x).all()


def test_deterministic_per_seed() -> None:
    a, b, c = synthetic(seed=4), synthetic(seed=4), synthetic(seed=5)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.allclose(a.x, c.x)
    i, j = synthetic_images(seed=4), synthetic_images(seed=4)
    assert np.array_equal(i.x, j.x) and not np.allclose(i.x, synthetic_images(seed=5).x)


def test_fast_at_har_scale() -> None:
    synthetic(n_subjects=2, windows_per_subject=2)
    start = time.perf_counter()
    r = synthetic(n_subjects=20, windows_per_subject=400, channels=9)
    elapsed = time.perf_counter() - start
    assert r.x.shape == (8000, 9, 128)
    assert elapsed < 5.0  # ~0.25 s idle; generous because the machines are shared


def test_learnable_across_subjects_but_not_trivial() -> None:
    r = synthetic(n_subjects=6, windows_per_subject=60, n_classes=4, seed=0)
    train = r.group < 4  # held-out subjects, the realistic evaluation
    acc = _fit_score(_spectrum(r.x), r.y, train)
    assert acc > 0.6  # chance is 0.25
    # Channel means carry subject offsets, not the activity: no shortcut through the DC level.
    assert _fit_score(r.x.mean(-1), r.y, train) < 0.5


def test_regression_target_follows_hidden_intensity() -> None:
    from sklearn.linear_model import Ridge

    r = synthetic(task="regression", n_subjects=6, windows_per_subject=80, seed=1)
    assert r.task == "regression" and r.y.dtype == np.float64 and r.y.shape == (480,)
    train = r.group < 4
    f = _spectrum(r.x)
    pred = Ridge(alpha=1.0).fit(f[train], r.y[train]).predict(f[~train])
    assert np.corrcoef(pred, r.y[~train])[0, 1] > 0.3


def test_images_learnable() -> None:
    r = synthetic_images(n=400, n_classes=4, seed=0)
    assert r.x.shape == (400, 1, 16, 16) and np.bincount(r.y).tolist() == [100] * 4
    train = np.arange(400) < 300
    # Shapes move around, so a shift-invariant feature (2-D amplitude spectrum) is needed; chance is 0.25.
    spectrum = np.abs(np.fft.fft2(r.x[:, 0])).reshape(400, -1)
    assert _fit_score(spectrum, r.y, train) > 0.45
    assert _fit_score(r.x.reshape(400, -1), r.y, train) < 0.9  # not solvable by a linear map of pixels
    multi = synthetic_images(n=30, channels=3, size=12, n_classes=6)
    assert multi.x.shape == (30, 3, 12, 12) and set(multi.y.tolist()) == set(range(6))


@pytest.mark.parametrize(
    "kwargs, key",
    [({"channels": 12}, "channels"), ({"n_classes": 1}, "n_classes"), ({"task": "rank"}, "task"),
     ({"noise": -1.0}, "noise"), ({"length": 4.5}, "length")],
)
def test_bad_params_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(UserInputError, match=f"data.params.{key}"):
        synthetic(**kwargs)
