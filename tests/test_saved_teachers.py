"""teacher: {load: PATH}: TorchScript, torch.export (.pt2) and ONNX teachers made here from a zoo model give its
logits (to 1e-5) and its accuracy in the run summary; a Lightning-style checkpoint loads with its prefix stripped;
pickles, feature losses on a program teacher and files of the wrong shape are refused (exit 2, naming the key or
file, nothing written); the example recipes run."""
import json
import re
import runpy
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgedistill.errors import UserInputError
from typer.testing import CliRunner

import edgedistill
from edgedistill.cli import app
from edgedistill.config import TeacherConfig, load_recipe
from edgedistill.engine.evaluate import evaluate, predict
from edgedistill.errors import UserInputError
from edgedistill.experiment.saved_teacher import load_teacher, smoke_teacher
from edgedistill.methods.teachers import freeze
from edgedistill.models import FeatureTaps, build_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "user_models"
ZOO = {"model": "fcn", "width": 0.25}


def _export_onnx(model, example, path, dynamic=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}} if dynamic else None)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The example's files (examples/user_models/saved_teacher_make.py: a data file, the user's teacher trained on it
    and saved as ONNX, .pt2, TorchScript and a Lightning-style checkpoint), an ONNX with a fixed batch of 1, the
    trained teacher itself, and the data as the example recipe prepares it."""
    from edgedistill.experiment.runner import plan

    folder = tmp_path_factory.mktemp("saved")
    for path in EXAMPLES.glob("saved_teacher*"):
        shutil.copy(path, folder / path.name)
    script = runpy.run_path(str(folder / "saved_teacher_make.py"), run_name="not_main")
    script["make_data"](folder / "saved_teacher_data.npz")
    model = script["train_teacher"](folder / "saved_teacher_data.npz")
    script["save_all"](model, folder)
    _export_onnx(model, torch.zeros(1, 3, 32), folder / "t1.onnx", dynamic=False)
    splits = plan(load_recipe(folder / "saved_teacher.yaml")).splits
    return folder, model, splits


def _recipe(made, where: Path, teacher: dict, **changes) -> Path:
    """The example recipe (its data file, one short epoch) with ``teacher`` and ``changes``, written in ``where``."""
    folder = made[0]
    data = yaml.safe_load((folder / "saved_teacher.yaml").read_text())
    data["data"]["path"] = str(folder / "saved_teacher_data.npz")
    path = where / f"recipe{len(list(where.glob('recipe*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({**data, "teacher": teacher, "train": {"epochs": 1, "batch_size": 32}, **changes}))
    return path


def _cli(recipe: Path, out: Path):
    return CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--no-progress"])


@pytest.mark.parametrize("name", ["saved_teacher.ts.pt", "saved_teacher.pt2", "saved_teacher.onnx", "t1.onnx"])
def test_program_teacher_gives_the_original_logits(made, name):
    folder, model, splits = made
    net = load_teacher(TeacherConfig(load=folder / name), splits.info, "teacher", "x")
    assert isinstance(getattr(net, "edgedistill_outputs_only", None), str)
    want = predict(model, splits.test, torch.device("cpu"))
    got = predict(net, splits.test, torch.device("cpu"))
    assert got.dtype == torch.float32 and got.shape == want.shape == (len(splits.test), splits.info.n_outputs)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


def test_loaded_teachers_report_the_original_accuracy(made, tmp_path):
    """The example recipes (ONNX teacher; its class + the Lightning-style checkpoint), and the .pt2 and TorchScript
    files in place of the ONNX one: each reports the accuracy of the teacher the script trained."""
    folder, model, splits = made
    want = evaluate(model, splits.test, splits.info, torch.device("cpu"))["acc"]
    assert 1 / splits.info.n_outputs < want < 1.0  # better than chance, not perfect: a wrong teacher would differ
    fast = {"train.epochs": 1}
    runs = [("saved_teacher.onnx", "saved_teacher.yaml", {}), ("saved_teacher.pt2", "saved_teacher.yaml", {}),
            ("saved_teacher.ts.pt", "saved_teacher.yaml", {}), ("saved_teacher.ckpt", "saved_teacher_ckpt.yaml", {})]
    for name, recipe, _ in runs:
        out = tmp_path / name.replace(".", "_")
        overrides = {**fast, "teacher.load": str(folder / name)}
        summary = edgedistill.run(folder / recipe, out=out, progress=False, **overrides)
        row = summary["rows"][0]
        label = "SensorTeacher" if name.endswith(".ckpt") else name
        assert row["role"] == "teacher" and row["model"] == label
        assert row["metrics"]["acc"]["mean"] == pytest.approx(want, abs=1e-9), name
        record = json.loads((out / "teacher" / "summary.json").read_text())
        assert record["load"] == str(folder / name) and record["test"]["best"]["acc"] == pytest.approx(want, abs=1e-9)
        assert f"| {label} | teacher |" in (out / "report.md").read_text()


def test_lightning_checkpoint_loads_with_its_prefix_stripped(made, tmp_path):
    _, _, splits = made
    zoo = build_model("fcn", 3, 4, (32,), width=0.25)
    state = zoo.state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3, "global_step": 12,
                "pytorch-lightning_version": "2.4.0", "optimizer_states": [{"state": {}}]}, tmp_path / "l.ckpt")
    net = load_teacher(TeacherConfig(load=tmp_path / "l.ckpt", **ZOO), splits.info, "teacher", "x")
    assert "(key 'state_dict') (prefix 'model.' stripped)" in net.edgedistill_loaded
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    # this toolkit's own run checkpoints (networks.student), model_state_dict, DataParallel's module., plain state_dicts
    torch.save({"networks": {"student": state}, "epoch": 1}, tmp_path / "run.pt")
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "dp.pt")
    torch.save(state, tmp_path / "plain.pt")
    for name in ("run.pt", "dp.pt", "plain.pt"):
        net = load_teacher(TeacherConfig(load=tmp_path / name, **ZOO), splits.info, "teacher", "x")
        assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items()), name
    torch.save({"state_dict": {f"net.{k}": v for k, v in list(state.items())[1:]}}, tmp_path / "part.ckpt")
    with pytest.raises(UserInputError, match=r"teacher.load '.*part.ckpt' \(key 'state_dict'\): weights do not fit"):
        load_teacher(TeacherConfig(load=tmp_path / "part.ckpt", **ZOO), splits.info, "teacher", "x")
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(UserInputError, match="holds 'epoch', 'weights', not a state_dict"):
        load_teacher(TeacherConfig(load=tmp_path / "odd.pt", **ZOO), splits.info, "teacher", "x")


def test_a_pickled_model_is_refused_naming_the_file(made, tmp_path):
    zoo = build_model("fcn", 3, 4, (32,), width=0.25)
    torch.save(zoo, tmp_path / "whole.pt")
    torch.save(zoo, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name, why in (("whole.pt", "pickled Python objects"), ("legacy.pt", "legacy (non-zip) pickle")):
        result = _cli(_recipe(made, tmp_path, {"load": str(tmp_path / name), **ZOO}), tmp_path / "never")
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert f"teacher.load: checkpoint '{tmp_path / name}'" in text and why in text, text
        assert "model.state_dict()" in text and "torch.jit.save" in text, text
    assert not (tmp_path / "never").exists()


def test_a_feature_loss_on_a_program_teacher_is_refused_naming_the_term(made, tmp_path):
    folder, _, splits = made
    terms = [{"loss": "ce"}, {"loss": "fitnet", "weight": 100, "student_tap": "feat", "teacher_tap": "blocks.2"}]
    for name, what in (("saved_teacher.onnx", "ONNX"), ("saved_teacher.pt2", "torch.export (.pt2)")):
        recipe = _recipe(made, tmp_path, {"load": str(folder / name)}, method={"name": "offline", "terms": terms})
        result = _cli(recipe, tmp_path / "never")
        text = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert f"method.terms[1].teacher_tap: loaded from {what} file '{name}' gives only its outputs" in text, text
        assert "reads its features at 'blocks.2'" in text and "kd, dkd, dist" in text, text
    assert not (tmp_path / "never").exists()
    net = load_teacher(TeacherConfig(load=folder / "saved_teacher.ts.pt"), splits.info, "teacher", "x")
    with pytest.raises(UserInputError, match="TorchScript file 'saved_teacher.ts.pt' gives only its outputs"):
        FeatureTaps(net, {"f": "program.blocks.0"})  # even a path that exists inside the program


def test_wrong_shapes_and_wrong_keys_are_refused(made, tmp_path):
    folder, model, _ = made
    seven = build_model("fcn", 3, 7, (32,), width=0.25).eval()
    _export_onnx(seven, torch.zeros(2, 3, 32), tmp_path / "seven.onnx")
    _export_onnx(model, torch.zeros(2, 3, 16), tmp_path / "short.onnx")
    _export_onnx(model, torch.zeros(4, 3, 32), tmp_path / "four.onnx", dynamic=False)
    torch.jit.save(torch.jit.trace(seven, torch.zeros(2, 3, 32)), str(tmp_path / "seven.ts.pt"))
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07not a model")
    (tmp_path / "notes.txt").write_text("hello")
    np.savez(tmp_path / "outs.npz", logits=np.zeros((3, 4)))
    cases = [
        ({"load": str(tmp_path / "seven.onnx")},
         r"teacher.load '.*seven.onnx': gives outputs of shape \(2, 7\) .*\(batch, 4\)"),
        ({"load": str(tmp_path / "seven.ts.pt")}, r"seven.ts.pt': gives outputs of shape \(2, 7\)"),
        ({"load": str(tmp_path / "short.onnx")},
         r"teacher.load: ONNX model '.*short.onnx' takes inputs of shape \(.*16\)"),
        ({"load": str(tmp_path / "four.onnx")}, r"four.onnx' has a fixed batch of 4"),
        ({"load": str(folder / "saved_teacher.onnx"), **ZOO},
         r"teacher.model: '.*saved_teacher.onnx' is an ONNX program"),
        ({"load": str(folder / "saved_teacher.ckpt")}, r"teacher.model: '.*saved_teacher.ckpt' holds weights"),
        ({"load": str(tmp_path / "junk.onnx")}, r"teacher.load: '.*junk.onnx' is not a readable ONNX model"),
        ({"load": str(tmp_path / "notes.txt")}, r"teacher.load: '.*notes.txt' is none of the formats"),
        ({"load": str(tmp_path / "outs.npz")}, r"outs.npz' is a zip archive but not .* goes in outputs:"),
        ({"load": str(tmp_path / "missing.pt")}, r"teacher.load '.*missing.pt' does not exist"),
    ]
    for teacher, pattern in cases:
        result = _cli(_recipe(made, tmp_path, teacher), tmp_path / "never")
        text = " ".join(result.output.split())
        assert result.exit_code == 2 and re.search(pattern, text), (pattern, text)
    assert not (tmp_path / "never").exists()


def test_program_modes_and_freezing_work(made):
    folder, _, splits = made
    for name in ("saved_teacher.pt2", "saved_teacher.onnx", "saved_teacher.ts.pt"):
        net = load_teacher(TeacherConfig(load=folder / name), splits.info, "teacher", "x")
        net.train()
        net.eval()  # an exported program refuses eval()/train() itself; the wrapper keeps the toolkit's calls working
        assert not net.training
        freeze(net)
    onnx_net = load_teacher(TeacherConfig(load=folder / "saved_teacher.onnx"), splits.info, "teacher", "x")
    with pytest.raises(UserInputError, match="passes no gradients"):
        onnx_net(torch.zeros(1, 3, 32, requires_grad=True))


def test_smoke_checks_the_file_at_the_real_shape_and_stands_in(made, tmp_path):
    folder, _, _ = made
    student = {"model": "cnn1d", "width": 4, "checkpoint": None}
    entry = {"load": str(folder / "saved_teacher.onnx"), "view": "x"}
    stand_in = smoke_teacher(entry, "teacher", (3, 32), 4, student)
    assert stand_in["load"] is None and stand_in["model"] == "cnn1d" and stand_in["width"] == 4
    with pytest.raises(UserInputError, match="teacher.load: ONNX model .* takes inputs of shape"):
        smoke_teacher(entry, "teacher", (3, 48), 4, student)
    with pytest.raises(UserInputError, match=r"\(batch, 3\)"):
        smoke_teacher({"load": str(folder / "saved_teacher.pt2")}, "teachers[0]", (3, 32), 3, student)
    torch.save(build_model("fcn", 3, 4, (32,), width=0.25).state_dict(), tmp_path / "w.pt")
    weights = smoke_teacher({"load": str(tmp_path / "w.pt"), **ZOO}, "teacher", (3, 32), 4, student)
    assert weights["load"] is None and weights["model"] == "fcn"
    with pytest.raises(UserInputError, match="weights do not fit"):
        smoke_teacher({"load": str(tmp_path / "w.pt"), **ZOO}, "teacher", (3, 32), 6, student)


def test_loaded_teachers_in_a_teachers_list(made, tmp_path):
    """multi_teacher with an ONNX and a .pt2 teacher; a bad file names its entry."""
    folder, model, splits = made
    want = evaluate(model, splits.test, splits.info, torch.device("cpu"))["acc"]
    teachers = [{"name": "onnx", "load": str(folder / "saved_teacher.onnx")},
                {"name": "pt2", "load": str(folder / "saved_teacher.pt2")}]
    recipe = _recipe(made, tmp_path, {"load": "unused"}, teachers=teachers,
                     method={"name": "multi_teacher", "terms": [{"loss": "ce"}, {"loss": "kd", "temperature": 4}]})
    data = yaml.safe_load(recipe.read_text())
    del data["teacher"]
    recipe.write_text(yaml.safe_dump(data))
    summary = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    rows = {r["model"]: r for r in summary["rows"] if r["role"] == "teacher"}
    assert set(rows) == {"onnx: saved_teacher.onnx", "pt2: saved_teacher.pt2"}
    assert all(r["metrics"]["acc"]["mean"] == pytest.approx(want, abs=1e-9) for r in rows.values())
    data["teachers"][0]["load"] = str(folder / "saved_teacher_data.npz")
    recipe.write_text(yaml.safe_dump(data))
    result = _cli(recipe, tmp_path / "never")
    assert result.exit_code == 2 and "teachers[0].load:" in " ".join(result.output.split()), result.output


def test_smoke_runs_the_examples_and_checks_the_file_at_the_real_shape(made, tmp_path):
    folder, model, _ = made
    for recipe in ("saved_teacher.yaml", "saved_teacher_ckpt.yaml"):
        result = CliRunner().invoke(app, ["run", str(folder / recipe), "--smoke", "--out", str(tmp_path / recipe),
                                          "--no-progress"])
        assert result.exit_code == 0, result.output
    _export_onnx(model, torch.zeros(2, 3, 16), tmp_path / "short.onnx")
    result = CliRunner().invoke(app, ["run", str(folder / "saved_teacher.yaml"), f"teacher.load={tmp_path / 'short.onnx'}",
                                      "--smoke", "--out", str(tmp_path / "never"), "--no-progress"])
    assert result.exit_code == 2 and "short.onnx' takes inputs of shape" in " ".join(result.output.split()), result.output
    assert not (tmp_path / "never").exists()


def test_dfad_refuses_an_onnx_teacher_before_the_run(tmp_path):
    """onnxruntime passes no gradients to the generator's samples: refused when the regime is built, not at step 1."""
    from edgedistill.data.dataset import DataInfo
    from edgedistill.methods.data_free import DFAD
    from edgedistill.models import build_model

    info = DataInfo("t", "classification", (3, 16), 3, views={"x": (3, 16)})
    teacher = build_model("cnn1d", 3, 3, (16,))
    teacher.edgedistill_outputs_only = "loaded from ONNX file 't.onnx'"
    teacher.edgedistill_no_input_gradients = True
    with pytest.raises(UserInputError, match="teacher: method 'dfad' runs the teacher on the generator's samples and "
                                             "back-propagates .* loaded from ONNX file 't.onnx' passes no gradients"):
        DFAD(build_model("cnn1d", 3, 3, (16,)), info, teacher)


def test_start_checkpoints_read_weights_as_a_saved_teacher_does(tmp_path):
    """student.checkpoint (and teacher.checkpoint) take the same files as teacher.load's weights: a Lightning-style
    checkpoint with its prefix, read weights-only."""
    from edgedistill.config import ModelConfig
    from edgedistill.data.dataset import DataInfo
    from edgedistill.experiment.build import build_network
    from edgedistill.models import build_model

    info = DataInfo("t", "classification", (3, 16), 3, views={"x": (3, 16)})
    source = build_model("cnn1d", 3, 3, (16,), width=4)
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}, "epoch": 2}, tmp_path / "s.ckpt")
    cfg = ModelConfig.model_validate({"model": "cnn1d", "width": 4, "checkpoint": str(tmp_path / "s.ckpt")})
    net = build_network(cfg, info, "student", seed=5)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), source.state_dict().values()))
    torch.save({"state_dict": {"model.nope": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(UserInputError, match=r"^student.checkpoint '.*bad.ckpt' \(key 'state_dict'\): weights do not fit"):
        build_network(cfg.model_copy(update={"checkpoint": tmp_path / "bad.ckpt"}), info, "student")
