"""Deep Mutual Learning (method 'dml', Zhang et al., CVPR 2018, arXiv 1706.00384): the golden value of
tests/reference/ref_others.py section 17 (DML_loss_net1 in ref_others_output.txt), the per-peer losses and gradients,
the simultaneous update, an end-to-end run, and the errors."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgedistill.config import EngineConfig, TrainConfig, load_recipe
from edgedistill.data.dataset import DataInfo
from edgedistill.engine.loop import Stage, Trainer
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Step, TeacherNet
from edgedistill.methods.mutual import DeepMutualLearning
from edgedistill.models import build_model
from edgedistill.models.ensemble import ProbabilityEnsemble
from tests.helpers import tiny_net, toy_splits

D = torch.float64
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=D)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=D)
Y = torch.tensor([1, 2, 0])
STEP = Step(0, 0, 1, 1)
INFO4 = DataInfo(name="fixed", task="classification", input_shape=(1, 5), n_outputs=4, views={"x": (1, 5)})


class Fixed(nn.Module):
    """Outputs its own logits (a parameter) whatever the input: a network whose predictions we choose."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def fixed_method(*logits: torch.Tensor, temperature: float = 1.0) -> DeepMutualLearning:
    method = DeepMutualLearning(Fixed(logits[0]), INFO4, temperature=temperature)
    for i, z in enumerate(logits[1:], start=1):
        method.networks[f"peer{i}"] = Fixed(z)
    method.peer_models = ["Fixed"] * (len(logits) - 1)
    return method


def batch(n: int = 3) -> dict:
    return {"x": torch.zeros(n, 1, 5, dtype=D), "y": Y[:n], "index": torch.arange(n)}


def terms_of(method: DeepMutualLearning) -> dict:
    with torch.no_grad():
        return method.training_step(batch(), STEP)


def kl_by_hand(p_logits: torch.Tensor, q_logits: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    p, q = torch.softmax(p_logits / t, 1), torch.softmax(q_logits / t, 1)
    return (p * (p / q).log()).sum(1).mean()


def test_golden_net1_loss_with_peer_zt():
    terms = terms_of(fixed_method(ZS, ZT))
    # ref_others.py section 17, DML_loss_net1: CE(ZS, Y) + KL(softmax(ZT) || softmax(ZS)) = 0.692852
    assert float(terms["ce_student"] + terms["kl_student"]) == pytest.approx(0.692852, abs=1e-6)


def test_peer_loss_is_the_mirror_and_uses_the_hand_formula():
    terms = terms_of(fixed_method(ZS, ZT))
    assert float(terms["ce_peer1"]) == pytest.approx(float(F.cross_entropy(ZT, Y)), abs=1e-12)
    assert float(terms["kl_peer1"]) == pytest.approx(float(kl_by_hand(ZS, ZT)), abs=1e-12)
    swapped = terms_of(fixed_method(ZT, ZS))  # symmetric pair: swapping roles swaps the losses
    assert float(swapped["kl_student"]) == pytest.approx(float(terms["kl_peer1"]), abs=1e-12)
    assert float(swapped["kl_peer1"]) == pytest.approx(float(terms["kl_student"]), abs=1e-12)


def test_three_peers_average_the_kl_and_temperature_scales_by_t_squared():
    z3 = 0.5 * ZT
    terms = terms_of(fixed_method(ZS, ZT, z3, temperature=2.0))
    want = 4.0 * (kl_by_hand(ZT, ZS, 2.0) + kl_by_hand(z3, ZS, 2.0)) / 2
    assert float(terms["kl_student"]) == pytest.approx(float(want), abs=1e-12)
    want2 = 4.0 * (kl_by_hand(ZS, z3, 2.0) + kl_by_hand(ZT, z3, 2.0)) / 2
    assert float(terms["kl_peer2"]) == pytest.approx(float(want2), abs=1e-12)
    assert set(terms) == {f"{k}_{n}" for k in ("ce", "kl") for n in ("student", "peer1", "peer2")}


def test_kl_is_zero_when_peers_agree():
    terms = terms_of(fixed_method(ZS, ZS.clone()))
    assert float(terms["kl_student"]) == pytest.approx(0.0, abs=1e-12)
    assert float(terms["kl_peer1"]) == pytest.approx(0.0, abs=1e-12)


def test_simultaneous_update_gives_each_peer_only_its_own_loss_gradient():
    method = fixed_method(ZS, ZT, 0.5 * ZT)
    total = sum(method.training_step(batch(), STEP).values())
    total.backward()
    for k, name in enumerate(method.networks):
        mine = method.networks[name].logits
        others = [n.logits.detach() for j, n in enumerate(method.networks.values()) if j != k]
        own = F.cross_entropy(mine, Y) + sum(kl_by_hand(z, mine) for z in others) / len(others)
        (want,) = torch.autograd.grad(own, mine)
        assert torch.allclose(mine.grad, want, rtol=0, atol=1e-12)


def test_end_to_end_both_peers_train_and_are_reported(tmp_path):
    splits = toy_splits()
    torch.manual_seed(0)
    method = DeepMutualLearning(tiny_net(), splits.info)  # default peer: the student's architecture, new weights
    assert set(method.networks) == {"student", "peer1"}
    assert not torch.equal(method.networks["student"][0].weight, method.networks["peer1"][0].weight)
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in method.networks.items()}
    cfg = TrainConfig(epochs=1, batch_size=16)
    summary = Trainer(EngineConfig(progress=False)).fit(method, splits, Stage("dml", tmp_path / "dml", 0, cfg))
    for name, net in method.networks.items():
        assert all(not torch.equal(a, b) for a, b in zip(before[name], net.parameters())), f"{name} did not train"
    others = summary["others"]
    assert set(others) == {"peer1 (Sequential)", "ensemble of 2 (softmax mean)"}
    assert {"acc", "ece"} <= set(others["peer1 (Sequential)"]["test"]["best"])
    ens = method.evaluated()["ensemble of 2 (softmax mean)"]
    assert isinstance(ens, ProbabilityEnsemble) and len(ens.members) == 2
    record = (tmp_path / "dml" / "metrics.jsonl").read_text().splitlines()[-1]
    assert all(k in record for k in ("ce_student", "kl_student", "ce_peer1", "kl_peer1"))


def _recipe(terms=(), **params):
    return load_recipe({
        "name": "t", "data": {"name": "synthetic"},
        "student": {"model": "cnn1d", "width": 4, "depth": 2},
        "method": {"name": "dml", "params": params, "terms": list(terms)},
    })


def _from_recipe(recipe, teachers=()):
    splits = toy_splits()
    student = build_model("cnn1d", 3, 3, (16,), width=4, depth=2)
    return DeepMutualLearning.from_recipe(recipe, student=student, teacher=None, info=splits.info, teachers=list(teachers))


def test_from_recipe_default_peer_is_the_student_section_and_listed_peers_are_built():
    method = _from_recipe(_recipe())
    assert type(method.networks["peer1"]).__name__ == type(method.networks["student"]).__name__
    assert sum(p.numel() for p in method.networks["peer1"].parameters()) == sum(p.numel() for p in method.networks["student"].parameters())
    method = _from_recipe(_recipe(peers=[{"model": "cnn1d", "width": 8}, {"model": "fcn", "width": 0.25}]))
    assert list(method.networks) == ["student", "peer1", "peer2"]
    assert set(method.evaluated()) == {"peer1 (cnn1d)", "peer2 (fcn)", "ensemble of 3 (softmax mean)"}


@pytest.mark.parametrize("params, needle", [
    ({"peers": []}, "method.params.peers: List should have at least 1 item"),
    ({"peers": {"model": "fcn"}}, "method.params.peers: Input should be a valid list"),
    ({"peers": ["fcn"]}, "method.params.peers.0: Input should be a valid dictionary"),
    ({"peers": [{"model": "cnn1d"}, {"model": "no_such_net"}]}, "method.params.peers[1]"),
    ({"peers": [{"model": "cnn1d", "width": -1}]}, "method.params.peers[0].width"),
    ({"peers": [{"width": 8}]}, "method.params.peers.0.model: Field required"),
    ({"peers": [{"model": "cnn1d", "checkpoint": "w.pt"}]}, "method.params.peers[0].checkpoint"),
    ({"temperature": 0}, "method.params.temperature: Input should be greater than 0"),
    ({"temperature": True}, "method.params.temperature: Input should be a valid number"),
    ({"temprature": 2}, "method.params.temprature: unknown parameter"),
])
def test_bad_params_are_named(params, needle):
    with pytest.raises(UserInputError) as err:
        _from_recipe(_recipe(**params))
    assert needle in str(err.value)


def test_a_pretrained_teacher_or_terms_or_regression_are_refused():
    recipe = _recipe()
    teacher = TeacherNet("teacher", tiny_net(), recipe.student)  # config content is irrelevant here
    with pytest.raises(UserInputError, match="^teacher: method 'dml'"):
        _from_recipe(recipe, teachers=[teacher])
    with pytest.raises(UserInputError, match="^method.terms"):
        _from_recipe(_recipe(terms=[{"loss": "ce"}]))
    reg = DataInfo(name="r", task="regression", input_shape=(3, 16), n_outputs=1, views={"x": (3, 16)})
    with pytest.raises(UserInputError, match="classification"):
        DeepMutualLearning(tiny_net(classes=1), reg)


def test_a_peer_with_the_wrong_output_size_is_named():
    info = toy_splits().info
    with pytest.raises(UserInputError, match=r"method.params.peers\[0\]: outputs"):
        method = DeepMutualLearning(tiny_net(), info, peers=[{"model": "cnn1d", "width": 4}])
        method.networks["peer1"] = tiny_net(classes=5)
        method._check_outputs()
