"""The user's own model classes by import path (models.user): a package written here into a temporary folder and
imported as ``pkg.nets:Class``, or a file named as ``./nets.py:Class``; every bad input exits 2 naming its key and
writes nothing; an edited class changes the cache key; taps by module path; export of such a student; the example
recipe under --smoke."""
import json
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgedistill.cli import app
from edgedistill.config import load_recipe
from edgedistill.errors import UserInputError
from edgedistill.models import build_model, model_identity
from edgedistill.models.user import NO_USER_CODE

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "user_models" / "import_path.yaml"

NETS = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_channels: int, n_outputs: int, width: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(in_channels, width, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x):
        return self.head(self.pool(self.body(x)).flatten(1))


class SizedNet(TinyNet):
    def __init__(self, in_channels, num_classes, input_size, width: int = 4):
        super().__init__(in_channels, num_classes, width)
        self.seen_size = input_size


class NeedsHidden(TinyNet):
    def __init__(self, in_channels, n_outputs, hidden):
        super().__init__(in_channels, n_outputs, hidden)


class Raises(nn.Module):
    def __init__(self, in_channels, n_outputs):
        super().__init__()
        raise ValueError("this net needs at least 8 channels")


class TakesKwargs(TinyNet):
    def __init__(self, in_channels, n_outputs, **kwargs):
        super().__init__(in_channels, n_outputs, **kwargs)


class FiveOutputs(TinyNet):
    def __init__(self, in_channels, n_outputs):
        super().__init__(in_channels, 5)


class ForwardBreaks(TinyNet):
    def forward(self, x):
        return self.missing_layer(x)


def not_a_class(in_channels, n_outputs):
    return TinyNet(in_channels, n_outputs)


class NotAModule:
    pass
'''

KD = {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5}]}
DATA = {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 6, "length": 16, "n_classes": 3}}


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """A package ``<unique>.nets`` on sys.path (unique per test: sys.modules keeps what was imported) and the same
    source as the file ``models/nets.py``."""
    name = f"userpkg_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "site"
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "nets.py").write_text(NETS)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(root))
    yield name
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def _recipe(tmp_path, student, teacher=None, method=None, name="recipe.yaml", **extra):
    data = {"name": "user", "data": DATA, "student": student, "method": method or {"name": "supervised"},
            "train": {"epochs": 1, "batch_size": 8}, "seeds": [0], "baseline": False, "engine": {"progress": False},
            **extra}
    if teacher is not None:
        data["teacher"] = {**teacher, "train": {"epochs": 1, "batch_size": 8}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _run(*args):
    return CliRunner().invoke(app, ["run", *map(str, args), "--no-progress"])


def test_import_path_and_file_build_the_class_with_data_arguments_filled(pkg, tmp_path, capsys):
    by_module = build_model(f"{pkg}.nets:TinyNet", 3, 5, (16,), key="student", width=6)
    by_file = build_model(f"{tmp_path}/models/nets.py:TinyNet", 3, 5, (16,), key="teacher")
    assert type(by_module).__name__ == type(by_file).__name__ == "TinyNet"
    assert by_module(torch.zeros(2, 3, 16)).shape == (2, 5) and by_module.head.in_features == 6
    sized = build_model(f"{pkg}.nets:SizedNet", 3, 4, (16,), key="student")  # num_classes and input_size filled too
    assert sized.head.out_features == 4 and sized.seen_size == (16,)
    err = capsys.readouterr().err
    assert "note: student.model: your class TinyNet from" in err and "in_channels=3, n_outputs=5 from the data" in err
    assert "note: teacher.model: your class TinyNet" in err and "num_classes=4, input_size=(16,)" in err
    # The same file is executed once per process (a stable module name), again only when it changes.
    again = build_model(f"{tmp_path}/models/nets.py:TinyNet", 3, 5, (16,))
    assert type(again) is type(by_file)


def test_file_model_is_relative_to_the_recipe_and_recorded_by_content(pkg, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "nets.py").write_text(NETS)
    recipe = _recipe(tmp_path / "sub", {"model": "./nets.py:TinyNet", "width": 3},
                     teacher={"model": f"{pkg}.nets:TinyNet", "width": 8}, method=KD)
    assert load_recipe(recipe).student.model == f"{tmp_path / 'sub' / 'nets.py'}:TinyNet"
    out = tmp_path / "run"
    result = _run(recipe, "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [r["model"] for r in summary["rows"]] == ["TinyNet", "TinyNet + ce+kd"]
    assert f"# sha256 student.model " in (out / "config.yaml").read_text()
    # The file changed: resume refuses (the run's code is not the file's any more).
    (tmp_path / "sub" / "nets.py").write_text(NETS + "\n# edited\n")
    result = _run(out / "config.yaml", "--out", out)
    assert result.exit_code == 2 and "student.model" in result.output and "changed" in result.output


def test_model_files_in_every_model_section_are_relative_to_the_recipe(tmp_path):
    from edgedistill.recipe_paths import resolve_recipe_paths

    data = {"student": {"model": "./nets.py:A"}, "teacher": {"model": "pkg.nets:B"},
            "teachers": [{"model": "fcn"}, {"model": "sub/t.py:C"}],
            "method": {"params": {"peers": [{"model": "peer.py:D"}], "large": {"model": "../big.py:E"}}}}
    out = resolve_recipe_paths(data, tmp_path)
    assert out["student"]["model"] == f"{tmp_path}/nets.py:A" and out["teacher"]["model"] == "pkg.nets:B"
    assert out["teachers"][0]["model"] == "fcn" and out["teachers"][1]["model"] == f"{tmp_path}/sub/t.py:C"
    assert out["method"]["params"]["peers"][0]["model"] == f"{tmp_path}/peer.py:D"
    assert out["method"]["params"]["large"]["model"] == f"{tmp_path.parent}/big.py:E"


def _bad_cases(pkg: str, tmp: Path) -> list[tuple[dict, str]]:
    nets = f"{tmp}/models/nets.py"
    return [
        ({"model": f"{pkg}.nowhere:TinyNet"}, f"student.model: cannot import module '{pkg}.nowhere' (is the package installed or on PYTHONPATH?"),
        ({"model": f"{pkg}.nets:TinyNett"}, "student.model: module '" + pkg + ".nets' has no 'TinyNett'; its nn.Module classes: TinyNet,"),
        ({"model": f"{pkg}.nets:not_a_class"}, "student.model: 'not_a_class' in module '" + pkg + ".nets' is a function, not a subclass of torch.nn.Module"),
        ({"model": f"{pkg}.nets:NotAModule"}, "'NotAModule' in module '" + pkg + ".nets' is a class, not a subclass of torch.nn.Module"),
        ({"model": "os:system"}, "student.model: 'os:system' names the Python standard library ('os')"),
        ({"model": "antigravity:Fly"}, "names the Python standard library ('antigravity')"),
        ({"model": "edgedistill.models.zoo1d:FCN"}, "names edgedistill itself"),
        ({"model": "os.system('x'):A"}, "student.model: 'os.system('x')' is neither a module name"),
        ({"model": f"{pkg}.nets:"}, "student.model: expected a zoo name, 'package.module:Class' or 'path/to/file.py:Class'"),
        ({"model": f"{pkg}.nets:Raises"}, "student: model '" + pkg + ".nets:Raises' with in_channels=3, n_outputs=3 raised ValueError: this net needs at least 8 channels"),
        ({"model": f"{pkg}.nets:TinyNet", "widht": 3}, "student.widht: unknown argument for model '" + pkg + ".nets:TinyNet'; expected one of: in_channels, n_outputs, width. Did you mean 'width'?"),
        ({"model": f"{pkg}.nets:TinyNet", "width": "wide"}, "student.width: Input should be a valid integer"),
        ({"model": f"{pkg}.nets:TakesKwargs", "depth": 3}, "student.depth: model '" + pkg + ".nets:TakesKwargs' takes no argument 'depth'"),
        ({"model": f"{pkg}.nets:NeedsHidden"}, "student.hidden: model '" + pkg + ".nets:NeedsHidden' needs the argument 'hidden'"),
        ({"model": f"{pkg}.nets:FiveOutputs"}, "student: model FiveOutputs outputs 5 values per sample but the data has 3 classes"),
        ({"model": f"{pkg}.nets:ForwardBreaks"}, "student: cannot run on view 'x' of shape (3, 16) per sample: AttributeError:"),
        ({"model": f"{tmp}/missing.py:TinyNet"}, f"student.model: the file '{tmp}/missing.py' does not exist"),
        ({"model": f"{tmp}/models:TinyNet"}, "student.model: '" + str(tmp) + "/models' is neither a module name"),
        ({"model": f"{tmp}/folder.py:TinyNet"}, f"student.model: the file '{tmp}/folder.py' is a folder, not a regular file"),
        ({"model": f"{tmp}/broken.py:TinyNet"}, f"student.model: running '{tmp}/broken.py' raised SyntaxError"),
        ({"model": f"{nets}:Raises"}, "student: model 'nets.py:Raises' with in_channels=3, n_outputs=3 raised ValueError"),
    ]


def test_every_bad_model_exits_2_naming_the_key_and_writes_nothing(pkg, tmp_path):
    (tmp_path / "folder.py").mkdir()
    (tmp_path / "broken.py").write_text("class TinyNet(:\n")
    out = tmp_path / "never"
    for student, message in _bad_cases(pkg, tmp_path):
        result = _run(_recipe(tmp_path, student), "--out", out)
        assert result.exit_code == 2, (student, result.output)
        assert message in " ".join(result.output.split()), (student, result.output)
        assert not out.exists()


def test_teacher_and_assistant_keys_are_named(pkg, tmp_path):
    bad = {"model": f"{pkg}.nets:TinyNet", "widht": 3, "train": {"epochs": 1}}
    result = _run(_recipe(tmp_path, {"model": "cnn1d"}, teacher=bad, method=KD), "--out", tmp_path / "x")
    assert result.exit_code == 2 and "teacher.widht: unknown argument" in result.output
    teachers = [{"name": "big", "model": "fcn", "width": 0.25, "train": {"epochs": 1}}, {**bad, "name": "ta", "distill_from": "big", "terms": KD["terms"]}]
    result = _run(_recipe(tmp_path, {"model": "cnn1d"}, method={"name": "takd"}, teachers=teachers), "--out", tmp_path / "x")
    assert result.exit_code == 2 and "teachers[1].widht: unknown argument" in result.output, result.output


def test_no_user_code_refuses_every_import_path(pkg, tmp_path, monkeypatch):
    monkeypatch.setenv(NO_USER_CODE, "1")
    result = _run(_recipe(tmp_path, {"model": f"{pkg}.nets:TinyNet"}), "--out", tmp_path / "never")
    assert result.exit_code == 2 and f"student.model: '{pkg}.nets:TinyNet' names Python code, and {NO_USER_CODE} is set" \
        in " ".join(result.output.split())
    assert not any(m.startswith(pkg) for m in sys.modules)  # refused before anything was imported
    assert build_model("cnn1d", 3, 3, (16,), width=4) is not None  # the zoo still works


def test_an_edited_class_or_base_class_changes_the_cache_key(pkg, tmp_path):
    nets = tmp_path / "models" / "nets.py"
    by_file = f"{nets}:SizedNet"
    first = model_identity(by_file, {"width": 4})
    old = build_model(by_file, 3, 3, (16,))
    assert model_identity(by_file, {"width": 4}) == first  # unchanged source: the same key (a cache hit)
    nets.write_text(NETS.replace("nn.ReLU()", "nn.GELU()"))  # TinyNet, SizedNet's base, changed
    assert model_identity(by_file, {"width": 4})["source"] != first["source"]
    new = build_model(by_file, 3, 3, (16,))  # and the edited file is what runs now, not the first one
    assert type(new) is not type(old) and isinstance(new.body[1], torch.nn.GELU)
    # A class in a package whose base lives in another module of it: the base's file is hashed too.
    site = tmp_path / "site" / pkg
    (site / "base.py").write_text(NETS)
    (site / "child.py").write_text(f"from {pkg}.base import TinyNet\n\nclass Child(TinyNet):\n    pass\n")
    before = model_identity(f"{pkg}.child:Child", {})["source"]
    (site / "base.py").write_text(NETS + "\n# a change in the base class's file\n")
    assert model_identity(f"{pkg}.child:Child", {})["source"] != before


def test_taps_by_module_path_on_user_models_and_a_clear_error_for_zoo_tap_names(pkg, tmp_path):
    student = {"model": f"{pkg}.nets:TinyNet", "width": 3}
    teacher = {"model": f"{pkg}.nets:TinyNet", "width": 8}
    terms = [{"loss": "ce"}, {"loss": "fitnet", "weight": 0.5, "student_tap": "body.0", "teacher_tap": "body.1"}]
    out = tmp_path / "run"
    result = _run(_recipe(tmp_path, student, teacher=teacher, method={"name": "offline", "terms": terms}), "--out", out)
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "offline" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert "fitnet" in log[0]["train"]
    terms[1].pop("student_tap")  # default "feat": a zoo name, which this class does not define
    result = _run(_recipe(tmp_path, student, teacher=teacher, method={"name": "offline", "terms": terms}), "--out", tmp_path / "x")
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "method.terms[1].student_tap: tap 'feat' is a zoo model's default tap name" in text
    assert "TinyNet defines no default_taps" in text and "valid paths: body, body.0, body.1, pool, head" in text


def test_export_of_an_import_path_student_and_a_clear_line_when_its_class_is_gone(pkg, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "run"
    result = _run(_recipe(tmp_path, {"model": f"{pkg}.nets:TinyNet", "width": 3}), "--out", out)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["export", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "export" / "student_seed0_best.onnx").is_file()
    # The package is gone at export time: one line saying the class must be importable, exit 2.
    for mod in [m for m in sys.modules if m == pkg or m.startswith(pkg + ".")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path / "site")])
    result = CliRunner().invoke(app, ["export", str(out), "--out", str(tmp_path / "again.onnx")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and f"the run's student class '{pkg}.nets:TinyNet' must be importable" in text
    assert "is the package installed or on PYTHONPATH?" in text and not (tmp_path / "again.onnx").exists()


def test_export_refuses_a_run_whose_model_file_is_gone(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    out = tmp_path / "run"
    result = _run(_recipe(tmp_path, {"model": "./nets.py:TinyNet"}), "--out", out)
    assert result.exit_code == 0, result.output
    (tmp_path / "nets.py").unlink()
    result = CliRunner().invoke(app, ["export", str(out)])
    assert result.exit_code == 2 and "student.model:" in result.output and "no longer exists" in result.output


def test_example_recipe_runs_under_smoke(tmp_path):
    out = tmp_path / "run"
    result = _run(EXAMPLE, "--smoke", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["model"]: r for r in summary["rows"]}
    assert set(rows) == {"WristTeacher", "WristNet", "WristNet + ce+kd+at"}
    assert rows["WristNet + ce+kd+at"]["params"] < rows["WristTeacher"]["params"]
    log = [json.loads(line) for line in (out / "offline" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert {"ce", "kd", "at"} <= set(log[0]["train"])  # it trained, with the feature term on the tapped blocks
