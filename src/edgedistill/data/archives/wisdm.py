"""WISDM v1.1 (Kwapisz, Weiss, Moore 2011): one Android phone in the front trouser pocket, tri-axial accelerometer at
20 Hz, 36 users, 6 activities, read from the raw stream ``WISDM_ar_v1.1_raw.txt``.

The file is one record per line, ``user,activity,timestamp,x,y,z;`` (the archive's WISDM_ar_v1.1_raw_about.txt):
user 1..36, activity one of Walking, Jogging, Upstairs, Downstairs, Sitting, Standing, timestamp in nanoseconds
(phone uptime), x/y/z in m/s^2 scaled so that 10 is about 1 g. The real file is not clean: some lines hold two
records, some end with an extra comma, some have an empty field. The loader splits records at ';' and line ends,
repairs a single trailing comma, drops (and counts, in ``notes``) every record that is still not six well-formed
fields, and never guesses a value. Timestamps are not used to cut windows (zero, repeated and jumping
timestamps are reported in the real file); a window is a run of consecutive records of one user and one activity.

Protocol: Kwapisz et al. cut 10 s windows (200 records) without overlap; later deep-learning work often uses 80
records (4 s). Both are ``window``/``stride`` values. The archive defines no train/test split: subjects are
``group`` (split by subject, or leave-one-subject-out, in the recipe).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from edgedistill.data.archives.base import Archive, check_protocol, require, resample, stream_windows
from edgedistill.data.archives.text_tables import announce
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

NAME = "wisdm"
FOLDER = "WISDM_ar_v1.1"
FILE = "WISDM_ar_v1.1_raw.txt"
RATE_HZ = 20.0
#: The six activities in the order the archive's about file lists them.
ACTIVITIES = ("Walking", "Jogging", "Upstairs", "Downstairs", "Sitting", "Standing")
AXES = ("x", "y", "z")


def parse_raw(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """(users (N,), activity codes (N,) into ACTIVITIES, xyz (N, 3) float64, counts of repaired/dropped records).

    A record is what lies between ';' or line ends; one with a single trailing empty field ("...,z,;") is repaired;
    one with an empty field, a number of fields other than six, a non-number or an unknown activity is dropped."""
    code = {a: i for i, a in enumerate(ACTIVITIES)}
    users: list[int] = []
    acts: list[int] = []
    xyz: list[tuple[float, float, float]] = []
    counts = {"records": 0, "repaired trailing comma": 0, "empty field": 0, "wrong field count": 0,
              "not a number": 0, "unknown activity": 0}
    for record in text.replace("\r", "\n").replace(";", "\n").split("\n"):
        record = record.strip()
        if not record:
            continue
        counts["records"] += 1
        fields = record.split(",")
        if len(fields) == 7 and not fields[6].strip():
            fields = fields[:6]
            counts["repaired trailing comma"] += 1
        if len(fields) != 6:
            counts["wrong field count"] += 1
            continue
        if any(not f.strip() for f in fields):
            counts["empty field"] += 1
            continue
        if fields[1].strip() not in code:
            counts["unknown activity"] += 1
            continue
        try:
            # The timestamp (fields[2]) is not parsed: windows do not use it, and its format must not cost a record.
            user, x, y, z = int(fields[0]), float(fields[3]), float(fields[4]), float(fields[5])
        except ValueError:
            counts["not a number"] += 1
            continue
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
            counts["not a number"] += 1
            continue
        users.append(user)
        acts.append(code[fields[1].strip()])
        xyz.append((x, y, z))
    return (np.asarray(users, dtype=np.int64), np.asarray(acts, dtype=np.int64),
            np.asarray(xyz, dtype=np.float64).reshape(-1, 3), counts)


def _runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every maximal run of equal consecutive ``keys``."""
    if not len(keys):
        return []
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(keys)]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def load(folder: Path, *, window: int = 200, stride: int = 200, rate: float = 20.0,
         channels: Optional[list[str]] = None) -> RawData:
    """Windows of ``window`` records (at ``rate`` Hz) every ``stride`` records, inside runs of one user and one
    activity. Defaults: Kwapisz et al. 2011, 10 s at 20 Hz without overlap. ``channels``: accelerometer axes to keep
    (x, y, z). ``rate`` below 20 resamples each run (linear interpolation) before windowing."""
    folder = Path(folder)
    rate, window, stride = check_protocol(rate, window, stride, RATE_HZ)
    axes = _axes(channels)
    path = require(folder / FILE, NAME)
    announce(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, OSError) as exc:
        raise UserInputError(f"dataset '{NAME}': '{path}' cannot be read as text ({exc})") from None
    users, acts, xyz, counts = parse_raw(text)
    if not len(users):
        raise UserInputError(f"dataset '{NAME}': '{path}' has no record 'user,activity,timestamp,x,y,z;' that "
                             f"parses ({counts['records']} record(s) seen)")
    xs, ys, gs = [], [], []
    for a, b in _runs(users * len(ACTIVITIES) + acts):
        run = resample(xyz[a:b], RATE_HZ, rate)
        w, labels = stream_windows(run, np.full(len(run), acts[a]), window, stride)
        if len(w):
            xs.append(w)
            ys.append(labels)
            gs.append(np.full(len(w), users[a]))
    if not xs:
        raise UserInputError(f"data.params.window: no run of one user and one activity in '{path}' is {window} "
                             f"records long at {rate:g} Hz; use a shorter window")
    x = np.concatenate(xs)[:, [AXES.index(c) for c in axes]].astype(np.float32)
    y = np.asarray(ACTIVITIES)[np.concatenate(ys)]
    kept = len(users)
    notes = [f"{path.name}: {counts['records']} records, {kept} kept, "
             + ", ".join(f"{v} {k}" for k, v in counts.items() if k != "records")
             + " (dropped records are never guessed)",
             f"windows of {window} records every {stride} at {rate:g} Hz inside runs of one user and one activity "
             f"(timestamps not used); {len(x)} windows, no official split: subjects are groups"]
    if rate != RATE_HZ:
        notes.append(f"resampled {RATE_HZ:g} Hz -> {rate:g} Hz per run")
    if len(axes) != len(AXES):
        notes.append(f"kept accelerometer axes {', '.join(axes)}")
    return RawData(x=x, y=y, task="classification", group=np.concatenate(gs), classes=list(ACTIVITIES), name=NAME,
                   channels=[f"acc_{c}" for c in axes], notes=notes)




def _axes(channels: Optional[list[str]]) -> list[str]:
    if channels is None:
        return list(AXES)
    if not channels or any(c not in AXES for c in channels) or len(set(channels)) != len(channels):
        raise UserInputError(f"data.params.channels: expected distinct axes among x, y, z, got {channels!r}")
    return list(channels)


ARCHIVE = Archive(
    name=NAME,
    folder=FOLDER,
    files=(FILE,),
    task="classification",
    kind="1d",
    doc="WISDM v1.1 phone in the pocket: accelerometer 3 x 200 (10 s at 20 Hz, no overlap), 6 activities, "
        "36 users, no official split",
    citation="Kwapisz, Weiss, Moore: Activity Recognition using Cell Phone Accelerometers, SIGKDD Explorations "
             "12(2), 2011; https://www.cis.fordham.edu/wisdm/dataset.php",
    load=load,
    url="https://www.cis.fordham.edu/wisdm/includes/datasets/latest/WISDM_ar_latest.tar.gz",
    sha256=None,  # not verifiable offline
    download_name="WISDM_ar_latest.tar.gz",
    manual="download WISDM_ar_latest.tar.gz (v1.1) from https://www.cis.fordham.edu/wisdm/dataset.php and unpack it",
)
