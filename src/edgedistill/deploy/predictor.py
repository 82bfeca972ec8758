"""``Predictor``: an exported student on raw windows, with nothing but ONNX Runtime and numpy.

    from edgedistill.deploy import Predictor
    p = Predictor("runs/quickstart/export/student_seed0_best.onnx")
    p.predict(window)            # one raw window (channels, length) -> its class name
    p.predict(windows)           # (n, channels, length) -> n class names
    p.predict_proba(windows)     # (n, classes) softmax probabilities, columns in p.classes order
    for r in p.stream(chunks):   # a continuous stream of (n_samples, channels) chunks -> one result per hop
        r.end, r.label, r.proba

The preprocessing stored in the file's metadata is applied exactly as in training: channel selection (when
the recipe used ``data.views.x``), then the training split's normalisation. Regression models return
values in original units.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

import numpy as np

from edgedistill.data.normalize import Normalizer
from edgedistill.deploy.metadata import ModelMetadata, _session
from edgedistill.errors import UserInputError

if TYPE_CHECKING:
    from edgedistill.deploy.stream import StreamResult


def normalizer_of(meta: ModelMetadata) -> Normalizer:
    """The training split's normalisation a model's metadata records."""
    norm = meta.normalization
    return Normalizer(norm["mode"], list(norm.get("mean", [])), list(norm.get("std", [])))


def preprocess(meta: ModelMetadata, normalizer: Normalizer, windows: Any, who: str = "Predictor") -> tuple[np.ndarray, bool]:
    """Raw windows -> the normalised float32 batch a model described by ``meta`` takes, and whether one window was
    given: the checks and preprocessing of every way to predict (``Predictor``, ``DistilledClassifier``)."""
    x = np.asarray(windows)
    if x.dtype.kind not in "iuf":
        raise UserInputError(f"{who}: windows must be numbers, got dtype {x.dtype}")
    shape = tuple(meta.input_shape)
    single = x.ndim == len(shape)
    if single:
        x = x[None]
    if x.ndim != len(shape) + 1:
        raise UserInputError(
            f"{who}: expected one window of shape {shape} or a batch (n, {', '.join(map(str, shape))}), "
            f"got shape {tuple(np.shape(windows))}"
        )
    chans = meta.channels
    if chans is not None and x.shape[1] != shape[0] and x.shape[1] > max(chans):
        x = x[:, chans]  # a full raw recording: pick the channels the model reads, in its order
    if tuple(x.shape[1:]) != shape:
        hint = f" (the model reads channels {chans} of the raw data)" if chans is not None else ""
        raise UserInputError(f"{who}: each window must have shape {shape}, got {tuple(x.shape[1:])}{hint}")
    if not np.isfinite(x).all():
        raise UserInputError(f"{who}: windows contain NaN or inf")
    return np.ascontiguousarray(normalizer.apply(x), dtype=np.float32), single


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (outputs -> class probabilities)."""
    z = np.asarray(z, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class Predictor:
    def __init__(self, path: str | Path, threads: Optional[int] = None) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.meta = ModelMetadata.from_props(dict(self.session.get_modelmeta().custom_metadata_map), f"'{self.path}'")
        self.normalizer = normalizer_of(self.meta)
        self.input_name = self.session.get_inputs()[0].name

    @property
    def classes(self) -> Optional[list[str]]:
        return self.meta.classes

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.meta.input_shape)

    def preprocess(self, windows: Any) -> tuple[np.ndarray, bool]:
        """Raw windows -> the normalised float32 batch the model takes, and whether one window was given."""
        return preprocess(self.meta, self.normalizer, windows)

    def outputs(self, windows: Any, batch: int = 256) -> np.ndarray:
        """Raw model outputs (logits, or standardised regression values) for a batch of windows."""
        x, _ = self.preprocess(windows)
        outs = [self.session.run(None, {self.input_name: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
        return np.concatenate(outs) if outs else np.zeros((0, self.meta.n_outputs), np.float32)

    def predict_proba(self, windows: Any) -> np.ndarray:
        """Softmax class probabilities, (n, classes) for a batch or (classes,) for one window."""
        if self.task != "classification":
            raise UserInputError("Predictor.predict_proba: this model does regression; use predict()")
        single = np.ndim(windows) == len(self.input_shape)
        p = softmax(self.outputs(windows))
        return p[0] if single else p

    def predict(self, windows: Any) -> Any:
        """Class names (a list, or one name for one window) or regression values in original units."""
        single = np.ndim(windows) == len(self.input_shape)
        out = self.outputs(windows)
        if self.task == "classification":
            names = [self.classes[i] for i in out.argmax(axis=1)]  # type: ignore[index]
            return names[0] if single else names
        values = out.reshape(len(out), -1).astype(np.float64)
        if self.meta.target_scale is not None:
            values = values * np.asarray(self.meta.target_scale[1]) + np.asarray(self.meta.target_scale[0])
        values = values[:, 0] if values.shape[1] == 1 else values
        return values[0] if single else values

    def stream(self, chunks: Iterable[Any], *, hop: Optional[int] = None, smoothing: str = "none",
               smooth_over: int = 5) -> Iterator["StreamResult"]:
        """Predict on a continuous stream: ``chunks`` are (n_samples, channels) arrays of any size; yields one
        ``StreamResult`` (end sample index, label, probabilities) every ``hop`` samples (default: the stored stride)
        once a full window has arrived; ``smoothing`` none | majority | mean_proba over the last ``smooth_over``
        hops (``deploy.stream``)."""
        from edgedistill.deploy.stream import stream

        return stream(self, chunks, hop=hop, smoothing=smoothing, smooth_over=smooth_over)

    def __repr__(self) -> str:
        what = f"{len(self.classes)} classes" if self.classes else "regression"
        return f"Predictor('{self.path}', input {self.input_shape}, {what}, quantization={self.meta.quantization!r})"
