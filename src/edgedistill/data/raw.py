"""The contract between a dataset loader and the preparation pipeline, and the checks every loader's output passes.

A loader registered in ``DATASETS`` returns a ``RawData``: numpy arrays exactly as the source gives them
(labels may be strings), with an official test split where the source has one. Everything else
(windowing, label encoding, splits, normalisation, tensors) happens once, in ``prepare.py``.

``check_raw`` refuses data that would train but mean nothing (docs/data.md, "What is refused"): every refusal is a
``UserInputError`` naming the source, the array and what to do, raised before any run folder exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from edgedistill.data.dataset import Task
from edgedistill.errors import UserInputError

#: The largest magnitude accepted in an input array or a regression target. Beyond it a value is almost surely a
#: unit or encoding error (epoch milliseconds are ~1.7e12, a missing-value code like 1e20): float32, what the models
#: compute in, keeps only ~7 significant digits (a step of ~1e5 at 1e12), and unnormalised (data.normalize: none)
#: squares of such values in a loss approach float32's 3.4e38 ceiling. Physical sensor readings stay far below it.
MAX_ABS = 1e12

#: Channels-last is suspected when x is (n, a, b) with b <= this and a >= CHANNELS_LAST_RATIO * b: a few "time
#: steps" and many "channels" (e.g. (n, 128, 3)). Square-ish shapes such as (n, 12, 25) or (n, 30, 12) pass.
CHANNELS_LAST_MAX = 12
CHANNELS_LAST_RATIO = 8
#: Float targets with at most this many distinct values (and at least 5 samples per value) look like class ids.
_FEW = 10


@dataclass
class RawData:
    x: np.ndarray  # (n, channels, length) or (n, channels, h, w), float
    y: np.ndarray  # (n,) labels of any hashable type, or (n,) / (n, k) float regression targets
    task: Task
    group: Optional[np.ndarray] = None  # (n,) subject ids (any hashable type)
    views: dict[str, np.ndarray] = field(default_factory=dict)  # privileged views, first dim n
    test_x: Optional[np.ndarray] = None  # official test split, if the source has one
    test_y: Optional[np.ndarray] = None
    test_group: Optional[np.ndarray] = None
    test_views: dict[str, np.ndarray] = field(default_factory=dict)
    # Views kept exactly as given through the split: not normalised, cast to float32. A teacher's recorded outputs
    # (experiment.teacher_outputs) are one: logits mean what they say in their own units (a per-class z-score of
    # logits would change the teacher's soft targets), and regression outputs are rescaled like y by the teacher.
    raw_views: frozenset[str] = frozenset()
    classes: Optional[list[str]] = None  # label order; default: sorted unique labels
    name: str = "data"
    channels: Optional[list[str]] = None  # one name per channel of x (a CSV's column names); None: unnamed
    notes: list[str] = field(default_factory=list)  # what the loader inferred or changed, for the run's report

    @property
    def n_outputs(self) -> int:
        """What a model must output for this data, as ``prepare`` counts it: the loader's classes, else the distinct
        training labels (a test label outside them is refused there), or the regression targets per sample."""
        if self.task == "regression":
            y = np.asarray(self.y)
            return int(y.reshape(len(y), -1).shape[1])
        return len(self.classes) if self.classes else len({str(v) for v in np.asarray(self.y).reshape(-1)})


#: Elements per chunk of ``check_values``: its masks never hold more than this, so checking memory-mapped windows
#: larger than memory (data/mapped.py) costs tens of MB, not a boolean copy of the array.
CHECK_CHUNK = 1 << 24


def _scan(arr: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> tuple[int, Optional[tuple[int, ...]]]:
    """(how many elements ``test`` flags, the index of the first), a chunk of rows at a time."""
    step = max(1, CHECK_CHUNK // max(1, arr.size // max(1, len(arr)))) if arr.ndim else 1
    count, first = 0, None
    for start in range(0, len(arr), step) if arr.ndim else (None,):
        chunk = arr if start is None else arr[start:start + step]
        mask = test(chunk)
        n = int(mask.sum())
        if n and first is None:
            at = [int(i) for i in np.argwhere(mask)[0]]
            first = tuple([at[0] + (start or 0), *at[1:]]) if at else ()
        count += n
    return count, first


def check_values(name: str, arr: np.ndarray, source: str, bounded: bool) -> None:
    """Finite (NaN/inf refused) and, where ``bounded``, no magnitude above ``MAX_ABS``."""
    kind = arr.dtype.kind
    if kind in "fc":
        n, first = _scan(arr, lambda a: ~np.isfinite(a))
        if n:
            raise UserInputError(f"{source}: array '{name}' has {n} non-finite value(s) (NaN/inf); first at index {first}")
    # Only dtypes that can hold such values are scanned (not float16, int32 or narrower).
    limit = float(np.finfo(arr.dtype).max) if kind in "fc" else float(np.iinfo(arr.dtype).max) if kind in "iu" else 0
    if not bounded or not arr.size or limit <= MAX_ABS:
        return
    n, first = _scan(arr, lambda a: np.abs(a.astype(np.float64) if kind in "iu" else a) > MAX_ABS)
    if n:
        raise UserInputError(
            f"{source}: array '{name}' has {n} value(s) above {MAX_ABS:.0e} in magnitude (first "
            f"{float(np.abs(arr[first])):.4g} at index {first}); such values are unit or encoding errors "
            f"(a timestamp, a missing-value code): rescale or remove them"
        )


def _check_x_shape(x: np.ndarray, source: str) -> None:
    """Non-empty, channels first, at least two steps along every axis after the channels."""
    if len(x) == 0:
        raise UserInputError(f"{source}: array 'x' has 0 samples (shape {x.shape}); the data set is empty")
    if 0 in x.shape[1:]:
        raise UserInputError(f"{source}: array 'x' has shape {x.shape}: zero channels or zero length per sample")
    if x.ndim == 3 and x.shape[2] <= CHANNELS_LAST_MAX and x.shape[1] >= CHANNELS_LAST_RATIO * x.shape[2]:
        n, a, b = x.shape
        raise UserInputError(
            f"{source}: array 'x' has shape {x.shape}, read as {a} channels of length {b}; it looks channels-last "
            f"({a} time steps of {b} channels): save np.transpose(x, (0, 2, 1)) (shape ({n}, {b}, {a})); "
            f"x must be (n, channels, length)"
        )
    if x.ndim == 4 and x.shape[3] <= 4 and min(x.shape[1], x.shape[2]) >= 8:
        n, h, w, c = x.shape
        raise UserInputError(
            f"{source}: array 'x' has shape {x.shape}, read as {h} channels of {w}x{c} images; it looks "
            f"channels-last ({h}x{w} images of {c} channels): save np.transpose(x, (0, 3, 1, 2)) "
            f"(shape ({n}, {c}, {h}, {w})); x must be (n, channels, h, w)"
        )
    if min(x.shape[2:]) < 2:
        raise UserInputError(
            f"{source}: array 'x' has shape {x.shape}: a sample needs at least 2 steps along every axis after the "
            f"channels; a table of features (n, k) is given as (n, 1, k)"
        )


def _check_labels(raw: RawData, source: str) -> None:
    """More than one class; regression targets that vary."""
    y = np.asarray(raw.y)
    if raw.task == "classification":
        distinct = np.unique(y.astype(str)) if y.ndim == 1 else np.unique(y)
        if len(distinct) < 2:
            raise UserInputError(
                f"{source}: array 'y' has one class only ({str(distinct[0])!r} for all {len(y)} samples); "
                f"a classifier needs at least 2 classes"
            )
        return
    if y.dtype.kind not in "iuf":
        return  # non-numeric targets: prepare names them with what is expected
    # The whole array, not per column: a (n, T) per-timestep target may legitimately start at 0 in every recording.
    if len(y) and y.min() == y.max():
        raise UserInputError(
            f"{source}: array 'y': every regression target is {float(y.flat[0]):.6g}; nothing to learn: check "
            f"the label column"
        )


def check_raw(raw: RawData, source: str) -> None:
    """Refuse ``raw`` if it cannot be trained on meaningfully: wrong rank or dtype, empty, NaN/inf, values above
    ``MAX_ABS``, mismatched lengths, channels-last, fewer than 2 steps, an all-constant x, one class only, a
    constant regression target. The official test split (``test_*``) is checked the same way."""
    x = np.asarray(raw.x)
    if x.ndim not in (3, 4):
        raise UserInputError(f"{source}: x must be (n, channels, length) or (n, channels, h, w), got shape {x.shape}")
    arrays: dict[str, Optional[np.ndarray]] = {"x": raw.x, "y": raw.y, "test_x": raw.test_x, "test_y": raw.test_y}
    arrays.update(raw.views)
    arrays.update({f"test_{k}": v for k, v in raw.test_views.items()})
    for name, arr in arrays.items():
        if arr is None:
            continue
        a = np.asarray(arr)
        is_label = name in ("y", "test_y")
        if not is_label and a.dtype.kind not in "iufb":
            raise UserInputError(f"{source}: array '{name}' must be numeric, got dtype {a.dtype}")
        check_values(name, a, source, bounded=not is_label or raw.task == "regression")
    for name, g in (("group", raw.group), ("test_group", raw.test_group)):
        if g is not None and np.asarray(g).dtype.kind == "f" and not np.isfinite(np.asarray(g)).all():
            raise UserInputError(f"{source}: array '{name}' (subject ids) has missing or non-finite values")
    for prefix, xx, yy, gg, vv in (
        ("", raw.x, raw.y, raw.group, raw.views),
        ("test_", raw.test_x, raw.test_y, raw.test_group, raw.test_views),
    ):
        if xx is None:
            continue
        n = len(xx)
        if np.asarray(xx).shape[1:] != x.shape[1:]:
            raise UserInputError(
                f"{source}: array '{prefix}x' has per-sample shape {np.asarray(xx).shape[1:]}, 'x' has {x.shape[1:]}"
            )
        if prefix and n == 0:
            raise UserInputError(f"{source}: array 'test_x' has 0 samples; remove test_x/test_y or give test samples")
        for name, arr in {"y": yy, "group": gg, **vv}.items():
            if arr is not None and (np.ndim(arr) == 0 or len(arr) != n):
                rows = "a scalar" if np.ndim(arr) == 0 else f"{len(arr)} rows"
                raise UserInputError(f"{source}: array '{prefix}{name}' has {rows} but '{prefix}x' has {n}")
    _check_x_shape(x, source)
    if x.min() == x.max():
        raise UserInputError(
            f"{source}: array 'x' is constant (every value is {float(x.flat[0]):.6g}); there is nothing to learn from"
        )
    _check_labels(raw, source)


def _one_hot(y: np.ndarray, steps: Optional[int]) -> bool:
    """(n, k >= 2) of 0/1 with exactly one 1 per row; not a (n, T) per-timestep label array (``steps`` = T)."""
    if y.ndim != 2 or y.shape[1] < 2 or y.shape[1] == steps or len(y) == 0 or y.dtype.kind not in "biuf":
        return False
    return bool(np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all())


def settle_task(y: np.ndarray, where: str, given: Optional[str] = None,
                steps: Optional[int] = None) -> tuple[str, np.ndarray, list[str]]:
    """(task, y as the pipeline reads it, notes). ``given`` (data.task or the file's own 'task') decides when set;
    otherwise integer/bool/string labels mean classification and floats regression, and the two ambiguous cases
    are refused: one-hot rows and floats that are all whole numbers (class ids saved as float, or targets?)."""
    y = np.asarray(y)
    kind = y.dtype.kind
    if kind not in "iubUSf":
        raise UserInputError(f"{where}: expected integer/string class labels or float targets, got dtype {y.dtype}")
    one_hot = _one_hot(y, steps)
    finite = kind != "f" or bool(np.isfinite(y).all())  # NaN/inf are refused by check_raw, naming the array
    whole = kind != "f" or (finite and bool((y == np.round(y)).all()))
    if given == "classification":
        if one_hot:
            return "classification", y.argmax(axis=1), [
                f"{where}: one-hot rows ({y.shape[1]} columns) read as class ids 0..{y.shape[1] - 1} (argmax)"]
        if kind == "f" and whole:
            return "classification", y.astype(np.int64), []  # class "1", not "1.0"
        return "classification", y, []
    if given == "regression":
        return "regression", y, []
    if one_hot:
        raise UserInputError(
            f"{where} looks one-hot (shape {y.shape}, one 1 per row): set data.task: classification to read it as "
            f"class ids (argmax), or data.task: regression for {y.shape[1]} targets (or save y.argmax(axis=1))"
        )
    distinct = np.unique(y) if kind == "f" and finite else np.empty(0)
    if kind == "f" and finite and (whole or len(distinct) <= min(_FEW, y.size // 5)):
        k = len(distinct)
        shown = ", ".join(f"{v:g}" for v in distinct[:5]) + (", ..." if k > 5 else "")
        what = "only whole-number values" if whole else "only a few distinct values"
        raise UserInputError(
            f"{where} is float with {what} ({k} distinct: {shown}): class ids or numbers to predict? set "
            f"data.task: classification or data.task: regression"
        )
    if kind == "f":
        return "regression", y, [f"{where}: float values read as regression targets (set data.task to choose)"]
    k, what = len(np.unique(y)), {"b": "bool", "U": "string", "S": "string"}.get(kind, "integer")
    return "classification", y, [
        f"{where}: {what} labels read as {k} classes (set data.task: regression if they are numbers to predict)"]
