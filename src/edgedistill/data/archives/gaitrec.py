"""GaitRec (Horsak et al. 2020, Scientific Data 7:143): ground reaction forces of 2,084 patients with hip, knee, ankle
or calcaneus impairments and 211 healthy controls, from the figshare CSVs.

Files (figshare, https://doi.org/10.6084/m9.figshare.c.4788012): ``GRF_<COMP>_PRO_<side>.csv`` for COMP in F_V, F_AP,
F_ML (vertical / anterior-posterior / medio-lateral force; COP_AP, COP_ML the centre of pressure) and side left /
right: comma-separated with a header, columns SUBJECT_ID, SESSION_ID, TRIAL_ID, then 101 values (one step, filtered,
time-normalised to 101 points, force amplitude normalised to body weight). ``GRF_metadata.csv``: one row per session
with SUBJECT_ID, SESSION_ID, CLASS_LABEL (HC healthy control, H hip, K knee, A ankle, C calcaneus), SPEED (2 =
self-selected; only healthy controls also walked at other speeds) and the split flags TRAIN, TRAIN_BALANCED, TEST
(0/1) the authors defined (test sessions' subjects never in training).

Protocol (the archive's split; self-selected speed and trials averaged per session as a public GaitRec loading
code does by default): sessions flagged ``train_set`` (TRAIN_BALANCED: class-balanced) train, TEST sessions
test; self-selected speed only; one sample per session (the mean of its trials; ``unit: trial`` keeps every step);
channels = each force component of the left then the right foot, 101 points; views ``left`` / ``right`` (one foot's
components) for cross-view distillation; group = SUBJECT_ID.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import numpy as np

from edgedistill.data.archives.base import Archive, fill_gaps, read_numeric_table, require
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

NAME = "gaitrec"
CLASSES = ["HC", "H", "K", "A", "C"]
COMPONENTS = ("F_V", "F_AP", "F_ML", "COP_AP", "COP_ML")
SIDES = ("left", "right")
POINTS = 101
ID_COLUMNS = ("SUBJECT_ID", "SESSION_ID", "TRIAL_ID")
META_COLUMNS = ("SUBJECT_ID", "SESSION_ID", "CLASS_LABEL", "SPEED", "TRAIN", "TRAIN_BALANCED", "TEST")
SELF_SELECTED = 2
UNITS = ("session", "trial")
TRAIN_SETS = ("TRAIN_BALANCED", "TRAIN")


def _metadata(path: Path) -> dict[str, np.ndarray]:
    """The columns the protocol needs from GRF_metadata.csv; a missing column or a non-number refused naming it."""
    require(path, NAME)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in META_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserInputError(f"dataset '{NAME}': '{path}' lacks the column(s) {missing} of the archive's metadata")
        rows = list(reader)
    out: dict[str, np.ndarray] = {"CLASS_LABEL": np.array([r["CLASS_LABEL"].strip() for r in rows])}
    for col in META_COLUMNS:
        if col == "CLASS_LABEL":
            continue
        try:
            out[col] = np.array([float(r[col]) if r[col].strip() else np.nan for r in rows])
        except ValueError as exc:
            raise UserInputError(f"dataset '{NAME}': '{path}' column {col} is not numeric ({exc})") from None
    unknown = sorted(set(out["CLASS_LABEL"]) - set(CLASSES))
    if unknown:
        raise UserInputError(f"dataset '{NAME}': '{path}' has CLASS_LABEL values {unknown[:5]} outside {CLASSES}")
    return out


def _component(folder: Path, comp: str, side: str) -> tuple[np.ndarray, np.ndarray]:
    """One processed file: (rows, 2) int session/trial ids and (rows, 101) values; header checked."""
    path = require(folder / f"GRF_{comp}_PRO_{side}.csv", NAME)
    with open(path, encoding="utf-8-sig") as fh:
        header = [h.strip() for h in fh.readline().split(",")]
    if tuple(header[:3]) != ID_COLUMNS or len(header) != 3 + POINTS:
        raise UserInputError(f"dataset '{NAME}': '{path}' header is not {', '.join(ID_COLUMNS)} + {POINTS} values "
                             f"(got {len(header)} columns starting {header[:3]})")
    table = read_numeric_table(path, NAME, delimiter=",", columns=3 + POINTS, skip_rows=1)
    return table[:, 1:3].astype(np.int64), table[:, 3:]


def _check(value, allowed: tuple, key: str) -> None:
    if value not in allowed:
        raise UserInputError(f"data.params.{key}: expected one of {list(allowed)}, got {value!r}")


def load(folder: Path, *, unit: str = "session", train_set: str = "TRAIN_BALANCED",
         components: Optional[list[str]] = None, speed: str = "self_selected", task: str = "classification", target: str = "F_V") -> RawData:
    """The archive's train/test sessions as (n, 2 * len(components), 101) windows; see the module docstring.
    ``task: regression`` makes it a GRF regression task instead: y = the ``target`` component's curves of both feet,
    (2 x 101) flattened left then right, and x = the other components (time-aware KD, docs/losses/time_aware_kd.md)."""
    _check(unit, UNITS, "unit")
    _check(train_set, TRAIN_SETS, "train_set")
    _check(speed, ("self_selected", "all"), "speed")
    components = list(components) if components is not None else ["F_V", "F_AP", "F_ML"]
    if not components or any(c not in COMPONENTS for c in components) or len(set(components)) != len(components):
        raise UserInputError(f"data.params.components: expected distinct names from {list(COMPONENTS)}, "
                             f"got {components!r}")
    _check(task, ("classification", "regression"), "task")
    if task == "regression" and (target not in components or len(components) < 2):
        raise UserInputError(f"data.params.target: expected one of data.params.components {components} (the curves "
                             f"to regress), with at least one other component as input; got {target!r}")
    folder = Path(folder)
    meta = _metadata(folder / "GRF_metadata.csv")
    notes: list[str] = []
    keep = np.ones(len(meta["SESSION_ID"]), dtype=bool)
    if speed == "self_selected":
        keep &= meta["SPEED"] == SELF_SELECTED
        notes.append(f"kept self-selected walking speed (SPEED == 2): dropped {int((~keep).sum())} session(s)")

    # Trials are matched across files by (SESSION_ID, TRIAL_ID): a trial missing from any file is dropped.
    tables = {(c, s): _component(folder, c, s) for c in components for s in SIDES}
    keys0 = tables[(components[0], "left")][0]
    index = {(c, s): {(int(a), int(b)): i for i, (a, b) in enumerate(ids)} for (c, s), (ids, _) in tables.items()}
    common = [k for k in map(tuple, keys0.tolist()) if all(k in idx for idx in index.values())]
    if len(common) < len(keys0):
        notes.append(f"dropped {len(keys0) - len(common)} trial(s) absent from one of the component files")
    rows = {cs: [index[cs][k] for k in common] for cs in tables}
    channels = [f"{c}_{s}" for s in SIDES for c in components]
    x = np.stack([tables[(c, s)][1][rows[(c, s)]] for s in SIDES for c in components], axis=1)
    if not np.isfinite(x).all():
        notes.append(f"{int((~np.isfinite(x)).sum())} missing value(s) filled by linear interpolation in time")
        x = np.stack([fill_gaps(t.T).T for t in x])
    sessions = np.array([k[0] for k in common], dtype=np.int64)

    by_session = {int(s): i for i, s in enumerate(meta["SESSION_ID"].astype(np.int64))}
    unknown = sorted({int(s) for s in sessions} - set(by_session))
    if unknown:
        raise UserInputError(f"dataset '{NAME}': SESSION_ID(s) {unknown[:5]} in the force files are not in "
                             f"'{folder / 'GRF_metadata.csv'}'")
    meta_row = np.array([by_session[int(s)] for s in sessions], dtype=np.int64)

    def part(flag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        chosen = keep[meta_row] & (meta[flag][meta_row] == 1)
        px, pm, ps = x[chosen], meta_row[chosen], sessions[chosen]
        if unit == "session" and len(ps):
            found, first, inverse = np.unique(ps, return_index=True, return_inverse=True)
            sums = np.zeros((len(found),) + px.shape[1:])
            np.add.at(sums, inverse, px)
            order = np.argsort(first)  # sessions in file order
            px = (sums / np.bincount(inverse)[:, None, None])[order]
            pm = np.array([by_session[int(s)] for s in found[order]], dtype=np.int64)
        return px, meta["CLASS_LABEL"][pm], meta["SUBJECT_ID"][pm].astype(np.int64)

    tr_x, tr_y, tr_g = part(train_set)
    te_x, te_y, te_g = part("TEST")
    if not len(tr_x) or not len(te_x):
        raise UserInputError(f"dataset '{NAME}': no {train_set if not len(tr_x) else 'TEST'} session has force data "
                             f"in '{folder}' (is the archive complete?)")
    notes.append(f"split: {train_set} sessions train, TEST sessions test ({len(tr_x)} / {len(te_x)} "
                 f"{'sessions, trials averaged' if unit == 'session' else 'trials'})")
    if task == "regression":
        return _regression(tr_x, tr_g, te_x, te_g, channels, target, notes)
    half = len(components)
    return RawData(
        x=tr_x, y=tr_y, task="classification", group=tr_g, test_x=te_x, test_y=te_y, test_group=te_g,
        views={"left": tr_x[:, :half], "right": tr_x[:, half:]},
        test_views={"left": te_x[:, :half], "right": te_x[:, half:]},
        classes=list(CLASSES), name=NAME, channels=channels, notes=notes,
    )


def _regression(tr_x: np.ndarray, tr_g: np.ndarray, te_x: np.ndarray, te_g: np.ndarray, channels: list[str],
                target: str, notes: list[str]) -> RawData:
    """GRF regression: the ``target`` component of both feet is y (flattened, left then right), the rest is x."""
    is_y = np.array([c.rsplit("_", 1)[0] == target for c in channels])
    x_names = [c for c, y in zip(channels, is_y) if not y]
    half = len(x_names) // 2
    notes.append(f"regression: y = {target} of both feet (2 x {POINTS}, flattened), x = {', '.join(x_names)}")
    y_of = lambda x: x[:, is_y].reshape(len(x), -1)  # noqa: E731
    return RawData(
        x=tr_x[:, ~is_y], y=y_of(tr_x), task="regression", group=tr_g, test_x=te_x[:, ~is_y], test_y=y_of(te_x),
        test_group=te_g, views={"left": tr_x[:, ~is_y][:, :half], "right": tr_x[:, ~is_y][:, half:]},
        test_views={"left": te_x[:, ~is_y][:, :half], "right": te_x[:, ~is_y][:, half:]},
        name=NAME, channels=x_names, notes=notes,
    )


ARCHIVE = Archive(
    name=NAME,
    folder="GaitRec",
    files=("GRF_metadata.csv",) + tuple(f"GRF_{c}_PRO_{s}.csv" for c in ("F_V", "F_AP", "F_ML") for s in SIDES),
    task="classification",
    kind="1d",
    doc="GaitRec: ground reaction forces, 6 x 101 (V/AP/ML, both feet), 5 classes (HC/H/K/A/C), 2,295 subjects.",
    citation=("Horsak et al. 2020, GaitRec, a large-scale ground reaction force dataset of healthy and impaired gait, "
              "Scientific Data 7:143; https://doi.org/10.6084/m9.figshare.c.4788012"),
    load=load,
    manual=("download the CSV files (GRF_F_*_PRO_left/right.csv and GRF_metadata.csv) from the figshare collection "
            "https://doi.org/10.6084/m9.figshare.c.4788012 into a folder named 'GaitRec'"),
)
