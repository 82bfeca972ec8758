"""Every archive module's ``ARCHIVE`` registered in ``DATASETS``, read through the prepared-window cache.

A recipe's ``data: {name: pamap2, root: ~/data, params: {...}}`` reaches ``ArchiveLoader(root=..., **params)``:
the archive's folder is found under the root (``base.find_folder``), and the windows its loader cuts are cached
under ``<model cache>/windows/<name>-<key>/`` as ``.npy`` files that later runs open memory-mapped, so a second
start skips parsing. The key is a hash of the loader's code (its module and base.py, by content), the protocol
(the loader's keyword defaults filled in) and every file of the archive's folder by relative path, size and modification time: editing,
adding or replacing a file prepares again. (Content hashes would read a 1.6 GB archive on every start; size and
time change whenever a file is rewritten.) The same key is in the data fingerprint of a run, so teachers cached
for one version of an archive are never reused for another.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgedistill.data.archives.base import Archive, data_root, find_folder
from edgedistill.data.raw import RawData
from edgedistill.errors import UserInputError
from edgedistill.io import make_dirs, write_json
from edgedistill.paths import default_cache_dir
from edgedistill.registry import DATASETS

#: The archive modules: each defines ARCHIVE (or ARCHIVES). One not importable here (a module not written yet) is not registered.
MODULES = ("uci_har", "wisdm", "mhealth", "pamap2", "opportunity", "daphnet", "bci_iv_2a", "gaitrec", "ucr_uea", "cifar")
CACHE_VERSION = "windows-v1"  # bump when the cache layout changes
_ARRAYS = ("x", "y", "group", "test_x", "test_y", "test_group")


def archives() -> dict[str, Archive]:
    """name -> Archive of every archive module present."""
    found = {}
    for mod in MODULES:
        try:
            module = importlib.import_module(f"edgedistill.data.archives.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"edgedistill.data.archives.{mod}":
                continue
            raise
        # A module defines ARCHIVE, or ARCHIVES when one format serves several archives (CIFAR-10 and CIFAR-100).
        for archive in getattr(module, "ARCHIVES", None) or (module.ARCHIVE,):
            found[archive.name] = archive
    return found


def protocol(archive: Archive, params: dict[str, Any]) -> dict[str, Any]:
    """The loader's protocol keys with its defaults filled in and ``params`` applied."""
    sig = inspect.signature(archive.load)
    full = {p.name: p.default for p in sig.parameters.values() if p.name != "folder" and p.default is not p.empty}
    return {**full, **params}


def files_fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    out = []
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = Path(dirpath) / n
            st = p.stat()
            out.append((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _code_hash(archive: Archive) -> str:
    """The loader's module and the shared helpers, by content: a changed loader never serves its old windows."""
    import sys

    from edgedistill.data.archives import base

    h = hashlib.sha256()
    for module in (sys.modules[archive.load.__module__], base):
        h.update(Path(str(module.__file__)).read_bytes())
    return h.hexdigest()


def cache_key(archive: Archive, folder: Path, params: dict[str, Any]) -> str:
    doc = {"version": CACHE_VERSION, "archive": archive.name, "protocol": protocol(archive, params),
           "files": files_fingerprint(folder), "code": _code_hash(archive)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _save(raw: RawData, into: Path) -> None:
    """Write ``raw`` as .npy arrays + meta.json into a fresh folder, then rename it in place (never half-written)."""
    tmp = into.with_name(into.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    make_dirs(tmp)
    views = {**{f"view.{k}": v for k, v in raw.views.items()}, **{f"test_view.{k}": v for k, v in raw.test_views.items()}}
    for name, arr in [*((a, getattr(raw, a)) for a in _ARRAYS), *views.items()]:
        if arr is not None:
            a = np.asarray(arr)
            np.save(tmp / f"{name}.npy", a.astype(str) if a.dtype == object else a, allow_pickle=False)
    meta = {"task": raw.task, "classes": raw.classes, "name": raw.name, "channels": raw.channels, "notes": raw.notes,
            "views": sorted(raw.views), "test_views": sorted(raw.test_views)}
    write_json(tmp / "meta.json", meta)
    if (into / "meta.json").is_file():  # another process prepared the same key meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(into, ignore_errors=True)  # a damaged entry (no meta.json) is replaced
    os.replace(tmp, into)


def _open(folder: Path) -> RawData:
    meta = json.loads((folder / "meta.json").read_text())

    def arr(name: str) -> Optional[np.ndarray]:
        p = folder / f"{name}.npy"
        return np.load(p, mmap_mode="r", allow_pickle=False) if p.is_file() else None

    return RawData(x=arr("x"), y=np.asarray(arr("y")), task=meta["task"], group=arr("group"),
                   views={k: arr(f"view.{k}") for k in meta["views"]}, test_x=arr("test_x"), test_y=arr("test_y"),
                   test_group=arr("test_group"), test_views={k: arr(f"test_view.{k}") for k in meta["test_views"]},
                   classes=meta["classes"], name=meta["name"], channels=meta["channels"], notes=meta["notes"])


def locate(archive: Archive, root: Optional[str | Path], params: dict[str, Any]) -> tuple[Path, Path]:
    """(the folder the loader reads, the folder whose files key the cache): the archive's folder for both, or for
    an archive with ``locate`` (files that depend on the protocol) the archive folder and what ``locate`` finds."""
    if archive.locate is None:
        folder = find_folder(archive, root)
        return folder, folder
    folder = data_root(root) / archive.folder
    return folder, archive.locate(folder, protocol(archive, params))


def load_cached(archive: Archive, root: Optional[str | Path], params: dict[str, Any],
                cache_root: Optional[Path] = None) -> tuple[RawData, bool]:
    """(the archive's windows, whether they came from the cache). A damaged cache folder is prepared again."""
    folder, keyed = locate(archive, root, params)
    where = (cache_root or default_cache_dir()) / "windows" / f"{archive.name}-{cache_key(archive, keyed, params)[:20]}"
    if (where / "meta.json").is_file():
        try:
            return _open(where), True
        except (OSError, ValueError, KeyError):
            shutil.rmtree(where, ignore_errors=True)
    raw = archive.load(folder, **params)
    if not isinstance(raw, RawData):
        raise UserInputError(f"dataset '{archive.name}': its loader returned {type(raw).__name__}, expected RawData")
    try:
        make_dirs(where.parent)
        _save(raw, where)
        return _open(where), False
    except OSError:  # a read-only cache: the windows are still good, only not kept for the next start
        return raw, False


class ArchiveLoader:
    """The ``DATASETS`` entry of one archive: called with the recipe's ``data.root`` and ``data.params``. Its
    signature is the archive loader's protocol keys, so ``data.params`` is checked against them."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        sig = inspect.signature(archive.load)
        self.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "folder"])
        self.__doc__ = archive.doc
        self.__wrapped__ = archive.load  # type hints resolve in the loader's module

    def __call__(self, root: Optional[str | Path] = None, **params: Any) -> RawData:
        return load_cached(self.archive, root, params)[0]

    def fingerprint(self, root: Optional[str | Path], params: dict[str, Any]) -> str:
        return cache_key(self.archive, locate(self.archive, root, params)[1], params)


for _archive in archives().values():
    DATASETS.register(_archive.name, task=_archive.task, kind=_archive.kind, archive=True)(ArchiveLoader(_archive))
