"""The user's own data: ``.npz`` arrays or a long-format ``.csv``.

Files are read without unpickling (``allow_pickle=False``): a data file can never execute code. Every
problem is a ``UserInputError`` naming the file, the array or column, and what was expected, so a user
can fix the file without reading a traceback.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgedistill.data.raw import RawData
from edgedistill.data.windowing import majority_vote, window_starts, window_targets
from edgedistill.errors import UserInputError

_RESERVED = {"x", "y", "group", "test_x", "test_y", "test_group", "task"}


def infer_task(y: np.ndarray, where: str) -> str:
    """Integer, bool or string labels mean classification; floats mean regression."""
    kind = np.asarray(y).dtype.kind
    if kind in "iubUS":
        return "classification"
    if kind == "f":
        return "regression"
    raise UserInputError(f"{where}: expected integer/string class labels or float targets, got dtype {y.dtype}")


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"data file '{path}' does not exist")
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise UserInputError(
            f"'{path}': cannot read without unpickling ({exc}); save plain numeric/string arrays"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(f"'{path}': not a readable .npz file ({exc})") from None


def load_npz(path: str | Path) -> RawData:
    """Load arrays ``x`` (n, ch, len) or (n, ch, h, w) and ``y`` (n,) or (n, k) from an ``.npz`` file.

    Optional: ``group`` (n,) subject ids; ``test_x``/``test_y``/``test_group`` an official test split;
    ``task`` a scalar string ('classification' or 'regression') overriding the inference from y's dtype
    (integer/string/bool -> classification, float -> regression). Every other array whose first dimension is
    n is a privileged view (e.g. ``pi``); ``test_<name>`` is its test counterpart, optional because
    privileged information is usually missing at test time (the test split then lacks that view).
    """
    path = _check_file(Path(path))
    arrays = _read_npz(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise UserInputError(f"'{path}': array '{key}' is missing; found {sorted(arrays) or 'no arrays'}")
    x, y = arrays["x"], arrays["y"]
    if x.ndim not in (3, 4):
        raise UserInputError(
            f"'{path}': array 'x' must be (n, channels, length) or (n, channels, h, w), got shape {x.shape}"
        )
    if x.dtype.kind not in "iufb":
        raise UserInputError(f"'{path}': array 'x' must be numeric, got dtype {x.dtype}")
    n = len(x)
    if "task" in arrays:
        task = str(arrays["task"].reshape(-1)[0]) if arrays["task"].size == 1 else ""
        if task not in ("classification", "regression"):
            got = arrays["task"].tolist()
            raise UserInputError(f"'{path}': array 'task' must be 'classification' or 'regression', got {got!r}")
    else:
        task = infer_task(y, f"'{path}': array 'y'")

    def check_rows(key: str, rows: int, ref: str) -> np.ndarray:
        arr = arrays[key]
        if arr.ndim == 0 or len(arr) != rows:
            got = "a scalar" if arr.ndim == 0 else f"{len(arr)} rows"
            raise UserInputError(
                f"'{path}': array '{key}' has {got} but '{ref}' has {rows}; expected one row per sample"
            )
        return arr

    check_rows("y", n, "x")
    group = check_rows("group", n, "x").reshape(-1) if "group" in arrays else None
    test_x = test_y = test_group = None
    if ("test_x" in arrays) != ("test_y" in arrays):
        have, lack = ("test_x", "test_y") if "test_x" in arrays else ("test_y", "test_x")
        raise UserInputError(f"'{path}': array '{have}' is present but '{lack}' is missing; give both or neither")
    if "test_x" in arrays:
        test_x = arrays["test_x"]
        if test_x.shape[1:] != x.shape[1:]:
            raise UserInputError(
                f"'{path}': array 'test_x' has per-sample shape {test_x.shape[1:]} but 'x' has {x.shape[1:]}"
            )
        test_y = check_rows("test_y", len(test_x), "test_x")
        if "test_group" in arrays:
            test_group = check_rows("test_group", len(test_x), "test_x").reshape(-1)
    views: dict[str, np.ndarray] = {}
    test_views: dict[str, np.ndarray] = {}
    for key in sorted(set(arrays) - _RESERVED):
        if key.startswith("test_") and key[5:] in arrays:
            continue  # handled with its training view below
        views[key] = check_rows(key, n, "x")
        if f"test_{key}" in arrays:
            if test_x is None:
                raise UserInputError(f"'{path}': array 'test_{key}' is given but there is no 'test_x'")
            test_views[key] = check_rows(f"test_{key}", len(test_x), "test_x")
    return RawData(
        x=x, y=y, task=task, group=group, views=views, test_x=test_x, test_y=test_y,  # type: ignore[arg-type]
        test_group=test_group, test_views=test_views, name=path.stem,
    )


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value, so messages read ``window 3`` and not ``np.int64(3)``."""
    return v.item() if isinstance(v, np.generic) else v


def _label_array(col: Any) -> np.ndarray:
    arr = col.to_numpy()
    if arr.dtype.kind == "O":  # pandas keeps text as objects; class names are strings
        arr = col.astype(str).to_numpy().astype(str)
    return arr


def load_csv_windows(
    path: str | Path, length: Optional[int] = None, stride: Optional[int] = None
) -> tuple[RawData, bool]:
    """``load_csv`` plus whether the windows were cut here from ``length``/``stride`` (no 'window' column)."""
    import pandas as pd  # lazy: pandas costs ~0.5 s to import

    path = _check_file(Path(path))
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise UserInputError(f"'{path}': not a readable CSV file ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if "y" not in df.columns:
        raise UserInputError(f"'{path}': column 'y' (the label/target) is missing; found columns {list(df.columns)}")
    if len(df) == 0:
        raise UserInputError(f"'{path}': the CSV has a header but no rows")
    channels = [c for c in df.columns if c not in ("y", "group", "window")]
    if not channels:
        raise UserInputError(f"'{path}': no channel columns; every column besides y/group/window is a channel")
    for c in channels:
        if not pd.api.types.is_numeric_dtype(df[c]):
            bad = pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()
            row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise UserInputError(
                f"'{path}': column '{c}' must be numeric (it is a channel); row {row + 2} has {df[c].iloc[row]!r}"
            )
        col = df[c].to_numpy(dtype=np.float64)
        if not np.isfinite(col).all():
            row = int(np.flatnonzero(~np.isfinite(col))[0])
            raise UserInputError(f"'{path}': column '{c}' has a missing or non-finite value at row {row + 2}")
    for c in ("y", "group", "window"):
        if c in df.columns and df[c].isna().any():
            row = int(np.flatnonzero(df[c].isna().to_numpy())[0]) + 2
            raise UserInputError(f"'{path}': column '{c}' has a missing value at row {row}")
    values = df[channels].to_numpy(dtype=np.float64)  # (rows, channels)
    y = _label_array(df["y"])
    task = infer_task(y, f"'{path}': column 'y'")
    group = _label_array(df["group"]) if "group" in df.columns else None

    if "window" in df.columns:
        codes, ids = pd.factorize(df["window"], sort=False)
        lengths = np.bincount(codes)
        if len(set(lengths.tolist())) != 1:
            short = int(np.argmin(lengths))
            raise UserInputError(
                f"'{path}': column 'window': every window needs the same number of rows, but window "
                f"{_plain(ids[short])!r} has {lengths[short]} and others up to {lengths.max()}"
            )
        order = np.argsort(codes, kind="stable")  # window by window, rows in file order
        nw, length_w = len(lengths), int(lengths[0])
        x = values[order].reshape(nw, length_w, len(channels)).transpose(0, 2, 1)
        yw = y[order].reshape(nw, length_w)
        wy = majority_vote(yw) if task == "classification" else yw.astype(np.float64).mean(axis=1)
        wg = None
        if group is not None:
            gw = group[order].reshape(nw, length_w)
            mixed = np.flatnonzero((gw != gw[:, :1]).any(axis=1))
            if len(mixed):
                raise UserInputError(
                    f"'{path}': window {_plain(ids[mixed[0]])!r} mixes rows of several groups; "
                    f"one window is one subject"
                )
            wg = gw[:, 0]
        return RawData(x=np.ascontiguousarray(x), y=wy, task=task, group=wg, name=path.stem), False  # type: ignore

    if length is None:
        raise UserInputError(
            f"'{path}': no 'window' column; add one (rows with the same id form one window) or set "
            f"data.window.length to cut windows from each group's contiguous rows"
        )
    # Each contiguous run of one group value is one recording; windows never cross a recording boundary.
    run_key = group if group is not None else np.zeros(len(df), dtype=np.int64)
    breaks = np.flatnonzero(run_key[1:] != run_key[:-1]) + 1
    bounds = np.concatenate([[0], breaks, [len(df)]])
    xs, ys, gs = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a < length:
            continue
        starts = window_starts(b - a, length, stride) + a
        idx = starts[:, None] + np.arange(length)[None, :]
        xs.append(values[idx].transpose(0, 2, 1))
        ys.append(window_targets(y, starts, length, task))
        if group is not None:
            gs.append(np.repeat(group[a:a + 1], len(starts)))
    if not xs:
        raise UserInputError(
            f"'{path}': data.window.length={length} is longer than every recording "
            f"(longest has {int(np.diff(bounds).max())} rows); use a shorter window"
        )
    raw = RawData(
        x=np.ascontiguousarray(np.concatenate(xs)), y=np.concatenate(ys), task=task,  # type: ignore[arg-type]
        group=np.concatenate(gs) if gs else None, name=path.stem,
    )
    return raw, True


def load_csv(path: str | Path, length: Optional[int] = None, stride: Optional[int] = None) -> RawData:
    """Load a long-format CSV (header row; one row per time step) into windows.

    Columns: ``y`` (required; label or float target per row), ``group`` (optional subject id), ``window``
    (optional window id) and channels (every other column, numeric). With a ``window`` column, rows sharing
    an id form one window in file order: a window is (length, channels) in the file and (channels, length)
    here; all windows need the same length; the window's label is its majority label (mean for regression).
    Without one, ``length`` (``data.window.length``) is required: each contiguous run of one ``group`` value
    (or the whole file) is a recording, cut into windows of ``length`` every ``stride`` rows (default: no
    overlap), labelled the same way. Recordings shorter than ``length`` are skipped.
    """
    return load_csv_windows(path, length, stride)[0]
