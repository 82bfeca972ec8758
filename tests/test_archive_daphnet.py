"""Daphnet loader on tiny files in the archive's own format: ``dataset/S<ss>R<rr>.txt``, space-separated integers,
11 columns (time ms, ankle/thigh/trunk acceleration in mg, annotation 0/1/2), no header.

Sensor values are ``row + 100 * column + 10000 * file`` (file: position in the release's list of 17 runs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedistill.data.archives import daphnet
from edgedistill.data.raw import check_raw
from edgedistill.errors import UserInputError

# Outside the experiment, walking, a 5-sample freeze, walking, a 2-sample freeze, outside again.
ANNOTATION = [0] * 4 + [1] * 12 + [2] * 5 + [1] * 8 + [2] * 2 + [0] * 3


def _write_run(path: Path, k: int, annotation: list[int] = ANNOTATION) -> None:
    rows = np.arange(len(annotation))
    table = rows[:, None] + 100 * np.arange(daphnet.COLUMNS)[None, :] + 10000 * k
    table[:, 0] = np.round(rows * 1000 / 64)
    table[:, 10] = annotation
    path.write_text("\n".join(" ".join(str(int(v)) for v in row) for row in table) + "\n")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    folder = tmp_path / "dataset_fog_release"
    (folder / "dataset").mkdir(parents=True)
    for k, (s, r) in enumerate(daphnet.RUNS):
        _write_run(daphnet.run_path(folder, s, r), k)
    return folder


def test_windows_labels_subjects(archive: Path) -> None:
    raw = daphnet.load(archive, window=4, stride=2)
    check_raw(raw, "daphnet")
    # Walking rows 4..15 -> starts 4..12 (5); freeze rows 16..20 -> 16; walking 21..28 -> 21, 23, 25; the 2-row
    # freeze is shorter than a window; annotation 0 is never windowed.
    per_run = ["no_freeze"] * 5 + ["freeze"] + ["no_freeze"] * 3
    assert raw.x.shape == (17 * 9, 9, 4) and raw.x.dtype == np.float32
    assert raw.y.tolist() == per_run * 17 and raw.classes == ["no_freeze", "freeze"]
    runs_per_subject = [2, 2, 3, 1, 2, 2, 2, 1, 1, 1]
    assert raw.group.tolist() == [s for s, n in zip(range(1, 11), runs_per_subject) for _ in range(9 * n)]
    np.testing.assert_array_equal(raw.x[5, 0], 16 + np.arange(4) + 100 * 1)  # ankle forward, file 0, rows 16..19
    np.testing.assert_array_equal(raw.x[9 + 1, 8], 6 + np.arange(4) + 100 * 9 + 10000)  # trunk lateral, file 1
    assert raw.channels[:3] == ["ankle_acc_forward", "ankle_acc_vertical", "ankle_acc_lateral"]
    assert raw.test_x is None
    assert any("17 freeze episode(s) shorter than a window" in n for n in raw.notes)
    assert set(raw.views) == {"ankle", "thigh", "trunk"}  # x holds all three: no "all"
    np.testing.assert_array_equal(raw.views["thigh"], raw.x[:, 3:6])
    assert not daphnet.load(archive, window=4, stride=2, views=False).views


def test_test_subjects_become_the_official_split(archive: Path) -> None:
    raw = daphnet.load(archive, window=4, stride=2, test_subjects=[2])
    assert raw.test_x.shape == (18, 9, 4) and set(raw.test_group.tolist()) == {2} and 2 not in raw.group
    assert len(raw.y) == 15 * 9 and set(raw.test_views) == {"ankle", "thigh", "trunk"}
    np.testing.assert_array_equal(raw.test_x[0, 0], 4 + np.arange(4) + 100 + 10000 * 2)  # S02R01 is file 2


def test_resampling_and_sensor_choice(archive: Path) -> None:
    raw = daphnet.load(archive, rate=32.0, window=2, stride=2, sensors=["trunk"])
    # 32 Hz keeps rows 0, 2, .., 32: walking k 2..7 -> 3 windows, freeze k 8..10 -> 1, walking k 11..14 -> 2.
    assert raw.y[:6].tolist() == ["no_freeze"] * 3 + ["freeze"] + ["no_freeze"] * 2 and len(raw.y) == 17 * 6
    np.testing.assert_allclose(raw.x[0, 0], np.array([4, 6]) + 100 * 7)
    assert raw.channels == ["trunk_acc_forward", "trunk_acc_vertical", "trunk_acc_lateral"]
    assert {k: v.shape[1] for k, v in raw.views.items()} == {"ankle": 3, "thigh": 3, "trunk": 3, "all": 9}
    np.testing.assert_array_equal(raw.views["trunk"], raw.x)
    np.testing.assert_allclose(raw.views["all"][0, 0], np.array([4, 6]) + 100 * 1)  # ankle forward
    assert any("resampled 64 Hz -> 32 Hz" in n for n in raw.notes)


def test_missing_and_corrupt_files_name_the_file(archive: Path) -> None:
    path = daphnet.run_path(archive, 7, 2)
    _write_run(path, 13, annotation=[1] * 10 + [3] * 4)
    with pytest.raises(UserInputError, match="S07R02.txt.*0, 1 or 2"):
        daphnet.load(archive)
    path.write_text("0 1 2 3 4 5 6 7 8 9 1\n16 1 2 3 4 5 6 7 8 1\n")  # 10 columns on line 2
    with pytest.raises(UserInputError, match="S07R02.txt"):
        daphnet.load(archive)
    path.unlink()
    with pytest.raises(UserInputError, match="S07R02.txt"):
        daphnet.load(archive)


@pytest.mark.parametrize("params, key", [
    ({"window": 0}, "data.params.window"), ({"stride": -1}, "data.params.stride"),
    ({"window": 4, "stride": 8}, "data.params.stride"), ({"rate": 128.0}, "data.params.rate"),
    ({"rate": True}, "data.params.rate"), ({"sensors": ["wrist"]}, "data.params.sensors"),
    ({"test_subjects": [11]}, "data.params.test_subjects"),
    ({"test_subjects": list(range(1, 11))}, "data.params.test_subjects"),
    ({"window": 1000}, "data.params.window"),
])
def test_bad_protocol_values_are_refused(archive: Path, params: dict, key: str) -> None:
    with pytest.raises(UserInputError, match=key):
        daphnet.load(archive, **params)


def test_archive_description_lists_the_runs() -> None:
    assert daphnet.ARCHIVE.folder == "dataset_fog_release" and len(daphnet.ARCHIVE.files) == 17
    assert daphnet.ARCHIVE.files[0] == "dataset/S01R01.txt" and daphnet.ARCHIVE.files[-1] == "dataset/S10R01.txt"
