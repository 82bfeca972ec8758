"""The user's own data: ``.npz`` arrays or a long-format ``.csv``.

Files are read without unpickling (``allow_pickle=False``): a data file can never execute code. Every
problem is a ``UserInputError`` naming the file, the array or column, and what was expected, so a user
can fix the file without reading a traceback. What y means (class labels or regression targets) is settled
here, once: ``data.task`` when given, else the dtype, and an ambiguous y (floats that are all whole numbers,
one-hot rows) is refused rather than guessed (docs/data.md, "What is refused").
"""
from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from edgedistill.data.raw import RawData, settle_task
from edgedistill.data.windowing import (check_window_memory, majority_vote, memory_bytes, window_starts,
                                         window_targets)
from edgedistill.errors import UserInputError

if TYPE_CHECKING:
    from edgedistill.config import CsvColumns

_RESERVED = {"x", "y", "group", "test_x", "test_y", "test_group", "task"}
_TASKS = ("classification", "regression")


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"data file '{path}' does not exist")
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    # Look at the first bytes first: np.load would read a .npy as one array and anything else as a pickle.
    with path.open("rb") as fh:
        head = fh.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise UserInputError(
            f"'{path}': this is a .npy file (one array), not an .npz archive of named arrays; "
            f"save with np.savez(path, x=x, y=y)"
        )
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise UserInputError(
            f"'{path}': not an .npz archive (it starts with {head!r}); expected a file written by np.savez"
            + ("" if head else " (the file is empty)")
        )
    try:
        _check_members(path)
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except UserInputError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):  # object arrays need pickle, which is refused
            raise UserInputError(
                f"'{path}': cannot read without unpickling ({exc}); save plain numeric/string arrays"
            ) from None
        raise UserInputError(f"'{path}': not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, MemoryError) as exc:
        raise UserInputError(f"'{path}': not a readable .npz file ({type(exc).__name__}: {exc})") from None


def _check_members(path: Path) -> None:
    """Read each array's header before its data: a header that claims more bytes than the archive member holds
    (corrupt, or crafted to make np.load allocate terabytes) or arrays larger than this machine's memory (a
    compressed archive of zeros expands ~1000x) are refused before anything is allocated."""
    total = 0
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            with z.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
                if dtype.hasobject:
                    raise UserInputError(
                        f"'{path}': array '{name}' holds Python objects (dtype {dtype}), which cannot be read "
                        f"without unpickling; save plain numeric/string arrays"
                    )
                need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                have = info.file_size - fh.tell()
            if need > have:
                raise UserInputError(
                    f"'{path}': array '{name}' claims shape {shape} ({need} bytes) but holds {have} bytes: the file "
                    f"is truncated or corrupt; write it again with np.savez"
                )
            total += need
    mem = memory_bytes()
    if mem and total > mem // 2:
        raise UserInputError(
            f"'{path}': its arrays need {total / 2**30:.1f} GiB in memory, more than half of this machine's "
            f"{mem / 2**30:.1f} GiB; use a subset or a machine with more memory"
        )


def load_npz(path: str | Path, task: Optional[str] = None, windowed: bool = False) -> RawData:
    """Load arrays ``x`` (n, ch, len) or (n, ch, h, w) and ``y`` (n,) or (n, k) from an ``.npz`` file.

    Optional: ``group`` (n,) subject ids; ``test_x``/``test_y``/``test_group`` an official test split;
    ``task`` a scalar string ('classification' or 'regression'), like ``data.task`` (``task`` here; both must
    agree), else ``settle_task`` decides from y. Every other array whose first dimension is
    n is a privileged view (e.g. ``pi``); ``test_<name>`` is its test counterpart, optional because
    privileged information is usually missing at test time (the test split then lacks that view).
    ``windowed`` (data.window is set): a y of shape (n, length) is per-timestep labels, never one-hot rows.
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
        file_task = str(arrays["task"].reshape(-1)[0]) if arrays["task"].size == 1 else ""
        if file_task not in _TASKS:
            got = arrays["task"].tolist()
            raise UserInputError(f"'{path}': array 'task' must be 'classification' or 'regression', got {got!r}")
        if task is not None and task != file_task:
            raise UserInputError(f"data.task: '{task}' but '{path}' says '{file_task}' (array 'task'); remove one")
        task = file_task

    def check_rows(key: str, rows: int, ref: str) -> np.ndarray:
        arr = arrays[key]
        if arr.ndim == 0 or len(arr) != rows:
            got = "a scalar" if arr.ndim == 0 else f"{len(arr)} rows"
            raise UserInputError(
                f"'{path}': array '{key}' has {got} but '{ref}' has {rows}; expected one row per sample"
            )
        return arr

    check_rows("y", n, "x")
    task, y, notes = settle_task(y, f"'{path}': array 'y'", task, steps=x.shape[-1] if windowed else None)
    group = check_rows("group", n, "x").reshape(-1) if "group" in arrays else None
    test_x = test_y = test_group = None
    if ("test_x" in arrays) != ("test_y" in arrays):
        have, lack = ("test_x", "test_y") if "test_x" in arrays else ("test_y", "test_x")
        raise UserInputError(f"'{path}': array '{have}' is present but '{lack}' is missing; give both or neither")
    if "test_x" in arrays:
        test_x = arrays["test_x"]
        if test_x.ndim != x.ndim or test_x.shape[1:] != x.shape[1:]:
            raise UserInputError(
                f"'{path}': array 'test_x' has per-sample shape {test_x.shape[1:]} but 'x' has {x.shape[1:]}"
            )
        test_y = check_rows("test_y", len(test_x), "test_x")
        test_y = settle_task(test_y, f"'{path}': array 'test_y'", task, steps=x.shape[-1] if windowed else None)[1]
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
        test_group=test_group, test_views=test_views, name=path.stem, notes=notes,
    )


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value, so messages read ``window 3`` and not ``np.int64(3)``."""
    return v.item() if isinstance(v, np.generic) else v


def _label_array(col: Any) -> np.ndarray:
    arr = col.to_numpy()
    if arr.dtype.kind in "OT":  # pandas keeps text as objects (or its string dtype); class names are strings
        arr = col.astype(str).to_numpy().astype(str)
    return arr


# Names that say a column is not a sensor channel (compared case-insensitively): a role under another spelling, an
# index, or a clock. "Unnamed: 3" is what pandas calls a column without a header (a trailing comma, to_csv's index).
_ROLE_NAMES = {"x", "y", "label", "labels", "target", "class", "group", "subject", "window", "id", "index",
               "test_x", "test_y", "test_group", "task"}
_TIME_NAME = re.compile(r"^(time|times|timestamp|time_?stamp|ts|date|datetime|epoch|unix_?time)([ _-]?"
                        r"(s|ms|us|ns|sec|secs|seconds|utc))?$", re.IGNORECASE)
_EPOCH = 1e9  # seconds since 1970 passed 1e9 in 2001: larger strictly increasing values are a clock


def _why_not_a_channel(name: str, col: Any, runs: np.ndarray) -> Optional[str]:
    """Why column ``name`` must not silently become a channel, or None. ``runs`` are the [start, stop) bounds of
    contiguous recordings (group/window runs): a clock or a row counter restarts in each."""
    import pandas as pd

    if name.lower() in _ROLE_NAMES:
        return "a reserved name"
    if _TIME_NAME.match(name):
        return "a time/date name"
    if name.startswith("Unnamed:"):
        return "no header name"
    if not pd.api.types.is_numeric_dtype(col):
        sample = col.dropna().astype(str).head(20)
        if len(sample) and pd.to_datetime(sample, format="mixed", errors="coerce").notna().all():
            return "dates/times"
        return None  # text: refused as non-numeric, naming the row
    v = col.to_numpy(dtype=np.float64)
    steps = [np.diff(v[a:b]) for a, b in zip(runs[:-1], runs[1:]) if b - a >= 3]
    if not steps or not all(d.size and (d > 0).all() for d in steps):
        return None
    if all(np.allclose(d, d[0], rtol=1e-6, atol=0) for d in steps):
        return "evenly increasing (a row counter or sampling clock)"
    return "increasing timestamps" if np.nanmin(v) >= _EPOCH else None


def _roles(df: Any, path: Path, columns: Optional["CsvColumns"]) -> tuple[str, Optional[str], Optional[str],
                                                                          Optional[str], list[str]]:
    """(label, group, window, time, channels) column names; channels not listed are every other column, refused
    when one of them looks like a label, an id or a clock (``_why_not_a_channel``)."""
    have = list(df.columns)
    # A role left unset takes its legacy name when the file has that column: 'y' (label), 'group', 'window'.
    label, group, window, time = ("y", None, None, None) if columns is None else (
        columns.label, columns.group, columns.window, columns.time)
    group = group if group is not None or "group" not in have else "group"
    window = window if window is not None or "window" not in have else "window"
    if columns is None and label not in have:
        raise UserInputError(
            f"'{path}': column 'y' (the label/target) is missing; found columns {have}; "
            f"name the label column with data.columns.label"
        )
    for key, name in (("label", label), ("group", group), ("window", window), ("time", time)):
        if name is not None and name not in have:
            raise UserInputError(f"data.columns.{key}: '{path}' has no column '{name}'; its columns are {have}")
    roles = [c for c in (label, group, window, time) if c is not None]
    if len(set(roles)) != len(roles):
        raise UserInputError(f"data.columns: one column has two roles ({roles}); label/group/window/time differ")
    listed = columns.channels if columns is not None else None
    if listed is not None:
        unknown = [c for c in listed if c not in have]
        if unknown:
            raise UserInputError(f"data.columns.channels: '{path}' has no column(s) {unknown}; its columns are {have}")
        twice = sorted({c for c in listed if listed.count(c) > 1} | set(listed) & set(roles))
        if twice:
            raise UserInputError(f"data.columns.channels: {twice} listed twice or also a label/group/window/time")
        return label, group, window, time, list(listed)
    channels = [c for c in have if c not in roles]
    if not channels:
        raise UserInputError(f"'{path}': no channel columns; every column besides {roles} is a channel")
    key = [df[c].astype(str).to_numpy() for c in (group, window) if c is not None]
    change = np.zeros(max(len(df) - 1, 0), dtype=bool)
    for k in key:
        change |= k[1:] != k[:-1]
    runs = np.concatenate([[0], np.flatnonzero(change) + 1, [len(df)]])
    odd = [(c, why) for c in channels if (why := _why_not_a_channel(c, df[c], runs))]
    if odd:
        what = ", ".join(f"'{c}' ({why})" for c, why in odd)
        raise UserInputError(
            f"'{path}': column(s) {what} would be read as channels; say what each column is with data.columns "
            f"(label, group, window, time, channels: [...]); the file's columns are {have}"
        )
    return label, group, window, time, channels


def _time_order(df: Any, path: Path, time: str, key: Optional[str]) -> tuple[np.ndarray, list[str]]:
    """Row order by time within each window (or group, or the whole file), and a note if rows were out of order.
    Two rows at the same time in one recording are refused: one row is one time step."""
    import pandas as pd

    col = df[time]
    if pd.api.types.is_numeric_dtype(col):
        t = col.to_numpy(dtype=np.float64)
    else:
        parsed = pd.to_datetime(col.astype(str), format="mixed", utc=True, errors="coerce")
        if parsed.isna().any():
            row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
            raise UserInputError(
                f"data.columns.time: column '{time}' of '{path}' must hold numbers or dates/times; "
                f"row {row + 2} has {col.iloc[row]!r}"
            )
        t = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
    if not np.isfinite(t).all():
        raise UserInputError(f"'{path}': column '{time}' has a missing or non-finite time at row "
                             f"{int(np.flatnonzero(~np.isfinite(t))[0]) + 2}")
    codes = pd.factorize(df[key], sort=False)[0] if key else np.zeros(len(df), dtype=np.int64)
    where = f"{key} " if key else ""
    order = np.lexsort((t, codes))  # by recording (first appearance), then time; stable
    ts, cs = t[order], codes[order]
    dup = np.flatnonzero((cs[1:] == cs[:-1]) & (ts[1:] == ts[:-1]))
    if len(dup):
        i = int(dup[0])
        rid = f"{where}{_plain(df[key].iloc[order[i]])!r} " if key else ""
        raise UserInputError(
            f"'{path}': column '{time}' (data.columns.time): {rid}has two rows at time {_plain(col.iloc[order[i]])!r} "
            f"(rows {order[i] + 2} and {order[i + 1] + 2}); one row per time step"
        )
    as_read = np.lexsort((np.arange(len(t)), codes))  # each recording's rows in file order
    back = (codes[as_read][1:] == codes[as_read][:-1]) & (t[as_read][1:] < t[as_read][:-1])
    notes = []
    if back.any():
        n_rec = len(np.unique(codes[as_read][1:][back]))
        which = f"rows of {n_rec} {key}(s)" if key else "rows"
        notes.append(f"'{path}': {which} were not in '{time}' order; sorted by time")
    return order, notes


def load_csv_windows(
    path: str | Path, length: Optional[int] = None, stride: Optional[int] = None,
    columns: Optional["CsvColumns"] = None, task: Optional[str] = None,
) -> tuple[RawData, bool]:
    """``load_csv`` plus whether the windows were cut here from ``length``/``stride`` (no window column)."""
    import pandas as pd  # lazy: pandas costs ~0.5 s to import

    path = _check_file(Path(path))
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise UserInputError(f"'{path}': not a readable CSV file ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:  # pandas renames a repeated name 'a.1'
        header = [c.strip() for c in next(csv.reader(fh), [])]
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise UserInputError(f"'{path}': column name(s) {twice} appear more than once in the header; rename them")
    if len(df) == 0:
        raise UserInputError(f"'{path}': the CSV has a header but no rows")
    label, group_col, window_col, time_col, channels = _roles(df, path, columns)
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
    for c in (label, group_col, window_col):
        if c is not None and df[c].isna().any():
            row = int(np.flatnonzero(df[c].isna().to_numpy())[0]) + 2
            raise UserInputError(f"'{path}': column '{c}' has a missing value at row {row}")
    notes: list[str] = []
    if time_col is not None:
        order, notes = _time_order(df, path, time_col, window_col or group_col)
        df = df.iloc[order].reset_index(drop=True)
    values = df[channels].to_numpy(dtype=np.float64)  # (rows, channels)
    task, y, more = settle_task(_label_array(df[label]), f"'{path}': column '{label}'", task)
    notes += more
    group = _label_array(df[group_col]) if group_col is not None else None
    named = {"channels": list(channels), "notes": notes, "name": path.stem}

    if window_col is not None:
        codes, ids = pd.factorize(df[window_col], sort=False)
        lengths = np.bincount(codes)
        if len(set(lengths.tolist())) != 1:
            short = int(np.argmin(lengths))
            raise UserInputError(
                f"'{path}': column '{window_col}': every window needs the same number of rows, but window "
                f"{_plain(ids[short])!r} has {lengths[short]} and others up to {lengths.max()}"
            )
        order = np.argsort(codes, kind="stable")  # window by window, rows in file (or time) order
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
        return RawData(x=np.ascontiguousarray(x), y=wy, task=task, group=wg, **named), False  # type: ignore

    if length is None:
        raise UserInputError(
            f"'{path}': no 'window' column; add one (rows with the same id form one window; data.columns.window "
            f"names another) or set data.window.length to cut windows from each group's contiguous rows"
        )
    # Each contiguous run of one group value is one recording; windows never cross a recording boundary.
    run_key = group if group is not None else np.zeros(len(df), dtype=np.int64)
    breaks = np.flatnonzero(run_key[1:] != run_key[:-1]) + 1
    bounds = np.concatenate([[0], breaks, [len(df)]])
    runs = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= length]
    check_window_memory(sum(len(window_starts(b - a, length, stride)) for a, b in runs), len(channels), length, stride)
    xs, ys, gs = [], [], []
    for a, b in runs:
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
        group=np.concatenate(gs) if gs else None, **named,  # type: ignore[arg-type]
    )
    return raw, True


def load_csv(path: str | Path, length: Optional[int] = None, stride: Optional[int] = None,
             columns: Optional["CsvColumns"] = None, task: Optional[str] = None) -> RawData:
    """Load a long-format CSV (header row; one row per time step) into windows.

    Columns (``data.columns``; without it the legacy names): ``label`` (default ``y``; label or float target per
    row), ``group`` (subject id; legacy: a column named ``group``), ``window`` (window id; legacy: ``window``),
    ``time`` (rows are ordered by it within each window/group; never a channel), ``channels`` (default: every
    other column, refused when one looks like an id, a label or a clock). With a window column, rows sharing
    an id form one window in file order: a window is (length, channels) in the file and (channels, length)
    here; all windows need the same length; the window's label is its majority label (mean for regression).
    Without one, ``length`` (``data.window.length``) is required: each contiguous run of one group value
    (or the whole file) is a recording, cut into windows of ``length`` every ``stride`` rows (default: no
    overlap), labelled the same way. Recordings shorter than ``length`` are skipped.
    """
    return load_csv_windows(path, length, stride, columns, task)[0]
