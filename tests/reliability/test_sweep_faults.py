"""Sweep faults (issue 16, item 6): a worker killed mid-sweep fails only its own trial, a sweep killed with SIGKILL
takes its workers with it, a sweep directory held by a live sweep is exit 4, a storage password never reaches a
file or the screen, and grid values never make a folder outside the sweep."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.experiment import sweep as sweep_mod
from edgedistill.experiment.rundir import DirLock, redact
from edgedistill.experiment.sweep_grid import point_id
from edgedistill.experiment.workers import TEST_KILL_TRIAL

RECIPE = {
    "name": "swf",
    "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 8, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1, "batch_size": 8}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 2}]},
    "train": {"epochs": 1, "batch_size": 8},
    "seeds": [0],
    "engine": {"threads": 1, "progress": False},
    "sweep": {"grid": {"method.terms.1.temperature": [1, 3]}},
}
PASSWORD = "s3cr3t-pw"
STORAGE = f"postgresql://alice:{PASSWORD}@db.example:5432/sweeps"


def _recipe(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **changes}, sort_keys=False))
    return path


def _sweep(*args):
    return CliRunner().invoke(app, ["sweep", *map(str, args), "--no-progress"])


def test_a_killed_worker_fails_only_its_trial_and_a_sigkilled_sweep_leaves_no_worker_alive(tmp_path):
    """One real sweep with --jobs 2 over train.epochs [1, 2, 400]: the worker given the 1-epoch point kills itself
    (SIGKILL) at once, so a sibling is in flight when it dies; that sibling and the 2-epoch point still finish
    (before, the broken pool failed every in-flight trial). While the 400-epoch trial runs, the sweep process is
    SIGKILLed: within 3 s no worker is left (before, each stayed, training, forever)."""
    path = _recipe(tmp_path, sweep={"grid": {"train.epochs": [1, 2, 400]}})
    out = tmp_path / "sw"
    log = open(tmp_path / "sweep.log", "w")
    env = {**os.environ, TEST_KILL_TRIAL: "epochs=1-"}
    proc = subprocess.Popen([sys.executable, "-m", "edgedistill.cli", "sweep", str(path), "--jobs", "2", "--out", str(out),
                             "--no-progress"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env)
    workers: list = []
    try:
        deadline, states = time.time() + 240, {}
        while time.time() < deadline and proc.poll() is None:
            if (out / "results.csv").is_file():
                states = {r["train.epochs"]: r for r in _csv(out / "results.csv")}
            long_runs = [p.read_text() for p in out.glob("trials/epochs=400-*/.edgedistill.lock")]
            if states.get("2", {}).get("state") == "complete" and states.get("1", {}).get("state") == "failed" \
                    and long_runs and long_runs[0].startswith("pid "):
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "sweep.log").read_text()
        assert "worker process running this trial died (killed by SIGKILL)" in states["1"]["error"]
        assert states["400"]["state"] == "running"  # the sibling in flight when the worker died is still training
        workers = _workers(proc.pid)
        assert int(long_runs[0].split()[1]) in workers  # (and an idle one, if the killed worker was not the idle one)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 3
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "workers outlived their sweep process"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
        log.close()


def _csv(path: Path) -> list:
    import csv

    with open(path) as fh:
        return list(csv.DictReader(fh))


def _workers(parent: int) -> list:
    """The sweep workers among ``parent``'s children (not multiprocessing's resource tracker)."""
    found = []
    for tid in os.listdir(f"/proc/{parent}/task"):
        with open(f"/proc/{parent}/task/{tid}/children") as fh:
            for pid in map(int, fh.read().split()):
                with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                    if b"resource_tracker" not in cmd.read():
                        found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] not in ("Z", "X")  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_sweep_directory_held_by_a_live_sweep_is_exit_4(tmp_path):
    path, out = _recipe(tmp_path), tmp_path / "sw"
    with DirLock(out, "sweep directory"):
        result = _sweep(path, "--smoke", "--out", out)
    assert result.exit_code == 4, result.output
    assert f"sweep directory '{out}' is in use by a running edgedistill process (pid {os.getpid()}" in result.output
    assert sorted(os.listdir(out)) == [".edgedistill.lock"]


def test_a_storage_password_never_reaches_a_file_the_screen_or_an_error(tmp_path, monkeypatch):
    path, out = _recipe(tmp_path, sweep={"grid": {"method.terms.1.temperature": [2]}}), tmp_path / "sw"
    # No database server here: the study behind the URL is a local SQLite file; everything else sees the URL.
    real_open, db = sweep_mod.open_study, f"sqlite:///{tmp_path / 'server.db'}"
    monkeypatch.setattr(sweep_mod, "open_study", lambda url, *a: real_open(db, *a))
    monkeypatch.setattr(sys, "argv", ["edgedistill", "sweep", str(path), "--storage", STORAGE])
    result = _sweep(path, "--smoke", "--out", out, "--storage", STORAGE)
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output and "alice:***@db.example" in result.output
    for f in out.rglob("*"):
        if f.is_file() and f.suffix != ".db":
            assert PASSWORD.encode() not in f.read_bytes(), f
    assert json.loads((out / "sweep.json").read_text())["storage"] == "postgresql://alice:***@db.example:5432/sweeps"
    assert "alice:***@" in (out / "results.md").read_text()  # the command, as typed, less the password

    monkeypatch.setattr(sweep_mod, "open_study", real_open)  # a storage that cannot be opened: the error hides it too
    failed = _sweep(path, "--smoke", "--out", tmp_path / "sw2", "--storage", STORAGE)
    assert failed.exit_code == 2 and PASSWORD not in failed.output and "alice:***@" in failed.output, failed.output
    assert not (tmp_path / "sw2").exists()


def test_redact_hides_only_passwords():
    assert redact(f"x {STORAGE} y") == "x postgresql://alice:***@db.example:5432/sweeps y"
    assert redact("mysql+pymysql://u:p%40ss@h/db --out a") == "mysql+pymysql://u:***@h/db --out a"
    for keep in ("sqlite:////tmp/a.db", "postgresql://alice@host/db", "http://host:8080/path@x", "a:b@c"):
        assert redact(keep) == keep


@settings(derandomize=True, deadline=None, max_examples=100)
@given(st.dictionaries(st.text(min_size=1, max_size=30), st.one_of(st.text(max_size=3000), st.floats(allow_nan=False),
                                                                    st.integers(), st.lists(st.text(max_size=20), max_size=3)),
                       min_size=1, max_size=3))
def test_a_grid_point_id_is_a_safe_folder_name_whatever_the_values(point):
    pid = point_id(point)
    assert len(pid) <= 89 and ".." not in pid and "/" not in pid and "\\" not in pid
    assert pid[0].isascii() and pid[0].isalnum() and all(c.isascii() and (c.isalnum() or c in "._=,+-") for c in pid)
    assert point_id(dict(point)) == pid


@pytest.mark.parametrize("value", ["../../x", "/etc/passwd", "..", "x" * 10_000, "-rf", ".hidden"])
def test_hostile_grid_values_stay_inside_the_trials_folder(value, tmp_path):
    from edgedistill.paths import inside

    pid = point_id({"teacher.model": value})
    target = inside(tmp_path / "trials", pid, what="sweep point")
    assert target.parent == tmp_path / "trials" and not pid.startswith(("-", "."))


def test_a_read_only_sweep_folder_is_exit_4_and_nothing_is_written(tmp_path, monkeypatch):
    import errno
    import pathlib

    path, ro = _recipe(tmp_path), tmp_path / "ro"
    ro.mkdir()
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *a, **k):  # folders under ro/ behave as on a read-only file system
        if Path(self).resolve().is_relative_to(ro.resolve()) and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    result = _sweep(path, "--smoke", "--out", ro / "sw")
    assert result.exit_code == 4, result.output
    assert "read-only" in result.output and str(ro / "sw") in result.output and "Traceback" not in result.output
    assert list(ro.iterdir()) == []
