"""Modules passed to the Python API as objects (``edgedistill.distill(student=my_net)``), as recipe models.

A recipe names a model by text, so an object reaches the recipe machinery as ``model: "object:<Class>.<hash>"``. The hash
(``object_ref``) covers what determines the module before training: the module path and qualified name of every
class in it, the bytes of each class's source file (when it has one), its ``repr`` (layer sizes and options) and
its ``state_dict`` (every tensor's dtype, shape and bytes). The cache keys of the runs hold it, so a second call
with the same objects reuses trained teachers and baselines, and a changed object (one weight, an edited class)
never reuses a stale entry. Plain Python attributes that are neither parameters, buffers, options shown by
``repr`` nor source are not seen: set such options through the constructor.

``bound_objects({ref: module})`` makes refs buildable for the duration of one call. It is a ``ContextVar``, not a
module-level dict, so two runs (threads, async tasks, nested calls) never see each other's objects, and nothing
outlives the call. Outside it (the run's ``config.yaml`` re-run from the CLI, ``edgedistill export``) a ref cannot
be rebuilt and says so, with what to do instead.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.io import content_digest, sha256_file
from edgedistill.models.modes import evaluating

PREFIX = "object:"
#: Hex digits of the hash kept in the ref: 96 bits, as many as the model cache's keys.
HASH_CHARS = 24

_BOUND: ContextVar[Mapping[str, nn.Module]] = ContextVar("edgedistill_bound_objects", default={})


@contextlib.contextmanager
def bound_objects(mapping: Mapping[str, nn.Module]) -> Iterator[None]:
    """Make the refs in ``mapping`` (``object_ref(module) -> module``) buildable inside the block, on top of any
    bound by an enclosing block; the binding ends with the block, even when it raises."""
    token = _BOUND.set({**_BOUND.get(), **mapping})
    try:
        yield
    finally:
        _BOUND.reset(token)


def object_ref(module: Any, key: str = "model") -> str:
    """``object:<Class>.<hash>``: the recipe name of ``module``; equal for equal classes, source, options and
    weights (the hash covers everything; the class name is there for people reading reports)."""
    if not isinstance(module, nn.Module):
        raise UserInputError(f"{key}: expected a torch.nn.Module, got {type(module).__name__}")
    h = hashlib.sha256()
    files: dict[str, str] = {}
    classes = {type(m) for m in module.modules()}
    for cls in sorted(classes, key=lambda c: (c.__module__, c.__qualname__)):
        h.update(f"class {cls.__module__}:{cls.__qualname__}\n".encode())
        try:
            source = inspect.getsourcefile(cls)
        except (TypeError, OSError):  # a class defined in an interactive session has no file
            source = None
        if source and Path(source).is_file():
            if source not in files:
                files[source] = sha256_file(Path(source))[0]
            h.update(f"source {files[source]}\n".encode())
    h.update(repr(module).encode())
    h.update(content_digest(module.state_dict()).encode())
    # The class name first: reports and config.yaml then say what the object was (ModelConfig.label).
    return f"{PREFIX}{type(module).__name__}.{h.hexdigest()[:HASH_CHARS]}"


def object_identity(name: str) -> str:
    """The hash part of an ``object:<Class>.<hash>`` ref (what cache keys hold besides the ref itself)."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def unbound_message(name: str, key: Optional[str]) -> str:
    where = f"{key}.model" if key else "model"
    return (f"{where} '{name}' was a Python object passed to edgedistill.distill(); it can only be rebuilt in that "
            "call: export from Python with Distilled.export() or edgedistill.api.export_run(run_dir, module), "
            "or give the model by import path ('pkg.module:Class') to use it from a recipe or the CLI")


def build_object_model(
    name: str, in_channels: int, n_outputs: int, input_size: tuple[int, ...], key: Optional[str] = None, **knobs: Any
) -> nn.Module:
    """A deep copy of the module bound to ``name`` (so every build starts from the object's own weights and never
    changes the caller's object), checked to map ``(N, in_channels, *input_size)`` to ``(N, n_outputs)``.

    A module passed as an object is already constructed: it takes no options (``knobs``)."""
    module = _BOUND.get().get(name)
    if module is None:
        raise UserInputError(unbound_message(name, key))
    where = key or "model"
    if knobs:
        raise UserInputError(f"{where}.{next(iter(knobs))}: a model passed as a Python object takes no options; "
                             "configure the module before passing it")
    model = copy.deepcopy(module)
    probe = torch.zeros(2, in_channels, *input_size)
    param = next(model.parameters(), None)
    if param is not None:
        probe = probe.to(device=param.device, dtype=param.dtype if param.is_floating_point() else probe.dtype)
    try:
        with torch.no_grad(), evaluating(model):
            out = model(probe)
    except (RuntimeError, ValueError, TypeError) as exc:
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserInputError(f"{where}: the module ({type(module).__name__}) cannot run on inputs of shape "
                             f"{(in_channels, *input_size)} per sample: {msg}") from None
    if not torch.is_tensor(out) or tuple(out.shape) != (2, n_outputs):
        got = tuple(out.shape[1:]) if torch.is_tensor(out) else type(out).__name__
        raise UserInputError(f"{where}: the module ({type(module).__name__}) outputs {got} per sample; the data needs "
                             f"({n_outputs},) (one output per class or regression target)")
    return model
