"""A teacher given by its outputs on the data (``teacher: {outputs: file.npz}``, experiment/teacher_outputs.py).

The main claim: an outputs file made from a trained zoo teacher, in the order of ``x``, reproduces the KD student of
that teacher exactly (same seed, same numbers). The test finds the original row of every split row through a raw
view of row numbers (what the recorded outputs ride on too) and checks that mapping independently against ``x``.
"""
import json
import runpy
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import edgedistill
from edgedistill.cli import app
from edgedistill.config import load_recipe
from edgedistill.data.dataset import outputs_by_batch
from edgedistill.data.prepare import split_windows, windowed_raw
from edgedistill.experiment.build import build_network
from edgedistill.experiment.runner import plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "user_models"
KD = [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 2}]
FAST = {"epochs": 2, "batch_size": 16}


def _signals(rng, n, classes=3):
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 3, 16)).astype(np.float32)
    x[np.arange(n), y % 3] += 1.0 + 0.5 * y[:, None]
    return x, y


def _recipe(folder: Path, data: Path, teacher: dict, **changes) -> dict:
    return {"name": "outputs", "data": {"path": str(data)}, "teacher": teacher,
            "student": {"model": "cnn1d", "width": 4, "depth": 2}, "method": {"name": "offline", "terms": KD},
            "train": dict(FAST), "seeds": [0], "baseline": False, "engine": {"progress": False},
            "cache_dir": str(folder / "cache"), **changes}


def _record(recipe: dict, teacher_summary: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trained teacher's logits on every row of x and of test_x, in their order (what a user exports), and the
    original rows of the training split. Each split's rows are computed as the run computes its cached outputs."""
    rec = load_recipe(recipe)
    raw = windowed_raw(rec.data)
    numbered = replace(raw, views={"row": np.arange(len(raw.x))[:, None]}, raw_views=frozenset({"row"}),
                       test_views={"row": np.arange(len(raw.test_x))[:, None]})
    splits = split_windows(numbered, rec.data, rec.data.split.seed)
    plain = split_windows(numbered, rec.data.model_copy(update={"normalize": "none"}), rec.data.split.seed)
    rows = {k: getattr(plain, k).views["row"][:, 0].long().numpy() for k in ("train", "val", "test")}
    for k, source in (("train", raw.x), ("val", raw.x), ("test", raw.test_x)):  # the mapping, checked against x
        np.testing.assert_array_equal(getattr(plain, k).x.numpy(), source[rows[k]])
    key = json.loads(teacher_summary.read_text())["cache_key"]
    net = build_network(rec.teacher, splits.info, "teacher")
    net.load_state_dict(torch.load(Path(rec.cache_dir) / "models" / key / "weights.pt", weights_only=True))
    net.eval()
    logits = np.full((len(raw.x), splits.info.n_outputs), np.nan, dtype=np.float32)
    test = np.full((len(raw.test_x), splits.info.n_outputs), np.nan, dtype=np.float32)
    with torch.no_grad():
        for k, out in (("train", logits), ("val", logits), ("test", test)):
            out[rows[k]] = outputs_by_batch(net, getattr(splits, k), "x", torch.device("cpu")).numpy()
    assert np.isfinite(logits).all() and np.isfinite(test).all()
    return logits, test, rows["train"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("outputs")
    rng = np.random.default_rng(0)
    (x, y), (tx, ty) = _signals(rng, 96), _signals(rng, 30)
    np.savez(folder / "data.npz", x=x, y=y, test_x=tx, test_y=ty)
    np.savez(folder / "data_no_test.npz", x=x, y=y)
    recipe = _recipe(folder, folder / "data.npz", {"model": "fcn", "width": 0.25, "train": dict(FAST)})
    summary = edgedistill.run(recipe, out=folder / "by_model", progress=False)
    logits, test_logits, train_rows = _record(recipe, folder / "by_model" / "teacher" / "summary.json")
    np.savez(folder / "logits.npz", logits=logits, test_logits=test_logits)
    return SimpleNamespace(folder=folder, recipe=recipe, summary=summary, logits=logits, test_logits=test_logits,
                           train_rows=train_rows, n=len(x), n_test=len(tx))


def _epochs(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "offline" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "time_s"} for line in lines]


def _row(summary: dict, role: str) -> dict:
    return next(r for r in summary["rows"] if r["role"] == role)


def test_outputs_file_reproduces_the_kd_student_of_that_teacher_exactly(trained):
    # The split holds rows out, so a file in split order instead of x's order would not reproduce anything.
    assert not np.array_equal(trained.train_rows, np.arange(len(trained.train_rows)))
    recipe = {**trained.recipe, "teacher": {"outputs": str(trained.folder / "logits.npz")}}
    summary = edgedistill.run(recipe, out=trained.folder / "by_outputs", progress=False)
    assert _epochs(trained.folder / "by_outputs") == _epochs(trained.folder / "by_model")  # every loss, every epoch
    assert _row(summary, "method")["metrics"] == _row(trained.summary, "method")["metrics"]
    # The given teacher is evaluated (never trained) and reported like the trained one: same logits, same numbers.
    given, made = _row(summary, "teacher"), _row(trained.summary, "teacher")
    assert given["model"] == "logits.npz"
    for split in ("metrics", "val_metrics"):
        for m in ("acc", "f1", "nll", "ece"):
            assert given[split][m]["mean"] == made[split][m]["mean"]
    record = json.loads((trained.folder / "by_outputs" / "teacher" / "summary.json").read_text())
    assert record["outputs"].endswith("logits.npz") and "epochs" not in record
    assert "# sha256 teacher.outputs " in (trained.folder / "by_outputs" / "config.yaml").read_text()  # an input


def test_probabilities_give_the_soft_targets_of_the_logits(trained):
    z = trained.logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    tz = trained.test_logits.astype(np.float64)
    tp = np.exp(tz - tz.max(1, keepdims=True))
    np.savez(trained.folder / "probs.npz", probabilities=p / p.sum(1, keepdims=True),
             test_probabilities=tp / tp.sum(1, keepdims=True))
    recipe = {**trained.recipe, "teacher": {"outputs": str(trained.folder / "probs.npz")}}
    summary = edgedistill.run(recipe, out=trained.folder / "by_probs", progress=False)
    # log p = logits - a constant per row: softmax(log p / T) is the teacher's soft target at every T (float rounding).
    for a, b in zip(_epochs(trained.folder / "by_probs"), _epochs(trained.folder / "by_model")):
        for term in ("ce", "kd", "total"):
            assert a["train"][term] == pytest.approx(b["train"][term], rel=1e-5)
    assert _row(summary, "teacher")["metrics"]["acc"] == _row(trained.summary, "teacher")["metrics"]["acc"]


def test_regression_outputs_are_in_the_units_of_y(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 2, 16)).astype(np.float32)
    tx = rng.normal(size=(24, 2, 16)).astype(np.float32)
    y, ty = 50 + 10 * x[:, 0, :4].mean(1), 50 + 10 * tx[:, 0, :4].mean(1)  # far from 0 and 1: units matter
    np.savez(tmp_path / "reg.npz", x=x, y=y, test_x=tx, test_y=ty)
    guess, test_guess = y + rng.normal(0, 2, len(y)), ty + rng.normal(0, 2, len(ty))
    np.savez(tmp_path / "reg_teacher.npz", outputs=guess, test_outputs=test_guess)
    recipe = _recipe(tmp_path, tmp_path / "reg.npz", {"outputs": str(tmp_path / "reg_teacher.npz")},
                     method={"name": "offline", "terms": [{"loss": "mse", "weight": 0.5},
                                                          {"loss": "mse_to_teacher", "weight": 0.5}]},
                     train={"epochs": 1, "batch_size": 16})
    summary = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    # Reported on the official test split (test_x's rows, in order), in y's units: the file's own error.
    teacher = _row(summary, "teacher")["metrics"]
    assert teacher["rmse"]["mean"] == pytest.approx(float(np.sqrt(np.mean((test_guess - ty) ** 2))), rel=1e-5)
    assert teacher["mae"]["mean"] == pytest.approx(float(np.mean(np.abs(test_guess - ty))), rel=1e-5)


def _write(folder: Path, recipe: dict) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _cli(tmp_path: Path, recipe: dict, *extra: str):
    args = ["run", str(_write(tmp_path, recipe)), "--out", str(tmp_path / "run"), "--no-progress", *extra]
    return CliRunner().invoke(app, args)


def _bad_file(trained, tmp_path, name, **arrays):
    np.savez(tmp_path / name, **arrays)
    return {**trained.recipe, "teacher": {"outputs": str(tmp_path / name)}}


# Each case: what is wrong -> (arrays of the file or a recipe change, what the one-line message must say).
BAD = {
    "rows": (lambda t: {"logits": t.logits[:-1], "test_logits": t.test_logits},
             ["bad.npz", "array 'logits' has shape (95, 3); expected (96, 3)", "one row per sample of x"]),
    "classes": (lambda t: {"logits": np.zeros((t.n, 4)), "test_logits": np.zeros((t.n_test, 4))},
                ["array 'logits' has shape (96, 4)", "one column per class (3 in the data)"]),
    "test rows": (lambda t: {"logits": t.logits, "test_logits": t.test_logits[:5]},
                  ["array 'test_logits' has shape (5, 3); expected (30, 3)", "test_x"]),
    "nan": (lambda t: {"logits": np.where(np.arange(t.n)[:, None] == 7, np.nan, t.logits),
                       "test_logits": t.test_logits},
            ["bad.npz", "array 'logits' has 3 non-finite value(s)", "(7, 0)"]),
    "probabilities not summing to 1": (
        lambda t: {"probabilities": np.full((t.n, 3), 0.3), "test_probabilities": np.full((t.n_test, 3), 1 / 3)},
        ["array 'probabilities': each row must sum to 1", "sums to 0.9"]),
    "probabilities that are logits": (
        lambda t: {"probabilities": t.logits, "test_probabilities": t.test_logits},
        ["array 'probabilities' must hold probabilities in [0, 1]", "save them as 'logits'"]),
    "missing test_logits": (lambda t: {"logits": t.logits},
                            ["bad.npz", "array 'test_logits' is missing", "official test split (30 rows of test_x)"]),
    "unknown key": (lambda t: {"logits": t.logits, "test_logits": t.test_logits, "scores": t.logits},
                    ["bad.npz", "unknown array 'scores'"]),
    "two kinds": (lambda t: {"logits": t.logits, "probabilities": t.logits},
                  ["arrays logits, probabilities are all given"]),
    "regression outputs for classes": (lambda t: {"outputs": t.logits, "test_outputs": t.test_logits},
                                       ["array 'outputs' is for regression", "give logits or probabilities"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_outputs_file_exits_2_naming_the_file_and_array(trained, tmp_path, case):
    arrays, expected = BAD[case]
    result = _cli(tmp_path, _bad_file(trained, tmp_path, "bad.npz", **arrays(trained)))
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "teacher.outputs" in message, message
    for part in expected:
        assert part in message, message
    assert not (tmp_path / "run").exists()


def _with(trained, **changes):
    return {**trained.recipe, "teacher": {"outputs": str(trained.folder / "logits.npz")}, **changes}


# What a recorded teacher cannot do, refused with the key to change.
REFUSED = {
    "feature loss": (dict(method={"name": "offline", "terms": [
        {"loss": "ce", "weight": 0.5}, {"loss": "at", "weight": 100, "student_tap": "feat", "teacher_tap": "feat"}]}),
        ["teacher_tap", "teacher.outputs", "logits.npz' gives only its outputs", "use a loss on outputs"]),
    "augmented teacher input": (dict(augment={"student": ["jitter"]}),
                                ["augment.teacher_sees: 'same'", "clean inputs", "set augment.teacher_sees: clean"]),
    "mixed batch": (dict(augment={"mix": "mixup"}), ["augment.mix", "unmixed inputs", "remove augment.mix"]),
    "windows cut here": (dict(data={"path": "DATA", "window": {"length": 8}}),
                         ["teacher.outputs", "data.window cuts the samples into windows"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_recorded_outputs_cannot_do_is_refused(trained, tmp_path, case):
    changes, expected = REFUSED[case]
    recipe = _with(trained, **json.loads(json.dumps(changes).replace("DATA", trained.recipe["data"]["path"])))
    result = _cli(tmp_path, recipe)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    for part in expected:
        assert part in message, message
    assert not (tmp_path / "run").exists()


def test_clean_teacher_input_with_augmentation_is_accepted(trained):
    p = plan(load_recipe(_with(trained, augment={"student": ["jitter"], "teacher_sees": "clean"})))
    assert p.augmenter is not None and not p.augmenter.teacher_input_changes


def test_other_recipe_mistakes_name_the_key(trained, tmp_path):
    no_test = {**trained.recipe, "data": {"path": str(trained.folder / "data_no_test.npz")},
               "teacher": {"outputs": str(trained.folder / "logits.npz")}}
    result = _cli(tmp_path, no_test)
    assert result.exit_code == 2 and "array 'test_logits' is given but the data has no official test split" in \
        " ".join(result.output.split())
    result = _cli(tmp_path, _with(trained, teacher={"outputs": str(trained.folder / "logits.npz"), "view": "full"}))
    assert result.exit_code == 2 and "teacher: view: a teacher given by its outputs reads its recorded outputs" in \
        " ".join(result.output.split())
    result = _cli(tmp_path, _with(trained, teacher={"outputs": str(tmp_path / "nowhere.npz")}))
    assert result.exit_code == 2 and "nowhere.npz' does not exist" in " ".join(result.output.split())
    (tmp_path / "text.npz").write_text("logits\n1,2,3\n")
    result = _cli(tmp_path, _with(trained, teacher={"outputs": str(tmp_path / "text.npz")}))
    assert result.exit_code == 2 and "text.npz': not an .npz archive" in " ".join(result.output.split())


def test_example_script_and_recipe_run(tmp_path):
    shutil.copy(EXAMPLES / "outputs.yaml", tmp_path / "outputs.yaml")
    runpy.run_path(str(EXAMPLES / "outputs_teacher.py"))["main"](tmp_path)  # what `python outputs_teacher.py DIR` does
    result = CliRunner().invoke(app, ["run", str(tmp_path / "outputs.yaml"), "train.epochs=1", "seeds=[0]",
                                      "baseline=false", "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert _row(summary, "teacher")["model"] == "outputs_teacher.npz"
    assert _row(summary, "teacher")["metrics"]["acc"]["mean"] > 0.9  # the example's teacher is a real one


def test_teachers_list_entry_and_an_assistant_distilled_from_recorded_outputs(trained, tmp_path):
    entry = {"name": "big", "outputs": str(trained.folder / "logits.npz")}
    bad = {**trained.recipe, "teacher": None, "teachers": [{"name": "own", "model": "cnn1d", "width": 4, "depth": 2},
                                                           {**entry, "outputs": str(tmp_path / "short.npz")}]}
    np.savez(tmp_path / "short.npz", logits=trained.logits[:10], test_logits=trained.test_logits)
    result = _cli(tmp_path, {k: v for k, v in bad.items() if v is not None})
    assert result.exit_code == 2 and "teachers[1].outputs" in result.output and "short.npz" in result.output
    chain = {k: v for k, v in trained.recipe.items() if k != "teacher"}
    chain["teachers"] = [entry, {"name": "ta", "model": "cnn1d", "width": 4, "depth": 2, "distill_from": "big",
                                 "terms": KD, "train": {"epochs": 1, "batch_size": 16}}]
    chain["train"] = {"epochs": 1, "batch_size": 16}
    summary = edgedistill.run(chain, out=tmp_path / "chain", progress=False)
    assert [(r["model"], r["role"]) for r in summary["rows"][:2]] == [("big: logits.npz", "teacher"),
                                                                       ("ta: cnn1d", "assistant (from big)")]
    ta = json.loads((tmp_path / "chain" / "ta" / "summary.json").read_text())
    assert ta["method"]["terms"][1]["loss"] == "kd"  # the assistant learnt from the recorded outputs


def test_documented_pytorch_export(trained, tmp_path):
    """docs/models.md's PyTorch export, verbatim but for the model: any module on the user's own x."""
    data = np.load(trained.recipe["data"]["path"])
    x, test_x = data["x"], data["test_x"]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    # -- as documented
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float32)).numpy()
        test_logits = model(torch.as_tensor(test_x, dtype=torch.float32)).numpy()
    np.savez(tmp_path / "teacher_outputs.npz", logits=logits, test_logits=test_logits)
    # --
    p = plan(load_recipe(_with(trained, teacher={"outputs": str(tmp_path / "teacher_outputs.npz")})))
    assert p.teachers[0][0].view == "outputs.teacher"
    # The official test split is test_x in its order; the recorded outputs are kept as given (not normalised).
    assert torch.equal(p.splits.test.views["outputs.teacher"], torch.from_numpy(test_logits))
    assert "outputs.teacher" not in p.splits.info.normalization


def test_smoke_checks_the_file_against_the_real_data_then_stands_in_random_outputs(trained, tmp_path):
    recipe = _with(trained)
    recipe.pop("cache_dir")  # a smoke run caches inside its run directory
    result = _cli(tmp_path, recipe, "--smoke")
    assert result.exit_code == 0, result.output
    notes = json.loads((tmp_path / "run" / "summary.json").read_text())["data"]["notes"]
    assert any("teacher.outputs was checked against the real data; random outputs" in n for n in notes)
    short = tmp_path / "short"
    short.mkdir()
    bad = _bad_file(trained, short, "short.npz", logits=trained.logits[:-1], test_logits=trained.test_logits)
    result = CliRunner().invoke(app, ["run", str(_write(short, bad)), "--smoke", "--out", str(short / "run"),
                                      "--no-progress"])
    assert result.exit_code == 2 and "short.npz': array 'logits' has shape (95, 3)" in " ".join(result.output.split())
    assert not (short / "run").exists()


def test_a_one_column_binary_model_is_told_how_to_save_both_classes(tmp_path):
    from edgedistill.data.raw import RawData
    from edgedistill.errors import UserInputError
    from edgedistill.experiment.teacher_outputs import read_outputs

    raw = RawData(x=np.zeros((6, 1, 4)), y=np.array([0, 1, 0, 1, 1, 0]), task="classification")
    np.savez(tmp_path / "sigmoid.npz", probabilities=np.full((6, 1), 0.7))
    with pytest.raises(UserInputError, match=r"shape \(6, 1\); expected \(6, 2\).*np.column_stack\(\[1 - p, p\]\)"):
        read_outputs(tmp_path / "sigmoid.npz", "teacher", raw)
    p = np.full(6, 0.7)
    np.savez(tmp_path / "sigmoid.npz", probabilities=np.column_stack([1 - p, p]))
    train, test = read_outputs(tmp_path / "sigmoid.npz", "teacher", raw)
    assert test is None and np.allclose(np.exp(train), [[0.3, 0.7]] * 6)


@pytest.mark.parametrize("name", ["dfad", "cudfkd", "single_source"])
def test_methods_that_make_their_own_teacher_inputs_are_refused(trained, name):
    from edgedistill.errors import UserInputError

    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml").read_text())
    recipe.update(data=trained.recipe["data"], teacher={"outputs": str(trained.folder / "logits.npz")}, seeds=[0])
    with pytest.raises(UserInputError, match=r"^teacher: method '\w+' runs the teacher on .*outputs on the data's rows"):
        plan(load_recipe(recipe))
