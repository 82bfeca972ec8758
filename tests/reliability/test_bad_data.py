"""Bad data is refused, not trained on (issue 16, item 5): every bad .npz/.csv below fails in prepare_data with one
UserInputError naming the file and the array or column; through the CLI it exits 2 before the run folder exists.
The good cases check that explicit CSV columns, time ordering and data.task load what they say."""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.config import DataConfig
from edgedistill.data import prepare_data
from edgedistill.data.normalize import MAX_Z
from edgedistill.errors import UserInputError, one_line

N = 48


def _arrays(**change: Any) -> dict[str, np.ndarray]:
    """48 samples, 3 channels x 32 steps, 4 classes that the input separates, 6 subjects."""
    rng = np.random.default_rng(0)
    y = np.arange(N) % 4
    x = rng.normal(size=(N, 3, 32))
    x[np.arange(N), y % 3] += 1.0 + y[:, None]
    a: dict[str, Any] = {"x": x, "y": y, "group": np.repeat(np.arange(6), N // 6)}
    for k, v in change.items():
        if v is None:
            a.pop(k)
        else:
            a[k] = v(a) if callable(v) else v
    return a


def _npz(**change: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **_arrays(**change))
    return buf.getvalue()


def _poke(value: float, key: str = "x") -> Callable[[dict], np.ndarray]:
    def f(a: dict) -> np.ndarray:
        arr = a[key].astype(np.float64).copy()
        arr[(3,) + (0,) * (arr.ndim - 1)] = value
        return arr
    return f


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, _arrays()["x"])
    return buf.getvalue()


def _lying_header() -> bytes:
    """An .npz whose x.npy header claims 10**12 rows: np.load would try to allocate terabytes."""
    import zipfile

    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3, 32)))
    head = buf.getvalue().replace(b"(2, 3, 32)", b"(1000000000000, 3, 32)")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.npy", head)
        z.writestr("y.npy", b"")
    return out.getvalue()


def _official_test_with_constant_train_channel() -> bytes:
    a = _arrays()
    a["x"][:, 2] = 1.0  # constant in training (std floored at 1e-8) ...
    tx = a["x"][:8].copy()
    tx[:, 2] = 2.0  # ... but not in test: 1e8 standard deviations away
    buf = io.BytesIO()
    np.savez(buf, **a, test_x=tx, test_y=a["y"][:8])
    return buf.getvalue()


# (what, file bytes, data config extras, regex the one-line message must match: it names the array or column)
BAD_NPZ: list[tuple[str, Callable[[], bytes], dict, str]] = [
    ("NaN in x", lambda: _npz(x=_poke(np.nan)), {}, r"array 'x' has 1 non-finite"),
    ("inf in a view", lambda: _npz(pi=lambda a: _poke(np.inf)(a)), {}, r"array 'pi' has 1 non-finite"),
    ("NaN in regression y", lambda: _npz(y=lambda a: _poke(np.nan, "y")(a) + 0.25), {}, r"array 'y' has 1 non-finite"),
    ("1e30 in x", lambda: _npz(x=_poke(1e30)), {}, r"array 'x' has 1 value\(s\) above 1e\+12"),
    ("epoch ms as a view", lambda: _npz(ts=np.arange(N) + 1_700_000_000_000), {}, r"array 'ts' .*above 1e\+12"),
    ("all-constant x", lambda: _npz(x=np.ones((N, 3, 32))), {}, r"array 'x' is constant"),
    ("one class", lambda: _npz(y=np.zeros(N, int)), {}, r"array 'y' has one class only"),
    ("constant regression y", lambda: _npz(y=np.full(N, 2.5)), {"task": "regression"},
     r"array 'y': every regression target is 2.5"),
    ("float whole-number y", lambda: _npz(y=lambda a: a["y"].astype(float)), {},
     r"array 'y' is float with only whole-number values \(4 distinct: 0, 1, 2, 3\).*data.task: classification"),
    ("float few-valued y", lambda: _npz(y=lambda a: a["y"] * 0.5 + 0.25), {}, r"array 'y' is float with only a few"),
    ("one-hot y", lambda: _npz(y=lambda a: np.eye(4)[a["y"]]), {}, r"array 'y' looks one-hot.*argmax"),
    ("channels-last x", lambda: _npz(x=lambda a: a["x"].transpose(0, 2, 1)), {},
     r"array 'x' has shape \(48, 32, 3\).*channels-last.*np.transpose\(x, \(0, 2, 1\)\)"),
    ("channels-last images", lambda: _npz(x=np.random.default_rng(1).normal(size=(N, 16, 16, 3))), {},
     r"array 'x' .*channels-last.*np.transpose\(x, \(0, 3, 1, 2\)\)"),
    ("length 1", lambda: _npz(x=lambda a: a["x"][:, :, :1]), {}, r"array 'x' has shape \(48, 3, 1\): .*at least 2"),
    ("1 channel of length 1", lambda: _npz(x=lambda a: a["x"][:, :1, :1]), {}, r"array 'x' has shape \(48, 1, 1\)"),
    ("zero length", lambda: _npz(x=np.zeros((N, 3, 0))), {}, r"array 'x' has shape \(48, 3, 0\): zero"),
    ("no samples", lambda: _npz(x=np.zeros((0, 3, 32)), y=np.zeros(0, int), group=None), {}, r"array 'x' has 0 samples"),
    ("y one row short", lambda: _npz(y=lambda a: a["y"][:-1]), {}, r"array 'y' has 47 rows but 'x' has 48"),
    ("empty official test", lambda: _npz(test_x=np.zeros((0, 3, 32)), test_y=np.zeros(0, int)), {},
     r"array 'test_x' has 0 samples"),
    ("object dtype", lambda: _npz(y=lambda a: np.array([{"c": int(v)} for v in a["y"]], dtype=object)), {},
     r"array 'y' holds Python objects"),
    (".npy renamed .npz", _npy, {}, r"is a .npy file \(one array\), not an .npz"),
    ("text renamed .npz", lambda: b"x,y\n1,2\n", {}, r"not an .npz archive"),
    ("empty file", lambda: b"", {}, r"not an .npz archive .*empty"),
    ("truncated", lambda: _npz()[:700], {}, r"not a readable .npz"),
    ("header lies about size", _lying_header, {}, r"array 'x' claims shape \(1000000000000, 3, 32\)"),
    ("npz task vs data.task", lambda: _npz(task=np.array("regression")), {"task": "classification"},
     r"data.task: 'classification' but .* says 'regression'"),
    ("data.columns on an npz", lambda: _npz(), {"columns": {"label": "y"}}, r"data.columns: names the columns of a .csv"),
    ("constant train channel, varying test", _official_test_with_constant_train_channel, {"split": {"by": "stratified"}},
     r"view 'x', channel 2: the test split reaches 1e\+08 training standard deviations"),
    ("too few samples", lambda: _npz(x=lambda a: a["x"][:4], y=np.array([0, 1, 0, 1]), group=None), {},
     r"data.split: the train split has 1 sample"),
]


def _csv(rows: int = 6 * 4 * 16, extra: dict | None = None, rename: dict | None = None, drop: str = "",
         label: Callable[[np.ndarray], np.ndarray] | None = None) -> bytes:
    """6 subjects x 4 windows x 16 rows: columns group, window, y, c0..c2 (+ extra)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    win = np.arange(rows) // 16
    y = win % 3
    df = pd.DataFrame({"group": win // 4, "window": win, "y": y if label is None else label(y),
                       **{f"c{i}": rng.normal(size=rows) + (y == i) for i in range(3)}})
    for k, v in (extra or {}).items():
        df[k] = v(rows) if callable(v) else v
    return df.drop(columns=[drop] if drop else []).rename(columns=rename or {}).to_csv(index=False).encode()


def _dates(n: int) -> np.ndarray:
    return np.datetime_as_string(np.datetime64("2024-01-01T00:00:00") + np.arange(n) * np.timedelta64(20, "ms"))


BAD_CSV: list[tuple[str, Callable[[], bytes], dict, str]] = [
    ("a channel named x", lambda: _csv(rename={"c0": "x"}), {}, r"column\(s\) 'x' \(a reserved name\).*data.columns"),
    ("a channel named Label", lambda: _csv(extra={"Label": 1}), {}, r"'Label' \(a reserved name\)"),
    ("a timestamp column", lambda: _csv(extra={"timestamp": lambda n: 1.7e9 + np.arange(n) * 0.02}), {},
     r"'timestamp' \(a time/date name\)"),
    ("ISO dates under another name", lambda: _csv(extra={"when": _dates}), {}, r"'when' \(dates/times\)"),
    ("epoch ms under another name", lambda: _csv(extra={"t0": lambda n: 1_700_000_000_000 + np.cumsum(
        np.random.default_rng(3).integers(15, 25, n))}), {}, r"'t0' \(increasing timestamps\)"),
    ("pandas index column", lambda: _csv(extra={"Unnamed: 0": lambda n: np.arange(n)}), {}, r"'Unnamed: 0' \(no header"),
    ("a sample counter", lambda: _csv(extra={"n": lambda n: np.arange(n) % 16}), {}, r"'n' \(evenly increasing"),
    ("label column missing", lambda: _csv(drop="y"), {}, r"column 'y' \(the label/target\) is missing.*data.columns.label"),
    ("data.columns.label unknown", lambda: _csv(), {"columns": {"label": "activity"}},
     r"data.columns.label: .* has no column 'activity'; its columns are \['group', 'window', 'y', 'c0'"),
    ("data.columns.group unknown", lambda: _csv(), {"columns": {"group": "subject"}}, r"data.columns.group: .*'subject'"),
    ("data.columns.time unknown", lambda: _csv(), {"columns": {"time": "t"}}, r"data.columns.time: .*'t'"),
    ("unknown channel", lambda: _csv(), {"columns": {"channels": ["c0", "gyro"]}},
     r"data.columns.channels: .* no column\(s\) \['gyro'\]; its columns are"),
    ("channel is the label", lambda: _csv(), {"columns": {"channels": ["c0", "y"]}}, r"data.columns.channels: \['y'\]"),
    ("duplicate header", lambda: _csv().replace(b"c1", b"c0", 1), {}, r"column name\(s\) \['c0'\] appear more than once"),
    ("NaN in a channel", lambda: _csv(extra={"c3": lambda n: np.where(np.arange(n) == 9, np.nan, 1.0)}), {},
     r"column 'c3' has a missing or non-finite value at row 11"),
    ("1e30 in a channel", lambda: _csv(extra={"c3": lambda n: np.where(np.arange(n) == 9, 1e30, 1.0)}), {},
     r"array 'x' has 1 value\(s\) above 1e\+12"),
    ("float labels", lambda: _csv(label=lambda y: y + 0.5), {}, r"column 'y' is float with only a few distinct"),
    ("one class", lambda: _csv(label=lambda y: y * 0), {}, r"array 'y' has one class only"),
    ("time with duplicates", lambda: _csv(extra={"t": lambda n: (np.arange(n) % 16) // 2}), {"columns": {"time": "t"}},
     r"column 't' \(data.columns.time\): window 0 has two rows at time 0"),
    ("time not a time", lambda: _csv(extra={"t": "soon"}), {"columns": {"time": "t"}},
     r"data.columns.time: column 't' .* must hold numbers or dates/times; row 2 has 'soon'"),
]


def _prepare(tmp_path: Path, name: str, blob: bytes, extra: dict) -> Any:
    path = tmp_path / name
    path.write_bytes(blob)
    return prepare_data(DataConfig.model_validate({"path": str(path), "split": {"val": 0.25}, **extra}))


@pytest.mark.parametrize("what, make, extra, match", BAD_NPZ, ids=[c[0] for c in BAD_NPZ])
def test_bad_npz_is_refused_naming_the_array(tmp_path: Path, what: str, make: Callable, extra: dict, match: str) -> None:
    with pytest.raises(UserInputError) as err:
        _prepare(tmp_path, "bad.npz", make(), extra)
    msg = one_line(err.value)
    assert re.search(match, msg), msg
    assert "bad.npz" in msg and "\n" not in str(err.value)


@pytest.mark.parametrize("what, make, extra, match", BAD_CSV, ids=[c[0] for c in BAD_CSV])
def test_bad_csv_is_refused_naming_the_column(tmp_path: Path, what: str, make: Callable, extra: dict, match: str) -> None:
    with pytest.raises(UserInputError) as err:
        _prepare(tmp_path, "bad.csv", make(), extra)
    msg = one_line(err.value)
    assert re.search(match, msg), msg
    assert "bad.csv" in msg or "data.columns" in msg


def test_a_class_only_in_the_test_subjects_is_refused(tmp_path: Path) -> None:
    d = _prepare(tmp_path, "s.npz", _npz(), {"split": {"by": "subject"}})
    subject = int(d.test.group[0])  # subject codes are the sorted subject ids, here 0..5
    with pytest.raises(UserInputError, match=r"class\(es\) \['9'\] of .* are in the test split but not in train"):
        _prepare(tmp_path, "s.npz", _npz(y=lambda a: np.where(a["group"] == subject, 9, a["y"])),
                 {"split": {"by": "subject"}})


def test_the_good_file_behind_the_tables_loads(tmp_path: Path) -> None:
    """Each bad case above is one change away from these files, which load."""
    d = _prepare(tmp_path, "good.npz", _npz(), {})
    assert d.info.input_shape == (3, 32) and d.info.channels == ["0", "1", "2"] and d.info.n_outputs == 4
    assert d.info.notes == [f"'{tmp_path / 'good.npz'}': array 'y': integer labels read as 4 classes "
                            f"(set data.task: regression if they are numbers to predict)"]
    d = _prepare(tmp_path, "good.csv", _csv(), {})
    assert d.info.input_shape == (3, 16) and d.info.channels == ["c0", "c1", "c2"] and d.info.has_groups


def test_explicit_columns_pick_roles_and_channel_order(tmp_path: Path) -> None:
    blob = _csv(rename={"y": "activity", "group": "subject", "window": "w"}, extra={"Timestamp": lambda n: np.arange(n)})
    cols = {"label": "activity", "group": "subject", "window": "w", "channels": ["c2", "c0"]}
    d = _prepare(tmp_path, "own.csv", blob, {"columns": cols})
    assert d.info.channels == ["c2", "c0"] and d.info.input_shape == (2, 16) and d.info.has_groups
    assert d.info.classes == ["0", "1", "2"] and sum(d.info.sizes.values()) == 24
    # data.views picks from the named channels: the report names what the student sees
    d = _prepare(tmp_path, "own.csv", blob, {"columns": cols, "views": {"x": [1], "full": [0, 1]}})
    assert d.info.channels == ["c0"] and d.info.views == {"x": (1, 16), "full": (2, 16)}


def test_time_column_orders_rows_within_each_window_and_is_never_a_channel(tmp_path: Path) -> None:
    import pandas as pd

    rows = 6 * 4 * 16
    df = pd.read_csv(io.BytesIO(_csv(extra={"time": lambda n: np.arange(n) % 16 * 0.02})))
    shuffled = df.sample(frac=1.0, random_state=0)  # rows of every window out of order, windows interleaved
    path = tmp_path / "t.csv"
    shuffled.to_csv(path, index=False)
    d = _prepare(tmp_path, "t.csv", path.read_bytes(), {"columns": {"time": "time"}, "normalize": "none"})
    assert d.info.channels == ["c0", "c1", "c2"] and d.info.input_shape == (3, 16)
    assert any("not in 'time' order; sorted by time" in n for n in d.info.notes)
    ordered = _prepare(tmp_path, "o.csv", _csv(), {"normalize": "none"})  # the same data in file order
    key = lambda s: sorted(map(tuple, np.round(s.x.numpy().reshape(len(s), -1), 5).tolist()))  # noqa: E731
    both = [np.concatenate([key(getattr(dd, p)) for p in ("train", "val", "test")]) for dd in (d, ordered)]
    assert sorted(map(tuple, both[0])) == sorted(map(tuple, both[1])) and len(both[0]) == rows // 16
    # ISO date strings work as a time column too; without data.columns.time the same file is refused
    blob = _csv(extra={"stamp": _dates})
    assert _prepare(tmp_path, "iso.csv", blob, {"columns": {"time": "stamp"}}).info.channels == ["c0", "c1", "c2"]
    with pytest.raises(UserInputError, match=r"'stamp' \(dates/times\)"):
        _prepare(tmp_path, "iso.csv", blob, {})


def test_data_task_settles_ambiguous_labels(tmp_path: Path) -> None:
    as_float = _npz(y=lambda a: a["y"].astype(float))
    d = _prepare(tmp_path, "f.npz", as_float, {"task": "classification"})
    assert d.info.task == "classification" and d.info.classes == ["0", "1", "2", "3"]
    d = _prepare(tmp_path, "f.npz", as_float, {"task": "regression"})
    assert d.info.task == "regression" and d.info.n_outputs == 1
    d = _prepare(tmp_path, "h.npz", _npz(y=lambda a: np.eye(4)[a["y"]]), {"task": "classification"})
    assert d.info.classes == ["0", "1", "2", "3"] and any("one-hot" in n and "argmax" in n for n in d.info.notes)
    short = _npz(x=lambda a: a["x"][:, :, :4], y=lambda a: np.eye(4)[a["y"]])  # k == length: still one-hot
    assert _prepare(tmp_path, "s.npz", short, {"task": "classification"}).info.classes == ["0", "1", "2", "3"]
    d = _prepare(tmp_path, "h.npz", _npz(y=lambda a: np.eye(4)[a["y"]]), {"task": "regression"})
    assert d.info.task == "regression" and d.info.n_outputs == 4
    csv = _csv(label=lambda y: y + 0.5)
    assert _prepare(tmp_path, "c.csv", csv, {"task": "regression"}).info.task == "regression"
    assert _prepare(tmp_path, "c.csv", csv, {"task": "classification"}).info.classes == ["0.5", "1.5", "2.5"]
    with pytest.raises(UserInputError, match=r"data.task: 'regression' but dataset 'synthetic' is classification"):
        prepare_data(DataConfig(name="synthetic", task="regression"))


BASE = {"name": "bad-data", "data": {"path": "data.npz", "split": {"val": 0.25}},
        "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1, "batch_size": 8}},
        "student": {"model": "cnn1d", "width": 4, "depth": 2},
        "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5}]},
        "train": {"epochs": 1, "batch_size": 8}, "seeds": [0], "engine": {"threads": 1, "progress": False}}


@pytest.mark.parametrize("what, name, blob, columns, match", [
    ("float labels", "data.npz", lambda: _npz(y=lambda a: a["y"].astype(float)), None, r"set data.task"),
    ("channels-last", "data.npz", lambda: _npz(x=lambda a: a["x"].transpose(0, 2, 1)), None, r"np.transpose"),
    ("timestamp channel", "data.csv", lambda: _csv(extra={"ts": lambda n: 1.7e9 + np.arange(n)}), None, r"'ts'"),
    ("unknown channel", "data.csv", _csv, {"channels": ["c0", "gyro"]}, r"data.columns.channels"),
])
def test_the_cli_refuses_bad_data_with_exit_2_before_the_run_folder(tmp_path: Path, what: str, name: str,
                                                                     blob: Callable, columns: Any, match: str) -> None:
    (tmp_path / name).write_bytes(blob())
    recipe = {**BASE, "data": {**BASE["data"], "path": name, **({"columns": columns} if columns else {})}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(tmp_path / "r.yaml"), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and re.search(match, result.output), result.output
    assert not out.exists()


@st.composite
def _npz_files(draw: Callable) -> tuple[dict[str, np.ndarray], dict]:
    n, c, length = draw(st.integers(0, 40)), draw(st.integers(1, 14)), draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.normal(size=(n, c, length)) * draw(st.sampled_from([1e-3, 1.0, 1e9, 1e14]))
    if n and draw(st.booleans()):
        x[rng.integers(n), rng.integers(c), rng.integers(length)] = draw(st.sampled_from([np.nan, np.inf, 1e30, 0.0]))
    if draw(st.booleans()):
        x[:, rng.integers(c)] = draw(st.sampled_from([0.0, 5.0]))  # a constant channel (fine) or all of x
    k = draw(st.integers(1, 5))
    ids = rng.integers(0, k, n)
    y = draw(st.sampled_from(["int", "float", "whole", "onehot", "str"]))
    arrays = {"x": x, "y": {"int": ids, "float": rng.normal(size=n), "whole": ids.astype(float),
                            "onehot": np.eye(k)[ids], "str": np.array(["a", "b", "c", "d", "e"])[ids]}[y]}
    if draw(st.booleans()):
        arrays["group"] = rng.integers(0, draw(st.integers(1, 6)), n)
    extra = {"task": draw(st.sampled_from([None, "classification", "regression"])),
             "split": {"by": draw(st.sampled_from(["auto", "random", "stratified"])), "val": 0.25, "test": 0.25}}
    return arrays, {k: v for k, v in extra.items() if v is not None}


@settings(derandomize=True, deadline=None, max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_npz_files())
def test_accepted_data_is_always_sane(tmp_path: Path, case: tuple[dict, dict]) -> None:
    """Random arrays: either one UserInputError, or splits a model can meaningfully train and be scored on."""
    arrays, extra = case
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        d = _prepare(tmp_path, "h.npz", buf.getvalue(), extra)
    except UserInputError as exc:
        assert "\n" not in str(exc) and ("h.npz" in str(exc) or "data." in str(exc)), exc
        return
    parts = (d.train, d.val, d.test)
    assert len(d.train) >= 2 and len(d.val) >= 1 and len(d.test) >= 1
    assert all(bool(torch.isfinite(p.x).all()) and float(p.x.abs().max()) <= MAX_Z for p in parts)
    assert all(bool(torch.isfinite(p.y).all()) for p in parts)
    if d.info.task == "classification":
        seen = set(d.train.y.tolist())
        assert len(set(np.concatenate([p.y.numpy() for p in parts]).tolist())) >= 2
        assert set(d.val.y.tolist()) <= seen and set(d.test.y.tolist()) <= seen
