"""multi_teacher: the averaged-teachers target (golden TA-ensemble vectors of tests/reference/ref_others.py section
3; Ganta, Das Gupta, Sheng, arXiv 2206.12005), its properties, the method on toy data (gradients, cache, ensemble
row) and its errors."""
import json

import pytest
import torch

import edgedistill
from edgedistill.config import TeacherConfig, TermConfig
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kd, kd_to_distribution
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods.multi_teacher import MultiTeacher, ensemble_target
from edgedistill.models.ensemble import ProbabilityEnsemble
from tests.helpers import tiny_net, toy_splits

D = torch.float64
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=D)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=D)
ZTA = [ZT, ZT.flip(1), 0.5 * ZT]
W = torch.tensor([0.5, 0.3, 0.2], dtype=D)


def test_golden_prob_and_logit_space_targets():
    # tests/reference/ref_others.py section 3: WTA_KD_T4_prob_avg and WTA_KD_T4_logit_avg.
    probs = kd_to_distribution(ZS, ensemble_target(ZTA, 4.0, "probs", W), 4.0)
    logits = kd_to_distribution(ZS, ensemble_target(ZTA, 4.0, "logits", W), 4.0)
    assert abs(probs.item() - 0.314327) < 1e-6
    assert abs(logits.item() - 0.287366) < 1e-6


@pytest.mark.parametrize("space", ["probs", "logits"])
def test_one_hot_weights_give_single_teacher_kd_and_scale_does_not_matter(space):
    for k in range(3):
        onehot = torch.zeros(3, dtype=D)
        onehot[k] = 1.0
        target = ensemble_target(ZTA, 4.0, space, onehot)
        assert torch.allclose(kd_to_distribution(ZS, target, 4.0), kd(ZS, ZTA[k], 4.0), atol=1e-12)
    assert torch.allclose(ensemble_target(ZTA, 4.0, space, W), ensemble_target(ZTA, 4.0, space, 7 * W), atol=1e-12)
    same = ensemble_target([ZT, ZT, ZT], 2.0, space, W)  # identical teachers: weights are irrelevant
    assert torch.allclose(same, torch.softmax(ZT / 2.0, dim=1), atol=1e-12)
    assert torch.allclose(ensemble_target(ZTA, 4.0, space, W).sum(1), torch.ones(3, dtype=D))


def _teachers(n=3, views=None):
    views = views or ["x"] * n
    out = []
    for i in range(n):
        torch.manual_seed(10 + i)
        out.append(TeacherNet(f"t{i}", tiny_net(width=6), TeacherConfig(model="tiny", view=views[i], name=f"t{i}")))
    return out


def _batch(splits, n=8):
    return {k: v for k, v in splits.train.batch(torch.arange(n)).items()}


def test_method_loss_matches_the_formula_and_only_the_student_learns():
    splits = toy_splits()
    teachers = _teachers()
    torch.manual_seed(0)
    terms = [TermConfig(loss="ce", weight=0.3), TermConfig(loss="kd", weight=0.7, temperature=3.0)]
    method = MultiTeacher(tiny_net(), splits.info, teachers, terms, weights=[2, 1, 1])
    method.setup(splits.train, torch.device("cpu"))
    batch = _batch(splits)
    terms = method.training_step(batch, Step(0, 0, 1, 1))
    assert set(terms) == {"ce", "kd"}
    with torch.no_grad():
        s = method.networks["student"](batch["x"])
        z = [t.model(batch["x"]) for t in teachers]
    q = 0.5 * torch.softmax(z[0] / 3, 1) + 0.25 * torch.softmax(z[1] / 3, 1) + 0.25 * torch.softmax(z[2] / 3, 1)
    kl = (q * (q.log() - torch.log_softmax(s / 3, 1))).sum(1).mean()
    expected = 0.3 * torch.nn.functional.cross_entropy(s, batch["y"]) + 0.7 * 9 * kl
    assert torch.allclose(sum(terms.values()), expected, atol=1e-5)
    sum(terms.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.networks["student"].parameters() if p.dim() > 1)
    assert all(p.grad is None and not p.requires_grad for t in teachers for p in t.model.parameters())


def test_cached_teacher_outputs_equal_running_the_teachers():
    splits = toy_splits()
    batch = _batch(splits)
    losses = []
    for cache in (True, False):
        torch.manual_seed(0)
        method = MultiTeacher(tiny_net(), splits.info, _teachers(), [], cache_teacher=cache)
        method.setup(splits.train, torch.device("cpu"))
        losses.append(method.training_step(batch, Step(0, 0, 1, 1))["kd"])
    assert torch.allclose(losses[0], losses[1], atol=1e-6)


def test_ensemble_row_only_when_every_teacher_reads_x():
    splits = toy_splits()
    method = MultiTeacher(tiny_net(), splits.info, _teachers(), [])
    method.setup(splits.train, torch.device("cpu"))
    ens = method.evaluated()["teacher ensemble"]
    assert isinstance(ens, ProbabilityEnsemble) and not ens.training
    splits.info.views["pi"] = splits.info.views["x"]
    other = MultiTeacher(tiny_net(), splits.info, _teachers(views=["x", "pi", "x"]), [])
    for part in (splits.train, splits.val, splits.test):
        part.views["pi"] = part.views["x"]
    other.setup(splits.train, torch.device("cpu"))
    assert other.evaluated() == {}


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": [1, 2]}, r"method.params.weights: expected 3"),
    ({"weights": [1, -1, 1]}, r"method.params.weights"),
    ({"space": "logit"}, r"method.params.space"),
    ({"alpha": 0.5}, r"method.params.alpha: unknown parameter"),  # weights are recipe terms
])
def test_bad_params(kwargs, message):
    splits = toy_splits()
    with pytest.raises(UserInputError, match=message):
        MultiTeacher(tiny_net(), splits.info, _teachers(), [], **kwargs)


def test_default_terms_are_the_quickstart_weights_and_logit_space_reads_mean_logits():
    splits = toy_splits()
    teachers = _teachers()
    method = MultiTeacher(tiny_net(), splits.info, teachers, [], space="logits")
    assert [t.describe() for t in method.terms] == [{"loss": "ce", "weight": 0.1},
                                                    {"loss": "kd", "weight": 0.9, "temperature": 4.0}]
    method.setup(splits.train, torch.device("cpu"))
    batch = _batch(splits)
    with torch.no_grad():
        mean = sum(t.model(batch["x"]) for t in teachers) / 3
    torch.testing.assert_close(method.teacher_logits(batch, None), mean)


def test_probability_space_needs_one_temperature_and_its_target_softens_to_the_average():
    splits = toy_splits()
    two = [TermConfig(loss="kd", temperature=2.0), TermConfig(loss="reverse_kd", temperature=4.0)]
    with pytest.raises(UserInputError, match=r"method.terms: .* one temperature, but its terms use \[2.0, 4.0\]"):
        MultiTeacher(tiny_net(), splits.info, _teachers(), two)
    teachers = _teachers()
    method = MultiTeacher(tiny_net(), splits.info, teachers, [TermConfig(loss="kd", temperature=2.0)])
    method.setup(splits.train, torch.device("cpu"))
    batch = _batch(splits)
    with torch.no_grad():
        q = sum(torch.softmax(t.model(batch["x"]) / 2.0, 1) for t in teachers) / 3
    torch.testing.assert_close(torch.softmax(method.teacher_logits(batch, None) / 2.0, 1), q)


def test_needs_two_teachers():
    splits = toy_splits()
    with pytest.raises(UserInputError, match=r"teachers: method 'multi_teacher' needs at least 2"):
        MultiTeacher(tiny_net(), splits.info, _teachers(1))


RECIPE = {
    "name": "mt",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "teachers": [{"name": "a", "model": "fcn", "width": 0.125, "seed": 0, "train": {"epochs": 1, "batch_size": 16}},
                 {"name": "b", "model": "fcn", "width": 0.125, "seed": 1, "train": {"epochs": 1, "batch_size": 16}}],
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "multi_teacher", "terms": [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 2}]},
    "train": {"epochs": 1, "batch_size": 16},
    "baseline": False,
    "engine": {"progress": False},
}


def test_recipe_end_to_end_reports_the_teacher_ensemble(tmp_path):
    summary = edgedistill.run(RECIPE, out=tmp_path / "run", progress=False)
    assert [r["role"] for r in summary["rows"]] == ["teacher", "teacher", "method", "also trained (not the deliverable)"]
    assert summary["rows"][-1]["model"] == "teacher ensemble"
    line = json.loads((tmp_path / "run" / "multi_teacher" / "seed0" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line["train"]) == {"ce", "kd", "total"}


@pytest.mark.parametrize("change, message", [
    ({"teachers": [], "teacher": {"model": "fcn", "width": 0.125, "train": {"epochs": 1}}},
     r"teachers: method 'multi_teacher' needs at least 2"),
    ({"method": {"name": "multi_teacher", "params": {"spce": "probs"}}},
     r"method.params.spce: unknown parameter.*Did you mean 'space'"),
])
def test_recipe_errors_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(UserInputError, match=message):
        edgedistill.run({**RECIPE, **change}, out=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()
