"""Environment faults (issue 16, item 6): a run directory held by a live process, a stale lock, a read-only output
or cache folder, a full disk. Each is one line and exit code 4, nothing is corrupted, and the same command run
again once the fault is gone finishes with exactly the numbers of a run that never met it. Also: config.yaml
records the input files by content, so a resume or export with a changed data file is refused."""
import errno
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.errors import UserInputError
from edgedistill.experiment.rundir import LOCK_NAME, DirLock, recorded_hashes

RECIPE = {
    "name": "env",
    "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 8, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 2, "batch_size": 8}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5}]},
    "train": {"epochs": 3, "batch_size": 8},
    "seeds": [0],
    "engine": {"threads": 1, "progress": False},
}


def _run(recipe: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--no-progress", *extra])


def _metrics(out: Path) -> list:
    return [r["metrics"] for r in json.loads((out / "summary.json").read_text())["rows"]]


def _leftover_temp(*roots: Path) -> list:
    return [p for root in roots for p in root.rglob("*.tmp")]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The tiny recipe run once with nothing in the way: the numbers every faulted run must end with."""
    root = tmp_path_factory.mktemp("straight")
    recipe = root / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    result = _run(recipe, root / "run", f"cache_dir={root / 'cache'}")
    assert result.exit_code == 0, result.output
    return recipe, _metrics(root / "run")


def test_a_second_run_on_a_live_run_directory_is_exit_4_naming_the_owner_and_a_stale_lock_is_recovered(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from edgedistill.experiment.rundir import DirLock; "
         "DirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = CliRunner().invoke(app, ["run", "--smoke", "--out", str(out), "--no-progress"])
        assert second.exit_code == 4, second.output
        assert f"pid {holder.pid} on {socket.gethostname()}" in second.output and "Traceback" not in second.output
        assert os.listdir(out) == [LOCK_NAME]  # nothing written beside the holder's lock
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    third = CliRunner().invoke(app, ["run", "--smoke", "--out", str(out), "--no-progress"])
    assert third.exit_code == 0, third.output
    assert f"recovered the stale lock of run directory '{out}' (pid {holder.pid}" in third.output
    assert (out / LOCK_NAME).read_text() == ""  # released at the end of the run: it names nobody


def test_a_full_disk_mid_run_is_exit_4_and_the_same_command_resumes_to_identical_numbers(tmp_path, monkeypatch, straight):
    recipe, expected = straight
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = (recipe, out, f"cache_dir={cache}")

    real_replace, calls = os.replace, []

    def replace_fills_disk(src, dst):  # the distilled student's epoch-1 checkpoint meets a full disk
        if str(dst).endswith(os.path.join("offline", "seed0", "checkpoints", "last.pt")):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_fills_disk)
    first = _run(*args)
    assert first.exit_code == 4, first.output
    # stderr is the one error line (stage lines, on stdout, say how far the run got)
    assert "disk is full" in first.stderr and "last.pt" in first.stderr and len(first.stderr.strip().splitlines()) == 1
    monkeypatch.setattr(os, "replace", real_replace)

    # A plain append (the metrics log) on a full disk: the runner maps it too; a half-written line is dropped on resume.
    real_open, appends = pathlib.Path.open, []

    def open_fills_disk(self, mode="r", *a, **k):
        if self.name == "metrics.jsonl" and mode == "a" and "offline" in self.parts:
            appends.append(self)
            if len(appends) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_open(self, mode, *a, **k)

    monkeypatch.setattr(pathlib.Path, "open", open_fills_disk)
    second = _run(*args)
    assert second.exit_code == 4, second.output
    assert "metrics.jsonl" in second.output and "disk is full" in second.output
    monkeypatch.setattr(pathlib.Path, "open", real_open)

    again = _run(*args)  # the lock was released by each failed run, or this would be exit 4 too
    assert again.exit_code == 0, again.output
    assert _metrics(out) == expected
    assert [json.loads(ln)["epoch"] for ln in (out / "offline" / "seed0" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert not _leftover_temp(out, cache)


def _refuse(monkeypatch, root: Path, code: int) -> None:
    """Folders under ``root`` behave as on a read-only file system (or without permission): creating one fails."""
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *a, **k):
        if Path(self).resolve().is_relative_to(root.resolve()) and not self.exists():
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", _deny_under(os.open, root, code))


def _deny_under(real, root: Path, code: int):
    def opener(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and Path(path).resolve().is_relative_to(root.resolve()):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, flags, *a, **k)

    return opener


@pytest.mark.parametrize("code, says", [(errno.EROFS, "read-only"), (errno.EACCES, "no permission")])
def test_a_read_only_output_folder_is_exit_4_before_anything_is_written_then_the_same_command_runs(tmp_path, monkeypatch, code, says):
    out = tmp_path / "ro" / "run"
    (tmp_path / "ro").mkdir()
    with monkeypatch.context() as m:
        _refuse(m, tmp_path / "ro", code)
        result = CliRunner().invoke(app, ["run", "--smoke", "--out", str(out), "--no-progress"])
    assert result.exit_code == 4, result.output
    assert says in result.output and str(out) in result.output and "Traceback" not in result.output
    assert not out.exists()
    assert CliRunner().invoke(app, ["run", "--smoke", "--out", str(out), "--no-progress"]).exit_code == 0


def test_a_read_only_cache_is_exit_4_and_the_run_resumes_identically_once_writable(tmp_path, monkeypatch, straight):
    recipe, expected = straight
    out, cache = tmp_path / "run", tmp_path / "cache"
    cache.mkdir()
    with monkeypatch.context() as m:
        _refuse(m, cache, errno.EROFS)
        result = _run(recipe, out, f"cache_dir={cache}")
    assert result.exit_code == 4, result.output
    assert "read-only" in result.output and str(cache) in result.output and "Traceback" not in result.output
    assert list(cache.iterdir()) == []  # nothing half-written in the cache
    again = _run(recipe, out, f"cache_dir={cache}")
    assert again.exit_code == 0, again.output
    assert _metrics(out) == expected


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0555 (the patched tests above cover it)")
def test_a_chmod_read_only_output_folder_is_exit_4(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("chmod does not deny writes here")
        result = CliRunner().invoke(app, ["run", "--smoke", "--out", str(ro / "run"), "--no-progress"])
        assert result.exit_code == 4 and "Traceback" not in result.output, result.output
    finally:
        ro.chmod(0o755)


def test_an_unexpected_environment_oserror_in_a_command_is_one_line_exit_4_and_a_bug_keeps_its_traceback(monkeypatch):
    import edgedistill.experiment.runner as runner

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/file.bin")

    monkeypatch.setattr(runner, "run", full)
    result = CliRunner().invoke(app, ["run", "--smoke", "--no-progress"])
    assert result.exit_code == 4 and result.output.count("\n") == 1 and "/somewhere/file.bin" in result.output, result.output

    def bug(*a, **k):
        raise OSError(errno.ENOENT, "No such file or directory", "/nowhere")

    monkeypatch.setattr(runner, "run", bug)
    result = CliRunner().invoke(app, ["run", "--smoke", "--no-progress"])
    assert isinstance(result.exception, FileNotFoundError)


def test_config_yaml_records_the_data_file_by_content_and_a_changed_file_is_refused_on_resume_and_export(tmp_path):
    from edgedistill.deploy.runs import load_run

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.normal(size=(48, 2, 16)).astype("float32"), y=np.arange(48) % 2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "data": {"path": "d.npz"}, "train": {"epochs": 1, "batch_size": 8},
                                      "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1, "batch_size": 8}}}))
    out = tmp_path / "run"
    assert _run(recipe, out).exit_code == 0
    digest, where = recorded_hashes(out / "config.yaml")["data.path"]
    assert where == str(data.resolve()) and len(digest) == 64
    assert load_run(out).student is not None  # the same file: export and profile read it

    original = data.read_bytes()
    np.savez(data, x=rng.normal(size=(48, 2, 16)).astype("float32"), y=np.arange(48) % 2)
    result = _run(recipe, out)
    assert result.exit_code == 2, result.output
    assert "data.path" in result.output and "d.npz" in result.output and "changed" in result.output
    with pytest.raises(UserInputError, match="changed since the run"):
        load_run(out)

    # A run directory written before the hashes were recorded still resumes (it has nothing to compare with).
    data.write_bytes(original)
    cfg = out / "config.yaml"
    cfg.write_text("".join(ln for ln in cfg.read_text().splitlines(keepends=True) if not ln.startswith("# sha256")))
    assert _run(recipe, out).exit_code == 0


def test_a_lock_is_exclusive_between_two_holders_and_released_on_an_exception(tmp_path):
    with DirLock(tmp_path / "d"):
        with pytest.raises(OSError, match=r"in use by a running edgedistill process \(pid \d+ on "):
            DirLock(tmp_path / "d").acquire()
    with pytest.raises(RuntimeError):
        with DirLock(tmp_path / "d"):
            raise RuntimeError("boom")
    DirLock(tmp_path / "d").acquire().release()  # free again
