"""Splits of a data set larger than memory: rows read from memory-mapped windows when a batch asks for them.

An archive's prepared windows are ``.npy`` files that ``data/archives/registered.py`` opens memory-mapped. With
``data.storage: mapped`` (or ``auto`` when the windows would take more than a quarter of the available memory),
``prepare.split_windows`` keeps every split as row numbers into those files (``MappedRows``) instead of copying it
into tensors: normalisation statistics are computed in chunks, and a batch reads and normalises only its own rows.
The values are exactly those of the in-memory path (the same float64 arithmetic, row by row), so a run gives the same
numbers either way (tests/test_mapped.py). What needs a whole split at once (``TensorData.x``: some methods,
export's verification, classical baselines) still loads that split.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from edgedistill.data.normalize import STD_FLOOR, Normalizer, check_normalized
from edgedistill.errors import UserInputError

#: Rows per chunk of a pass over a split (statistics, checks, a whole-split load): ~16 MB of float64 at a time (a pass
#: holds a few such temporaries: the chunk, its deviations, their squares).
CHUNK_BYTES = 16 << 20
#: ``data.storage: auto`` maps a data set whose windows would take more than this fraction of the available memory.
AUTO_FRACTION = 0.25


class OnDisk:
    """Rows of one or more arrays (an archive's training and official test windows pooled), optionally a subset of
    their channels (``data.views``), read only when indexed."""

    def __init__(self, parts: Sequence[np.ndarray], channels: Optional[Sequence[int]] = None) -> None:
        self.parts = list(parts)
        self.channels = None if channels is None else np.asarray(channels, dtype=np.int64)
        self._ends = np.cumsum([len(p) for p in self.parts])
        per_sample = self.parts[0].shape[1:]
        if self.channels is not None:
            per_sample = (len(self.channels), *per_sample[1:])
        self.shape = (int(self._ends[-1]), *per_sample)
        self.dtype = self.parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(self.parts) == 1:
            out = np.asarray(self.parts[0][rows])
        else:
            out = np.empty((len(rows), *self.parts[0].shape[1:]), dtype=self.dtype)
            which = np.searchsorted(self._ends, rows, side="right")
            for k, part in enumerate(self.parts):
                hit = which == k
                if hit.any():
                    out[hit] = part[rows[hit] - (self._ends[k] - len(part))]
        return out if self.channels is None else out[:, self.channels]

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:  # whole, for code that needs it all
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


def on_disk(a: object) -> bool:
    return isinstance(a, (np.memmap, OnDisk))


def pick_channels(a: np.ndarray | OnDisk, channels: Sequence[int]) -> np.ndarray | OnDisk:
    """``a[:, channels]``: a copy in memory, or for windows on disk a view that reads them later."""
    if on_disk(a):
        base = a if isinstance(a, OnDisk) else OnDisk([a])
        chans = list(channels) if base.channels is None else base.channels[list(channels)].tolist()
        return OnDisk(base.parts, chans)
    return np.ascontiguousarray(np.asarray(a)[:, list(channels)])


def pooled(a: np.ndarray | OnDisk, b: np.ndarray | OnDisk) -> np.ndarray | OnDisk:
    """The rows of ``a`` then those of ``b`` (an official test split pooled with training), without reading them
    when they are on disk."""
    if not (on_disk(a) or on_disk(b)):
        return np.concatenate([a, b])
    parts, chans = [], []
    for x in (a, b):
        base = x if isinstance(x, OnDisk) else OnDisk([x])
        parts += base.parts
        chans.append(None if base.channels is None else base.channels.tolist())
    if chans[0] != chans[1]:
        return np.concatenate([np.asarray(a), np.asarray(b)])
    return OnDisk(parts, chans[0])


def mapped_storage(storage: str, x: object, n_views: int, key: str = "data.storage") -> bool:
    """Whether to keep the splits on disk: ``mapped`` (refused when the windows are not on disk), ``memory``, or
    ``auto``: on disk and larger than ``AUTO_FRACTION`` of the available memory once normalised to float32."""
    if storage == "memory":
        return False
    if not on_disk(x):
        if storage == "mapped":
            raise UserInputError(
                f"{key}: 'mapped' reads windows from files on disk, which only a public archive's prepared windows "
                f"are (data.name from `edgedistill data list`); this data was loaded into memory: use 'auto' or 'memory'"
            )
        return False
    if storage == "mapped":
        return True
    need = 4 * int(np.prod(x.shape)) * max(1, n_views)  # type: ignore[attr-defined]
    return need > AUTO_FRACTION * available_memory()


def available_memory() -> int:
    """MemAvailable of /proc/meminfo in bytes (Linux); elsewhere physical memory from sysconf, else 8 GiB."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


class MappedRows:
    """Rows ``rows`` of ``source`` (an on-disk array), normalised with ``norm`` (or cast to float32 when None) as
    they are read. ``rows_of(index)`` is another ``MappedRows`` (a subset: nothing read); indexing with a tensor of
    positions returns that batch as a float32 tensor."""

    def __init__(self, source: np.ndarray | OnDisk, rows: np.ndarray, norm: Optional[Normalizer] = None) -> None:
        self.source, self.rows, self.norm = source, np.asarray(rows, dtype=np.int64), norm
        self.shape = torch.Size((len(self.rows), *source.shape[1:]))

    def __len__(self) -> int:
        return len(self.rows)

    def normalized(self, norm: Optional[Normalizer]) -> "MappedRows":
        return MappedRows(self.source, self.rows, norm)

    def rows_of(self, index: torch.Tensor | np.ndarray | list[int]) -> "MappedRows":
        return MappedRows(self.source, self.rows[np.asarray(index, dtype=np.int64)], self.norm)

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (of this view) as float32, normalised. The file is read in ascending row order (one
        sweep over the pages) and the rows put back in the order asked."""
        wanted = self.rows[positions]
        order = np.argsort(wanted, kind="stable")
        values = np.empty((len(wanted), *self.shape[1:]), dtype=np.float32)
        values[order] = self._normalize(self.source[wanted[order]])
        return values

    def _normalize(self, raw: np.ndarray) -> np.ndarray:
        return self.norm.apply(raw) if self.norm is not None else np.ascontiguousarray(raw, dtype=np.float32)

    def __getitem__(self, index: torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        positions = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        return torch.from_numpy(self.read(positions))

    def chunks(self) -> Iterator[np.ndarray]:
        """The raw (not normalised) rows in order, a chunk at a time."""
        per_row = max(1, int(np.prod(self.shape[1:])) * 8)
        step = max(1, CHUNK_BYTES // per_row)
        for start in range(0, len(self), step):
            rows = self.rows[start:start + step]
            order = np.argsort(rows, kind="stable")
            out = np.empty((len(rows), *self.shape[1:]), dtype=self.source.dtype)
            out[order] = self.source[rows[order]]
            yield out

    def load(self) -> torch.Tensor:
        """The whole split in memory (what ``TensorData.x`` gives code that needs every row at once)."""
        out = torch.empty(tuple(self.shape), dtype=torch.float32)
        start = 0
        for chunk in self.chunks():
            out[start:start + len(chunk)] = torch.from_numpy(self._normalize(chunk))
            start += len(chunk)
        return out

    def check(self, view: str, part: str, source: str) -> None:
        """``check_normalized`` over every row, a chunk at a time."""
        if self.norm is not None:
            for chunk in self.chunks():
                check_normalized(self.norm.apply(chunk), self.norm, view, part, source)


def fit_rows(rows: MappedRows, mode: str) -> Normalizer:
    """``normalize.fit_normalizer`` of the rows, in two chunked passes (mean, then the mean squared deviation) in
    float64: the same statistics to rounding, without the split in memory."""
    if mode not in ("per_channel", "global", "none"):
        raise UserInputError(f"data.normalize: expected one of per_channel, global, none; got {mode!r}")
    if mode == "none":
        return Normalizer("none")
    if len(rows) == 0:
        raise UserInputError("normalizer: cannot fit on an empty training split")
    per_channel = mode == "per_channel" and len(rows.shape) > 1
    axes = lambda a: tuple(i for i in range(a.ndim) if i != 1) if per_channel else None  # noqa: E731
    count, total = 0, 0.0
    for chunk in rows.chunks():
        c = chunk.astype(np.float64)
        total = total + c.sum(axis=axes(c))
        count += c.size // (c.shape[1] if per_channel else 1)
    mean = np.atleast_1d(total / count)
    shape = (1, len(mean)) + (1,) * (len(rows.shape) - 2) if per_channel else (1,)
    squares = 0.0
    for chunk in rows.chunks():
        d = chunk.astype(np.float64) - mean.reshape(shape)
        squares = squares + (d * d).sum(axis=axes(d))
    std = np.maximum(np.sqrt(np.atleast_1d(squares / count)), STD_FLOOR)
    return Normalizer("per_channel" if per_channel else "global", [float(v) for v in mean], [float(v) for v in std])
