"""Golden values from tests/reference/ref_asu.py (printed in ref_asu_output.txt) and CAMKD_weights from
tests/reference/ref_others.py section 5 (printed in ref_others_output.txt), built from the same inputs as the
reference scripts, plus property tests."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedistill.errors import UserInputError
from edgedistill.losses.angular import amc, amd, amd_terms, positive_map, orthogonal_sphere
from edgedistill.losses.multiteacher import confidence_weights, correlation_map, correlation_orthogonality
from edgedistill.losses.feature import batch_gram
from edgedistill.losses.sequence import cosine_matrix, similarity_keeping, time_aware_kd, time_aware_terms
from edgedistill.registry import LOSSES

D = torch.float64
XS = torch.tensor([[[[1, .5], [0, 2]], [[.5, .5], [1, 0]]], [[[0, 1], [1, 1]], [[2, 0], [0, 1]]]], dtype=D)
XT = torch.tensor([[[[2, 0], [0, 1]], [[1, 1], [0, 0]], [[0, .5], [.5, 0]]],
                   [[[.5, .5], [.5, .5]], [[1, 0], [1, 0]], [[0, 2], [0, 0]]]], dtype=D)
XS4 = torch.arange(64, dtype=D).reshape(2, 2, 4, 4) % 5 / 4.0
XT4 = (torch.arange(96, dtype=D).reshape(2, 3, 4, 4) * 7 % 11) / 10.0
EMB = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 1]], dtype=D)
EMB_Y = torch.tensor([0, 1, 0, 2])
FM = torch.tensor([[3.0, 4, 0], [0, 1, 1], [2, 0, 2], [1, 1, 1]], dtype=D)
FS9 = torch.tensor([[1.0, 2], [0, 1], [1, 0]], dtype=D)
FT9 = torch.tensor([[1.0, 0, 1], [2, 1, 0], [0, 0, 1]], dtype=D)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=D)
ZTA = torch.stack([ZT, ZT.flip(1), ZT * 0.5])  # tests/reference/ref_others.py: ZT, ZT[:, ::-1], ZT * 0.5
Y3 = torch.tensor([1, 2, 0])


def close(value, expected, tol=1e-6):
    assert float(value) == pytest.approx(float(expected), abs=tol)


# ---------------------------------------------------------------- goldens
@pytest.mark.parametrize(
    "value, expected",
    [
        (lambda: amd(XS, XT), 0.3184827531),  # AMD(code)
        (lambda: amd_terms(XS, XT)[0], 0.1803582803),  # term A
        (lambda: amd_terms(XS, XT)[1], 0.6438640440),  # term P
        (lambda: amd_terms(XS, XT)[2], 0.1312259350),  # term N
        (lambda: amd(7 * XS, XT), 0.3184827677),  # student features x7 (the 1e-6 eps shows at 1e-8)
        (lambda: amd(XT, XT), 0.0),
        (lambda: amd(XS, XT) * 2 * 4, 2.5478620245),  # paper's Frobenius^2 sums / 3 = code mean x B*HW
        (lambda: amd(XS4, XT4), 0.0177747592),  # global
        (lambda: amd(XS4, XT4, local_weight=1.0), 0.0761044774),  # mean over quadrants, full-map normalisation
        (lambda: amd(XS4, XT4, local_weight=0.2), 0.0294407028),  # 0.8 g + 0.2 l
        (lambda: amc(EMB, EMB_Y), 0.3084251375),  # L_AMC m = 0.5
        (lambda: amc(EMB, EMB_Y, margin=1.5), 0.5637530300),  # L_AMC m = 1.5
        (lambda: orthogonal_sphere(FM, "A"), 2.1150256106),
        (lambda: orthogonal_sphere(FM, "A") ** 2, 4.4733333333),
        (lambda: orthogonal_sphere(FM, "B"), 2.0105820106),
        (lambda: orthogonal_sphere(FM, "C"), 5.4733333333),
        (lambda: orthogonal_sphere(torch.eye(3, dtype=D)), 0.0),
        (lambda: similarity_keeping(FS9, FT9), 0.0224171797),  # MUSE form (our default)
        (lambda: similarity_keeping(FS9, FT9, form="sp"), 0.0754932783),  # SP template (a), also TaKD's L_sim
    ],
)
def test_golden(value, expected):
    close(value(), expected)


def test_amd_positive_maps():
    qs = [[0.2881951424, 0.1152780570, 0.2305561139, 0.9222244557], [0.8528026836, 0.2132006709, 0.2132006709, 0.4264013418]]
    qt = [[0.9513028073, 0.2378257018, 0.0475651404, 0.1902605615], [0.2711630134, 0.9219542457, 0.2711630134, 0.0542326027]]
    assert torch.allclose(positive_map(XS).flatten(1), torch.tensor(qs, dtype=D), atol=1e-9)
    assert torch.allclose(positive_map(XT).flatten(1), torch.tensor(qt, dtype=D), atol=1e-9)


def test_similarity_matrices_of_the_muse_form():
    ss = [[1, .894427191, .4472135955], [.894427191, 1, 0], [.4472135955, 0, 1]]
    st_ = [[1, .632455532, .7071067812], [.632455532, 1, 0], [.7071067812, 0, 1]]
    assert torch.allclose(cosine_matrix(FS9), torch.tensor(ss, dtype=D), atol=1e-9)
    assert torch.allclose(cosine_matrix(FT9), torch.tensor(st_, dtype=D), atol=1e-9)


def test_camkd_weights_golden_and_properties():
    expected = torch.tensor([[0.390908, 0.462936, 0.37339], [0.203458, 0.09144, 0.291255], [0.405634, 0.445623, 0.335355]], dtype=D)
    w = confidence_weights(ZTA, Y3)
    assert w.shape == (3, 3)
    assert torch.allclose(w, expected, atol=1e-6)
    assert torch.allclose(confidence_weights(list(ZTA), Y3), w)  # a list of K tensors works the same
    assert torch.allclose(w.sum(0), torch.ones(3, dtype=D))
    assert bool((w >= 0).all() and (w <= 0.5 + 1e-12).all())
    ce = torch.stack([F.cross_entropy(z, Y3, reduction="none") for z in ZTA])
    for i in range(3):  # lower CE -> strictly larger weight
        order = ce[:, i].argsort()
        assert bool((w[order, i].diff() < 0).all())
    assert torch.allclose(confidence_weights([ZT, ZT, ZT, ZT], Y3), torch.full((4, 3), 0.25, dtype=D))


def test_correlation_map_reproduces_the_tgd_merged_similarity_vector():
    fs = torch.tensor([[1.0, 0, 1], [0, 2, 0], [1, 1, 1]], dtype=D)
    ft1 = torch.tensor([[2.0, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 1]], dtype=D)
    ft2 = torch.tensor([[0.0, 1], [1, 0], [1, 1]], dtype=D)
    merged = F.normalize(0.99 * batch_gram(ft1) + 0.01 * batch_gram(ft2), dim=1)
    close(F.mse_loss(correlation_map(fs), merged), 0.0184942181)


# ---------------------------------------------------------------- AMD properties
maps = st.lists(st.floats(0.3, 3), min_size=24, max_size=24).map(lambda v: torch.tensor(v, dtype=D).view(2, 3, 4))


@settings(max_examples=25, deadline=None)
@given(maps, maps, st.floats(0.5, 20), st.permutations(range(3)), st.permutations(range(4)))
def test_amd_properties(s, t, c, chan_perm, pos_perm):
    value = float(amd(s, t))
    assert float(amd(t, t)) == pytest.approx(0.0, abs=1e-12)
    assert float(amd(c * s, t)) == pytest.approx(value, abs=1e-4)  # scale, up to the code's 1e-6 eps
    assert float(amd(s[:, list(chan_perm)], t)) == pytest.approx(value, abs=1e-12)  # only channel energy matters
    assert float(amd(s[..., list(pos_perm)], t[..., list(pos_perm)])) == pytest.approx(value, abs=1e-12)
    assert float(amd(s[:, :2], t)) >= 0  # fewer student channels than teacher channels
    for term in amd_terms(s, t):  # unit vectors per sample: each term <= 4 / positions
        assert 0 <= float(term) <= 4 / 4 + 1e-12


def test_amd_1d_segments_float32_and_gradients():
    torch.manual_seed(0)
    s, t = torch.rand(3, 4, 10, dtype=D) + 0.1, torch.rand(3, 6, 10, dtype=D) + 0.1
    halves = [amd(s[..., a:b], t[..., a:b]) for a, b in ((0, 5), (5, 10))]
    # local blocks cut the full-map attention without re-normalising, so they differ from amd on halves ...
    qs, qt = positive_map(s), positive_map(t)
    assert float(amd(s, t, local_weight=1.0)) != pytest.approx(float(sum(halves) / 2), abs=1e-9)
    assert qs.shape == (3, 10) and qt.shape == (3, 10)
    # ... and with one piece the only block is the full map, so local == global
    assert float(amd(s, t, local_weight=0.7, local_splits=1)) == pytest.approx(float(amd(s, t)), abs=1e-12)
    close(amd(XS.float(), XT.float()), 0.3184827531, tol=1e-5)
    a = s.clone().requires_grad_(True)
    amd(a, t, local_weight=0.2).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda x: amd(x, t[:2, :, :4], local_weight=0.3), (s[:2, :, :4].clone().requires_grad_(True),))


def test_amd_shape_errors():
    with pytest.raises(UserInputError, match="batch and spatial sizes must match"):
        amd(XS, XT[..., :1])
    with pytest.raises(UserInputError, match="student_feat must be a \\(N, C, L\\)"):
        amd(XS.flatten(1), XT)
    with pytest.raises(UserInputError, match="local_weight must be in"):
        amd(XS, XT, local_weight=1.5)
    with pytest.raises(UserInputError, match="margin must be > 0"):
        amd(XS, XT, margin=0)


# ---------------------------------------------------------------- AMC and OS
def test_amc_properties():
    assert float(amc(EMB * torch.tensor([[2.0], [0.5], [3.0], [7.0]], dtype=D), EMB_Y)) == pytest.approx(0.3084251375, abs=1e-9)
    parallel = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0], [0.0, 1.0]], dtype=D)  # pair 0 parallel, pair 1 at 90 deg
    assert float(amc(parallel, torch.tensor([0, 1, 0, 2]))) == pytest.approx(0.0, abs=1e-6)
    e = parallel.clone().requires_grad_(True)
    amc(e, torch.tensor([0, 1, 0, 2])).backward()  # the different-class pair is beyond the margin: no gradient
    assert torch.allclose(e.grad[[1, 3]], torch.zeros(2, 2, dtype=D))
    close(amc(torch.cat([EMB, EMB[:1]]), torch.cat([EMB_Y, EMB_Y[:1]])), 0.3084251375)  # odd last sample unused
    x = torch.randn(6, 4, dtype=D, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda z: amc(z, torch.tensor([0, 1, 2, 0, 2, 2]), 2.0), (x.requires_grad_(True),))
    with pytest.raises(UserInputError, match="integer class indices"):
        amc(EMB, EMB_Y.double())


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.1, 10), min_size=3, max_size=3), st.lists(st.floats(0.1, 10), min_size=4, max_size=4))
def test_orthogonal_sphere_invariances(col_scale, row_scale):
    cols, rows = torch.tensor(col_scale, dtype=D), torch.tensor(row_scale, dtype=D)[:, None]
    assert float(orthogonal_sphere(FM * cols, "B")) == pytest.approx(2.0105820106, abs=1e-9)
    assert float(orthogonal_sphere(FM * rows, "A")) == pytest.approx(2.1150256106, abs=1e-9)
    assert float(orthogonal_sphere(torch.eye(3, dtype=D) * cols, "B")) == pytest.approx(0.0, abs=1e-12)


def test_orthogonal_sphere_gradients_and_errors():
    eye = torch.eye(3, dtype=D).requires_grad_(True)
    orthogonal_sphere(eye).backward()  # the norm is 0 there: the gradient must be 0, not NaN
    assert torch.equal(eye.grad, torch.zeros(3, 3, dtype=D))
    for v in "ABC":
        assert torch.autograd.gradcheck(lambda f: orthogonal_sphere(f, v), (FM.clone().requires_grad_(True),))
    assert torch.isfinite(orthogonal_sphere(torch.randn(4, 2, 3)))  # extra dims flattened, float32
    with pytest.raises(UserInputError, match="variant must be one of A, B, C"):
        orthogonal_sphere(FM, "D")


# ---------------------------------------------------------------- similarity keeping
SIGNS = torch.tensor([[1, -1, 1], [1, 1, -1], [-1, 1, 1], [1, 1, 1]], dtype=D)  # mixed signs, no all-zero row
feats = st.lists(st.floats(0.1, 5), min_size=12, max_size=12).map(lambda v: torch.tensor(v, dtype=D).view(4, 3) * SIGNS)


@settings(max_examples=30, deadline=None)
@given(feats, feats, st.floats(0.1, 10), st.lists(st.floats(0.1, 10), min_size=4, max_size=4), st.permutations(range(3)))
def test_similarity_keeping_properties(s, t, c, per_sample, perm):
    rows = torch.tensor(per_sample, dtype=D)[:, None]
    for form in ("cosine", "sp"):
        value = float(similarity_keeping(s, t, form=form))
        assert float(similarity_keeping(t, t, form=form)) == pytest.approx(0.0, abs=1e-12)
        assert float(similarity_keeping(c * s, t / c, form=form)) == pytest.approx(value, abs=1e-9)
        assert float(similarity_keeping(s[:, list(perm)], t, form=form)) == pytest.approx(value, abs=1e-9)
        assert float(similarity_keeping(s[:, :2], t, form=form)) >= -1e-12  # widths may differ
    assert float(similarity_keeping(rows * s, t)) == pytest.approx(float(similarity_keeping(s, t)), abs=1e-9)


def test_similarity_keeping_registered_feature_maps_and_gradcheck():
    assert LOSSES.get("similarity_keeping") is similarity_keeping and LOSSES.get("amd") is amd
    assert "task" not in LOSSES.entry("amd").meta and "task" not in LOSSES.entry("similarity_keeping").meta
    s, t = torch.randn(5, 4, 7, dtype=D), torch.randn(5, 8, 7, dtype=D)
    assert torch.isfinite(similarity_keeping(s.float(), t.float()))
    for form in ("cosine", "sp"):
        assert torch.autograd.gradcheck(lambda x: similarity_keeping(x, t, form=form), (s.clone().requires_grad_(True),))
    dead = s[:, :, 0].clone()
    dead[1] = 0  # an all-zero (dead ReLU) sample: F.normalize would give it a 1e23 gradient; ours stays finite
    for form in ("cosine", "sp"):
        x = dead.clone().requires_grad_(True)
        similarity_keeping(x, t[:, :, 0], form=form).backward()
        assert torch.isfinite(x.grad).all() and float(x.grad.abs().max()) < 10
    with pytest.raises(UserInputError, match="student_feat has 5 samples but teacher_feat has 4"):
        similarity_keeping(s, t[:4])
    with pytest.raises(UserInputError, match="form must be one of"):
        similarity_keeping(s, t, form="kl")


# ---------------------------------------------------------------- correlation orthogonality
def test_correlation_orthogonality():
    orth = torch.tensor([[2.0, 0, 0], [0, 3, 0], [0, 0, 0.5], [0, 0, 0]], dtype=D)[:3]
    assert float(correlation_orthogonality(orth)) == pytest.approx(0.0, abs=1e-12)
    assert float(correlation_orthogonality([orth, 5 * orth])) == pytest.approx(0.0, abs=1e-12)
    same = torch.ones(2, 3, dtype=D)  # two identical rows: n_row(G) = [[1,1],[1,1]] / sqrt 2
    close(correlation_orthogonality(same), 2 * ((2**-0.5 - 1) ** 2 + 0.5) / 4, tol=1e-12)
    x = torch.randn(8, 3, 5, dtype=D, generator=torch.Generator().manual_seed(2))
    value = correlation_orthogonality(x, patches=2)
    groups = [correlation_orthogonality(x[:4]), correlation_orthogonality(x[4:])]
    assert float(value) == pytest.approx(float(sum(groups) / 2), abs=1e-12)
    assert float(correlation_orthogonality(3 * x)) == pytest.approx(float(correlation_orthogonality(x)), abs=1e-12)
    assert torch.autograd.gradcheck(lambda f: correlation_orthogonality([f, f * f], patches=2), (x[:6].clone().requires_grad_(True),))
    with pytest.raises(UserInputError, match="fewer than patches"):
        correlation_orthogonality(x, patches=9)


# ---------------------------------------------------------------- time-aware KD
def test_time_aware_kd_terms_and_identity():
    g = torch.Generator().manual_seed(3)
    s, t, y = (torch.randn(4, 2, 12, dtype=D, generator=g) for _ in range(3))
    terms = time_aware_terms(s, t, y, max_lag=3)
    assert set(terms) == {"task", "teacher", "similarity", "difference", "autocorr", "self_similarity"}
    close(terms["task"], F.mse_loss(s, y), tol=1e-12)
    close(terms["teacher"], F.mse_loss(s, t), tol=1e-12)
    close(terms["difference"], F.mse_loss(s.diff(dim=-1), t.diff(dim=-1)), tol=1e-12)
    close(terms["similarity"], similarity_keeping(s, t, form="sp"), tol=1e-12)  # the SP block, golden 0.0754932783
    default = 1 * terms["task"] + terms["teacher"] + terms["similarity"] + terms["difference"] + terms["autocorr"]
    close(time_aware_kd(s, t, y, max_lag=3), default, tol=1e-12)
    full = time_aware_kd(s, t, y, max_lag=3, self_similarity_weight=2.0, task_weight=0.5)
    close(full, default - 0.5 * terms["task"] + 2 * terms["self_similarity"], tol=1e-12)
    # student == teacher: only the task term is left
    close(time_aware_kd(t, t, y, self_similarity_weight=1.0), F.mse_loss(t, y), tol=1e-12)
    close(time_aware_kd(s, t, y, regression="l1", similarity_weight=0, difference_weight=0, autocorr_weight=0),
          F.l1_loss(s, y) + F.l1_loss(s, t), tol=1e-12)
    # autocorrelation ignores a per-channel gain and offset; similarity a global gain
    affine = 3.0 * s + torch.tensor([1.0, -2.0], dtype=D)[:, None]
    assert float(time_aware_terms(affine, s, y, names=("autocorr",))["autocorr"]) == pytest.approx(0.0, abs=1e-12)
    assert float(time_aware_terms(5 * s, s, y, names=("similarity",))["similarity"]) == pytest.approx(0.0, abs=1e-12)
    close(time_aware_kd(s[:, 0], t[:, 0], y[:, 0]), time_aware_kd(s[:, :1], t[:, :1], y[:, :1]), tol=1e-12)


def test_time_aware_kd_gradients_and_errors():
    g = torch.Generator().manual_seed(4)
    s, t, y = (torch.randn(3, 2, 6, dtype=D, generator=g) for _ in range(3))
    assert torch.autograd.gradcheck(lambda x: time_aware_kd(x, t, y, max_lag=20, self_similarity_weight=1.0), (s.clone().requires_grad_(True),))
    assert torch.isfinite(time_aware_kd(s.float(), t.float(), y.float()))
    with pytest.raises(UserInputError, match="student_seq has shape \\(3, 2, 6\\) but teacher_seq"):
        time_aware_kd(s, t[..., :5], y)
    with pytest.raises(UserInputError, match="task_weight must be >= 0"):
        time_aware_kd(s, t, y, task_weight=-1.0)
    with pytest.raises(UserInputError, match="regression must be one of"):
        time_aware_kd(s, t, y, regression="huber")
    with pytest.raises(UserInputError, match="unknown term\\(s\\) speed"):
        time_aware_terms(s, t, y, names=("speed",))
