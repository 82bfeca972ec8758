"""The user's own long-format ``.csv`` (one row per time step) cut into windows, with ``data.columns`` saying which
column is the label, the subject, the window id, the clock and the channels.

Every problem is a ``UserInputError`` naming the file and the column. Without ``data.columns.channels``, a column
that looks like a role, an index or a clock never silently becomes a channel: it is refused with the list of
columns (docs/data.md, "What is refused").
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from edgedistill.data.files import check_file
from edgedistill.data.raw import RawData, settle_task
from edgedistill.data.windowing import check_window_memory, majority_vote, window_starts, window_targets
from edgedistill.errors import UserInputError

if TYPE_CHECKING:
    from edgedistill.config import CsvColumns


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

    path = check_file(Path(path))
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
