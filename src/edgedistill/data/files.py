"""The user's own data as ``.npz`` arrays (a long-format ``.csv`` is ``data.csv_file``'s).

Files are read without unpickling (``allow_pickle=False``): a data file can never execute code. Every
problem is a ``UserInputError`` naming the file, the array or column, and what was expected, so a user
can fix the file without reading a traceback. What y means (class labels or regression targets) is settled
here, once: ``data.task`` when given, else the dtype, and an ambiguous y (floats that are all whole numbers,
one-hot rows) is refused rather than guessed (docs/data.md, "What is refused").
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from edgedistill.data.raw import RawData, settle_task
from edgedistill.data.windowing import memory_bytes
from edgedistill.errors import UserInputError
from edgedistill.paths import regular_file

_RESERVED = {"x", "y", "group", "test_x", "test_y", "test_group", "task"}
_TASKS = ("classification", "regression")


def check_file(path: Path) -> Path:
    return regular_file(path, "data file")


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
    path = check_file(Path(path))
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
