"""Trained teachers (and student-alone baselines) cached by a hash of what determines them.

The key is sha256 over (data fingerprint, model name and knobs, training config, seed, view, cache
format). A cached entry is a folder ``<cache>/models/<key>/`` with ``weights.pt`` (state dict, loaded
weights-only) and ``summary.json``; it is trained in ``<key>.partial/`` (resumable: an interrupted
teacher continues from its last epoch) and renamed into place only when complete. A file lock keeps two
processes (parallel sweep trials) from training the same entry twice.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from edgedistill.engine import checkpoint as ckpt
from edgedistill.io import read_json, write_json
from edgedistill.paths import default_cache_dir  # noqa: F401 - re-exported: the cache root lives in core

CACHE_FORMAT = 1


def cache_key(parts: dict[str, Any]) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ModelCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "models"

    def entry(self, key: str) -> Path:
        return self.root / key

    def lookup(self, key: str) -> Optional[tuple[dict[str, Any], dict[str, Any]]]:
        """(state_dict, summary) of a complete entry, or None."""
        folder = self.entry(key)
        if not (folder / "summary.json").is_file():
            return None
        return ckpt.load(folder / "weights.pt"), read_json(folder / "summary.json")

    def get_or_train(
        self, key: str, parts: dict[str, Any], train: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]
    ) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """Return (state_dict, summary, was_cached). ``train(partial_dir)`` trains into the given folder,
        resuming whatever it finds there, and returns (state_dict, summary)."""
        hit = self.lookup(key)
        if hit is not None:
            return hit[0], hit[1], True
        with _locked(self.root / f"{key}.lock"):
            hit = self.lookup(key)  # another process may have finished it while we waited
            if hit is not None:
                return hit[0], hit[1], True
            partial = self.root / f"{key}.partial"
            state, summary = train(partial)
            ckpt.save(partial / "weights.pt", state)
            write_json(partial / "key.json", parts)
            write_json(partial / "summary.json", summary)
            final = self.entry(key)
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            return state, summary, False
