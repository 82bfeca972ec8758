"""Classical baselines as report rows (``report.classical``): is a network worth it on this data at all?

MiniRocket (Dempster et al. 2021) and MultiRocket (Tan et al. 2022) from aeon, each followed by a ridge
classifier / regressor with its penalty chosen by leave-one-out cross-validation as their authors do, and a
random forest (Breiman 2001) on standard per-channel window features. Each is fitted on the normalised training
windows once per run seed and scored on validation and test with the metrics the networks' rows use, so it sits
in the same table, with its size and its batch-1 latency beside the students'. docs/classical.md says how size,
latency and parameters are counted and how to read the rows.
"""
from __future__ import annotations

import pickle
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import numpy as np
import torch
from torch import nn

from edgedistill.config import Recipe
from edgedistill.data.dataset import DataInfo, DataSplits
from edgedistill.data.window_features import window_features
from edgedistill.engine.evaluate import evaluate_detail, evaluate_val_test
from edgedistill.errors import UserInputError
from edgedistill.experiment.report_detail import mean_detail
from edgedistill.io import read_json_record, write_json
from edgedistill.paths import inside
from edgedistill.progress import StageProgress

ROLE = "classical baseline"
#: The ridge's feature matrix holds at most this many numbers (windows x rocket features, float64 in
#: scikit-learn: 0.8 GB): past it the rocket + ridge is fitted on a seeded random subset of the training windows,
#: said in the row's note. MiniRocket (9,996 features) keeps 10,000 windows, the size up to which its authors
#: recommend the ridge; MultiRocket (49,728 features) keeps 2,000.
MAX_RIDGE_CELLS = 100_000_000
#: The forest: scikit-learn's default number of trees, every other setting at its default too.
FOREST_TREES = 100
#: Probabilities are clipped here before the log: a forest's vote fraction of 0 would make NLL infinite.
PROB_FLOOR = 1e-7
#: Latency: calls discarded before timing (caches, lazy set-up), then up to ``LATENCY_CALLS`` timed calls
#: within ``LATENCY_BUDGET_S`` seconds (at least ``LATENCY_MIN_CALLS``); the median is reported.
LATENCY_WARMUP, LATENCY_CALLS, LATENCY_MIN_CALLS, LATENCY_BUDGET_S = 5, 200, 10, 2.0
#: Metrics that need probabilities: absent (an empty cell) for a model that has none (the ridge classifier).
CALIBRATION_KEYS = ("nll", "ece", "ece_ts", "temperature")


class Fitted:
    """A fitted baseline: ``outputs`` maps windows (n, channels, length) float32 to (n, n_outputs): log-probabilities
    (or one-hot votes when ``probabilistic`` is False) for classification, standardised targets for regression."""

    def __init__(self, model: Any, outputs: Callable[[np.ndarray], np.ndarray], params: int, probabilistic: bool,
                 n_fit: int, note: str = "") -> None:
        self.model, self.outputs, self.params = model, outputs, params
        self.probabilistic, self.n_fit, self.note = probabilistic, n_fit, note


class Baseline(Protocol):
    """What ``BASELINES`` holds: a recipe value, its row's name, the shortest window it takes and why, a plan-time
    check and a fit."""

    name: str
    label: str
    min_length: int
    why_length: str

    def check(self, info: DataInfo) -> None: ...

    def fit(self, x: np.ndarray, y: np.ndarray, info: DataInfo, seed: int, threads: int) -> Fitted: ...


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    return out


def _array_numbers(obj: Any) -> int:
    """Numbers held in the arrays of ``obj`` (an array, or tuples/lists of them, as aeon stores rocket parameters)."""
    if isinstance(obj, np.ndarray):
        return int(obj.size)
    if isinstance(obj, (tuple, list)):
        return sum(_array_numbers(o) for o in obj)
    return 0


class Rocket:
    """A rocket transform (aeon) -> scaling -> RidgeClassifierCV / RidgeCV over alphas 10^-3..10^3: aeon's own
    MiniRocketClassifier / MultiRocketRegressor pipelines, built here so the ridge can be fitted on a bounded
    subset and its numbers counted. ``fitted_attrs`` names the transform's fitted parameter tuples."""

    def __init__(self, name: str, label: str, transform: str, fitted_attrs: tuple[str, ...], min_length: int,
                 why_length: str) -> None:
        self.name, self.label, self.transform, self.fitted_attrs = name, label, transform, fitted_attrs
        self.min_length, self.why_length = min_length, why_length

    def check(self, info: DataInfo) -> None:
        import importlib.util

        if importlib.util.find_spec("aeon") is None:  # a dependency, but a broken install should say so before training
            raise UserInputError(f"report.classical: '{self.name}' needs aeon, which is not installed "
                                 "(pip install 'aeon>=1.6,<1.7')")

    def fit(self, x: np.ndarray, y: np.ndarray, info: DataInfo, seed: int, threads: int) -> Fitted:
        from aeon.transformations.collection import convolution_based
        from sklearn.linear_model import RidgeCV, RidgeClassifierCV
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits

        # n_jobs=1: one numba thread, in fit and in the batch-1 latency alike.
        rocket = getattr(convolution_based, self.transform)(n_jobs=1, random_state=seed)
        alphas = np.logspace(-3, 3, 10)
        classify = info.task == "classification"
        ridge = RidgeClassifierCV(alphas=alphas) if classify else RidgeCV(alphas=alphas)
        rocket.fit(x)
        width = rocket.transform(x[:1]).shape[1]
        keep, note = np.arange(len(x)), ""
        cap = max(1, MAX_RIDGE_CELLS // width)
        if len(x) > cap:
            keep = np.sort(np.random.default_rng(seed).choice(len(x), cap, replace=False))
            note = (f"ridge fitted on {cap:,} of {len(x):,} training windows (random, seed {seed}): "
                    f"{width:,} features x every window would exceed {MAX_RIDGE_CELLS:,} numbers")
        scaler = StandardScaler(with_mean=False)
        with threadpool_limits(threads):
            ridge.fit(scaler.fit_transform(rocket.transform(x[keep])), y[keep])
        model = Pipeline([("rocket", rocket), ("scale", scaler), ("ridge", ridge)])
        params = (sum(_array_numbers(getattr(rocket, a)) for a in self.fitted_attrs) + scaler.scale_.size
                  + ridge.coef_.size + np.size(ridge.intercept_))
        n_out = info.n_outputs

        def outputs(windows: np.ndarray) -> np.ndarray:
            pred = model.predict(windows)
            return _one_hot(pred, n_out) if classify else np.asarray(pred, dtype=np.float32).reshape(len(windows), -1)

        return Fitted(model, outputs, int(params), probabilistic=False, n_fit=len(keep), note=note)


class Forest:
    """``FOREST_TREES`` trees (scikit-learn defaults otherwise) on ``window_features``: the baseline that needs
    no deep-learning stack. Classification outputs the trees' vote fractions (so NLL and ECE exist)."""

    name, label, min_length, why_length = "forest", "random forest on window features", 1, ""

    def check(self, info: DataInfo) -> None:
        pass

    def fit(self, x: np.ndarray, y: np.ndarray, info: DataInfo, seed: int, threads: int) -> Fitted:
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        classify = info.task == "classification"
        kind = RandomForestClassifier if classify else RandomForestRegressor
        forest = kind(n_estimators=FOREST_TREES, random_state=seed, n_jobs=threads)
        forest.fit(window_features(x), y)
        forest.set_params(n_jobs=1)  # predictions (and the latency) on one thread
        params = 0
        for tree in forest.estimators_:  # a split stores a feature index and a threshold, a leaf its output
            t = tree.tree_
            leaves = int((t.children_left == -1).sum())
            params += 2 * (t.node_count - leaves) + leaves * t.value.shape[1] * t.value.shape[2]
        n_out, columns = info.n_outputs, getattr(forest, "classes_", None)

        def outputs(windows: np.ndarray) -> np.ndarray:
            feats = window_features(windows)
            if not classify:
                return forest.predict(feats).astype(np.float32).reshape(len(windows), -1)
            prob = np.zeros((len(windows), n_out))
            prob[:, columns.astype(np.int64)] = forest.predict_proba(feats)  # classes absent from train: 0
            return np.log(np.clip(prob, PROB_FLOOR, None)).astype(np.float32)

        return Fitted(forest, outputs, params, probabilistic=classify, n_fit=len(x))


#: recipe value -> baseline. The 9-step minimum is aeon's (its kernels have length 9); MultiRocket also convolves
#: the first difference, one step shorter.
BASELINES: dict[str, Baseline] = {
    "minirocket": Rocket("minirocket", "MiniRocket + ridge", "MiniRocket", ("parameters",), 9,
                         "aeon's MiniRocket convolves kernels of length 9"),
    "multirocket": Rocket("multirocket", "MultiRocket + ridge", "MultiRocket", ("parameter", "parameter1"), 10,
                          "aeon's MultiRocket convolves kernels of length 9 over the series and its first difference"),
    "forest": Forest(),
}


def check_classical(recipe: Recipe, info: DataInfo) -> None:
    """Refuse, at plan time, baselines that cannot run on this data (images; windows too short for a rocket)."""
    names = list(recipe.report.classical)
    if not names:
        return
    if len(info.input_shape) != 2:
        raise UserInputError(f"report.classical: the classical baselines take series (channels, length); this data's "
                             f"input is {tuple(info.input_shape)} (an image). Remove report.classical for image data")
    length = info.input_shape[-1]
    for name in names:
        baseline = BASELINES[name]
        if length < baseline.min_length:
            raise UserInputError(
                f"report.classical: '{name}' needs windows of at least {baseline.min_length} steps ({baseline.why_length}); "
                f"this data's windows have {length}. Use 'forest', or longer windows (data.window.length)")
        baseline.check(info)


class _AsModule(nn.Module):
    """A fitted baseline behind the networks' interface, so evaluate's own functions score it (same metrics, same
    unscaling of regression targets)."""

    def __init__(self, outputs: Callable[[np.ndarray], np.ndarray]) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.outputs(x.detach().cpu().float().numpy())))


def latency_ms(outputs: Callable[[np.ndarray], np.ndarray], window: np.ndarray) -> float:
    """Median wall time of ``outputs`` on one window (batch 1), one BLAS/OpenMP thread, after a warm-up."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        for _ in range(LATENCY_WARMUP):
            outputs(window)
        times: list[float] = []
        stop = time.perf_counter() + LATENCY_BUDGET_S
        while len(times) < LATENCY_CALLS and (len(times) < LATENCY_MIN_CALLS or time.perf_counter() < stop):
            t0 = time.perf_counter()
            outputs(window)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def fit_and_score(name: str, splits: DataSplits, seed: int) -> dict[str, Any]:
    """One baseline, one seed: fitted on train, scored on val and test, sized and timed. A JSON-safe record whose
    ``val``/``test`` hold the same metrics under "best" and "last" (a fitted model has one state), as a stage's do."""
    info, baseline = splits.info, BASELINES[name]
    x = splits.train.x.detach().cpu().float().numpy()
    y = splits.train.y.detach().cpu().numpy()
    threads = max(1, torch.get_num_threads())
    rng_state = np.random.get_state()  # aeon's rockets seed numpy's global generator: leave it as it was
    try:
        t0 = time.perf_counter()
        fitted = baseline.fit(x, y, info, seed, threads)
        fit_s = time.perf_counter() - t0
    finally:
        np.random.set_state(rng_state)
    module, cpu = _AsModule(fitted.outputs), torch.device("cpu")
    val, test = evaluate_val_test(module, splits.val, splits.test, info, cpu)
    if not fitted.probabilistic:
        val, test = ({k: v for k, v in m.items() if k not in CALIBRATION_KEYS} for m in (val, test))
    return {
        "baseline": name, "model": baseline.label, "seed": seed, "n_train": len(x), "n_fit": fitted.n_fit,
        "note": fitted.note, "params": fitted.params,
        "size_kb": len(pickle.dumps(fitted.model, protocol=pickle.HIGHEST_PROTOCOL)) / 1024,
        "latency_ms": latency_ms(fitted.outputs, x[:1]), "fit_s": fit_s, "fit_threads": threads,
        "val": {"best": val, "last": val}, "test": {"best": test, "last": test},
        "detail": evaluate_detail(module, splits.test, info, cpu),
    }


def _complete(record: Any, name: str, seed: int, n_train: int) -> bool:
    """A record this code wrote for this baseline, seed and training set, with both splits' metrics."""
    try:
        return (record["baseline"] == name and record["seed"] == seed and record["n_train"] == n_train
                and all(isinstance(record[s][k], dict) for s in ("val", "test") for k in ("best", "last"))
                and all(isinstance(record[k], (int, float)) for k in ("params", "size_kb", "latency_ms", "fit_s")))
    except (KeyError, TypeError):
        return False


def _seed_record(name: str, splits: DataSplits, seed: int, run_dir: Path, progress: StageProgress) -> dict[str, Any]:
    label = f"classical: {BASELINES[name].label}, seed {seed}"
    path = inside(run_dir, "classical", name, f"seed{seed}", "summary.json")
    done = read_json_record(path)  # a damaged file is None (and said): fitted again
    if done is not None and _complete(done, name, seed, len(splits.train)):
        progress.message(f"{label}: read back from {path}")
        return done
    if done is not None:
        progress.message(f"{label}: {path} is incomplete; fitted again")
    progress.message(f"{label}: fitting on {len(splits.train):,} training windows")
    record = fit_and_score(name, splits, seed)
    key = "acc" if splits.info.task == "classification" else "rmse"
    note = f"; {record['note']}" if record["note"] else ""
    progress.message(f"{label}: fitted in {record['fit_s']:.1f} s, val {key} {record['val']['best'][key]:.3f}, "
                     f"{record['latency_ms']:.2f} ms per window{note}")
    write_json(path, record)
    return record


def classical_rows(recipe: Recipe, splits: DataSplits, run_dir: Path, progress: StageProgress) -> list[dict[str, Any]]:
    """One report row per baseline in ``report.classical``, over ``recipe.seeds`` (random_state = seed), shaped as
    the runner's model rows, plus ``latency_ms``, ``fit_s`` (means over seeds), ``note`` and ``detail``. Each
    seed's record is ``<run_dir>/classical/<name>/seed<k>/summary.json``, read back on a resumed run."""
    from edgedistill.experiment import report  # here, not at the top: report.py may import this module

    select, rows = recipe.report.select, []
    for name in recipe.report.classical:
        per_seed = [_seed_record(name, splits, seed, run_dir, progress) for seed in recipe.seeds]
        mean = lambda key: sum(s[key] for s in per_seed) / len(per_seed)  # noqa: E731
        notes = sorted({s["note"] for s in per_seed if s.get("note")})
        row: dict[str, Any] = {
            "model": BASELINES[name].label, "role": ROLE, "params": int(round(mean("params"))),
            "size_kb": round(mean("size_kb"), 3), "metrics": report.aggregate(per_seed, select),
            "val_metrics": report.aggregate(per_seed, select, split="val"),
            "per_seed_test": [s["test"][select] for s in per_seed],
            "latency_ms": mean("latency_ms"), "fit_s": mean("fit_s"), "note": "; ".join(notes),
        }
        if all(isinstance(s.get("detail"), dict) for s in per_seed):
            row["detail"] = mean_detail([s["detail"] for s in per_seed], "fitted")
        rows.append(row)
    return rows


def _student_row(rows: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The deliverable: the method's row, or the student alone's when the regime is the student alone."""
    return next((r for r in rows if r["role"] == "method"), None) or next(
        (r for r in reversed(rows) if r["role"] == "student alone"), None)


def comparison(summary: dict[str, Any]) -> Optional[str]:
    """One plain sentence: the best classical baseline on test against the student, beyond the seeds' spread."""
    rows = summary.get("rows", [])
    classical = [r for r in rows if r.get("role") == ROLE]
    student = _student_row(rows)
    key, better, what = (("acc", 1, "accuracy") if summary["task"] == "classification" else ("rmse", -1, "RMSE"))
    classical = [r for r in classical if key in r["metrics"]]
    if not classical or student is None or key not in student["metrics"]:
        return None
    best = max(classical, key=lambda r: better * r["metrics"][key]["mean"])
    c, s = best["metrics"][key], student["metrics"][key]
    diff, spread = better * (s["mean"] - c["mean"]), max(c["std"], s["std"])
    head = f"The {best['model']} scored test {what} {c['mean']:.3f} vs the student's {s['mean']:.3f} ({student['model']})"
    size = "" if student.get("size_kb") is None else f" ({best['size_kb']:,.1f} KB vs {student['size_kb']:,.1f} KB)"
    if c["n"] == 1 or s["n"] == 1:
        spread_words = "on one seed, no spread to judge it by"
    else:
        spread_words = f"seed std {spread:.3f}"
    if diff > 0 and (c["n"] == 1 or s["n"] == 1 or diff > spread):
        return f"{head}: the network is better by {diff:.3f} ({spread_words})."
    if diff < 0 and (c["n"] == 1 or s["n"] == 1 or -diff > spread):
        return (f"{head}: the classical baseline is better by {-diff:.3f} ({spread_words}); the network pays off only "
                f"if its size or speed matters{size}.")
    return (f"{head}: no clear difference ({abs(diff):.3f}, within the {spread_words}); the network pays off only if "
            f"its size or speed matters{size}.")


def markdown_lines(summary: dict[str, Any]) -> list[str]:
    """report.md's "Classical baselines" section: size, latency, fit time and notes of each baseline, then the
    sentence comparing the best of them with the student. [] when the run has none."""
    rows = [r for r in summary.get("rows", []) if r.get("role") == ROLE]
    if not rows:
        return []
    lines = ["", "## Classical baselines", "",
             "| model | params | KB | latency ms (batch 1, 1 thread) | fit s | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['size_kb']:,.1f} | {r.get('latency_ms', float('nan')):.3f} | "
                     f"{r.get('fit_s', float('nan')):.1f} | {r.get('note') or ''} |")
    lines += ["", "Fitted on the same normalised training windows as the networks, once per seed; test metrics are in the "
              "main table. *params*: numbers the fitted model stores; *KB*: the pickled model; *latency*: median of "
              "predicting one window on this CPU, features included (docs/classical.md)."]
    sentence = comparison(summary)
    return lines + (["", sentence] if sentence else [])
