"""DKD, DIST, MIX-KD standardised KD and balanced KD: golden values from tests/reference/ref_others.py
(ref_others_output.txt) and tests/reference/ref_asu.py sections 4 and 8 (ref_asu_output.txt), inputs built as in
those scripts, and property tests."""
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedistill.config import load_recipe
from edgedistill.errors import UserInputError
from edgedistill.losses import ce, kd, reverse_kd
from edgedistill.losses.response_extra import (
    _entropy_rows,
    _pearson_distance,
    balanced_kd,
    balanced_kd_weights,
    dist,
    dkd,
    standardize_logits,
    std_normalized_kd,
)
from edgedistill.methods.terms import bind_terms
from edgedistill.registry import LOSSES

D = torch.float64
ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=D)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=D)
Y = torch.tensor([1, 2, 0])
# tests/reference/ref_asu.py section 4 (MIX-KD) and section 8 (BD-KD building blocks)
LS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=D)
LT = torch.tensor([[3.0, 1.0, -2.0], [0.0, 2.0, 1.0]], dtype=D)
PS8 = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=D)
PT8 = torch.tensor([[1.0, 1.0, 0.0], [3.0, 0.0, 0.0]], dtype=D)
FKL8, RKL8 = [0.3775499622, 0.7320183278], [0.3029291011, 0.9963106678]
HS8, HT8 = [0.6655726819, 1.0986122887], [1.0173572076, 0.3665939609]


@pytest.mark.parametrize(
    "value, expected",
    [
        (lambda: dkd(ZS, ZT, Y, alpha=1.0, beta=0.0), 0.142990),  # DKD_TCKD_mean
        (lambda: dkd(ZS, ZT, Y, alpha=0.0, beta=1.0), 0.173983),  # DKD_NCKD_mean
        (lambda: dkd(ZS, ZT, Y), 1.534851),  # DKD_loss_a1_b8
        (lambda: dist(ZS, ZT), 0.638411),  # DIST_tau1 total
        (lambda: dist(ZS, ZT, beta=1.0, gamma=0.0), 0.281754),  # DIST_tau1 inter
        (lambda: dist(ZS, ZT, beta=0.0, gamma=1.0), 0.356656),  # DIST_tau1 intra
        (lambda: dist(ZS, ZT, temperature=4.0), 8.008987),  # DIST_tau4_total
        (lambda: 0.9 * std_normalized_kd(LS, LT), 0.0607758377),  # MIX-KD loss_div (alpha = 0.9)
        (lambda: 0.9 * std_normalized_kd(5 * LS, 5 * LT), 0.0607758377),  # invariance line
    ],
)
def test_golden(value, expected):
    assert float(value()) == pytest.approx(expected, abs=1e-6)


def test_dkd_identity_kd_equals_tckd_plus_weighted_nckd():
    # DKD_identity line: KD_i = TCKD_i + (1 - p^t_y,i) NCKD_i, checked one sample at a time
    p_ty = (ZT / 4).softmax(1)[torch.arange(3), Y]
    for i in range(3):
        s, t, y = ZS[i : i + 1], ZT[i : i + 1], Y[i : i + 1]
        assert float(dkd(s, t, y, alpha=1.0, beta=float(1 - p_ty[i]))) == pytest.approx(float(kd(s, t, 4.0)), abs=1e-12)


def test_mixkd_std_and_full_loss_through_separate_terms():
    sigma_s, sigma_t = torch.tensor([1.5275252317, 0.7637626158], dtype=D), torch.tensor([2.5166114784, 1.0], dtype=D)
    assert torch.allclose(standardize_logits(LS), (LS - LS.mean(1, keepdim=True)) / sigma_s[:, None], atol=1e-9)
    assert torch.allclose(standardize_logits(LT), (LT - LT.mean(1, keepdim=True)) / sigma_t[:, None], atol=1e-9)
    # The code's CE on std-scaled logits with the mixed label [0.7, 0.3, 0] / [0, 1, 0] is, by linearity of CE
    # in the label, a lambda-weighted sum of hard-label CEs: how a mixup method would call our `ce`.
    z = standardize_logits(LS)
    ce_mixed = (0.7 * ce(z[:1], torch.tensor([0])) + 0.3 * ce(z[:1], torch.tensor([1])) + ce(z[1:], torch.tensor([1]))) / 2
    assert float(0.1 * ce_mixed) == pytest.approx(0.0540204645, abs=1e-9)  # loss_cls
    assert float(0.1 * ce_mixed + 0.9 * std_normalized_kd(LS, LT)) == pytest.approx(0.1147963022, abs=1e-9)  # total


def test_balanced_kd_building_blocks_section8():
    for i in range(2):
        s, t = PS8[i : i + 1], PT8[i : i + 1]
        assert float(kd(s, t, 1.0)) == pytest.approx(FKL8[i], abs=1e-9)
        assert float(reverse_kd(s, t, 1.0)) == pytest.approx(RKL8[i], abs=1e-9)
    assert torch.allclose(_entropy_rows(PS8), torch.tensor(HS8, dtype=D), atol=1e-9)
    assert torch.allclose(_entropy_rows(PT8), torch.tensor(HT8, dtype=D), atol=1e-9)
    # Sample 0: student more confident (H_s < H_t) -> mostly forward; sample 1: less confident -> mostly reverse.
    assert balanced_kd_weights(PS8, PT8, gate_width=0.0).tolist() == [0.0, 1.0]
    assert float(balanced_kd(PS8, PT8, temperature=1.0, gate_width=0.0)) == pytest.approx((FKL8[0] + RKL8[1]) / 2, abs=1e-9)
    w = [1 / (1 + math.exp(-(hs - ht) / math.log(3) / 0.1)) for hs, ht in zip(HS8, HT8)]
    assert balanced_kd_weights(PS8, PT8).tolist() == pytest.approx(w, abs=1e-9)
    expected = sum((1 - w[i]) * FKL8[i] + w[i] * RKL8[i] for i in range(2)) / 2
    assert float(balanced_kd(PS8, PT8, temperature=1.0)) == pytest.approx(expected, abs=1e-9)


def test_balanced_kd_reduces_to_forward_and_reverse_kd():
    sharp, flat = torch.tensor([[4.0, 0.0, -1.0], [0.0, 3.0, 1.0]], dtype=D), torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.6, 0.0]], dtype=D)
    # student sharper than the teacher on every row: weight 0 on reverse -> exactly forward KD
    assert balanced_kd_weights(sharp, flat, 0.0).tolist() == [0.0, 0.0]
    assert float(balanced_kd(sharp, flat, 2.0, 0.0)) == pytest.approx(float(kd(sharp, flat, 2.0)), abs=1e-12)
    # student flatter on every row: weight 1 -> exactly reverse KD
    assert balanced_kd_weights(flat, sharp, 0.0).tolist() == [1.0, 1.0]
    assert float(balanced_kd(flat, sharp, 2.0, 0.0)) == pytest.approx(float(reverse_kd(flat, sharp, 2.0)), abs=1e-12)


logits = st.lists(st.floats(-20, 20), min_size=12, max_size=12).map(lambda v: torch.tensor(v, dtype=D).view(3, 4))
labels = st.lists(st.integers(0, 3), min_size=3, max_size=3).map(torch.tensor)
scales = st.lists(st.floats(0.1, 10), min_size=3, max_size=3).map(lambda v: torch.tensor(v, dtype=D).view(3, 1))


@settings(max_examples=30, deadline=None)
@given(logits, logits, labels, st.floats(0.5, 8), st.floats(-30, 30))
def test_dkd_and_dist_properties(s, t, y, temp, shift):
    assert float(dkd(t, t, y, temperature=temp)) == pytest.approx(0.0, abs=1e-9)
    value = float(dkd(s, t, y, temperature=temp))
    assert value >= -1e-10
    assert float(dkd(s + shift, t - shift, y, temperature=temp)) == pytest.approx(value, abs=1e-7)
    yt = (t / temp).softmax(1)
    if bool((yt.std(1) > 1e-2).all() & (yt.std(0) > 1e-2).all()):
        # zero at identity up to the official eps (1e-8 against a squared norm >= 3e-4 here); a constant row or
        # class column has Pearson 0 under that eps, so distance 1 (with zero gradient): we keep the official form
        assert float(dist(t, t, temperature=temp)) == pytest.approx(0.0, abs=1e-4 * temp**2)
    d = float(dist(s, t, temperature=temp))
    assert -1e-9 <= d <= 4 * temp**2 + 1e-9  # inter and intra each in [0, 2 tau^2]
    assert float(dist(s + shift, t, temperature=temp)) == pytest.approx(d, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(logits, logits, st.floats(0.1, 10), st.floats(-5, 5))
def test_pearson_distance_is_affine_invariant(a, b, scale, offset):
    a, b = a.softmax(1), b.softmax(1)
    base = _pearson_distance(a, b)
    assert torch.all((base >= -1e-9) & (base <= 2 + 1e-9))
    if bool((a.std(1) > 0.05).all() & (b.std(1) > 0.05).all()):  # the 1e-8 eps only matters for near-constant rows
        assert torch.allclose(_pearson_distance(scale * a + offset, b), base, atol=2e-5)


@settings(max_examples=30, deadline=None)
@given(logits, logits, scales, scales, st.floats(0.5, 4), st.floats(0.1, 10))
def test_std_normalized_kd_properties(s, t, cs, ct, temp, c):
    if bool((s.std(1) < 1e-3).any() | (t.std(1) < 1e-3).any()):
        return  # near-constant rows are clamped by eps, where scale invariance is not expected
    value = float(std_normalized_kd(s, t, temp))
    assert value >= -1e-10
    # per-sample scaling of either tensor by its own c > 0 leaves it unchanged (the std scales along)
    assert float(std_normalized_kd(cs * s, ct * t, temp)) == pytest.approx(value, abs=1e-8)
    assert float(std_normalized_kd(c * t + 3.0, t, temp)) == pytest.approx(0.0, abs=1e-9)  # z_s proportional to z_t


@settings(max_examples=30, deadline=None)
@given(logits, logits, st.floats(0.5, 8), st.sampled_from([0.0, 0.05, 0.1, 1.0]))
def test_balanced_kd_properties(s, t, temp, width):
    assert float(balanced_kd(t, t, temp, width)) == pytest.approx(0.0, abs=1e-9)
    w = balanced_kd_weights(s, t, width)
    assert torch.all((w >= 0) & (w <= 1))
    for i in range(3):  # per sample, the value lies between the forward and the reverse KL
        si, ti = s[i : i + 1], t[i : i + 1]
        f, r, b = float(kd(si, ti, temp)), float(reverse_kd(si, ti, temp)), float(balanced_kd(si, ti, temp, width))
        assert min(f, r) - 1e-9 <= b <= max(f, r) + 1e-9
        hs, ht = float(_entropy_rows(si)), float(_entropy_rows(ti))
        if abs(hs - ht) > 1e-9:  # less confident student -> more weight on the reverse KL
            assert (float(w[i]) > 0.5) == (hs > ht)


def test_gradients_finite_and_gradcheck():
    for f in (lambda a: dkd(a, ZT, Y), lambda a: dist(a, ZT, temperature=2.0), lambda a: std_normalized_kd(a, ZT, 2.0),
              lambda a: balanced_kd(a, ZT, 2.0, gate_width=0.0)):
        assert torch.autograd.gradcheck(f, (ZS.clone().requires_grad_(True),))
    # extreme float32 logits (a dominant target logit, a constant row) keep finite gradients
    s = torch.tensor([[80.0, -80.0, 0.0], [1.0, 1.0, 1.0]], requires_grad=True)
    t = torch.tensor([[-50.0, 50.0, 0.0], [2.0, 0.0, 1.0]])
    for loss in (dkd(s, t, torch.tensor([0, 1])), dist(s, t), std_normalized_kd(s, t), balanced_kd(s, t)):
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_balanced_kd_weights_get_no_gradient():
    s = ZS.clone().requires_grad_(True)
    balanced_kd(s, ZT, 2.0).backward()
    w = balanced_kd_weights(ZS, ZT)
    a = ZS.clone().requires_grad_(True)
    ((1 - w) * torch.stack([kd(a[i : i + 1], ZT[i : i + 1], 2.0) for i in range(3)])
     + w * torch.stack([reverse_kd(a[i : i + 1], ZT[i : i + 1], 2.0) for i in range(3)])).mean().backward()
    assert torch.allclose(s.grad, a.grad, atol=1e-12)


def test_dimension_agnostic_mean_over_positions():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 7, dtype=D), torch.randn(2, 5, 7, dtype=D)
    y = torch.randint(0, 5, (2, 7))
    per_position = torch.stack([dkd(s[:, :, i], t[:, :, i], y[:, i]) for i in range(7)])
    assert float(dkd(s, t, y)) == pytest.approx(float(per_position.mean()), abs=1e-12)
    for f in (std_normalized_kd, balanced_kd):
        per_position = torch.stack([f(s[:, :, i], t[:, :, i]) for i in range(7)])
        assert float(f(s, t)) == pytest.approx(float(per_position.mean()), abs=1e-12)
    flat = lambda z: z.movedim(1, -1).reshape(-1, 5)  # DIST: every position is a row of the batch
    assert float(dist(s, t)) == pytest.approx(float(dist(flat(s), flat(t))), abs=1e-12)
    assert torch.isfinite(dist(torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)))


def test_float32_matches_float64():
    assert float(dkd(ZS.float(), ZT.float(), Y)) == pytest.approx(1.534851, abs=1e-5)
    assert float(dist(ZS.float(), ZT.float(), temperature=4.0)) == pytest.approx(8.008987, abs=1e-4)
    assert float(0.9 * std_normalized_kd(LS.float(), LT.float())) == pytest.approx(0.0607758377, abs=1e-6)
    assert float(balanced_kd(PS8.float(), PT8.float(), 1.0, 0.0)) == pytest.approx((FKL8[0] + RKL8[1]) / 2, abs=1e-6)


def test_errors_name_the_tensors():
    with pytest.raises(UserInputError, match="dkd: target has shape \\(2,\\) but student_logits"):
        dkd(ZS, ZT, Y[:2])
    with pytest.raises(UserInputError, match="integer class indices"):
        dkd(ZS, ZT, Y.double())
    with pytest.raises(UserInputError, match="labels must lie in \\[0, 4\\)"):
        dkd(ZS, ZT, torch.tensor([0, 4, 1]))
    with pytest.raises(UserInputError, match="beta must be >= 0"):
        dkd(ZS, ZT, Y, beta=-1.0)
    with pytest.raises(UserInputError, match="dist: student_logits has shape \\(3, 4\\) but teacher_logits"):
        dist(ZS, ZT[:, :3])
    with pytest.raises(UserInputError, match="at least 2 classes"):
        std_normalized_kd(ZS[:, :1], ZT[:, :1])
    with pytest.raises(UserInputError, match="temperature must be > 0"):
        balanced_kd(ZS, ZT, 0.0)
    with pytest.raises(UserInputError, match="gate_width must be >= 0"):
        balanced_kd(ZS, ZT, 4.0, -0.1)


RECIPES = {"dkd": "dkd", "dist": "dist", "mixkd_std": "std_normalized_kd", "bdkd_offline": "balanced_kd"}


@pytest.mark.parametrize("recipe, loss", RECIPES.items())
def test_registered_and_recipes_bind(recipe, loss):
    entry = LOSSES.entry(loss)
    assert entry.meta == {"task": "classification"} and entry.doc
    path = Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.yaml"
    terms = bind_terms(load_recipe(path).method.terms, "classification")
    assert [t.label for t in terms] == ["ce", loss]
    assert terms[1].roles[:2] == ("student_logits", "teacher_logits")
