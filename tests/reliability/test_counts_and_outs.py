"""Fuzz findings fixed outside the big families: an --out no folder can have (run and sweep) is one line and exit 2;
a method's counts (generations, GAN steps, rounds) are bounded when the recipe is read, so an absurd one is refused
instead of training for ever; a damaged sweep.json is named, not a JSONDecodeError."""
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgedistill.cli import app

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_an_out_no_folder_can_have_is_exit_2_naming_out(tmp_path, command):
    recipe = RECIPES / ("quickstart.yaml" if command == "run" else "study_augment.yaml")
    out = tmp_path / ("o" * 300)
    result = CliRunner().invoke(app, [command, str(recipe), "--smoke", "--out", str(out), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "--out" in result.output and "cannot be a folder here" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("method, key, value, extra", [("born_again", "generations", 1_000_000, ["teacher=null"]),
                                                       ("cgan_kd", "gan_steps", 10**9, []), ("dfad", "rounds", 10**7, [])])
def test_an_absurd_method_count_is_refused_at_read(tmp_path, method, key, value, extra):
    recipe = RECIPES / "quickstart.yaml"
    result = CliRunner().invoke(app, ["run", str(recipe), f"method.name={method}", "method.terms=[]", *extra,
                                      f"method.params.{key}={value}", "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert key in result.output and "less than or equal" in result.output
    assert not (tmp_path / "out").exists()


def test_a_damaged_sweep_json_is_named(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text('{"identity": "ab')
    result = CliRunner().invoke(app, ["sweep", str(RECIPES / "study_augment.yaml"), "--smoke", "--out", str(out), "--no-progress"])
    assert result.exit_code == 2 and "sweep.json is damaged" in result.output, result.output


@pytest.mark.parametrize("smoke", [False, True])
@pytest.mark.parametrize("name, key, value, says", [
    ("synthetic", "windows_per_subject", 10**9, "between 1 and 10000000"),
    ("synthetic", "length", 10**6, "GiB"),  # each count within bounds, the total is not: refused before allocating
    ("synthetic_images", "n", 5_000_000, "GiB"),
])
def test_generated_data_is_bounded_before_anything_is_allocated_also_under_smoke(tmp_path, smoke, name, key, value, says):
    args = ["run", str(RECIPES / "quickstart.yaml"), f"data.name={name}", "data.params={}", f"data.params.{key}={value}",
            "--out", str(tmp_path / "out"), "--no-progress", *(["--smoke"] if smoke else [])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and says in result.output and "data.params" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_sweep_grid_too_large_to_validate_is_refused_at_once(tmp_path):
    recipe = tmp_path / "grid.yaml"
    recipe.write_text((RECIPES / "quickstart.yaml").read_text() + "\nsweep: {grid: {train.epochs: [%s], train.batch_size: [%s]}}\n"
                      % (", ".join(map(str, range(1, 101))), ", ".join(map(str, range(1, 101)))))
    result = CliRunner().invoke(app, ["sweep", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and "100 x 100 = 10,000 points; at most 1,000" in result.output, result.output


@pytest.mark.parametrize("given", [None, "", "four", [4]])
def test_a_loss_number_given_as_null_text_or_list_is_named(tmp_path, given):
    import yaml
    override = f"method.terms.1.temperature={yaml.safe_dump(given, default_flow_style=True).strip().removesuffix('...').strip()}"
    result = CliRunner().invoke(app, ["run", str(RECIPES / "quickstart.yaml"), override, "--smoke", "--out",
                                      str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and "temperature" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_recipe_path_with_a_nul_byte_is_named(tmp_path):
    recipe = tmp_path / "nul.yaml"
    recipe.write_text('name: a\ndata: {name: synthetic}\nstudent: {model: cnn1d}\ncache_dir: "nul\\0byte"\n')
    result = CliRunner().invoke(app, ["run", str(recipe), "--smoke", "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and "cache_dir: a path cannot contain a NUL character" in result.output, result.output


def test_a_cache_dir_that_cannot_be_a_folder_is_refused_before_the_run_directory(tmp_path):
    (tmp_path / "a_file").write_text("x")
    result = CliRunner().invoke(app, ["run", str(RECIPES / "quickstart.yaml"), "data.name=synthetic",
                                      f"cache_dir={tmp_path / 'a_file'}", "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2 and result.output.startswith("error: cache_dir: cannot create the folder"), result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["folder", "fifo"])
@pytest.mark.parametrize("where", ["recipe", "data", "checkpoint"])
def test_a_folder_or_fifo_where_a_file_is_read_is_named_for_what_it_is(tmp_path, kind, where):
    import os

    odd = tmp_path / {"recipe": "odd.yaml", "data": "odd.npz", "checkpoint": "odd.pt"}[where]
    os.mkfifo(odd) if kind == "fifo" else odd.mkdir()
    recipe, extra = str(RECIPES / "quickstart.yaml"), []
    if where == "recipe":
        recipe = str(odd)
    else:
        extra = [f"data.path={odd}", "data.name=null"] if where == "data" else [f"student.checkpoint={odd}"]
    result = CliRunner().invoke(app, ["run", recipe, *extra, "--out", str(tmp_path / "out"), "--no-progress"])
    what = "a FIFO" if kind == "fifo" else "a folder"
    assert result.exit_code == 2 and f"is {what}, not a regular file" in result.output, result.output
