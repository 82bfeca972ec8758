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


def existing_cache_dir() -> Optional[Path]:
    """The cache folder if it exists, else None: what may be kept there in passing (parsed bundled sets, size-budget
    verdicts) is written only into a folder a trained model created, so checking or reading never creates it."""
    folder = default_cache_dir()
    return folder if folder.is_dir() else None


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


def regular_file(path: Path, what: str) -> Path:
    """``path`` if it is a regular file (links followed), else a ``UserInputError`` saying what is there instead: a
    folder, a FIFO or a device would block or stream for ever where a file is read (a recipe, data, a checkpoint)."""
    import stat

    from edgedistill.errors import UserInputError

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserInputError(f"{what} '{path}' does not exist") from None
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a loop of links
        raise UserInputError(f"{what} {str(path)[:200]!r} is not a usable path ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device" if (
            stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise UserInputError(f"{what} '{path}' is {kind}, not a regular file")
    return path
