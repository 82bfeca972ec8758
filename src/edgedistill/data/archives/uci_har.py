"""UCI-HAR (Human Activity Recognition Using Smartphones): 30 subjects, a Samsung Galaxy S II on the waist, 6
activities, read from the archive's raw ``Inertial Signals`` (not its 561 engineered features).

The archive is already windowed: every row of ``train/Inertial Signals/<signal>_train.txt`` is one 2.56 s window
(128 steps at 50 Hz, windows overlapping by 50 %), and the 9 signal files, ``y_train.txt`` and
``subject_train.txt`` are row-aligned. Its own split (21 training subjects, 9 test subjects) is the official
train/test split (Anguita et al., ESANN 2013), so the loader returns it as ``test_*``. The archive's README.txt
documents the layout: total_acc in standard gravity units g, body_acc = total_acc minus the gravity component
(Butterworth low-pass at 0.3 Hz), body_gyro in rad/s.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edgedistill.data.archives.base import Archive, read_numeric_table, require, resample
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

NAME = "uci_har"
FOLDER = "UCI HAR Dataset"
RATE_HZ = 50.0  # the archive's sampling rate
LENGTH = 128  # steps per window in the archive (2.56 s)
#: The nine raw signals, in the order the loader stacks them by default (file stem before "_train"/"_test").
SIGNALS = ("body_acc_x", "body_acc_y", "body_acc_z", "body_gyro_x", "body_gyro_y", "body_gyro_z",
           "total_acc_x", "total_acc_y", "total_acc_z")
#: Named channel views: one per sensor stream, each (n, 3, length).
VIEWS = {"body_acc": SIGNALS[0:3], "body_gyro": SIGNALS[3:6], "total_acc": SIGNALS[6:9]}


def _activity_names(folder: Path) -> list[str]:
    """``activity_labels.txt``: '<id> <NAME>' per line, ids 1..6 in order; the names in id order."""
    path = require(folder / "activity_labels.txt", NAME)
    pairs = [line.split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not pairs or any(len(p) != 2 or not p[0].isdigit() for p in pairs):
        raise UserInputError(f"dataset '{NAME}': '{path}' is not '<id> <NAME>' per line as the archive writes it")
    ids = [int(p[0]) for p in pairs]
    if ids != list(range(1, len(ids) + 1)):
        raise UserInputError(f"dataset '{NAME}': '{path}' lists activity ids {ids}; the archive numbers them 1..n")
    return [p[1] for p in pairs]


def _column(path: Path) -> np.ndarray:
    """A one-column integer file (``y_<part>.txt``, ``subject_<part>.txt``)."""
    values = read_numeric_table(path, NAME, columns=1)[:, 0]
    if not np.all(values == np.round(values)):
        raise UserInputError(f"dataset '{NAME}': '{path}' holds non-integer ids; the archive writes integers")
    return values.astype(np.int64)


def _part(folder: Path, part: str, signals: list[str], names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (n, len(signals), 128) float32, y (activity names), subjects of ``train`` or ``test``."""
    y_path, s_path = folder / part / f"y_{part}.txt", folder / part / f"subject_{part}.txt"
    ids, subjects = _column(y_path), _column(s_path)
    if len(ids) != len(subjects):
        raise UserInputError(f"dataset '{NAME}': '{y_path}' has {len(ids)} rows but '{s_path}' has {len(subjects)}; "
                             f"the archive's files are row-aligned")
    bad = (ids < 1) | (ids > len(names))
    if bad.any():
        raise UserInputError(f"dataset '{NAME}': '{y_path}' has activity id {int(ids[bad][0])} at row "
                             f"{int(np.argmax(bad)) + 1}; activity_labels.txt defines 1..{len(names)}")
    x = np.empty((len(ids), len(signals), LENGTH), dtype=np.float32)
    for c, signal in enumerate(signals):
        path = folder / part / "Inertial Signals" / f"{signal}_{part}.txt"
        table = read_numeric_table(path, NAME, columns=LENGTH)
        if len(table) != len(ids):
            raise UserInputError(f"dataset '{NAME}': '{path}' has {len(table)} rows but '{y_path}' has {len(ids)}; "
                                 f"the archive's files are row-aligned")
        if not np.isfinite(table).all():
            raise UserInputError(f"dataset '{NAME}': '{path}' has non-finite values; the archive has none")
        x[:, c] = table
    return x, np.asarray(names, dtype=object)[ids - 1].astype(str), subjects


def _resampled(x: np.ndarray, rate: float) -> np.ndarray:
    """Every window resampled from 50 Hz to ``rate`` (linear interpolation, ``base.resample``)."""
    if rate == RATE_HZ:
        return x
    return np.stack([resample(w.T.astype(np.float64), RATE_HZ, rate).T for w in x]).astype(np.float32)


def load(folder: Path, *, channels: Optional[list[str]] = None, rate: float = 50.0, views: bool = True) -> RawData:
    """The official train/test windows of UCI-HAR.

    ``channels``: signal names (``SIGNALS``) or view names (body_acc, body_gyro, total_acc) to keep, in the order
    given; None keeps all nine. ``rate``: resample each 2.56 s window from 50 Hz (the archive's windows are fixed,
    so only the rate, not the window, is a protocol choice). ``views``: add body_acc, body_gyro and total_acc as
    named (n, 3, length) views."""
    folder = Path(folder)
    chosen = _channels(channels)
    rate = _rate(rate)
    names = _activity_names(folder)
    read = list(SIGNALS) if views else chosen  # only the files the result needs
    x, y, g = _part(folder, "train", read, names)
    tx, ty, tg = _part(folder, "test", read, names)
    x, tx = _resampled(x, rate), _resampled(tx, rate)
    index = [read.index(s) for s in chosen]
    notes = [f"official split: {len(np.unique(g))} training subjects ({len(x)} windows), {len(np.unique(tg))} test "
             f"subjects ({len(tx)} windows); raw Inertial Signals, not the 561 features"]
    if rate != RATE_HZ:
        notes.append(f"resampled {RATE_HZ:g} Hz -> {rate:g} Hz: windows of {LENGTH} -> {x.shape[2]} steps")
    if len(chosen) != len(SIGNALS):
        notes.append(f"kept {len(chosen)} of {len(SIGNALS)} signals: {', '.join(chosen)}")
    view_arrays = {k: x[:, [read.index(s) for s in v]] for k, v in VIEWS.items()} if views else {}
    test_views = {k: tx[:, [read.index(s) for s in v]] for k, v in VIEWS.items()} if views else {}
    return RawData(x=x[:, index], y=y, task="classification", group=g, views=view_arrays, test_x=tx[:, index],
                   test_y=ty, test_group=tg, test_views=test_views, classes=names, name=NAME, channels=chosen,
                   notes=notes)


def _channels(channels: Optional[list[str]]) -> list[str]:
    """The signal names ``channels`` selects (views expand to their three signals), refused when unknown or empty."""
    if channels is None:
        return list(SIGNALS)
    if not channels:
        raise UserInputError("data.params.channels: expected at least one signal name, got an empty list")
    out: list[str] = []
    for c in channels:
        if c not in SIGNALS and c not in VIEWS:
            raise UserInputError(f"data.params.channels: unknown signal {c!r}; expected any of "
                                 f"{', '.join(SIGNALS)} or a group {', '.join(VIEWS)}")
        out += [s for s in VIEWS.get(c, (c,)) if s not in out]
    return out


def _rate(rate: float) -> float:
    """A positive rate that keeps at least 2 steps per window and does not exceed the archive's 50 Hz (no upsampling
    of already-filtered 50 Hz signals into invented detail)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not np.isfinite(rate) or rate <= 0:
        raise UserInputError(f"data.params.rate: expected a sampling rate in Hz > 0, got {rate!r}")
    if rate > RATE_HZ or round(LENGTH * rate / RATE_HZ) < 2:
        raise UserInputError(f"data.params.rate: expected a rate between {2 * RATE_HZ / LENGTH:g} and "
                             f"{RATE_HZ:g} Hz (the archive's rate; resampling only goes down), got {rate!r}")
    return float(rate)


ARCHIVE = Archive(
    name=NAME,
    folder=FOLDER,
    files=("activity_labels.txt", "train/y_train.txt", "train/subject_train.txt", "test/y_test.txt",
           "test/subject_test.txt", *(f"{p}/Inertial Signals/{s}_{p}.txt" for p in ("train", "test") for s in SIGNALS)),
    task="classification",
    kind="1d",
    doc="UCI-HAR smartphone on the waist: 9 inertial signals x 128 (2.56 s at 50 Hz), 6 activities, 30 subjects, "
        "official split 21/9 subjects",
    citation="Anguita, Ghio, Oneto, Parra, Reyes-Ortiz: A Public Domain Dataset for Human Activity Recognition Using "
             "Smartphones, ESANN 2013; "
             "https://archive.ics.uci.edu/dataset/240/human+activity+recognition+using+smartphones",
    load=load,
    url="https://archive.ics.uci.edu/ml/machine-learning-databases/00240/UCI%20HAR%20Dataset.zip",
    sha256=None,  # not verifiable offline
    download_name="UCI HAR Dataset.zip",
    manual="download 'UCI HAR Dataset.zip' from https://archive.ics.uci.edu/dataset/240/human+activity+recognition+"
           "using+smartphones (the page's zip holds it as a nested zip) and unzip it",
)
