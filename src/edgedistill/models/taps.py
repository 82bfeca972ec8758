"""Read intermediate features by module path with forward hooks, never by rewriting the model.

Feature distillation needs the output of, say, ``blocks.2`` in both teacher and student. Hooks make that
work on any ``nn.Module`` (zoo model, ``nn.Sequential``, a user's own network) and leave the model exactly
as it was once the ``with`` block exits, so a deployed student never carries distillation code.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from edgedistill.errors import UserInputError

_MAX_LISTED = 40
#: The tap names every zoo model defines in its ``default_taps`` (the default of a feature loss's student_tap/teacher_tap).
ZOO_TAP_NAMES = ("feat", "emb", "stage1", "stage2")


def module_paths(model: nn.Module) -> list[str]:
    """Every submodule path that ``resolve`` accepts, in definition order (shared modules under each path)."""
    return [name for name, _ in model.named_modules(remove_duplicate=False) if name]


def resolve(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path``; a bad path lists the valid ones and the closest matches. A module that gives
    only its outputs (a loaded program, recorded outputs: ``edgedistill_outputs_only`` says which) has no features."""
    outputs_only = getattr(model, "edgedistill_outputs_only", None)
    if outputs_only:
        raise UserInputError(f"{outputs_only} gives only its outputs; the loss/method reads its features at '{path}': "
                             "use a loss on outputs (kd, dkd, dist, ...) or give the teacher as a model "
                             "(model + load: weights)")
    try:
        module = model.get_submodule(path)
    except AttributeError:
        module = None
    if isinstance(module, nn.Module):
        return module
    paths = module_paths(model)
    close = difflib.get_close_matches(path, paths, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listed = _paths_worth_listing(paths, path)
    shown = ", ".join(listed) or "(the model has no submodules)"
    if len(listed) < len(paths):
        shown += f", ... ({len(paths) - len(listed)} more, see module_paths())"
    if path in ZOO_TAP_NAMES and not hasattr(model, "default_taps"):
        # The user's own class: "feat"/"emb" are names the zoo models define, not paths in this one.
        raise UserInputError(f"tap '{path}' is a zoo model's default tap name, and {type(model).__name__} defines no "
                             "default_taps: set student_tap / teacher_tap to one of its module paths (or give the class "
                             f"a default_taps dict, e.g. {{'{path}': 'blocks.2'}}); valid paths: {shown}.{hint}")
    raise UserInputError(f"tap '{path}' does not exist in {type(model).__name__}; valid paths: {shown}.{hint}")


def _paths_worth_listing(paths: list[str], wrong: str) -> list[str]:
    """All paths for a small model; for a big one the top two levels plus the children of the deepest
    valid prefix of ``wrong`` (``layer3.4.bn3`` -> what ``layer3.4`` contains)."""
    if len(paths) <= _MAX_LISTED:
        return paths
    parts = wrong.split(".")
    prefix = next((".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in paths), "")
    depth = prefix.count(".") + 2 if prefix else 0
    near = {p for p in paths if prefix and p.startswith(prefix + ".") and p.count(".") < depth}
    shallow = [p for p in paths if p.count(".") <= 1 and p not in near]
    keep = near | set(shallow[: max(0, _MAX_LISTED - len(near))])
    return [p for p in paths if p in keep]


class FeatureTaps:
    """Capture the outputs of named submodules during a forward pass.

    ``taps`` maps a name to a module path (or is a list of paths, used as their own names). Use it as a
    context manager, as often as needed::

        taps = FeatureTaps(model, {"s_feat": "blocks.2"})
        with taps:
            out = model(x)
        feats = taps.outputs  # {"s_feat": tensor} from the last forward inside the block

    Hooks exist only inside the ``with`` block (nesting is allowed), so repeated use never accumulates
    hooks. A module returning a tuple (GRU, LSTM, attention) contributes its first element. With
    ``detach=True`` the captured tensors are cut from the graph (e.g. for a frozen teacher).
    """

    def __init__(self, model: nn.Module, taps: Mapping[str, str] | Sequence[str], *, detach: bool = False) -> None:
        if isinstance(taps, str):
            raise UserInputError(f"taps must be a list of paths or a name -> path mapping, got the string {taps!r}")
        self.model = model
        self.paths: dict[str, str] = dict(taps) if isinstance(taps, Mapping) else {p: p for p in taps}
        # Resolve now so a bad path fails before any training step, not in the middle of one.
        self.modules: dict[str, nn.Module] = {name: resolve(model, p) for name, p in self.paths.items()}
        self.detach = detach
        self.outputs: dict[str, Any] = {}
        self._handles: list[RemovableHandle] = []
        self._depth = 0

    @property
    def active(self) -> bool:
        """True while hooks are registered."""
        return bool(self._handles)

    def attach(self) -> FeatureTaps:
        """Register the hooks (idempotent) and start a fresh ``outputs`` dict."""
        self.outputs = {}  # a new dict: references taken from earlier steps stay untouched
        if not self._handles:
            self._handles = [
                module.register_forward_hook(self._make_hook(name)) for name, module in self.modules.items()
            ]
        return self

    def remove(self) -> None:
        """Remove every hook now, whatever the nesting depth; captured ``outputs`` are kept."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._depth = 0

    def missing(self) -> list[str]:
        """Tap names that captured nothing (their module did not run in the forward pass)."""
        return [name for name in self.paths if name not in self.outputs]

    def __enter__(self) -> FeatureTaps:
        if self._depth == 0:
            self.attach()
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            self.remove()

    def _make_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, (tuple, list)) and output:
                output = output[0]
            if self.detach and isinstance(output, torch.Tensor):
                output = output.detach()
            self.outputs[name] = output

        return hook

    def __repr__(self) -> str:
        return f"FeatureTaps({type(self.model).__name__}, {self.paths}, active={self.active})"


def extract(
    model: nn.Module, x: torch.Tensor, paths: Mapping[str, str] | Sequence[str]
) -> tuple[Any, dict[str, Any]]:
    """Run ``model(x)`` once and return ``(outputs, {name: feature})``; raises if a tap did not fire."""
    taps = FeatureTaps(model, paths)
    with taps:
        out = model(x)
    missing = taps.missing()
    if missing:
        raise UserInputError(
            f"taps {', '.join(repr(taps.paths[m]) for m in missing)} produced no output in "
            f"{type(model).__name__}: those modules are not called by forward()"
        )
    return out, dict(taps.outputs)
