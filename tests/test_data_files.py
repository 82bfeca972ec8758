"""User files: .npz round trip, long-format .csv, and one clear error per kind of bad file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedistill.config import DataConfig
from edgedistill.data import prepare_data
from edgedistill.data.csv_file import load_csv
from edgedistill.data.files import load_npz
from edgedistill.errors import UserInputError


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = dict(
        x=rng.normal(size=(8, 3, 10)), y=np.array(list("abababab")), group=np.arange(8) // 2,
        pi=rng.normal(size=(8, 4)), test_x=rng.normal(size=(3, 3, 10)), test_y=np.array(list("aab")),
        test_group=np.array([9, 9, 10]),
    )
    np.savez(tmp_path / "d.npz", **arrays)
    raw = load_npz(tmp_path / "d.npz")
    assert raw.task == "classification" and raw.name == "d"
    assert np.array_equal(raw.x, arrays["x"]) and raw.y.tolist() == list("abababab")
    assert np.array_equal(raw.group, arrays["group"]) and np.array_equal(raw.views["pi"], arrays["pi"])
    assert np.array_equal(raw.test_x, arrays["test_x"]) and raw.test_group.tolist() == [9, 9, 10]
    assert raw.test_views == {}  # privileged information may be missing at test time


def test_npz_task_inference_and_override(tmp_path: Path) -> None:
    np.savez(tmp_path / "r.npz", x=np.zeros((4, 1, 3)), y=np.array([0.5, 1.0, 2.0, 3.0]))
    assert load_npz(tmp_path / "r.npz").task == "regression"
    y = np.array([0.0, 1.0, 0.0, 1.0])
    np.savez(tmp_path / "c.npz", x=np.zeros((4, 1, 3)), y=y, task=np.array("classification"))
    assert load_npz(tmp_path / "c.npz").task == "classification"
    np.savez(tmp_path / "img.npz", x=np.zeros((4, 2, 5, 5)), y=np.array([True, False, True, False]))
    assert load_npz(tmp_path / "img.npz").task == "classification"


@pytest.mark.parametrize(
    "arrays, match",
    [
        (dict(y=np.arange(4)), "array 'x' is missing"),
        (dict(x=np.zeros((4, 1, 3))), "array 'y' is missing"),
        (dict(x=np.zeros((4, 3)), y=np.arange(4)), "array 'x' must be .n, channels, length"),
        (dict(x=np.zeros((4, 1, 3)), y=np.arange(5)), "array 'y' has 5 rows but 'x' has 4"),
        (dict(x=np.zeros((4, 1, 3)), y=np.arange(4), group=np.arange(3)), "array 'group' has 3 rows"),
        (dict(x=np.zeros((4, 1, 3)), y=np.arange(4), test_x=np.zeros((2, 1, 3))), "'test_y' is missing"),
        (dict(x=np.zeros((4, 1, 3)), y=np.arange(4), test_x=np.zeros((2, 2, 3)), test_y=np.arange(2)),
         "array 'test_x' has per-sample shape"),
        (dict(x=np.zeros((4, 1, 3)), y=np.arange(4), extra=np.zeros(7)), "array 'extra' has 7 rows"),
        (dict(x=np.array([["a"]] * 4).reshape(4, 1, 1), y=np.arange(4)), "array 'x' must be numeric"),
        (dict(x=np.zeros((4, 1, 3)), y=np.arange(4), task=np.array("ranking")), "array 'task'"),
    ],
)
def test_bad_npz_names_file_and_array(tmp_path: Path, arrays: dict, match: str) -> None:
    path = tmp_path / "broken.npz"
    np.savez(path, **arrays)
    with pytest.raises(UserInputError, match=match) as err:
        load_npz(path)
    assert "broken.npz" in str(err.value)


def test_unreadable_and_pickled_npz(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="nothere.npz' does not exist"):
        load_npz(tmp_path / "nothere.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(UserInputError, match="junk.npz"):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", x=np.zeros((2, 1, 2)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UserInputError, match="obj.npz.*unpickling"):
        load_npz(tmp_path / "obj.npz")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_with_window_column(tmp_path: Path) -> None:
    rows = ["window,group,ax,ay,y"]
    for w in range(4):
        for t in range(5):
            label = "walk" if w % 2 else "sit"
            rows.append(f"w{w},s{w // 2},{w * 10 + t * t},{-t},{'run' if (w == 3 and t == 0) else label}")
    raw = load_csv(_write(tmp_path / "long.csv", "\n".join(rows)))
    assert raw.x.shape == (4, 2, 5) and raw.task == "classification"
    assert raw.x[2, 0].tolist() == [20, 21, 24, 29, 36] and raw.x[2, 1].tolist() == [0, -1, -2, -3, -4]
    assert raw.y.tolist() == ["sit", "walk", "sit", "walk"]  # majority label per window
    assert raw.group.tolist() == ["s0", "s0", "s1", "s1"]


def test_csv_interleaved_window_rows_keep_row_order(tmp_path: Path) -> None:
    raw = load_csv(_write(tmp_path / "i.csv", "window,c,y\n1,1.0,0.5\n2,5.0,1.5\n1,2.0,0.5\n2,6.0,2.5\n"))
    assert raw.task == "regression" and raw.x[:, 0].tolist() == [[1.0, 2.0], [5.0, 6.0]]
    assert raw.y.tolist() == [0.5, 2.0]  # regression: window mean


def test_csv_cut_by_data_window(tmp_path: Path) -> None:
    rows = ["group,a,b,c,y"]
    for g, n in (("p1", 25), ("p2", 17)):  # recordings of different lengths are fine
        rows += [f"{g},{t % 5},{t * t % 7},{1},{'up' if t < 12 else 'down'}" for t in range(n)]
    path = _write(tmp_path / "rec.csv", "\n".join(rows))
    with pytest.raises(UserInputError, match="rec.csv.*no 'window' column.*data.window.length"):
        load_csv(path)
    raw = load_csv(path, length=8)
    assert raw.x.shape == (3 + 2, 3, 8)
    assert raw.group.tolist() == ["p1"] * 3 + ["p2"] * 2
    assert raw.y.tolist() == ["up", "down", "down", "up", "down"]
    d = prepare_data(DataConfig(path=path, window={"length": 8, "stride": 4}, split={"by": "random"}))
    assert d.info.input_shape == (3, 8) and d.info.has_groups and sum(d.info.sizes.values()) == 5 + 3


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,b\n1,2\n", "column 'y' .* is missing"),
        ("a,y\n", "header but no rows"),
        ("", "not a readable CSV"),
        ("window,a,y\n1,1,0\n1,oops,0\n", "column 'a' must be numeric.*row 3 has 'oops'"),
        ("window,a,y\n1,1,0\n1,,0\n", "column 'a' has a missing or non-finite value at row 3"),
        ("window,a,y\n1,1,0\n1,2,0\n2,3,1\n", "every window needs the same number of rows"),
        ("window,group,a,y\n1,p,1,0\n1,q,2,0\n", "window 1 mixes rows of several groups"),
        ("window,y\n1,0\n", "no channel columns"),
    ],
)
def test_bad_csv_names_file_and_column(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(UserInputError, match=match) as err:
        load_csv(_write(tmp_path / "bad.csv", text))
    assert "bad.csv" in str(err.value)


def test_csv_window_longer_than_every_recording(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="short.csv.*longer than every recording"):
        load_csv(_write(tmp_path / "short.csv", "a,y\n1,0\n2,0\n"), length=5)
