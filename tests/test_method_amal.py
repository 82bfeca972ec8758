"""amal: the reference meta-gradient vector (tests/reference/ref_others.py section 7), finite differences on a
BatchNorm network, the zero-meta-gradient property, running statistics untouched by the look-ahead, weights learned
and checkpointed, errors, one run."""
import json

import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.errors import UserInputError
from edgedistill.methods.amal import AdaptiveMixing, meta_gradient, mixed_loss, per_sample_losses
from edgedistill.methods.base import Step
from tests.helpers import tiny_net, toy_splits

# tests/reference/ref_others.py section 7 (AMAL, arXiv 2202.03250): linear softmax model, float64.
XTR = torch.tensor([[1.0, 0.5, -0.2], [0.3, -1.0, 0.8]], dtype=torch.float64)
YTR = torch.tensor([0, 2])
TTR = torch.tensor([[1.0, 0.2, -0.5], [-0.3, 0.1, 0.9]], dtype=torch.float64)
XV = torch.tensor([[0.2, 0.4, -0.6]], dtype=torch.float64)
YV = torch.tensor([1])
LAM = torch.tensor([0.3, 0.8], dtype=torch.float64)


def linear_w0() -> nn.Module:
    net = nn.Linear(3, 3, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(0.5 * torch.sin(0.7 * torch.arange(9, dtype=torch.float64)).reshape(3, 3))
    return net


def val_after_explicit_step(net: nn.Module, x, y, t, lam, xv, yv, eta, temp) -> torch.Tensor:
    """L_val(θ - η ∇L_train) by plain autograd on a deep copy: the reference the torch.func version must equal."""
    import copy

    twin = copy.deepcopy(net)
    for m in twin.modules():  # batch statistics, as the look-ahead uses
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
    params = list(twin.parameters())
    grads = torch.autograd.grad(mixed_loss(twin(x), y, t, lam, temp), params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= eta * g
        return torch.nn.functional.cross_entropy(twin(xv), yv)


def test_spec_vector_meta_gradient_and_losses():
    net = linear_w0()
    assert mixed_loss(net(XTR), YTR, TTR, LAM, 2.0).item() == pytest.approx(0.569491, abs=1e-6)
    g, val = meta_gradient(net, XTR, YTR, TTR, LAM, XV, YV, lookahead_lr=0.5, temperature=2.0)
    assert val.item() == pytest.approx(0.896423, abs=1e-6)
    assert torch.allclose(g, torch.tensor([-0.034843, 0.047389], dtype=torch.float64), atol=1e-6)


def test_spec_vector_equals_central_finite_differences():
    net, eps = linear_w0(), 1e-6
    g, _ = meta_gradient(net, XTR, YTR, TTR, LAM, XV, YV, lookahead_lr=0.5, temperature=2.0)
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = eps
        plus = val_after_explicit_step(net, XTR, YTR, TTR, LAM + e, XV, YV, 0.5, 2.0)
        minus = val_after_explicit_step(net, XTR, YTR, TTR, LAM - e, XV, YV, 0.5, 2.0)
        assert g[i].item() == pytest.approx(((plus - minus) / (2 * eps)).item(), abs=1e-8)


def test_finite_differences_on_a_batchnorm_network_and_running_stats_untouched():
    torch.manual_seed(0)
    net = tiny_net().double().train()
    x, y = torch.randn(6, 3, 16, dtype=torch.float64), torch.randint(0, 3, (6,))
    t = torch.randn(6, 3, dtype=torch.float64)
    xv, yv = torch.randn(5, 3, 16, dtype=torch.float64), torch.randint(0, 3, (5,))
    lam = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g, val = meta_gradient(net, x, y, t, lam, xv, yv, lookahead_lr=0.3, temperature=3.0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # no parameter or buffer moved
    assert val.item() == pytest.approx(val_after_explicit_step(net, x, y, t, lam, xv, yv, 0.3, 3.0).item(), rel=1e-10)
    eps = 1e-6
    for i in range(6):
        e = torch.zeros(6, dtype=torch.float64)
        e[i] = eps
        fd = (val_after_explicit_step(net, x, y, t, lam + e, xv, yv, 0.3, 3.0)
              - val_after_explicit_step(net, x, y, t, lam - e, xv, yv, 0.3, 3.0)) / (2 * eps)
        assert g[i].item() == pytest.approx(fd.item(), abs=1e-7)
    assert g.abs().max() > 1e-4  # not a vacuous zero


def test_meta_gradient_is_zero_where_kd_and_ce_gradients_agree():
    """A teacher that is the one-hot label at T = 1 makes T² KL_i = CE_i, so ∂/∂λ_i = 0."""
    net = linear_w0()
    onehot_logits = torch.full((2, 3), -1e4, dtype=torch.float64).scatter(1, YTR[:, None], 0.0)
    ce_i, kd_i = per_sample_losses(net(XTR), YTR, onehot_logits, 1.0)
    assert torch.allclose(ce_i, kd_i, atol=1e-9)
    g, _ = meta_gradient(net, XTR, YTR, onehot_logits, LAM, XV, YV, lookahead_lr=0.5, temperature=1.0)
    assert torch.allclose(g, torch.zeros(2, dtype=torch.float64), atol=1e-12)


def _method(splits, **params):
    torch.manual_seed(0)
    teacher = tiny_net(width=16)
    m = AdaptiveMixing(tiny_net(), splits.info, teacher, train=splits.train, **params)
    m.setup(splits.train, torch.device("cpu"), val=splits.val)
    return m


def test_step_moves_only_the_batch_weights_against_the_meta_gradient_and_trains_the_student():
    splits = toy_splits()
    m = _method(splits, init_lambda=0.5, meta_lr=0.1, lookahead_lr=0.1)
    index = torch.arange(8)
    batch = splits.train.batch(index)
    g, _ = meta_gradient(m.networks["student"], batch["x"], batch["y"], m.teachers.logits(batch), torch.full((8,), 0.5),
                         splits.val.x, splits.val.y, 0.1, 4.0)
    terms = m.training_step(batch, Step(0, 0, 1, 1))
    lam = m.lambdas()
    assert set(terms) == {"ce", "kd"}
    assert torch.all(lam[8:] == 0.5)  # samples not in the batch keep their weight
    moved = lam[:8] - 0.5
    assert torch.allclose(moved, -0.1 * g / g.pow(2).mean().sqrt(), atol=1e-6)  # normalised step against g
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in m.networks["student"].parameters())
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())


def test_terms_use_the_updated_weights_and_meta_lr_zero_is_fixed_mixing():
    splits = toy_splits()
    m = _method(splits, init_lambda=0.3, meta_lr=0.0)
    batch = splits.train.batch(torch.arange(8))
    terms = m.training_step(batch, Step(0, 0, 1, 1))
    ce_i, kd_i = per_sample_losses(m.networks["student"](batch["x"]), batch["y"], m.teachers.logits(batch), 4.0)
    assert terms["ce"].item() == pytest.approx((0.7 * ce_i).mean().item(), rel=1e-5)
    assert terms["kd"].item() == pytest.approx((0.3 * kd_i).mean().item(), rel=1e-5)
    assert torch.all(m.lambdas() == 0.3)


@pytest.mark.parametrize("params, message", [
    ({"init_lambda": 1.5}, r"^method\.params\.init_lambda: Input should be less than or equal to 1"),
    ({"temperature": 0}, r"^method\.params\.temperature: Input should be greater than 0"),
    ({"temperature": True}, r"^method\.params\.temperature"),
    ({"lookahead_lr": 0}, r"^method\.params\.lookahead_lr"),
    ({"val_batch_size": 2.5}, r"^method\.params\.val_batch_size"),
    ({"meta_lrr": 0.1}, r"^method\.params\.meta_lrr: unknown parameter.*Did you mean 'meta_lr'"),
    ({"meta_lr": -1}, r"method.params.meta_lr"),
    ({"val_batch_size": 0}, r"method.params.val_batch_size"),
])
def test_bad_params(params, message):
    splits = toy_splits()
    with pytest.raises(UserInputError, match=message):
        AdaptiveMixing(tiny_net(), splits.info, tiny_net(), train=splits.train, **params)


def test_needs_a_teacher():
    splits = toy_splits()
    with pytest.raises(UserInputError, match=r"^teachers: method 'amal' needs 1 teacher in a 'teacher' section, got 0"):
        AdaptiveMixing(tiny_net(), splits.info, None, train=splits.train)


RECIPE = {
    "name": "amal",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 1, "batch_size": 16}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "amal", "params": {"meta_lr": 0.2}},
    "train": {"epochs": 2, "batch_size": 16},
    "engine": {"progress": False},
}


def test_end_to_end_weights_are_learned_and_checkpointed(tmp_path):
    summary = edgedistill.run(RECIPE, out=tmp_path / "run", progress=False)
    assert [r["role"] for r in summary["rows"]][-1] == "method"
    stage = tmp_path / "run" / "amal" / "seed0"
    line = json.loads((stage / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line["train"]) == {"ce", "kd", "total"}
    state = torch.load(stage / "checkpoints" / "last.pt", weights_only=True)
    lam = state["networks"]["weights"]["lam"]
    assert lam.min() >= 0 and lam.max() <= 1 and lam.std() > 0  # learned, not left at init_lambda
    described = json.loads((stage / "summary.json").read_text())["method"]
    assert described["method"] == "amal" and described["meta_split"] == "validation"


def test_method_terms_are_refused(tmp_path):
    recipe = {**RECIPE, "method": {"name": "amal", "terms": [{"loss": "ce", "weight": 1.0}]}}
    with pytest.raises(UserInputError, match=r"^method\.terms: method 'amal' takes no loss terms"):
        edgedistill.run(recipe, out=tmp_path / "never", progress=False)
