"""PAMAP2 loader on tiny files in the archive's own format (space-separated, 54 columns, 'NaN' for missing values).

Every sensor value in the fixture is ``1000 * column + row``: a window's values, the linear interpolation of a
missing value and the every-third-sample resampling are all checked exactly against that formula.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedistill.data.archives import pamap2
from edgedistill.data.raw import check_raw
from edgedistill.errors import UserInputError

# Activity runs of subject 101: transient 0, lying, 0, walking, watching TV (9, not a protocol activity), rope jumping.
RUNS_101 = [(0, 3), (1, 10), (0, 2), (4, 7), (9, 5), (24, 4)]
# Subject 102: sitting for 20 rows with a 5 s pause in the timestamps after row 9.
RUNS_102 = [(2, 20)]


def _write_subject(folder: Path, subject: int, runs: list[tuple[int, int]], pause_after: int | None = None) -> None:
    ids = np.concatenate([np.full(n, a) for a, n in runs])
    rows = np.arange(len(ids))
    t = 5.0 + rows * 0.01 + (np.where(rows > pause_after, 5.0, 0.0) if pause_after is not None else 0.0)
    table = 1000.0 * np.arange(pamap2.COLUMNS)[None, :] + rows[:, None]
    table[:, 0], table[:, 1] = t, ids
    table[rows % 10 != 0, pamap2.HEART_RATE] = np.nan  # heart rate at ~1/10 of the rows
    table[4, 4] = np.nan  # a dropped hand-IMU packet (hand acc16 x)
    lines = [" ".join("NaN" if np.isnan(v) else (f"{v:.2f}" if c == 0 else f"{v:g}") for c, v in enumerate(row))
             for row in table]
    path = folder / "Protocol" / f"subject{subject}.dat"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    folder = tmp_path / "PAMAP2_Dataset"
    _write_subject(folder, 101, RUNS_101)
    _write_subject(folder, 102, RUNS_102, pause_after=9)
    return folder


def value(column: int, row: int | np.ndarray) -> np.ndarray:
    return 1000.0 * column + np.asarray(row, dtype=np.float64)


def test_windows_labels_subjects_at_100hz(archive: Path) -> None:
    raw = pamap2.load(archive, rate=100.0, window=4, stride=2, subjects=[101, 102])
    check_raw(raw, "pamap2")
    assert raw.x.shape == (7 + 8, 27, 4) and raw.x.dtype == np.float32
    # 101: lying rows 3..12 -> starts 3,5,7,9; walking rows 15..21 -> 15,17; TV dropped; rope jumping 27..30 -> 27.
    # 102: sitting rows 0..9 and 10..19, split at the pause: starts 0,2,4,6 and 10,12,14,16.
    assert raw.y[:7].tolist() == ["lying"] * 4 + ["walking"] * 2 + ["rope_jumping"]
    assert raw.group.tolist() == [101] * 7 + [102] * 8 and raw.y[7:].tolist() == ["sitting"] * 8
    assert raw.classes == list(pamap2.ACTIVITIES.values()) and len(raw.classes) == 12
    starts = [3, 5, 7, 9, 15, 17, 27]
    hand_acc16_x, ankle_mag_z = 4, 37 + 12
    for i, s in enumerate(starts):
        np.testing.assert_array_equal(raw.x[i, 0], value(hand_acc16_x, np.arange(s, s + 4)))  # row 4's NaN filled
        np.testing.assert_array_equal(raw.x[i, 26], value(ankle_mag_z, np.arange(s, s + 4)))
    assert raw.channels[:4] == ["hand_acc16_x", "hand_acc16_y", "hand_acc16_z", "hand_gyro_x"]
    assert raw.channels[-1] == "ankle_mag_z"
    assert any("non-protocol activities [9]" in n for n in raw.notes)
    assert any("2 IMU value(s)" in n for n in raw.notes)  # row 4 of each subject


def test_a_timestamp_pause_ends_a_stream(archive: Path) -> None:
    raw = pamap2.load(archive, rate=100.0, window=4, stride=4, subjects=[102])
    # 20 contiguous rows would give starts 0,4,8,12,16; the pause after row 9 leaves 0,4 and 10,14.
    firsts = raw.x[:, 0, 0] - 1000.0 * 4
    assert firsts.tolist() == [0, 4, 10, 14]
    assert set(raw.group.tolist()) == {102} and set(raw.y.tolist()) == {"sitting"}
    assert any("1 pause(s) above 0.1 s" in n for n in raw.notes)


def test_default_rate_takes_every_third_sample(archive: Path) -> None:
    raw = pamap2.load(archive, window=3, stride=1, subjects=[101])
    # Resampled k <- row 3k: lying rows 3,6,9,12 (k 1..4) -> 2 windows; walking rows 15,18,21 -> 1; rope jumping
    # rows 27,30 -> too short.
    assert raw.y.tolist() == ["lying", "lying", "walking"]
    np.testing.assert_allclose(raw.x[0, 0], value(4, [3, 6, 9]))
    np.testing.assert_allclose(raw.x[2, 0], value(4, [15, 18, 21]))
    assert any("resampled 100 Hz -> 33.33 Hz" in n for n in raw.notes)


def test_channel_choice_heart_rate_and_views(archive: Path) -> None:
    raw = pamap2.load(archive, rate=100.0, window=4, stride=2, subjects=[101], sensors=["ankle"],
                      signals=["temperature", "acc6"], heart_rate=True)
    assert raw.channels == ["ankle_temperature", "ankle_acc6_x", "ankle_acc6_y", "ankle_acc6_z", "heart_rate"]
    np.testing.assert_array_equal(raw.x[0, 1], value(37 + 4, np.arange(3, 7)))
    # Heart rate given at rows 0, 10, 20, 30 (value 2000 + row): linear in between, so exactly 2000 + row.
    np.testing.assert_allclose(raw.x[0, 4], value(pamap2.HEART_RATE, np.arange(3, 7)))
    # Every placement is a view, and "all" (3 IMUs x 4 + heart rate) since x keeps the ankle only.
    assert {k: v.shape[1] for k, v in raw.views.items()} == {"hand": 4, "chest": 4, "ankle": 4, "all": 13}
    np.testing.assert_array_equal(raw.views["ankle"], raw.x[:, :4])
    np.testing.assert_array_equal(raw.views["hand"][0, 0], value(3, np.arange(3, 7)))  # hand temperature
    np.testing.assert_array_equal(raw.views["all"][:, [8, 9, 10, 11, 12]], raw.x)
    assert not pamap2.load(archive, rate=100.0, window=4, stride=2, subjects=[101], views=False).views
    every = pamap2.load(archive, rate=100.0, window=4, stride=2, subjects=[101])
    assert set(every.views) == {"hand", "chest", "ankle"}  # x already holds every sensor: no "all"
    np.testing.assert_array_equal(every.views["chest"], every.x[:, 9:18])


def test_missing_and_corrupt_files_name_the_file(archive: Path) -> None:
    with pytest.raises(UserInputError, match="subject103.dat"):
        pamap2.load(archive, subjects=[101, 103])
    path = archive / "Protocol" / "subject102.dat"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5] + [" ".join(lines[5].split()[:-1])] + lines[6:]) + "\n")  # 53 columns
    with pytest.raises(UserInputError, match="subject102.dat"):
        pamap2.load(archive, subjects=[102])
    path.write_text("\n".join(lines[:5] + [lines[5].replace("NaN", "n/a", 1)] + lines[6:]) + "\n")
    with pytest.raises(UserInputError, match="subject102.dat"):
        pamap2.load(archive, subjects=[102])


@pytest.mark.parametrize("params, key", [
    ({"window": 0}, "data.params.window"), ({"stride": 0}, "data.params.stride"),
    ({"window": 4, "stride": 5}, "data.params.stride"), ({"rate": 0.0}, "data.params.rate"),
    ({"rate": 200.0}, "data.params.rate"), ({"sensors": ["wrist"]}, "data.params.sensors"),
    ({"signals": ["orientation"]}, "data.params.signals"), ({"subjects": [110]}, "data.params.subjects"),
    ({"window": 2.5}, "data.params.window"), ({"sensors": []}, "data.params.sensors"),
])
def test_bad_protocol_values_are_refused(archive: Path, params: dict, key: str) -> None:
    with pytest.raises(UserInputError, match=key):
        pamap2.load(archive, **params)


def test_archive_description_names_the_files() -> None:
    assert pamap2.ARCHIVE.folder == "PAMAP2_Dataset" and pamap2.ARCHIVE.load is pamap2.load
    assert "Protocol/subject101.dat" in pamap2.ARCHIVE.files and len(pamap2.ARCHIVE.files) == 9
