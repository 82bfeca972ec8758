"""The UCI-HAR loader on a tiny archive written in the real one's format (its README.txt): activity_labels.txt as
'<id> <NAME>' lines, y_<part>.txt and subject_<part>.txt one integer per line, and 'Inertial Signals/<signal>_<part>.txt'
with one 128-value window per row, values in MATLAB's '%15.7e' style with 3-digit exponents, space-separated."""
from pathlib import Path

import numpy as np
import pytest

from edgedistill.data.archives import uci_har
from edgedistill.data.archives.base import resample
from edgedistill.data.raw import check_raw
from edgedistill.errors import UserInputError

NAMES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]
# (activity id, subject) per window row, for each part; the train subjects are not the test subjects.
ROWS = {"train": [(1, 1), (2, 1), (6, 3), (4, 3), (5, 3)], "test": [(3, 2), (6, 2), (1, 2)]}


def _matlab(v: float) -> str:
    """' 1.8085150e-004' as the archive writes a value."""
    mantissa, exp = f"{v:.7e}".split("e")
    return f"{mantissa}e{exp[0]}{int(exp[1:]):03d}".rjust(15)


def write_archive(root: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """The archive folder and the signal values written, {part: (n, 9, 128)} in uci_har.SIGNALS order."""
    folder = root / "UCI HAR Dataset"
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    (folder / "activity_labels.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(NAMES, 1)))
    written = {}
    for part, rows in ROWS.items():
        (folder / part / "Inertial Signals").mkdir(parents=True)
        (folder / part / f"y_{part}.txt").write_text("".join(f"{a}\n" for a, _ in rows))
        (folder / part / f"subject_{part}.txt").write_text("".join(f"{s}\n" for _, s in rows))
        values = rng.normal(size=(len(rows), 9, 128))
        for c, signal in enumerate(uci_har.SIGNALS):
            lines = ["".join(" " + _matlab(v) for v in values[r, c]) for r in range(len(rows))]
            (folder / part / "Inertial Signals" / f"{signal}_{part}.txt").write_text("\n".join(lines) + "\n")
        written[part] = values
    return folder, written


def test_reads_the_official_split_windows_labels_and_subjects(tmp_path):
    folder, written = write_archive(tmp_path)
    raw = uci_har.load(folder)
    check_raw(raw, "uci_har")
    assert raw.x.shape == (5, 9, 128) and raw.test_x.shape == (3, 9, 128)
    np.testing.assert_allclose(raw.x, written["train"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(raw.test_x, written["test"], rtol=1e-6, atol=1e-7)
    assert raw.y.tolist() == ["WALKING", "WALKING_UPSTAIRS", "LAYING", "SITTING", "STANDING"]
    assert raw.test_y.tolist() == ["WALKING_DOWNSTAIRS", "LAYING", "WALKING"]
    assert raw.group.tolist() == [1, 1, 3, 3, 3] and raw.test_group.tolist() == [2, 2, 2]
    assert raw.classes == NAMES and raw.channels == list(uci_har.SIGNALS)
    assert set(raw.views) == {"body_acc", "body_gyro", "total_acc"}
    np.testing.assert_allclose(raw.views["body_gyro"], written["train"][:, 3:6], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(raw.test_views["total_acc"], written["test"][:, 6:9], rtol=1e-6, atol=1e-7)
    assert any("official split" in n for n in raw.notes)


def test_channel_selection_by_signal_and_group_and_no_views(tmp_path):
    folder, written = write_archive(tmp_path)
    raw = uci_har.load(folder, channels=["total_acc", "body_gyro_z"], views=False)
    assert raw.channels == ["total_acc_x", "total_acc_y", "total_acc_z", "body_gyro_z"]
    np.testing.assert_allclose(raw.x, written["train"][:, [6, 7, 8, 5]], rtol=1e-6, atol=1e-7)
    assert raw.views == {} and raw.test_x.shape == (3, 4, 128)
    assert any("kept 4 of 9" in n for n in raw.notes)


def test_resampling_halves_the_window(tmp_path):
    folder, written = write_archive(tmp_path)
    raw = uci_har.load(folder, rate=25)
    assert raw.x.shape == (5, 9, 64)
    expected = resample(written["train"][2].T, 50.0, 25.0).T
    np.testing.assert_allclose(raw.x[2], expected, rtol=1e-5, atol=1e-6)
    assert any("50 Hz -> 25 Hz" in n for n in raw.notes)


@pytest.mark.parametrize("params, key", [
    ({"rate": 0}, "data.params.rate"), ({"rate": 100.0}, "data.params.rate"), ({"rate": 0.5}, "data.params.rate"),
    ({"channels": ["acc_x"]}, "data.params.channels"), ({"channels": []}, "data.params.channels"),
])
def test_bad_protocol_values_are_refused(tmp_path, params, key):
    folder, _ = write_archive(tmp_path)
    with pytest.raises(UserInputError, match=key):
        uci_har.load(folder, **params)


def test_missing_and_corrupt_files_are_named(tmp_path):
    folder, _ = write_archive(tmp_path)
    gyro = folder / "test" / "Inertial Signals" / "body_gyro_y_test.txt"
    lines = gyro.read_text().splitlines()
    gyro.write_text("\n".join([lines[0], lines[1].rsplit(" ", 1)[0], lines[2]]) + "\n")  # a row of 127 values
    with pytest.raises(UserInputError, match="body_gyro_y_test.txt"):
        uci_har.load(folder)
    gyro.unlink()
    with pytest.raises(UserInputError, match="body_gyro_y_test.txt.*missing"):
        uci_har.load(folder)


def test_misaligned_rows_and_unknown_activity_ids_are_named(tmp_path):
    folder, _ = write_archive(tmp_path)
    (folder / "train" / "subject_train.txt").write_text("1\n1\n3\n3\n")
    with pytest.raises(UserInputError, match="subject_train.txt.*row-aligned"):
        uci_har.load(folder)
    folder, _ = write_archive(tmp_path / "again")
    (folder / "train" / "y_train.txt").write_text("1\n2\n7\n4\n5\n")
    with pytest.raises(UserInputError, match="y_train.txt.*activity id 7 at row 3"):
        uci_har.load(folder)


def test_archive_entry_lists_the_files_it_reads(tmp_path):
    folder, _ = write_archive(tmp_path)
    assert uci_har.ARCHIVE.folder == folder.name and uci_har.ARCHIVE.load is uci_har.load
    assert all((folder / f).is_file() for f in uci_har.ARCHIVE.files)
    assert "train/Inertial Signals/total_acc_x_train.txt" in uci_har.ARCHIVE.files
