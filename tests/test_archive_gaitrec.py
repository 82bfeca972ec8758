"""GaitRec loader on tiny CSVs in the figshare format: GRF_<COMP>_PRO_<side>.csv (SUBJECT_ID, SESSION_ID, TRIAL_ID,
101 values, comma-separated, header) and GRF_metadata.csv (one row per session, split flags 0/1)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgedistill.data.archives.gaitrec import ARCHIVE, load
from edgedistill.errors import UserInputError

META_HEADER = ("CLASS_LABEL,CLASS_LABEL_DETAILED,SUBJECT_ID,SESSION_ID,SEX,AGE,HEIGHT,BODY_WEIGHT,BODY_MASS,SHOE_SIZE,"
               "AFFECTED_SIDE,SHOD_CONDITION,ORTHOPEDIC_INSOLE,SPEED,READMISSION,SESSION_TYPE,SESSION_DATE,TRAIN,"
               "TRAIN_BALANCED,TEST")
# session: (class, subject, speed, TRAIN, TRAIN_BALANCED, TEST, trials)
SESSIONS = {
    10: ("HC", 1, 2, 1, 1, 0, [1, 2]),
    11: ("HC", 1, 1, 1, 1, 0, [1]),  # a controlled-speed session: dropped under speed: self_selected
    20: ("K", 2, 2, 1, 0, 0, [1, 2]),  # in TRAIN only
    30: ("A", 3, 2, 0, 0, 1, [1, 2, 3]),
    40: ("H", 4, 2, 1, 1, 0, [1, 2]),  # trial 1 missing from GRF_F_ML_PRO_right.csv: dropped
}
COMPS = ("F_V", "F_AP", "F_ML")


def value(comp: int, side: int, session: int, trial: int) -> np.ndarray:
    return comp * 1000 + side * 100 + session + trial * 0.1 + np.arange(101) * 0.001


def write_gaitrec(root: Path) -> Path:
    folder = root / "GaitRec"
    folder.mkdir()
    lines = [META_HEADER]
    for s, (cls, subj, speed, train, bal, test, _) in SESSIONS.items():
        lines.append(f"{cls},{cls}_X,{subj},{s},1,40,175,800.5,81.6,42,0,1,0,{speed},0,1,2012-01-01,"
                     f"{train},{bal},{test}")
    (folder / "GRF_metadata.csv").write_text("\n".join(lines) + "\n")
    header = "SUBJECT_ID,SESSION_ID,TRIAL_ID," + ",".join(f"F_PRO_{i}" for i in range(1, 102))
    for ci, comp in enumerate(COMPS):
        for si, side in enumerate(("left", "right")):
            rows = [header]
            for s, (_, subj, *_, trials) in SESSIONS.items():
                for t in trials:
                    if s == 40 and t == 1 and comp == "F_ML" and side == "right":
                        continue
                    rows.append(f"{subj},{s},{t}," + ",".join(f"{v:.4f}" for v in value(ci, si, s, t)))
            (folder / f"GRF_{comp}_PRO_{side}.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_sessions_average_their_trials_and_follow_the_official_split(tmp_path):
    raw = load(write_gaitrec(tmp_path))
    assert raw.x.shape == (2, 6, 101) and raw.test_x.shape == (1, 6, 101)
    assert list(raw.y) == ["HC", "H"] and list(raw.group) == [1, 4]  # TRAIN_BALANCED, self-selected speed
    assert list(raw.test_y) == ["A"] and list(raw.test_group) == [3]
    assert raw.channels == ["F_V_left", "F_AP_left", "F_ML_left", "F_V_right", "F_AP_right", "F_ML_right"]
    np.testing.assert_allclose(raw.x[0, 4], (value(1, 1, 10, 1) + value(1, 1, 10, 2)) / 2, atol=1e-4)
    np.testing.assert_allclose(raw.x[1, 0], value(0, 0, 40, 2), atol=1e-4)  # trial 1 dropped everywhere
    np.testing.assert_allclose(raw.test_x[0, 2], value(2, 0, 30, 2), atol=1e-4)  # mean of trials 1..3
    np.testing.assert_array_equal(raw.views["right"], raw.x[:, 3:])
    np.testing.assert_array_equal(raw.test_views["left"], raw.test_x[:, :3])
    assert raw.classes == ["HC", "H", "K", "A", "C"]
    assert any("dropped 1 trial" in n for n in raw.notes) and any("dropped 1 session" in n for n in raw.notes)


def test_trial_unit_full_train_set_all_speeds_and_a_component_subset(tmp_path):
    raw = load(write_gaitrec(tmp_path), unit="trial", train_set="TRAIN", speed="all", components=["F_V"])
    # sessions 10 (2 trials), 11 (1), 20 (2), 40 (2: only F_ML_right lacks its trial 1, and F_ML is not read)
    assert raw.x.shape == (2 + 1 + 2 + 2, 2, 101)
    assert list(raw.y) == ["HC", "HC", "HC", "K", "K", "H", "H"] and raw.channels == ["F_V_left", "F_V_right"]
    np.testing.assert_allclose(raw.x[3, 1], value(0, 1, 20, 1), atol=1e-4)
    assert raw.test_x.shape == (3, 2, 101)


@pytest.mark.parametrize("key,bad", [("unit", "step"), ("train_set", "TEST"), ("speed", "fast"),
                                     ("components", ["F_Z"]), ("components", [])])
def test_bad_protocol_values_are_refused_naming_the_key(tmp_path, key, bad):
    with pytest.raises(UserInputError, match=f"data.params.{key}"):
        load(write_gaitrec(tmp_path), **{key: bad})


def test_missing_or_corrupt_files_are_named(tmp_path):
    folder = write_gaitrec(tmp_path)
    text = (folder / "GRF_F_AP_PRO_left.csv").read_text().splitlines()
    text[2] = text[2].replace(",", ",x", 1)
    (folder / "GRF_F_AP_PRO_left.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(UserInputError, match="GRF_F_AP_PRO_left.csv"):
        load(folder)
    (folder / "GRF_F_AP_PRO_left.csv").write_text("SESSION_ID,TRIAL_ID\n1,2\n")
    with pytest.raises(UserInputError, match="GRF_F_AP_PRO_left.csv.*header"):
        load(folder)
    (folder / "GRF_F_AP_PRO_left.csv").unlink()
    with pytest.raises(UserInputError, match="GRF_F_AP_PRO_left.csv"):
        load(folder)
    (folder / "GRF_metadata.csv").write_text("SUBJECT_ID,SESSION_ID\n1,10\n")
    with pytest.raises(UserInputError, match="GRF_metadata.csv.*CLASS_LABEL"):
        load(folder)


def test_archive_entry_lists_the_files_that_prove_presence():
    assert "GRF_metadata.csv" in ARCHIVE.files and "GRF_F_ML_PRO_right.csv" in ARCHIVE.files
    assert ARCHIVE.kind == "1d" and ARCHIVE.load is load
