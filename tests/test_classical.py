"""Classical baselines (report.classical): refused where they cannot run, fitted and scored like the networks' rows,
read back on a resumed run, and summarised in report.md."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.config import Recipe
from edgedistill.data.dataset import DataInfo, DataSplits, TensorData
from edgedistill.data.window_features import BANDS, FEATURES, window_features
from edgedistill.errors import UserInputError
from edgedistill.experiment import classical


class Lines:
    """A StageProgress stand-in that keeps the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture(autouse=True)
def _quick(monkeypatch):
    # Latency and forest size are measured the same way, with fewer calls and trees: tests stay fast.
    monkeypatch.setattr(classical, "LATENCY_WARMUP", 1)
    monkeypatch.setattr(classical, "LATENCY_MIN_CALLS", 3)
    monkeypatch.setattr(classical, "LATENCY_BUDGET_S", 0.02)
    monkeypatch.setattr(classical, "FOREST_TREES", 20)


def recipe(names: list[str], seeds: list[int] = [0]) -> Recipe:  # noqa: B006 - read only
    return Recipe.model_validate({"data": {"name": "synthetic"}, "student": {"model": "cnn1d"},
                                  "report": {"classical": names}, "seeds": seeds})


def series_splits(task: str = "classification", n: int = 150, channels: int = 2, length: int = 32, seed: int = 0,
                  shuffle: bool = False, target_scale: tuple[list[float], list[float]] | None = None) -> DataSplits:
    """Two classes told apart by frequency and amplitude (or a target = amplitude), 60/20/20 split; ``shuffle``
    breaks the link between windows and labels."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    phase = rng.uniform(0, 2 * np.pi, (n, channels, 1))
    if task == "classification":
        labels = rng.integers(0, 2, n)
        freq, amp = np.where(labels == 0, 2, 6)[:, None, None], np.where(labels == 0, 0.5, 1.5)[:, None, None]
        y = torch.as_tensor(rng.permutation(labels) if shuffle else labels, dtype=torch.long)
    else:
        amp = rng.uniform(0.2, 2.0, (n, 1, 1))
        freq = 3
        y = torch.as_tensor((amp.ravel() - 1.1) / 0.5, dtype=torch.float32)  # standardised, as the loader does
    x = amp * np.sin(2 * np.pi * freq * t / length + phase) + 0.2 * rng.normal(size=(n, channels, length))
    data = TensorData({"x": torch.as_tensor(x, dtype=torch.float32)}, y, torch.as_tensor(np.arange(n) % 3))
    a, b = int(0.6 * n), int(0.8 * n)
    info = DataInfo(name="toy", task=task, input_shape=(channels, length), n_outputs=2 if task == "classification" else 1,
                    classes=["slow", "fast"] if task == "classification" else None, has_groups=True,
                    target_scale=target_scale if task == "regression" else None)
    return DataSplits(data.subset(range(a)), data.subset(range(a, b)), data.subset(range(b, n)), info)


# -- check_classical -----------------------------------------------------------------------------------------------

def test_check_refuses_images_and_short_windows_naming_the_key():
    image = DataInfo(name="img", task="classification", input_shape=(1, 8, 8), n_outputs=3)
    with pytest.raises(UserInputError, match=r"report\.classical.*image"):
        classical.check_classical(recipe(["forest"]), image)
    classical.check_classical(recipe([]), image)  # nothing asked, nothing to refuse

    def info(length: int) -> DataInfo:
        return DataInfo(name="s", task="regression", input_shape=(3, length), n_outputs=1)

    with pytest.raises(UserInputError, match=r"report\.classical: 'minirocket' needs windows of at least 9.*have 8.*'forest'"):
        classical.check_classical(recipe(["forest", "minirocket"]), info(8))
    with pytest.raises(UserInputError, match=r"'multirocket' needs windows of at least 10.*have 9"):
        classical.check_classical(recipe(["multirocket"]), info(9))
    classical.check_classical(recipe(["minirocket"]), info(9))
    classical.check_classical(recipe(["multirocket", "minirocket", "forest"]), info(10))
    classical.check_classical(recipe(["forest"]), info(2))


# -- window features -----------------------------------------------------------------------------------------------

def test_window_features_measure_what_they_name():
    length = 64
    t = np.arange(length)
    x = np.stack([np.full(length, 2.0), np.where(t % 2 == 0, 1.0, -1.0), np.sin(2 * np.pi * 2 * t / length + 0.3)])[None]
    f = window_features(x).reshape(3, len(FEATURES))
    col = {name: i for i, name in enumerate(FEATURES)}
    bands = [col[f"band{b + 1}_power"] for b in range(BANDS)]
    const, alt, sine = f
    assert const[col["mean"]] == 2.0 and const[col["std"]] == 0 and const[col["energy"]] == 4.0
    assert const[col["zero_cross_rate"]] == 0 and const[col["mean_abs_diff"]] == 0 and not const[bands].any()
    assert alt[col["zero_cross_rate"]] == 1 and alt[col["mean_abs_diff"]] == 2 and alt[bands[-1]] == pytest.approx(1)
    assert sine[bands[0]] == pytest.approx(1, abs=1e-6) and sine[col["zero_cross_rate"]] == pytest.approx(4 / 63, abs=1e-6)
    pct = [col[f"p{q}"] for q in (10, 25, 50, 75, 90)]
    assert np.all(np.diff(sine[pct]) > 0) and sine[col["min"]] < sine[pct[0]] and sine[pct[-1]] < sine[col["max"]]
    assert window_features(np.zeros((5, 4, 1))).shape == (5, 4 * len(FEATURES))  # one-step windows: no NaN either
    assert np.isfinite(window_features(np.zeros((5, 4, 1)))).all()


# -- the forest ----------------------------------------------------------------------------------------------------

def test_forest_learns_an_easy_set_and_fails_on_shuffled_labels(tmp_path):
    rows = classical.classical_rows(recipe(["forest"]), series_splits(), tmp_path / "a", Lines())
    (row,) = rows
    assert row["role"] == "classical baseline" and row["model"] == "random forest on window features"
    assert set(row["metrics"]) >= {"acc", "f1", "nll", "ece"}  # vote fractions: calibration metrics exist
    assert row["metrics"]["acc"]["mean"] >= 0.95 and row["val_metrics"]["acc"]["mean"] >= 0.95
    (noise,) = classical.classical_rows(recipe(["forest"]), series_splits(shuffle=True), tmp_path / "b", Lines())
    assert noise["metrics"]["acc"]["mean"] < 0.75  # two classes: chance is 0.5


def test_forest_regression_is_scored_in_original_units(tmp_path):
    unit = series_splits("regression", target_scale=([0.0], [1.0]))
    scaled = series_splits("regression", target_scale=([10.0], [5.0]))
    (a,) = classical.classical_rows(recipe(["forest"]), unit, tmp_path / "a", Lines())
    (b,) = classical.classical_rows(recipe(["forest"]), scaled, tmp_path / "b", Lines())
    assert set(a["metrics"]) == {"mae", "rmse", "r2"}
    assert a["metrics"]["r2"]["mean"] > 0.8
    # The same fit (same seed, same standardised targets): errors in original units scale with the target's std.
    assert b["metrics"]["rmse"]["mean"] == pytest.approx(5 * a["metrics"]["rmse"]["mean"], rel=1e-6)
    assert b["metrics"]["mae"]["mean"] == pytest.approx(5 * a["metrics"]["mae"]["mean"], rel=1e-6)
    assert b["metrics"]["r2"]["mean"] == pytest.approx(a["metrics"]["r2"]["mean"], abs=1e-9)


def test_rows_aggregate_over_seeds_with_size_latency_and_detail(tmp_path):
    seeds = [0, 1, 2]
    (row,) = classical.classical_rows(recipe(["forest"], seeds), series_splits(), tmp_path, Lines())
    assert row["metrics"]["acc"]["n"] == len(seeds) and len(row["per_seed_test"]) == len(seeds)
    assert row["params"] > 0 and row["size_kb"] > 0 and row["latency_ms"] > 0 and row["fit_s"] > 0
    assert len(row["detail"]["recall"]) == 2 and row["detail"]["seeds"] == len(seeds)
    for seed in seeds:
        record = json.loads((tmp_path / "classical" / "forest" / f"seed{seed}" / "summary.json").read_text())
        assert record["seed"] == seed and record["test"]["best"] == record["test"]["last"]
    accs = [s["acc"] for s in row["per_seed_test"]]
    assert row["metrics"]["acc"]["mean"] == pytest.approx(sum(accs) / 3)


def test_resume_reads_records_back_and_refits_damaged_ones(tmp_path):
    splits, r = series_splits(), recipe(["forest"], [0, 1])
    (first,) = classical.classical_rows(r, splits, tmp_path, Lines())
    seed0 = tmp_path / "classical" / "forest" / "seed0" / "summary.json"
    seed1 = tmp_path / "classical" / "forest" / "seed1" / "summary.json"
    record = json.loads(seed1.read_text())
    record["test"]["best"]["acc"] = record["test"]["last"]["acc"] = 0.123456  # a marker only a read-back returns
    seed1.write_text(json.dumps(record))
    seed0.write_text('{"baseline": "forest", "seed": 0, "te')  # cut off mid-write
    lines = Lines()
    (again,) = classical.classical_rows(r, splits, tmp_path, lines)
    assert again["per_seed_test"][1]["acc"] == 0.123456
    assert again["per_seed_test"][0]["acc"] == first["per_seed_test"][0]["acc"]  # fitted again, same seed
    assert json.loads(seed0.read_text())["test"]["best"]["acc"] == first["per_seed_test"][0]["acc"]
    assert any("seed 1: read back" in line for line in lines.lines)
    assert any("seed 0: fitted in" in line for line in lines.lines)
    seed1.write_text(json.dumps({"baseline": "forest", "seed": 1}))  # valid JSON, but not a whole record
    (third,) = classical.classical_rows(r, splits, tmp_path, Lines())
    assert third["per_seed_test"][1]["acc"] == first["per_seed_test"][1]["acc"]


# -- the rockets (aeon; numba compiles them on an installation's first use, about a minute, then caches them) -----

@pytest.mark.slow
@pytest.mark.parametrize("name", ["minirocket", "multirocket"])
def test_rocket_ridge_rows(tmp_path, name):
    splits = series_splits(n=90, channels=3, length=16)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    (row,) = classical.classical_rows(recipe([name]), splits, tmp_path, Lines())
    assert np.array_equal(np.random.get_state()[1], before)  # aeon seeds numpy's global generator: restored
    assert set(row["metrics"]) == {"acc", "f1"}  # a ridge classifier has no probabilities: no NLL/ECE cells
    assert row["metrics"]["acc"]["mean"] >= 0.9
    assert row["params"] > 1000 and row["size_kb"] > 0 and row["latency_ms"] > 0


@pytest.mark.slow
def test_rocket_ridge_is_fitted_on_a_bounded_subset(tmp_path, monkeypatch):
    # A tiny bound forces the subset: the note says so and the record counts the windows used.
    monkeypatch.setattr(classical, "MAX_RIDGE_CELLS", 10_000 * 40)
    splits = series_splits("regression", n=150, channels=3, length=16, target_scale=([0.0], [1.0]))
    record = classical.fit_and_score("minirocket", splits, seed=0)
    assert record["n_fit"] == 40 and record["n_train"] == 90 and "40 of 90" in record["note"]
    assert set(record["test"]["best"]) == {"mae", "rmse", "r2"}


# -- report.md -----------------------------------------------------------------------------------------------------

def _row(model: str, role: str, key: str, mean: float, std: float = 0.01, n: int = 3, **extra) -> dict:
    return {"model": model, "role": role, "params": 900, "size_kb": 3.5,
            "metrics": {key: {"mean": mean, "std": std, "n": n}}, **extra}


def test_markdown_lines_compare_the_best_baseline_with_the_student():
    student = _row("cnn1d + kd", "method", "acc", 0.80)
    forest = _row("random forest on window features", "classical baseline", "acc", 0.90, latency_ms=2.0, fit_s=1.5,
                  note="")
    rocket = _row("MiniRocket + ridge", "classical baseline", "acc", 0.85, latency_ms=1.0, fit_s=3.0, note="")
    assert classical.markdown_lines({"task": "classification", "rows": [student]}) == []
    text = "\n".join(classical.markdown_lines({"task": "classification", "rows": [student, rocket, forest]}))
    assert "## Classical baselines" in text and "| MiniRocket + ridge | 900 | 3.5 | 1.000 | 3.0 |" in text
    assert "random forest on window features scored test accuracy 0.900 vs the student's 0.800" in text
    assert "classical baseline is better by 0.100" in text
    better = _row("cnn1d + kd", "method", "acc", 0.95)
    text = "\n".join(classical.markdown_lines({"task": "classification", "rows": [better, forest]}))
    assert "the network is better by 0.050" in text
    close = _row("cnn1d + kd", "method", "acc", 0.895, std=0.02)
    assert "no clear difference" in "\n".join(classical.markdown_lines({"task": "classification", "rows": [close, forest]}))


def test_markdown_regression_compares_rmse_lower_is_better():
    alone = _row("cnn1d", "student alone", "rmse", 2.0)  # the regime is the student alone: it is the deliverable
    forest = _row("random forest on window features", "classical baseline", "rmse", 1.0, latency_ms=2.0, fit_s=1.0)
    text = "\n".join(classical.markdown_lines({"task": "regression", "rows": [alone, forest]}))
    assert "test RMSE 1.000 vs the student's 2.000" in text and "classical baseline is better by 1.000" in text
