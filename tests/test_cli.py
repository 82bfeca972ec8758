"""End-to-end: the CLI on synthetic data, resume, the Python API, and every bad-input case (exit 2,
one line naming the thing, no run directory left behind)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import edgedistill
from tests.helpers import TINY_RECIPE, cli_run, recipe_file

RECIPE = TINY_RECIPE


def _recipe(tmp_path, **changes) -> Path:
    return recipe_file(tmp_path, RECIPE, **changes)


_run = cli_run


def test_cli_run_end_to_end_writes_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    result = _run(_recipe(tmp_path), "--out", out)
    assert result.exit_code == 0, result.output
    assert "Report:" in result.output and "student alone" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [r["role"] for r in summary["rows"]] == ["teacher", "student alone", "method"]
    assert summary["rows"][2]["metrics"]["acc"]["n"] == 2
    assert summary["data"]["split_by"] == "subject"
    for seed in (0, 1):
        stage = out / "offline" / f"seed{seed}"
        lines = (stage / "metrics.jsonl").read_text().splitlines()
        assert set(json.loads(lines[0])["train"]) == {"ce", "kd", "total"}  # per-term logging
        assert (stage / "checkpoints" / "best.pt").is_file()
    assert (out / "report.md").read_text().startswith("# e2e")
    assert yaml.safe_load((out / "config.yaml").read_text())["seeds"] == [0, 1]


def test_second_run_reuses_teacher_and_baselines_and_resumes_the_directory(tmp_path):
    recipe = _recipe(tmp_path)
    first = edgedistill.run(recipe, out=tmp_path / "a", progress=False)
    # A new run directory: teacher and student-alone come from the cache, not retrained.
    second = edgedistill.run(recipe, out=tmp_path / "b", progress=False)
    assert json.loads((tmp_path / "b" / "teacher" / "summary.json").read_text())["cached"] is True
    assert first["rows"][0]["metrics"] == second["rows"][0]["metrics"]
    assert first["rows"][1]["metrics"] == second["rows"][1]["metrics"]
    # The same directory again: every stage is already finished and read back.
    mtime = (tmp_path / "a" / "offline" / "seed0" / "checkpoints" / "best.pt").stat().st_mtime
    third = edgedistill.run(recipe, out=tmp_path / "a", progress=False)
    assert third["rows"][2]["metrics"] == first["rows"][2]["metrics"]
    assert (tmp_path / "a" / "offline" / "seed0" / "checkpoints" / "best.pt").stat().st_mtime == mtime


def test_python_api_overrides_and_regression_smoke(tmp_path):
    summary = edgedistill.run(
        {**RECIPE, "method": {"name": "offline", "terms": [{"loss": "mse", "weight": 1.0}, {"loss": "mse_to_teacher", "weight": 1.0}]}},
        out=tmp_path / "reg", smoke=True, progress=False, data__params__task="regression", seeds=[3],
    )
    assert summary["task"] == "regression" and summary["seeds"] == [3]
    assert set(summary["rows"][2]["metrics"]) == {"mae", "rmse", "r2"}


def test_override_on_the_command_line(tmp_path):
    out = tmp_path / "o"
    result = _run(_recipe(tmp_path), "seeds=[5]", "train.lr=1e-3", "--out", out)
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["seeds"] == [5] and cfg["train"]["lr"] == pytest.approx(1e-3)


def test_interrupt_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from edgedistill.experiment import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.Runner, "teachers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run(_recipe(tmp_path), out=tmp_path / "r", progress=False, command="edgedistill run recipe.yaml")
    assert f"resume with: edgedistill run recipe.yaml --out {tmp_path / 'r'}" in capsys.readouterr().err


def test_the_resume_hint_can_be_pasted_back_into_a_shell(tmp_path, monkeypatch):
    """An argument with spaces or brackets (a sweep's grid override, a folder with a space) is one word again when the
    printed command is split the way a POSIX shell splits it."""
    import shlex

    from edgedistill.experiment.rundir import command_line, resume_command

    args = ["sweep", "sweep_example", "sweep.grid={method.terms.1.temperature: [2, 4]}", "seeds=[0, 1]"]
    monkeypatch.setattr("sys.argv", ["edgedistill", *args])
    folder = tmp_path / "my sweeps" / "kd"
    again = resume_command(command_line(), folder)
    assert shlex.split(again) == ["edgedistill", *args, "--out", str(folder)]


def test_different_config_in_an_existing_run_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    assert _run(_recipe(tmp_path), "--out", out).exit_code == 0
    result = _run(_recipe(tmp_path), "train.epochs=3", "--out", out)
    assert result.exit_code == 2 and "different config" in result.output


def _npz(tmp_path, name="data.npz", **arrays):
    rng = np.random.default_rng(0)
    base = {"x": rng.normal(size=(40, 3, 32)).astype(np.float32), "y": np.repeat([0, 1], 20)}
    base.update(arrays)
    np.savez(tmp_path / name, **base)
    return tmp_path / name


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epohcs=3"], "train.epohcs: unknown key"),
        (["data.name=basicmotoins"], "data.name: unknown dataset 'basicmotoins'.*Did you mean 'basicmotions'"),
        (["student.model=cnn9d"], "unknown model 'cnn9d'"),
        (["student.widht=4"], "student.widht: unknown option for model 'cnn1d'"),
        (["method.terms.1.loss=kld"], r"method.terms\[1\].loss: unknown loss 'kld'"),
        (["method.terms.1.temprature=2"], r"method.terms\[1\].temprature: unknown parameter for loss 'kd'"),
        (["method.name=ofline"], "method.name: unknown method 'ofline'"),
        (["teacher.view=x_full"], "teacher.view: the train split has no view 'x_full'"),
        (["data.params.n_subjcts=3"], "data.params.n_subjcts"),
        (["sweep={grid: {train.lr: [0.1, 0.2]}}"], "sweep: a sweep's grid, read only by `edgedistill sweep`: run it with "
                                                   "`edgedistill sweep .*recipe.yaml`"),
    ],
)
def test_bad_recipe_input_exits_2_without_a_run_directory(tmp_path, overrides, message):
    out = tmp_path / "never"
    result = _run(_recipe(tmp_path), *overrides, "--out", out)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    import re

    assert re.search(message, result.output), result.output
    assert not out.exists()


def test_smoke_still_checks_the_real_datasets_parameters(tmp_path):
    result = _run(_recipe(tmp_path), "data.params.n_subjets=3", "--smoke", "--out", tmp_path / "never")
    assert result.exit_code == 2 and "data.params.n_subjets" in result.output and "n_subjects" in result.output
    assert not (tmp_path / "never").exists()


def test_bad_data_files_exit_2(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    nan_x = np.zeros((40, 3, 32), dtype=np.float32)
    nan_x[7, 1, 3] = np.nan
    cases = [
        (tmp_path / "missing.npz", "missing.npz"),
        (garbage, "garbage.npz"),
        (_npz(tmp_path, "nan.npz", x=nan_x), "non-finite"),
    ]
    for path, message in cases:
        result = _run(_recipe(tmp_path), "data.name=null", f"data.path={path}", "data.params={}", "data.split.by=stratified", "--out", tmp_path / "never")
        assert result.exit_code == 2, result.output
        assert message in result.output, result.output
        assert not (tmp_path / "never").exists()


def test_privileged_view_missing_from_the_test_split_exits_2(tmp_path):
    rng = np.random.default_rng(0)
    path = _npz(tmp_path, "pi.npz", x_full=rng.normal(size=(40, 6, 32)).astype(np.float32),
                test_x=rng.normal(size=(10, 3, 32)).astype(np.float32), test_y=np.repeat([0, 1], 5))
    result = _run(_recipe(tmp_path), "data.name=null", f"data.path={path}", "data.params={}", "data.split.by=stratified",
                  "teacher.view=x_full", "--out", tmp_path / "never")
    assert result.exit_code == 2 and "test split has no view 'x_full'" in result.output and "test_x_full" in result.output, result.output
    assert not (tmp_path / "never").exists()


def test_teacher_weights_that_do_not_fit_exit_2(tmp_path):
    from edgedistill.models import build_model

    other = build_model("fcn", 3, 7, (32,), width=0.25)  # 7 classes, the data has 4
    torch.save(other.state_dict(), tmp_path / "teacher.pt")
    result = _run(_recipe(tmp_path), f"teacher.checkpoint={tmp_path / 'teacher.pt'}", "--out", tmp_path / "never")
    assert result.exit_code == 2 and "weights do not fit" in result.output, result.output
    assert not (tmp_path / "never").exists()


def test_user_teacher_checkpoint_is_used_without_training(tmp_path):
    from edgedistill.models import build_model

    teacher = build_model("fcn", 3, 4, (32,), width=0.25)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    summary = edgedistill.run(_recipe(tmp_path), out=tmp_path / "r", progress=False, **{"teacher.checkpoint": str(tmp_path / "teacher.pt")})
    assert summary["rows"][0]["role"] == "teacher"
    assert json.loads((tmp_path / "r" / "teacher" / "summary.json").read_text())["checkpoint"].endswith("teacher.pt")


def test_console_script_help_is_fast_and_lists(tmp_path):
    exe = Path(sys.executable).with_name("edgedistill")
    help_out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert help_out.returncode == 0 and "run" in help_out.stdout
    # --help must not import torch or Lightning (they cost seconds)
    probe = "import sys, edgedistill.cli; print('torch' in sys.modules, 'lightning_fabric' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split() == ["False", "False"]
    listed = subprocess.run([str(exe), "list", "losses"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "reverse_kd" in listed.stdout
    bad = subprocess.run([str(exe), "list", "nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown kind" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "kd", "--jobz", "2"], "error: No such option: --jobz (Possible options: --jobs) (see edgedistill run --help)"),
    (["rn"], "error: No such command 'rn'. Did you mean 'run'? (see edgedistill --help)"),
    (["export"], "error: Missing argument 'run_dir' (see edgedistill export --help)"),
    (["data", "prepare"], "error: Missing argument 'name' (see edgedistill data prepare --help)"),
    (["tune", "kd", "--budget"], "error: Option '--budget' requires an argument (see edgedistill tune --help)"),
])
def test_a_usage_error_is_one_line_and_exit_2(args, message):
    """A mistyped option or command is said like every other refusal, not in click's usage box; the entry point and
    CliRunner (the root group's class) behave alike, so the fuzz cases see what a user sees."""
    from typer.testing import CliRunner

    from edgedistill.cli import app

    result = CliRunner().invoke(app, args, prog_name="edgedistill")
    assert result.exit_code == 2 and result.output.strip() == message, result.output
    exe = Path(sys.executable).with_name("edgedistill")
    real = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)
    assert real.returncode == 2 and real.stderr.strip() == message and real.stdout == "", real.stderr


def test_a_command_group_given_nothing_shows_its_help_and_help_exits_0():
    from typer.testing import CliRunner

    from edgedistill.cli import app

    bare, asked = CliRunner().invoke(app, ["data"]), CliRunner().invoke(app, ["data", "--help"])
    assert bare.exit_code == 2 and "prepare" in bare.output and "error:" not in bare.output, bare.output
    assert asked.exit_code == 0 and "prepare" in asked.output, asked.output
