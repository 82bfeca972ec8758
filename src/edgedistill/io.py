"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never half. A write the
machine refuses (read-only folder, full disk, no permission) is an ``EnvironmentProblem`` (exit code 4) naming the
file, with the temporary file removed; any other failure propagates unchanged.

Temporary files are named ``.<name>.<pid>-<random>.tmp`` (the writer's process id, so that ``remove_stale_temp``
can tell a temporary file a killed writer left behind from one a live writer is still filling) and ``sha256_file``
gives the content hash that cache entries record in their manifests.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from edgedistill.errors import EdgeDistillError, EnvironmentProblem, UserInputError

#: errno values that mean "the machine will not take this write", with what to do about each.
_ENVIRONMENT = {
    errno.EROFS: "the file system is read-only; choose a writable folder (--out, cache_dir or $EDGEDISTILL_CACHE)",
    errno.EACCES: "no permission to write there; choose a writable folder (--out, cache_dir or $EDGEDISTILL_CACHE)",
    errno.EPERM: "no permission to write there; choose a writable folder (--out, cache_dir or $EDGEDISTILL_CACHE)",
    errno.ENOSPC: "the disk is full; free space and run the same command again (finished work is kept)",
    errno.EDQUOT: "the disk quota is exhausted; free space and run the same command again (finished work is kept)",
}

#: errno values that mean the path itself is wrong (a file where a folder belongs, a name too long): the user's input.
_BAD_PATH = {
    errno.ENOTDIR: "a file stands where a folder is needed; give a folder path",
    errno.EEXIST: "a file stands where a folder is needed; give a folder path",
    errno.EISDIR: "a folder stands where a file is needed; give a file path",
    errno.ENAMETOOLONG: "the name is too long for the file system; give a shorter path",
    errno.EINVAL: "the path is not valid on this file system",
}


def environment_error(exc: OSError, path: Path, doing: str = "write") -> EdgeDistillError | OSError:
    """``exc`` as an ``EnvironmentProblem`` when it is the machine refusing ``doing`` at ``path``, as a
    ``UserInputError`` when the path itself cannot be one (a file in the way, a name too long), else ``exc``."""
    hint = _ENVIRONMENT.get(exc.errno or 0)
    if hint is not None:
        return EnvironmentProblem(f"cannot {doing} '{path}': {exc.strerror or exc}; {hint}")
    hint = _BAD_PATH.get(exc.errno or 0)
    if hint is not None:
        return UserInputError(f"cannot {doing} '{str(path)[:200]}': {exc.strerror or exc}; {hint}")
    return exc


def make_dirs(path: Path) -> Path:
    """``mkdir -p`` that reports a read-only or full disk as an ``EnvironmentProblem``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # exist_ok covers folders only: a file (or a dangling link) holds the name
        raise UserInputError(f"cannot create the folder '{path}': a file of that name exists; give a folder path") from None
    except OSError as exc:
        raise environment_error(exc, path, "create the folder") from None
    except ValueError:  # a NUL byte: no file system takes it
        raise UserInputError(f"cannot create the folder {str(path)[:200]!r}: the path contains a NUL byte") from None
    return path


def _read_umask() -> int:
    """The process umask without changing it: ``os.umask`` can only be read by setting it, which is process-wide
    and races with threads writing files meanwhile, so Linux's ``/proc/self/status`` line is read where it exists."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


def _umask_at_import() -> int:
    # Fallback where /proc is absent (macOS, Windows): set-and-restore once, at import, before any writer thread.
    old = os.umask(0o022)
    os.umask(old)
    return old


_IMPORT_UMASK = _umask_at_import()


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write ``path`` through a temporary file renamed over it. ``mkstemp`` creates the temporary file 0600; it is
    given ``0o666 & ~umask`` first, so run files get the mode any other program's files get (0644 under umask 022)."""
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise environment_error(exc, path) from None
    try:
        with os.fdopen(fd, mode) as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), 0o666 & ~_read_umask())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, EdgeDistillError):
            raise environment_error(exc, path) from None
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def append_line(path: Path, line: str) -> None:
    """Append one line to a log (metrics.jsonl): not atomic, so readers drop a last line cut short; a read-only or
    full disk is an ``EnvironmentProblem`` naming the file."""
    try:
        with Path(path).open("a") as fh:
            fh.write(line.rstrip("\n") + "\n")
    except OSError as exc:
        raise environment_error(exc, Path(path), "append to") from None


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data), mode="wb")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def read_json_record(path: Path) -> Any:
    """A record the toolkit wrote and can write again (a stage's summary.json): its content, or None when it is
    missing or damaged (bad JSON or bytes), so the caller recomputes it instead of stopping on a traceback."""
    try:
        return read_json(path)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        print(f"warning: '{path}' is damaged (not valid JSON); it is written again", file=sys.stderr)
        return None


#: ``atomic_write``'s temporary files: ``.<name>.<pid>-<random>.tmp``, and the older ``.<name>.<random>.tmp``.
_TEMP = re.compile(r"^\..+\.(?:(?P<pid>\d+)-)?[A-Za-z0-9_]{6,}\.tmp$")
#: A temporary file whose writer is alive is left alone unless untouched this long (the pid may have been reused).
TEMP_MAX_AGE_S = 600.0
#: One without a pid in its name (written before pids were added) is removed once untouched this long.
TEMP_ANON_AGE_S = 60.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:  # not a pid at all
        return False
    return True


def remove_stale_temp(folder: Path, now: float | None = None, recursive: bool = False) -> list[Path]:
    """Remove the temporary files an interrupted ``atomic_write`` left in ``folder`` (with ``recursive``, also in
    its sub-folders; symbolic links are not followed); return them.

    Only names of ``atomic_write``'s pattern are touched, and only when stale: the writer process is gone, or the
    file has not changed for ``TEMP_MAX_AGE_S`` (``TEMP_ANON_AGE_S`` for a name without a pid), so the temporary
    file of a concurrent writer (a parallel sweep trial, a second run on a shared cache) is never removed.
    A folder that does not exist has nothing to remove."""
    folder = Path(folder)
    now = time.time() if now is None else now
    removed: list[Path] = []
    if recursive:
        for sub, _dirs, _files in os.walk(folder):
            removed += remove_stale_temp(Path(sub), now)
        return removed
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for name in names:
        match = _TEMP.match(name)
        if match is None:
            continue
        path = folder / name
        try:
            info = path.lstat()
        except FileNotFoundError:  # its writer renamed it into place meanwhile
            continue
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        age = now - info.st_mtime
        pid = match.group("pid")
        if pid is not None:
            stale = (int(pid) != os.getpid() and not _alive(int(pid))) or age > TEMP_MAX_AGE_S
        else:
            stale = age > TEMP_ANON_AGE_S
        if not stale:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise environment_error(exc, path, "remove the stale temporary file") from None
        removed.append(path)
    return removed


def content_record(data: bytes) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of ``data``: what a manifest or sidecar records so a later read can tell
    the same bytes from truncated or flipped ones (torch and numpy load many damaged files without complaint)."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """(hex sha256, size in bytes) of a file's content, read in chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def content_digest(obj: Any) -> str:
    """sha256 over nested content: dicts (keys in sorted order), lists and tuples (the same content either way: a
    tuple may come back as a list), tensors (dtype, shape and bytes) and plain values (their repr). The one hash of
    in-memory weights: a training checkpoint's integrity digest and the identity of a module passed as an object
    (its state_dict). torch is imported here only, when called: importing this core module stays torch-free."""
    import torch

    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            h.update(f"D{len(value)}:".encode())
            for key in sorted(value, key=repr):
                h.update(repr(key).encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            h.update(f"L{len(value)}:".encode())
            for item in value:
                feed(item)
        else:
            h.update(f"V{value!r};".encode())

    feed(obj)
    return h.hexdigest()
