"""Issue 23 part A baselines (nst, fsp, cc, kdsvd, ickd, mlkd, logit_std, dist_plus): golden values printed by
tests/reference/ref_baselines_a.py (its output: tests/reference/ref_baselines_a_output.txt; inputs rebuilt here
exactly as the script builds them) and property tests: zero at identity, invariances, gradcheck, errors."""
import math

import numpy as np
import pytest
import torch

from edgedistill.errors import UserInputError
from edgedistill.losses.feature_baselines import ICKD, cc, fsp, ickd, kdsvd, nst
from edgedistill.losses.logit_baselines import DistPlus, dist_features, dist_plus, logit_std, mlkd
from edgedistill.losses.response_extra import std_normalized_kd
from edgedistill.registry import LOSSES


def grid(shape, a, b=0.0):
    """The reference script's grid(): sin(a * arange(prod(shape)) + b) reshaped."""
    n = int(np.prod(shape))
    return torch.sin(torch.arange(n, dtype=torch.float64) * a + b).reshape(shape)


def rough(shape, a, b=0.0):
    """The reference script's rough(): sin(a * arange(prod(shape))^1.5 + b), full-rank matrices for KD-SVD."""
    n = int(np.prod(shape))
    return torch.sin(torch.arange(n, dtype=torch.float64) ** 1.5 * a + b).reshape(shape)


ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.2, -0.3, 1.5, 0.0], [2.0, 0.1, -0.5, 0.3], [-1.0, 0.4, 0.2, 1.1]], dtype=torch.float64)
ZT = torch.tensor([[2.0, 1.0, 0.0, -2.0], [0.0, 0.5, 2.5, -1.0], [1.5, 0.5, 0.5, 0.0], [-0.5, 0.0, 1.0, 2.0]], dtype=torch.float64)
S_FSP = [grid((2, 3, 8), 0.21), grid((2, 4, 4), 0.33, 0.2), grid((2, 2, 4), 0.41, 0.5)]
T_FSP = [grid((2, 3, 4), 0.27, 0.3), grid((2, 4, 4), 0.19, 0.1), grid((2, 2, 2), 0.37, 0.7)]
S_SVD = [rough((2, 5, 9), 0.71), rough((2, 4, 6), 0.53, 0.3)]
T_SVD = [rough((2, 5, 7), 0.67, 0.2), rough((2, 4, 8), 0.59, 0.9)]


# Each value as ref_baselines_a.py prints it (12 decimals), under its printed name.
@pytest.mark.parametrize(
    "name, value, printed",
    [
        ("NST_1d_pooled", lambda: nst(grid((2, 3, 8), 0.31), grid((2, 4, 4), 0.23, 0.4)), 0.264595685455),
        ("NST_2d", lambda: nst(grid((2, 3, 2, 3), 0.17), grid((2, 5, 2, 3), 0.29, 0.1)), 0.084282353727),
        ("FSP_three_taps", lambda: fsp(S_FSP, T_FSP), 0.591807377966),
        ("CC_gamma0.4_order2", lambda: cc(grid((5, 6), 0.57), grid((5, 9), 0.43, 0.1)), 0.060930639588),
        ("CC_gamma0.4_order3", lambda: cc(grid((5, 6), 0.57), grid((5, 9), 0.43, 0.1), order=3), 0.069014419031),
        ("ICKD_1d", lambda: ickd(grid((2, 4, 6), 0.45), grid((2, 4, 3), 0.33, 0.7)), 1.920641341948),
        ("ICKD_2d", lambda: ickd(grid((3, 3, 2, 2), 0.13), grid((3, 3, 2, 2), 0.11, 0.2)), 0.428460608400),
        ("KDSVD_k1", lambda: kdsvd(S_SVD, T_SVD), 0.083448896119),
        ("KDSVD_k2", lambda: kdsvd(S_SVD, T_SVD, k=2), 0.043366039481),
        ("MLKD_T23456", lambda: mlkd(ZS, ZT), 1.267458459500),
        ("MLKD_T4_instance_only", lambda: mlkd(ZS, ZT, (4.0,), 1.0, 0.0, 0.0), 0.248382786136),
        ("MLKD_T4_batch_only", lambda: mlkd(ZS, ZT, (4.0,), 0.0, 1.0, 0.0), 0.000354696935),
        ("MLKD_T4_class_only", lambda: mlkd(ZS, ZT, (4.0,), 0.0, 0.0, 1.0), 0.003334014766),
        ("LogitStd_T2", lambda: logit_std(ZS, ZT), 0.112731088661),
        ("LogitStd_T3", lambda: logit_std(ZS, ZT, 3.0), 0.119124793090),
        ("DISTplus_feature_part", lambda: dist_features(grid((4, 3, 4), 0.39), grid((4, 3, 2), 0.47, 0.6)), 1.408619771417),
        ("DISTplus_T1_featweight1", lambda: dist_plus(ZS, ZT, grid((4, 3, 4), 0.39), grid((4, 3, 2), 0.47, 0.6)), 1.836201640547),
        ("DISTplus_T4_featweight0.5",
         lambda: dist_plus(ZS, ZT, grid((4, 3, 4), 0.39), grid((4, 3, 2), 0.47, 0.6), temperature=4.0, feat_weight=0.5),
         6.626186167396),
    ],
)
def test_golden_ref_baselines_a(name, value, printed):
    assert float(value()) == pytest.approx(printed, abs=1e-10), name


def test_cc_taylor_series_approaches_the_exact_rbf_kernel():
    # CC_gamma0.4_exact_kernel = 0.069197373455: the series converges to it as the order grows.
    s, t = grid((5, 6), 0.57), grid((5, 9), 0.43, 0.1)
    assert float(cc(s, t, order=12)) == pytest.approx(0.069197373455, abs=1e-10)


def test_registered_names_and_kinds():
    assert LOSSES.get("nst") is nst and LOSSES.get("fsp") is fsp and LOSSES.get("cc") is cc
    assert LOSSES.get("kdsvd") is kdsvd and LOSSES.get("ickd") is ICKD
    assert LOSSES.get("mlkd") is mlkd and LOSSES.get("logit_std") is logit_std and LOSSES.get("dist_plus") is DistPlus
    for name in ("mlkd", "logit_std", "dist_plus"):
        assert LOSSES.entry(name).meta.get("task") == "classification"
    for name in ("nst", "fsp", "cc", "kdsvd", "ickd"):
        assert LOSSES.entry(name).doc and "task" not in LOSSES.entry(name).meta


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("positions", [(7,), (3, 4)], ids=["1d", "2d"])
def test_zero_at_identity_on_1d_and_2d_maps(positions):
    a, b = _rand(3, 4, *positions, seed=1), _rand(3, 5, *positions, seed=2)
    assert float(nst(a, a)) == pytest.approx(0.0, abs=1e-12)
    assert float(cc(a, a)) == pytest.approx(0.0, abs=1e-12)
    assert float(ickd(a, a)) == pytest.approx(0.0, abs=1e-12)
    assert float(fsp([a, b], [a, b])) == pytest.approx(0.0, abs=1e-12)
    assert float(kdsvd([a, b], [a, b])) == pytest.approx(0.0, abs=1e-12)
    assert float(dist_features(a, a)) == pytest.approx(0.0, abs=1e-6)  # 1e-8 in DIST's denominator
    for loss in (nst, cc, ickd):
        assert float(loss(a, b if loss is not ickd else a.flip(0))) > 0


def test_invariances():
    s, t = _rand(3, 4, 6, seed=3), _rand(3, 5, 6, seed=4)
    v = float(nst(s, t))
    # NST normalises each channel pattern and the kernel is even: scale and sign of a channel do not matter,
    # nor does the order of channels.
    assert float(nst(2.5 * s, t)) == pytest.approx(v, rel=1e-10)
    assert float(nst(s * torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)[None, :, None], t)) == pytest.approx(v, rel=1e-10)
    assert float(nst(s[:, [2, 0, 3, 1]], t)) == pytest.approx(v, rel=1e-10)
    # CC: rows are L2-normalised, and a common permutation of the batch permutes both N x N matrices.
    perm = torch.tensor([2, 0, 1])
    assert float(cc(3.0 * s, t)) == pytest.approx(float(cc(s, t)), rel=1e-10)
    assert float(cc(s[perm], t[perm])) == pytest.approx(float(cc(s, t)), rel=1e-10)
    # ICKD: row-normalised Gram matrices ignore a per-sample scale; FSP and ICKD: a common rotation of positions.
    tt = _rand(3, 4, 6, seed=5)
    assert float(ickd(s * torch.tensor([1.0, 4.0, 0.5], dtype=torch.float64)[:, None, None], tt)) == pytest.approx(float(ickd(s, tt)), rel=1e-10)
    q, _ = torch.linalg.qr(_rand(6, 6, seed=6))
    assert float(ickd(s @ q, tt @ q)) == pytest.approx(float(ickd(s, tt)), rel=1e-9)
    s2, t2 = _rand(3, 2, 6, seed=7), _rand(3, 2, 6, seed=8)
    assert float(fsp([s @ q, s2 @ q], [tt @ q, t2 @ q])) == pytest.approx(float(fsp([s, s2], [tt, t2])), rel=1e-9)
    # KD-SVD: the right singular vectors of (positions x channels) ignore a rotation of the positions.
    assert float(kdsvd([s @ q, s2 @ q], [tt @ q, t2 @ q])) == pytest.approx(float(kdsvd([s, s2], [tt, t2])), rel=1e-8, abs=1e-12)
    # logit_std: a per-sample scale and shift of either side changes nothing; it is std_normalized_kd at its T.
    scale = torch.tensor([[2.0], [0.5], [3.0], [1.5]], dtype=torch.float64)
    assert float(logit_std(scale * ZS + 1.0, ZT - 2.0)) == pytest.approx(float(logit_std(ZS, ZT)), rel=1e-10)
    assert float(logit_std(ZS, ZT, 3.0)) == pytest.approx(float(std_normalized_kd(ZS, ZT, 3.0)), rel=1e-12)
    # MLKD: per-row logit shifts do not change any softmax.
    assert float(mlkd(ZS + torch.arange(4.0, dtype=torch.float64)[:, None], ZT)) == pytest.approx(float(mlkd(ZS, ZT)), rel=1e-10)
    assert float(mlkd(ZS, ZS)) == pytest.approx(0.0, abs=1e-12) and float(logit_std(ZS, 2 * ZS)) == pytest.approx(0.0, abs=1e-12)


def test_mlkd_rows_from_positions_and_the_sum_over_temperatures():
    s, t = _rand(2, 4, 3, seed=9), _rand(2, 4, 3, seed=10)
    rows = lambda z: z.movedim(1, -1).reshape(-1, 4)  # noqa: E731
    assert float(mlkd(s, t)) == pytest.approx(float(mlkd(rows(s), rows(t))), rel=1e-12)
    assert float(mlkd(ZS, ZT, (2.0, 3.0))) == pytest.approx(float(mlkd(ZS, ZT, (2.0,)) + mlkd(ZS, ZT, (3.0,))), rel=1e-12)


def test_gradcheck():
    s, t = _rand(3, 2, 5, seed=11).requires_grad_(True), _rand(3, 4, 5, seed=12)
    s_long = _rand(3, 2, 10, seed=13).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: nst(a, t), (s_long,))  # through the pooling
    assert torch.autograd.gradcheck(lambda a: cc(a, t), (s,))
    assert torch.autograd.gradcheck(lambda a: ickd(a, t[:, :2]), (s_long,))
    second_s, second_t = _rand(3, 3, 5, seed=14), _rand(3, 3, 5, seed=15)
    assert torch.autograd.gradcheck(lambda a: fsp([a, second_s], [t[:, :2], second_t]), (s_long,))
    svd_s, svd_t = [_rand(2, 3, 6, seed=16), _rand(2, 3, 5, seed=17)], [_rand(2, 3, 7, seed=18), _rand(2, 3, 6, seed=19)]
    first = svd_s[0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: kdsvd([a, svd_s[1]], svd_t), (first,))
    z = ZS.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: mlkd(a, ZT), (z,))
    assert torch.autograd.gradcheck(lambda a: logit_std(a, ZT), (z,))
    fs, ft = _rand(4, 3, 4, seed=20).requires_grad_(True), _rand(4, 3, 2, seed=21)
    assert torch.autograd.gradcheck(lambda a, f: dist_plus(a, ZT, f, ft), (z, fs))


def test_dead_channels_keep_gradients_finite():
    s = torch.rand(2, 3, 6)
    s[:, 1] = 0.0  # a dead ReLU channel: F.normalize would give it a 1e12 gradient
    s.requires_grad_(True)
    (nst(s, torch.rand(2, 4, 6)) + ickd(s, torch.rand(2, 3, 6))).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().max() < 1e3


@pytest.mark.parametrize("s_shape, t_shape", [((4, 12), (6, 6)), ((3, 4, 4), (5, 2, 2))], ids=["1d", "2d"])
def test_modules_adapt_train_and_work_on_1d_and_2d(s_shape, t_shape):
    s, t = torch.randn(4, *s_shape), torch.randn(4, *t_shape)
    for module in (ICKD(s_shape, t_shape), DistPlus(s_shape, t_shape, temperature=4.0)):
        args = (torch.randn(4, 5), torch.randn(4, 5), s, t) if isinstance(module, DistPlus) else (s, t)
        loss = module(*args)
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in module.parameters())
    assert not list(DistPlus((3, 4), (3, 4)).parameters())  # equal widths: no adapter, the function itself


def test_fsp_and_kdsvd_on_the_default_tap_pair_of_zoo_shaped_maps():
    # cnn1d (width 16) and fcn (width 0.125: 16-32-16) at [stage1, feat]: 16 channels each, length 40.
    s = [torch.randn(4, 16, 40), torch.randn(4, 16, 40)]
    t = [torch.randn(4, 16, 40), torch.randn(4, 16, 40)]
    for loss in (fsp, kdsvd):
        value = loss(s, t)
        assert value.shape == () and math.isfinite(float(value))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fsp(torch.zeros(2, 3, 4), [torch.zeros(2, 3, 4)] * 2), r"fsp: student_feat must be a list of at least 2 feature maps .*student_tap: \[stage1, feat\]"),
        (lambda: fsp([torch.zeros(2, 3, 4)], [torch.zeros(2, 3, 4)] * 2), r"fsp: student_feat must hold at least 2"),
        (lambda: fsp([torch.zeros(2, 3, 4)] * 2, [torch.zeros(2, 3, 4)] * 3), r"student_feat has 2 maps but teacher_feat has 3"),
        (lambda: fsp([torch.zeros(2, 3, 4)] * 2, [torch.zeros(2, 5, 4)] * 2), r"fsp: taps 0 and 1 give a student FSP matrix of shape \(3, 3\)"),
        (lambda: kdsvd([torch.zeros(2, 3, 4)] * 2, [torch.zeros(2, 5, 4)] * 2), r"kdsvd: student_feat\[0\] has 3 channels but teacher_feat\[0\] has 5"),
        (lambda: kdsvd([torch.rand(2, 3, 4)] * 2, [torch.rand(2, 3, 4)] * 2, k=4), r"kdsvd: k = 4 but tap 0 has rank at most 3"),
        (lambda: kdsvd([torch.rand(2, 3, 4)] * 2, [torch.rand(2, 3, 4)] * 2, k=0), r"kdsvd: k must be an integer >= 1"),
        (lambda: nst(torch.zeros(2, 3), torch.zeros(2, 3, 4)), r"nst: student_feat must be a feature map"),
        (lambda: nst(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4)), r"nst: student_feat has 2 samples but teacher_feat has 3"),
        (lambda: cc(torch.zeros(2, 3), torch.zeros(2, 3), gamma=0), r"cc: gamma must be > 0"),
        (lambda: cc(torch.zeros(2, 3), torch.zeros(2, 3), order=0), r"cc: order must be an integer >= 1"),
        (lambda: ickd(torch.zeros(2, 3, 4), torch.zeros(2, 5, 4)), r"ickd: student_feat has 3 channels but teacher_feat has 5"),
        (lambda: ICKD((3,), (5,)), r"ickd: needs feature maps"),
        (lambda: ICKD((3, 4), (5, 4))(torch.zeros(2, 4, 4), torch.zeros(2, 5, 4)), r"ickd: student_feat has per-sample shape \(4, 4\) but this loss was built for \(3, 4\)"),
        (lambda: mlkd(ZS, ZT, ()), r"mlkd: temperatures must be a non-empty list"),
        (lambda: mlkd(ZS, ZT, (2.0, 0.0)), r"mlkd: temperatures must be > 0"),
        (lambda: mlkd(ZS, ZT[:, :3]), r"mlkd: student_logits has shape \(4, 4\) but teacher_logits has shape \(4, 3\)"),
        (lambda: logit_std(ZS, ZT, 0.0), r"logit_std: temperature must be > 0"),
        (lambda: dist_features(torch.zeros(2, 3, 4), torch.zeros(2, 5, 4)), r"dist_plus: student_feat has 3 channels but teacher_feat has 5"),
        (lambda: DistPlus((3, 4), (3, 4), feat_weight=-1.0), r"dist_plus: feat_weight must be >= 0"),
    ],
)
def test_errors_name_the_tensors(call, message):
    with pytest.raises(UserInputError, match=message):
        call()


def test_kdsvd_svd_gradient_is_torchs_on_full_rank_maps_and_finite_on_dead_channels():
    """The SVD's backward is the official code's: torch's own where singular values are distinct, and 0 instead of
    NaN for the 1/(s_j^2 - s_i^2) and 1/s entries of repeated or zero singular values (dead ReLU channels)."""
    from edgedistill.losses.feature_baselines import _ThinSVD

    g = torch.Generator().manual_seed(0)
    for shape in [(3, 9, 4), (3, 4, 9)]:  # positions >= channels, and fewer positions than channels
        x = torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)
        w_s = torch.randn(shape[0], min(shape[1:]), dtype=torch.float64, generator=g)
        w_v = torch.randn(shape[0], shape[2], min(shape[1:]), dtype=torch.float64, generator=g)
        use = lambda s, v: (s * w_s).sum() + (v * v.sign().detach() * w_v).sum()  # noqa: E731 - sign-free in v
        ours, = torch.autograd.grad(use(*_ThinSVD.apply(x)), x)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        theirs, = torch.autograd.grad(use(s, vh.mT), x)
        assert torch.allclose(ours, theirs, atol=1e-10)
        assert torch.autograd.gradcheck(lambda x: use(*_ThinSVD.apply(x)), (x,))
    dead = torch.randn(2, 6, 10, dtype=torch.float64, generator=g)
    dead[:, 3:] = 0  # three channels that never fire: three zero singular values
    dead.requires_grad_(True)
    loss = kdsvd([dead, dead * 2], [torch.randn(2, 6, 10, dtype=torch.float64, generator=g)] * 2, k=1)
    grad, = torch.autograd.grad(loss, dead)
    assert torch.isfinite(grad).all()
    _, s, vh = torch.linalg.svd(dead.transpose(1, 2), full_matrices=False)
    plain, = torch.autograd.grad(vh[:, :1].sum() + s.sum(), dead)
    assert not torch.isfinite(plain).all()  # what torch's own backward gives there
