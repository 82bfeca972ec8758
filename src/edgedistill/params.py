"""Typed parameters: a regime, an augmentation or a generator declares its parameters once, as a pydantic model.

The model gives the defaults, the bounds (``Field(ge=0, le=1)``), the choices (``Literal``) and a one-line doc per
field (``Field(description=...)``). Validation is strict: a bool is not a number, a string is not a number, an
integer field refuses 2.5, and NaN or infinity is refused, so a recipe typo fails before training with the key's
path (``method.params.alpha: ...``) and exit code 2, never half-way through a run. ``describe()``, the list of
keys a recipe may set and ``edgedistill list methods --params NAME`` all come from the same model.
"""
from __future__ import annotations

import difflib
import inspect
import math
from types import UnionType
from typing import (Annotated, Any, Callable, ClassVar, Literal, Optional, TypeVar, Union, get_args, get_origin,
                    get_type_hints)

from pydantic import BaseModel, ConfigDict, Strict, TypeAdapter, ValidationError, create_model

from edgedistill.errors import UserInputError, short_repr

P = TypeVar("P", bound="Params")


class Params(BaseModel):
    """Base of every typed parameter set: unknown keys, wrong types and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    #: What a key is called in errors ("unknown parameter for method 'x'"); a model's knobs are "option"s.
    noun: ClassVar[str] = "parameter"

    @classmethod
    def parse(cls: type[P], values: Optional[dict[str, Any]], key: str, what: str = "") -> P:
        """Validate ``values`` (a recipe's mapping) or raise a ``UserInputError`` naming ``key.<field>``."""
        values = dict(values or {})
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise UserInputError(format_errors(err, key, cls, what)) from None

    @classmethod
    def fields_doc(cls) -> list[dict[str, Any]]:
        """One row per field: name, type, default and doc (what ``list methods --params`` prints)."""
        rows = []
        for name, field in cls.model_fields.items():
            kind = type_name(field.annotation)
            bounds = [f"{op} {getattr(m, attr)}" for m in field.metadata
                      for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if hasattr(m, attr)]
            rows.append({"name": name, "type": kind, "default": field.get_default(call_default_factory=True),
                         "bounds": ", ".join(bounds), "doc": field.description or ""})
        return rows


_SIGNATURE_MODELS: dict[tuple[Any, tuple[str, ...], str], type[Params]] = {}


def signature_params(fn: Callable[..., Any], skip: tuple[str, ...] = (), noun: str = "parameter") -> type[Params]:
    """A ``Params`` model of ``fn``'s keyword parameters (all but ``skip``), typed by its annotations or, where it
    has none, by its defaults' types: for callables whose signature is their declaration (a zoo model's knobs, a
    loss's hyperparameters). Every field is optional (the callable fills its own defaults); a parameter whose type
    pydantic cannot check (a tensor, a module) is taken as given. None for a callable with ``**kwargs``."""
    cache_key = (fn, skip, noun)
    if cache_key in _SIGNATURE_MODELS:
        return _SIGNATURE_MODELS[cache_key]
    try:
        hints = get_type_hints(fn)
    except Exception:  # unresolvable annotations only weaken the check, they are not an error
        hints = {}
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip or p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        kind = hints.get(p.name)
        if kind is None:
            kind = type(default) if isinstance(default, (bool, int, float, str)) else Any
        try:
            TypeAdapter(kind)
        except Exception:  # noqa: BLE001 - a type pydantic cannot validate is passed through unchecked
            kind = Any
        # Scalars strictly (no bool as a number, no "2" as 2); containers laxly (YAML gives lists for tuples).
        fields[p.name] = (Optional[Annotated[kind, Strict()] if kind in (bool, int, float, str) else kind], default)
    extra = "allow" if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()) else "forbid"
    base = type(f"{getattr(fn, '__qualname__', 'fn')}Base", (Params,), {"noun": noun})
    model = create_model(f"{getattr(fn, '__qualname__', 'fn')}Params".replace(".", "_"), __base__=base, **fields)
    model.model_config = {**model.model_config, "extra": extra, "strict": False, "arbitrary_types_allowed": True}
    model.model_rebuild(force=True)
    _SIGNATURE_MODELS[cache_key] = model
    return model


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The (nested) model whose fields an error at ``loc`` is about: ``generator.depth`` -> the generator's model."""
    for part in loc:
        field = model.model_fields.get(str(part))
        inner = [a for a in (field.annotation, *get_args(field.annotation)) if isinstance(a, type)
                 and issubclass(a, BaseModel)] if field is not None else []
        if not inner:
            break
        model = inner[0]
    return model


def type_name(ann: Any) -> str:
    """A readable type: ``float``, ``Literal['probs', 'logits']``, ``Optional[list[float]]`` (bounds inside
    ``Annotated`` are left out: ``fields_doc`` lists the field's own bounds)."""
    origin, args = get_origin(ann), get_args(ann)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is Union or origin is UnionType:
        rest = [a for a in args if a is not type(None)]
        inner = ", ".join(type_name(a) for a in rest)
        return f"Optional[{inner}]" if len(rest) < len(args) and len(rest) == 1 else f"Union[{inner}]"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    return ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")


#: Any number a model, loss, augmentation, method or dataset takes as a free keyword: beyond this it is a typo
#: (and an int beyond 2**63 crashes torch).
MAX_KNOB = 1e12


def check_free_values(values: dict[str, Any], depth: int = 0) -> None:
    """The keys a model, loss, augmentation, method or dataset takes as free keywords are typed where they are used;
    here, when the recipe is read, every number among them must be finite and within +-``MAX_KNOB`` and every key a
    string. Raises ``ValueError("@key.sub: why")``: ``_format_validation_error`` prefixes the section's path."""
    def walk(value: Any, where: str, level: int) -> None:
        if level > 16:
            raise ValueError(f"@{where}: nested deeper than 16 levels")
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return
        if isinstance(value, (int, float)):
            if abs(value) > MAX_KNOB or not math.isfinite(value):  # abs first: a huge int overflows isfinite
                raise ValueError(f"@{where}: expected a finite number within +-{MAX_KNOB:.0e}, got {short_repr(value)}")
        elif isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ValueError(f"@{where}: key {short_repr(k)} is not a name (a string)")
                walk(v, f"{where}.{k}", level + 1)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{where}.{i}", level + 1)

    for key, value in values.items():
        if not isinstance(key, str):
            raise ValueError(f"key {short_repr(key)} is not a name (a string)")
        walk(value, key, depth)


def format_errors(err: ValidationError, key: str, model: type[BaseModel], what: str = "") -> str:
    """``key.field: message (got value)`` for the first errors, with a spelling hint for unknown keys."""
    parts = []
    for e in err.errors()[:3]:
        path = ".".join(str(p) for p in e["loc"])
        where = f"{key}.{path}" if path and key else (path or key)
        if e["type"] == "extra_forbidden":
            allowed = list(_model_at(model, e["loc"][:-1]).model_fields)
            close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            target = f" for {what}" if what else ""
            noun = getattr(model, "noun", "parameter")
            parts.append(f"{where}: unknown {noun}{target}; expected one of: {', '.join(allowed) or '(none)'}.{hint}")
            continue
        msg = e["msg"].removeprefix("Value error, ")  # a validator's message reads as it is written
        if e["type"] in ("finite_number",):
            msg = "expected a finite number"
        parts.append(f"{where}: {msg}, got {short_repr(e.get('input'))}")
    more = f" (+{len(err.errors()) - 3} more)" if len(err.errors()) > 3 else ""
    return "; ".join(parts) + more
