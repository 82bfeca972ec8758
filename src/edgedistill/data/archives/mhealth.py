"""MHEALTH (Banos et al. 2014): 10 subjects wearing Shimmer2 sensors on the chest, the right wrist (lower arm) and
the left ankle, 12 activities, 50 Hz, one ``mHealth_subject<k>.log`` per subject.

Each log line is 24 tab-separated numbers (the archive's README.txt): 1-3 chest acceleration x/y/z (m/s^2), 4-5 ECG
leads 1 and 2 (mV), 6-8 left-ankle acceleration, 9-11 left-ankle gyroscope (deg/s), 12-14 left-ankle magnetometer
(local units), 15-17 right-lower-arm acceleration, 18-20 right-lower-arm gyroscope, 21-23 right-lower-arm
magnetometer, 24 the activity label (0 = null class, between and around activities). The null class is dropped.

Protocol: the archive defines neither windows nor a split. The defaults are 2.56 s windows (128 steps at 50 Hz) with
50 % overlap, the UCI-HAR convention (Anguita et al. 2013) that deep HAR benchmarks reuse on MHEALTH; no window
straddles two activities (``base.stream_windows``). Subjects are ``group``: split by subject or leave one out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edgedistill.data.archives.base import Archive, check_protocol, read_numeric_table, resample, stream_windows
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

NAME = "mhealth"
FOLDER = "MHEALTHDATASET"
RATE_HZ = 50.0
SUBJECTS = tuple(range(1, 11))
#: The 23 signal columns in file order (README.txt of the archive).
CHANNELS = ("chest_acc_x", "chest_acc_y", "chest_acc_z", "ecg_1", "ecg_2",
            "ankle_acc_x", "ankle_acc_y", "ankle_acc_z", "ankle_gyro_x", "ankle_gyro_y", "ankle_gyro_z",
            "ankle_mag_x", "ankle_mag_y", "ankle_mag_z",
            "arm_acc_x", "arm_acc_y", "arm_acc_z", "arm_gyro_x", "arm_gyro_y", "arm_gyro_z",
            "arm_mag_x", "arm_mag_y", "arm_mag_z")
#: Activities L1..L12 (label 1..12) as README.txt names them.
ACTIVITIES = ("Standing still", "Sitting and relaxing", "Lying down", "Walking", "Climbing stairs",
              "Waist bends forward", "Frontal elevation of arms", "Knees bending (crouching)", "Cycling", "Jogging",
              "Running", "Jump front & back")
#: Named channel groups: the three placements (also returned as views) and the sensor kinds.
GROUPS = {
    "chest": CHANNELS[0:5], "ankle": CHANNELS[5:14], "arm": CHANNELS[14:23],
    "acc": tuple(c for c in CHANNELS if "_acc_" in c), "gyro": tuple(c for c in CHANNELS if "_gyro_" in c),
    "mag": tuple(c for c in CHANNELS if "_mag_" in c), "ecg": CHANNELS[3:5],
}
PLACEMENTS = ("chest", "ankle", "arm")


def subject_file(k: int) -> str:
    return f"mHealth_subject{k}.log"


def _subject_windows(path: Path, window: int, stride: int, rate: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(windows (n, 23, window), labels 1..12, rows dropped as null class) of one subject's log."""
    table = read_numeric_table(path, NAME, columns=len(CHANNELS) + 1)  # tab-separated; any whitespace read
    if not np.isfinite(table).all():
        bad = np.argwhere(~np.isfinite(table))[0]
        raise UserInputError(f"dataset '{NAME}': '{path}' has a missing or non-finite value at line {bad[0] + 1}, "
                             f"column {bad[1] + 1}; the archive has none")
    labels = table[:, -1]
    bad = (labels != np.round(labels)) | (labels < 0) | (labels > len(ACTIVITIES))
    if bad.any():
        raise UserInputError(f"dataset '{NAME}': '{path}' has label {labels[bad][0]:g} at line "
                             f"{int(np.argmax(bad)) + 1}; the archive's labels are 0 (null) and 1..{len(ACTIVITIES)}")
    labels = labels.astype(np.int64)
    signal = table[:, :-1]
    xs, ys = [], []
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    for a, b in zip(np.concatenate([[0], change]), np.concatenate([change, [len(labels)]])):
        if labels[a] == 0:
            continue
        run = resample(signal[a:b], RATE_HZ, rate)
        w, lab = stream_windows(run, np.full(len(run), labels[a]), window, stride)
        if len(w):
            xs.append(w)
            ys.append(lab)
    if not xs:
        return np.empty((0, len(CHANNELS), window)), np.empty(0, dtype=np.int64), int((labels == 0).sum())
    return np.concatenate(xs), np.concatenate(ys), int((labels == 0).sum())


def load(folder: Path, *, window: int = 128, stride: int = 64, rate: float = 50.0,
         channels: Optional[list[str]] = None, views: bool = True) -> RawData:
    """Windows of ``window`` steps at ``rate`` Hz every ``stride`` steps inside each activity, null class dropped.

    ``channels``: channel names (``CHANNELS``) or groups (chest, ankle, arm, acc, gyro, mag, ecg) in the order given;
    None keeps all 23. ``views``: add the chest (5), ankle (9) and arm (9) placements as named views, and "all" (23)
    when ``channels`` keeps fewer: a wrist student's teacher may read every sensor."""
    folder = Path(folder)
    rate, window, stride = check_protocol(rate, window, stride, RATE_HZ)
    chosen = _channels(channels)
    xs, ys, gs, dropped = [], [], [], 0
    for k in SUBJECTS:
        w, lab, null = _subject_windows(folder / subject_file(k), window, stride, rate)
        xs.append(w)
        ys.append(lab)
        gs.append(np.full(len(w), k))
        dropped += null
    x = np.concatenate(xs).astype(np.float32)
    if not len(x):
        raise UserInputError(f"data.params.window: no activity in '{folder}' lasts {window} steps at {rate:g} Hz; "
                             f"use a shorter window")
    y = np.asarray(ACTIVITIES)[np.concatenate(ys) - 1]
    present = [a for a in ACTIVITIES if a in set(y.tolist())]
    notes = [f"dropped null class 0 ({dropped} samples): {len(present)} of {len(ACTIVITIES)} activities kept",
             f"windows of {window} steps every {stride} at {rate:g} Hz inside one activity; {len(x)} windows from "
             f"{len(SUBJECTS)} subjects, no official split: subjects are groups"]
    if rate != RATE_HZ:
        notes.append(f"resampled {RATE_HZ:g} Hz -> {rate:g} Hz per activity run")
    if len(chosen) != len(CHANNELS):
        notes.append(f"kept {len(chosen)} of {len(CHANNELS)} channels: {', '.join(chosen)}")
    view_arrays = {p: x[:, [CHANNELS.index(c) for c in GROUPS[p]]] for p in PLACEMENTS} if views else {}
    if views and len(chosen) != len(CHANNELS):
        view_arrays["all"] = x  # every sensor, for a teacher that sees more than the student (teacher.view: all)
    return RawData(x=x[:, [CHANNELS.index(c) for c in chosen]], y=y, task="classification", group=np.concatenate(gs),
                   views=view_arrays, classes=list(ACTIVITIES), name=NAME, channels=chosen, notes=notes)




def _channels(channels: Optional[list[str]]) -> list[str]:
    if channels is None:
        return list(CHANNELS)
    if not channels:
        raise UserInputError("data.params.channels: expected at least one channel or group, got an empty list")
    out: list[str] = []
    for c in channels:
        if c not in CHANNELS and c not in GROUPS:
            raise UserInputError(f"data.params.channels: unknown channel {c!r}; expected a group "
                                 f"({', '.join(GROUPS)}) or a channel name such as chest_acc_x, ecg_1, arm_gyro_z")
        out += [s for s in GROUPS.get(c, (c,)) if s not in out]
    return out


ARCHIVE = Archive(
    name=NAME,
    folder=FOLDER,
    files=tuple(subject_file(k) for k in SUBJECTS),
    task="classification",
    kind="1d",
    doc="MHEALTH chest/ankle/wrist Shimmer2: 23 channels x 128 (2.56 s at 50 Hz, 50% overlap), 12 activities, "
        "10 subjects, null class dropped, no official split",
    citation="Banos, Garcia, Holgado-Terriza, Damas, Pomares, Rojas, Saez, Villalonga: mHealthDroid: a novel "
             "framework for agile development of mobile health applications, IWAAL 2014; "
             "https://archive.ics.uci.edu/dataset/319/mhealth+dataset",
    load=load,
    url="https://archive.ics.uci.edu/ml/machine-learning-databases/00319/MHEALTHDATASET.zip",
    sha256=None,  # not verifiable offline
    download_name="MHEALTHDATASET.zip",
    manual="download MHEALTHDATASET.zip from https://archive.ics.uci.edu/dataset/319/mhealth+dataset and unzip it",
)
