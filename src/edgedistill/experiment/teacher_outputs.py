"""A teacher given by its outputs on the data (``teacher: {outputs: PATH}``, docs/models.md).

The file is an ``.npz`` of what a teacher gave on every row of the user's data, in the order of ``x``: the only way
to distil a Keras/TensorFlow/JAX teacher, or one that only a GPU server can run, without its network. Output-based
losses (kd, dkd, dist, ...) need nothing else: the runner adds the recorded outputs to the data as a view named
``config.OUTPUTS_VIEW + <teacher name>`` before the split (``outputs_views``), so they are split, subset and looked
up by ``batch["index"]`` exactly like ``x``; the teacher network is ``RecordedTeacher``, whose forward returns that
view. So ``Teachers.cache`` / ``outputs`` / ``evaluate`` work unchanged, and the runner evaluates and reports the
teacher on validation and test like any given teacher (never trained).

Arrays (one of the three, and ``test_<same>`` when the data has an official test split):

* ``logits`` (n, classes): used as given, not normalised (their scale is the teacher's confidence).
* ``probabilities`` (n, classes), rows summing to 1 (a Keras model ending in softmax): converted to log-probabilities.
  ``log p`` differs from the logits that made ``p`` by one constant per row (log of the softmax denominator), and
  softmax is unchanged by adding a constant to a row, so ``softmax(log p / T)`` for T = 1 equals ``p``; for T != 1,
  ``softmax(log p / T) = softmax(z / T)`` too, since ``log p / T = z / T - c / T``: every temperature-softened soft
  target (KD, DKD, DIST) is what the real logits give. Only a loss on raw logit values (e.g. MSE on logits) differs.
* ``outputs`` (n,) or (n, targets), regression, in the units of ``y``: the teacher standardises them with the
  training split's target scale (``DataInfo.target_scale``), as it does ``y``, so they compare with the student's.

Refused, before anything is written (``UserInputError`` naming the file, the array and the shapes): another array
name, the wrong kind for the task, a row count that is not the number of samples of x (test_x), a column count that
is not the number of classes (targets), NaN/inf or values above ``MAX_ABS``, probabilities outside [0, 1] or rows not
summing to 1, a missing ``test_`` array when the data has an official test split; ``data.window`` (the windows are
cut here, after the user recorded the outputs: save the windows as x instead); augmentation that changes what the
teacher would see (recorded outputs are of the clean inputs); a loss reading teacher features (``models.taps``,
through ``edgedistill_outputs_only``); a method that runs the teacher on inputs it makes (``RecordedTeacher.forward``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch
from torch import nn

from edgedistill.config import Recipe, TeacherConfig
from edgedistill.errors import UserInputError

if TYPE_CHECKING:
    from edgedistill.data.dataset import DataInfo
    from edgedistill.data.raw import RawData

#: Array name -> the task it is for.
KINDS = {"logits": "classification", "probabilities": "classification", "outputs": "regression"}
#: How far probabilities may stray from [0, 1] and their row sums from 1 (float32 softmax is ~1e-7 off; a file of
#: rounded values, e.g. 4 decimals, a few 1e-4).
PROBABILITY_TOLERANCE = 1e-3


class RecordedTeacher(nn.Module):
    """A teacher that is its recorded outputs: forward returns its input, the data's view of those outputs (for
    regression standardised with the training split's target scale, as ``y`` is). It has no features to tap
    (``edgedistill_outputs_only``) and cannot run on any other input."""

    def __init__(self, source: str, n_outputs: int,
                 target_scale: Optional[tuple[list[float], list[float]]] = None) -> None:
        super().__init__()
        self.edgedistill_outputs_only = source
        self.edgedistill_size = {"params": None, "size_kb": None}  # the teacher's size is not in the file
        self.edgedistill_recorded = True  # runs on the data's rows only (methods.teachers.Teachers.check_new_inputs)
        self.n_outputs = n_outputs
        self.standardise = target_scale is not None
        mean, std = target_scale if target_scale is not None else ([0.0] * n_outputs, [1.0] * n_outputs)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_outputs:
            raise UserInputError(
                f"{self.edgedistill_outputs_only} is the teacher's recorded outputs on the data's rows; it cannot run "
                f"on other inputs (got a tensor of shape {tuple(x.shape)}), as a method that makes its own inputs "
                "for the teacher (data-free, synthetic samples) needs: give the teacher as a model (model or load)"
            )
        return (x - self.mean) / self.std if self.standardise else x

    def extra_repr(self) -> str:
        return self.edgedistill_outputs_only


def _source(key: str, path: Path) -> str:
    return f"{key}.outputs '{path}'"


def recorded_teacher(cfg: TeacherConfig, info: "DataInfo", key: str) -> nn.Module:
    """The network of a teacher given by ``cfg.outputs`` (experiment.build.build_network): a ``RecordedTeacher``
    reading the view ``outputs_views`` added to the data."""
    assert cfg.outputs is not None
    scale = info.target_scale if info.task == "regression" else None
    return RecordedTeacher(_source(key, Path(cfg.outputs)), info.n_outputs, scale)


def read_outputs(path: Path, key: str, raw: "RawData") -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The recorded outputs of the rows of ``raw.x`` and, when the data has an official test split, of
    ``raw.test_x``: float32 (n, classes or targets), probabilities as log-probabilities; every check of the module
    docstring, each a ``UserInputError`` naming the file and the array."""
    from edgedistill.data.files import _read_npz  # the one safe .npz reader: no pickle, sizes checked first
    from edgedistill.data.raw import check_values
    from edgedistill.paths import regular_file

    where = _source(key, path)
    arrays = _read_npz(regular_file(Path(path), f"{key}.outputs"))
    known = set(KINDS) | {f"test_{k}" for k in KINDS}
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise UserInputError(f"{where}: unknown array '{unknown[0]}'; expected one of logits, probabilities "
                             f"(classification) or outputs (regression), and test_<that> for an official test split")
    kinds = sorted({k.removeprefix("test_") for k in arrays})
    if len(kinds) != 1:
        raise UserInputError(f"{where}: " + (f"arrays {', '.join(kinds)} are all given; give one of them" if kinds else
                                             "holds no array; expected logits, probabilities or outputs"))
    kind = kinds[0]
    if KINDS[kind] != raw.task:
        want = "outputs" if raw.task == "regression" else "logits or probabilities"
        raise UserInputError(f"{where}: array '{kind}' is for {KINDS[kind]}, but the data is a {raw.task} task; "
                             f"give {want}")
    n_out = raw.n_outputs
    unit = "class" if raw.task == "classification" else "regression target"
    parts: list[tuple[str, Optional[np.ndarray], str]] = [(kind, raw.x, "x")]
    if raw.test_x is not None:
        parts.append((f"test_{kind}", raw.test_x, "test_x"))
    elif f"test_{kind}" in arrays:
        raise UserInputError(f"{where}: array 'test_{kind}' is given but the data has no official test split "
                             "(no test_x): its test rows are held out of x; remove it")
    out: list[np.ndarray] = []
    for name, x, of in parts:
        if name not in arrays:
            raise UserInputError(f"{where}: array '{name}' is missing; the data has an official test split ({len(x)} "
                                 f"rows of {of}), so the teacher's outputs on those rows are needed too")
        arr = arrays[name]
        if arr.dtype.kind not in "iuf":
            raise UserInputError(f"{where}: array '{name}' must be numbers, got dtype {arr.dtype}")
        if raw.task == "regression" and arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[0] != len(x) or arr.shape[1] != n_out:
            raise UserInputError(
                f"{where}: array '{name}' has shape {arr.shape}; expected ({len(x)}, {n_out}): one row per sample of "
                f"{of}, in its order, and one column per {unit} ({n_out} in the data)" + _binary_hint(arr, n_out, kind))
        check_values(name, arr, where, bounded=True)
        if kind == "probabilities":
            arr = _log_probabilities(arr.astype(np.float64), name, where)
        out.append(np.ascontiguousarray(arr, dtype=np.float32))
    return out[0], (out[1] if len(out) > 1 else None)


def _binary_hint(arr: np.ndarray, n_out: int, kind: str) -> str:
    """For two classes given as one column (a sigmoid model): how to write both. softmax([0, z]) = sigmoid(z)."""
    if kind == "outputs" or n_out != 2 or arr.size != len(arr):
        return ""
    both = "np.column_stack([1 - p, p])" if kind == "probabilities" else "np.column_stack([np.zeros_like(z), z])"
    return f"; a one-column binary model (sigmoid) of the second class: save {kind}={both}"


def _log_probabilities(p: np.ndarray, name: str, where: str) -> np.ndarray:
    """log p (logits up to a constant per row: the module docstring); p = 0 becomes the log of float32's smallest
    normal number (about -87), finite, so losses stay finite, and still ~1e-38 after softmax."""
    tol = PROBABILITY_TOLERANCE
    if p.min() < -tol or p.max() > 1 + tol:
        bad = int(np.argmax((p < -tol) | (p > 1 + tol)) // p.shape[1])
        raise UserInputError(f"{where}: array '{name}' must hold probabilities in [0, 1]; row {bad} has "
                             f"{p[bad].min():.4g}..{p[bad].max():.4g} (logits? save them as 'logits')")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1) > tol
    if off.any():
        bad = int(np.argmax(off))
        raise UserInputError(f"{where}: array '{name}': each row must sum to 1 (probabilities of the classes); "
                             f"{int(off.sum())} row(s) do not, first row {bad} sums to {sums[bad]:.6g}")
    return np.log(np.clip(p, np.finfo(np.float32).tiny, None))


def given_outputs(recipe: Recipe) -> list[tuple[str, TeacherConfig]]:
    """(recipe key, spec) of every teacher given by its outputs; the spec's view is its outputs view."""
    return [(k, t) for k, t in zip(recipe.teacher_keys(), recipe.teacher_specs()) if t.outputs is not None]


def check_recipe(recipe: Recipe) -> None:
    """What recorded outputs cannot do, refused naming the key: rows that are windows this toolkit cuts (the
    outputs were recorded before), and a teacher input that augmentation changes (they are of the clean inputs)."""
    given = given_outputs(recipe)
    if not given:
        return
    key = given[0][0]
    if recipe.data.window is not None:
        raise UserInputError(
            f"{key}.outputs: the file gives one row per sample of x, but data.window cuts the samples into windows "
            "here; cut the windows yourself, save them as x (n, channels, length) and record the teacher on them")
    aug = recipe.augment
    if aug is None or aug.teacher_sees == "clean":
        return
    if aug.mix is not None:
        raise UserInputError(f"augment.mix: mixes the inputs the teacher must see too, but {key}.outputs holds its "
                             "outputs on the unmixed inputs; remove augment.mix (or give the teacher as a model)")
    if aug.student or aug.teacher:
        raise UserInputError(
            f"augment.teacher_sees: '{aug.teacher_sees}' needs the teacher's outputs on augmented inputs, but "
            f"{key}.outputs holds them for the clean inputs; set augment.teacher_sees: clean")


def _add_view(raw: "RawData", view: str, train: np.ndarray, test: Optional[np.ndarray], key: str) -> "RawData":
    if view in raw.views:
        raise UserInputError(f"{key}.outputs: the data already has a view named '{view}'; rename that array")
    test_views = {**raw.test_views, view: test} if test is not None else dict(raw.test_views)
    return replace(raw, views={**raw.views, view: train}, test_views=test_views, raw_views=raw.raw_views | {view})


def _random_outputs(raw: "RawData", spec: TeacherConfig) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Stand-in outputs of the smoke run's synthetic data (its file was checked against the real data): logits of
    scale 2, or the targets plus noise, drawn with a fixed seed."""
    rng = np.random.default_rng(0)
    n_out = raw.n_outputs

    def draw(n: int, y: Optional[np.ndarray]) -> np.ndarray:
        if raw.task == "classification" or y is None:
            return rng.normal(0.0, 2.0, size=(n, n_out)).astype(np.float32)
        yy = np.asarray(y, dtype=np.float64).reshape(n, -1)
        return (yy + rng.normal(0.0, 0.5, size=yy.shape) * (yy.std(axis=0) + 1e-8)).astype(np.float32)

    test = draw(len(raw.test_x), raw.test_y) if raw.test_x is not None else None
    return draw(len(raw.x), raw.y), test


def outputs_views(recipe: Recipe, smoke: bool = False) -> Optional[Callable[["RawData"], "RawData"]]:
    """What ``topology.prepare_with_pis(add_views=...)`` adds for the recipe's teachers given by outputs (None:
    there are none): each one's recorded outputs as its view, kept as given (``RawData.raw_views``), rows in the
    order of x (and test_x). In a ``smoke`` run the data is synthetic: random outputs of its shape stand in (the
    file was checked against the real data by ``check_outputs_files``), and the run's notes say so."""
    given = given_outputs(recipe)
    if not given:
        return None
    check_recipe(recipe)

    def add(raw: "RawData") -> "RawData":
        for key, spec in given:
            if smoke:
                train, test = _random_outputs(raw, spec)
                note = (f"smoke: {key}.outputs was checked against the real data; random outputs of the synthetic "
                        "data's shape stand in for it")
                raw = replace(raw, notes=[*raw.notes, note])
            else:
                train, test = read_outputs(Path(spec.outputs), key, raw)  # type: ignore[arg-type]
            raw = _add_view(raw, spec.view, train, test, key)
        return raw

    return add


def check_outputs_files(recipe: Recipe) -> None:
    """Check every outputs file against the recipe's real data (``--smoke`` calls this before it replaces the
    data): everything a real run checks, without splitting or training."""
    given = given_outputs(recipe)
    if not given:
        return
    from edgedistill.data.prepare import windowed_raw

    check_recipe(recipe)
    raw = windowed_raw(recipe.data)
    for key, spec in given:
        read_outputs(Path(spec.outputs), key, raw)  # type: ignore[arg-type]
