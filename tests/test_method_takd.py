"""TAKD (Mirzadeh et al., AAAI 2020, arXiv 1902.03393): the loss against the vector of
tests/reference/ref_others.py section 2 in both reductions (the paper's and the official code's), the chain
check, and the student learning from the last link only."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.config import load_recipe
from edgedistill.data.dataset import DataSplits, TensorData
from edgedistill.errors import UserInputError
from edgedistill.losses import ce, kd
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods.takd import TAKD, check_chain
from edgedistill.registry import METHODS

from helpers import tiny_net, toy_splits

# tests/reference/ref_others.py: ZS, ZT, Y
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=torch.float64)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=torch.float64)
Y = torch.tensor([1, 2, 0])
LAM, T = 0.5, 4.0


class Lookup(nn.Module):
    """A 'network' whose output for input row i is row i of fixed logits (x holds the row number)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0, 0].long()]


def _recipe(teachers: list[dict], terms=None):
    terms = [{"loss": "ce", "weight": 1 - LAM}, {"loss": "kd", "weight": LAM, "temperature": T}] if terms is None else terms
    return load_recipe({"data": {"name": "synthetic"}, "student": {"model": "cnn1d"}, "teachers": teachers,
                        "method": {"name": "takd", "terms": terms}})


KD_TERMS = [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]
CHAIN = [{"name": "teacher", "model": "fcn"},
         {"name": "ta1", "model": "cnn1d", "distill_from": "teacher", "terms": KD_TERMS},
         {"name": "ta2", "model": "cnn1d", "distill_from": "ta1", "terms": KD_TERMS}]


def _nets(recipe, info, models=None):
    specs = recipe.teacher_specs()
    models = models or [tiny_net(classes=info.n_outputs) for _ in specs]
    return [TeacherNet(s.name, m, s) for s, m in zip(specs, models)]


def _build(recipe, splits, models=None):
    teachers = _nets(recipe, splits.info, models)
    student = tiny_net(classes=splits.info.n_outputs)
    return TAKD.from_recipe(recipe, student=student, teacher=teachers[-1].model, info=splits.info,
                            train=splits.train, teachers=teachers), teachers


def test_registered():
    assert METHODS.get("takd") is TAKD


def test_spec_vector_batchmean_and_code_forms():
    paper = (1 - LAM) * ce(ZS, Y) + LAM * kd(ZS, ZT, T)
    assert float(paper) == pytest.approx(0.365510, abs=1e-6)
    # The official code: nn.KLDivLoss()'s default reduction 'mean' averages over batch x classes elements.
    kl_code = F.kl_div(F.log_softmax(ZS / T, 1), F.softmax(ZT / T, 1), reduction="none").mean()
    code = (1 - LAM) * ce(ZS, Y) + LAM * T * T * kl_code
    assert float(code) == pytest.approx(0.269135, abs=1e-6)
    # The two KD terms differ by exactly the class count.
    assert float(T * T * kl_code * ZS.shape[1]) == pytest.approx(float(kd(ZS, ZT, T)), abs=1e-12)


def test_method_loss_is_the_paper_form_on_the_vector():
    """The method's summed terms on the reference logits (student and last link as lookups) give 0.365510."""
    recipe = _recipe(CHAIN[:2])
    x = torch.arange(3, dtype=torch.float64).view(3, 1, 1)
    data = TensorData({"x": x}, Y)
    info = replace(toy_splits().info, n_outputs=4, input_shape=(1, 1), views={"x": (1, 1)})
    splits = DataSplits(data, data, data, info)
    teachers = _nets(recipe, info, [Lookup(ZT), Lookup(ZT)])
    method = TAKD.from_recipe(recipe, student=Lookup(ZS), teacher=teachers[-1].model, info=info, train=data, teachers=teachers)
    method.setup(splits.train, torch.device("cpu"))
    terms = method.training_step({"x": x, "y": Y, "index": torch.arange(3)}, Step(0, 0, 1, 1))
    assert float(sum(terms.values()).detach()) == pytest.approx(0.365510, abs=1e-6)
    # lambda = 0 is CE alone, lambda = 1 the KD term alone
    assert float(terms["ce"].detach()) == pytest.approx((1 - LAM) * float(ce(ZS, Y)), abs=1e-12)
    assert float(terms["kd"].detach()) == pytest.approx(LAM * float(kd(ZS, ZT, T)), abs=1e-12)


def test_student_learns_from_the_last_link_only():
    splits = toy_splits()
    recipe = _recipe(CHAIN)
    method, teachers = _build(recipe, splits)
    assert method.teacher is teachers[-1].model
    method.setup(splits.train, torch.device("cpu"))
    expected = torch.cat([teachers[-1].model(b["x"]) for b in splits.train.batches(256)])
    cached = method.teachers.cached_stack()[-1]  # the one teacher the student distils from, on every training row
    assert len(method.teachers) == 1 and torch.allclose(cached, expected)
    assert not torch.allclose(cached, torch.cat([teachers[0].model(b["x"]) for b in splits.train.batches(256)]))
    batch = splits.train.batch(torch.arange(8))
    total = sum(method.training_step(batch, Step(0, 0, 1, 1)).values())
    total.backward()
    assert all(p.grad is not None for p in method.networks["student"].parameters())
    assert all(p.grad is None and not p.requires_grad for t in teachers[-1:] for p in t.model.parameters())
    assert method.describe()["chain"] == ["teacher", "ta1", "ta2", "student"]


def test_chain_errors_name_the_key():
    splits = toy_splits()
    broken = [CHAIN[0], CHAIN[1], {**CHAIN[2], "distill_from": "teacher"}]  # ta2 skips ta1: not a chain
    with pytest.raises(UserInputError, match=r"teachers\[2\]\.distill_from: .*must distil from 'ta1'"):
        _build(_recipe(broken), splits)
    side = [CHAIN[0], CHAIN[1], {"name": "other", "model": "fcn"}]  # a second label-trained teacher
    with pytest.raises(UserInputError, match=r"teachers\[2\]\.distill_from: .*got None"):
        _build(_recipe(side), splits)
    with pytest.raises(UserInputError, match=r"^teachers: method 'takd' needs a chain of at least two"):
        _build(_recipe(CHAIN[:1]), splits)
    with pytest.raises(UserInputError, match=r"^method\.terms: takd"):
        _build(_recipe(CHAIN, terms=[]), splits)
    with pytest.raises(UserInputError, match="teachers: "):
        check_chain(None)
