"""What the plots and ``edgedistill report`` read from a run directory, without training or importing torch.

A finished run holds ``summary.json`` (rows, per-seed test metrics, per-class detail), ``config.yaml`` (the
resolved recipe), the distilled stages' ``<method>/seed<k>/metrics.jsonl`` and, per teacher and student alone, a
``summary.json`` naming its model-cache entry (``cache_key``), whose folder holds that network's ``metrics.jsonl``;
``profile.json`` when the deployment profile ran and ``plots/reliability.json`` when the run drew its plots. Each of
these may be missing (a run from an older version, a run still in progress, a cache moved away): ``load_run``
returns what is there and says in ``notes`` what is not, so the report shows what it can.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from edgedistill.errors import UserInputError
from edgedistill.paths import default_cache_dir

LOCK_NAME = ".edgedistill.lock"  # experiment/rundir.py's lock file (a run holds it until it has written everything)
RELIABILITY = "reliability.json"


@dataclass
class Curves:
    """One network's epoch records over its seeds: ``records[seed]`` is its metrics.jsonl, in order."""

    name: str  # "teacher", "student alone", the method's name
    records: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class RunData:
    path: Path
    name: str
    summary: Optional[dict[str, Any]]
    config: Optional[dict[str, Any]]
    curves: list[Curves]
    profile: Optional[dict[str, Any]]
    reliability: Optional[dict[str, Any]]
    finished: bool  # summary.json written and no process holds the run's lock
    notes: list[str] = field(default_factory=list)  # what is missing, in words, for the report and the terminal

    @property
    def task(self) -> str:
        return (self.summary or {}).get("task") or ("classification" if _looks_classification(self.curves) else "regression")


def _looks_classification(curves: list[Curves]) -> bool:
    return any("acc" in (r.get("val") or {}) for c in curves for recs in c.records.values() for r in recs)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The epoch records of a metrics.jsonl; a line cut short (a run killed mid-write, or still writing) is dropped."""
    out = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            out.append(record)
    return out


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def lock_holder(directory: Path) -> Optional[str]:
    """Who holds the directory's run lock ("pid N on HOST"), or None when nobody does (or it cannot be checked).
    Never call it from the process that holds the lock: flock would answer that this very process is the holder."""
    path = directory / LOCK_NAME
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 4096).decode(errors="replace")
            words = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
            return f"pid {words.get('pid', '?')} on {words.get('host', '?')}"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def kind_of(path: Path) -> str:
    """"run", "sweep", or a ``UserInputError`` naming what the folder is instead."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"'{path}' does not exist; expected a run directory (edgedistill run --out) or a sweep directory")
    if not path.is_dir():
        raise UserInputError(f"'{path}' is a file; expected a run directory (with config.yaml) or a sweep directory (with sweep.json)")
    if (path / "sweep.json").is_file():
        return "sweep"
    if (path / "config.yaml").is_file() or (path / "summary.json").is_file():
        return "run"
    raise UserInputError(f"'{path}' is neither a run directory (no config.yaml or summary.json) nor a sweep directory "
                         "(no sweep.json); give the folder 'edgedistill run' or 'edgedistill sweep' wrote")


def _cache_root(run_dir: Path, config: Optional[dict[str, Any]], smoke: bool) -> Path:
    # The runner's rule: a smoke run caches inside its run directory; otherwise recipe.cache_dir or the default.
    if smoke or (run_dir / "cache" / "models").is_dir():
        return run_dir / "cache"
    explicit = (config or {}).get("cache_dir")
    return default_cache_dir(Path(explicit) if explicit else None)


def _cached_curves(run_dir: Path, cache: Path, notes: list[str]) -> list[Curves]:
    """The teachers' and the student alone's epoch records, found through the cache keys their records name."""
    found: dict[str, Curves] = {}
    for record_path in sorted(run_dir.rglob("summary.json")):
        rel = record_path.relative_to(run_dir).parts
        if len(rel) < 2 or rel[0] in ("cache", "plots") or rel[0].startswith("fold"):
            continue
        record = _read_json(record_path)
        key = (record or {}).get("cache_key") if isinstance(record, dict) else None
        if not isinstance(key, str) or ":" in key:  # a given teacher ("load:<key>"): evaluated, never trained
            continue
        name = "student alone" if rel[0] == "student_alone" else rel[0]
        seed = int(record.get("seed", 0)) if isinstance(record.get("seed"), int) else 0
        jsonl = cache / "models" / key / "metrics.jsonl"
        records = read_jsonl(jsonl)
        if not records:
            notes.append(f"no learning curve for {name} seed {seed}: its model-cache entry '{jsonl.parent}' is gone or "
                         "has no metrics.jsonl")
            continue
        found.setdefault(name, Curves(name)).records[seed] = records
    return list(found.values())


def _method_curves(run_dir: Path, config: Optional[dict[str, Any]]) -> list[Curves]:
    method = ((config or {}).get("method") or {}).get("name")
    out = []
    folders = [run_dir / method] if method else [p for p in run_dir.iterdir() if p.is_dir() and any(p.glob("seed*/metrics.jsonl"))]
    for folder in folders:
        curves = Curves(folder.name)
        for jsonl in sorted(folder.glob("seed*/metrics.jsonl")):
            try:
                seed = int(jsonl.parent.name[4:])
            except ValueError:
                continue
            records = read_jsonl(jsonl)
            if records:
                curves.records[seed] = records
        if curves.records:
            out.append(curves)
    return out


def load_run(run_dir: Path, *, check_lock: bool = True) -> RunData:
    """Everything the report draws from, read once. ``check_lock``: False inside the process that runs it (the
    runner drawing its own plots holds the lock)."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    summary = _read_json(run_dir / "summary.json")
    if summary is not None and not (isinstance(summary, dict) and isinstance(summary.get("rows"), list)):
        notes.append("summary.json is damaged or not a run's summary: the tables and the plots drawn from it are left out")
        summary = None
    config = None
    try:
        loaded = yaml.safe_load((run_dir / "config.yaml").read_text())
        config = loaded if isinstance(loaded, dict) else None
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        notes.append("config.yaml is missing or unreadable: the method's stages are found by their folders")
    holder = lock_holder(run_dir) if check_lock else None
    if holder is not None:
        notes.append(f"the run is still in progress ({holder} holds its lock): showing what it has written so far")
    elif summary is None and (run_dir / "config.yaml").is_file():
        notes.append("no summary.json yet: the run has not finished (or was interrupted; rerun its command to resume); "
                     "showing the learning curves written so far")
    smoke = bool((summary or {}).get("smoke"))
    cached = sorted(_cached_curves(run_dir, _cache_root(run_dir, config, smoke), notes), key=lambda c: c.name == "student alone")
    curves = cached + _method_curves(run_dir, config)  # teachers, the student alone, the method: the table's order
    profile = _read_json(run_dir / "profile.json")
    reliability = _read_json(run_dir / "plots" / RELIABILITY)
    if summary and summary.get("folds"):
        notes.append("a cross-validation run: the table is over folds; each fold<i>/ folder is a run of its own "
                     "(edgedistill report RUN/fold0 ...) with its own curves and plots")
    name = (summary or {}).get("name") or (config or {}).get("name") or run_dir.name
    return RunData(run_dir, str(name), summary, config, curves, profile if isinstance(profile, dict) else None,
                   reliability if isinstance(reliability, dict) else None, summary is not None and holder is None, notes)


def load_sweep(sweep_dir: Path) -> dict[str, Any]:
    """A sweep's meta (sweep.json), its results table (results.md), heatmap and the finished trials' run folders."""
    sweep_dir = Path(sweep_dir)
    meta = _read_json(sweep_dir / "sweep.json")
    notes = []
    if not isinstance(meta, dict):
        notes.append("sweep.json is damaged: the sweep's name and grid are unknown")
        meta = {}
    holder = lock_holder(sweep_dir)
    if holder is not None:
        notes.append(f"the sweep is still in progress ({holder} holds its lock): showing the trials finished so far")
    table = (sweep_dir / "results.md").read_text(errors="replace") if (sweep_dir / "results.md").is_file() else None
    if table is None:
        notes.append("no results.md yet: the sweep has not written its table (it does once every grid point has run)")
    trials = sorted(p for p in (sweep_dir / "trials").glob("*") if (p / "summary.json").is_file()) if (sweep_dir / "trials").is_dir() else []
    heatmap = sweep_dir / "heatmap.png"
    return {"path": sweep_dir, "name": meta.get("name") or sweep_dir.name, "meta": meta, "table": table,
            "heatmap": heatmap if heatmap.is_file() else None, "trials": trials, "notes": notes}
