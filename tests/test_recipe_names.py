"""Shipped recipes are package data, run by name (`edgedistill run kd`) from any folder and listed one per line
(`edgedistill list recipes`); an unknown name is one line with the closest names, exit 2, nothing written."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import edgedistill
from edgedistill.cli import app
from edgedistill.errors import UserInputError
from edgedistill.shipped_recipes import recipe_source, shipped_dir, shipped_names

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(edgedistill.__file__).resolve().parent


def test_importlib_resources_finds_every_recipe_inside_the_package():
    folder = files("edgedistill") / "recipes"
    assert folder.joinpath("kd.yaml").is_file() and folder.joinpath("quickstart.yaml").is_file()
    assert shipped_dir().resolve() == PACKAGE / "recipes"
    stems = sorted(p.stem for p in (PACKAGE / "recipes").glob("*.yaml"))
    assert shipped_names() == stems and len(stems) >= 40
    if (ROOT / "recipes").exists():  # a checkout: the documented recipes/<name>.yaml is the packaged file
        assert (ROOT / "recipes" / "kd.yaml").resolve() == PACKAGE / "recipes" / "kd.yaml"


def test_names_and_paths_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./recipes here: only the package can answer
    assert recipe_source("kd") == shipped_dir() / "kd.yaml"
    assert recipe_source(None) == shipped_dir() / "quickstart.yaml"  # `edgedistill run` with no recipe
    assert recipe_source("kd.yaml").resolve() == PACKAGE / "recipes" / "kd.yaml"  # worked before names did
    (tmp_path / "kd").write_text("name: mine\n")
    assert recipe_source("kd") == Path("kd")  # an existing file is always itself
    assert recipe_source("mine/x.yaml") == Path("mine/x.yaml")  # a missing path: the reader names it
    with pytest.raises(UserInputError, match="edgedistill run kd"):
        recipe_source("recipes/kd.yaml")  # the README's path typed outside a checkout
    with pytest.raises(UserInputError, match=r"closest shipped: .*\bkd\b.*a path to a YAML file works too"):
        recipe_source("kdd")
    with pytest.raises(UserInputError, match="not a shipped recipe"):
        edgedistill.run("no_such_recipe_at_all")


def test_run_by_name_runs_the_packaged_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "kd", "teacher.model=cnn1d", "--smoke", "--out", str(tmp_path / "run"),
                                       "--no-progress"])  # (a small teacher: the name is what is tested)
    assert result.exit_code == 0, result.output
    shipped_name = yaml.safe_load((PACKAGE / "recipes" / "kd.yaml").read_text())["name"]
    summary = yaml.safe_load((tmp_path / "run" / "summary.json").read_text())
    assert summary["name"].startswith(shipped_name)


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_unknown_name_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [command, "kdd", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: recipe 'kdd'")
    assert "closest shipped: kd" in lines[0] and "path" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_list_recipes_one_line_each_with_a_description(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    result = CliRunner().invoke(app, ["list", "recipes"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == shipped_names()
    for line in lines:
        name, description = line.split(maxsplit=1)
        assert len(description) >= 15 and not description.startswith("#"), line
        assert len(line) <= 100, line
    kd = next(line for line in lines if line.split()[0] == "kd")
    assert "Hinton KD" in kd
    assert CliRunner().invoke(app, ["list", "recipes", "--params", "kd"]).exit_code == 2


def test_the_wheel_ships_the_recipes(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=120)
    wheels = list(tmp_path.glob("edgedistill-*.whl"))
    if built.returncode != 0 or not wheels:
        pytest.skip(f"no wheel could be built here (offline, no setuptools?): {built.stderr.strip()[-200:]}")
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert {f"edgedistill/recipes/{n}.yaml" for n in shipped_names()} <= names
