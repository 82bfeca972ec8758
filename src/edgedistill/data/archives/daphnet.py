"""Daphnet Freezing of Gait (Bachlin et al. 2010): 10 Parkinson's patients, 3 accelerometers, 64 Hz.

The archive (``dataset_fog_release``) holds one space-separated file per subject and run,
``dataset/S01R01.txt`` .. ``S10R01.txt`` (17 runs), of 11 columns (its README): time (ms), ankle (shank)
acceleration horizontal forward, vertical, horizontal lateral (mg), the same for the thigh (upper leg) and the
trunk, and the annotation: 0 not part of the experiment, 1 experiment without freeze, 2 freeze.

Protocol (defaults): annotation 0 dropped, binary no_freeze / freeze, windows of 4 s (256 samples at the native
64 Hz; Bachlin et al. 2010 compute their freeze index over 4 s windows) with 50% overlap, inside one annotation
run; subjects 1-10 as ``group`` for leave-one-subject-out (``eval.scheme: loso``). The archive has no official
test split; ``test_subjects: [2]`` holds out subject 2's runs as Hammerla et al. 2016 do.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgedistill.data.archives.base import (
    Archive, check_protocol, choices, fill_gaps, read_numeric_table, require, resample, stream_bounds, stream_windows,
)
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

NAME = "daphnet"
NATIVE_HZ = 64.0
COLUMNS = 11
DATA = "dataset"
#: The 17 runs of the release, (subject, run).
RUNS = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 1), (5, 1), (5, 2), (6, 1), (6, 2), (7, 1),
        (7, 2), (8, 1), (9, 1), (10, 1)]
SUBJECTS = tuple(range(1, 11))
LABELS = {1: "no_freeze", 2: "freeze"}  # annotation 0 (not part of the experiment) is dropped
#: 0-based first column of each sensor's 3 axes.
SENSORS = {"ankle": 1, "thigh": 4, "trunk": 7}
AXES = ("forward", "vertical", "lateral")
#: A pause in the timestamps longer than this many sample periods ends a stream: no window spans it.
MAX_GAP_PERIODS = 10








def run_path(folder: Path, subject: int, run: int) -> Path:
    return Path(folder) / DATA / f"S{subject:02d}R{run:02d}.txt"




def _short_freezes(labels: np.ndarray, length: int) -> int:
    """Freeze episodes (runs of annotation 2) shorter than ``length``: no window of theirs is kept."""
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(labels)]])
    return int(sum(1 for a, b in zip(bounds[:-1], bounds[1:]) if labels[a] == 2 and b - a < length))


def load(folder: Path, *, rate: float = NATIVE_HZ, window: int = 256, stride: int = 128,
         sensors: Sequence[str] = ("ankle", "thigh", "trunk"), test_subjects: Sequence[int] = (),
         views: bool = True) -> RawData:
    """Daphnet's runs as windows: x (n, 3 x sensors, window) float32, y no_freeze | freeze, group subject 1-10.

    ``rate`` (<= 64) resamples, ``window``/``stride`` are in samples at ``rate``, ``sensors`` (ankle, thigh,
    trunk) are the accelerometers in x, ``test_subjects`` become the official test split (none by default: use
    eval.scheme loso), ``views`` adds the three placements as named views, and "all" when ``sensors`` keeps fewer."""
    rate, window, stride = check_protocol(rate, window, stride, NATIVE_HZ)
    sensors = choices("sensors", sensors, tuple(SENSORS))
    test_subjects = choices("test_subjects", test_subjects, SUBJECTS, empty=True)
    if len(test_subjects) == len(SUBJECTS):
        raise UserInputError("data.params.test_subjects: every subject is a test subject; leave some to train on")
    cols = [SENSORS[s] + k for s in SENSORS for k in range(3)]
    names = [f"{s}_acc_{a}" for s in SENSORS for a in AXES]
    in_x = [3 * list(SENSORS).index(s) + k for s in sensors for k in range(3)]
    parts: dict[bool, tuple[list, list, list]] = {False: ([], [], []), True: ([], [], [])}
    filled = short = pauses = 0
    for subject, run in RUNS:
        path = require(run_path(folder, subject, run), NAME)
        table = read_numeric_table(path, NAME, columns=COLUMNS)
        ann = table[:, 10]
        if not np.isin(ann, (0, 1, 2)).all():
            bad = np.unique(ann[~np.isin(ann, (0, 1, 2))])[:5].tolist()
            raise UserInputError(f"dataset '{NAME}': '{path}': annotation (column 11) must be 0, 1 or 2, found {bad}")
        ann = ann.astype(np.int64)
        signal = table[:, cols]
        filled += int((~np.isfinite(signal)).sum())
        streams = stream_bounds(table[:, 0], MAX_GAP_PERIODS * 1000.0 / NATIVE_HZ, path, NAME, "column 1, ms")
        pauses += len(streams) - 1
        xs, ys, gs = parts[subject in test_subjects]
        for a, b in streams:
            stream = resample(fill_gaps(signal[a:b]), NATIVE_HZ, float(rate))
            at = np.minimum(np.round(np.arange(len(stream)) * NATIVE_HZ / rate).astype(np.int64), b - a - 1)
            labels = ann[a:b][at]
            short += _short_freezes(labels, window)
            x, y = stream_windows(stream, labels, window, stride, drop=(0,))
            xs.append(x.astype(np.float32))
            ys.append(y)
            gs.append(np.full(len(y), subject))
    (xs, ys, gs), (txs, tys, tgs) = parts[False], parts[True]
    x = np.concatenate(xs)
    if not len(x):
        raise UserInputError(f"data.params.window: no annotated stretch lasts {window} samples at {rate:g} Hz; "
                             f"use a shorter window")
    notes = [f"read {len(RUNS)} runs of subjects 1-10; x: {len(in_x)} channels, {', '.join(sensors)} (mg)",
             "dropped annotation 0 (not part of the experiment): classes no_freeze (1), freeze (2)",
             f"windows of {window} samples ({window / rate:.2f} s) every {stride}, inside one annotation run; "
             f"{short} freeze episode(s) shorter than a window give none"]
    if filled:
        notes.append(f"filled {filled} missing value(s) (NaN) by linear interpolation in time")
    if pauses:
        notes.append(f"{pauses} pause(s) above {MAX_GAP_PERIODS} samples in the time column end a stream")
    if rate != NATIVE_HZ:
        notes.append(f"resampled {NATIVE_HZ:g} Hz -> {rate:.4g} Hz (linear interpolation)")
    tx = np.concatenate(txs) if test_subjects else None
    if tx is not None and not len(tx):
        raise UserInputError(f"data.params.test_subjects: subjects {test_subjects} have no window of {window} samples")
    if tx is not None:
        notes.append(f"official test split: subject(s) {test_subjects} (Hammerla et al. 2016 test on subject 2)")
    view_map, test_views = (_views(x, in_x), _views(tx, in_x) if tx is not None else {}) if views else ({}, {})
    return RawData(x=x[:, in_x], y=np.array([LABELS[int(v)] for v in np.concatenate(ys)]), task="classification",
                   group=np.concatenate(gs), views=view_map, classes=list(LABELS.values()), name=NAME,
                   channels=[names[i] for i in in_x], notes=notes,
                   test_x=tx[:, in_x] if tx is not None else None,
                   test_y=np.array([LABELS[int(v)] for v in np.concatenate(tys)]) if tx is not None else None,
                   test_group=np.concatenate(tgs) if tx is not None else None, test_views=test_views)


def _views(x: np.ndarray, in_x: list[int]) -> dict[str, np.ndarray]:
    """The three placements of the 9-channel windows ``x``, and "all" when x keeps fewer sensors."""
    out = {sensor: x[:, 3 * i:3 * i + 3] for i, sensor in enumerate(SENSORS)}
    return {**out, "all": x} if len(in_x) < x.shape[1] else out


ARCHIVE = Archive(
    name=NAME,
    folder="dataset_fog_release",
    files=tuple(f"{DATA}/S{s:02d}R{r:02d}.txt" for s, r in RUNS),
    task="classification",
    kind="1d",
    doc="Daphnet freezing of gait: 3 accelerometers (ankle/thigh/trunk), 9 x 256 windows at 64 Hz, "
        "no_freeze / freeze, 10 subjects (LOSO)",
    citation="M. Bachlin et al., Wearable Assistant for Parkinson's Disease Patients With the Freezing of Gait "
             "Symptom, IEEE Trans. Inf. Technol. Biomed. 14(2), 2010; "
             "https://archive.ics.uci.edu/dataset/245/daphnet+freezing+of+gait",
    load=load,
    url="https://archive.ics.uci.edu/ml/machine-learning-databases/00245/dataset_fog_release.zip",
    sha256=None,  # not verified offline
    download_name="dataset_fog_release.zip",
    manual="download 'dataset_fog_release.zip' from https://archive.ics.uci.edu/dataset/245/daphnet+freezing+of+gait "
           "and unzip it",
)
