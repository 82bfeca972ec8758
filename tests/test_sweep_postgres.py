"""`edgedistill sweep --storage postgresql://...`: sweep processes sharing one study in PostgreSQL, as on several
machines (each its own --out). Two workers run one grid at once and no point runs twice; a worker SIGKILLed inside
a trial, on "another machine" (its host name differs, so only its stopped heartbeat tells), has that trial failed
by Optuna's stale-trial check and retried once by the survivor. The server: $EDGEDISTILL_TEST_POSTGRES (.ci/run
starts one), else a throwaway one started here (tests/postgres_server.py); skipped, with the reason, when neither
a server nor a driver (psycopg 3 or psycopg2) can be had."""
import copy
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgedistill.cli import app
from tests import postgres_server
from tests.helpers import TINY_RECIPE

GRID = {"method.terms.1.temperature": [1, 2, 4]}
RECIPE = {**copy.deepcopy(TINY_RECIPE), "name": "pgsw", "sweep": {"grid": GRID}}
REPO = Path(__file__).resolve().parents[1]

# A sweep process with a short heartbeat (1 s, stale after 4 s; the shipped 20 s / 120 s would make this test
# minutes long) and a short idle poll. PG_TEST_HOST: pretend to be another machine (this host's pid check cannot
# see it; only the heartbeat can). PG_TEST_HANG: stop inside the first trial's distilled stage and say so in that file.
WORKER = """
import os, pathlib, socket, sys, time
if os.environ.get("PG_TEST_HOST"):
    socket.gethostname = lambda: os.environ["PG_TEST_HOST"]
from edgedistill.experiment import runner, sweep, sweep_store
sweep_store.HEARTBEAT_S, sweep_store.GRACE_S, sweep.POLL_S = 1, 4, 0.5
real = runner.Runner.distilled
def distilled(self, seed, teachers):
    marker = os.environ.get("PG_TEST_HANG")
    if marker:
        pathlib.Path(marker).write_text(str(self.dir))
        time.sleep(300)
    return real(self, seed, teachers)
runner.Runner.distilled = distilled
from edgedistill.cli import app
app(prog_name="edgedistill")
"""


def _driver() -> str:
    """A PostgreSQL driver SQLAlchemy can use here ("" if none): psycopg 3 (the postgres extra), else psycopg2."""
    import importlib.util

    return next((m for m in ("psycopg", "psycopg2") if importlib.util.find_spec(m) is not None), "")


def _driver_reason() -> str:
    return "" if _driver() else "no PostgreSQL driver is installed (pip install 'edgedistill[postgres]')"


@pytest.fixture(scope="module")
def server():
    why = _driver_reason()
    if why:
        pytest.skip(why)
    url = os.environ.get("EDGEDISTILL_TEST_POSTGRES")
    if url:
        yield _with_driver(url)
        return
    folder = Path(tempfile.mkdtemp(prefix="edpg"))  # short: the socket path must fit in 107 bytes
    try:
        url = postgres_server.start(folder)
    except (RuntimeError, OSError, KeyError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no PostgreSQL server (set EDGEDISTILL_TEST_POSTGRES, or install PostgreSQL): {exc}")
    try:
        yield _with_driver(url)
    finally:
        postgres_server.stop(folder)


def _with_driver(url: str) -> str:
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    if "+" in parsed.drivername:  # the URL names its driver: keep it
        return url
    return parsed.set(drivername=f"postgresql+{_driver()}").render_as_string(hide_password=False)


@pytest.fixture()
def database(server):
    """A fresh database on the server for one test: its URL."""
    import sqlalchemy

    name = f"edgedistill_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    yield sqlalchemy.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def _recipe(tmp_path: Path, grid: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "sweep": {"grid": grid}}, sort_keys=False))
    return path


def _worker(tmp_path: Path, name: str, recipe: Path, url: str, **env: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    cmd = [sys.executable, "-c", WORKER, "sweep", str(recipe), "--smoke", "--no-progress", "--storage", url,
           "--study", "shared", "--out", str(tmp_path / name)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    return proc, log


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 120) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return log.read_text()


def _csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _trials(url: str) -> list:
    import optuna

    return optuna.load_study(study_name="shared", storage=url).get_trials()


def _by_state(trials: list) -> dict:
    out: dict = {}
    for t in trials:
        out.setdefault(t.state.name, []).append(t)
    return out


def test_two_workers_share_one_grid_and_run_each_point_once(tmp_path, database):
    recipe = _recipe(tmp_path, {"method.terms.1.temperature": [1, 2], "method.terms.1.weight": [0.5, 1.0]})
    procs = [_worker(tmp_path, name, recipe, database) for name in ("a", "b")]
    outputs = [_wait(p, log) for p, log in procs]
    assert [p.returncode for p, _ in procs] == [0, 0], outputs
    states = _by_state(_trials(database))
    assert set(states) <= {"COMPLETE", "PRUNED"}, states  # nothing failed, running or left queued
    points = [t.user_attrs["point"] for t in states["COMPLETE"]]
    assert len(points) == len(set(points)) == 4, points
    assert all(t.user_attrs["skipped"].startswith("duplicate") for t in states.get("PRUNED", []))
    trained = sorted(p.parent.name for p in tmp_path.glob("[ab]/trials/*/summary.json"))
    assert trained == sorted(points)  # each point trained once, on one of the two "machines"
    for out in ("a", "b"):  # both tables show the whole grid, wherever a point ran
        assert [r["state"] for r in _csv(tmp_path / out / "results.csv")] == ["complete"] * 4


def test_a_worker_killed_on_another_machine_has_its_trial_retried_once(tmp_path, database):
    recipe, marker = _recipe(tmp_path, GRID), tmp_path / "hanging"
    victim, victim_log = _worker(tmp_path, "b", recipe, database, PG_TEST_HOST="machine-b", PG_TEST_HANG=str(marker))
    survivor = None
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not marker.exists() and victim.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), victim_log.read_text()  # the victim is inside its first trial
        survivor, survivor_log = _worker(tmp_path, "a", recipe, database)
        while time.time() < deadline and "[1/3]" not in survivor_log.read_text() and survivor.poll() is None:
            time.sleep(0.1)
        assert "[1/3]" in survivor_log.read_text(), survivor_log.read_text()  # both worked on the study at once
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        output = _wait(survivor, survivor_log)
    finally:
        for proc in (victim, survivor):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert survivor.returncode == 0, output
    states = _by_state(_trials(database))
    assert set(states) <= {"COMPLETE", "FAIL", "PRUNED"}, states
    complete = [t.user_attrs["point"] for t in states["COMPLETE"]]
    assert len(complete) == len(set(complete)) == 3, complete  # every grid point finished exactly once
    [failed] = states["FAIL"]  # the killed trial, failed by Optuna's stale-trial check (no pid check across hosts)
    assert failed.user_attrs["owner"]["host"] == "machine-b" and "error" not in failed.user_attrs
    [retry] = [t for t in states["COMPLETE"] if t.system_attrs.get("retry_history") == [failed.number]]
    assert retry.user_attrs["point"] == failed.user_attrs["point"] and retry.user_attrs["owner"]["host"] != "machine-b"
    killed_dir = Path(marker.read_text())
    assert not (killed_dir / "summary.json").exists()  # killed inside the run; the retry ran on the survivor
    assert len(list(tmp_path.glob("a/trials/*/summary.json"))) == 3
    assert [r["state"] for r in _csv(tmp_path / "a" / "results.csv")] == ["complete"] * 3


def test_an_unreachable_storage_is_one_line_naming_storage_and_exit_2(tmp_path):
    why = _driver_reason()
    if why:
        pytest.skip(why)
    url = f"postgresql+{_driver()}://someone:s3cret@127.0.0.1:1/nowhere"  # port 1: nothing listens
    start = time.time()
    result = CliRunner().invoke(app, ["sweep", str(_recipe(tmp_path, GRID)), "--smoke", "--storage", url,
                                      "--out", str(tmp_path / "sw"), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--storage" in lines[0] and "cannot open it" in lines[0], result.output
    assert "s3cret" not in result.output and not (tmp_path / "sw").exists()
    assert time.time() - start < 30


def test_one_waiting_trial_is_taken_by_exactly_one_of_many_racing_processes(database):
    # What the sweep relies on across machines: WAITING -> RUNNING happens once, whoever races for it.
    import threading

    import optuna
    from optuna.distributions import CategoricalDistribution

    from edgedistill.experiment.sweep_store import queue_point, take

    study = optuna.create_study(study_name="race", storage=database)
    queue_point(study, {"a": "1"}, {"a": CategoricalDistribution(["1"])}, "a=1")
    [waiting] = study.get_trials()
    stores = [optuna.storages.RDBStorage(database) for _ in range(8)]  # one connection each, as separate machines
    barrier, won = threading.Barrier(len(stores)), []

    def race(store) -> None:
        barrier.wait()
        won.append(take(store, waiting._trial_id))

    threads = [threading.Thread(target=race, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(won) == [False] * 7 + [True]
    assert study.get_trials()[0].state.name == "RUNNING"


def test_a_point_queued_twice_at_once_runs_once(tmp_path):
    # Two processes that found a point unqueued at the same moment both queue it: the lower-numbered trial counts,
    # the other is closed as a duplicate before anything trains (SQLite here: the rule is the storage's, not the server's).
    import optuna
    from optuna.distributions import CategoricalDistribution

    from edgedistill.cli import app as cli_app
    from edgedistill.experiment.sweep import encode, point_id
    from edgedistill.experiment.sweep_store import queue_point

    url, key = f"sqlite:///{tmp_path / 'study.db'}", "method.terms.1.temperature"
    codes = [encode(v) for v in GRID[key]]
    study = optuna.create_study(study_name="shared", storage=url, direction="maximize")
    for _ in range(2):
        queue_point(study, {key: codes[0]}, {key: CategoricalDistribution(codes)}, point_id({key: 1}))
    result = CliRunner().invoke(cli_app, ["sweep", str(_recipe(tmp_path, GRID)), "--smoke", "--storage", url, "--study",
                                          "shared", "--out", str(tmp_path / "sw"), "--no-progress", "--jobs", "2"])
    assert result.exit_code == 0, result.output  # (--jobs 2: the second copy is taken while the first runs)
    states = _by_state(_trials(url))
    assert sorted(t.user_attrs["point"] for t in states["COMPLETE"]) == sorted(point_id({key: v}) for v in GRID[key])
    [dup] = states["PRUNED"]
    assert dup.number == 1 and dup.user_attrs["skipped"] == f"duplicate: grid point {point_id({key: 1})} is trial 0's"
    assert len(list((tmp_path / "sw" / "trials").glob("*/summary.json"))) == 3 and set(states) == {"COMPLETE", "PRUNED"}


def test_a_postgresql_url_without_its_driver_says_what_to_install(tmp_path):
    # Runs everywhere (no server, no driver needed): the drivers are hidden from a fresh interpreter.
    code = ("import sys; sys.modules['psycopg'] = sys.modules['psycopg2'] = None; from edgedistill.cli import main; "
            "sys.argv[0] = 'edgedistill'; main()")
    out = tmp_path / "sw"
    done = subprocess.run([sys.executable, "-c", code, "sweep", str(_recipe(tmp_path, GRID)), "--smoke", "--storage",
                           "postgresql://someone:s3cret@db.invalid/sweeps", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --storage 'postgresql://someone:***@db.invalid/sweeps'")
    assert "pip install 'edgedistill[postgres]'" in lines[0] and not out.exists()
