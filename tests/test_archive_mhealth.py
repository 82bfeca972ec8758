"""The MHEALTH loader on a tiny archive in the real one's format (its README.txt): MHEALTHDATASET/mHealth_subject1.log
.. mHealth_subject10.log, 24 tab-separated numbers per line (23 signals, then the label, 0 = null class)."""
from pathlib import Path

import numpy as np
import pytest

from edgedistill.data.archives import mhealth
from edgedistill.data.archives.base import resample
from edgedistill.data.raw import check_raw
from edgedistill.errors import UserInputError


def _rows(labels: list[int], subject: int) -> np.ndarray:
    """One row per label: column c of row t holds subject*1000 + t + c/100 (so a window is checkable by value)."""
    t = np.arange(len(labels))[:, None]
    signals = subject * 1000 + t + np.arange(23)[None, :] / 100
    return np.concatenate([signals, np.asarray(labels, dtype=float)[:, None]], axis=1)


def write_archive(root: Path, labels: dict[int, list[int]]) -> Path:
    """Subjects 1..10, each with its label sequence (default: 0 x2, 1 x5, 0 x1, 3 x4)."""
    folder = root / "MHEALTHDATASET"
    folder.mkdir(parents=True)
    for k in range(1, 11):
        rows = _rows(labels.get(k, [0, 0, 1, 1, 1, 1, 1, 0, 3, 3, 3, 3]), k)
        text = "\n".join("\t".join(f"{v:g}" if c < 23 else str(int(v)) for c, v in enumerate(r)) for r in rows)
        (folder / f"mHealth_subject{k}.log").write_text(text + "\n")
    return folder


def test_windows_inside_activities_null_dropped_subjects_as_groups(tmp_path):
    folder = write_archive(tmp_path, {2: [12] * 6 + [0] * 3 + [12] * 3, 3: [0] * 6 + [2] * 4})
    raw = mhealth.load(folder, window=4, stride=1)
    check_raw(raw, "mhealth")
    # Default subjects: label 1 at rows 2..6 -> starts 2, 3; label 3 at rows 8..11 -> start 8.
    # Subject 2: label 12 at rows 0..5 -> starts 0, 1, 2; the run at rows 9..11 is too short.
    # Subject 3: six null rows (never windowed), then label 2 at rows 6..9 -> start 6.
    assert raw.x.shape == (8 * 3 + 3 + 1, 23, 4)
    first = raw.y[raw.group == 1].tolist()
    assert first == ["Standing still", "Standing still", "Lying down"]
    assert raw.y[raw.group == 2].tolist() == ["Jump front & back"] * 3
    assert raw.y[raw.group == 3].tolist() == ["Sitting and relaxing"]
    np.testing.assert_allclose(raw.x[raw.group == 3][0, 0], 3000 + np.arange(6, 10))
    assert sorted(set(raw.group.tolist())) == list(range(1, 11)) and raw.test_x is None
    one = raw.x[raw.group == 1]
    np.testing.assert_allclose(one[1, 0], 1000 + np.arange(3, 7))  # chest_acc_x, window starting at row 3
    np.testing.assert_allclose(one[2, 22], 1000 + np.arange(8, 12) + 0.22)  # arm_mag_z
    assert raw.classes == list(mhealth.ACTIVITIES) and raw.channels == list(mhealth.CHANNELS)
    assert {k: v.shape[1] for k, v in raw.views.items()} == {"chest": 5, "ankle": 9, "arm": 9}
    np.testing.assert_allclose(raw.views["ankle"][0], raw.x[0, 5:14])
    assert "dropped null class 0 (33 samples): 4 of 12 activities kept" in raw.notes[0]


def test_default_protocol_128_steps_half_overlap(tmp_path):
    folder = write_archive(tmp_path, {1: [0] * 10 + [10] * 300})
    raw = mhealth.load(folder)
    ones = raw.x[raw.group == 1]
    assert raw.x.shape[1:] == (23, 128) and len(ones) == 3  # starts 10, 74, 138 (202 + 128 > 310)
    np.testing.assert_allclose(ones[2, 3], 1000 + np.arange(138, 266) + 0.03)  # ecg_1
    assert set(raw.y[raw.group == 1].tolist()) == {"Jogging"}


def test_channel_groups_resampling_and_no_views(tmp_path):
    folder = write_archive(tmp_path, {1: [4] * 40})
    raw = mhealth.load(folder, window=10, stride=10, rate=25, channels=["ecg", "arm_gyro_x"], views=False)
    assert raw.channels == ["ecg_1", "ecg_2", "arm_gyro_x"] and raw.views == {}
    ones = raw.x[raw.group == 1]
    assert ones.shape == (2, 3, 10)  # 40 steps at 50 Hz -> 20 at 25 Hz
    expected = resample(_rows([4] * 40, 1)[:, [3, 4, 17]], 50.0, 25.0)[10:20].T
    np.testing.assert_allclose(ones[1], expected, rtol=1e-6)
    assert raw.x.shape[0] == 2  # the default subjects' runs (5 and 4 steps) shrink below 10 steps


def test_a_channel_subset_keeps_every_sensor_as_the_all_view(tmp_path):
    raw = mhealth.load(write_archive(tmp_path, {}), window=4, stride=2, channels=["arm"])
    assert raw.channels == list(mhealth.CHANNELS[14:23]) and set(raw.views) == {"chest", "ankle", "arm", "all"}
    np.testing.assert_allclose(raw.views["all"][:, 14:23], raw.x)
    np.testing.assert_allclose(raw.views["all"][0, :, 0], 1000 + 2 + np.arange(23) / 100, rtol=1e-6)
    assert "all" not in mhealth.load(write_archive(tmp_path / "b", {}), window=4, stride=2).views


@pytest.mark.parametrize("params, key", [
    ({"window": 0}, "data.params.window"), ({"stride": 200}, "data.params.stride"), ({"stride": -1}, "data.params.stride"),
    ({"rate": 0.0}, "data.params.rate"), ({"rate": 100.0}, "data.params.rate"),
    ({"channels": ["wrist"]}, "data.params.channels"), ({"channels": []}, "data.params.channels"),
    ({"window": 64, "stride": 8}, "data.params.window"),  # no activity of the fixture lasts 64 steps
])
def test_bad_protocol_values_are_refused(tmp_path, params, key):
    folder = write_archive(tmp_path, {})
    with pytest.raises(UserInputError, match=key):
        mhealth.load(folder, **params)


def test_missing_corrupt_and_bad_label_files_are_named(tmp_path):
    folder = write_archive(tmp_path, {})
    log = folder / "mHealth_subject7.log"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:3] + [lines[3].rsplit("\t", 1)[0]] + lines[4:]) + "\n")  # 23 columns
    with pytest.raises(UserInputError, match="mHealth_subject7.log"):
        mhealth.load(folder, window=4, stride=2)
    log.write_text("\n".join(lines[:3] + [lines[3].rsplit("\t", 1)[0] + "\t13"] + lines[4:]) + "\n")
    with pytest.raises(UserInputError, match="mHealth_subject7.log.*label 13 at line 4"):
        mhealth.load(folder, window=4, stride=2)
    log.write_text("\n".join(lines[:3] + [lines[3].replace("7003", "NaN", 1)] + lines[4:]) + "\n")
    with pytest.raises(UserInputError, match="mHealth_subject7.log.*line 4, column 1"):
        mhealth.load(folder, window=4, stride=2)
    log.unlink()
    with pytest.raises(UserInputError, match="mHealth_subject7.log.*missing"):
        mhealth.load(folder, window=4, stride=2)


def test_archive_entry(tmp_path):
    folder = write_archive(tmp_path, {})
    assert mhealth.ARCHIVE.folder == folder.name and all((folder / f).is_file() for f in mhealth.ARCHIVE.files)
    assert len(mhealth.ARCHIVE.files) == 10 and mhealth.ARCHIVE.load is mhealth.load
