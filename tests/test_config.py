import pytest

from edgedistill.config import load_recipe
from edgedistill.yaml_io import apply_overrides, parse_override
from edgedistill.errors import UserInputError

BASE = {
    "name": "t",
    "data": {"name": "synthetic"},
    "student": {"model": "cnn1d", "width": 8},
    "teacher": {"model": "fcn", "train": {"epochs": 2}},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]},
    "train": {"epochs": 3},
}


def test_valid_recipe_and_extras():
    r = load_recipe(BASE)
    assert r.student.kwargs == {"width": 8}
    assert r.method.terms[1].params == {"temperature": 4}
    assert r.teacher.train.epochs == 2 and r.train.epochs == 3


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.epohcs=3"], "train.epohcs: unknown key"),
        (["train.epochs=0"], "train.epochs: Input should be greater than or equal to 1"),
        (["train.optimizer=lbfgs"], "train.optimizer"),
        (["seeds=[]"], "seeds"),
        (["data.path=x.npz"], "exactly one of data.name .*; to use your file in place of a recipe's '.*' on the command "
                              "line, clear the name too: data.name= data.path=x.npz"),
        (["data.name="], "exactly one of data.name \\(a bundled dataset\\) or data.path \\(.npz or .csv file\\)$"),
        (["engine.strategy=deepspeed"], "engine.strategy: Input should be 'auto', 'ddp' or 'fsdp'"),
    ],
)
def test_bad_keys_name_the_path(override, message):
    with pytest.raises(UserInputError, match=message.replace("[", "\\[")):
        load_recipe(BASE, override)


def test_overrides_parse_yaml_values_and_lists():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 0.001)
    assert parse_override("seeds=[0, 1]") == (["seeds"], [0, 1])
    d = apply_overrides(BASE, ["method.terms.1.temperature=8", "student.width=32"])
    assert d["method"]["terms"][1]["temperature"] == 8 and d["student"]["width"] == 32
    assert BASE["student"]["width"] == 8  # the input is not mutated
    with pytest.raises(UserInputError, match="not an index"):
        apply_overrides(BASE, ["method.terms.5.weight=1"])
    with pytest.raises(UserInputError, match="expected key.sub=value"):
        parse_override("train.lr")


def test_yaml_tags_are_not_executed(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_recipe(p)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "teacher, message",
    [
        ({"train": {"epochs": 2}}, "a teacher needs a model to train"),
        ({"load": "t.onnx", "outputs": "o.npz"}, "load and outputs: give one of"),
        ({"model": "fcn", "load": "t.pt", "checkpoint": "c.pt"}, "load and checkpoint: give one of"),
        ({"model": "fcn", "outputs": "o.npz"}, "outputs: a teacher given by its outputs has no model"),
        ({"outputs": "o.npz", "width": 8}, "has no model"),
        ({"load": "t.onnx", "width": 8}, "width: model options need a 'model'"),
    ],
)
def test_teacher_sources_are_exclusive(teacher, message):
    with pytest.raises(UserInputError, match=message):
        load_recipe({**BASE, "teacher": teacher})


def test_given_teachers_and_labels(tmp_path):
    (tmp_path / "r.yaml").write_text("name: t\ndata: {name: synthetic}\nstudent: {model: ./nets.py:Wrist}\n"
                                     "teacher: {load: saved/t.onnx}\n")
    r = load_recipe(tmp_path / "r.yaml")
    assert r.teacher.given and r.teacher.model is None
    assert r.teacher.load == (tmp_path / "saved" / "t.onnx").resolve()  # relative to the recipe's folder
    assert r.teacher.label == "t.onnx" and r.student.label == "Wrist"
    assert not load_recipe(BASE).teacher.given
