"""Parsing an archive's numeric text files, in parallel processes when they are large.

Kept free of torch (and of everything that imports it), so a spawned worker starts in a fraction of a second:
a full-size PAMAP2 is 1.7 GiB of text whose parsing is almost all of a first preparation, and two processes
parse it in about half the time on two cores (one thread each: parallelism from processes, not threads).
"""
from __future__ import annotations

from collections import deque
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from edgedistill.errors import UserInputError
from edgedistill.machine import available_cores

#: Told of every file a loader starts parsing: ``edgedistill data prepare`` prints a line per file of a long
#: preparation. A context variable, so a loader needs no progress argument.
ON_FILE: ContextVar[Optional[Callable[[Path], None]]] = ContextVar("edgedistill_archive_on_file", default=None)


def announce(path: Path) -> None:
    """Tell ``ON_FILE`` (if anyone listens) that ``path`` is about to be read: every loader calls it per data file."""
    tell = ON_FILE.get()
    if tell is not None:
        tell(Path(path))


#: Below this many bytes in all, files are parsed in this process: starting workers would cost more than it saves.
PARALLEL_BYTES = 64 << 20


def parse(path: Path, archive: str, delimiter: Optional[str] = None, columns: Optional[int] = None,
          skip_rows: int = 0, usecols: Optional[tuple[int, ...]] = None) -> np.ndarray:
    """A whitespace/``delimiter``-separated numeric text file as float64 (2-D), 'NaN' read as NaN; a row with the
    wrong number of columns or a non-number is refused naming the file and the line."""
    if not Path(path).exists():
        raise UserInputError(f"dataset '{archive}': the file '{path}' is missing (is the archive unpacked whole?)")
    try:
        out = np.loadtxt(path, delimiter=delimiter, skiprows=skip_rows, usecols=usecols, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise UserInputError(f"dataset '{archive}': '{path}' is not a numeric table as the archive writes it ({exc})") from None
    if columns is not None and out.shape[1] != columns:
        raise UserInputError(f"dataset '{archive}': '{path}' has {out.shape[1]} columns; the archive's format has {columns}")
    return out


def _workers(paths: Sequence[Path]) -> int:
    size = sum(Path(p).stat().st_size for p in paths if Path(p).exists())
    return 1 if size < PARALLEL_BYTES or len(paths) < 2 else min(available_cores(), len(paths))


def read_tables(paths: Sequence[Path], archive: str, **options: Any) -> Iterator[np.ndarray]:
    """``parse`` of every path, in order. Large files go to up to one spawned process per core, with at most one
    table per worker parsed ahead of the caller, so memory holds a few tables, never the whole archive."""
    workers = _workers(paths)
    if workers == 1:
        for p in paths:
            announce(p)
            yield parse(p, archive, **options)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        ahead: deque = deque()
        queue = list(paths)
        while queue or ahead:
            while queue and len(ahead) < workers:
                p = queue.pop(0)
                ahead.append((p, pool.submit(parse, p, archive, **options)))
            p, future = ahead.popleft()
            announce(p)
            yield future.result()  # a worker's UserInputError comes back as itself
