"""One small generic registry, shared by datasets, models, losses and methods.

A registry maps a name to a callable plus a one-line doc. Registration happens at import time of the
module that defines the object (``@LOSSES.register("kd")``); a registry never imports code a recipe names. (The
user's own model classes, named by import path, are not registered: ``models.user`` imports them, within the bounds
docs/models.md states.)
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from edgedistill.errors import UserInputError

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    doc: str
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> callable. ``modules`` are imported on first lookup so heavy code loads lazily; a name ending in
    ``.*`` imports every module of that package."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._modules = modules
        self._loaded = False

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            doc = (obj.__doc__ or "").strip().splitlines()
            self._entries[name] = Entry(name, obj, doc[0] if doc else "", dict(meta))
            return obj

        return decorate

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for mod in self._modules:
                if mod.endswith(".*"):  # every module of the package: a new model file registers itself
                    package = importlib.import_module(mod[:-2])
                    for info in pkgutil.iter_modules(package.__path__):
                        importlib.import_module(f"{mod[:-2]}.{info.name}")
                else:
                    importlib.import_module(mod)

    def entry(self, name: str, *, key: str | None = None) -> Entry:
        self._load()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            where = f"{key}: " if key else ""
            raise UserInputError(
                f"{where}unknown {self.kind} '{name}'; expected one of: {', '.join(sorted(self._entries))}.{hint}"
            )
        return self._entries[name]

    def get(self, name: str, *, key: str | None = None) -> T:
        return self.entry(name, key=key).obj

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        self._load()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))


def typed_params(entry: Entry) -> Any:
    """The typed parameter model (an ``edgedistill.params.Params`` subclass) an entry declares: a class's
    ``Params`` attribute (methods) or ``params=`` in its registration (augmentations, generators); None if none."""
    model = entry.meta.get("params") or getattr(entry.obj, "Params", None)
    return model if isinstance(model, type) and hasattr(model, "fields_doc") else None


DATASETS: Registry = Registry("dataset", ("edgedistill.data.bundled", "edgedistill.data.synthetic",
                                          "edgedistill.data.grf_synthetic", "edgedistill.data.archives.registered"))
MODELS: Registry = Registry("model", ("edgedistill.models.*",))
LOSSES: Registry = Registry("loss", ("edgedistill.losses",))
METHODS: Registry = Registry("method", ("edgedistill.methods",))
# Augmentations: meta kind = "sample" (x, generator) -> x, or "batch" (x, y_probs, generator) -> (x, y_probs);
# data = "1d" | "2d" | "any"; label_preserving = bool.
AUGMENTS: Registry = Registry("augmentation", ("edgedistill.augment",))

REGISTRIES: dict[str, Registry] = {
    "datasets": DATASETS,
    "models": MODELS,
    "losses": LOSSES,
    "methods": METHODS,
    "augmentations": AUGMENTS,
}
