"""PAMAP2 Physical Activity Monitoring (Reiss & Stricker 2012): 9 subjects, 3 IMUs (hand, chest, ankle) + heart rate.

The archive (``PAMAP2_Dataset``) holds one space-separated ``.dat`` file per subject and session; the loader reads
the 12-activity protocol sessions ``Protocol/subject101.dat`` .. ``subject109.dat``. Every row has 54 columns
(the archive's readme): 1 timestamp (s), 2 activityID, 3 heart rate (bpm, ~9 Hz, so mostly NaN at the 100 Hz row
rate), then 17 columns per IMU for hand (4-20), chest (21-37) and ankle (38-54): temperature, 3D acceleration
+-16 g, 3D acceleration +-6 g, 3D gyroscope, 3D magnetometer, 4 orientation values the readme calls invalid.
Missing values are 'NaN'. Activity 0 marks transient periods between activities and is dropped.

Protocol (defaults): windows of 5.12 s shifted by 1 s, as Reiss & Stricker 2012 segment the data, at 33.3 Hz
(100 Hz taken every third sample, 171-sample windows, as Hammerla et al. 2016 use PAMAP2 for deep models), the
+-16 g accelerometer (the readme recommends it: the +-6 g one saturates), gyroscope and magnetometer of all three
IMUs (27 channels), subjects 101-109 as ``group`` for leave-one-subject-out (``eval.scheme: loso``); the archive
has no official train/test split. Windows never straddle two activities (``base.stream_windows``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgedistill.data.archives.base import (
    Archive, check_protocol, choices, fill_gaps, require, resample, stream_bounds, stream_windows,
)
from edgedistill.data.archives.text_tables import read_tables
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

NAME = "pamap2"
NATIVE_HZ = 100.0
COLUMNS = 54
#: The 12 protocol activities (readme's activityID mapping), in ID order: the class order.
ACTIVITIES = {1: "lying", 2: "sitting", 3: "standing", 4: "walking", 5: "running", 6: "cycling",
              7: "nordic_walking", 12: "ascending_stairs", 13: "descending_stairs", 16: "vacuum_cleaning",
              17: "ironing", 24: "rope_jumping"}
SUBJECTS = tuple(range(101, 110))
HEART_RATE = 2  # 0-based column
#: 0-based column of each IMU's first column (temperature); its 17 columns follow.
IMUS = {"hand": 3, "chest": 20, "ankle": 37}
#: Offsets inside an IMU's 17 columns, with the axis names (orientation, offsets 13-16, is invalid: never read).
SIGNALS = {"temperature": (0, ("",)), "acc16": (1, ("x", "y", "z")), "acc6": (4, ("x", "y", "z")),
           "gyro": (7, ("x", "y", "z")), "mag": (10, ("x", "y", "z"))}
#: A pause in the timestamps longer than this (s) ends a stream: no window spans it.
MAX_GAP_S = 0.1








def channel_columns(sensors: Sequence[str], signals: Sequence[str], heart_rate: bool) -> tuple[list[int], list[str]]:
    """(0-based file columns, channel names) in the loader's order: per sensor, per signal, x/y/z; heart rate last."""
    cols, names = [], []
    for sensor in sensors:
        for signal in signals:
            offset, axes = SIGNALS[signal]
            for k, axis in enumerate(axes):
                cols.append(IMUS[sensor] + offset + k)
                names.append(f"{sensor}_{signal}" + (f"_{axis}" if axis else ""))
    if heart_rate:
        cols.append(HEART_RATE)
        names.append("heart_rate")
    return cols, names




def _activity_ids(table: np.ndarray, path: Path) -> np.ndarray:
    ids = table[:, 1]
    if not np.isfinite(ids).all() or (ids != np.round(ids)).any():
        raise UserInputError(f"dataset '{NAME}': '{path}': column 2 (activityID) must hold whole numbers")
    return ids.astype(np.int64)


def load(folder: Path, *, rate: float = NATIVE_HZ / 3, window: int = 171, stride: int = 33,
         sensors: Sequence[str] = ("hand", "chest", "ankle"), signals: Sequence[str] = ("acc16", "gyro", "mag"),
         heart_rate: bool = False, subjects: Sequence[int] = SUBJECTS, views: bool = True) -> RawData:
    """PAMAP2's protocol sessions as windows: x (n, channels, window) float32, y activity names, group subject id.

    ``rate`` (<= 100) resamples the 100 Hz stream (linear interpolation; 100/3 takes every third sample),
    ``window``/``stride`` are in samples at ``rate``, ``signals`` (temperature, acc16, acc6, gyro, mag) are read
    from every IMU, ``sensors`` (hand, chest, ankle) are the ones in x, ``heart_rate`` adds the heart-rate channel.
    ``views`` adds the hand, chest and ankle placements as named views, and "all" (every IMU, heart rate if read)
    when ``sensors`` keeps fewer: a wrist student's teacher may read every sensor."""
    rate, window, stride = check_protocol(rate, window, stride, NATIVE_HZ)
    sensors = choices("sensors", sensors, tuple(IMUS))
    signals = choices("signals", signals, tuple(SIGNALS))
    subjects = choices("subjects", subjects, SUBJECTS)
    cols, names = channel_columns(tuple(IMUS), signals, bool(heart_rate))
    in_x = [i for i, n in enumerate(names) if n.split("_")[0] in sensors or n == "heart_rate"]
    codes = list(ACTIVITIES)
    xs, ys, gs = [], [], []
    notes = [f"read {len(subjects)} protocol session(s) (Protocol/subject<id>.dat); x: {len(in_x)} channels, "
             f"{', '.join(sensors)} x {', '.join(signals)}" + (" + heart rate" if heart_rate else "")]
    filled = {"imu": 0, "heart rate": 0}
    other: set[int] = set()
    pauses = 0
    paths = [require(Path(folder) / "Protocol" / f"subject{subject}.dat", NAME) for subject in subjects]
    for subject, path, table in zip(subjects, paths, read_tables(paths, NAME, columns=COLUMNS)):
        ids = _activity_ids(table, path)
        other |= set(np.unique(ids).tolist()) - set(codes) - {0}
        ids = np.where(np.isin(ids, codes), ids, 0)
        signal = table[:, cols]
        missing = ~np.isfinite(signal)
        filled["heart rate"] += int(missing[:, -1].sum()) if heart_rate else 0
        filled["imu"] += int(missing[:, :-1].sum() if heart_rate else missing.sum())
        streams = stream_bounds(table[:, 0], MAX_GAP_S, path, NAME, "column 1, s")
        pauses += len(streams) - 1
        for a, b in streams:
            stream = resample(fill_gaps(signal[a:b]), NATIVE_HZ, float(rate))
            at = np.minimum(np.round(np.arange(len(stream)) * NATIVE_HZ / rate).astype(np.int64), b - a - 1)
            # Windowed as float32 (the same values as casting the windows): the windows overlap ~5x at the default
            # stride, so float64 windows of one subject would be its largest temporary.
            x, y = stream_windows(stream.astype(np.float32), ids[a:b][at], window, stride, drop=(0,))
            xs.append(x)
            ys.append(y)
            gs.append(np.full(len(y), subject))
    x = np.concatenate(xs)
    xs.clear()  # (the per-stream pieces: a full-size archive's windows are ~0.6 GB; never hold them twice)
    y_ids = np.concatenate(ys)
    if not len(x):
        raise UserInputError(f"data.params.window: no activity of subjects {subjects} lasts {window} samples at "
                             f"{rate:g} Hz; use a shorter window")
    notes.append("dropped transient activity 0" + (f" and non-protocol activities {sorted(other)}" if other else "")
                 + f": the {len(codes)} protocol activities kept")
    if filled["imu"] or filled["heart rate"]:
        notes.append(f"filled missing values (NaN) by linear interpolation in time: {filled['imu']} IMU value(s)"
                     + (f", {filled['heart rate']} heart-rate value(s) (~9 Hz sensor on 100 Hz rows)"
                        if heart_rate else ""))
    if pauses:
        notes.append(f"{pauses} pause(s) above {MAX_GAP_S:g} s in the timestamps end a stream: no window spans one")
    if rate != NATIVE_HZ:
        notes.append(f"resampled {NATIVE_HZ:g} Hz -> {rate:.4g} Hz (linear interpolation)")
    notes.append(f"windows of {window} samples ({window / rate:.2f} s) every {stride} ({stride / rate:.2f} s), "
                 f"inside one activity")
    view_map = {}
    if views:
        view_map = {sensor: x[:, [i for i, n in enumerate(names) if n.startswith(sensor + "_")]] for sensor in IMUS}
        if len(in_x) < len(names):
            view_map["all"] = x
    every = list(in_x) == list(range(len(names)))  # x keeps every channel: no copy of it
    return RawData(x=x if every else x[:, in_x], y=np.array([ACTIVITIES[int(i)] for i in y_ids]), task="classification",
                   group=np.concatenate(gs), views=view_map, classes=[ACTIVITIES[c] for c in codes],
                   name=NAME, channels=[names[i] for i in in_x], notes=notes)


ARCHIVE = Archive(
    name=NAME,
    folder="PAMAP2_Dataset",
    files=tuple(f"Protocol/subject{s}.dat" for s in SUBJECTS),
    task="classification",
    kind="1d",
    doc="PAMAP2 protocol: 3 IMUs (hand/chest/ankle), 27 x 171 windows at 33.3 Hz, 12 activities, 9 subjects (LOSO)",
    citation="A. Reiss, D. Stricker, Introducing a New Benchmarked Dataset for Activity Monitoring, ISWC 2012; "
             "https://archive.ics.uci.edu/dataset/231/pamap2+physical+activity+monitoring",
    load=load,
    url="https://archive.ics.uci.edu/ml/machine-learning-databases/00231/PAMAP2_Dataset.zip",
    sha256=None,  # not verified offline
    download_name="PAMAP2_Dataset.zip",
    manual="download 'PAMAP2_Dataset.zip' from "
           "https://archive.ics.uci.edu/dataset/231/pamap2+physical+activity+monitoring (the page's zip holds "
           "PAMAP2_Dataset.zip: unzip that one too) and unzip it",
)
