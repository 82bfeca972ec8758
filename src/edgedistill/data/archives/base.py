"""What every public-archive loader shares: the archive's description, where its files are, and the stream helpers.

A loader reads an archive's own on-disk format from a local folder and returns ``RawData`` already cut into the
windows the literature's protocol uses (subject ids as ``group``, the official train/test split where one exists,
channel names, named channel views). It never downloads (``download.py`` does, on request) and never executes
code from a file. Every missing or unreadable file is a ``UserInputError`` that names the file and says where the
archive's files go (exit 2 on the command line).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgedistill.data.archives.text_tables import announce, parse
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError

#: Where archives live unless ``data.root`` says otherwise: $EDGEDISTILL_DATA, else ~/.cache/edgedistill/data.
DATA_ENV = "EDGEDISTILL_DATA"


@dataclass(frozen=True)
class Archive:
    """One public archive: how it is found, fetched and read."""

    name: str  # the registry name a recipe uses: data: {name: pamap2}
    folder: str  # the top folder exactly as the download unpacks, e.g. "PAMAP2_Dataset"
    files: tuple[str, ...]  # paths inside ``folder`` that must exist for the archive to count as present
    task: str  # "classification" | "regression"
    kind: str  # "1d" | "2d"
    doc: str  # one line for `edgedistill list datasets`: what it is, shapes, classes, subjects
    citation: str  # the paper or page that defines the archive and its protocol
    load: Callable[..., RawData]  # load(folder: Path, **protocol) -> RawData; protocol keys are data.params
    url: Optional[str] = None  # a stable download URL, when there is one
    sha256: Optional[str] = None  # of the downloaded file, when known
    download_name: Optional[str] = None  # the file the URL gives (a .zip or .tar.gz unpacked into the root)
    manual: str = ""  # where to get it by hand when there is no stable URL (or no network)
    extras: tuple[str, ...] = field(default_factory=tuple)  # optional packages the loader needs (e.g. "mne")
    # For an archive whose files depend on the protocol (one UCR/UEA problem of many): locate(archive folder,
    # protocol) -> the folder the loader will read, refused when absent; it is what the window cache fingerprints.
    locate: Optional[Callable[[Path, dict], Path]] = None


def data_root(root: Optional[str | Path] = None) -> Path:
    """``root`` (a recipe's ``data.root``), else $EDGEDISTILL_DATA, else ~/.cache/edgedistill/data (expanded)."""
    chosen = root if root is not None else os.environ.get(DATA_ENV) or Path.home() / ".cache" / "edgedistill" / "data"
    return Path(chosen).expanduser()


def find_folder(archive: Archive, root: Optional[str | Path] = None) -> Path:
    """The archive's top folder: ``<root>/<folder>``, or ``root`` itself when it is that folder (it holds the
    archive's files). Refused, naming both places and how to get the files, when neither holds them."""
    base = data_root(root)
    # With no files named, only '<root>/<folder>' counts: the root itself would always look present.
    for candidate in (base / archive.folder, base) if archive.files else (base / archive.folder,):
        if candidate.is_dir() and all((candidate / f).exists() for f in archive.files):
            return candidate
    how = f"download it with 'edgedistill data prepare {archive.name}'" if archive.url else archive.manual
    missing = next((f for f in archive.files if not (base / archive.folder / f).exists()), "")
    raise UserInputError(
        f"dataset '{archive.name}': not found under '{base}' (looked for '{base / archive.folder / missing}'); "
        f"{how}; put the unpacked folder '{archive.folder}' in '{base}' (or set data.root / ${DATA_ENV})"
    )


def require(path: Path, archive: str, what: str = "file") -> Path:
    """``path`` must exist: else a message naming the file and the archive."""
    if not path.exists():
        raise UserInputError(f"dataset '{archive}': the {what} '{path}' is missing (is the archive unpacked whole?)")
    return path


def read_numeric_table(path: Path, archive: str, delimiter: Optional[str] = None, columns: Optional[int] = None,
                       skip_rows: int = 0, usecols: Optional[tuple[int, ...]] = None) -> np.ndarray:
    """One numeric text file (``text_tables.parse``), announced to ``ON_FILE``; ``read_tables`` reads several,
    large ones in parallel processes."""
    announce(path)
    return parse(path, archive, delimiter=delimiter, columns=columns, skip_rows=skip_rows, usecols=usecols)


def check_protocol(rate: object, window: object, stride: object, native_hz: float) -> tuple[float, int, int]:
    """(rate, window, stride) of a stream archive's ``data.params``, checked: 0 < rate <= the recording's
    ``native_hz`` (resampling only goes down), window >= 2 steps, 1 <= stride <= window (no step skipped)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not np.isfinite(rate) or not 0 < rate <= native_hz:
        raise UserInputError(f"data.params.rate: expected a rate in (0, {native_hz:g}] Hz (the recording's; resampling "
                             f"only goes down), got {rate!r}")
    window, stride = checked_int("window", window, 2), checked_int("stride", stride, 1)
    if stride > window:
        raise UserInputError(f"data.params.stride: {stride} is above data.params.window ({window}); windows "
                             f"would skip samples")
    return float(rate), window, stride


def checked_int(key: str, value: object, lo: int) -> int:
    """``data.params.<key>`` as an integer >= ``lo`` (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise UserInputError(f"data.params.{key}: expected an integer >= {lo}, got {value!r}")
    return int(value)


def choices(key: str, value: object, allowed: Sequence, empty: bool = False) -> list:
    """``data.params.<key>``: one value or a list of distinct values among ``allowed`` (empty only if ``empty``)."""
    chosen = [value] if isinstance(value, (str, int)) else list(value)  # type: ignore[call-overload]
    bad = [v for v in chosen if isinstance(v, bool) or v not in allowed]
    if (not chosen and not empty) or bad or len(set(chosen)) != len(chosen):
        raise UserInputError(f"data.params.{key}: expected distinct values among {list(allowed)}, got {value!r}")
    return chosen


def stream_bounds(t: np.ndarray, max_step: float, path: Path, archive: str, column: str) -> list[tuple[int, int]]:
    """(start, end) row ranges of a recording whose time column ``t`` never jumps by more than ``max_step`` (a
    pause ends a stream, so no window spans it); a missing time value or time going back is refused, naming the
    file, the ``column`` and the row."""
    if not np.isfinite(t).all():
        raise UserInputError(f"dataset '{archive}': '{path}' has a missing time value ({column})")
    step = np.diff(t)
    if (step < 0).any():
        raise UserInputError(f"dataset '{archive}': '{path}': time ({column}) goes back at row "
                             f"{int(np.argmax(step < 0)) + 2}")
    cuts = np.flatnonzero(step > max_step) + 1
    bounds = [0, *cuts.tolist(), len(t)]
    return list(zip(bounds[:-1], bounds[1:]))


def resample(signal: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    """(T, C) -> (round(T * to_hz / from_hz), C) by linear interpolation in time (NaN-free input expected)."""
    if from_hz == to_hz:
        return signal
    n = int(round(len(signal) * to_hz / from_hz))
    t_old = np.arange(len(signal)) / from_hz
    t_new = np.arange(n) / to_hz
    return np.stack([np.interp(t_new, t_old, signal[:, c]) for c in range(signal.shape[1])], axis=1)


def fill_gaps(signal: np.ndarray) -> np.ndarray:
    """(T, C) with NaN (dropped packets, e.g. PAMAP2's heart rate and IMU gaps) linearly interpolated per channel;
    a channel with no finite value at all becomes zeros."""
    out = np.array(signal, dtype=np.float64, copy=True)
    idx = np.arange(len(out))
    for c in range(out.shape[1]):
        ok = np.isfinite(out[:, c])
        if ok.all():
            continue
        out[:, c] = np.interp(idx, idx[ok], out[ok, c]) if ok.any() else 0.0
    return out


def stream_windows(signal: np.ndarray, labels: np.ndarray, length: int, stride: int,
                   drop: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """Windows of a (T, C) stream with one label per step: (n, C, length) windows and their labels.

    A window lies inside one contiguous run of a single label (the usual HAR protocol: no window straddles two
    activities), starts every ``stride`` steps within its run, and labels in ``drop`` (e.g. PAMAP2's transient 0)
    are never windowed."""
    if signal.ndim != 2 or len(signal) != len(labels):
        raise ValueError(f"stream_windows: signal (T, C) and labels (T,) must match, got {signal.shape} and {labels.shape}")
    xs, ys = [], []
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(labels)]])
    for a, b in zip(bounds[:-1], bounds[1:]):
        label = labels[a]
        if label in drop or b - a < length:
            continue
        starts = np.arange(a, b - length + 1, stride)
        xs.append(np.stack([signal[s:s + length].T for s in starts]))
        ys.append(np.full(len(starts), label))
    if not xs:
        return np.empty((0, signal.shape[1], length), dtype=signal.dtype), np.empty(0, dtype=labels.dtype)
    return np.concatenate(xs), np.concatenate(ys)
