"""How a recipe term's taps reach its loss: the feature roles and their recipe keys, a term's tap spec (one module
path or default tap name, or a list of them for multi-stage losses), the forward hooks on each network, and the
tapped maps handed to the loss by role. Used by ``methods.terms``."""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from edgedistill.errors import UserInputError

if TYPE_CHECKING:
    from edgedistill.models.taps import FeatureTaps

# Feature roles are read through forward hooks: role -> (network, recipe key naming the tap, default tap).
# A tap is a module path or a zoo model's default tap name ("feat": last feature map, "emb": pooled embedding).
FEATURE_ROLES = {
    "student_feat": ("student", "student_tap", "feat"),
    "student_emb": ("student", "student_tap", "emb"),
    "teacher_feat": ("teacher", "teacher_tap", "feat"),
    "teacher_emb": ("teacher", "teacher_tap", "emb"),
}
TAP_KEYS = {"student": "student_tap", "teacher": "teacher_tap"}


def feature_key(network: str, tap: str) -> str:
    """Where a method stores a tapped feature among the tensors it offers the terms."""
    return f"{network}@{tap}"


def tap_spec(spec: Any, where: str) -> Union[str, tuple[str, ...]]:
    """A term's tap: one name/path, or a non-empty list of them (the loss gets the list of maps, in that order)."""
    if isinstance(spec, (list, tuple)):
        if not spec or not all(isinstance(s, str) and s for s in spec):
            raise UserInputError(f"{where}: a list of taps must hold at least one tap name or module path, got {spec!r}")
        return tuple(spec)
    return str(spec)


def reads_maps(call: Callable[..., Any], role: str) -> bool:
    """Whether the loss takes a list of maps for ``role``: its annotation names a Sequence (FSP, KD-SVD, ReviewKD)."""
    import typing

    try:
        hint = typing.get_type_hints(call).get(role)
    except (NameError, TypeError):  # an annotation that cannot be resolved: read as written
        hint = inspect.signature(call).parameters[role].annotation
    return "Sequence" in str(hint)


def tapped(tensors: dict[str, torch.Tensor], role: str, spec: Union[str, tuple[str, ...]]) -> Any:
    network = FEATURE_ROLES[role][0]
    if isinstance(spec, tuple):
        return [tensors[feature_key(network, s)] for s in spec]
    return tensors[feature_key(network, spec)]


def feature_taps(model: nn.Module, terms: Sequence[Any], network: str) -> Optional[FeatureTaps]:
    """Hooks for every tap the terms read from ``model`` (``network`` is "student" or "teacher"); None when
    no term reads its features. A tap spec is a module path or a name in the model's ``default_taps``."""
    from edgedistill.models import FeatureTaps

    specs: dict[str, str] = {}
    defaults = getattr(model, "default_taps", {})
    for term in terms:
        for role, given in term.taps.items():
            for spec in (given if isinstance(given, tuple) else (given,)):
                if FEATURE_ROLES[role][0] != network or spec in specs:
                    continue
                try:
                    specs[spec] = defaults.get(spec, spec)
                    FeatureTaps(model, {spec: specs[spec]})  # resolves now: a bad path fails before training
                except UserInputError as exc:
                    raise UserInputError(f"{term.key}.{TAP_KEYS[network]}: {exc}") from None
    return FeatureTaps(model, specs) if specs else None


def tapped_features(network: str, taps: Optional[FeatureTaps]) -> dict[str, torch.Tensor]:
    return {feature_key(network, name): value for name, value in taps.outputs.items()} if taps is not None else {}


def per_sample_shape(term: Any, network: str, tensors: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """Shape (without batch) of the first tensor of ``network`` the term reads: feature, embedding or logits."""
    for role in (f"{network}_feat", f"{network}_emb", f"{network}_logits"):
        if role in term.roles:
            spec = term.taps.get(role)
            if isinstance(spec, tuple):  # several taps: the shape of each, for a module built on a list of maps
                return tuple(tuple(tensors[feature_key(network, s)].shape[1:]) for s in spec)  # type: ignore[return-value]
            name = feature_key(network, spec) if spec is not None else role
            return tuple(tensors[name].shape[1:])
    return ()
