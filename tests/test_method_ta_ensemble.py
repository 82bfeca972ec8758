"""Weighted TA ensemble (Ganta, Das Gupta, Sheng, arXiv 2206.12005): the vector of tests/reference/ref_others.py
section 3, reductions to single-TA KD, DE weights on the simplex and deterministic, the end-to-end regime, and
the errors."""
import numpy as np
import pytest
import torch

from edgedistill.config import TermConfig, load_recipe
from edgedistill.errors import UserInputError
from edgedistill.losses import kd
from edgedistill.losses.multiteacher import average_probs
from edgedistill.losses.response import kd_to_distribution
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods.ta_ensemble import TAEnsemble, de_weights, ensemble_objective, log_target
from edgedistill.models.ensemble import ProbabilityEnsemble
from edgedistill.registry import METHODS

from helpers import tiny_net, toy_splits

ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=torch.float64)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=torch.float64)
ZTA = [ZT, ZT.flip(1), ZT * 0.5]  # tests/reference/ref_others.py: the three TAs
W = [0.5, 0.3, 0.2]
KD_TERMS = [{"loss": "ce", "weight": 0.1}, {"loss": "kd", "weight": 0.9, "temperature": 4}]


def test_registered():
    assert METHODS.get("ta_ensemble") is TAEnsemble


def test_spec_vector_probability_and_logit_space():
    target = average_probs(ZTA, 4.0, W)
    assert float(kd_to_distribution(ZS, target, 4.0)) == pytest.approx(0.314327, abs=1e-6)
    # What the kd term reads: T log p_ens, whose softmax at T is p_ens.
    assert torch.allclose(torch.softmax(log_target(target, 4.0) / 4.0, 1), target, atol=1e-12)
    assert float(kd(ZS, log_target(target, 4.0), 4.0)) == pytest.approx(0.314327, abs=1e-6)
    # The logit-space alternative (not what we use), same weights.
    z_ens = sum(w * z for w, z in zip(W, ZTA))
    assert float(kd(ZS, z_ens, 4.0)) == pytest.approx(0.287366, abs=1e-6)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_one_hot_weights_are_single_ta_kd(k):
    onehot = [1.0 if j == k else 0.0 for j in range(3)]
    got = kd_to_distribution(ZS, average_probs(ZTA, 4.0, onehot), 4.0)
    assert float(got) == pytest.approx(float(kd(ZS, ZTA[k], 4.0)), abs=1e-12)


def test_identical_tas_make_weights_irrelevant():
    same = [ZT, ZT.clone(), ZT.clone()]
    ref = float(kd(ZS, ZT, 4.0))
    for w in ([0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [0.0, 0.0, 1.0]):
        assert float(kd_to_distribution(ZS, average_probs(same, 4.0, w), 4.0)) == pytest.approx(ref, abs=1e-12)
    # ... and the DE objective is flat in w: any weights give the same accuracy and NLL.
    probs = np.stack([torch.softmax(z, 1).numpy() for z in same])
    y = np.array([1, 2, 0])
    vals = {round(ensemble_objective(np.array(u), probs, y, 1e-3), 12) for u in ([1, 0, 0], [0.2, 0.7, 0.1], [1, 1, 1])}
    assert len(vals) == 1


def _val_case(n=60, c=3, seed=0):
    """TA0 is right on every sample, TA1 and TA2 are confidently wrong on most: DE must find acc 1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    good = torch.nn.functional.one_hot(y, c).double() * 2.0 + torch.randn(n, c, generator=g, dtype=torch.float64) * 0.1
    bad1 = torch.nn.functional.one_hot((y + 1) % c, c).double() * 6.0
    bad2 = torch.nn.functional.one_hot((y + 2) % c, c).double() * 6.0
    bad2[: n // 4] = good[: n // 4] * 3  # TA2 right on a quarter
    return [bad1, good, bad2], y


def test_de_weights_on_simplex_and_reach_best_accuracy():
    logits, y = _val_case()
    w = de_weights(logits, y, seed=0, maxiter=30)
    assert w.shape == (3,) and (w >= 0).all() and float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    acc = float((average_probs(logits, 1.0, w).argmax(1) == y).double().mean())
    uniform = float((average_probs(logits, 1.0).argmax(1) == y).double().mean())
    assert acc == 1.0 > uniform
    assert int(w.argmax()) == 1


def test_de_is_deterministic_with_the_seed():
    logits, y = _val_case(seed=3)
    a, b = de_weights(logits, y, seed=7, maxiter=20), de_weights(logits, y, seed=7, maxiter=20)
    assert torch.equal(a, b)


def _teachers(splits, n_tas=3, widths=(8, 12, 16)):
    recipe = load_recipe({
        "data": {"name": "synthetic"}, "student": {"model": "cnn1d"},
        "teachers": [{"name": "teacher", "model": "fcn"}] + [
            {"name": f"ta{k + 1}", "model": "cnn1d", "distill_from": "teacher", "terms": KD_TERMS} for k in range(n_tas)
        ],
    })
    c = splits.info.n_outputs
    nets = [tiny_net(classes=c, width=32)] + [tiny_net(classes=c, width=widths[k % len(widths)]) for k in range(n_tas)]
    return [TeacherNet(s.name, m, s) for s, m in zip(recipe.teacher_specs(), nets)]


def test_regime_end_to_end():
    torch.manual_seed(0)
    splits = toy_splits()
    teachers = _teachers(splits)
    method = TAEnsemble(tiny_net(classes=3), splits.info, teachers, de_maxiter=10)
    assert method.assistants == ["ta1", "ta2", "ta3"]  # the top teacher only trains the TAs
    method.setup(splits.train, torch.device("cpu"), val=splits.val)
    w = method.weights
    assert (w >= 0).all() and float(w.sum()) == pytest.approx(1.0)
    ens = method.evaluated()["weighted TA ensemble"]
    assert isinstance(ens, ProbabilityEnsemble) and torch.allclose(ens.weights.double(), w, atol=1e-7)
    assert not ens.training and all(not m.training for m in ens.members)
    assert method.describe()["weights"] == dict(zip(["ta1", "ta2", "ta3"], w.tolist()))
    # The KD target of row i is the weighted average of the TAs' softened outputs on row i.
    batch = splits.train.batch(torch.arange(10))
    with torch.no_grad():
        expected = average_probs([t.model(batch["x"]) for t in teachers[1:]], 4.0, w)
    assert torch.allclose(method._targets[:10], expected, atol=1e-6)
    assert torch.allclose(torch.softmax(method.teacher_logits(batch, Step(0, 0, 1, 1)) / 4.0, 1), expected, atol=1e-6)
    terms = method.training_step(batch, Step(0, 0, 1, 1))
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in method.networks["student"].parameters())
    assert all(p.grad is None and not p.requires_grad for t in teachers[1:] for p in t.model.parameters())
    assert all(p.grad is None for p in teachers[0].model.parameters())  # the top teacher is not used at all


def test_fixed_one_hot_weights_give_single_ta_kd_in_the_regime():
    splits = toy_splits()
    teachers = _teachers(splits)
    student = tiny_net(classes=3)
    method = TAEnsemble(student, splits.info, teachers, [TermConfig(loss="kd", weight=1.0, temperature=4.0)], weights=[0, 1, 0])
    method.setup(splits.train, torch.device("cpu"), val=splits.val)
    student.eval()  # same student output for both computations
    batch = splits.train.batch(torch.arange(12))
    got = method.training_step(batch, Step(0, 0, 1, 1))["kd"].detach()
    with torch.no_grad():
        want = kd(student(batch["x"]), teachers[2].model(batch["x"]), 4.0)
    assert float(got) == pytest.approx(float(want), abs=1e-6)


def test_members_param_and_errors():
    splits = toy_splits()
    teachers = _teachers(splits)
    m = TAEnsemble(tiny_net(classes=3), splits.info, teachers, members=["teacher", "ta2"])
    assert m.assistants == ["teacher", "ta2"]
    with pytest.raises(UserInputError, match=r"^method\.params\.members: no teacher named 'ta9'"):
        TAEnsemble(tiny_net(classes=3), splits.info, teachers, members=["ta1", "ta9"])
    with pytest.raises(UserInputError, match=r"^method\.params\.members: .*at least two"):
        TAEnsemble(tiny_net(classes=3), splits.info, teachers, members=["ta1"])
    with pytest.raises(UserInputError, match=r"^teachers: ta_ensemble needs at least two assistants"):
        TAEnsemble(tiny_net(classes=3), splits.info, _teachers(splits, n_tas=1))
    with pytest.raises(UserInputError, match=r"^method\.params\.weights"):
        TAEnsemble(tiny_net(classes=3), splits.info, teachers, weights=[1, 0])
    # The loss weights and T are the recipe's terms now.
    with pytest.raises(UserInputError, match=r"^method\.params\.alpha: unknown parameter"):
        TAEnsemble(tiny_net(classes=3), splits.info, teachers, alpha=0.9)
    with pytest.raises(UserInputError, match=r"^method\.params\.temperature: unknown parameter"):
        TAEnsemble(tiny_net(classes=3), splits.info, teachers, temperature=4)


def test_unknown_param_rejected_and_terms_taken_from_recipe():
    splits = toy_splits()
    teachers = _teachers(splits)
    base = {"data": {"name": "synthetic"}, "student": {"model": "cnn1d"},
            "teachers": [{"name": t.name, **t.config.model_dump(exclude={"name"})} for t in teachers]}
    bad = load_recipe({**base, "method": {"name": "ta_ensemble", "params": {"memebers": ["ta1"]}}})
    with pytest.raises(UserInputError, match=r"method\.params\.memebers"):
        TAEnsemble.from_recipe(bad, student=tiny_net(classes=3), teacher=None, info=splits.info, teachers=teachers)
    terms = [{"loss": "ce", "weight": 0.3}, {"loss": "kd", "weight": 0.7, "temperature": 2}]
    recipe = load_recipe({**base, "method": {"name": "ta_ensemble", "terms": terms}})
    method = TAEnsemble.from_recipe(recipe, student=tiny_net(classes=3), teacher=None, info=splits.info, teachers=teachers)
    assert [t.describe() for t in method.terms] == [{"loss": "ce", "weight": 0.3},
                                                    {"loss": "kd", "weight": 0.7, "temperature": 2.0}]
    assert method.temperature == 2.0  # the ensemble is softened at the terms' temperature
    two = load_recipe({**base, "method": {"name": "ta_ensemble", "terms": [
        {"loss": "kd", "temperature": 2}, {"loss": "reverse_kd", "temperature": 4}]}})
    with pytest.raises(UserInputError, match=r"^method\.terms: .* one temperature, but its terms use \[2.0, 4.0\]"):
        TAEnsemble.from_recipe(two, student=tiny_net(classes=3), teacher=None, info=splits.info, teachers=teachers)


def test_default_terms_and_the_terms_temperature_softens_the_ensemble():
    splits = toy_splits()
    teachers = _teachers(splits)
    method = TAEnsemble(tiny_net(classes=3), splits.info, teachers, weights=[2, 1, 1])
    assert [t.describe() for t in method.terms] == [{"loss": "ce", "weight": 0.1},
                                                    {"loss": "kd", "weight": 0.9, "temperature": 4.0}]
    assert method.augmentation_support == frozenset() and method.temperature == 4.0
    probe = splits.train.batch(torch.arange(4))  # before setup (a loss module's shape probe): uniform, live
    with torch.no_grad():
        uniform = average_probs([t.model(probe["x"]) for t in teachers[1:]], 4.0)
        assert torch.allclose(torch.softmax(method.teacher_logits(probe, None, use_cache=False) / 4.0, 1), uniform, atol=1e-6)
    student = tiny_net(classes=3)
    terms = [TermConfig(loss="ce", weight=0.25), TermConfig(loss="kd", weight=0.75, temperature=2.0)]
    method = TAEnsemble(student, splits.info, teachers, terms, weights=[2, 1, 1])
    method.setup(splits.train, torch.device("cpu"), val=splits.val)
    student.eval()
    batch = splits.train.batch(torch.arange(12))
    got = method.training_step(batch, Step(0, 0, 1, 1))
    with torch.no_grad():
        s = student(batch["x"])
        q = average_probs([t.model(batch["x"]) for t in teachers[1:]], 2.0, [0.5, 0.25, 0.25])
    assert method.describe()["teacher_cached"] is True
    assert float(got["kd"].detach()) == pytest.approx(0.75 * float(kd_to_distribution(s, q, 2.0)), rel=1e-5)
    assert float(got["ce"].detach()) == pytest.approx(0.25 * float(torch.nn.functional.cross_entropy(s, batch["y"])), rel=1e-6)
