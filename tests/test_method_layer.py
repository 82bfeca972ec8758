"""The shared pieces of the method layer: typed parameters, the teacher component, term schedules, kl_rows."""
import math
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import torch
from pydantic import Field
from torch import nn

from edgedistill.config import TermConfig, load_recipe
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses import kd, kl_rows
from edgedistill.methods.base import Step
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.methods.teachers import Teachers, as_teacher, evaluating
from edgedistill.params import Params


class Demo(Params):
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight")
    steps: int = Field(3, ge=1)
    space: Literal["probs", "logits"] = "probs"


@pytest.mark.parametrize("values, key", [
    ({"alpha": True}, "alpha"), ({"alpha": "0.5"}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"alpha": float("nan")}, "alpha"),
    ({"steps": 2.5}, "steps"), ({"steps": 0}, "steps"), ({"space": "prob"}, "space"),
])
def test_params_refuse_bad_values_naming_the_key(values, key):
    with pytest.raises(UserInputError, match=rf"^method\.params\.{key}: "):
        Demo.parse(values, "method.params")


def test_params_unknown_key_gets_a_spelling_hint():
    with pytest.raises(UserInputError, match=r"method\.params\.alhpa: unknown parameter.*Did you mean 'alpha'"):
        Demo.parse({"alhpa": 0.5}, "method.params")


def test_params_defaults_ints_as_floats_and_docs():
    p = Demo.parse({"alpha": 1}, "method.params")
    assert p.alpha == 1.0 and isinstance(p.alpha, float) and p.steps == 3
    rows = {r["name"]: r for r in Demo.fields_doc()}
    assert rows["alpha"]["doc"] == "weight" and rows["alpha"]["bounds"] == ">= 0.0, <= 1.0"


def _info(views=None, task="classification"):
    return DataInfo(name="toy", task=task, input_shape=(2, 8), n_outputs=3, views=views or {"x": (2, 8)})


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean(-1))


def _data(n=10):
    g = torch.Generator().manual_seed(0)
    return TensorData({"x": torch.randn(n, 2, 8, generator=g)}, torch.randint(0, 3, (n,), generator=g))


def test_teachers_check_count_task_and_view():
    with pytest.raises(UserInputError, match=r"teachers: method 'm' needs at least 2 teachers"):
        Teachers([Net()], _info(), "m", minimum=2)
    with pytest.raises(UserInputError, match=r"teachers\[1\]\.view: the dataset has no view 'pi'"):
        Teachers([as_teacher(Net()), as_teacher(Net(), view="pi")], _info(), "m")


def test_a_regimes_task_is_checked_once_by_the_base():
    from edgedistill.methods.base import Method

    class NeedsClasses(Method):
        task = "classification"
        task_why = "compares class distributions"

    with pytest.raises(UserInputError, match=r"^data: method 'NeedsClasses' compares class distributions and needs a "
                                             r"classification dataset, got a regression one"):
        NeedsClasses(Net(), _info(task="regression"))
    NeedsClasses(Net(), _info())


def test_teachers_are_frozen_and_the_cache_equals_running_them():
    torch.manual_seed(0)
    nets = [Net().train(), Net().train()]
    teachers = Teachers(nets, _info(), "m")
    assert all(not m.training and not any(p.requires_grad for p in m.parameters()) for m in teachers.models)
    data = _data()
    assert teachers.cache(data, torch.device("cpu"))
    batch = data.batch(torch.tensor([7, 2, 5]))
    live = [teachers.run(batch, k) for k in range(2)]
    cached = teachers.all_logits(batch)
    for a, b in zip(live, cached):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(teachers.cached_stack()[:, batch["index"]], torch.stack(live))


def test_teacher_cache_declines_when_the_input_changes_every_step():
    teachers = Teachers([Net()], _info(), "m")
    assert not teachers.cache(_data(), torch.device("cpu"), input_changes=True)
    assert not teachers.cached
    batch = {**_data().batch(torch.arange(3)), "x_teacher": torch.zeros(3, 2, 8)}
    torch.testing.assert_close(teachers.logits(batch), teachers.models[0](torch.zeros(3, 2, 8)))


def test_teacher_cache_keeps_tapped_features_by_row():
    from edgedistill.models import FeatureTaps

    net = Net()
    teachers = Teachers([net], _info(), "m")
    taps = FeatureTaps(net, {"feat": "conv"}, detach=True)
    data = _data()
    teachers.cache(data, torch.device("cpu"), taps=[taps])
    batch = data.batch(torch.tensor([3, 1]))
    logits, feat = teachers.lookup(batch)
    torch.testing.assert_close(feat, net.conv(batch["x"]))
    torch.testing.assert_close(logits, net(batch["x"]))


def test_evaluating_restores_each_mode():
    a, b = Net().train(), Net().eval()
    with evaluating(a, b, None):
        assert not a.training and not b.training
    assert a.training and not b.training


@pytest.mark.parametrize("cfg, expected", [
    ({}, [1, 1, 1, 1]),
    ({"start_epoch": 2}, [0, 0, 1, 1]),
    ({"warmup_epochs": 4}, [0.25, 0.5, 0.75, 1]),
    ({"warmup_epochs": 2, "start_epoch": 1}, [0, 0.5, 1, 1]),
    ({"warmup_epochs": 2, "ramp": "cosine"}, [0.5, 1, 1, 1]),
])
def test_term_schedule_factor(cfg, expected):
    term = TermConfig(loss="kd", **cfg)
    assert [term.factor(e) for e in range(4)] == pytest.approx(expected)


def test_scheduled_term_in_a_training_step_and_in_describe():
    torch.manual_seed(0)
    s, t = Net(), Net()
    terms = [TermConfig(loss="ce"), TermConfig(loss="kd", weight=0.5, warmup_epochs=4, start_epoch=1)]
    m = OfflineDistillation(s, _info(), t, terms)
    m.setup(_data(), torch.device("cpu"))
    batch = _data().batch(torch.arange(4))
    full = 0.5 * kd(s(batch["x"]), t(batch["x"]), 4.0)
    step = lambda e: Step(epoch=e, step=0, epochs=8, steps_per_epoch=1)  # noqa: E731
    assert float(m.training_step(batch, step(0))["kd"]) == 0.0
    torch.testing.assert_close(m.training_step(batch, step(2))["kd"], 0.5 * full)
    torch.testing.assert_close(m.training_step(batch, step(5))["kd"], full)
    assert m.describe()["terms"][1] == {"loss": "kd", "weight": 0.5, "start_epoch": 1, "warmup_epochs": 4, "ramp": "linear"}


def test_term_schedule_keys_are_validated_with_the_recipe():
    recipe = {"name": "r", "data": {"name": "synthetic"}, "student": {"model": "cnn1d"},
              "method": {"name": "offline", "terms": [{"loss": "ce", "warmup_epochs": -1}]}}
    with pytest.raises(UserInputError, match=r"method\.terms\.0\.warmup_epochs"):
        load_recipe(recipe)


def test_kl_rows_is_the_per_sample_kd():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    torch.testing.assert_close(9.0 * kl_rows(t, s, 3.0).mean(), kd(s, t, 3.0))
    assert float(kl_rows(t, t, 2.0).abs().max()) < 1e-6
    p, q = torch.softmax(t, 1), torch.softmax(s, 1)
    torch.testing.assert_close(kl_rows(t, s), (p * (p / q).log()).sum(1))


def test_bad_method_param_fails_the_cli_with_exit_code_2(tmp_path):
    exe = Path(sys.executable).with_name("edgedistill")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    out = subprocess.run([str(exe), "run", str(recipe), "--smoke", "--no-progress", "--out", str(tmp_path / "r"),
                          "method.params.cache_teacher=3"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "method.params.cache_teacher" in out.stderr
    assert not (tmp_path / "r").exists()


def test_list_params_prints_a_regimes_parameters():
    exe = Path(sys.executable).with_name("edgedistill")
    out = subprocess.run([str(exe), "list", "methods", "--params", "supervised"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "label_smoothing" in out.stdout
    # The installed command once (above); the other cases in this process (each subprocess pays the imports again).
    from typer.testing import CliRunner

    from edgedistill.cli import app

    own = CliRunner().invoke(app, ["list", "methods", "--params", "camkd"])
    assert own.exit_code == 0 and "method.terms" in own.stdout and "start_epoch: 1" in own.stdout
    bad = CliRunner().invoke(app, ["list", "methods", "--params", "nope"])
    assert bad.exit_code == 2 and "unknown method 'nope'" in bad.output


def test_the_documented_example_regime_trains_from_a_recipe(tmp_path):
    """docs/methods/README.md's "Adding a regime" code, executed as written, trains from a recipe."""
    import re

    import edgedistill
    from edgedistill.registry import METHODS

    page = (Path(__file__).resolve().parents[1] / "docs" / "methods" / "README.md").read_text()
    code = re.search(r"## Adding a regime.*?```python\n(.*?)```", page, re.S).group(1)
    if "gated_kd" not in METHODS:
        exec(compile(code, "docs/methods/README.md", "exec"), {"__name__": "docs_example_gated_kd"})
    recipe = {"name": "gated", "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 8}},
              "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1}},
              "student": {"model": "cnn1d", "width": 4, "depth": 2},
              "method": {"name": "gated_kd", "params": {"alpha": 0.5}}, "train": {"epochs": 1}, "seeds": [0],
              "engine": {"threads": 1, "progress": False}}
    summary = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    row = next(r for r in summary["rows"] if r["role"] == "method")
    assert math.isfinite(row["metrics"]["acc"]["mean"])
    with pytest.raises(UserInputError, match=r"method\.params\.alpha"):
        edgedistill.run({**recipe, "method": {"name": "gated_kd", "params": {"alpha": 2}}}, out=tmp_path / "bad")


def test_an_unknown_key_in_a_nested_section_lists_that_sections_keys():
    class Inner(Params):
        width: int = 8

    class Outer(Params):
        generator: Inner = Field(default_factory=Inner)
        batch_size: int = 4

    with pytest.raises(UserInputError, match=r"method\.params\.generator\.widht: unknown parameter; expected one of: "
                                             r"width\. Did you mean 'width'"):
        Outer.parse({"generator": {"widht": 3}}, "method.params")


def test_freeze_drops_gradients_left_from_training():
    from edgedistill.methods.teachers import freeze

    net = Net()
    net(torch.randn(2, 2, 8)).sum().backward()
    assert any(p.grad is not None for p in net.parameters())
    freeze(net)
    assert all(p.grad is None and not p.requires_grad for p in net.parameters()) and not net.training
