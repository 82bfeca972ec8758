"""OPPORTUNITY loader on tiny files in the archive's own format: ``dataset/S<s>-<run>.dat`` (space-separated, 250
columns, 'NaN' for missing values) and ``dataset/column_names.txt`` ("Column: <k> <name>; ...").

Sensor values are ``row + 100 * column + 100000 * file`` (file: position in the challenge's train + test list), so
a window's values say which file, column and rows it came from.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgedistill.data.archives import opportunity as opp
from edgedistill.data.raw import check_raw
from edgedistill.errors import UserInputError

ROWS = 30
LOCO = [1] * 10 + [2] * 10 + [0] * 5 + [4] * 5  # Stand, Walk, Null, Sit
GESTURES = [0] * 8 + [406516] * 12 + [404516] * 10  # Null, Open Door 1, Close Door 1
TITLES = {1: "MILLISEC", 38: "InertialMeasurementUnit BACK accX", 47: "InertialMeasurementUnit BACK Quaternion1",
          244: "Locomotion", 245: "HL_Activity", 246: "LL_Left_Arm", 247: "LL_Left_Arm_Object",
          248: "LL_Right_Arm", 249: "LL_Right_Arm_Object", 250: "ML_Both_Arms"}
RUNS = opp.TRAIN_RUNS + opp.TEST_RUNS


def _column_names() -> str:
    lines = ["Data columns:"]
    for k in range(1, 244):
        lines.append(f"Column: {k} {TITLES.get(k, f'Accelerometer X{k} accX')}; value = round(original_value), "
                     f"unit = milli g")
    lines += ["", "Label columns: "] + [f"Column: {k} {TITLES[k]}" for k in range(244, 251)]
    return "\n".join(lines) + "\n"


def _write_run(path: Path, k: int, gestures: list[int] = GESTURES) -> None:
    rows = np.arange(ROWS)
    table = rows[:, None] + 100.0 * np.arange(opp.COLUMNS)[None, :] + 100000.0 * k
    table[:, 0] = np.round(rows * 1000 / 30)
    table[:, 243:250] = 0
    table[:, 243], table[:, 249] = LOCO, gestures
    if k == 0:
        table[5, 40] = np.nan  # a gap in an IMU channel: linear interpolation restores row + 100 * 40
    if k == len(opp.TRAIN_RUNS):
        table[:, 1] = np.nan  # a sensor missing for a whole run (S2-ADL4): zeros
    path.write_text("\n".join(" ".join("NaN" if np.isnan(v) else f"{v:.10g}" for v in row) for row in table) + "\n")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("opportunity") / "OpportunityUCIDataset"
    (folder / "dataset").mkdir(parents=True)
    (folder / "dataset" / "column_names.txt").write_text(_column_names())
    for k, (s, r) in enumerate(RUNS):
        _write_run(folder / "dataset" / f"S{s}-{r}.dat", k)
    return folder


@pytest.fixture
def archive(written: Path, tmp_path: Path) -> Path:
    """A fresh copy per test: some tests corrupt files."""
    return Path(shutil.copytree(written, tmp_path / "OpportunityUCIDataset"))


def test_challenge_split_locomotion_last_sample_labels(archive: Path) -> None:
    raw = opp.load(archive, label="locomotion", window=6, stride=3)
    # Starts 0, 3, .., 24: last samples 5, 8, .., 29 -> Stand Stand Walk Walk Walk Null Null Sit Sit per run.
    per_run = ["Stand", "Stand", "Walk", "Walk", "Walk", "Null", "Null", "Sit", "Sit"]
    assert raw.x.shape == (14 * 9, 113, 6) and raw.test_x.shape == (4 * 9, 113, 6)
    assert raw.y.tolist() == per_run * 14 and raw.test_y.tolist() == per_run * 4
    assert raw.group.tolist() == [1] * 54 + [2] * 36 + [3] * 36
    assert raw.test_group.tolist() == [2] * 18 + [3] * 18
    assert raw.classes == ["Null", "Stand", "Walk", "Sit", "Lie"]
    # Channel 0 is column 2 (0-based 1); the second window of test file S2-ADL5 (k = 15) starts at row 3.
    np.testing.assert_array_equal(raw.test_x[9 + 1, 0], 3 + np.arange(6) + 100 * 1 + 100000 * 15)
    assert len(raw.channels) == 113 and "InertialMeasurementUnit BACK accX" in raw.channels
    assert "InertialMeasurementUnit BACK Quaternion1" not in raw.channels  # quaternions are not body channels
    assert not raw.views


def test_default_window_passes_the_pipeline_checks(archive: Path) -> None:
    # 113 channels x 24 samples (0.8 s): last samples 23 (Null) and 29 (Sit) with stride 6. (Windows of 12 samples
    # or fewer with 96+ channels read as channels-last in check_raw: see docs/datasets/opportunity.md.)
    raw = opp.load(archive, label="locomotion", stride=6)
    check_raw(raw, "opportunity")
    assert raw.x.shape == (28, 113, 24) and raw.y[:2].tolist() == ["Null", "Sit"]


def test_gaps_filled_and_empty_sensor_zeroed(archive: Path) -> None:
    raw = opp.load(archive, label="locomotion", window=6, stride=3)
    ch = opp.CHANNEL_SETS["body"].index(40)
    np.testing.assert_array_equal(raw.x[1, ch], 3 + np.arange(6) + 100 * 40)  # S1-ADL1 row 5 was NaN
    assert (raw.test_x[:9, 0] == 0).all() and (raw.test_x[9:, 0] != 0).all()  # column 2 empty in S2-ADL4 only
    assert any("filled 31 missing value(s)" in n and "1 channel-run(s)" in n for n in raw.notes)


def test_gestures_null_dropped_and_pure_windows(archive: Path) -> None:
    raw = opp.load(archive, window=6, stride=3, null=False)
    assert raw.y[:8].tolist() == ["Open Door 1"] * 4 + ["Close Door 1"] * 4 and len(raw.y) == 14 * 8
    assert raw.classes[0] == "Open Door 1" and len(raw.classes) == 17 and "Null" not in raw.classes
    pure = opp.load(archive, label="locomotion", window=6, stride=3, labelling="pure", null=False)
    # Runs of 10, 10, 5, 5 rows: starts 0, 3 in each 10-row run; the 5-row runs are shorter than a window.
    assert pure.y[:4].tolist() == ["Stand", "Stand", "Walk", "Walk"] and len(pure.y) == 14 * 4
    np.testing.assert_array_equal(pure.x[2, 0], 10 + np.arange(6) + 100)


def test_resampling_channel_sets_and_views(archive: Path) -> None:
    raw = opp.load(archive, label="locomotion", rate=15.0, window=3, stride=3, channels="imus", views=True)
    # 15 Hz: rows 0, 2, .., 28 (15 samples); starts 0, 3, .., 12; last samples rows 4, 10, 16, 22, 28.
    assert raw.y[:5].tolist() == ["Stand", "Walk", "Walk", "Null", "Sit"]
    np.testing.assert_allclose(raw.x[1, 0], np.array([6, 8, 10]) + 100 * 37)
    assert len(raw.channels) == 45 and raw.x.shape[1] == 45
    assert {k: v.shape[1] for k, v in raw.views.items()} == {"accelerometers": 36, "imus": 45, "shoes": 32, "body": 113}
    np.testing.assert_array_equal(raw.views["imus"], raw.x)
    np.testing.assert_allclose(raw.views["body"][1, 0], np.array([6, 8, 10]) + 100 * 1)  # column 2 (accelerometers)
    body = opp.load(archive, window=6, stride=3, views=True)
    assert set(body.views) == {"accelerometers", "imus", "shoes"} and set(body.test_views) == set(body.views)
    np.testing.assert_array_equal(body.views["shoes"], body.x[:, -32:])
    np.testing.assert_array_equal(body.test_views["accelerometers"], body.test_x[:, :36])


def test_missing_and_corrupt_files_name_the_file(archive: Path) -> None:
    (archive / "dataset" / "S3-ADL5.dat").unlink()
    with pytest.raises(UserInputError, match="S3-ADL5.dat"):
        opp.load(archive)
    path = archive / "dataset" / "S1-ADL2.dat"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [" ".join(lines[3].split()[:-1])] + lines[4:]) + "\n")  # 249 columns
    with pytest.raises(UserInputError, match="S1-ADL2.dat"):
        opp.load(archive)
    _write_run(path, 1, gestures=[999] * ROWS)
    with pytest.raises(UserInputError, match="S1-ADL2.dat.*999"):
        opp.load(archive, window=6, stride=3)
    names = archive / "dataset" / "column_names.txt"
    names.write_text(names.read_text().replace("Column: 250 ML_Both_Arms", "Column: 250 Something"))
    with pytest.raises(UserInputError, match="column_names.txt"):
        opp.load(archive)
    names.unlink()
    with pytest.raises(UserInputError, match="column_names.txt"):
        opp.load(archive)


@pytest.mark.parametrize("params, key", [
    ({"window": 1}, "data.params.window"), ({"stride": 0}, "data.params.stride"),
    ({"window": 6, "stride": 7}, "data.params.stride"), ({"rate": 60.0}, "data.params.rate"),
    ({"rate": -1.0}, "data.params.rate"), ({"label": "hl_activity"}, "data.params.label"),
    ({"channels": "ambient"}, "data.params.channels"), ({"labelling": "majority"}, "data.params.labelling"),
    ({"window": 31}, "data.params.window"),
])
def test_bad_protocol_values_are_refused(archive: Path, params: dict, key: str) -> None:
    with pytest.raises(UserInputError, match=key):
        opp.load(archive, **params)


def test_archive_description_lists_the_challenge_files() -> None:
    assert opp.ARCHIVE.folder == "OpportunityUCIDataset" and len(opp.ARCHIVE.files) == 19
    assert "dataset/S2-ADL4.dat" in opp.ARCHIVE.files and "dataset/S4-ADL1.dat" not in opp.ARCHIVE.files
