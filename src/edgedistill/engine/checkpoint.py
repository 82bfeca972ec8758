"""Checkpoints: weights-only files written atomically, loaded with ``weights_only=True``.

``best.pt`` and the deliverable hold only network state dicts. ``last.pt`` also holds what an exact
resume needs: optimizer states, the epoch, the best score so far and the RNG states (stored as tensors
and plain numbers so that ``weights_only`` loading accepts them).

Integrity: torch's zip reader does not notice flipped bytes inside a tensor (they load as other numbers), so a
training checkpoint saved with ``digest=True`` carries ``DIGEST_KEY``, a sha256 over every tensor's dtype, shape
and bytes and every other value, and ``load`` checks it. A file that cannot be read (truncated, empty, random
bytes, not a torch file, pickled objects) or whose digest does not match raises ``UnreadableCheckpoint``, a
``UserInputError`` naming the file and what to do, never a traceback. Files without the key (a user's
``torch.save(model.state_dict(), path)``, checkpoints written before digests) load as before.
"""
from __future__ import annotations

import io
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgedistill.errors import UserInputError
from edgedistill.paths import regular_file
from edgedistill.io import atomic_write, content_digest as digest  # noqa: F401 - re-exported

#: Key of the content digest in a training checkpoint (``last.pt``, ``best.pt``); ``load`` removes it.
DIGEST_KEY = "content_sha256"
RESAVE = "re-save the weights with torch.save(model.state_dict(), path)"


class UnreadableCheckpoint(UserInputError):
    """A checkpoint file that exists but cannot be used: truncated, corrupted, not a weights-only torch file."""


def save(path: Path, obj: dict[str, Any], digest_content: bool = False) -> None:
    """Write ``obj`` atomically; with ``digest_content`` it carries ``DIGEST_KEY`` for ``load`` to verify."""
    if digest_content:
        obj = {**obj, DIGEST_KEY: digest(obj)}
    atomic_write(Path(path), lambda fh: torch.save(obj, fh), mode="wb")


def _reason(exc: Exception, path: Path, data: bytes | None) -> str:
    """What is wrong with a file torch.load refused, in words a user can act on."""
    import zipfile

    source = io.BytesIO(data) if data is not None else path
    if not zipfile.is_zipfile(source):
        if data is not None:
            head = data[:1]
        else:
            with path.open("rb") as fh:
                head = fh.read(1)
        if head == b"\x80" and "Weights only load failed" in str(exc):  # torch.save's legacy (non-zip) pickle format
            return "it is a legacy (non-zip) pickle holding Python objects (a whole model or other classes), not only tensors"
        return "it is not a zip archive as torch.save writes: truncated, or another format"
    text = str(exc)
    if "Unsupported global" in text or "Unsupported operand" in text or "GLOBAL" in text:
        return "it holds pickled Python objects (a whole model or other classes), not only tensors"
    if "not in a subdirectory" in text or "data.pkl" in text or "archive" in text:
        return "it is a zip archive but not a torch checkpoint (an .npz?)"
    first = text.strip().splitlines()[0][:160] if text.strip() else "unreadable"
    return f"{type(exc).__name__}: {first}"


def _tail(hint: str) -> str:
    return f"; {hint}" if hint else ""


def load(path: Path, data: bytes | None = None, hint: str = RESAVE) -> dict[str, Any]:
    """The checkpoint at ``path`` (or its bytes ``data``, already read) as a dict, its digest verified if it has one.
    ``hint`` is what the error tells the user to do (for the toolkit's own files: how to retrain; "" for nothing)."""
    path = Path(path)
    if data is None:
        regular_file(path, "checkpoint")
        if path.stat().st_size == 0:
            raise UnreadableCheckpoint(f"checkpoint '{path}' is empty, not a weights-only torch file{_tail(hint)}")
    elif not data:
        raise UnreadableCheckpoint(f"checkpoint '{path}' is empty, not a weights-only torch file{_tail(hint)}")
    try:
        with warnings.catch_warnings():  # torch warns (multi-line) about pickle protocols before refusing: our line says it
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise UnreadableCheckpoint(
            f"checkpoint '{path}' is not a readable weights-only torch file ({_reason(exc, path, data)}){_tail(hint)}"
        ) from None
    if not isinstance(obj, dict):
        raise UnreadableCheckpoint(
            f"checkpoint '{path}' holds a {type(obj).__name__}, not a state dict (names -> tensors){_tail(hint)}"
        )
    if DIGEST_KEY in obj:
        obj = dict(obj)
        stored = obj.pop(DIGEST_KEY)
        if stored != digest(obj):
            raise UnreadableCheckpoint(
                f"checkpoint '{path}' is corrupted: its content does not match the sha256 it was saved with{_tail(hint)}"
            )
    return obj


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    pos, has_gauss, cached = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, Any], source: str) -> None:
    """Load weights, turning a key/shape mismatch into one line naming the file and the first problem."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:3]) or first[0]
        raise UserInputError(f"{source}: weights do not fit {type(model).__name__}: {detail}") from None
