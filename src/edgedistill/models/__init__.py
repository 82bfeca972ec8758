"""Model zoo, the recipe-facing builder, feature taps and size accounting.

Models are plain ``nn.Module``s that map ``(N, C, L)`` or ``(N, C, H, W)`` to ``(N, n_outputs)``; they
know nothing about distillation. Distillation reads intermediate features through ``FeatureTaps``
(forward hooks by module path), so any user model works without rewriting it.

Importing this package is cheap: the zoo modules load on the first registry lookup and the torch-backed
helpers (``FeatureTaps``, ``count_params``, ...) on first attribute access.
"""
from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable

from edgedistill.errors import UserInputError
from edgedistill.params import signature_params
from edgedistill.registry import MODELS

if TYPE_CHECKING:
    from torch import nn

    from edgedistill.models.size import count_params, describe, size_kb
    from edgedistill.models.taps import FeatureTaps, extract, module_paths, resolve

__all__ = [
    "KnobError",
    "build_model",
    "model_identity",
    "FeatureTaps",
    "module_paths",
    "resolve",
    "extract",
    "count_params",
    "size_kb",
    "describe",
]

_LAZY = {
    "FeatureTaps": "taps",
    "module_paths": "taps",
    "resolve": "taps",
    "extract": "taps",
    "count_params": "size",
    "size_kb": "size",
    "describe": "size",
}

_INPUT_RANK = {"1d": 1, "2d": 2}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"edgedistill.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgedistill.models' has no attribute '{name}'")


class KnobError(UserInputError):
    """A factory knob has a bad value; carries the knob name so ``build_model`` can report its recipe path."""

    def __init__(self, knob: str, reason: str) -> None:
        super().__init__(f"{knob}: {reason}")
        self.knob = knob
        self.reason = reason


def build_model(
    name: str,
    in_channels: int,
    n_outputs: int,
    input_size: tuple[int, ...],
    key: str | None = None,
    **knobs: Any,
) -> nn.Module:
    """Build zoo model ``name``; every recipe mistake becomes a one-line ``UserInputError`` naming ``key``.

    ``key`` is the recipe path of the model section (``"student"``, ``"teacher"``) so that messages read
    ``student.width: ...`` and the user knows which line of the recipe to fix. A ``name`` with a colon is the
    user's own class (``models.user``: ``pkg.mod:Class``, ``/abs/nets.py:Class``) or a module passed to the Python
    API as an object (``models.objects``: ``object:<Class>.<hash>``).
    """
    if name.startswith("object:"):
        from edgedistill.models.objects import build_object_model

        return build_object_model(name, in_channels, n_outputs, tuple(input_size), key=key, **knobs)
    if ":" in name:
        from edgedistill.models.user import build_user_model

        return build_user_model(name, in_channels, n_outputs, tuple(input_size), key=key, **knobs)
    entry = MODELS.entry(name, key=key)
    where = key or "model"
    _check_dims(entry.meta.get("kind"), name, where, in_channels, n_outputs, input_size)
    _check_knobs(entry.obj, name, key, knobs)
    from edgedistill.models.size import check_budget

    # Sized on the meta device first: a typo like width: 100000 is refused before it allocates gigabytes.
    check_budget(entry.obj, in_channels, n_outputs, tuple(input_size), knobs, where, name)
    try:
        return entry.obj(in_channels, n_outputs, tuple(input_size), **knobs)
    except KnobError as exc:
        raise UserInputError(f"{_path(key, exc.knob)}: {exc.reason} (model '{name}')") from exc
    except UserInputError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in knobs.items()) or "default options"
        raise UserInputError(f"{where}: cannot build model '{name}' with {given}: {exc}") from exc


def _path(key: str | None, knob: str) -> str:
    return f"{key}.{knob}" if key else knob


def _check_dims(
    kind: str | None, name: str, where: str, in_channels: Any, n_outputs: Any, input_size: Any
) -> None:
    for label, value in (("in_channels", in_channels), ("n_outputs", n_outputs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserInputError(f"{where}: model '{name}' needs a positive integer {label}, got {value!r}")
    try:
        sizes = tuple(input_size)
    except TypeError:
        sizes = ()
    rank = _INPUT_RANK.get(kind or "", len(sizes))
    if len(sizes) != rank or not all(isinstance(s, int) and s > 0 for s in sizes):
        shape = "(length,)" if rank == 1 else "(height, width)"
        raise UserInputError(
            f"{where}: model '{name}' takes {rank}-D inputs and needs input_size {shape} of positive "
            f"integers, got {input_size!r}"
        )


def _check_knobs(factory: Callable[..., Any], name: str, key: str | None, knobs: dict[str, Any]) -> None:
    """Reject unknown knobs and type/choice mistakes before constructing anything: the factory's signature after
    (in_channels, n_outputs, input_size) is its typed parameter declaration (``params.signature_params``)."""
    first = tuple(list(inspect.signature(factory).parameters)[:3])
    signature_params(factory, skip=first, noun="option").parse(knobs, key or "", what=f"model '{name}'")




def model_identity(name: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """What determines a model before training, for cache keys: the zoo name and knobs (a zoo model is defined by
    this toolkit's version, which every key holds); for the user's class also a hash of its source
    (``models.user``), so an edited class never reuses a model trained from the old one."""
    if name.startswith("object:"):
        from edgedistill.models.objects import object_identity

        return {"name": name, **knobs, "object": object_identity(name)}
    if ":" not in name:
        return {"name": name, **knobs}
    from edgedistill.models.user import source_identity

    return {"name": name, **knobs, "source": source_identity(name)}
