"""Cutting long recordings into fixed-length windows.

Wearable data arrives as long recordings; models see fixed windows. The default stride equals the window
length (no overlap) because overlapping windows that land on both sides of a random split share samples,
which inflates test scores; ask for overlap explicitly (``data.window.stride``) when splitting by subject.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Optional

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError


def window_starts(total: int, length: int, stride: Optional[int] = None) -> np.ndarray:
    """Start positions of every full window of ``length`` in a recording of ``total`` steps."""
    stride = length if stride is None else stride
    if length < 1 or stride < 1:
        raise UserInputError(f"data.window: length and stride must be positive, got length={length} stride={stride}")
    if length > total:
        raise UserInputError(
            f"data.window.length: {length} is longer than the recording ({total} steps); "
            f"use a window length <= {total}"
        )
    return np.arange(0, total - length + 1, stride)


def memory_bytes() -> int:
    """This machine's physical memory in bytes (0 where unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: no bound
        return 0


def check_window_memory(n_windows: int, channels: int, length: int, stride: Optional[int]) -> None:
    """Refuse a window/stride that would cut more float64 windows than this machine's memory can prepare.

    Preparation holds about four copies (windows, the split parts, normalised float32, tensors); a small stride on a
    long recording multiplies the data by length/stride, which otherwise ends in swapping or the OOM killer."""
    need = 4 * 8 * n_windows * channels * length
    mem = memory_bytes()
    if mem and need > mem:
        raise UserInputError(
            f"data.window: length {length} with stride {stride or length} cuts {n_windows} windows of {channels} "
            f"channel(s), about {need / 2**30:.1f} GiB to prepare, more than this machine's {mem / 2**30:.1f} GiB; "
            f"use a larger data.window.stride or a shorter recording"
        )


def sliding_windows(x: np.ndarray, length: int, stride: Optional[int] = None) -> np.ndarray:
    """Cut a (channels, T) recording into (n_windows, channels, length) windows (a copy, not a view)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise UserInputError(f"sliding_windows: expected a (channels, T) recording, got shape {tuple(x.shape)}")
    starts = window_starts(x.shape[1], length, stride)
    view = sliding_window_view(x, length, axis=1)  # (channels, T - length + 1, length)
    return np.ascontiguousarray(view[:, starts, :].transpose(1, 0, 2))


def majority_vote(labels: np.ndarray) -> np.ndarray:
    """Most frequent label in each row of a (n_windows, length) label array; ties go to the smallest label."""
    classes, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(labels.shape)
    counts = np.stack([(codes == c).sum(axis=1) for c in range(len(classes))], axis=1)
    return classes[np.argmax(counts, axis=1)]


def window_targets(y: np.ndarray, starts: np.ndarray, length: int, task: str) -> np.ndarray:
    """One target per window from per-timestep targets ``y`` of shape (T,) or (T, k).

    Classification takes the majority label in the window (a window that straddles an activity change gets
    the activity it mostly shows); regression takes the window mean.
    """
    y = np.asarray(y)
    idx = starts[:, None] + np.arange(length)[None, :]  # (n_windows, length)
    if task == "classification":
        if y.ndim != 1:
            raise UserInputError(f"windowing: per-timestep class labels must be 1-D, got shape {tuple(y.shape)}")
        return majority_vote(y[idx])
    return y[idx].astype(np.float64).mean(axis=1)


def _cut(a: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """(n, c, T) -> (n * len(starts), c, length), recording by recording, windows in time order."""
    w = sliding_window_view(a, length, axis=2)[:, :, starts, :]  # (n, c, n_windows, length)
    return np.ascontiguousarray(w.transpose(0, 2, 1, 3).reshape(-1, a.shape[1], length))


def _window_split(
    x: np.ndarray,
    y: np.ndarray,
    group: Optional[np.ndarray],
    views: dict[str, np.ndarray],
    task: str,
    length: int,
    stride: Optional[int],
) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray], dict[str, np.ndarray]]:
    if x.ndim != 3:
        raise UserInputError(
            f"data.window: windowing needs 1-D recordings x of shape (n, channels, length), got {tuple(x.shape)}"
        )
    n, _, total = x.shape
    starts = window_starts(total, length, stride)
    # Per-timestep targets are (n, T) (or (n, T, k) for regression); anything else is one target per recording.
    # (A regression y of shape (n, k) with k == T is read as per-timestep.)
    per_step = y.ndim >= 2 and y.shape[1] == total
    nw = len(starts)
    check_window_memory(n * nw, x.shape[1], length, stride)
    wx = _cut(x, starts, length)
    if per_step:
        wy = np.concatenate([window_targets(y[i], starts, length, task) for i in range(n)])
    else:
        wy = np.repeat(y, nw, axis=0)
    wg = None if group is None else np.repeat(group, nw, axis=0)
    wviews: dict[str, np.ndarray] = {}
    for name, v in views.items():
        if v.ndim == 3 and v.shape[2] == total:  # a time-aligned side signal: window it alongside x
            wviews[name] = _cut(v, starts, length)
        else:  # per-recording side information: every window of the recording gets a copy
            wviews[name] = np.repeat(v, nw, axis=0)
    return np.ascontiguousarray(wx), wy, wg, wviews


def window_raw(raw: RawData, length: int, stride: Optional[int] = None) -> RawData:
    """Cut every recording in ``raw`` (x of shape (n, channels, T)) into windows, test split included.

    ``y`` is either one target per recording (copied to its windows) or per-timestep, shape (n, T), in which
    case each window gets its majority label (classification) or mean (regression). Subject ids are carried
    to every window; time-aligned privileged views (n, c, T) are windowed alongside x.
    """
    x, y, g, v = _window_split(np.asarray(raw.x), np.asarray(raw.y), raw.group, raw.views, raw.task, length, stride)
    out = replace(raw, x=x, y=y, group=g, views=v)
    if raw.test_x is not None and raw.test_y is not None:
        tx, ty, tg, tv = _window_split(
            np.asarray(raw.test_x), np.asarray(raw.test_y), raw.test_group, raw.test_views, raw.task, length, stride
        )
        out = replace(out, test_x=tx, test_y=ty, test_group=tg, test_views=tv)
    return out
