"""roskd: the prototype vectors of tests/reference/ref_others.py section 6 (RoS-KD, arXiv 2210.08388: KD with
teacher ZTA[1], one EMA step), the per-step teacher draw, the EMA copy as the deliverable, and the errors."""
import json

import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.config import TeacherConfig, TermConfig, TrainConfig
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kd
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods.roskd import RoSKD, debiased_momentum, draw_teacher, ema_update
from tests.helpers import tiny_net, toy_splits

D = torch.float64
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=D)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=D)


class Vec(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(values, dtype=D))
        self.register_buffer("stat", torch.tensor(values, dtype=D) * 10)


def test_golden_ema_step_and_buffers_copied():
    avg, model = Vec([1.0, -2.0]), Vec([0.5, 0.0])
    ema_update(avg, model, 0.99)
    assert torch.allclose(avg.theta, torch.tensor([0.995, -1.98], dtype=D), atol=1e-12)
    assert torch.equal(avg.stat, model.stat)
    ema_update(avg, model, 0.0)  # m = 0: the copy
    assert torch.equal(avg.theta, model.theta)


def test_golden_kd_with_the_drawn_teacher():
    # tests/reference/ref_others.py section 6: KD with teacher ZTA[1] (columns reversed), T = 4.
    assert abs(kd(ZS, ZT.flip(1), 4.0).item() - 1.327495) < 1e-6
    splits = toy_splits()
    teachers = _teachers()
    terms = [TermConfig(loss="ce", weight=0.4), TermConfig(loss="kd", weight=0.6, temperature=4.0)]
    method = RoSKD(tiny_net(), splits.info, teachers, terms, sample_seed=5)
    method.setup(splits.train, torch.device("cpu"))
    batch = splits.train.batch(torch.arange(8))
    step = next(s for s in range(100) if draw_teacher(3, s, 5) == 1)
    terms = method.training_step(batch, Step(0, step, 1, 100))
    assert method.last_teacher == 1
    with torch.no_grad():
        s, z = method.networks["student"](batch["x"]), teachers[1].model(batch["x"])
    assert torch.allclose(terms["kd"], 0.6 * kd(s, z, 4.0), atol=1e-6)
    assert torch.allclose(terms["ce"], 0.4 * torch.nn.functional.cross_entropy(s, batch["y"]), atol=1e-6)


def test_teacher_draw_is_uniform_and_depends_only_on_seed_and_step():
    draws = torch.tensor([draw_teacher(3, s, 7) for s in range(3000)])
    counts = torch.bincount(draws, minlength=3)
    assert counts.min() > 900 and counts.max() < 1100  # 1000 +- 3 sd
    assert [draw_teacher(3, s, 7) for s in range(50)] == draws[:50].tolist()  # a resumed run draws the same
    assert [draw_teacher(3, s, 8) for s in range(50)] != draws[:50].tolist()


def _teachers(n=3):
    out = []
    for i in range(n):
        torch.manual_seed(10 + i)
        out.append(TeacherNet(f"t{i}", tiny_net(width=6), TeacherConfig(model="tiny", name=f"t{i}")))
    return out


def test_ema_is_the_deliverable_is_not_optimised_and_trails_the_student():
    splits = toy_splits()
    torch.manual_seed(0)
    method = RoSKD(tiny_net(), splits.info, _teachers(), ema_momentum=0.9, ema_start_step=2)
    assert method.deliverable() is method.networks["ema"]
    assert method.evaluated() == {"student without EMA": method.networks["student"]}
    opt = method.optimizers(TrainConfig())["student"]
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in method.networks["student"].parameters()}
    method.setup(splits.train, torch.device("cpu"))
    student, ema = method.networks["student"], method.networks["ema"]
    initial = [p.clone() for p in ema.parameters()]
    for step in range(4):
        batch = splits.train.batch(torch.arange(8 * step, 8 * step + 8))
        opt.zero_grad()
        sum(method.training_step(batch, Step(0, step, 1, 4)).values()).backward()
        before = [p.clone() for p in ema.parameters()]
        opt.step()
        method.after_step(Step(0, step, 1, 4))
        if step <= 2:  # warm-up, then the first averaged step: the bias-corrected average is the student itself
            assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), student.parameters()))
        else:
            n = step - 1  # the n-th averaged step: momentum 0.9 (1 - 0.9^(n-1)) / (1 - 0.9^n)
            m = 0.9 * (1 - 0.9 ** (n - 1)) / (1 - 0.9 ** n)
            for a, b, s in zip(ema.parameters(), before, student.parameters()):
                assert torch.allclose(a, m * b + (1 - m) * s.detach(), atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(ema.parameters(), initial))  # the copy moved
    assert any(not torch.equal(a, b) for a, b in zip(ema.parameters(), student.parameters()))  # but trails
    assert torch.equal(ema[1].running_mean, student[1].running_mean)
    assert all(p.grad is None for t in method.teachers for p in t.model.parameters())


@pytest.mark.parametrize("kwargs, message", [
    ({"ema_momentum": 1.0}, r"method.params.ema_momentum"),
    ({"ema_start_step": -1}, r"method.params.ema_start_step"),
    ({"sample_seed": "a"}, r"method.params.sample_seed"),
    ({"alpha": 0.9}, r"method.params.alpha: unknown parameter"),  # weights are recipe terms
])
def test_bad_params(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        RoSKD(tiny_net(), toy_splits().info, _teachers(), **kwargs)
    with pytest.raises(UserInputError, match=r"teachers: method 'roskd' needs at least 2"):
        RoSKD(tiny_net(), toy_splits().info, _teachers(1))


def test_recipe_end_to_end_reports_ema_and_raw_student(tmp_path):
    recipe = {
        "name": "roskd",
        "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
        "teachers": [{"name": f"s{i}", "model": "fcn", "width": 0.125, "seed": i, "train_subset": 0.7,
                      "train": {"epochs": 1, "batch_size": 16}} for i in range(2)],
        "student": {"model": "cnn1d", "width": 4, "depth": 2},
        "method": {"name": "roskd", "params": {"ema_momentum": 0.5}},
        "train": {"epochs": 2, "batch_size": 16},
        "baseline": False,
        "engine": {"progress": False},
    }
    summary = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    assert [r["model"] for r in summary["rows"]][-2:] == ["cnn1d + roskd", "student without EMA"]
    run = tmp_path / "run" / "roskd" / "seed0"
    assert json.loads((run / "summary.json").read_text())["method"]["train_subsets"] == [0.7, 0.7]
    nets = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["networks"]
    assert set(nets) == {"student", "ema"}
    assert any(not torch.equal(nets["ema"][k], nets["student"][k]) for k in nets["student"] if "running" not in k)
    # What is shipped is the EMA copy: the checkpoint says so, and export loads it, not the raw student.
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["deliverable"] == "ema"
    from edgedistill.deploy.runs import load_run
    from edgedistill.engine.loop import deliverable_weights

    shipped = load_run(tmp_path / "run").student.state_dict()
    assert all(torch.equal(shipped[k], best["networks"]["ema"][k]) for k in shipped)
    assert all(torch.equal(deliverable_weights(run, "best")[k], best["networks"]["ema"][k]) for k in shipped)


def test_debiased_momentum_is_the_bias_corrected_average():
    """Updates with debiased_momentum give S_n / (1 - m^n), S_n = m S_(n-1) + (1 - m) θ_n, S_0 = 0: the initial
    weights get no weight at all (the failure on tiny sets was a plain EMA keeping m^n of them)."""
    m, thetas = 0.99, [3.0, -1.0, 2.0, 5.0, 0.5]
    avg, s = 123.0, 0.0  # avg starts anywhere: the first update is a copy
    for n, theta in enumerate(thetas, start=1):
        mn = debiased_momentum(m, n)
        avg = mn * avg + (1 - mn) * theta
        s = m * s + (1 - m) * theta
        assert abs(avg - s / (1 - m ** n)) < 1e-12
    assert debiased_momentum(m, 0) == 0.0 and debiased_momentum(0.0, 7) == 0.0
    assert abs(debiased_momentum(m, 10_000) - m) < 1e-12  # long runs: the plain EMA
