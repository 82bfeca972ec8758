"""Golden values from tests/reference/ref_others.py (printed in ref_others_output.txt) and property tests."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedistill.errors import UserInputError
from edgedistill.losses import ce, kd, mse, mse_to_teacher, reverse_kd

ZS = torch.tensor([[1.0, 2.0, 0.5, -1.0], [0.0, -0.5, 1.5, 0.3], [2.0, 0.1, -0.3, 0.7]], dtype=torch.float64)
ZT = torch.tensor([[2.0, 1.0, 0.0, -0.5], [0.2, 0.1, 2.5, -1.0], [1.5, 0.5, 0.0, 1.0]], dtype=torch.float64)
Y = torch.tensor([1, 2, 0])


@pytest.mark.parametrize(
    "value, expected",
    [
        (lambda: kd(ZS, ZT, temperature=4.0), 0.257002),  # KD_T4
        (lambda: kd(ZS, ZT, temperature=1.0), 0.218834),  # KD_T1
        (lambda: ce(ZS, Y), 0.474019),  # CE_mean
        (lambda: 0.1 * ce(ZS, Y) + 0.9 * kd(ZS, ZT, 4.0), 0.278704),  # KD_total_alpha0.9_T4
        (lambda: kd(ZS, ZT, temperature=1000.0), 0.252329),  # KD_T1000
        (lambda: kd(ZT, ZT), 0.0),
    ],
)
def test_golden(value, expected):
    assert float(value()) == pytest.approx(expected, abs=1e-6)


def test_high_temperature_limit_is_logit_matching():
    dz = ZT - ZS
    dz = dz - dz.mean(dim=1, keepdim=True)
    limit = (dz**2).sum(dim=1).mean() / (2 * ZS.shape[1])
    assert float(limit) == pytest.approx(0.252292, abs=1e-6)
    assert float(kd(ZS, ZT, 1e4)) == pytest.approx(float(limit), rel=1e-3)


def test_reverse_kd_swaps_the_direction():
    assert float(reverse_kd(ZS, ZT, 2.0)) == pytest.approx(float(kd(ZT, ZS, 2.0)), abs=1e-12)
    assert float(reverse_kd(ZS, ZT, 2.0)) != pytest.approx(float(kd(ZS, ZT, 2.0)), abs=1e-6)


logits = st.lists(st.floats(-20, 20), min_size=12, max_size=12).map(lambda v: torch.tensor(v, dtype=torch.float64).view(3, 4))


@settings(max_examples=40, deadline=None)
@given(logits, logits, st.floats(0.5, 10), st.floats(-50, 50))
def test_kd_properties(s, t, temp, shift):
    assert float(kd(s, s, temp)) == pytest.approx(0.0, abs=1e-10)
    value = float(kd(s, t, temp))
    assert value >= -1e-12
    # invariant to adding a per-row constant to either logit matrix
    assert float(kd(s + shift, t - shift, temp)) == pytest.approx(value, abs=1e-8)
    assert float(reverse_kd(s, t, temp)) >= -1e-12


def test_dimension_agnostic_mean_over_positions():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 7, dtype=torch.float64), torch.randn(2, 5, 7, dtype=torch.float64)
    rows = torch.stack([kd(s[:, :, i], t[:, :, i], 3.0) for i in range(7)])
    assert float(kd(s, t, 3.0)) == pytest.approx(float(rows.mean()), abs=1e-12)
    s4, t4 = torch.randn(2, 5, 3, 3, dtype=torch.float64), torch.randn(2, 5, 3, 3, dtype=torch.float64)
    assert torch.isfinite(kd(s4, t4))


def test_gradient_matches_closed_form_and_gradcheck():
    s = ZS.clone().requires_grad_(True)
    kd(s, ZT, 4.0).backward()
    expected = (4.0 / 3) * ((ZS / 4).softmax(1) - (ZT / 4).softmax(1))
    assert torch.allclose(s.grad, expected, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a: kd(a, ZT, 2.0), (ZS.clone().requires_grad_(True),))
    assert torch.autograd.gradcheck(lambda a: reverse_kd(a, ZT, 2.0), (ZS.clone().requires_grad_(True),))


def test_float32_matches_float64():
    assert float(kd(ZS.float(), ZT.float())) == pytest.approx(0.257002, abs=1e-5)


def test_shape_errors_name_the_tensors():
    with pytest.raises(UserInputError, match="student_logits has shape \\(3, 4\\) but teacher_logits"):
        kd(ZS, ZT[:, :3])
    with pytest.raises(UserInputError, match="temperature must be > 0"):
        kd(ZS, ZT, 0.0)
    with pytest.raises(UserInputError, match="integer class indices"):
        ce(ZS, Y.double())


def test_regression_losses():
    a, b = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [1.0]])
    assert float(mse_to_teacher(a, b)) == pytest.approx((0.25 + 1.0) / 2)
    assert float(mse(a, torch.tensor([1.0, 2.0]))) == 0.0
    with pytest.raises(UserInputError, match="mse_to_teacher"):
        mse_to_teacher(a, torch.zeros(2, 2))
    assert math.isclose(float(mse_to_teacher(a, a)), 0.0)
