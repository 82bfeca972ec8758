"""A network's outputs over a whole split, computed once per run and shared by everything that asks for them again.

Within one run the same frozen network meets the same rows several times: the teacher's outputs on the training
rows are cached by every seed's distilled stage (``Teachers.cache``), and once the stages are done the report's
per-class detail and the reliability diagram both evaluate the teacher, the student alone and the distilled student
on the test split. The teacher's pass is the costly one (an FCN over OSULeaf's 242 test series: ~1 s on one CPU
thread, paid twice for the report and once per seed for the training rows).

Inside ``with shared_outputs():`` (the runner opens it for a whole run; a ``--jobs`` worker for its stages),
``outputs_once`` answers a repeated request from memory. A request is the same when the network's weights and
buffers (a hash of their bytes, not the module object: the report rebuilds networks from their files), its
train/eval mode, the rows (the view's tensor object, held by the entry so that its ``id`` cannot be reused, and its
in-place version counter), the device and the caller's ``tag`` (what ``compute`` returns: raw outputs, or float
copies on the CPU) all match. Outside the block, every call computes; so does a changed network (a changed
weight is a different hash), and a student's per-epoch validation runs in an ``unshared()`` block (engine/evaluate.py
``epoch_scores``): it could never repeat. At most ``MAX_ENTRIES`` results and ``MAX_BYTES`` of them are kept per
tag, least recently used first out: per tag, so that the report's many test passes never push the teacher's
training-row outputs out, and by size, because a regression student's waveforms over a large split are tens of MiB.
A network whose weights cannot be hashed (a quantized module's packed parameters) is never shared.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

from edgedistill.data.dataset import TensorData

MAX_ENTRIES = 16
MAX_BYTES = 128 * 2**20
_store: Optional[dict[str, OrderedDict]] = None


@contextlib.contextmanager
def _bound(store: Optional[dict[str, OrderedDict]]) -> Iterator[Optional[dict[str, OrderedDict]]]:
    """``store`` is the one ``outputs_once`` uses inside the block (None: none), the outer one again after it."""
    global _store
    outer, _store = _store, store
    try:
        yield store
    finally:
        _store = outer


def shared_outputs(store: Optional[dict[str, OrderedDict]] = None) -> contextlib.AbstractContextManager:
    """Share whole-split outputs inside the block (nested blocks share the outer one's). ``store``: an existing one
    to carry on with (a worker keeps its store between the stages of one run)."""
    return _bound(_store if _store is not None else (store if store is not None else {}))


def unshared() -> contextlib.AbstractContextManager:
    """No sharing inside the block: for passes that can never repeat (a student's per-epoch validation while it
    trains: its weights change every epoch), so that they neither hash the weights nor fill the store."""
    return _bound(None)


def weights_hash(model: nn.Module) -> Optional[bytes]:
    """A digest of the module's class, its repr (the layers' settings), its mode and every parameter and buffer
    (name, dtype, shape, bytes); None when a state entry is not a plain tensor."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(model).__module__}.{type(model).__qualname__}|{model.training}|{model!r}".encode())
    for name, t in model.state_dict().items():
        if not torch.is_tensor(t) or t.is_quantized:
            return None
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()


def outputs_once(model: nn.Module, data: TensorData, view: str, device: torch.device, tag: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` (``model``'s outputs on every row of ``data[view]``), or the result of the same request earlier
    in the enclosing ``shared_outputs`` block. Tensors come back as copies: a caller may change its own freely."""
    digest = weights_hash(model) if _store is not None else None
    if digest is None:
        return compute()
    rows = data.views[view]  # the view's own object: a view replaced or changed in place is a different request
    entries = _store.setdefault(tag, OrderedDict())
    key = (digest, id(rows), getattr(rows, "_version", 0), view, str(device))
    hit = entries.get(key)
    if hit is not None and hit[0] is rows:
        entries.move_to_end(key)
        return _copy(hit[1])
    out = compute()
    size = _bytes(out)
    if size <= MAX_BYTES:
        entries[key] = (rows, _copy(out), size)
        while len(entries) > MAX_ENTRIES or sum(e[2] for e in entries.values()) > MAX_BYTES:
            entries.popitem(last=False)
    return out


def _bytes(out: Any) -> int:
    if torch.is_tensor(out):
        return out.numel() * out.element_size()
    return sum(_bytes(o) for o in out) if isinstance(out, tuple) else 0


def _copy(out: Any) -> Any:
    if torch.is_tensor(out):
        return out.clone()
    return tuple(_copy(o) for o in out) if isinstance(out, tuple) else out


__all__ = ["MAX_ENTRIES", "MAX_BYTES", "shared_outputs", "unshared", "outputs_once", "weights_hash"]
