"""OPPORTUNITY Activity Recognition (Roggen et al. 2010; challenge: Chavarriaga et al. 2013): 4 subjects, 30 Hz.

The archive (``OpportunityUCIDataset``) holds ``dataset/S<subject>-ADL<run>.dat`` (5 daily-living runs) and
``dataset/S<subject>-Drill.dat`` per subject: space-separated rows of 250 columns, 'NaN' for missing values, whose
meaning ``dataset/column_names.txt`` gives ("Column: 1 MILLISEC", 2-243 sensors, 244-250 the label tracks
Locomotion, HL_Activity, LL_Left_Arm, LL_Left_Arm_Object, LL_Right_Arm, LL_Right_Arm_Object, ML_Both_Arms) and
whose label codes ``dataset/label_legend.txt`` names.

Protocol (defaults): the OPPORTUNITY challenge split of Chavarriaga et al. 2013 (tasks A and B) as Ordonez & Roggen
2016 (DeepConvLSTM) use it: training = all runs of subject 1 and ADL1-3 + Drill of subjects 2 and 3, official test
= ADL4 and ADL5 of subjects 2 and 3 (subject 4 unused); the 113 body-worn channels of that work (12 3D
accelerometers, 5 IMUs without their quaternions, 2 shoe IMUs), gaps filled by linear interpolation, 30 Hz windows
of 24 samples (0.8 s) every 12, each labelled by its last sample (Null class kept, as the challenge scores it).
``label: locomotion`` (Stand, Walk, Sit, Lie) or ``gestures`` (ML_Both_Arms: 17 gestures).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgedistill.data.archives.base import (
    Archive, check_protocol, fill_gaps, read_numeric_table, require, resample, stream_bounds, stream_windows,
)
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

NAME = "opportunity"
NATIVE_HZ = 30.0
COLUMNS = 250
DATA = "dataset"
TRAIN_RUNS = [(1, r) for r in ("ADL1", "ADL2", "ADL3", "ADL4", "ADL5", "Drill")] + \
             [(s, r) for s in (2, 3) for r in ("ADL1", "ADL2", "ADL3", "Drill")]
TEST_RUNS = [(s, r) for s in (2, 3) for r in ("ADL4", "ADL5")]
#: 0-based label columns and their label_legend.txt names (code 0 is the Null class of every track).
LABELS = {
    "locomotion": (243, "Locomotion", {0: "Null", 1: "Stand", 2: "Walk", 4: "Sit", 5: "Lie"}),
    "gestures": (249, "ML_Both_Arms", {
        0: "Null", 406516: "Open Door 1", 406517: "Open Door 2", 404516: "Close Door 1", 404517: "Close Door 2",
        406520: "Open Fridge", 404520: "Close Fridge", 406505: "Open Dishwasher", 404505: "Close Dishwasher",
        406519: "Open Drawer 1", 404519: "Close Drawer 1", 406511: "Open Drawer 2", 404511: "Close Drawer 2",
        406508: "Open Drawer 3", 404508: "Close Drawer 3", 408512: "Clean Table", 407521: "Drink from Cup",
        405506: "Toggle Switch"}),
}
_IMU_STARTS = (37, 50, 63, 76, 89)  # BACK, RUA, RLA, LUA, LLA: acc, gyro, magnetic (9), then 4 quaternion columns
#: 0-based sensor columns of each named channel group; "body" is the 113 channels of the OPPORTUNITY challenge.
GROUPS = {
    "accelerometers": list(range(1, 37)),
    "imus": [s + k for s in _IMU_STARTS for k in range(9)],
    "shoes": list(range(102, 134)),
}
CHANNEL_SETS = {
    "body": sorted(GROUPS["accelerometers"] + GROUPS["imus"] + GROUPS["shoes"]),
    **GROUPS,
    "all": list(range(1, 243)),
}
LABELLING = ("last", "pure")
#: A pause in the timestamps longer than this many sample periods ends a stream: no window spans it.
MAX_GAP_PERIODS = 10
_COLUMN_LINE = re.compile(r"^\s*Column:\s*(\d+)\s+([^;]+?)\s*(?:;.*)?$")






def _choice(key: str, value: object, allowed: tuple) -> str:
    if value not in allowed:
        raise UserInputError(f"data.params.{key}: expected one of {list(allowed)}, got {value!r}")
    return str(value)


def column_names(folder: Path) -> dict[int, str]:
    """0-based column -> name from ``dataset/column_names.txt`` ("Column: 38 InertialMeasurementUnit BACK accX;
    value = ..."); refused, naming the file, when the label columns are not where the archive documents them."""
    path = require(Path(folder) / DATA / "column_names.txt", NAME)
    names = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _COLUMN_LINE.match(line)
        if m:
            names[int(m.group(1)) - 1] = m.group(2).strip()
    for column, title, _ in LABELS.values():
        if names.get(column) != title:
            raise UserInputError(f"dataset '{NAME}': '{path}' names column {column + 1} {names.get(column)!r}, "
                                 f"expected {title!r}: not the layout this loader reads (250 columns, labels 244-250)")
    return names




def last_label_windows(signal: np.ndarray, labels: np.ndarray, length: int, stride: int,
                       drop: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """Windows every ``stride`` steps across the whole stream, each labelled by its last sample (Ordonez & Roggen
    2016); windows whose label is in ``drop`` are left out."""
    starts = np.arange(0, len(signal) - length + 1, stride)
    y = labels[starts + length - 1] if len(starts) else labels[:0]
    keep = ~np.isin(y, drop)
    if not keep.any():
        return np.empty((0, signal.shape[1], length)), labels[:0]
    return np.stack([signal[s:s + length].T for s in starts[keep]]), y[keep]


def _read_run(folder: Path, subject: int, run: str, cols: list[int], label_col: int, names: dict[int, str],
              rate: float, window: int, stride: int, labelling: str, drop: tuple,
              counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    path = require(Path(folder) / DATA / f"S{subject}-{run}.dat", NAME)
    table = read_numeric_table(path, NAME, columns=COLUMNS)
    codes = table[:, label_col]
    if not np.isfinite(codes).all() or (codes != np.round(codes)).any():
        raise UserInputError(f"dataset '{NAME}': '{path}': column {label_col + 1} ({names[label_col]}) must hold "
                             f"whole-number label codes")
    codes = codes.astype(np.int64)
    signal = table[:, cols]
    counts["filled"] += int((~np.isfinite(signal)).sum())
    counts["empty"] += int((~np.isfinite(signal)).all(axis=0).sum())
    xs, ys = [], []
    streams = stream_bounds(table[:, 0], MAX_GAP_PERIODS * 1000.0 / NATIVE_HZ, path, NAME, "column 1, MILLISEC")
    counts["pauses"] += len(streams) - 1
    for a, b in streams:
        stream = resample(fill_gaps(signal[a:b]), NATIVE_HZ, rate)
        at = np.minimum(np.round(np.arange(len(stream)) * NATIVE_HZ / rate).astype(np.int64), b - a - 1)
        cut = last_label_windows if labelling == "last" else stream_windows
        x, y = cut(stream, codes[a:b][at], window, stride, drop=drop)
        xs.append(x.astype(np.float32))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def load(folder: Path, *, label: str = "gestures", channels: str = "body", rate: float = NATIVE_HZ,
         window: int = 24, stride: int = 12, labelling: str = "last", null: bool = True,
         views: bool = False) -> RawData:
    """The OPPORTUNITY challenge split as windows: x (n, channels, window) float32, y label names, group subject.

    ``label`` picks the track (locomotion | gestures), ``channels`` the sensor set (body: the challenge's 113,
    accelerometers, imus, shoes, all 242 sensor columns), ``rate`` (<= 30) resamples, ``window``/``stride``
    are in samples, ``labelling`` is last (a window takes its last sample's label, across label changes) or pure
    (windows inside one label run), ``null: false`` drops Null-labelled windows, ``views`` adds the body-worn groups
    (accelerometers 36, imus 45, shoes 32) as named views, and "body" (the 113) when ``channels`` is another set."""
    label = _choice("label", label, tuple(LABELS))
    channels = _choice("channels", channels, tuple(CHANNEL_SETS))
    labelling = _choice("labelling", labelling, LABELLING)
    rate, window, stride = check_protocol(rate, window, stride, NATIVE_HZ)
    names = column_names(folder)
    cols = CHANNEL_SETS[channels]
    # With views, the body-worn columns are read too: the groups come from them whatever x keeps.
    read_cols = sorted(set(cols) | set(CHANNEL_SETS["body"])) if views else cols
    in_x = [read_cols.index(c) for c in cols]
    label_col, _, legend = LABELS[label]
    drop = () if null else (0,)
    counts = {"filled": 0, "empty": 0, "pauses": 0}

    def read(runs: list[tuple[int, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xs, ys, gs = [], [], []
        for subject, run in runs:
            x, y = _read_run(folder, subject, run, read_cols, label_col, names, float(rate), window, stride,
                             labelling, drop, counts)
            unknown = sorted(set(np.unique(y).tolist()) - set(legend))
            if unknown:
                raise UserInputError(f"dataset '{NAME}': '{Path(folder) / DATA / f'S{subject}-{run}.dat'}': "
                                     f"{names[label_col]} codes {unknown[:5]} are not in label_legend.txt's track")
            xs.append(x)
            ys.append(y)
            gs.append(np.full(len(y), subject))
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)

    x, y, g = read(TRAIN_RUNS)
    tx, ty, tg = read(TEST_RUNS)
    if not len(x) or not len(tx):
        raise UserInputError(f"data.params.window: {window} samples leave no training or no test window; use a "
                             f"shorter one")
    classes = [legend[c] for c in legend if null or c != 0]
    channel_names = [names.get(c, f"column {c + 1}") for c in cols]
    notes = [f"OPPORTUNITY challenge split: train S1 ADL1-5 + Drill, S2/S3 ADL1-3 + Drill; test S2/S3 ADL4-5 "
             f"(subject 4 unused); label track {names[label_col]} ({len(classes)} classes"
             + (", Null kept)" if null else ", Null windows dropped)"),
             f"channels: {channels} ({len(cols)} of the 242 sensor columns)",
             f"filled {counts['filled']} missing value(s) (NaN) by linear interpolation in time; "
             f"{counts['empty']} channel-run(s) with no value at all set to 0"]
    if counts["pauses"]:
        notes.append(f"{counts['pauses']} pause(s) above {MAX_GAP_PERIODS} samples in MILLISEC end a stream")
    if rate != NATIVE_HZ:
        notes.append(f"resampled {NATIVE_HZ:g} Hz -> {rate:.4g} Hz (linear interpolation)")
    rule = "labelled by its last sample" if labelling == "last" else "inside one label run"
    notes.append(f"windows of {window} samples ({window / rate:.2f} s) every {stride}, each {rule}")
    view_map: dict[str, np.ndarray] = {}
    test_views: dict[str, np.ndarray] = {}
    if views:
        for group in (*GROUPS, "body"):
            if group != "body" or channels != "body":
                idx = [read_cols.index(c) for c in CHANNEL_SETS[group]]
                view_map[group], test_views[group] = x[:, idx], tx[:, idx]
    if len(in_x) < len(read_cols):
        x, tx = x[:, in_x], tx[:, in_x]
    return RawData(x=x, y=np.array([legend[int(c)] for c in y]), task="classification", group=g, views=view_map,
                   test_x=tx, test_y=np.array([legend[int(c)] for c in ty]), test_group=tg, test_views=test_views,
                   classes=classes, name=NAME, channels=channel_names, notes=notes)


ARCHIVE = Archive(
    name=NAME,
    folder="OpportunityUCIDataset",
    files=tuple(f"{DATA}/S{s}-{r}.dat" for s, r in TRAIN_RUNS + TEST_RUNS) + (f"{DATA}/column_names.txt",),
    task="classification",
    kind="1d",
    doc="OPPORTUNITY challenge: 113 body-worn channels x 24 at 30 Hz, 18 gestures (incl. Null) or 5 locomotion "
        "modes, subjects 1-3, official test S2/S3 ADL4-5",
    citation="R. Chavarriaga et al., The Opportunity challenge: A benchmark database for on-body sensor-based "
             "activity recognition, Pattern Recognition Letters 34(15), 2013; "
             "https://archive.ics.uci.edu/dataset/226/opportunity+activity+recognition",
    load=load,
    url="https://archive.ics.uci.edu/ml/machine-learning-databases/00226/OpportunityUCIDataset.zip",
    sha256=None,  # not verified offline
    download_name="OpportunityUCIDataset.zip",
    manual="download 'OpportunityUCIDataset.zip' from "
           "https://archive.ics.uci.edu/dataset/226/opportunity+activity+recognition and unzip it",
)
