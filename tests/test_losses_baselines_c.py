"""VID, OFD and ReviewKD (issue 23, part C): golden values printed by tests/reference/ref_baselines_c.py (numpy,
float64, independent of the package; its output is tests/reference/ref_baselines_c_output.txt), inputs and weights
rebuilt exactly as that script builds them, plus property tests and the losses as recipe terms."""
import numpy as np
import pytest
import torch

from edgedistill.config import TermConfig
from edgedistill.errors import UserInputError
from edgedistill.losses.module_baselines import OFD, VID, gaussian_margin, margin_from_bn, ofd, vid_nll
from edgedistill.losses.reviewkd import ReviewKD, hcl, hcl_level_sizes
from edgedistill.methods.base import Step
from edgedistill.methods.offline import OfflineDistillation
from edgedistill.models import build_model
from edgedistill.registry import LOSSES
from tests.helpers import toy_splits

D = torch.float64


def grid(shape, a, b=0.0):
    n = int(np.prod(shape))
    return torch.sin(torch.arange(n, dtype=D) * a + b).reshape(shape)


def weight(i, shape):
    return 0.5 * grid(shape, 0.1 + 0.07 * i, 0.3 * i)


def fill(module, skip=()):
    """The reference script's weights, in parameter order; BatchNorm in eval mode with mean 0 and variance 1."""
    module.double()
    with torch.no_grad():
        i = 0
        for name, p in module.named_parameters():
            if name in skip:
                continue
            p.copy_(weight(i, tuple(p.shape)))
            i += 1
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
    return module.eval()


# ---------------------------------------------------------------- golden values (ref_baselines_c_output.txt)


def test_vid_golden():
    var = torch.tensor([0.5, 1.0, 2.5], dtype=D)
    assert float(vid_nll(grid((2, 3, 4), 0.31), grid((2, 3, 4), 0.23, 0.5), var)) == pytest.approx(0.131980692234374, abs=1e-12)
    m = fill(VID((3, 5), (4, 5), mid_channels=4), skip=("alpha",))
    with torch.no_grad():
        m.alpha.copy_(grid((4,), 0.9, 0.1))
    assert float(m(grid((2, 3, 5), 0.17), grid((2, 4, 5), 0.29, 0.4)).detach()) == pytest.approx(0.263383009363464, abs=1e-12)
    m2 = fill(VID((2, 4, 4), (3, 2, 2)), skip=("alpha",))  # mid defaults to the teacher's 3 channels; 4x4 pooled to 2x2
    with torch.no_grad():
        m2.alpha.copy_(grid((3,), 0.8, -0.3))
    assert float(m2(grid((2, 2, 4, 4), 0.19), grid((2, 3, 2, 2), 0.37, 0.2)).detach()) == pytest.approx(0.260668780319297, abs=1e-12)


def test_ofd_golden():
    for (mean, std), want in zip(((0.0, 1.0), (-1.0, 2.0), (1.5, 0.5), (3.0, 0.5)),
                                 (-0.797884560802865, -2.01832086767407, -0.141549327465217, -1.5)):
        got = gaussian_margin(torch.tensor([mean], dtype=D), torch.tensor([std], dtype=D))
        assert float(got) == pytest.approx(want, abs=1e-12)
    s, t = 1.3 * grid((2, 3, 4), 0.41, 0.2), 1.1 * grid((2, 3, 4), 0.27, 1.0)
    assert float(ofd(s, t, torch.tensor([-0.2, -0.5, -1.0], dtype=D))) == pytest.approx(5.94628411206877, abs=1e-12)
    t2 = grid((2, 3, 2, 3), 0.53, 0.1)
    m = OFD((4, 2, 3), (3, 2, 3)).double()
    m.train()
    m(grid((2, 4, 2, 3), 0.21, 0.3), t2)  # one training step: the margin is estimated from this teacher map
    assert float(m.margin()[0].detach()) == pytest.approx(-0.635938004566036, abs=1e-12)
    assert float(m.margin()[2].detach()) == pytest.approx(-0.635555283589789, abs=1e-12)
    fill(m)  # eval mode: the estimate stays, BN is gamma * x + beta
    assert float(m(grid((2, 4, 2, 3), 0.21, 0.3), t2).detach()) == pytest.approx(9.33619100563139, abs=1e-12)


def test_hcl_and_reviewkd_golden():
    fs = [grid((2, 2, 8, 8), 0.11), grid((2, 3, 4, 4), 0.13, 0.2), grid((2, 2, 1, 1), 0.7)]
    ft = [grid((2, 2, 8, 8), 0.17, 0.4), grid((2, 3, 4, 4), 0.07, 0.1), grid((2, 2, 1, 1), 0.5, 0.3)]
    assert float(hcl(fs, ft)) == pytest.approx(1.836710784157, abs=1e-12)
    assert float(hcl([grid((2, 3, 6), 0.3)], [grid((2, 3, 6), 0.2, 0.5)])) == pytest.approx(0.749397983239076, abs=1e-12)
    m = fill(ReviewKD([(2, 4, 4), (3, 2, 2), (3,)], [(3, 8, 8), (4, 4, 4), (4,)], mid_channels=3))
    student = [grid((2, 2, 4, 4), 0.15), grid((2, 3, 2, 2), 0.21, 0.3), grid((2, 3), 0.6, 0.2)]
    teacher = [grid((2, 3, 8, 8), 0.12, 0.1), grid((2, 4, 4, 4), 0.18, 0.2), grid((2, 4), 0.5, 0.7)]
    assert float(m(student, teacher).detach()) == pytest.approx(1.76391715726678, abs=1e-12)
    m1 = fill(ReviewKD([(2, 6), (3, 3)], [(2, 6), (3, 3)], mid_channels=2))
    got = m1([grid((2, 2, 6), 0.25), grid((2, 3, 3), 0.33, 0.1)], [grid((2, 2, 6), 0.14, 0.6), grid((2, 3, 3), 0.22, 0.9)])
    assert float(got.detach()) == pytest.approx(1.09752222590773, abs=1e-12)


# ---------------------------------------------------------------- properties


def test_vid_properties():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 4, 5, generator=g, dtype=D)
    assert float(vid_nll(t, t, torch.ones(4, dtype=D))) == 0.0  # perfect mean, unit variance
    mu = torch.randn(3, 4, 5, generator=g, dtype=D)
    best = ((t - mu) ** 2).mean(dim=(0, 2))  # the NLL's minimiser over a per-channel variance is the channel's MSE
    var = best.clone().requires_grad_(True)
    vid_nll(mu, t, var).backward()
    assert torch.allclose(var.grad, torch.zeros_like(var.grad), atol=1e-12)
    assert float(vid_nll(mu, t, best)) < float(vid_nll(mu, t, 1.5 * best))
    assert float(VID((4, 5), (6, 5)).variance()[0].detach()) == pytest.approx(5.0, abs=1e-6)  # init_variance
    assert float(VID((4, 5), (6, 5), init_variance=80.0).variance()[0].detach()) == pytest.approx(80.0, abs=1e-6)
    assert torch.autograd.gradcheck(lambda a, v: vid_nll(a, t, v), (mu.clone().requires_grad_(True), (best + 0.1).requires_grad_(True)))
    m = VID((2, 5), (3, 5)).double()
    s = torch.randn(3, 2, 5, generator=g, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: m(a, t[:, :3]), (s,))


def test_ofd_properties():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(4, 3, 6, generator=g, dtype=D)
    margin = torch.tensor([-0.3, -0.6, -1.2], dtype=D)
    target = torch.maximum(t, margin.view(1, -1, 1))
    assert float(ofd(target, t, margin)) == 0.0  # the student at the margin-ReLU target
    low = target - 1.0 * (target <= 0)  # below a non-positive target: no penalty (the ReLU would zero both)
    assert float(ofd(low, t, margin)) == 0.0
    s = torch.randn(4, 3, 6, generator=g, dtype=D)
    v = float(ofd(s, t, margin))
    assert float(ofd(3 * s, 3 * t, 3 * margin)) == pytest.approx(9 * v, rel=1e-12)  # quadratic in a common scale
    perm = torch.randperm(4, generator=g)
    assert float(ofd(s[perm], t[perm], margin)) == pytest.approx(v, rel=1e-12)
    assert float(ofd(torch.cat([s, s]), torch.cat([t, t]), margin)) == pytest.approx(v, rel=1e-12)  # mean over the batch
    assert torch.autograd.gradcheck(lambda a: ofd(a, t, margin), (s.clone().requires_grad_(True),))
    bn = torch.nn.BatchNorm1d(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    assert torch.allclose(margin_from_bn(bn), torch.tensor([-0.797884560802865, -2.01832086767407, -1.5], dtype=D), atol=1e-12)


def test_ofd_margin_is_estimated_in_training_fixed_on_request_and_checkpointed():
    m = OFD((2, 6), (3, 6)).double()
    assert torch.equal(m.margin(), torch.zeros(3, dtype=D))  # nothing seen yet: a plain ReLU target
    t1, t2 = torch.randn(4, 3, 6, dtype=D), torch.randn(4, 3, 6, dtype=D)
    m(torch.randn(4, 2, 6, dtype=D), t1)
    m(torch.randn(4, 2, 6, dtype=D), t2)
    both = torch.cat([t1, t2]).transpose(0, 1).reshape(3, -1)
    want = torch.stack([row[row < 0].mean() for row in both])
    assert torch.allclose(m.margin(), want, atol=1e-12)
    m.eval()
    m(torch.randn(4, 2, 6, dtype=D), -torch.ones(4, 3, 6, dtype=D))  # evaluation does not move the estimate
    assert torch.allclose(m.margin(), want, atol=1e-12)
    fresh = OFD((2, 6), (3, 6)).double()
    fresh.load_state_dict(m.state_dict())
    assert torch.allclose(fresh.margin(), want, atol=1e-12)
    m.fix_margin(torch.tensor([-1.0, -2.0, -3.0]))
    m.train()
    m(torch.randn(4, 2, 6, dtype=D), t1)
    assert m.margin().tolist() == [-1.0, -2.0, -3.0]
    post_relu = OFD((2, 6), (3, 6))
    post_relu(torch.randn(4, 2, 6), torch.rand(4, 3, 6))  # a teacher tap after a ReLU: no negative response
    assert torch.equal(post_relu.margin(), torch.zeros(3, dtype=D))


def test_hcl_properties():
    g = torch.Generator().manual_seed(2)
    maps = [torch.randn(2, 2, 8, 8, generator=g, dtype=D), torch.randn(2, 3, 10, generator=g, dtype=D)]
    assert float(hcl(maps, maps)) == 0.0
    other = [m + 0.1 * torch.randn(m.shape, generator=g, dtype=D) for m in maps]
    assert float(hcl(maps, other)) > 0
    assert hcl_level_sizes((8, 8), (4, 2, 1)) == [(4, 4), (2, 2), (1, 1)]
    assert hcl_level_sizes((2, 2), (4, 2, 1)) == [(1, 1)]  # levels >= the map's size are skipped
    assert hcl_level_sizes((10,), (4, 2, 1)) == [(4,), (2,), (1,)]
    assert float(hcl(maps[1:], other[1:], levels=())) == pytest.approx(float(((maps[1] - other[1]) ** 2).mean()), rel=1e-12)
    x = maps[0][:1, :1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: hcl([a], [other[0][:1, :1]]), (x,))


@pytest.mark.parametrize("student, teacher", [
    ([(2, 8), (3, 4), (3,)], [(3, 16), (4, 8), (4,)]),  # 1-D stages and an embedding; the teacher twice as long
    ([(2, 4, 4), (3, 2, 2)], [(3, 4, 4), (4, 2, 2)]),
    ((2, 6), (3, 6)),  # one tap per side: a single ABF, no fusion
])
def test_reviewkd_trains_every_part_and_gradchecks(student, teacher):
    m = ReviewKD(student, teacher).double()
    one = isinstance(student[0], int)
    ss = [torch.randn(2, *s, dtype=D) for s in ([student] if one else student)]
    ts = [torch.randn(2, *t, dtype=D) for t in ([teacher] if one else teacher)]
    loss = m(ss[0] if one else ss, ts[0] if one else ts)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert (m.abfs[-1].att is None) and all(a.att is not None for a in m.abfs[:-1])
    m.eval()
    x = ss[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: m([a, *ss[1:]] if not one else a, ts if not one else ts[0]), (x,))


def test_float32_matches_float64():
    s, t = 1.3 * grid((2, 3, 4), 0.41, 0.2), 1.1 * grid((2, 3, 4), 0.27, 1.0)
    assert float(ofd(s.float(), t.float(), torch.tensor([-0.2, -0.5, -1.0]))) == pytest.approx(5.94628411206877, rel=1e-5)
    fs = [grid((2, 2, 8, 8), 0.11).float(), grid((2, 3, 4, 4), 0.13, 0.2).float()]
    ft = [grid((2, 2, 8, 8), 0.17, 0.4).float(), grid((2, 3, 4, 4), 0.07, 0.1).float()]
    assert float(hcl(fs, ft)) == pytest.approx(float(hcl([f.double() for f in fs], [f.double() for f in ft])), rel=1e-5)


@pytest.mark.parametrize("call, message", [
    (lambda: VID((3, 4), (5,)), r"vid: cannot match a student feature of per-sample shape \(3, 4\)"),
    (lambda: VID((3, 4), (5, 4), init_variance=0), r"vid: init_variance must be > 0"),
    (lambda: VID((3, 4), (5, 4), mid_channels=-1), r"vid: mid_channels must be an integer >= 0"),
    (lambda: VID((3, 4), (5, 4))(torch.zeros(2, 4, 4), torch.zeros(2, 5, 4)), r"vid: student_feat has per-sample shape \(4, 4\) but this loss was built for \(3, 4\)"),
    (lambda: VID((3, 4), (5, 4))(torch.zeros(2, 3, 4), torch.zeros(3, 5, 4)), r"vid: student_feat has 2 samples but teacher_feat has 3"),
    (lambda: vid_nll(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2)), r"vid: variance must hold one value per teacher channel \(3\)"),
    (lambda: OFD((3, 4, 4), (5, 4)), r"ofd: cannot match"),
    (lambda: ofd(torch.zeros(2, 3, 4), torch.zeros(2, 5, 4), torch.zeros(5)), r"ofd: student_feat has shape \(2, 3, 4\) but teacher_feat"),
    (lambda: OFD((3, 4), (5, 4)).fix_margin(torch.ones(5)), r"ofd: a margin must be 5 finite values <= 0"),
    (lambda: ReviewKD([(3, 4), (4, 2)], [(3, 4)]), r"reviewkd: 2 student taps but 1 teacher taps"),
    (lambda: ReviewKD([(3, 4), (4, 2, 2)], [(3, 4), (4, 2, 2)]), r"reviewkd: the taps must all be \(C, L\) maps or all"),
    (lambda: ReviewKD((3, 4), (3, 4), levels=(2, 0)), r"reviewkd: levels must be a list of pooled sizes >= 1"),
    (lambda: ReviewKD([(3, 4), (4, 2)], [(3, 4), (4, 2)])([torch.zeros(2, 3, 4)], [torch.zeros(2, 3, 4), torch.zeros(2, 4, 2)]),
     r"reviewkd: student_feat has 1 maps but this loss was built for 2"),
    (lambda: ReviewKD((3, 4), (3, 4))(torch.zeros(2, 3, 5), torch.zeros(2, 3, 4)), r"reviewkd: student_feat\[0\] has per-sample shape \(3, 5\)"),
])
def test_errors_name_the_tensors(call, message):
    with pytest.raises(UserInputError, match=message):
        call()


# ---------------------------------------------------------------- as recipe terms


def test_registered_names():
    assert LOSSES.get("vid") is VID and LOSSES.get("ofd") is OFD and LOSSES.get("reviewkd") is ReviewKD
    for name in ("vid", "ofd", "reviewkd"):
        assert LOSSES.entry(name).doc and "task" not in LOSSES.entry(name).meta


@pytest.mark.parametrize("term", [
    {"loss": "vid", "weight": 1.0, "student_tap": "stage2", "teacher_tap": "stage2"},
    {"loss": "ofd", "weight": 1e-3},
    {"loss": "reviewkd", "weight": 1.0, "mid_channels": 8, "levels": [2, 1]},
])
def test_terms_build_from_the_networks_and_train_on_1d_maps(term):
    splits = toy_splits()
    s, t = build_model("cnn1d", 3, 3, (16,), width=4), build_model("fcn", 3, 3, (16,), width=0.25)
    m = OfflineDistillation(s, splits.info, t, [TermConfig(loss="ce"), TermConfig(**term)])
    label = term["loss"]
    module = m.networks[f"loss_{label}"]
    out = m.training_step(splits.train.batch(torch.arange(8)), Step(0, 0, 1, 1))
    total = out["ce"] + out[label]
    total.backward()
    assert torch.isfinite(total) and all(p.grad is not None for p in module.parameters())


def test_reviewkd_reviews_several_stages_named_by_a_list_of_taps():
    splits = toy_splits()
    s, t = build_model("cnn1d", 3, 3, (16,), width=4), build_model("fcn", 3, 3, (16,), width=0.25)
    taps = ["stage1", "stage2", "feat", "emb"]
    m = OfflineDistillation(s, splits.info, t, [TermConfig(loss="ce"), TermConfig(loss="reviewkd", student_tap=taps,
                                                                                    teacher_tap=taps)])
    module = m.networks["loss_reviewkd"]
    assert len(module.abfs) == 4 and module.student_shapes == [(4, 16), (4, 16), (4, 16), (4,)]
    assert module.teacher_shapes[-1] == (32,)  # fcn width 0.25: 32 channels in its last block, pooled
    out = m.training_step(splits.train.batch(torch.arange(8)), Step(0, 0, 1, 1))
    (out["ce"] + out["reviewkd"]).backward()
    assert all(p.grad is not None for p in module.parameters())  # every ABF, the fusion gates included, trains
