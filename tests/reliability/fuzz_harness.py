"""Runs one fuzz case (tests/reliability/fuzz_cases.py) in-process through the CLI, inside a fresh sandbox, and
classifies what happened. Shared by tests/reliability/test_fuzz.py and scripts/reliability_figures.py.

Sandbox of a case (``<base>/case-<i>/``)::

    PARENT_SENTINEL.txt           a file beside the sandbox: a name like ../../x must never reach it
    outside/sentinel.txt          where "absolute" names in cases point (@ROOT@/outside/...)
    home/.profile                 $HOME (the default cache would be ~/.cache)
    box/                          the working folder: recipe.yaml, data files, SENTINEL.txt
    box/out/                      --out: the only place a run may write, besides the cache
<base>/cache/                     $EDGEDISTILL_CACHE, shared by the cases of one process so teachers are reused

Outcome (one of): ``clean`` (exit 2/3/4, one line "error: ..." on stderr, nothing under --out for exit 2/4),
``untidy`` (exit 2/3/4 but a several-line message or a folder created before refusing), ``accepted`` (exit 0),
``traceback`` (any other exception, or exit 1), ``hang`` (over the time limit), ``memory`` (MemoryError).
Flags besides: ``silent_wrong`` (exit 0 where a refusal was owed), ``false_refusal`` (an error where a run was
owed), ``writes_outside`` (a file created or changed in the sandbox outside --out and the cache), ``data_lost`` (a
file that was there before, a sentinel or the user's own files, changed or removed).
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import yaml

from reliability.fuzz_cases import ACCEPT, REFUSE, Case, materialize

SENTINEL = b"user data: must survive every case\n"


class Hang(BaseException):
    """Raised by the alarm: a BaseException so neither click's runner nor the library's handlers swallow it."""


_ARMED = [False]


def _on_alarm(signum: int, frame: Any) -> None:
    # The timer repeats every second after the limit: a Hang swallowed by a broad handler (or raised where Python
    # cannot propagate it, as in a callback from compiled code) is raised again until it gets out.
    if _ARMED[0]:
        raise Hang()


def _snapshot(root: Path, skip: list[Path]) -> dict[str, bytes]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # An empty folder counts as written too; not one that holds an allowed folder (a cache_dir a/b makes a/).
        if not filenames and not dirnames and here != root:
            out[str(here.relative_to(root)) + "/"] = b""
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for f in filenames:
            p = here / f
            try:
                st = p.lstat()
                if not stat.S_ISREG(st.st_mode):  # a FIFO, a link: record what it is, never read through it
                    out[str(p.relative_to(root))] = f"<{stat.S_IFMT(st.st_mode)}:{os.readlink(p) if p.is_symlink() else ''}>".encode()
                else:
                    out[str(p.relative_to(root))] = p.read_bytes() if st.st_size < 1_000_000 else b"<large>"
            except OSError:
                out[str(p.relative_to(root))] = b"<unreadable>"
    return out


def _recipe_text(case: Case, root: Path) -> bytes:
    recipe = case.recipe
    if isinstance(recipe, dict):
        recipe = yaml.safe_dump(recipe, sort_keys=False, width=10**9)
    text = recipe.encode("utf-8", "surrogatepass") if isinstance(recipe, str) else recipe
    return text.replace(b"@ROOT@", str(root).encode())


def prepare(case: Case, base: Path, index: int) -> tuple[Path, list[str]]:
    """Make the case's sandbox; return it and the CLI arguments."""
    root = base / f"case-{index}"
    if root.exists():
        shutil.rmtree(root)
    box = root / "box"
    for d in (box, root / "home", root / "outside"):
        d.mkdir(parents=True)
    (root / "PARENT_SENTINEL.txt").write_bytes(SENTINEL)
    (root / "outside" / "sentinel.txt").write_bytes(SENTINEL)
    (root / "home" / ".profile").write_bytes(SENTINEL)
    (box / "SENTINEL.txt").write_bytes(SENTINEL)
    (box / "recipe.yaml").write_bytes(_recipe_text(case, root))
    for name, data in case.files:
        (box / name).write_bytes(data)
    for name, kind in case.special:
        if kind == "fifo":
            os.mkfifo(box / name)
        elif kind == "dir":
            (box / name).mkdir()
        else:
            os.symlink(kind.removeprefix("link:").replace("@ROOT@", str(root)), box / name)
    args = [case.command, case.recipe_path, *(o.replace("@ROOT@", str(root)) for o in case.overrides)]
    if case.give_out:
        args += ["--out", case.out.replace("@ROOT@", str(root))]
    if case.smoke:
        args.append("--smoke")
    return root, args + ["--no-progress"]


def run_case(case: Case, base: Path, index: int = 0, limit_s: float = 20.0, keep: bool = False) -> dict[str, Any]:
    """Run ``case`` in a sandbox under ``base`` (``base/cache`` is the shared model cache) and classify it."""
    from typer.testing import CliRunner

    from edgedistill.cli import app

    case = materialize(case)
    base = Path(base).resolve()
    root, args = prepare(case, base, index)
    box = root / "box"
    allowed = [box / "runs"] if case.command == "run" else [box / "sweeps"]
    out = Path(os.path.normpath(box / case.out.replace("@ROOT@", str(root))))
    if "\x00" not in case.out and not _exists(out):
        while not _exists(out.parent):  # --out a/b/c: the run creates a/ too
            out = out.parent
        allowed.append(out)  # a fresh run directory; an existing file or folder is the user's, not the run's
    run_dirs = list(allowed)
    allowed += _cache_dirs(case, root, box)
    before = _snapshot(root, allowed)
    base_before = set(os.listdir(base))
    cwd, env = os.getcwd(), {k: os.environ.get(k) for k in ("HOME", "EDGEDISTILL_CACHE", "MPLCONFIGDIR")}
    # matplotlib (the sweep heatmap) keeps its font list in $MPLCONFIGDIR, else in $HOME: a third-party cache, not
    # the toolkit's write, so it goes beside the shared model cache.
    os.environ.update(HOME=str(root / "home"), EDGEDISTILL_CACHE=str(base / "cache"), MPLCONFIGDIR=str(base / "mpl"))
    os.chdir(box)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    _ARMED[0] = True
    signal.setitimer(signal.ITIMER_REAL, limit_s, 1.0)
    started = time.monotonic()
    result: dict[str, Any] = {"kind": case.kind, "expect": case.expect, "note": case.note, "args": args[1:]}
    try:
        try:
            res = CliRunner().invoke(app, args)
        finally:
            _ARMED[0] = False
        exc, code, stderr = res.exception, res.exit_code, res.stderr
        tb = "".join(traceback.format_exception(exc)) if exc is not None and not isinstance(exc, SystemExit) else ""
    except Hang:
        _ARMED[0] = False
        exc, code, stderr, tb = None, None, "", ""
        result["outcome"] = "hang"
    finally:
        _ARMED[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(cwd)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    result["seconds"] = round(time.monotonic() - started, 2)
    result["exit"] = code
    lines = [line for line in stderr.splitlines() if line.strip()]
    result["message"] = lines[-1][:300] if lines else ""
    if "outcome" not in result:
        if isinstance(exc, MemoryError):
            result["outcome"] = "memory"
        elif tb or code not in (0, 2, 3, 4, 130):
            result["outcome"] = "traceback"
            result["message"] = (tb.strip().splitlines() or [f"exit {code}"])[-1][:300]
            result["where"] = _innermost_edgedistill_frame(exc)
        elif code == 0:
            result["outcome"] = "accepted"
        else:
            # "note: ..." lines say what was inferred or imported before the check failed (a user class's file):
            # information the user is owed, not part of the error, which must still be one line.
            errors = [line for line in lines if not line.startswith("note: ")]
            one_line = len(errors) == 1 and errors[0].startswith("error:")
            wrote = code in (2, 4) and any(_exists(p) for p in run_dirs)
            result["outcome"] = "clean" if one_line and not wrote else "untidy"
            if not one_line:
                result["message"] = " | ".join(lines)[:300]
            elif wrote:
                result["message"] = "created --out before refusing: " + result["message"]
    flags = []
    if case.expect == REFUSE and result["outcome"] == "accepted":
        flags.append("silent_wrong")
    if case.expect == ACCEPT and result["outcome"] in ("clean", "untidy"):
        flags.append("false_refusal")
    after = _snapshot(root, allowed)
    lost = sorted(k for k in before if after.get(k) != before[k])
    new = sorted(k for k in after if k not in before)
    new_base = sorted(n for n in set(os.listdir(base)) - base_before - {"cache", "mpl"}
                      if not any(base / n == p or base / n in p.parents for p in allowed))  # a cache_dir: ../../x
    if lost:
        flags.append("data_lost")
    if new or new_base:
        flags.append("writes_outside")
    result["flags"] = flags
    if lost or new or new_base:
        result["files"] = (lost + new + [f"../{n}" for n in new_base])[:8]
    for n in new_base:
        shutil.rmtree(base / n, ignore_errors=True)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def _exists(path: Path) -> bool:
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):  # a name too long, a NUL: nothing can be there
        return False


def _cache_dirs(case: Case, root: Path, box: Path) -> list[Path]:
    """A recipe's own cache_dir (relative to the recipe's folder, box) is a place the user asked the run to write."""
    values = [case.recipe.get("cache_dir")] if isinstance(case.recipe, dict) else []
    values += [o.split("=", 1)[1] for o in case.overrides if o.startswith("cache_dir=")]
    out = []
    for v in values:
        if isinstance(v, str) and v and "\x00" not in v:
            p = Path(v.replace("@ROOT@", str(root))).expanduser()
            out.append(p if p.is_absolute() else box / p)
    return [Path(os.path.normpath(p)) for p in out]


def _innermost_edgedistill_frame(exc: Optional[BaseException]) -> str:
    """'module.py:line in function' of the deepest frame inside the package: where a fix belongs."""
    where = ""
    tb = exc.__traceback__ if exc is not None else None
    while tb is not None:
        f = tb.tb_frame.f_code
        if "edgedistill" in f.co_filename:
            where = f"{f.co_filename.split('edgedistill/')[-1]}:{tb.tb_lineno} in {f.co_name}"
        tb = tb.tb_next
    return where


FAILURES = ("traceback", "hang", "memory")
FAILURE_FLAGS = ("silent_wrong", "writes_outside", "data_lost")


def is_failure(r: dict[str, Any]) -> bool:
    """What the issue's "done" counts: a traceback, a hang, memory, exit 0 on a refusal, a write outside, lost data."""
    return r["outcome"] in FAILURES or any(f in r["flags"] for f in FAILURE_FLAGS)


def signature(r: dict[str, Any]) -> str:
    """One failure's root-cause key: what went wrong, in which family, where (or for which key)."""
    what = r["outcome"] if r["outcome"] in FAILURES else "+".join(f for f in r["flags"] if f in FAILURE_FLAGS)
    where = r.get("where") or r["note"].split(" = ")[0].split("=")[0][:50]
    return f"{what} | {r['kind']} | {where}"
