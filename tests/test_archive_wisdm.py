"""The WISDM v1.1 loader on a tiny WISDM_ar_v1.1_raw.txt in the real file's format (WISDM_ar_v1.1_raw_about.txt):
'user,activity,timestamp,x,y,z;' per line, with the defects the real file has (two records on one line, a trailing
comma, an empty field), which are repaired or dropped and counted, never guessed."""
from pathlib import Path

import numpy as np
import pytest

from edgedistill.data.archives import wisdm
from edgedistill.data.archives.base import resample
from edgedistill.data.raw import check_raw
from edgedistill.errors import UserInputError


def _record(user: int, activity: str, i: int) -> str:
    """Record i of a run: x = user + i/100, y = -i, z = i/10 (so windows can be checked by value)."""
    return f"{user},{activity},{49105962326000 + i * 50_000_000},{user + i / 100:.2f},{-i},{i / 10:.1f};"


def write_archive(root: Path, lines: list[str]) -> Path:
    folder = root / "WISDM_ar_v1.1"
    folder.mkdir(parents=True)
    (folder / "WISDM_ar_v1.1_raw.txt").write_text("\n".join(lines) + "\n")
    return folder


def small_stream() -> list[str]:
    """User 33 jogging 7 records (one line holds two of them, one record has a trailing comma), a record with an
    empty z, one with 5 fields, one with a non-number, then user 33 sitting 4 records, then user 7 walking 5."""
    jog = [_record(33, "Jogging", i) for i in range(7)]
    lines = [jog[0], jog[1] + jog[2], jog[3][:-1] + ",;", jog[4], jog[5], jog[6],
             "33,Jogging,49106062326000,1.0,2.0,;", "33,Jogging,49106062326000,1.0,2.0;",
             "33,Jogging,49106062326000,1.0,abc,3.0;", "33,Dancing,49106062326000,1.0,2.0,3.0;"]
    lines += [_record(33, "Sitting", i) for i in range(4)]
    lines += [_record(7, "Walking", i) for i in range(5)]
    return lines


def test_small_windows_inside_runs_of_one_user_and_activity(tmp_path):
    folder = write_archive(tmp_path, small_stream())
    raw = wisdm.load(folder, window=4, stride=2)
    check_raw(raw, "wisdm")
    # Jogging 0..6 -> starts 0, 2 (4 would need record 7); Sitting 0..3 -> start 0; Walking 0..4 -> start 0.
    assert raw.x.shape == (4, 3, 4)
    assert raw.y.tolist() == ["Jogging", "Jogging", "Sitting", "Walking"]
    assert raw.group.tolist() == [33, 33, 33, 7]
    assert raw.classes == list(wisdm.ACTIVITIES) and raw.channels == ["acc_x", "acc_y", "acc_z"]
    np.testing.assert_allclose(raw.x[1, 0], [33.02, 33.03, 33.04, 33.05], rtol=1e-6)
    np.testing.assert_allclose(raw.x[1, 1], [-2, -3, -4, -5])
    np.testing.assert_allclose(raw.x[3, 2], [0.0, 0.1, 0.2, 0.3], atol=1e-6)
    assert raw.test_x is None
    counts = raw.notes[0]
    for part in ("20 records, 16 kept", "1 repaired trailing comma", "1 empty field", "1 wrong field count",
                 "1 not a number", "1 unknown activity"):
        assert part in counts, (part, counts)


def test_default_protocol_is_200_record_windows_without_overlap(tmp_path):
    lines = [_record(1, "Walking", i) for i in range(450)] + [_record(2, "Standing", i) for i in range(199)]
    raw = wisdm.load(write_archive(tmp_path, lines))
    assert raw.x.shape == (2, 3, 200) and raw.y.tolist() == ["Walking", "Walking"]
    np.testing.assert_allclose(raw.x[1, 1], -np.arange(200, 400))  # the second window starts at record 200


def test_resampling_and_axis_selection(tmp_path):
    lines = [_record(5, "Upstairs", i) for i in range(40)]
    raw = wisdm.load(write_archive(tmp_path, lines), window=10, stride=5, rate=10, channels=["z", "y"])
    # 40 records at 20 Hz -> 20 at 10 Hz -> starts 0, 5, 10.
    assert raw.x.shape == (3, 2, 10) and raw.channels == ["acc_z", "acc_y"]
    stream = np.stack([np.arange(40) / 10, -np.arange(40.0)], axis=1)
    expected = resample(stream, 20.0, 10.0)[5:15].T
    np.testing.assert_allclose(raw.x[1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("params, key", [
    ({"window": 0}, "data.params.window"), ({"window": 1}, "data.params.window"),
    ({"stride": 0}, "data.params.stride"), ({"window": 4, "stride": 5}, "data.params.stride"),
    ({"rate": -1.0}, "data.params.rate"), ({"rate": 40.0}, "data.params.rate"),
    ({"channels": ["w"]}, "data.params.channels"), ({"channels": ["x", "x"]}, "data.params.channels"),
    ({"window": 500}, "data.params.window"),
])
def test_bad_protocol_values_are_refused(tmp_path, params, key):
    folder = write_archive(tmp_path, small_stream())
    with pytest.raises(UserInputError, match=key):
        wisdm.load(folder, **params)


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(UserInputError, match="WISDM_ar_v1.1_raw.txt.*missing"):
        wisdm.load(tmp_path)
    folder = write_archive(tmp_path, ["not,a,record", "neither"])
    with pytest.raises(UserInputError, match="WISDM_ar_v1.1_raw.txt.*no record"):
        wisdm.load(folder)
    (folder / "WISDM_ar_v1.1_raw.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(UserInputError, match="WISDM_ar_v1.1_raw.txt.*cannot be read"):
        wisdm.load(folder)


def test_archive_entry(tmp_path):
    folder = write_archive(tmp_path, small_stream())
    assert wisdm.ARCHIVE.folder == folder.name and all((folder / f).is_file() for f in wisdm.ARCHIVE.files)
    assert wisdm.ARCHIVE.load is wisdm.load
