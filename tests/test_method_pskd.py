"""pskd (our ACS rule and progressive admission): the per-sample selection on hand-made logits, the label fallback,
the loss against hand maths and against single-teacher KD, admission by progress and by gap, frozen teachers,
the clear errors, and one end-to-end run with teachers on different channel views."""
import json
import math

import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.config import TeacherConfig, TermConfig
from edgedistill.data.dataset import DataInfo, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses import ce, kd
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.methods.pskd import PSKD, acs_loss, acs_select
from edgedistill.registry import METHODS

D = torch.float64


class Lookup(nn.Module):
    """Output for input row i is row i of fixed logits (x[:, 0, 0] holds i); checks its channel count (its view)."""

    def __init__(self, logits: torch.Tensor, channels: int = 3) -> None:
        super().__init__()
        self.logits, self.channels = nn.Parameter(logits.clone()), channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels, f"fed {x.shape[1]} channels, expected {self.channels}"
        return self.logits[x[:, 0, 0].long()]


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


# Hand-made (K=3, B=5, C=3) logits and labels; the expected choice of each sample is worked out by hand below.
Y = torch.tensor([0, 1, 2, 0, 1])
Z = torch.tensor([
    # teacher 0
    [[2.0, 0.0, 0.0], [1.0, 1.1, 0.9], [3.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]],
    # teacher 1
    [[0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [0.0, 3.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]],
    # teacher 2
    [[4.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.1], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]],
], dtype=D)


def test_registered():
    assert METHODS.get("pskd") is PSKD


def test_selection_rule_per_sample_on_hand_made_logits():
    p = lambda k, i: _softmax(Z[k, i].tolist())[int(Y[i])]  # noqa: E731 - true-class probability, by hand
    # sample 0: teachers 0 and 2 right and confident; teacher 2 surer (e^4 / (e^4 + 2) > e^2 / (e^2 + 2)).
    assert p(2, 0) > p(0, 0) >= 0.5
    # sample 1: only teacher 0 is right (argmax 1), with p = 0.366 < 0.5: not confident -> the label.
    assert 0.33 < p(0, 1) < 0.5
    # sample 2: only teacher 2 is right, p(2, 2) = e^.1 / (e^.1 + 2) = 0.356: not confident -> the label.
    # sample 3: all three right with identical logits -> the tie goes to the first teacher.
    # sample 4: teachers 1 and 2 right; teacher 1 surer.
    assert p(1, 4) > p(2, 4) >= 0.5
    assert acs_select(Z, Y, 0.5).tolist() == [2, -1, -1, 0, 1]
    # Without a confidence floor, correct-but-unsure teachers are followed.
    assert acs_select(Z, Y, 0.0).tolist() == [2, 0, 2, 0, 1]
    # Teacher 2 not admitted yet: sample 0 falls back to teacher 0, sample 4 keeps teacher 1.
    assert acs_select(Z, Y, 0.5, torch.tensor([True, True, False])).tolist() == [0, -1, -1, 0, 1]


def test_no_teacher_correct_means_the_label_only():
    zs = torch.tensor([[0.3, -0.2, 1.0], [1.5, 0.0, -1.0]], dtype=D)
    y = torch.tensor([1, 2])
    wrong = torch.stack([5 * nn.functional.one_hot((y + 1) % 3, 3).to(D), 5 * nn.functional.one_hot((y + 2) % 3, 3).to(D)])
    choice = acs_select(wrong, y, 0.5)
    assert choice.tolist() == [-1, -1]
    out = acs_loss(zs, wrong, y, choice, alpha=0.9, temperature=4.0)
    assert float(out["kd"].detach()) == 0.0
    assert float(out["ce"].detach()) == pytest.approx(float(ce(zs, y)), abs=1e-12)  # the label gets the whole weight


def test_loss_by_hand_on_a_mixed_batch():
    zs = torch.tensor([[0.3, -0.2, 1.0], [1.5, 0.0, -1.0]], dtype=D)
    zt = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]], dtype=D)  # one teacher: right on row 0, wrong on row 1
    y = torch.tensor([1, 0])  # row 1: the teacher says 2, the label is 0, so row 1 follows the label
    choice = acs_select(zt, y, 0.5)
    assert choice.tolist() == [0, -1]
    a, t = 0.7, 2.0
    ps, pt = _softmax([v / t for v in zs[0].tolist()]), _softmax([v / t for v in zt[0, 0].tolist()])
    kl0 = sum(q * math.log(q / s) for q, s in zip(pt, ps))
    ce0 = -math.log(_softmax(zs[0].tolist())[1])
    ce1 = -math.log(_softmax(zs[1].tolist())[0])
    out = acs_loss(zs, zt, y, choice, alpha=a, temperature=t)
    assert float(out["ce"].detach()) == pytest.approx(((1 - a) * ce0 + 1.0 * ce1) / 2, abs=1e-12)
    assert float(out["kd"].detach()) == pytest.approx(a * t * t * kl0 / 2, abs=1e-12)


def _info(n: int, classes: int = 3) -> DataInfo:
    return DataInfo(name="toy", task="classification", input_shape=(3, 4), n_outputs=classes,
                    classes=[str(c) for c in range(classes)], views={"x": (3, 4), "full": (6, 4), "other": (2, 4)},
                    sizes={"train": n})


def _data(y: torch.Tensor) -> TensorData:
    n = len(y)
    full = torch.zeros(n, 6, 4)
    full[:, 0, 0] = torch.arange(n, dtype=torch.float32)
    return TensorData({"x": full[:, :3].clone(), "full": full, "other": full[:, :2].clone()}, y)


def _teacher(name, logits, view, channels):
    return TeacherNet(name, Lookup(logits, channels), TeacherConfig(model="lookup", view=view, name=name))


def _step(progress: float, total: int = 100) -> Step:
    return Step(epoch=0, step=round(progress * total), epochs=1, steps_per_epoch=total)


def _method(teachers, y, **params):
    torch.manual_seed(0)
    student = Lookup(torch.randn(len(y), 3), channels=3)
    m = PSKD(student, _info(len(y)), teachers, **params)
    m.setup(_data(y), torch.device("cpu"))
    return m


def test_all_samples_choosing_one_teacher_is_single_teacher_kd():
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    torch.manual_seed(3)
    good = 4.0 * nn.functional.one_hot(y, 3).float() + 0.3 * torch.randn(6, 3)  # right and confident everywhere
    bad = 4.0 * nn.functional.one_hot((y + 1) % 3, 3).float()  # always wrong: never eligible
    teachers = [_teacher("bad", bad, "other", 2), _teacher("good", good, "full", 6)]
    m = _method(teachers, y, order="recipe", admit=[0.0, 0.0])
    batch = _data(y).batch(torch.arange(6))
    out = m.training_step(batch, _step(0.0))
    ref = OfflineDistillation(m.networks["student"], _info(6), teachers[1].model,
                              [TermConfig(loss="ce", weight=0.1), TermConfig(loss="kd", weight=0.9, temperature=4.0)],
                              teacher_view="full")
    ref.setup(_data(y), torch.device("cpu"))
    want = ref.training_step(batch, _step(0.0))
    assert float(out["ce"].detach()) == pytest.approx(float(want["ce"].detach()), abs=1e-6)
    assert float(out["kd"].detach()) == pytest.approx(float(want["kd"].detach()), abs=1e-6)
    assert m.describe()["followed"][-1] == {"from": 0.0, "bad": 0.0, "good": 1.0, "label": 0.0}


def test_progressive_admission_by_progress():
    y = torch.tensor([0, 1, 2, 0])
    first = 2.0 * nn.functional.one_hot(y, 3).float()  # right, p = e^2/(e^2+2) = 0.79
    second = 6.0 * nn.functional.one_hot(y, 3).float()  # right and surer: chosen once admitted
    m = _method([_teacher("a", first, "x", 3), _teacher("b", second, "full", 6)], y, order="recipe", admit=[0.0, 0.5])
    assert m.admitted(0.0).tolist() == [True, False]
    assert m.admitted(0.49).tolist() == [True, False]
    assert m.admitted(0.5).tolist() == [True, True]
    batch = _data(y).batch(torch.arange(4))
    kd_a = float(m.training_step(batch, _step(0.2))["kd"].detach())
    kd_b = float(m.training_step(batch, _step(0.7))["kd"].detach())
    zs = m.networks["student"](batch["x"])
    assert kd_a == pytest.approx(0.9 * float(kd(zs, first, 4.0).detach()), abs=1e-6)
    assert kd_b == pytest.approx(0.9 * float(kd(zs, second, 4.0).detach()), abs=1e-6)
    assert m.describe()["followed"] == [{"from": 0.0, "a": 1.0, "label": 0.0}, {"from": 0.5, "a": 0.0, "b": 1.0, "label": 0.0}]
    # Default admit: rank r joins at r / K.
    m3 = _method([_teacher(n, first, "x", 3) for n in "pqr"], y, order="recipe")
    assert m3.admit == pytest.approx([0.0, 1 / 3, 2 / 3])


def test_gap_order_admits_the_weaker_teacher_first():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    strong = 5.0 * nn.functional.one_hot(y, 3).float()
    weak = strong.clone()
    weak[:2] = 5.0 * nn.functional.one_hot((y[:2] + 1) % 3, 3).float()  # wrong on 2 of 6 validation rows
    teachers = [_teacher("strong", strong, "full", 6), _teacher("weak", weak, "x", 3)]
    torch.manual_seed(0)
    m = PSKD(Lookup(torch.randn(6, 3)), _info(6), teachers, order="gap")
    m.setup(_data(y), torch.device("cpu"), val=_data(y))
    assert m.describe()["admission_order"] == ["weak", "strong"]
    m_recipe = _method(teachers, y, order="recipe")
    assert m_recipe.describe()["admission_order"] == ["strong", "weak"]
    # The cache follows the admission order and holds each teacher's outputs on its own view.
    cached = m.teachers.cached_stack()
    assert torch.equal(cached[0], weak.float()) and torch.equal(cached[1], strong.float())


def test_teachers_frozen_and_get_no_gradient():
    y = torch.tensor([0, 1, 2, 0])
    teachers = [_teacher("a", 3.0 * nn.functional.one_hot(y, 3).float(), "x", 3),
                _teacher("b", torch.randn(4, 3), "full", 6)]
    m = _method(teachers, y, order="recipe", admit=[0.0, 0.0])
    for t in teachers:
        assert not t.model.training and all(not p.requires_grad for p in t.model.parameters())
    sum(m.training_step(_data(y).batch(torch.arange(4)), _step(0.0)).values()).backward()
    assert float(m.networks["student"].logits.grad.abs().sum()) > 0
    assert all(p.grad is None for t in teachers for p in t.model.parameters())
    assert not m.teachers.cached_stack().requires_grad


def test_clear_errors():
    one = [_teacher("a", torch.zeros(3, 3), "full", 6)]
    two = one + [_teacher("b", torch.zeros(3, 3), "x", 3)]
    student = Lookup(torch.zeros(3, 3))
    with pytest.raises(UserInputError, match=r"^teachers: method 'pskd' needs at least 2 teachers"):
        PSKD(student, _info(3), one)
    with pytest.raises(UserInputError, match=r"^teachers\[1\]\.view: the dataset has no view 'depth'"):
        PSKD(student, _info(3), [one[0], _teacher("c", torch.zeros(3, 3), "depth", 3)])
    for params, key in [({"admit": [0.0]}, "admit"), ({"admit": [0.5, 0.1]}, "admit"), ({"admit": [0.0, 1.0]}, "admit"),
                        ({"order": "size"}, "order"), ({"alpha": 1.5}, "alpha"), ({"temperature": 0}, "temperature"),
                        ({"min_confidence": 2}, "min_confidence"), ({"alpha": "0.9"}, "alpha")]:
        with pytest.raises(UserInputError, match=rf"^method\.params\.{key}[.:]"):  # admit.1: one element
            PSKD(student, _info(3), two, **params)
    reg = DataInfo(name="r", task="regression", input_shape=(3, 4), n_outputs=1, views={"x": (3, 4), "full": (6, 4)})
    with pytest.raises(UserInputError, match=r"^data: .*classification"):
        PSKD(student, reg, two)


def _recipe(**method) -> dict:
    return {
        "name": "pskd-test",
        "data": {"name": "synthetic", "params": {"channels": 6, "n_subjects": 3, "windows_per_subject": 8,
                                                   "n_classes": 3, "length": 24},
                 "views": {"x": [0, 1, 2], "full": [0, 1, 2, 3, 4, 5], "gyro": [3, 4, 5]}, "split": {"by": "stratified"}},
        "teachers": [{"name": "same", "model": "cnn1d", "width": 8, "view": "x", "train": {"epochs": 1, "batch_size": 8}},
                     {"name": "gyro", "model": "cnn1d", "width": 4, "view": "gyro", "train": {"epochs": 1, "batch_size": 8}}],
        "student": {"model": "cnn1d", "width": 4},
        "method": {"name": "pskd", **method},
        "train": {"epochs": 1, "batch_size": 8},
        "baseline": False,
    }


def test_recipe_errors_name_the_key():
    r = _recipe()
    r["teachers"] = r["teachers"][:1]
    with pytest.raises(UserInputError, match=r"^teachers: method 'pskd' needs at least 2"):
        edgedistill.run(r, out="r1", progress=False)
    r = _recipe()
    r["teachers"][1]["view"] = "depth"
    with pytest.raises(UserInputError, match=r"^teachers\[1\]\.view:"):
        edgedistill.run(r, out="r2", progress=False)
    with pytest.raises(UserInputError, match=r"^method\.terms: method 'pskd' takes no loss terms"):
        edgedistill.run(_recipe(terms=[{"loss": "ce"}]), out="r3", progress=False)
    with pytest.raises(UserInputError, match=r"^method\.params\.admitt: unknown parameter.*'admit'"):
        edgedistill.run(_recipe(params={"admitt": [0, 0.5]}), out="r4", progress=False)


def test_end_to_end_run_with_teachers_on_their_own_views(tmp_path):
    summary = edgedistill.run(_recipe(params={"admit": [0.0, 0.5]}), out=tmp_path / "run", progress=False)
    assert [r["role"] for r in summary["rows"]] == ["teacher", "teacher", "method"]
    done = json.loads((tmp_path / "run" / "pskd" / "seed0" / "summary.json").read_text())
    assert sorted(done["method"]["admission_order"]) == ["gyro", "same"]
    for stage in done["method"]["followed"]:
        assert sum(v for k, v in stage.items() if k != "from") == pytest.approx(1.0, abs=1e-3)
    log = json.loads((tmp_path / "run" / "pskd" / "seed0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"ce", "kd"} <= set(log["train"])
