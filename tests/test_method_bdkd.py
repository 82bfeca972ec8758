"""Online BD-KD (method 'bdkd', Amara et al., arXiv 2212.12965): the per-sample KL vectors of
tests/reference/ref_asu.py section 8 (printed in ref_asu_output.txt), its properties (zero KL when the networks
agree; w^r = 0 is standard online KD = DML), the seed's form (balance: student: only the student's loss balanced,
the large network's is DML's) against the mirrored one (balance: both: one shared divergence), gradients reaching
each network from its own loss only, an end-to-end run reporting both networks, and the errors."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.config import EngineConfig, TermConfig, TrainConfig, load_recipe
from edgedistill.data.dataset import DataInfo
from edgedistill.engine.loop import Stage, Trainer
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods.bdkd_online import OnlineBalancedKD
from edgedistill.methods.mutual import DeepMutualLearning
from edgedistill.models import build_model
from tests.helpers import tiny_net, toy_splits

D = torch.float64
# tests/reference/ref_asu.py section 8 (T = 1): p_S = softmax(PS8), p_T = softmax(PT8), per sample
PS8 = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=D)
PT8 = torch.tensor([[1.0, 1.0, 0.0], [3.0, 0.0, 0.0]], dtype=D)
FKL8, RKL8 = [0.3775499622, 0.7320183278], [0.3029291011, 0.9963106678]  # KL(pT||pS), KL(pS||pT)
# H(p_S) = [0.666, 1.099] and H(p_T) = [1.017, 0.367]: the student is more confident on sample 0, less on sample 1.
Y8 = torch.tensor([0, 0])  # the labels terms_of uses (class 0 for every row)
STEP = Step(0, 0, 1, 1)
INFO3 = DataInfo(name="fixed", task="classification", input_shape=(3, 16), n_outputs=3, views={"x": (3, 16)})


class Fixed(nn.Module):
    """Outputs its own logits (a parameter) whatever the input: a network whose predictions we choose."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def weights(alpha: float) -> list:
    """The recipe terms of (1 - alpha) CE + alpha KL for both networks (the regime's default is alpha = 0.5)."""
    return [TermConfig(loss=n, weight=w) for n, w in (("ce_student", 1 - alpha), ("kl_student", alpha),
                                                       ("ce_large", 1 - alpha), ("kl_large", alpha))]


def fixed(zs: torch.Tensor, zl: torch.Tensor, alpha: float = 0.5, **params) -> OnlineBalancedKD:
    method = OnlineBalancedKD(tiny_net(), INFO3, weights(alpha), large={"model": "cnn1d", "width": 4}, **params)
    method.networks["student"], method.networks["large"] = Fixed(zs), Fixed(zl)
    return method


def terms_of(method, n: int = 2, grad: bool = False) -> dict:
    batch = {"x": torch.zeros(n, 3, 16, dtype=D), "y": torch.zeros(n, dtype=torch.long), "index": torch.arange(n)}
    with torch.set_grad_enabled(grad):
        return method.training_step(batch, STEP)


@pytest.mark.parametrize("i", [0, 1])
def test_per_sample_kl_vectors_of_the_spec(i):
    zs, zt = PS8[i:i + 1], PT8[i:i + 1]
    # w^r = 0: each network gets the forward KL from its own side: KL(pT||pS) for S, KL(pS||pT) for the large one.
    plain = terms_of(fixed(zs, zt, alpha=1.0, balance="none"), n=1)
    assert float(plain["kl_student"]) == pytest.approx(FKL8[i], abs=1e-6)
    assert float(plain["kl_large"]) == pytest.approx(RKL8[i], abs=1e-6)
    # Hard gate (gate_width = 0): the less confident network takes the reverse KL. Sample 0: the student is more
    # confident -> forward KL(pT||pS); sample 1: less confident -> reverse KL(pS||pT). With balance: both the large
    # net mirrors it; with the seed's balance: student (the default) it keeps its forward KL(pS||pT).
    want = [FKL8[0], RKL8[1]][i]
    seed = terms_of(fixed(zs, zt, alpha=1.0, gate_width=0.0), n=1)
    assert float(seed["kl_student"]) == pytest.approx(want, abs=1e-6)
    assert float(seed["kl_large"]) == pytest.approx(RKL8[i], abs=1e-6)
    both = terms_of(fixed(zs, zt, alpha=1.0, gate_width=0.0, balance="both"), n=1)
    assert float(both["kl_student"]) == pytest.approx(want, abs=1e-6)
    assert float(both["kl_large"]) == pytest.approx(want, abs=1e-6)


def test_alpha_and_temperature_scale_the_terms():
    t = terms_of(fixed(PS8, PT8, alpha=0.3, gate_width=0.0))
    assert float(t["kl_student"]) == pytest.approx(0.3 * (FKL8[0] + RKL8[1]) / 2, abs=1e-6)
    assert float(t["ce_student"]) == pytest.approx(0.7 * float(F.cross_entropy(PS8, Y8)), abs=1e-12)
    assert float(t["ce_large"]) == pytest.approx(0.7 * float(F.cross_entropy(PT8, Y8)), abs=1e-12)
    hot = terms_of(fixed(2 * PS8, 2 * PT8, alpha=1.0, temperature=2.0, balance="none"))
    assert float(hot["kl_student"]) == pytest.approx(4.0 * sum(FKL8) / 2, abs=1e-6)  # T^2 KL(softmax(2z/2) ...)


def test_both_kls_are_zero_when_the_networks_agree():
    for params in ({}, {"gate_width": 0.0}, {"balance": "none"}, {"balance": "both"}, {"temperature": 3.0}):
        t = terms_of(fixed(PS8, PS8.clone(), **params))
        assert float(t["kl_student"]) == pytest.approx(0.0, abs=1e-12)
        assert float(t["kl_large"]) == pytest.approx(0.0, abs=1e-12)


def test_no_reverse_weight_is_standard_online_kd_that_is_dml_scaled_by_alpha():
    zs, zl = torch.randn(5, 3, dtype=D), torch.randn(5, 3, dtype=D)
    online = terms_of(fixed(zs, zl, alpha=0.4, temperature=2.0, balance="none"), n=5)
    dml = DeepMutualLearning(Fixed(zs), INFO3, temperature=2.0)
    dml.networks["peer1"] = Fixed(zl)
    batch = {"x": torch.zeros(5, 3, 16, dtype=D), "y": torch.zeros(5, dtype=torch.long), "index": torch.arange(5)}
    with torch.no_grad():
        mutual = dml.training_step(batch, STEP)
    assert float(online["kl_student"]) == pytest.approx(0.4 * float(mutual["kl_student"]), abs=1e-12)
    assert float(online["kl_large"]) == pytest.approx(0.4 * float(mutual["kl_peer1"]), abs=1e-12)


def test_mirrored_rule_gives_both_networks_the_same_per_sample_divergence():
    # balance: both: v = 1 - w (sigmoid(-x) = 1 - sigmoid(x)): the two KD terms are equal in value for any soft gate.
    zs, zl = 3 * torch.randn(7, 5, dtype=D), 3 * torch.randn(7, 5, dtype=D)
    for g in (0.05, 0.1, 1.0):
        t = terms_of(fixed(zs, zl, gate_width=g, balance="both"), n=7)
        assert float(t["kl_student"]) == pytest.approx(float(t["kl_large"]), abs=1e-12)


def test_the_seeds_form_balances_the_student_only_and_leaves_the_large_network_dmls_loss():
    zs, zl = 3 * torch.randn(7, 5, dtype=D), 3 * torch.randn(7, 5, dtype=D)
    seed, both, online = (terms_of(fixed(zs, zl, alpha=0.5, balance=b), n=7) for b in ("student", "both", "none"))
    assert float(seed["kl_student"]) == pytest.approx(float(both["kl_student"]), abs=1e-12)  # the student: balanced
    assert float(seed["kl_large"]) == pytest.approx(float(online["kl_large"]), abs=1e-12)  # the large net: plain KD
    assert float(seed["kl_large"]) != pytest.approx(float(both["kl_large"]), abs=1e-6)  # (so the forms differ here)
    assert fixed(zs, zl).params.balance == "student"  # the seed's form is the default


def test_each_network_gets_only_its_own_loss_gradient():
    zs, zl = torch.randn(4, 3, dtype=D), torch.randn(4, 3, dtype=D)
    from edgedistill.losses.response import kd
    from edgedistill.losses.response_extra import balanced_kd

    for balance in ("student", "both"):
        method = fixed(zs, zl, alpha=0.5, gate_width=0.1, balance=balance)
        sum(terms_of(method, n=4, grad=True).values()).backward()
        s, l = method.networks["student"].logits, method.networks["large"].logits
        y = Y8.new_zeros(4)
        large_kl = balanced_kd(l, s.detach(), 1.0, 0.1) if balance == "both" else kd(l, s.detach(), 1.0)
        (gs,) = torch.autograd.grad(0.5 * F.cross_entropy(s, y) + 0.5 * balanced_kd(s, l.detach(), 1.0, 0.1), s)
        (gl,) = torch.autograd.grad(0.5 * F.cross_entropy(l, y) + 0.5 * large_kl, l)
        assert torch.allclose(s.grad, gs, rtol=0, atol=1e-12)
        assert torch.allclose(l.grad, gl, rtol=0, atol=1e-12)


def test_end_to_end_both_networks_train_and_the_large_one_is_reported(tmp_path):
    splits = toy_splits()
    torch.manual_seed(0)
    method = OnlineBalancedKD(tiny_net(), splits.info, large={"model": "cnn1d", "width": 12, "depth": 2})
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in method.networks.items()}
    cfg = TrainConfig(epochs=1, batch_size=16)
    summary = Trainer(EngineConfig(progress=False)).fit(method, splits, Stage("bdkd", tmp_path / "b", 0, cfg))
    for name, net in method.networks.items():
        assert all(not torch.equal(a, b) for a, b in zip(before[name], net.parameters())), f"{name} did not train"
    large = summary["others"]["large (cnn1d)"]
    assert {"acc", "ece"} <= set(large["test"]["best"]) and {"acc", "ece"} <= set(summary["test"]["best"])
    record = (tmp_path / "b" / "metrics.jsonl").read_text()
    assert all(k in record for k in ("ce_student", "kl_student", "ce_large", "kl_large"))


def _recipe(terms=(), **params):
    return load_recipe({
        "name": "t", "data": {"name": "synthetic"},
        "student": {"model": "cnn1d", "width": 4, "depth": 2},
        "method": {"name": "bdkd", "params": params, "terms": list(terms)},
    })


def _from_recipe(recipe, teachers=()):
    student = build_model("cnn1d", 3, 3, (16,), width=4, depth=2)
    return OnlineBalancedKD.from_recipe(recipe, student=student, teacher=None, info=toy_splits().info, teachers=list(teachers))


@pytest.mark.parametrize("params, needle", [
    ({}, "method.params.large: required"),
    ({"large": "fcn"}, "method.params.large: Input should be a valid dictionary"),
    ({"large": {"width": 8}}, "method.params.large.model: Field required"),
    ({"large": {"model": "fcn", "checkpoint": "w.pt"}}, "method.params.large.checkpoint: networks of an online regime"),
    ({"large": {"model": "no_such_net"}}, "method.params.large"),
    ({"large": {"model": "fcn", "width": 0}}, "method.params.large.width"),
    ({"large": {"model": "fcn"}, "alpha": 0.5}, "method.params.alpha: unknown parameter"),  # weights are recipe terms
    ({"large": {"model": "fcn"}, "temperature": -1}, "method.params.temperature: Input should be greater than 0"),
    ({"large": {"model": "fcn"}, "gate_width": -0.1}, "method.params.gate_width: Input should be greater than or equal"),
    ({"large": {"model": "fcn"}, "balance": "yes"}, "method.params.balance: Input should be 'student', 'both' or 'none'"),
    ({"large": {"model": "fcn"}, "peers": []}, "method.params.peers: unknown parameter"),
])
def test_bad_params_are_named(params, needle):
    with pytest.raises(UserInputError) as err:
        _from_recipe(_recipe(**params))
    assert needle in str(err.value)


def test_a_pretrained_teacher_or_terms_or_regression_are_refused():
    recipe = _recipe(large={"model": "fcn", "width": 0.25})
    assert isinstance(_from_recipe(recipe), OnlineBalancedKD)
    with pytest.raises(UserInputError, match="^teacher: method 'bdkd'"):
        _from_recipe(recipe, teachers=[TeacherNet("teacher", tiny_net(), recipe.student)])
    with pytest.raises(UserInputError, match="^method.terms"):
        _from_recipe(_recipe(terms=[{"loss": "ce"}], large={"model": "fcn"}))
    reg = DataInfo(name="r", task="regression", input_shape=(3, 16), n_outputs=1, views={"x": (3, 16)})
    with pytest.raises(UserInputError, match="classification"):
        OnlineBalancedKD(tiny_net(classes=1), reg, large={"model": "fcn"})
