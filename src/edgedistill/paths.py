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
