"""Streaming inference: an exported 1-D student on a continuous sensor stream instead of pre-cut windows.

    p = Predictor("student.onnx")
    for r in p.stream(chunks, smoothing="majority", smooth_over=5):   # chunks: (n_samples, channels) arrays
        print(r.end, r.label)

Samples arrive in chunks of any size (one sample to a whole recording). A ring buffer holds the last
``length`` samples (the model's window length); every ``hop`` samples (default: the stride the model was
trained with) the buffer, in time order, is one window: the stored normalisation is applied and the model
predicts it. The windows are exactly those ``data.windowing.sliding_windows`` cuts from the concatenated
recording with stride ``hop`` (the first ends at sample ``length - 1``), so a streamed label equals the batch
prediction of the same window.

Smoothing (our choice of form; the issue asks for "majority or probability averaging" without fixing one):

* ``none``: each hop's own label;
* ``majority``: the most frequent label among the last ``smooth_over`` hops; a tie goes to the tied label
  predicted most recently (the one that reflects the newest samples);
* ``mean_proba``: the arg-max of the mean of the last ``smooth_over`` probability vectors.

Before ``smooth_over`` hops have been seen, the hops seen so far are used (no padding).
"""
from __future__ import annotations

import csv
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from edgedistill.errors import UserInputError

SMOOTHING = ("none", "majority", "mean_proba")
FLUSH = 256  # windows collected before the model runs: bounds memory on a whole-recording chunk


@dataclass(frozen=True)
class StreamResult:
    """One hop: ``end`` is the index (from 0, over the whole stream) of the last sample of the window, which covers
    samples ``end - length + 1 .. end``; ``label`` is the class name after smoothing (a regression model: its value
    in original units); ``window_label`` the window's own label; ``proba`` the class probabilities behind ``label``
    (the mean over the smoothing span for ``mean_proba``, else the window's own; None for regression)."""

    end: int
    label: Any
    window_label: Any
    proba: Optional[np.ndarray]


class Smoother:
    """The smoothing of ``stream`` over a sequence of probability vectors: ``push(p)`` -> (label index, the
    probabilities behind it)."""

    def __init__(self, smoothing: str = "none", smooth_over: int = 5) -> None:
        if smoothing not in SMOOTHING:
            raise UserInputError(f"stream: smoothing must be one of {', '.join(SMOOTHING)}, got {smoothing!r}")
        if isinstance(smooth_over, bool) or not isinstance(smooth_over, (int, np.integer)) or smooth_over < 1:
            raise UserInputError(f"stream: smooth_over must be a positive whole number of hops, got {smooth_over!r}")
        self.smoothing = smoothing
        self.recent: deque[Any] = deque(maxlen=int(smooth_over))

    def push(self, proba: np.ndarray) -> tuple[int, np.ndarray]:
        proba = np.asarray(proba, dtype=np.float64)
        own = int(np.argmax(proba))
        if self.smoothing == "mean_proba":
            self.recent.append(proba)
            mean = np.mean(np.stack(self.recent), axis=0)
            return int(np.argmax(mean)), mean
        self.recent.append(own)
        return (self._majority() if self.smoothing == "majority" else own), proba

    def _majority(self) -> int:
        counts: dict[int, int] = {}
        for label in self.recent:
            counts[label] = counts.get(label, 0) + 1
        best = max(counts.values())
        return next(label for label in reversed(self.recent) if counts[label] == best)  # the newest of the tied


def stream_window(meta: Any, hop: Optional[int]) -> tuple[int, int]:
    """(window length, hop) for streaming a model described by ``meta``: the length is the model's input length;
    the hop is ``hop`` or the stored stride; a file without a stored stride needs ``hop``."""
    shape = list(meta.input_shape)
    if len(shape) != 2:
        raise UserInputError(
            f"stream: the model takes inputs of shape {tuple(shape)}; streaming needs a 1-D model (channels, length)"
        )
    length = int(shape[1])
    stored = meta.window or {}
    if stored.get("length") is not None and int(stored["length"]) != length:
        raise UserInputError(
            f"stream: the metadata's window length {stored['length']} differs from the model's input length {length}"
        )
    if hop is None:
        hop = stored.get("stride") or (length if stored.get("length") is not None else None)
        if hop is None:
            raise UserInputError(
                "stream: the model file stores no window stride (exported before streaming, or trained on pre-cut "
                f"windows); pass the hop explicitly (Predictor.stream(..., hop=N), edgedistill predict --hop N); "
                f"the window length is the model's input length, {length}"
            )
    if isinstance(hop, bool) or not isinstance(hop, (int, np.integer)) or hop < 1:
        raise UserInputError(f"stream: hop must be a positive whole number of samples, got {hop!r}")
    return length, int(hop)


class _Ring:
    """The last ``length`` samples of the stream, (length, channels), oldest first after ``window()``."""

    def __init__(self, length: int, channels: int) -> None:
        self.buf = np.zeros((length, channels), dtype=np.float64)
        self.length = length
        self.seen = 0  # samples written so far

    def write(self, samples: np.ndarray) -> None:
        n = len(samples)
        if n >= self.length:  # only the newest `length` samples can matter
            samples, skipped = samples[-self.length:], n - self.length
            self.seen += skipped
            n = self.length
        at = self.seen % self.length
        first = min(n, self.length - at)
        self.buf[at:at + first] = samples[:first]
        self.buf[:n - first] = samples[first:]
        self.seen += n

    def window(self) -> np.ndarray:
        """The buffer as one (channels, length) window in time order (a copy)."""
        at = self.seen % self.length
        return np.concatenate([self.buf[at:], self.buf[:at]]).T.copy()


def stream(predictor: Any, chunks: Iterable[Any], *, hop: Optional[int] = None, smoothing: str = "none",
           smooth_over: int = 5, source: str = "stream") -> Iterator[StreamResult]:
    """One ``StreamResult`` per hop of ``chunks`` through ``predictor`` (a ``deploy.predictor.Predictor``). The
    arguments are checked here, at the call; the chunks as they arrive. ``source`` names the stream in the message
    for a stream shorter than one window (a file name)."""
    meta = predictor.meta
    length, hop = stream_window(meta, hop)
    smoother = Smoother(smoothing, smooth_over)
    classify = meta.task == "classification"
    if smoothing != "none" and not classify:
        raise UserInputError(f"stream: smoothing {smoothing!r} needs a classifier; this model does regression")
    return _generate(predictor, chunks, length, hop, smoother, classify, source)


def _generate(predictor: Any, chunks: Iterable[Any], length: int, hop: int, smoother: Smoother,
              classify: bool, source: str) -> Iterator[StreamResult]:
    meta = predictor.meta
    channels = int(meta.input_shape[0])
    ring = _Ring(length, channels)
    results = 0
    next_end = length - 1  # index of the last sample of the next window
    for number, chunk in enumerate(chunks):
        x = _check_chunk(chunk, number, ring.seen, channels, meta.channels)
        pending: list[tuple[int, np.ndarray]] = []
        start = ring.seen  # stream index of x[0]
        i = 0
        while start + len(x) > next_end:  # a window ends inside this chunk
            upto = next_end - start + 1
            ring.write(x[i:upto])
            i = upto
            pending.append((next_end, ring.window()))
            next_end += hop
            if len(pending) == FLUSH:
                yield from _emit(predictor, pending, smoother, classify)
                results += len(pending)
                pending = []
        ring.write(x[i:])
        if pending:
            yield from _emit(predictor, pending, smoother, classify)
            results += len(pending)
    if results == 0:
        raise UserInputError(
            f"{source}: the stream ended after {ring.seen} sample(s), shorter than one window of {length} samples"
        )


def _check_chunk(chunk: Any, number: int, seen: int, channels: int, chans: Optional[list[int]]) -> np.ndarray:
    x = np.asarray(chunk)
    if x.dtype.kind not in "iuf":
        raise UserInputError(f"stream: chunk {number} must hold numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise UserInputError(
            f"stream: chunk {number} must be (n_samples, channels) = (n, {channels}), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        if chans is not None and x.shape[1] > max(chans):
            x = x[:, chans]  # a full raw recording: the channels the model reads, in its order
        else:
            raise UserInputError(
                f"stream: chunk {number} has {x.shape[1]} channel(s); the model reads {channels}"
                + (f" (channels {chans} of the raw data)" if chans is not None else "")
            )
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise UserInputError(
            f"stream: sample {seen + row} (chunk {number}, row {row}), channel {col} is {x[row, col]}; "
            f"the stream must be finite (fill or drop gaps before streaming)"
        )
    return x.astype(np.float64, copy=False)


def _emit(predictor: Any, pending: list[tuple[int, np.ndarray]], smoother: Smoother,
          classify: bool) -> Iterator[StreamResult]:
    windows = np.stack([w for _, w in pending])
    if not classify:
        for (end, _), value in zip(pending, np.atleast_1d(predictor.predict(windows))):
            yield StreamResult(end, value, value, None)
        return
    from edgedistill.deploy.predictor import softmax  # (predictor.py imports this module lazily: no cycle)

    classes = predictor.classes
    for (end, _), p in zip(pending, softmax(predictor.outputs(windows))):
        label, shown = smoother.push(p)
        yield StreamResult(end, classes[label], classes[int(np.argmax(p))], shown)


def csv_chunks(path: str | Path, meta: Any, rows: int = 4096) -> Iterator[np.ndarray]:
    """A recording in a ``.csv`` file (one row per sample, one column per channel in the model's order) as
    (rows, channels) chunks for ``stream``, read ``rows`` at a time. A header row is optional: the first row is one
    when a cell is not a number or the cells are the stored channel names; it is checked against the stored names
    (``meta.channel_names``). Every problem names the file, the line and the column."""
    import pandas as pd  # lazy: pandas costs ~0.5 s to import

    from edgedistill.data.files import check_file

    path = check_file(Path(path))
    channels = int(meta.input_shape[0])
    names = list(meta.channel_names) if meta.channel_names else None
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        first = next(csv.reader(fh), None)
    if not first:
        raise UserInputError(f"'{path}': the file is empty; expected one row per sample, one column per channel")
    cells = [c.strip() for c in first]
    # A header has a cell that is not a number, or is the stored names themselves (unnamed channels are "0", "1", ...).
    header = cells if not all(_is_number(c) for c in cells) or cells == names else None
    if header is not None:
        _check_header(path, header, names, channels)
    elif len(first) != channels:
        raise UserInputError(
            f"'{path}': {len(first)} column(s) per row; the model reads {channels} channel(s)"
            + (f" ({', '.join(names)})" if names else "")
        )
    done = 1 if header is not None else 0  # lines read before this chunk
    try:
        for frame in pd.read_csv(path, header=0 if header is not None else None, chunksize=rows,
                                 skip_blank_lines=True, float_precision="round_trip"):  # (exact decimals)
            yield _frame_values(path, frame, done, header)
            done += len(frame)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserInputError(f"'{path}': not a readable CSV file ({str(exc).strip().splitlines()[0]})") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_header(path: Path, header: list[str], names: Optional[list[str]], channels: int) -> None:
    if names is None:  # a file exported before channel names were stored: only the count can be checked
        if len(header) != channels:
            raise UserInputError(f"'{path}': columns {header}; the model reads {channels} channel(s)")
        return
    if header == names:
        return
    if names == [str(i) for i in range(len(names))] and len(header) == channels:
        return  # the training data named no channels (they are numbered): the columns are read in order
    missing = [n for n in names if n not in header]
    extra = [h for h in header if h not in names]
    why = (f"missing {missing}" if missing else "") + ("; " if missing and extra else "") + \
        (f"not channels of the model {extra}" if extra else "")
    raise UserInputError(
        f"'{path}': columns {header} do not match the model's channels {names} "
        f"({why or 'the same names in another order'}); write the columns in the model's order"
    )


def _frame_values(path: Path, frame: Any, done: int, header: Optional[list[str]]) -> np.ndarray:
    import pandas as pd

    for j, col in enumerate(frame.columns):
        if not pd.api.types.is_numeric_dtype(frame[col]):
            bad = pd.to_numeric(frame[col], errors="coerce").isna() & frame[col].notna()
            row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise UserInputError(f"'{path}': line {done + row + 1}, column {_column(header, j)}: "
                                 f"{frame[col].iloc[row]!r} is not a number")
    values = frame.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, j = (int(v) for v in np.argwhere(bad)[0])
        raise UserInputError(f"'{path}': line {done + row + 1}, column {_column(header, j)}: missing or not finite "
                             f"({values[row, j]}); fill or drop gaps before streaming")
    return values


def _column(header: Optional[list[str]], j: int) -> str:
    return f"'{header[j]}'" if header is not None else str(j + 1)
