"""Faults at seeded random points of a real run, each followed by the same command: it must end with exactly the
numbers of a run that met no fault, and leave no temporary file behind.

- SIGKILL after a seeded random epoch of each stage in turn (teacher, student alone, distilled student), through
  the training loop's test-only kill hook: a real hard kill, no cleanup. With EDGEDISTILL_FAULTS_LONG=1 (make
  reliability), also SIGKILL at seeded random wall-clock moments, so kills land mid-epoch and mid-write.
- A full disk (ENOSPC) or a read-only file system (EROFS) at a seeded random one of the run's atomic writes, via a
  patched os.replace: exit 4 with one line, then the same command resumes.
- A damaged model cache (truncated weights, an emptied summary, garbage in an unfinished entry), end to end through
  the CLI: the run is not fooled and reports the numbers of the undamaged run.
Complements tests/reliability/test_integrity.py (the cache and checkpoint checks themselves), test_environment.py
(locks, read-only and full folders at fixed points) and tests/test_interrupt.py (one kill at a fixed epoch).
"""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.engine.loop import TEST_KILL_AFTER_EPOCH

TEACHER_EPOCHS, EPOCHS = 3, 6
RECIPE = {
    "name": "faults",
    "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 8, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": TEACHER_EPOCHS, "batch_size": 8}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5}]},
    "train": {"epochs": EPOCHS, "batch_size": 8},
    "seeds": [0],
    "engine": {"threads": 1, "progress": False},
}
LONG = os.environ.get("EDGEDISTILL_FAULTS_LONG") == "1"


def _recipe(tmp_path: Path, **change) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **change}))
    return path


def _metrics(out: Path) -> list:
    return [r["metrics"] for r in json.loads((out / "summary.json").read_text())["rows"]]


def _in_process(recipe: Path, out: Path, cache: Path):
    return CliRunner().invoke(app, ["run", str(recipe), f"cache_dir={cache}", "--out", str(out), "--no-progress"])


def _subprocess(recipe: Path, out: Path, cache: Path, kill_after: int = 0, timeout: float = 300):
    env = {k: v for k, v in os.environ.items() if k != TEST_KILL_AFTER_EPOCH}
    if kill_after:
        env[TEST_KILL_AFTER_EPOCH] = str(kill_after)
    exe = Path(sys.executable).with_name("edgedistill")
    return subprocess.Popen([str(exe), "run", str(recipe), f"cache_dir={cache}", "--out", str(out), "--no-progress"],
                            env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _temp_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The numbers of a run that meets no fault (its own cache)."""
    root = tmp_path_factory.mktemp("straight")
    recipe = _recipe(root)
    result = _in_process(recipe, root / "run", root / "cache")
    assert result.exit_code == 0, result.output
    return _metrics(root / "run")


def _kill_chain(recipe: Path, out: Path, cache: Path, epochs: list[int]) -> None:
    """One process per kill, each dying after epoch k of the first stage that reaches it; then the same command
    finishes (in this process: a process start costs seconds, and the resume is the same code)."""
    for k in epochs:
        proc = _subprocess(recipe, out, cache, kill_after=k)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, f"the kill after epoch {k} did not happen: {err[-2000:]}"
        assert not (out / "summary.json").exists()
    result = _in_process(recipe, out, cache)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("seed", [16])
def test_sigkill_after_a_random_epoch_of_a_student_stage_resumes_to_identical_numbers(tmp_path, straight, seed):
    """tests/test_interrupt.py kills the teacher; this kills a later stage: with k past the teacher's epochs, the
    student alone (it trains before the distilled student) is the first to reach epoch k."""
    k = random.Random(seed).randint(TEACHER_EPOCHS + 1, EPOCHS - 1)
    recipe, out, cache = _recipe(tmp_path), tmp_path / "run", tmp_path / "cache"
    _kill_chain(recipe, out, cache, [k])
    assert _metrics(out) == straight, f"killed after epoch {k} of the student alone"
    assert not _temp_files(out, cache)


@pytest.mark.skipif(not LONG, reason="long variant: EDGEDISTILL_FAULTS_LONG=1 (make reliability)")
@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_after_random_epochs_of_each_stage_in_turn_resumes_to_identical_numbers(tmp_path, straight, seed):
    rng = random.Random(seed)
    # The teacher (k1 <= its epochs); then, the teacher done, the student alone (k2 past the teacher's epochs); then
    # the distilled student (k3 below where the resumed student alone restarts, so only a fresh stage reaches it).
    k1 = rng.randint(1, TEACHER_EPOCHS)
    k2 = rng.randint(TEACHER_EPOCHS + 1, EPOCHS - 1)
    k3 = rng.randint(1, k2)
    recipe, out, cache = _recipe(tmp_path), tmp_path / "run", tmp_path / "cache"
    _kill_chain(recipe, out, cache, [k1, k2, k3])
    assert _metrics(out) == straight, f"killed after epochs {k1}, {k2}, {k3}"
    assert not _temp_files(out, cache)


@pytest.mark.skipif(not LONG, reason="long variant: EDGEDISTILL_FAULTS_LONG=1 (make reliability)")
@pytest.mark.parametrize("seed", [1])
def test_sigkill_at_random_moments_resumes_to_identical_numbers(tmp_path, seed):
    """Kills by the clock land anywhere: mid-epoch, mid-write, while the cache renames an entry. The first process
    tells how long start-up takes (until config.yaml appears); each kill comes a random 0-4 s after that."""
    rng = random.Random(seed)
    change = {"teacher": {**RECIPE["teacher"], "train": {"epochs": 20, "batch_size": 4}}, "train": {"epochs": 20, "batch_size": 4}}
    recipe = _recipe(tmp_path, **change)
    ref = _in_process(recipe, tmp_path / "ref", tmp_path / "cache-ref")
    assert ref.exit_code == 0, ref.output
    out, cache, kills, startup = tmp_path / "run", tmp_path / "cache", [], None
    for _ in range(8):
        proc, began = _subprocess(recipe, out, cache), time.monotonic()
        if startup is None:
            while not (out / "config.yaml").exists() and proc.poll() is None:
                time.sleep(0.05)
            startup = time.monotonic() - began
        delay = startup + rng.uniform(0.0, 4.0)
        try:
            proc.wait(timeout=max(0.0, delay - (time.monotonic() - began)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            kills.append(round(delay, 2))
            continue
        assert proc.returncode == 0, proc.stderr.read()[-2000:]
        break
    else:
        result = _in_process(recipe, out, cache)
        assert result.exit_code == 0, result.output
    assert kills, "no kill happened: make the run longer"
    assert _metrics(out) == _metrics(tmp_path / "ref"), f"killed at {kills} s"
    assert not _temp_files(out, cache)


def _count_writes(recipe: Path, tmp_path: Path, monkeypatch) -> int:
    real, calls = os.replace, []
    monkeypatch.setattr(os, "replace", lambda s, d: (calls.append(d), real(s, d))[1])
    result = _in_process(recipe, tmp_path / "count", tmp_path / "cache-count")
    monkeypatch.setattr(os, "replace", real)
    assert result.exit_code == 0, result.output
    return len(calls)


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "full"), (errno.EROFS, "read-only")])
def test_a_full_or_read_only_disk_at_a_random_write_is_exit_4_and_the_same_command_resumes(tmp_path, monkeypatch, straight, code, says):
    recipe, out, cache = _recipe(tmp_path), tmp_path / "run", tmp_path / "cache"
    n = _count_writes(recipe, tmp_path, monkeypatch)
    rng = random.Random(f"{code}")
    for k in sorted(rng.sample(range(1, n + 1), 2)):  # two random writes of the run fail, one run each
        real, seen = os.replace, []

        def replace(src, dst):
            seen.append(dst)
            if len(seen) == k:
                raise OSError(code, os.strerror(code), str(dst))
            return real(src, dst)

        with monkeypatch.context() as m:
            m.setattr(os, "replace", replace)
            result = _in_process(recipe, out, cache)
        if len(seen) < k:
            continue  # the resumed run has fewer writes left than k: this fault never comes
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 4 and len(lines) == 1 and says in lines[0], (k, seen[-1], result.output)
    again = _in_process(recipe, out, cache)
    assert again.exit_code == 0, again.output
    assert _metrics(out) == straight
    assert not _temp_files(out, cache)


def _damage_cache(cache: Path, how: str) -> None:
    entries = sorted(p.parent for p in (cache / "models").glob("*/summary.json"))
    assert entries, "the first run cached nothing"
    for entry in entries:
        if how == "truncated weights":
            data = (entry / "weights.pt").read_bytes()
            (entry / "weights.pt").write_bytes(data[: len(data) // 2])
        elif how == "empty summary":
            (entry / "summary.json").write_text("")
        elif how == "garbage unfinished entry":
            partial = entry.with_name(entry.name + ".partial") / "checkpoints"
            partial.mkdir(parents=True)
            (partial / "last.pt").write_bytes(os.urandom(512))
            (entry / "summary.json").unlink()


def test_a_damaged_cache_is_rebuilt_end_to_end_and_the_report_has_the_undamaged_numbers(tmp_path, straight):
    recipe, cache = _recipe(tmp_path), tmp_path / "cache"
    first = _in_process(recipe, tmp_path / "a", cache)
    assert first.exit_code == 0, first.output
    for i, how in enumerate(["truncated weights", "empty summary", "garbage unfinished entry"]):
        _damage_cache(cache, how)
        out = tmp_path / f"after-{i}"
        again = _in_process(recipe, out, cache)
        assert again.exit_code == 0 and "Traceback" not in again.output, (how, again.output)
        assert _metrics(out) == straight, how
        summaries = [json.loads(p.read_text()) for p in out.rglob("summary.json") if p.parent != out]
        assert summaries and not any(s.get("cached") for s in summaries if "cache_key" in s), f"{how}: reused"
        assert not _temp_files(out, cache)
