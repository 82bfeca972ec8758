"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never half. A write the
machine refuses (read-only folder, full disk, no permission) is an ``EnvironmentProblem`` (exit code 4) naming the
file, with the temporary file removed; any other failure propagates unchanged.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from edgedistill.errors import EnvironmentProblem

#: errno values that mean "the machine will not take this write", with what to do about each.
_ENVIRONMENT = {
    errno.EROFS: "the file system is read-only; choose a writable folder (--out, cache_dir or $EDGEDISTILL_CACHE)",
    errno.EACCES: "no permission to write there; choose a writable folder (--out, cache_dir or $EDGEDISTILL_CACHE)",
    errno.EPERM: "no permission to write there; choose a writable folder (--out, cache_dir or $EDGEDISTILL_CACHE)",
    errno.ENOSPC: "the disk is full; free space and run the same command again (finished work is kept)",
    errno.EDQUOT: "the disk quota is exhausted; free space and run the same command again (finished work is kept)",
}


def environment_error(exc: OSError, path: Path, doing: str = "write") -> EnvironmentProblem | OSError:
    """``exc`` as an ``EnvironmentProblem`` when it is the machine refusing ``doing`` at ``path``, else ``exc``."""
    hint = _ENVIRONMENT.get(exc.errno or 0)
    if hint is None:
        return exc
    return EnvironmentProblem(f"cannot {doing} '{path}': {exc.strerror or exc}; {hint}")


def make_dirs(path: Path) -> Path:
    """``mkdir -p`` that reports a read-only or full disk as an ``EnvironmentProblem``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise environment_error(exc, path, "create the folder") from None
    return path


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise environment_error(exc, path) from None
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, EnvironmentProblem):
            raise environment_error(exc, path) from None
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)
