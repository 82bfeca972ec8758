"""Data-free KD (dfad, cudfkd): the test vectors of tests/reference/ref_others.py section 12, unit tests of the
losses, the BatchNorm hooks, the curricula, which network each step trains, the never-reads-the-data guarantee,
recipe errors and an end-to-end run."""
import copy
import json
import math

import pytest
import torch
from torch import nn

import edgedistill
from edgedistill.errors import UserInputError
from edgedistill.losses.data_free import (
    agreement_kl, bn_statistics_loss, class_entropy, curriculum_adv_weight, linear_ramp, logit_l1, one_hot_loss,
    per_sample_kd, per_sample_l1, self_paced_weight, stepped_adv_weight, stepped_lambda,
)
from edgedistill.methods.base import Step
from edgedistill.methods.data_free import DFAD, BatchNormStatistics, CuDFKD
from edgedistill.models.generators import build_generator
from tests.helpers import tiny_net, toy_splits

# tests/reference/ref_others.py: the shared inputs ZS, ZT and the section 12 test vectors.
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=torch.float64)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=torch.float64)
STEP = Step(0, 0, 4, 2)


def grid(shape, a, b=0.0):
    n = math.prod(shape)
    return torch.sin(torch.arange(n, dtype=torch.float64) * a + b).reshape(shape)


def test_spec_vectors():
    v = self_paced_weight(torch.tensor([0.0, 0.5, 1.0, 2.0, 5.0], dtype=torch.float64), 1.2)
    assert torch.allclose(v, torch.tensor([1.0, 0.869442, 0.715441, 0.403403, 0.028472], dtype=torch.float64), atol=1e-6)
    assert class_entropy(ZT, 5.0).item() == pytest.approx(1.381003, abs=1e-6)
    assert one_hot_loss(ZT).item() == pytest.approx(0.482642, abs=1e-6)
    assert agreement_kl(ZS, ZT, 3.0).item() == pytest.approx(-0.135119, abs=1e-6)
    feat = grid((2, 3, 2, 2), 0.77)
    rm, rv = torch.tensor([0.1, -0.2, 0.0], dtype=torch.float64), torch.tensor([0.5, 1.0, 0.8], dtype=torch.float64)
    assert bn_statistics_loss(feat, rm, rv).item() == pytest.approx(0.763756, abs=1e-6)
    assert logit_l1(ZS, ZT).item() == pytest.approx(0.633333, abs=1e-6)
    assert -class_entropy(ZT, 1.0).item() == pytest.approx(-1.276729, abs=1e-6)  # DAFL's sum p log p
    # lam after 10000 steps on CIFAR-10 (lam0 1.2, alpha 1e-4) = our ramp 1.2 -> 2.2 at the end of training
    assert linear_ramp(1.2, 2.2, 1.0) == pytest.approx(2.2)


def test_per_sample_kd_is_t_squared_kl_per_row():
    log_t, log_s = torch.log_softmax(ZT / 4.0, 1), torch.log_softmax(ZS / 4.0, 1)
    want = 16.0 * (log_t.exp() * (log_t - log_s)).sum(1)
    assert torch.equal(per_sample_kd(ZS, ZT, 4.0), want)
    assert per_sample_kd(ZT, ZT, 4.0).abs().max().item() < 1e-12


def test_each_regime_has_its_own_defaults():
    assert (DFAD.Params().adv_loss, DFAD.Params().bn, DFAD.Params().spl, DFAD.Params().lam) == ("l1", 0.0, "none", None)
    c = CuDFKD.Params()
    assert (c.adv_loss, c.bn, c.one_hot, c.entropy, c.entropy_temperature, c.spl) == ("kl", 1.0, 1.0, -20.0, 5.0, "sample")
    # The official CIFAR-10 scripts: --adv 0 --grad_adv 0.5 in [0.25, 0.75] E, --lambda_0 2 with alpha 1e-4,
    # DCGAN_Generator_CIFAR10(nz=512, ngf=64, d=2).
    assert (c.preset, c.adv, c.adv_step, c.adv_curriculum, c.lam[0], c.lam_rate) == ("official", 0.0, 0.5, [0.25, 0.75], 2.0, 1e-4)
    assert (c.generator.nz, c.generator.width, c.generator.coarse, c.generator.output) == (512, 64, 4, "bn")
    d = DFAD.Params()
    assert (d.generator.nz, d.generator.width, d.generator.coarse, d.adv_step, d.lam_rate) == (64, 32, 2, None, None)
    small = CuDFKD.Params(preset="small")  # the former defaults, by name
    assert (small.adv, small.adv_step, small.lam, small.lam_rate) == (1.0, None, [1.0, 3.0], None)
    assert (small.generator.nz, small.generator.width, small.generator.coarse) == (64, 32, 2)
    mixed = CuDFKD.Params(preset="small", adv=2.0, generator={"nz": 16})  # a recipe's own keys win
    assert (mixed.adv, mixed.generator.nz, mixed.generator.width, mixed.lam) == (2.0, 16, 32, [1.0, 3.0])


def test_official_schedules_are_per_epoch_and_per_student_step():
    # CIFAR-10 R34 -> R18: 250 epochs, adv raised after epochs 63..186 (int(62.5) < e < int(187.5)): 124 x 0.5.
    weights = [stepped_adv_weight(e, 250, 0.0, 0.5, 0.25, 0.75) for e in range(251)]
    assert weights[63] == 0.0 and weights[64] == 0.5 and weights[-1] == pytest.approx(62.0)
    assert all(b - a in (0.0, 0.5) for a, b in zip(weights, weights[1:]))
    # The former form reached its final weight 1.0 there: the official one is 62 x stronger at the end.
    assert curriculum_adv_weight(249, 250, 1.0, 0.25, 0.75) == pytest.approx(1.0)
    # lam = 2 + 1e-4 n: 250 epochs x 400 student steps -> 12, held at the cap.
    assert stepped_lambda(2.0, 1e-4, 100_000) == pytest.approx(12.0)
    assert stepped_lambda(2.0, 1e-4, 100_000, cap=5.0) == 5.0


def test_official_generator_layout_has_a_four_times_wider_coarse_map():
    official = build_generator({"nz": 512, "width": 64, "coarse": 4}, (3, 100))
    small = build_generator({"nz": 64, "width": 32}, (3, 100))
    convs = [m for m in official.modules() if isinstance(m, nn.Conv1d)]
    assert official.fc.out_features == 4 * 64 * 25 and [(c.in_channels, c.out_channels) for c in convs] == [(256, 128), (128, 64), (64, 3)]
    assert small.fc.out_features == 2 * 32 * 25
    assert official(torch.randn(5, 512)).shape == small(torch.randn(5, 64)).shape == (5, 3, 100)
    n = lambda g: sum(p.numel() for p in g.parameters())  # noqa: E731
    assert n(official) > 20 * n(small)


def test_self_paced_weight_properties():
    losses = torch.linspace(0, 6, 25, dtype=torch.float64)
    for lam in (0.3, 1.0, 4.0):
        v = self_paced_weight(losses, lam)
        assert v[0].item() == pytest.approx(1.0, abs=1e-12)
        assert torch.all(v[1:] < v[:-1])
    assert torch.all(self_paced_weight(losses[1:], 2.0) > self_paced_weight(losses[1:], 1.0))
    assert not self_paced_weight(losses.requires_grad_(), 1.0).requires_grad


def test_bn_loss_is_zero_when_batch_statistics_equal_running_statistics():
    feat = grid((4, 3, 5), 0.31, 0.2)
    mean, var = feat.mean((0, 2)), feat.var((0, 2), unbiased=False)
    assert bn_statistics_loss(feat, mean, var).item() == pytest.approx(0.0, abs=1e-12)
    assert bn_statistics_loss(feat, mean + 0.1, var).item() > 0


def test_adversarial_kl_is_nonpositive_and_zero_for_equal_or_all_disagreeing_logits():
    assert agreement_kl(ZS, ZT).item() <= 0
    assert agreement_kl(ZT, ZT).item() == pytest.approx(0.0, abs=1e-12)
    disagree = ZT.roll(1, dims=1) * 3  # every row's argmax moves
    assert torch.all(disagree.argmax(1) != ZT.argmax(1))
    assert agreement_kl(disagree, ZT).item() == 0.0


def test_curriculum_rises_from_zero_to_final_between_begin_and_end():
    weights = [curriculum_adv_weight(e, 20, 2.0, 0.25, 0.75) for e in range(20)]
    assert weights[0] == 0.0 and weights[5] == 0.0  # e = 5 = 0.25 E is not past begin
    assert all(b >= a for a, b in zip(weights, weights[1:]))
    assert weights[-1] == pytest.approx(2.0) and weights[15] == pytest.approx(2.0)
    assert 0 < weights[10] < 2.0


def test_batchnorm_hooks_read_every_bn_input_only_while_recording():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 3, 3), nn.BatchNorm1d(3))
    teacher.train()
    teacher(torch.randn(32, 2, 10) * 2 + 1)  # non-trivial running statistics
    teacher.eval()
    stats = BatchNormStatistics(teacher)
    x = torch.randn(5, 2, 10)
    teacher(x)
    assert stats.losses == []
    with stats:
        teacher(x)
    h1 = teacher[0](x)
    h2 = teacher[3](teacher[2](teacher[1](h1)))
    want = bn_statistics_loss(h1, teacher[1].running_mean, teacher[1].running_var) + \
        bn_statistics_loss(h2, teacher[4].running_mean, teacher[4].running_var)
    assert len(stats.losses) == 2 and stats.total().item() == pytest.approx(want.item(), rel=1e-6)


def _teacher(splits, seed=0):
    """A small BN teacher, briefly trained on the toy data so its running statistics are not the defaults."""
    torch.manual_seed(seed)
    net = tiny_net(width=8)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    b = splits.train.batch(torch.arange(len(splits.train)))
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(net(b["x"]), b["y"]).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return net.eval()


def _method(cls, splits, **params):
    torch.manual_seed(1)
    m = cls(tiny_net(), splits.info, _teacher(splits), **{"batch_size": 8, "generator": {"nz": 8, "width": 4}, **params})
    m.optimizers(edgedistill.config.TrainConfig(lr=1e-2))
    m.setup(splits.train, torch.device("cpu"))
    return m


def _nan_batch(splits):
    batch = splits.train.batch(torch.arange(8))
    return {**batch, "x": torch.full_like(batch["x"], float("nan")), "y": torch.full_like(batch["y"], -99)}


@pytest.mark.parametrize("cls, names", [(DFAD, {"gen_adv", "student_kd"}),
                                        (CuDFKD, {"gen_adv", "gen_bn", "gen_one_hot", "gen_entropy", "student_kd"})])
def test_never_reads_the_batch_trains_generator_and_student_and_keeps_the_teacher(cls, names):
    splits = toy_splits()
    m = _method(cls, splits)
    teacher_state = copy.deepcopy(m.teacher.state_dict())
    gen0 = copy.deepcopy(m.networks["generator"].state_dict())
    stu0 = copy.deepcopy(m.networks["student"].state_dict())
    for i in range(3):
        terms = m.training_step(_nan_batch(splits), Step(0, i, 4, 3))
        assert set(terms) == names
        assert all(torch.isfinite(v) and not v.requires_grad for v in terms.values())
    for net in ("generator", "student"):
        before = gen0 if net == "generator" else stu0
        after = m.networks[net].state_dict()
        assert all(torch.isfinite(v).all() for v in after.values())
        assert any(not torch.equal(before[k], after[k]) for k in before), f"{net} did not train"
    for k, v in m.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k  # weights and running statistics untouched
    assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters()) and not m.teacher.training


def test_generator_gradient_is_the_weighted_sum_and_dfad_maximises_the_l1_gap():
    splits = toy_splits()
    m = _method(CuDFKD, splits, adv_curriculum=None, adv=0.7, bn=2.0, one_hot=0.5, entropy=-3.0)
    gen = m.networks["generator"]
    torch.manual_seed(5)
    x = m._sample()
    terms = m.generator_terms(x, STEP)
    loss = m.generator_loss(terms, STEP)
    want = 0.7 * terms["gen_adv"] + 2.0 * terms["gen_bn"] + 0.5 * terms["gen_one_hot"] - 3.0 * terms["gen_entropy"]
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    grads = torch.autograd.grad(loss, list(gen.parameters()), allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    d = _method(DFAD, splits)
    x = d._sample()
    t, s = d.teacher(x), d.networks["student"](x)
    assert d.generator_terms(x, STEP)["gen_adv"].item() == pytest.approx(-logit_l1(s, t).item(), rel=1e-6)


def test_the_curriculum_weight_follows_the_epoch():
    splits = toy_splits()
    m = _method(CuDFKD, splits, adv=3.0, adv_curriculum=[0.25, 0.75], adv_step=None)  # the former form
    assert m.adv_weight(Step(0, 0, 40, 1)) == 0.0
    assert m.adv_weight(Step(39, 39, 40, 1)) == pytest.approx(3.0)
    official = _method(CuDFKD, splits)  # 0 + 0.5 after each epoch 11..29 of 40
    assert official.adv_weight(Step(11, 11, 40, 1)) == 0.0 and official.adv_weight(Step(12, 12, 40, 1)) == 0.5
    assert official.adv_weight(Step(39, 39, 40, 1)) == pytest.approx(9.5)
    assert _method(DFAD, splits, adv=2.0).adv_weight(Step(0, 0, 40, 1)) == 2.0


def test_self_paced_student_loss_weights_each_sample():
    splits = toy_splits()
    m = _method(CuDFKD, splits, lam=[0.5, 0.5])
    torch.manual_seed(3)
    x = m._sample().detach()
    got = m.student_terms(x, STEP)["student_kd"]
    with torch.no_grad():
        t = m.teacher(x)
    per = per_sample_l1(m.networks["student"](x), t)
    v = (1 + math.exp(-0.5)) / (1 + torch.exp(per.detach() - 0.5))
    assert got.item() == pytest.approx((v * per).mean().item(), rel=1e-6)
    batch = _method(CuDFKD, splits, lam=[0.5, 0.5], spl="batch")
    l = per.mean()
    assert batch.student_terms(x, STEP)["student_kd"].item() == pytest.approx(
        ((1 + math.exp(-0.5)) / (1 + torch.exp(l - 0.5)) * l).item(), rel=1e-5)


def test_lam_counts_every_student_step_of_the_run(monkeypatch):
    splits = toy_splits()
    m = _method(CuDFKD, splits, rounds=2, kd_steps=3, g_steps=1)
    m.optimizers(edgedistill.config.TrainConfig(epochs=4, batch_size=8))
    seen: list[int] = []
    real = m.student_terms
    monkeypatch.setattr(m, "student_terms", lambda x, step, n=0: seen.append(n) or real(x, step, n))
    m.training_step({}, Step(1, 5, 4, 4))  # global loop step 5: 5 x 2 x 3 student steps before it
    assert seen == [30, 31, 32, 33, 34, 35]
    assert m.lam(Step(1, 5, 4, 4), 30) == pytest.approx(2.0 + 30e-4)
    assert _method(CuDFKD, splits, lam_rate=None, lam=[1.0, 3.0]).lam(Step(2, 8, 4, 4), 999) == pytest.approx(2.0)


def test_student_steps_alone_bring_the_student_to_the_teacher_on_generated_samples():
    splits = toy_splits()
    m = _method(DFAD, splits, g_steps=0, kd_steps=10, batch_size=32)
    gen = m.networks["generator"]
    torch.manual_seed(9)
    with torch.no_grad():
        probe = gen(torch.randn(64, m.nz))
    def gap():
        s = m.networks["student"]
        s.eval()
        with torch.no_grad():
            out = logit_l1(s(probe), m.teacher(probe)).item()
        s.train()
        return out
    start = gap()
    for i in range(8):
        m.training_step(_nan_batch(splits), Step(0, i, 1, 8))
    assert gap() < 0.5 * start


def test_a_teacher_without_batchnorm_is_refused_when_bn_matching_is_on():
    splits = toy_splits()
    plain = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(UserInputError, match=r"teacher: .*no BatchNorm layers; set method.params.bn: 0"):
        CuDFKD(tiny_net(), splits.info, plain)
    DFAD(tiny_net(), splits.info, plain)  # DFAD does not use the statistics
    with pytest.raises(UserInputError, match=r"teachers: method 'dfad' needs 1 teacher in a 'teacher' section"):
        DFAD(tiny_net(), splits.info, None)


@pytest.mark.parametrize("params, message", [
    ({"rounds": 0}, r"method.params.rounds: Input should be greater than or equal to 1"),
    ({"rounds": 2.5}, r"method.params.rounds: Input should be a valid integer"),
    ({"batch_size": True}, r"method.params.batch_size: Input should be a valid integer"),
    ({"adv_loss": "js"}, r"method.params.adv_loss: Input should be 'l1' or 'kl'"),
    ({"adv_curriculum": [0.8, 0.2]}, r"method.params.adv_curriculum: .*expected \[begin, end\] fractions"),
    ({"adv_curriculum": [0.2]}, r"method.params.adv_curriculum: List should have at least 2 items"),
    ({"spl": "sample", "lam": None}, r"method.params.lam: .*self-paced weights"),
    ({"bn": -1}, r"method.params.bn: Input should be greater than or equal to 0"),
    ({"lam": [1.0, float("nan")]}, r"method.params.lam.1: expected a finite number"),
    ({"temperature": 3}, r"method.params.temperature: unknown parameter for method 'cudfkd'"),
    ({"generator": {"nz": -2}}, r"method.params.generator.nz: Input should be greater than or equal to 1"),
    ({"generator": "big"}, r"method.params.generator: Input should be a valid dictionary"),
])
def test_bad_params_name_the_key(params, message):
    splits = toy_splits()
    with pytest.raises(UserInputError, match=message):
        CuDFKD(tiny_net(), splits.info, _teacher(splits), **params)


RECIPE = {
    "name": "df",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "teacher": {"model": "fcn", "width": 0.125, "train": {"epochs": 2, "batch_size": 16}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "cudfkd", "params": {"batch_size": 8, "generator": {"nz": 8, "width": 4}, "kd_steps": 2}},
    "train": {"epochs": 2, "batch_size": 16},
    "engine": {"progress": False},
}


def test_end_to_end_run_logs_the_terms_and_reports_best_and_last(tmp_path):
    summary = edgedistill.run(RECIPE, out=tmp_path / "run", progress=False)
    assert [r["role"] for r in summary["rows"]] == ["teacher", "student alone", "method"]
    stage = tmp_path / "run" / "cudfkd" / "seed0"
    line = json.loads((stage / "metrics.jsonl").read_text().splitlines()[0])
    assert {"gen_adv", "gen_bn", "gen_one_hot", "gen_entropy", "student_kd"} <= set(line["train"])
    ck = torch.load(stage / "checkpoints" / "last.pt", weights_only=True)
    assert {"student", "generator"} <= set(ck["networks"]) and {"student", "generator"} <= set(ck["optimizers"])


def test_the_recipe_refuses_a_missing_teacher(tmp_path):
    recipe = {k: v for k, v in RECIPE.items() if k != "teacher"}
    with pytest.raises(UserInputError, match=r"teachers: method 'cudfkd' needs 1 teacher in a 'teacher' section"):
        edgedistill.run(recipe, out=tmp_path / "never", progress=False)


def test_images_two_d_teacher_and_student_train_on_generated_images():
    from edgedistill.data.dataset import DataInfo

    info = DataInfo(name="img", task="classification", input_shape=(1, 8, 8), n_outputs=4,
                    classes=[str(c) for c in range(4)], views={"x": (1, 8, 8)}, sizes={"train": 8, "val": 4, "test": 4})
    torch.manual_seed(0)
    def net():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    m = CuDFKD(net(), info, net().eval(), batch_size=6, generator={"nz": 8, "width": 4}, kd_steps=1)
    m.optimizers(edgedistill.config.TrainConfig())
    x = m._sample()
    assert x.shape == (6, 1, 8, 8)
    terms = m.training_step({"x": torch.full((4, 1, 8, 8), float("nan"))}, STEP)
    assert set(terms) == {"gen_adv", "gen_bn", "gen_one_hot", "gen_entropy", "student_kd"}
    assert all(torch.isfinite(v) for v in terms.values())


def test_a_teacher_on_another_view_is_refused(tmp_path):
    recipe = {**RECIPE, "data": {**RECIPE["data"], "views": {"x": [0, 1], "other": [2]}},
              "teacher": {**RECIPE["teacher"], "view": "other"}}
    with pytest.raises(UserInputError, match=r"teacher.view: method 'cudfkd' generates inputs shaped like view 'x'"):
        edgedistill.run(recipe, out=tmp_path / "never", progress=False)
