"""A run (or sweep) directory as the environment sees it: its lock, the content hashes of the input files its
``config.yaml`` records, and secrets kept out of what it stores.

The lock is ``fcntl.flock`` on ``<dir>/.edgedistill.lock`` held for the whole run: the kernel drops it when the
process ends, however it ends (exception, Ctrl-C, SIGKILL), so a lock can never outlive its owner. The file also
holds the owner's pid, host and start time: a second process names the owner in its error (exit 4), and a
process that finds the details of a dead owner says it recovered a stale lock. Two runs therefore never share a
run directory, and their logs and metrics never interleave.
"""
from __future__ import annotations

import fcntl
import os
import re
import shlex
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Optional

import yaml

from edgedistill.errors import EdgeDistillError, EnvironmentProblem, UserInputError
from edgedistill.io import environment_error, make_dirs, sha256_file, write_text
from edgedistill.recipe_paths import model_file, model_sections

LOCK_NAME = ".edgedistill.lock"

if TYPE_CHECKING:
    from edgedistill.config import Recipe


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


class DirLock:
    """Exclusive lock on ``directory`` (created if missing) for one process; use as a context manager."""

    def __init__(self, directory: Path, what: str = "run directory", note: Callable[[str], None] = _stderr) -> None:
        self.dir, self.what, self.note = Path(directory), what, note
        self.path = self.dir / LOCK_NAME
        self.fd: Optional[int] = None

    def acquire(self) -> "DirLock":
        make_dirs(self.dir)
        try:
            # Not an atomic write: flock belongs to the file's inode, so the owner's details are written into the
            # locked file itself (a rename would put them in a file nobody holds).
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise environment_error(exc, self.path, "create the lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(os.read(fd, 4096).decode(errors="replace"))
            os.close(fd)
            who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}" + (f", since {owner['since']}" if "since" in owner else "")
            raise EnvironmentProblem(
                f"{self.what} '{self.dir}' is in use by a running edgedistill process ({who}); wait for it to finish, "
                "or choose another --out") from None
        try:
            previous = _owner(os.read(fd, 4096).decode(errors="replace"))
            here = socket.gethostname()
            pid = int(previous.get("pid", "0") or 0) if previous.get("pid", "").isdigit() else 0
            if pid and pid != os.getpid():
                if previous.get("host") == here and not _pid_alive(pid):
                    self.note(f"note: recovered the stale lock of {self.what} '{self.dir}' (pid {pid} on {here} died)")
                elif previous.get("host") != here:
                    # flock may not reach across machines on a network file system: say whose details were left.
                    self.note(f"note: {self.what} '{self.dir}' was last locked by pid {pid} on {previous.get('host')}")
            text = f"pid {os.getpid()}\nhost {here}\nsince {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
        except OSError as exc:
            os.close(fd)
            raise environment_error(exc, self.path, "write the lock file") from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)  # a cleanly released lock names nobody; a killed owner's details stay (stale)
        except OSError:
            pass  # (a full or read-only disk: the details stay, and the next owner sees the pid is gone)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.release()


def _owner(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in ("pid", "host", "since"):
            fields[key] = value.strip()
    return fields


def only_the_lock(directory: Path) -> bool:
    """True when ``directory`` holds nothing but a lock file (a run killed before it wrote its config)."""
    return all(p.name == LOCK_NAME for p in Path(directory).iterdir())


def as_environment_problem(exc: OSError, where: Path) -> Optional[EdgeDistillError]:
    """An unexpected OSError as one line naming its file: an ``EnvironmentProblem`` when the machine refuses
    (read-only, full, no permission), a ``UserInputError`` when the path cannot be one (a file in the way, a name too
    long), as ``io.environment_error`` decides; None for anything else (a bug, left to its traceback)."""
    if isinstance(exc, EdgeDistillError):
        return None
    mapped = environment_error(exc, Path(exc.filename) if exc.filename else Path(where))
    return mapped if isinstance(mapped, EdgeDistillError) else None


# -- secrets -------------------------------------------------------------------------------------------------
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*:)(?P<secret>[^\s'\"/]*)(?P<at>@)")


def cli_equivalent(source: Any, overrides: Optional[list[str] | dict[str, Any]], smoke: bool) -> str:
    """The ``edgedistill run`` command that does what a Python call ``run(source, overrides)`` did: what its run
    directory records and what an interrupted call prints as the way to resume (a recipe given as a dict has no
    path to write, so it stays ``<dict>``)."""
    import json

    items = [f"{k}={json.dumps(v, default=str)}" for k, v in overrides.items()] if isinstance(overrides, dict) else list(overrides or [])
    recipe = "<dict>" if isinstance(source, dict) else str(source)
    return " ".join(["edgedistill run", shlex.quote(recipe), *map(shlex.quote, items), *(["--smoke"] if smoke else [])])


def resume_command(command: str, folder: str | Path) -> str:
    """The command that continues an interrupted run, sweep or tune: ``command`` with ``--out folder`` added unless
    it already names its output folder (without it, a rerun would start afresh in a new dated folder)."""
    return command if "--out" in command else f"{command} --out {shlex.quote(str(folder))}"


def say_interrupted(kept: str, command: str, folder: str | Path) -> None:
    """The line an interrupted run, cross-validation, sweep or tune ends with (Ctrl-C, or SIGTERM taken as it): what
    ``kept``, and the command that resumes it."""
    _stderr(f"Interrupted. {kept}; resume with: {resume_command(command, folder)}")


def output_folder(out: Optional[str | Path], kind: str, name: str, smoke: bool) -> Path:
    """Where a sweep or a tune writes: ``out``; else for a smoke one a fresh folder in the temporary directory (it is
    thrown away); else ``<kind>/<name>-<time>`` (``sweeps/``, ``tunes/``) under the working directory."""
    if out is not None:
        return Path(out)
    if smoke:
        import tempfile
        import uuid

        return Path(tempfile.gettempdir()) / f"edgedistill-{kind.rstrip('s')}-{name}-{uuid.uuid4().hex[:8]}"
    return Path(kind) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL replaced by ``***``: what a sweep
    stores or prints (sweep.json, results.md, summary.json, the command, errors) never holds a storage password."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}***{m['at']}", text)


# -- input files by content ------------------------------------------------------------------------------------
_HASH_LINE = re.compile(r"^# sha256 (?P<key>\S+) (?P<digest>[0-9a-f]{64}) (?P<path>.+)$")


def input_files(resolved: dict[str, Any]) -> dict[str, Path]:
    """The files a resolved recipe reads (recipe key -> path): data, start checkpoints, a PI-Net, saved teachers and
    recorded teacher outputs, the user's model files (``./nets.py:WristNet``)."""
    files: dict[str, Path] = {}
    data = resolved.get("data") or {}
    if data.get("path"):
        files["data.path"] = Path(data["path"])
    if (data.get("topology") or {}).get("pinet"):
        files["data.topology.pinet"] = Path(data["topology"]["pinet"])
    if (resolved.get("student") or {}).get("checkpoint"):
        files["student.checkpoint"] = Path(resolved["student"]["checkpoint"])
    for key in ("checkpoint", "load", "outputs"):  # start weights, a saved teacher, a teacher's recorded outputs
        if (resolved.get("teacher") or {}).get(key):
            files[f"teacher.{key}"] = Path(resolved["teacher"][key])
        for i, t in enumerate(resolved.get("teachers") or []):
            if t.get(key):
                files[f"teachers.{i}.{key}"] = Path(t[key])
    for key, section in model_sections(resolved):  # the user's class in a .py file: an edit is a changed input
        if model_file(section.get("model")):
            files[f"{key}.model"] = Path(str(model_file(section["model"])))
    return {k: p for k, p in files.items() if p.is_file()}


def input_hashes(resolved: dict[str, Any]) -> dict[str, tuple[str, Path]]:
    return {key: (sha256_file(path)[0], path) for key, path in input_files(resolved).items()}


def recorded_hashes(config_path: Path) -> dict[str, tuple[str, str]]:
    """The hashes a run's config.yaml records (key -> (sha256, path)); none for a run made before they were."""
    found = {}
    with open(config_path) as fh:
        for line in fh:
            m = _HASH_LINE.match(line.rstrip("\n"))
            if m:
                found[m["key"]] = (m["digest"], m["path"])
    return found


def check_inputs(run_dir: Path, doing: str) -> None:
    """Refuse (``UserInputError``) when a file the run recorded has changed since: a resume would mix two data sets,
    an export would embed another file's normalisation."""
    for key, (digest, path) in recorded_hashes(Path(run_dir) / "config.yaml").items():
        p = Path(path)
        if not p.is_file():
            raise UserInputError(f"{key}: '{p}' (recorded in '{run_dir}/config.yaml') no longer exists; cannot {doing} "
                                 "without the file the run used")
        if sha256_file(p)[0] != digest:
            raise UserInputError(f"{key}: the file '{p}' changed since the run in '{run_dir}' used it (sha256 differs from "
                                 f"the one in its config.yaml); cannot {doing}: restore the file, or start a new run "
                                 "with another --out")


def config_text(resolved: dict[str, Any]) -> str:
    """config.yaml: the resolved recipe, after comment lines with the sha256 of each input file (comments, so every
    reader of config.yaml, old ones included, sees the same recipe)."""
    head = "".join(f"# sha256 {key} {digest} {path}\n" for key, (digest, path) in input_hashes(resolved).items())
    return head + yaml.safe_dump(resolved, sort_keys=False)


def usable_folder(out: Path, option: str = "--out") -> Path:
    """``out`` if a folder of that name can exist here; a name too long or a NUL byte is a ``UserInputError`` naming
    ``option``, before anything is written (os calls on such a path raise OSError/ValueError wherever they meet it)."""
    try:
        (Path(out) / "config.yaml").exists()
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise UserInputError(f"{option} {str(out)[:120]!r}: cannot be a folder here ({why}); give a shorter path") from None
    return Path(out)


def open_run_dir(out: Path, resolved: dict[str, Any], same: Callable[[Any], bool]) -> Path:
    """Check ``out`` can hold this run (new, empty, or the same config to resume); under the caller's lock, write
    config.yaml for a new run. ``same(previous_config)`` says whether a stored config is this run's."""
    from edgedistill.yaml_io import safe_load

    cfg_path = usable_folder(out) / "config.yaml"
    if cfg_path.is_file():
        with cfg_path.open() as fh:
            previous = safe_load(fh)
        if not same(previous):
            raise UserInputError(
                f"--out '{out}' holds a run with a different config; choose another --out, or delete it to start over")
        check_inputs(out, "resume it")
        return out
    if out.exists() and not (out.is_dir() and only_the_lock(out)):
        raise UserInputError(f"--out '{out}' exists and is not an edgedistill run directory")
    return out


def write_config(out: Path, resolved: dict[str, Any]) -> None:
    if not (out / "config.yaml").is_file():
        write_text(out / "config.yaml", config_text(resolved))


#: Engine keys a run may resume with other values of: the global batch and the data order do not depend on them.
_PLACEMENT = ("devices", "num_nodes", "strategy")


def _placed_anywhere(config: Any) -> Any:
    if isinstance(config, dict) and isinstance(config.get("engine"), dict):
        return {**config, "engine": {k: v for k, v in config["engine"].items() if k not in _PLACEMENT}}
    return config


def same_config(recipe: "Recipe") -> Callable[[Any], bool]:
    """Whether a run directory's recorded config is ``recipe``'s (then the run is resumed there)."""
    from edgedistill.config import Recipe, recipe_to_dict

    resolved = _placed_anywhere(recipe_to_dict(recipe))

    def same(previous: Any) -> bool:
        try:  # a config written before a key was added: compare it with that key's default filled in
            previous = recipe_to_dict(Recipe.model_validate(previous))
        except Exception:  # noqa: BLE001 - an unreadable config is simply different
            pass
        return _placed_anywhere(previous) == resolved

    return same


def cache_folder(recipe: "Recipe") -> Path:
    """The model cache's folder, made now: one that cannot exist (a file in the way, a name too long) is refused
    naming cache_dir before the run directory is written, not after the run started."""
    from edgedistill.paths import default_cache_dir

    root = default_cache_dir(recipe.cache_dir)
    try:
        return make_dirs(root / "models")
    except UserInputError as exc:
        where = "cache_dir" if recipe.cache_dir is not None else "the model cache ($EDGEDISTILL_CACHE or ~/.cache/edgedistill)"
        raise UserInputError(f"{where}: {exc}") from None


def command_line() -> str:
    """The command as typed, for summary.json and the resume hint, quoted for a POSIX shell so that it can be pasted
    back (an override with spaces, ``sweep.grid={a: [1, 2]}``, is one argument): a URL's password (``--storage``) is
    ``***``."""
    return redact("edgedistill " + shlex.join(sys.argv[1:]))
