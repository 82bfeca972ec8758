"""Names from a recipe are never paths: the recipe's and the teachers' names become folder names, so a name that
could leave the run folder (a separator, '..', an absolute path) is refused before anything is written."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgedistill.config import load_recipe
from edgedistill.errors import UserInputError

BASE = {"name": "ok", "data": {"name": "synthetic"}, "student": {"model": "cnn1d"},
        "teachers": [{"name": "t1", "model": "fcn"}, {"name": "t2", "model": "fcn"}],
        "method": {"name": "multi_teacher"}}
BAD = ["../../x", "/tmp/evil", "a/b", "..", "a..b", ".hidden", "", "x" * 65, "with space", "back\\slash", "nul\x00"]


@pytest.mark.parametrize("name", BAD)
def test_a_recipe_name_that_could_be_a_path_is_refused(name):
    with pytest.raises(UserInputError, match=r"name: .*becomes a file or folder name"):
        load_recipe({**BASE, "name": name})


@pytest.mark.parametrize("name", BAD)
def test_a_teacher_name_that_could_be_a_path_is_refused(name):
    teachers = [{"name": name, "model": "fcn"}, {"name": "t2", "model": "fcn"}]
    with pytest.raises(UserInputError, match=r"teachers\.0\.name: .*becomes a file or folder name"):
        load_recipe({**BASE, "teachers": teachers})


@pytest.mark.parametrize("name", ["quickstart", "kd-basicmotions", "fcn_s0", "topo_kd_single", "v1.2", "x" * 64])
def test_ordinary_names_pass(name):
    assert load_recipe({**BASE, "name": name}).name == name


def test_the_cli_refuses_an_escaping_name_with_exit_2_and_writes_nothing(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**BASE, "name": "../../escaped"}))
    work = tmp_path / "work" / "deeper"
    work.mkdir(parents=True)
    exe = Path(sys.executable).with_name("edgedistill")
    out = subprocess.run([str(exe), "run", str(recipe), "--smoke", "--no-progress"], cwd=work, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "EDGEDISTILL_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 2 and "becomes a file or folder name" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "work"]
    assert list(work.iterdir()) == []


def test_relative_paths_in_a_recipe_file_mean_the_recipes_folder_from_any_working_folder(tmp_path, monkeypatch):
    """A relative data.path (and checkpoint, cache_dir, PI-Net) resolves against the recipe's folder, even when a
    file of the same name exists in the working folder, and is stored absolute; a CLI override stays relative to
    the working folder."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    recipe = folder / "r.yaml"
    recipe.write_text(yaml.safe_dump({**BASE, "data": {"path": "data.npz"}, "student": {"model": "cnn1d",
                                      "checkpoint": "w/student.pt"}, "cache_dir": "cache"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.npz").write_bytes(b"not the recipe's data")
    monkeypatch.chdir(elsewhere)
    r = load_recipe(recipe)
    assert r.data.path == folder / "data.npz"
    assert r.student.checkpoint == folder / "w" / "student.pt" and r.cache_dir == folder / "cache"
    assert load_recipe(recipe, ["data.path=data.npz"]).data.path == Path("data.npz")  # an override: the shell's folder
