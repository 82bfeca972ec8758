"""tfkd (Tf-KD_reg): the virtual teacher, the test vector of tests/reference/ref_others.py section 11, the
label-smoothing equivalence at T = 1, errors, and one end-to-end run."""
import json

import pytest
import torch

import edgedistill
from edgedistill.config import TermConfig
from edgedistill.errors import UserInputError
from edgedistill.losses.response import kd_to_distribution
from edgedistill.methods.base import Step
from edgedistill.methods.tfkd import TeacherFreeKD, soften, virtual_teacher
from tests.helpers import tiny_net, toy_splits

# tests/reference/ref_others.py: the shared inputs ZS, Y; the section 11 Tf-KD_reg test vector.
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=torch.float64)
Y = torch.tensor([1, 2, 0])

RECIPE = {
    "name": "tfkd",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "tfkd", "params": {"correct_prob": 0.9},
               "terms": [{"loss": "ce", "weight": 0.7}, {"loss": "kd", "weight": 0.3, "temperature": 4}]},
    "train": {"epochs": 1, "batch_size": 16},
    "engine": {"progress": False},
}


def test_virtual_teacher_puts_a_on_the_true_class_and_spreads_the_rest():
    p = virtual_teacher(Y, 4, a=0.99)
    assert p.shape == (3, 4) and torch.allclose(p.sum(1), torch.ones(3, dtype=p.dtype))
    assert torch.all(p[torch.arange(3), Y] == 0.99)
    off = p.masked_select(torch.ones_like(p, dtype=torch.bool).scatter_(1, Y[:, None], False))
    assert torch.allclose(off, torch.full_like(off, 0.01 / 3))


def test_spec_vector_kl_of_the_virtual_teacher_at_t1():
    p = virtual_teacher(Y, 4, a=0.99, dtype=torch.float64)
    value = kd_to_distribution(ZS, soften(p, 1.0), temperature=1.0)
    assert value.item() == pytest.approx(0.424475, abs=1e-6)


def test_soften_is_the_identity_at_t1_keeps_the_order_and_flattens_with_t():
    p = virtual_teacher(Y, 4, a=0.9).double()
    assert torch.allclose(soften(p, 1.0), p, atol=1e-12)
    hot = soften(p, 10.0)
    assert torch.all(hot.argmax(1) == Y) and torch.allclose(hot.sum(1), torch.ones(3, dtype=hot.dtype))
    # logits log p / T: the log-odds of true vs. other class shrink by exactly T
    odds = lambda q: torch.log(q[0, 1] / q[0, 0])  # noqa: E731
    assert odds(hot).item() == pytest.approx(odds(p).item() / 10, rel=1e-9)
    assert torch.allclose(soften(p, 1e6), torch.full_like(p, 0.25), atol=1e-5)


def test_at_t1_the_loss_has_the_gradient_of_ce_to_smoothed_labels():
    """(1-alpha) CE + alpha KL(p^d || p) = CE to q = (1-alpha) onehot + alpha p^d, up to a constant (the paper's point)."""
    splits = toy_splits()
    alpha, a = 0.4, 0.8
    m = TeacherFreeKD(tiny_net(), splits.info, _terms(alpha, 1.0), correct_prob=a)
    batch = splits.train.batch(torch.arange(8))
    terms = m.training_step(batch, Step(0, 0, 1, 1))
    params = list(m.networks["student"].parameters())
    ours = torch.autograd.grad(sum(terms.values()), params)
    z = m.networks["student"](batch["x"])
    q = (1 - alpha) * torch.nn.functional.one_hot(batch["y"], 3).float() + alpha * virtual_teacher(batch["y"], 3, a)
    smoothed = -(q * torch.log_softmax(z, 1)).sum(1).mean()
    want = torch.autograd.grad(smoothed, params)
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(ours, want))


def _terms(alpha, temperature):
    return [TermConfig(loss="ce", weight=1 - alpha), TermConfig(loss="kd", weight=alpha, temperature=temperature)]


def test_default_terms_are_the_papers_alpha_and_temperature():
    m = TeacherFreeKD(tiny_net(), toy_splits().info)
    assert [t.describe() for t in m.terms] == [{"loss": "ce", "weight": 0.9},
                                               {"loss": "kd", "weight": 0.1, "temperature": 20.0}]


def test_the_virtual_teacher_survives_a_equal_to_one():
    splits = toy_splits()
    m = TeacherFreeKD(tiny_net(), splits.info, correct_prob=1.0)
    terms = m.training_step(splits.train.batch(torch.arange(8)), Step(0, 0, 1, 1))
    assert all(torch.isfinite(v) for v in terms.values())


def test_alpha_zero_is_the_student_alone_and_terms_are_weighted():
    splits = toy_splits()
    torch.manual_seed(0)
    net = tiny_net()
    batch = splits.train.batch(torch.arange(8))
    ce = torch.nn.functional.cross_entropy(net(batch["x"]), batch["y"])
    t0 = TeacherFreeKD(net, splits.info, _terms(0.0, 20.0)).training_step(batch, Step(0, 0, 1, 1))
    assert t0["kd"].item() == 0.0 and t0["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    t1 = TeacherFreeKD(net, splits.info, _terms(0.25, 2.0), correct_prob=0.9).training_step(batch, Step(0, 0, 1, 1))
    assert t1["ce"].item() == pytest.approx(0.75 * ce.item(), rel=1e-6)
    target = soften(virtual_teacher(batch["y"], 3, 0.9), 2.0)
    assert t1["kd"].item() == pytest.approx(0.25 * kd_to_distribution(net(batch["x"]), target, 2.0).item(), rel=1e-6)


@pytest.mark.parametrize("params, message", [
    ({"alpha": 0.5}, r"method.params.alpha: unknown parameter"),  # weights are recipe terms
    ({"correct_prob": True}, r"method.params.correct_prob: .*valid number"),
    ({"correct_prob": 1.5}, r"method.params.correct_prob: .*less than or equal to 1"),
    ({"correct_prob": 0.2}, r"method.params.correct_prob: expected a number in \[1/C, 1\]"),
    ({"a": 0.9}, r"method.params.a: unknown parameter"),
])
def test_bad_params_fail_before_training(tmp_path, params, message):
    with pytest.raises(UserInputError, match=message):
        edgedistill.run({**RECIPE, "method": {"name": "tfkd", "params": params}}, out=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


def test_a_teacher_section_is_refused(tmp_path):
    recipe = {**RECIPE, "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1}}}
    with pytest.raises(UserInputError, match=r"^teacher: method 'tfkd' uses no pre-trained teacher \(its teacher is built "
                                             r"from the labels\); remove the 'teacher'/'teachers' section"):
        edgedistill.run(recipe, out=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()  # refused while planning, before anything is trained or written


def test_end_to_end_run_logs_both_terms_and_has_no_teacher(tmp_path):
    summary = edgedistill.run(RECIPE, out=tmp_path / "run", progress=False)
    assert [r["role"] for r in summary["rows"]] == ["student alone", "method"]
    line = json.loads((tmp_path / "run" / "tfkd" / "seed0" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line["train"]) == {"ce", "kd", "total"} and line["train"]["kd"] > 0
