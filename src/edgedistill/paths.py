"""Where edgedistill keeps what it can recompute: the cache folder (trained teachers, persistence images).

A neutral core module (no torch, nothing above it): the teacher cache (experiment) and the persistence-image
cache (data.topology) both ask it, so neither reaches into the other's layer.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def default_cache_dir(explicit: Optional[Path] = None) -> Path:
    """``explicit`` if given, else ``$EDGEDISTILL_CACHE``, else ``~/.cache/edgedistill``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("EDGEDISTILL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgedistill"


def inside(root: Path, *parts: str, what: str = "a name") -> Path:
    """``root / parts...``, refused (``UserInputError``) unless it stays inside ``root`` once resolved: the one
    check every write of a run, sweep or cache passes, so no recipe-provided name ever writes elsewhere."""
    from edgedistill.errors import UserInputError

    root_resolved = Path(root).resolve()
    target = Path(root).joinpath(*parts)
    resolved = target.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise UserInputError(f"{what} {'/'.join(parts)!r} would write outside '{root}'; use a plain name "
                             "(letters, digits, '.', '_' or '-')")
    return target
