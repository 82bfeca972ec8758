"""The Python API with objects: edgedistill.distill / fit_teacher / DistilledClassifier and models.objects."""
import json
import runpy
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import edgedistill
from edgedistill.errors import UserInputError
from edgedistill.models import build_model
from edgedistill.models.objects import bound_objects, object_identity, object_ref

ROOT = Path(__file__).resolve().parents[1]
FAST = {"progress": False, "train__epochs": 2, "train__lr": 0.01}


class TinyConv(nn.Module):
    def __init__(self, channels: int = 3, classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, width, 5, padding=2)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(-1))


def arrays(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 1.0, (n, 3, 32)).astype(np.float32)
    x[np.arange(n), y] += 2.0
    return x, y


def nets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return TinyConv(width=16), TinyConv(width=4)


def cached(run_dir: Path, stage: str) -> bool:
    return json.loads((Path(run_dir) / stage / "summary.json").read_text())["cached"]


# -- models.objects --------------------------------------------------------------------------------------------
def test_object_ref_follows_class_and_weights_only():
    a, _ = nets()
    ref = object_ref(a)
    assert ref.startswith("object:") and object_identity(ref) == ref[len("object:"):]
    b = TinyConv(width=16)
    b.load_state_dict(a.state_dict())
    assert object_ref(b) == ref  # another instance, same class and weights
    with torch.no_grad():
        b.conv.weight[0, 0, 0] += 1e-6
    assert object_ref(b) != ref  # one weight changed
    seq = nn.Sequential(nn.Conv1d(3, 16, 5, padding=2))
    assert object_ref(seq) != ref
    with pytest.raises(UserInputError, match="student: expected a torch.nn.Module"):
        object_ref("fcn", "student")


def test_object_ref_follows_the_class_source(tmp_path, monkeypatch):
    source = tmp_path / "apinets_src.py"
    source.write_text("from torch import nn\nclass Net(nn.Linear):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__("apinets_src")
    torch.manual_seed(0)
    net = module.Net(3, 2)
    ref = object_ref(net)
    source.write_text(source.read_text() + "# edited\n")  # same weights, edited class file
    assert object_ref(net) != ref


def test_bound_objects_are_scoped_to_the_call():
    net, _ = nets()
    ref = object_ref(net)
    with pytest.raises(UserInputError, match=r"student.model 'object:.*' was a Python object passed to "
                                             r"edgedistill.distill\(\).*import path"):
        build_model(ref, 3, 3, (32,), key="student")
    seen = []
    with bound_objects({ref: net}):
        built = build_model(ref, 3, 3, (32,), key="student")
        assert built is not net and torch.equal(built.conv.weight, net.conv.weight)  # a copy, same weights
        with pytest.raises(UserInputError, match="student.width: a model passed as a Python object takes no"):
            build_model(ref, 3, 3, (32,), key="student", width=4)
        with pytest.raises(UserInputError, match=r"student: the module \(TinyConv\) outputs \(3,\) per sample; "
                                                 r"the data needs \(5,\)"):
            build_model(ref, 3, 5, (32,), key="student")
        with pytest.raises(UserInputError, match="cannot run on inputs of shape"):
            build_model(ref, 4, 3, (32,), key="student")
        worker = threading.Thread(target=lambda: seen.append(_builds(ref)))  # a new thread has its own context
        worker.start(), worker.join()
    assert seen == [False]
    assert not _builds(ref)  # nothing outlives the block


def _builds(ref: str) -> bool:
    try:
        build_model(ref, 3, 3, (32,))
    except UserInputError:
        return False
    return True


# -- distill ---------------------------------------------------------------------------------------------------
def test_distill_objects_returns_the_checkpointed_student_and_reuses_the_cache(tmp_path):
    x, y = arrays()
    teacher, student = nets()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = edgedistill.distill(teacher, student, (x, y), out=tmp_path / "a", **FAST)
    assert isinstance(result, edgedistill.Distilled) and result.run_dir == tmp_path / "a"
    assert not result.student.training
    # The returned student is the best-on-validation checkpoint of seed 0, not the caller's object (unchanged).
    state = torch.load(tmp_path / "a" / "offline" / "seed0" / "checkpoints" / "best.pt", weights_only=True)
    fresh = TinyConv(width=4)
    fresh.load_state_dict(state["networks"]["student"])
    probe = torch.from_numpy(x[:8])
    assert torch.equal(result.student(probe), fresh.eval()(probe))
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())  # it did train
    config = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert config["student"]["model"] == object_ref(student)
    assert config["teacher"]["model"] == object_ref(teacher) and config["teacher"]["checkpoint"]
    assert config["method"]["terms"][1] == {"loss": "kd", "weight": 0.9, "temperature": 4}
    assert (tmp_path / "a" / "report.md").is_file() and [r["role"] for r in result.summary["rows"]] == [
        "teacher", "student alone", "method"]
    assert not cached(tmp_path / "a", "student_alone/seed0")

    again = edgedistill.distill(teacher, student, (x.copy(), y.copy()), out=tmp_path / "b", **FAST)
    assert cached(tmp_path / "b", "student_alone/seed0")  # same objects, same arrays: reused
    assert again.summary["rows"][1]["metrics"] == result.summary["rows"][1]["metrics"]
    assert again.summary["rows"][0]["metrics"] == result.summary["rows"][0]["metrics"]

    with torch.no_grad():
        student.head.bias[0] += 0.5  # one weight changed: never the stale entry
    edgedistill.distill(teacher, student, (x, y), out=tmp_path / "c", **FAST)
    assert not cached(tmp_path / "c", "student_alone/seed0")
    x2 = x.copy()
    x2[0, 0, 0] += 1.0  # one value of the data changed
    edgedistill.distill(teacher, student, (x2, y), out=tmp_path / "d", **FAST)
    assert not cached(tmp_path / "d", "student_alone/seed0")


def test_fit_teacher_then_distill(tmp_path):
    x, y = arrays()
    teacher, student = nets()
    fitted = edgedistill.fit_teacher(teacher, (x, y), out=tmp_path / "t1", progress=False, train__epochs=2)
    assert fitted.summary["teacher"]["cached"] is False and (tmp_path / "t1" / "report.md").is_file()
    assert not torch.equal(fitted.teacher.conv.weight, teacher.conv.weight)  # trained, the object untouched
    assert [r["role"] for r in fitted.summary["rows"]] == ["teacher"]
    second = edgedistill.fit_teacher(teacher, (x, y), out=tmp_path / "t2", progress=False, train__epochs=2)
    assert second.summary["teacher"]["cached"] is True  # the teacher cache key: reused
    assert torch.equal(second.teacher.conv.weight, fitted.teacher.conv.weight)
    third = edgedistill.fit_teacher(teacher, (x, y), out=tmp_path / "t3", progress=False, train__epochs=3)
    assert third.summary["teacher"]["cached"] is False  # another training budget: another entry

    result = edgedistill.distill(fitted, student, (x, y), out=tmp_path / "kd", **FAST)
    row = result.summary["rows"][0]
    assert row["role"] == "teacher"
    for metric in ("acc", "f1", "nll"):  # used as given: evaluated on the same test split, same numbers
        assert row["metrics"][metric] == pytest.approx(fitted.summary["rows"][0]["metrics"][metric], abs=1e-6)


def test_unbound_refs_are_refused_outside_the_call_and_export_from_python(tmp_path):
    pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")
    x, y = arrays()
    teacher, student = nets()
    result = edgedistill.distill(teacher, student, (x, y), out=tmp_path / "run", **FAST)
    with pytest.raises(UserInputError, match=r"teacher.model 'object:TinyConv\.[0-9a-f]+' was a Python object passed"):
        edgedistill.run(tmp_path / "run" / "config.yaml", out=tmp_path / "again", progress=False)
    assert not (tmp_path / "again").exists()
    from edgedistill.deploy.export import export

    with pytest.raises(UserInputError, match=r"was a Python object passed to edgedistill.distill\(\).*Distilled.export"):
        export(tmp_path / "run")
    exported = result.export(tmp_path / "student.onnx", exporter="legacy")
    assert exported.files["fp32"].is_file()
    with pytest.raises(UserInputError, match="student: expected a torch.nn.Module"):
        edgedistill.api.export_run(tmp_path / "run", "TinyConv")


@pytest.mark.parametrize("kwargs, match", [
    ({"data": (np.zeros((60, 32), np.float32), np.arange(60) % 3)}, r"data: x must be numbers of shape \(n, channels"),
    ({"data": (np.zeros((60, 3, 32), np.float32), np.arange(59) % 3)}, "data: y has 59 rows but x has 60"),
    ({"data": (np.zeros((60, 3, 32)),)}, r"data: expected \(x, y\) or \(x, y, group\)"),
    ({"data": {"x": np.zeros((60, 3, 32))}}, "data: the arrays need 'y'"),
    ({"data": 3.5}, "data: expected"),
    ({"data": "missing.npz"}, "data: the file 'missing.npz' does not exist"),
    ({"method": "kdd"}, "method: unknown method 'kdd'"),
    ({"method": 7}, "method: expected 'kd'"),
    ({"teacher": 42}, "teacher: expected a trained torch.nn.Module"),
    ({"teacher": "teacher.onnx"}, "teacher: the file 'teacher.onnx' does not exist"),
    ({"student": [1, 2]}, "student: expected a torch.nn.Module"),
    ({"student": TinyConv(classes=4)}, r"student: the module \(TinyConv\) outputs \(4,\) per sample; the data needs \(3,\)"),
])
def test_bad_arguments_name_the_argument_and_write_nothing(tmp_path, kwargs, match):
    teacher, student = nets()
    args = {"teacher": teacher, "student": student, "data": arrays(), **kwargs}
    with pytest.raises(UserInputError, match=match):
        edgedistill.distill(**args, out=tmp_path / "run", **FAST)
    assert not (tmp_path / "run").exists()


def test_arguments_become_content_addressed_recipe_sections(tmp_path):
    from edgedistill.api import _data_section, _method_section, _teacher_section

    x, y = arrays()
    group = np.arange(60) % 5
    by_tuple = _data_section((x, y, group), tmp_path)
    assert _data_section({"x": torch.from_numpy(x), "y": y, "group": group}, tmp_path) == by_tuple  # same content
    assert Path(by_tuple["path"]).parent == tmp_path / "arrays"
    assert _data_section((x, y), tmp_path) != by_tuple
    assert _data_section("basicmotions", tmp_path) == {"name": "basicmotions"}
    assert _data_section({"name": "basicmotions", "split": {"val": 0.25}}, tmp_path)["split"] == {"val": 0.25}
    recipe = yaml.safe_load((ROOT / "recipes" / "dkd.yaml").read_text())
    assert _method_section(ROOT / "recipes" / "dkd.yaml") == recipe["method"]
    assert _method_section("supervised") == {"name": "supervised"}
    assert _method_section("kd") == yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())["method"]
    (tmp_path / "t.onnx").write_bytes(b"x")
    (tmp_path / "t.npz").write_bytes(b"x")
    assert _teacher_section(str(tmp_path / "t.onnx"), tmp_path, {}) == {"load": str(tmp_path / "t.onnx")}
    assert _teacher_section(tmp_path / "t.npz", tmp_path, {}) == {"outputs": str(tmp_path / "t.npz")}
    assert _teacher_section("fcn", tmp_path, {})["model"] == "fcn"
    assert _teacher_section("pkg.nets:Big", tmp_path, {})["model"] == "pkg.nets:Big"
    teacher, _ = nets()
    objects: dict = {}
    section = _teacher_section(teacher, tmp_path, objects)
    assert objects == {section["model"]: teacher}
    assert Path(section["checkpoint"]) == tmp_path / "objects" / f"{object_identity(section['model'])}.pt"


def test_a_zoo_teacher_is_trained_once_and_cached(tmp_path):
    x, y = arrays()
    _, student = nets()
    options = {**FAST, "teacher__train__epochs": 1, "teacher__width": 8, "baseline": False}
    edgedistill.distill("cnn1d", student, (x, y), out=tmp_path / "a", **options)
    assert not cached(tmp_path / "a", "teacher")
    edgedistill.distill("cnn1d", student, (x, y), out=tmp_path / "b", **options)
    assert cached(tmp_path / "b", "teacher")


def test_fit_teacher_refuses_a_given_teacher(tmp_path):
    with pytest.raises(UserInputError, match="model: fit_teacher trains a model"):
        edgedistill.fit_teacher({"model": "fcn", "checkpoint": "w.pt"}, arrays(), out=tmp_path / "t", progress=False)


def test_distilled_classifier_predicts_the_given_labels_with_the_runs_normalisation(tmp_path):
    x, y = arrays(seed=1)
    labels = np.array(["walk", "run", "sit"])[y]
    teacher, student = nets()
    clf = edgedistill.DistilledClassifier(teacher, student, out=tmp_path / "clf", method="supervised",
                                          train__epochs=2, train__lr=0.01).fit(x * 10 + 5, labels)
    assert list(clf.classes_) == ["run", "sit", "walk"]
    norm = clf.result_.metadata.normalization
    assert norm["mode"] == "per_channel" and np.allclose(norm["mean"], (x * 10 + 5).mean(axis=(0, 2)), atol=3)
    proba = clf.predict_proba(x[:10] * 10 + 5)
    assert proba.shape == (10, 3) and np.allclose(proba.sum(axis=1), 1)
    mean, std = np.asarray(norm["mean"])[None, :, None], np.asarray(norm["std"])[None, :, None]
    with torch.no_grad():
        logits = clf.result_.student(torch.from_numpy(((x[:10] * 10 + 5 - mean) / std).astype(np.float32)))
    assert np.allclose(proba, torch.softmax(logits.double(), 1).numpy(), atol=1e-6)
    assert list(clf.predict(x[:10] * 10 + 5)) == list(clf.classes_[proba.argmax(axis=1)])
    with pytest.raises(UserInputError, match=r"each window must have shape \(3, 32\)"):
        clf.predict(np.zeros((2, 3, 16)))
    with pytest.raises(UserInputError, match="call fit"):
        edgedistill.DistilledClassifier(teacher, student).predict(x)


def test_python_api_example_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["python_api.py"])
    example = runpy.run_path(str(ROOT / "examples" / "user_models" / "python_api.py"))
    out = example["main"](tmp_path, epochs=2)
    assert out["fitted"].summary["teacher"]["cached"] is False
    assert (tmp_path / "kd" / "report.md").is_file() and (tmp_path / "clf" / "report.md").is_file()
    assert "predicted:" in capsys.readouterr().out


def test_importing_edgedistill_does_not_load_torch():
    import subprocess

    code = "import sys, edgedistill; assert 'torch' not in sys.modules and 'edgedistill.api' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
