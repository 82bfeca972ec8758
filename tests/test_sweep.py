"""`edgedistill sweep`: a grid of recipe variants with Optuna as the trial store. End to end on tiny data: the
table and the picture, validation before anything is written, resume (finished points are not re-run, failed
ones are), a sweep killed with SIGKILL and restarted (every grid point counted once), and --jobs 2."""
import copy
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.experiment import runner, sweep_report
from edgedistill.experiment.sweep import encode, point_id
from tests.helpers import TINY_RECIPE

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# The CLI tests' tiny recipe, swept over the KD temperature.
RECIPE = {**copy.deepcopy(TINY_RECIPE), "name": "sw", "sweep": {"grid": {"method.terms.1.temperature": [1, 2, 4]}}}


def _recipe(tmp_path, sweep=None, **changes) -> Path:
    data = json.loads(json.dumps(RECIPE))
    data.update(changes)
    if sweep is not None:
        data["sweep"] = sweep
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sweep(*args):
    return CliRunner().invoke(app, ["sweep", *map(str, args), "--no-progress"])


def _csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _complete_per_point(sweep_dir: Path) -> dict:
    import optuna

    study = optuna.load_study(study_name=json.loads((sweep_dir / "sweep.json").read_text())["study"],
                              storage=f"sqlite:///{sweep_dir / 'study.db'}")
    counts: dict = {}
    for t in study.get_trials():
        if t.state == optuna.trial.TrialState.COMPLETE:
            counts[t.user_attrs["point"]] = counts.get(t.user_attrs["point"], 0) + 1
    return counts, study.get_trials()


def test_smoke_grid_end_to_end_with_list_values_table_and_heatmap(tmp_path):
    terms_a = [{"loss": "ce", "weight": 1.0}]
    terms_b = [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 4}]
    path = _recipe(tmp_path, {"grid": {"method.terms": [terms_a, terms_b], "train.lr": [1e-3, 3e-3]}, "name": "grid2"})
    out = tmp_path / "sw"
    result = _sweep(path, "--smoke", "--out", out)
    assert result.exit_code == 0, result.output
    assert "[4/4]" in result.output and "results.md" in result.output
    rows = _csv(out / "results.csv")
    assert len(rows) == 4 and {r["state"] for r in rows} == {"complete"}
    assert {r["method.terms"] for r in rows} == {sweep_report.label(terms_a), sweep_report.label(terms_b)}
    assert all(0.0 <= float(r["acc_mean"]) <= 1.0 and r["wins"] in ("0", "1") for r in rows)
    # Each trial's run directory holds the decoded grid value, not its JSON text.
    for r in rows:
        cfg = yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text())
        assert cfg["method"]["terms"] == yaml.safe_load(r["method.terms"]) and cfg["seeds"] == [0]
        assert (Path(r["run_dir"]) / "summary.json").is_file()
    md = (out / "results.md").read_text()
    assert md.startswith("# grid2: sweep over `method.terms`, `train.lr`") and "4 grid points: 4 finished" in md
    assert "| method.terms | train.lr | method acc | method val acc | student alone | paired diff | wins | teacher acc | run |" in md
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp")) and (out / "study.db").is_file()


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"grid": {"train.epohcs": [1, 2]}}, r"sweep\.grid\.train\.epohcs: .*unknown key"),
        ({"grid": {"method.terms.1.temprature": [1, 2]}}, r"sweep\.grid\.method\.terms\.1\.temprature: .*unknown parameter for loss 'kd'"),
        ({"grid": {"train.lr": [1e-3, -1]}}, r"sweep\.grid\.train\.lr: -1: .*greater than 0"),
        ({"grid": {"student.model": ["cnn1d", "cnn9d"]}}, r"sweep\.grid\.student\.model: cnn9d: .*unknown model 'cnn9d'"),
        ({"grid": {"train.lr": 0.1}}, r"sweep\.grid\.train\.lr: expected a non-empty list"),
        ({"grid": {"train.lr": [0.1, 0.1]}}, r"sweep\.grid\.train\.lr: the value 0.1 is listed twice"),
        ({"gird": {"train.lr": [0.1]}}, r"sweep\.gird: unknown key"),
        ({"grid": {"train.lr": [0.1]}, "metric": "rmse"}, r"sweep\.metric: 'rmse' is not a classification metric"),
        ({"grid": {"seeds": [[0], [1]]}}, r"sweep\.grid\.seeds: not a grid axis"),
    ],
)
def test_invalid_grid_fails_before_any_trial_and_writes_nothing(tmp_path, sweep, message):
    out = tmp_path / "never"
    for extra in (["--smoke"], []):
        result = _sweep(_recipe(tmp_path, sweep), *extra, "--out", out)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and re.search(message, result.output), result.output
        assert not out.exists() and not (tmp_path / "sweeps").exists()


def test_a_recipe_without_a_sweep_section_and_a_different_sweep_in_the_directory_exit_2(tmp_path):
    data = {k: v for k, v in RECIPE.items() if k != "sweep"}
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(data))
    result = _sweep(tmp_path / "plain.yaml", "--smoke", "--out", tmp_path / "never")
    assert result.exit_code == 2 and "no 'sweep' section" in result.output and not (tmp_path / "never").exists()
    out = tmp_path / "sw"
    assert _sweep(_recipe(tmp_path, {"grid": {"method.terms.1.temperature": [1, 2]}}), "--smoke", "--out", out).exit_code == 0
    result = _sweep(_recipe(tmp_path, {"grid": {"method.terms.1.temperature": [1, 3]}}), "--smoke", "--out", out)
    assert result.exit_code == 2 and "holds a different sweep (grid differ)" in result.output, result.output


def test_resume_skips_finished_points_and_reruns_failed_ones(tmp_path, monkeypatch):
    real, calls, broken = runner.run, [], {"on": True}

    def counting(source, overrides=None, **kwargs):
        calls.append(Path(kwargs["out"]).name)
        if broken["on"] and Path(kwargs["out"]).name.startswith("temperature=2-"):
            raise RuntimeError("boom")
        return real(source, overrides, **kwargs)

    monkeypatch.setattr(runner, "run", counting)
    path, out = _recipe(tmp_path), tmp_path / "sw"
    first = _sweep(path, "--smoke", "--out", out)
    assert first.exit_code == 1 and "FAILED" in first.output and "1 of 3 grid points failed" in first.output, first.output
    assert len(calls) == 3
    states = {r["method.terms.1.temperature"]: r for r in _csv(out / "results.csv")}
    assert states["2"]["state"] == "failed" and "RuntimeError: boom" in states["2"]["error"]
    assert states["1"]["state"] == states["4"]["state"] == "complete"
    assert "Failed: method.terms.1.temperature=2: RuntimeError: boom" in (out / "results.md").read_text()

    broken["on"] = False
    second = _sweep(path, "--smoke", "--out", out)
    assert second.exit_code == 0, second.output
    assert calls[3:] == [point_id({"method.terms.1.temperature": 2})]  # only the failed point ran again
    assert "2 point(s) already finished" in second.output

    third = _sweep(path, "--smoke", "--out", out)
    assert third.exit_code == 0 and len(calls) == 4 and "3 point(s) already finished" in third.output
    counts, _ = _complete_per_point(out)
    assert sorted(counts.values()) == [1, 1, 1]
    assert [r["state"] for r in _csv(out / "results.csv")] == ["complete"] * 3


# Run in a subprocess: the second grid point stops inside its run (teacher and baseline done, the distilled student
# not started) and says so, so the test can SIGKILL the sweep there.
HANG_IN_SECOND_TRIAL = """
import os, pathlib, sys, time
from edgedistill.experiment import runner
real, dirs = runner.Runner.distilled, []
def distilled(self, seed, teachers):
    dirs.append(str(self.dir)) if str(self.dir) not in dirs else None
    if len(dirs) == 2:
        pathlib.Path(os.environ["SWEEP_TEST_MARKER"]).write_text(str(self.dir))
        time.sleep(300)
    return real(self, seed, teachers)
runner.Runner.distilled = distilled
from edgedistill.cli import app
app(prog_name="edgedistill")
"""


def test_a_sweep_killed_mid_way_restarts_and_counts_every_point_once(tmp_path):
    path, out, marker = _recipe(tmp_path), tmp_path / "sw", tmp_path / "hanging"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", HANG_IN_SECOND_TRIAL, "sweep", str(path), "--out", str(out), "--no-progress"],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SWEEP_TEST_MARKER": str(marker)})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not marker.exists() and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), (tmp_path / "first.log").read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert "[1/3]" in (tmp_path / "first.log").read_text()
    killed_dir = Path(marker.read_text())
    assert (killed_dir / "config.yaml").is_file() and not (killed_dir / "summary.json").exists()  # killed inside the run
    counts, trials = _complete_per_point(out)
    assert sum(counts.values()) == 1 and [t.state.name for t in trials].count("RUNNING") == 1
    finished_dir = Path(next(t.user_attrs["run_dir"] for t in trials if t.state.name == "COMPLETE"))
    mtime = (finished_dir / "summary.json").stat().st_mtime

    again = _sweep(path, "--out", out)
    assert again.exit_code == 0, again.output
    assert "1 point(s) already finished" in again.output
    assert len(re.findall(r"^\[\d/3\] .*: acc ", again.output, re.M)) == 2  # only the two unfinished points ran
    counts, trials = _complete_per_point(out)
    assert sorted(counts.values()) == [1, 1, 1]  # every grid point exactly once
    killed = [t for t in trials if t.state.name == "FAIL"]
    assert len(killed) == 1 and "died" in killed[0].user_attrs["error"]
    assert killed[0].user_attrs["run_dir"] == str(killed_dir) and (killed_dir / "summary.json").is_file()  # resumed in place
    assert (finished_dir / "summary.json").stat().st_mtime == mtime  # the finished trial was not run again
    rows = _csv(out / "results.csv")
    assert len(rows) == 3 and {r["state"] for r in rows} == {"complete"}


def test_jobs_2_runs_trials_in_parallel_processes(tmp_path):
    path = _recipe(tmp_path, {"grid": {"method.terms.1.temperature": [1, 2], "method.terms.1.weight": [0.5, 1.0]}})
    out = tmp_path / "sw"
    result = _sweep(path, "--smoke", "--jobs", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert "2 job(s)" in result.output and "[4/4]" in result.output
    counts, trials = _complete_per_point(out)
    assert sorted(counts.values()) == [1, 1, 1, 1] and len(trials) == 4
    assert len({t.user_attrs["owner"]["pid"] for t in trials}) == 1  # one scheduler; the workers only train
    assert len(list((out / "trials").glob("*/summary.json"))) == 4


# The studies (study_*.yaml) are several grids of real recipes, 30-90 s each in smoke mode: `make test-slow` runs them;
# `make test` keeps one shipped sweep (the 10-minute budget of the suite).
SWEEPS = [p for p in sorted(RECIPES.glob("*.yaml")) if "sweep" in (yaml.safe_load(p.read_text()) or {})]


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem.startswith("study_") else p for p in SWEEPS],
                         ids=lambda p: p.stem)
def test_shipped_sweep_recipes_pass_smoke(path, tmp_path):
    result = _sweep(path, "--smoke", "--out", tmp_path / "sw")
    assert result.exit_code == 0, result.output
    assert {r["state"] for r in _csv(tmp_path / "sw" / "results.csv")} == {"complete"}


def test_grid_encoding_and_point_ids_are_stable():
    assert encode([{"loss": "kd"}]) == '[{"loss":"kd"}]' and encode(0.5) == 0.5 and encode(None) is None
    a = point_id({"method.terms.1.temperature": 2, "augment.student": ["removal", "shift"]})
    assert a == point_id({"method.terms.1.temperature": 2, "augment.student": ["removal", "shift"]})
    assert re.fullmatch(r"temperature=2,student=removal\+shift-[0-9a-f]{8}", a), a
    assert a != point_id({"method.terms.1.temperature": 2, "augment.student": ["shift", "removal"]})


def _row(point, mean, std=0.01, alone=0.5):
    return {"point": point, "id": point_id(point), "state": "complete", "trial": 0, "run_dir": "r",
            "method": {"mean": mean, "std": std, "n": 3}, "alone": {"mean": alone, "std": 0.02, "n": 3},
            "diff": mean - alone, "wins": 2, "n": 3, "teacher": 0.9, "error": None}


def test_heatmap_for_one_and_three_axes(tmp_path):
    info = {"name": "t", "axes": ["a"], "metric": "acc", "seeds": [0, 1, 2], "command": "c"}
    rows = [_row({"a": v}, 0.5 + 0.1 * i) for i, v in enumerate([1, 2, 4])]
    sweep_report.heatmap(tmp_path / "one.png", info, rows, {"a": [1, 2, 4]})
    values = {"a": [1, 2], "b": ["x", "y"], "c": [[1], [2]]}
    rows = [_row({"a": a, "b": b, "c": c}, 0.1 * (i + 1)) for i, (a, b, c) in
            enumerate((a, b, c) for a in values["a"] for b in values["b"] for c in values["c"])]
    info3 = {**info, "axes": ["a", "b", "c"], "metric": "rmse"}
    sweep_report.heatmap(tmp_path / "three.png", info3, rows, values)
    for name in ("one.png", "three.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    best = sweep_report.best_row(rows, "rmse")
    assert best["method"]["mean"] == pytest.approx(0.1)  # lower is better for rmse
    assert "Best on test (no validation recorded): a=1, b=x, c=[1]: test rmse 0.100 ± 0.010" in sweep_report.markdown(info3, rows)
    # With validation recorded the choice follows validation, not test: the last point is best on validation.
    for i, r in enumerate(rows):
        r["val"] = {"mean": 1.0 - 0.1 * i, "std": 0.0, "n": 3}
    assert sweep_report.best_row(rows, "rmse") is rows[-1]
    assert "Best on validation rmse 0.300 ± 0.000: a=2, b=y, c=[2]: test rmse 0.800 ± 0.010" in sweep_report.markdown(info3, rows)


def test_a_shared_storage_lets_a_second_sweep_directory_skip_what_the_first_finished(tmp_path):
    # Two machines: one Optuna storage URL and study name, each its own sweep directory.
    path, url = _recipe(tmp_path), f"sqlite:///{tmp_path / 'shared.db'}"
    first = _sweep(path, "--smoke", "--out", tmp_path / "a", "--storage", url, "--study", "shared")
    assert first.exit_code == 0 and not (tmp_path / "a" / "study.db").exists(), first.output
    second = _sweep(path, "--smoke", "--out", tmp_path / "b", "--storage", url, "--study", "shared")
    assert second.exit_code == 0 and "3 point(s) already finished" in second.output and "[1/3]" not in second.output
    assert not (tmp_path / "b" / "trials").exists()
    assert {Path(r["run_dir"]).parent.parent.name for r in _csv(tmp_path / "b" / "results.csv")} == {"a"}
    other = _sweep(_recipe(tmp_path, train={"epochs": 3, "batch_size": 16}), "--smoke", "--out", tmp_path / "c",
                   "--storage", url, "--study", "shared")
    assert other.exit_code == 2 and "holds a different sweep" in other.output and not (tmp_path / "c").exists()


def test_help_lists_sweep_without_importing_optuna():
    probe = "import sys, edgedistill.cli; print('optuna' in sys.modules, 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split() == ["False", "False"]
    result = CliRunner().invoke(app, ["sweep", "--help"])
    assert result.exit_code == 0 and "--jobs" in result.output and "--storage" in result.output


def test_heatmap_cells_with_more_than_two_axes_show_the_point_best_on_validation():
    values = {"a": [1], "b": ["x"], "c": [1, 2]}
    best_test = _row({"a": 1, "b": "x", "c": 1}, 0.9)
    best_val = _row({"a": 1, "b": "x", "c": 2}, 0.7)
    best_test["val"], best_val["val"] = {"mean": 0.6, "std": 0.0, "n": 3}, {"mean": 0.8, "std": 0.0, "n": 3}
    cells = sweep_report.cell_points([best_test, best_val], ["a", "b", "c"], values, "acc")
    assert cells == {(0, 0): best_val}
    assert sweep_report.cell_points([best_test, best_val], ["a", "b", "c"], values, "rmse") == {(0, 0): best_test}


def _open_at(url: str, start: float) -> str:
    from edgedistill.experiment.sweep_store import open_study

    while time.time() < start:  # every process opens at one moment
        pass
    try:
        open_study(url, "s", "maximize", {"a": [1, 2]}, "identity")
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported by the test
        return f"{type(exc).__name__}: {exc}"


def test_processes_opening_one_new_sqlite_storage_at_once_all_get_the_study(tmp_path):
    """Sweeps on one machine sharing a --storage sqlite:/// file, started together: the losers of the race to create
    Optuna's tables got "table ... already exists" (an OperationalError, 1 round in 4 here) and stopped."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(3) as pool:
        pool.map(int, range(3))  # started and imported before the rounds
        for round_ in range(12):
            url = f"sqlite:///{tmp_path / f'study{round_}.db'}"
            start = time.time() + 0.3
            assert pool.starmap(_open_at, [(url, start)] * 3) == ["ok"] * 3
