"""Trained teachers (and student-alone baselines) cached by a hash of what determines them.

The key is sha256 over (data fingerprint, model name and knobs, training config, seed, view, cache
format). A cached entry is a folder ``<cache>/models/<key>/`` with ``weights.pt`` (state dict, loaded
weights-only), ``summary.json``, ``key.json`` and ``manifest.json``; it is trained in ``<key>.partial/``
(resumable: an interrupted teacher continues from its last epoch) and renamed into place only when complete.
A file lock (``<key>.lock``) keeps two processes from training the same entry twice, on one machine or on several
sharing the cache folder (NFS): the first trains, the others print once whom they wait for (the lock file holds
the holder's pid and host), then read the finished entry. ``flock`` locks die with their holder: the kernel
releases them when the process ends however it ends, and on NFS (where Linux maps ``flock`` to POSIX locks held
by the server) the server releases them when the holder's host reboots or, with NFSv4, stops renewing its lease
(90 s by default). The dead holder's ``<key>.partial/`` is never trusted as finished: only the rename publishes an
entry, and the next holder of the lock resumes the partial training from its last checkpoint.

Integrity: ``manifest.json``, written last, records the byte size and sha256 of the other three files and the
metrics the weights were saved with. An entry is used only when every file matches it (torch itself loads
flipped bytes inside a tensor without complaint). An entry that does not match (flipped or truncated bytes, a
missing or unreadable manifest, a file gone) is moved, whole, to ``<cache>/quarantine/<key>-<time>/`` (never
deleted), a one-line warning on stderr names that folder and the reason, and the entry is trained again. Entries
written before manifests existed have none and are treated the same way: whether their bytes are still the ones
written cannot be known, and retraining once is cheaper than distilling from a damaged teacher. A ``.partial``
folder whose ``last.pt`` cannot be read is quarantined the same way and its training restarts.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from edgedistill.engine import checkpoint as ckpt
from edgedistill.io import content_record, environment_error, make_dirs, remove_stale_temp, write_json
from edgedistill.paths import default_cache_dir  # noqa: F401 - re-exported: the cache root lives in core

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
#: The files of a complete entry that the manifest covers.
ENTRY_FILES = ("weights.pt", "summary.json", "key.json")


def cache_key(parts: dict[str, Any]) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _holder(fh: Any) -> str:
    """Who holds the lock, from what it wrote into the lock file ("pid N on host H"); the holder writes it just
    after taking the lock, so an empty file is read again for a moment before saying "another process"."""
    for _ in range(10):
        fh.seek(0)
        try:
            who = json.loads(fh.read() or "null")
        except ValueError:
            who = None
        if isinstance(who, dict):
            return f"pid {who.get('pid')} on host {who.get('host')}"
        time.sleep(0.05)
    return "another process"


@contextlib.contextmanager
def _locked(path: Path, waiting: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``; ``waiting(holder)`` is called once if another process holds it."""
    make_dirs(path.parent)
    try:
        fh = open(path, "a+")  # not "w": a waiter must not erase what the holder wrote
    except OSError as exc:
        raise environment_error(exc, path, "create the lock file") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(_holder(fh))
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
            fh.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                fh.truncate(0)
                fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _metrics(summary: Any) -> dict[str, Any]:
    return {k: summary.get(k) for k in ("val", "test")} if isinstance(summary, dict) else {}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)  # NaN metrics compare equal as text, not as floats


class ModelCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "models"
        self.quarantine_root = Path(root) / "quarantine"

    def entry(self, key: str) -> Path:
        return self.root / key

    def _check(self, key: str) -> Union[tuple[dict[str, Any], dict[str, Any]], str, None]:
        """(state_dict, summary) of a complete entry that matches its manifest; None when there is no entry;
        otherwise why the entry cannot be used (one phrase)."""
        folder = self.entry(key)
        if not folder.is_dir():
            return None
        try:
            manifest = json.loads((folder / MANIFEST).read_bytes())
        except FileNotFoundError:
            return f"no {MANIFEST} (an entry written before integrity checks, or an unfinished write)"
        except (OSError, ValueError) as exc:
            return f"{MANIFEST} is not readable JSON ({type(exc).__name__})"
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or any(not isinstance(files.get(n), dict) for n in ENTRY_FILES):
            return f"{MANIFEST} does not list {', '.join(ENTRY_FILES)}"
        content: dict[str, bytes] = {}
        for name in ENTRY_FILES:
            try:
                # One read serves both the hash and the load, so what is checked is what is used.
                content[name] = (folder / name).read_bytes()
            except OSError as exc:
                return f"{name} cannot be read ({exc.strerror or type(exc).__name__})"
            want = files[name]
            if len(content[name]) != want.get("bytes"):
                return f"{name} has {len(content[name])} bytes, the manifest says {want.get('bytes')} (truncated or replaced)"
            if content_record(content[name])["sha256"] != want.get("sha256"):
                return f"{name} does not match its sha256 in the manifest (corrupted bytes)"
        try:
            summary = json.loads(content["summary.json"])
            state = ckpt.load(folder / "weights.pt", data=content["weights.pt"], hint="")
        except (ValueError, ckpt.UnreadableCheckpoint) as exc:
            return f"its files match the manifest but cannot be loaded ({str(exc)[:160]})"
        if _canonical(manifest.get("metrics")) != _canonical(_metrics(summary)):
            return "summary.json's metrics differ from those the weights were saved with"
        return state, summary

    def lookup(self, key: str) -> Optional[tuple[dict[str, Any], dict[str, Any]]]:
        """(state_dict, summary) of a complete entry that passes its integrity check, or None (a failing entry is
        left where it is: ``get_or_train`` moves it aside under the entry's lock)."""
        try:
            hit = self._check(key)
        except OSError:  # moved aside by another process while we read it
            return None
        return hit if isinstance(hit, tuple) else None

    def _quarantine(self, folder: Path, why: str) -> Path:
        """Move ``folder`` to ``<cache>/quarantine/<name>-<time>/`` and say so on stderr in one line."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        make_dirs(self.quarantine_root)
        target = self.quarantine_root / f"{folder.name}-{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = self.quarantine_root / f"{folder.name}-{stamp}-{n}"
        try:
            os.replace(folder, target)
        except OSError as exc:
            raise environment_error(exc, folder, "move aside the damaged cache entry") from None
        print(f"warning: cache entry '{folder}' failed its integrity check: {why}; moved to '{target}' "
              f"(delete it when no longer needed); training it again", file=sys.stderr)
        return target

    def _heal_partial(self, partial: Path) -> None:
        """Quarantine an unfinished entry whose ``last.pt`` cannot be read, so its training restarts."""
        remove_stale_temp(partial)
        remove_stale_temp(partial / "checkpoints")
        last = partial / "checkpoints" / "last.pt"
        if last.exists():
            try:
                ckpt.load(last, hint="")
            except ckpt.UnreadableCheckpoint as exc:
                self._quarantine(partial, f"checkpoints/last.pt is unusable ({str(exc)[:200]})")

    def get_or_train(
        self, key: str, parts: dict[str, Any], train: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]
    ) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """Return (state_dict, summary, was_cached). ``train(partial_dir)`` trains into the given folder,
        resuming whatever it finds there, and returns (state_dict, summary)."""
        hit = self.lookup(key)
        if hit is not None:
            return hit[0], hit[1], True
        def waiting(holder: str) -> None:
            print(f"waiting for cache entry {key} being trained by {holder} (it is read back when done)",
                  file=sys.stderr, flush=True)

        with _locked(self.root / f"{key}.lock", waiting):
            checked = self._check(key)  # another process may have finished it while we waited
            if isinstance(checked, tuple):
                return checked[0], checked[1], True
            if checked is not None:
                self._quarantine(self.entry(key), checked)
            partial = self.root / f"{key}.partial"
            self._heal_partial(partial)
            state, summary = train(partial)
            ckpt.save(partial / "weights.pt", state)
            write_json(partial / "key.json", parts)
            write_json(partial / "summary.json", summary)
            files = {name: content_record((partial / name).read_bytes()) for name in ENTRY_FILES}
            # Written last: its presence says the entry is complete, its content what the files must be.
            write_json(partial / MANIFEST, {"format": MANIFEST_FORMAT, "files": files, "metrics": _metrics(summary)})
            final = self.entry(key)
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            return state, summary, False
