"""Feature losses (fitnet, at, sp, gram): golden values from tests/reference/ref_others.py (printed in
ref_others_output.txt) and tests/reference/ref_asu.py (printed in ref_asu_output.txt), inputs rebuilt exactly as
the reference scripts build them, and property tests."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedistill.errors import UserInputError
from edgedistill.losses.feature import (
    FitNet,
    Gram,
    attention_transfer,
    fitnet,
    gram,
    match_positions,
    similarity_preserving,
)
from edgedistill.registry import LOSSES


def grid(shape, a=0.37, b=0.0):
    """ref_others.py's deterministic input: sin(a * arange(prod(shape)) + b) reshaped."""
    n = int(np.prod(shape))
    return torch.sin(torch.arange(n, dtype=torch.float64) * a + b).reshape(shape)


# Printed goldens (6 decimals) and the same values at full precision: repr(out[name]) of
# runpy.run_path("tests/reference/ref_others.py") (see tests/reference/README.md).
@pytest.mark.parametrize(
    "value, printed, full",
    [
        (lambda: fitnet(grid((2, 3, 2, 2), 0.21), grid((2, 3, 2, 2), 0.27, 0.3)), 0.416975, 0.416974919625972),  # FitNet_MSE
        (lambda: attention_transfer(grid((2, 3, 4, 4), 0.13), grid((2, 5, 4, 4), 0.11, 0.2)), 0.000279, 0.0002787171844430978),  # AT_loss
        (lambda: similarity_preserving(grid((3, 5), 0.57), grid((3, 6), 0.43, 0.1)), 0.016930, 0.01692981459953743),  # SP_loss
        (lambda: gram(grid((2, 3, 4), 0.45), grid((2, 3, 4), 0.33, 0.7)), 2.133394, 2.133394284106682),  # Gram_MSE
    ],
)
def test_golden_ref_others(value, printed, full):
    v = float(value())
    assert v == pytest.approx(printed, abs=1e-6)
    assert v == pytest.approx(full, abs=1e-12)


def test_golden_ref_asu_sp():
    fs = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    ft = torch.tensor([[1.0, 0.0, 1.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert float(similarity_preserving(fs, ft)) == pytest.approx(0.07549327825356966, abs=1e-12)  # L_SP, section 9


def _identity_adapter(module: torch.nn.Module, channels: int) -> None:
    conv, bn = module.adapter
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).reshape(conv.weight.shape))
        bn.running_var.fill_(1.0 - bn.eps)  # eval BN divides by sqrt(var + eps) = 1 exactly
    module.eval()


def test_fitnet_module_with_an_identity_adapter_reproduces_the_golden():
    fs, ft = grid((2, 3, 2, 2), 0.21), grid((2, 3, 2, 2), 0.27, 0.3)
    m = FitNet((3, 2, 2), (3, 2, 2)).double()
    _identity_adapter(m, 3)
    assert m(fs, ft).item() == pytest.approx(0.416974919625972, abs=1e-12)


def test_gram_module_is_the_function_when_channels_match():
    fs, ft = grid((2, 3, 4), 0.45), grid((2, 3, 4), 0.33, 0.7)
    m = Gram((3, 4), (3, 4))
    assert isinstance(m.adapter, torch.nn.Identity) and not list(m.parameters())
    assert float(m(fs, ft)) == pytest.approx(2.133394284106682, abs=1e-12)
    assert float(Gram((3, 4), (3, 4), normalize=True)(fs, ft)) == pytest.approx(2.133394284106682 / 16, abs=1e-12)


@pytest.mark.parametrize(
    "s_shape, t_shape, layer",
    [((16, 40), (128, 40), torch.nn.Conv1d), ((4, 6, 6), (8, 3, 3), torch.nn.Conv2d), ((10,), (7,), torch.nn.Linear)],
)
def test_adapters_are_chosen_from_shapes_and_train(s_shape, t_shape, layer):
    m = FitNet(s_shape, t_shape)
    assert any(isinstance(x, layer) for x in m.modules())
    s, t = torch.randn(4, *s_shape), torch.randn(4, *t_shape)
    loss = m(s, t)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.parameters())
    g = Gram(s_shape, t_shape) if len(s_shape) > 1 else None
    if g is not None:
        assert torch.isfinite(g(s, t)) and list(g.parameters())


def test_student_and_teacher_with_different_lengths_are_pooled_to_the_smaller():
    s, t = torch.randn(2, 4, 12), torch.randn(2, 6, 4)
    ps, pt = match_positions("x", s, t)
    assert ps.shape == (2, 4, 4) and pt is t
    assert torch.allclose(ps, s.reshape(2, 4, 4, 3).mean(-1))
    assert FitNet((4, 12), (6, 4))(s, t).shape == ()
    s2, t2 = torch.randn(2, 3, 8, 2), torch.randn(2, 5, 4, 4)
    ps2, pt2 = match_positions("x", s2, t2)
    assert ps2.shape[2:] == (4, 2) and pt2.shape[2:] == (4, 2)


def test_registered_names():
    assert LOSSES.get("fitnet") is FitNet and LOSSES.get("gram") is Gram
    assert LOSSES.get("at") is attention_transfer and LOSSES.get("sp") is similarity_preserving
    for name in ("fitnet", "at", "sp", "gram"):
        assert LOSSES.entry(name).doc and "task" not in LOSSES.entry(name).meta


maps = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**16))


def _maps(n, cs, length, seed, ct=None):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, cs, length, generator=g, dtype=torch.float64)
    t = torch.randn(n, ct or cs + 2, length, generator=g, dtype=torch.float64)
    return s, t


@settings(max_examples=40, deadline=None)
@given(maps, st.floats(0.01, 100), st.floats(0.5, 4))
def test_at_properties(dims, scale, p):
    s, t = _maps(*dims)
    v = float(attention_transfer(s, t, p))
    assert v >= 0 and float(attention_transfer(t, t, p)) == pytest.approx(0.0, abs=1e-12)
    assert float(attention_transfer(scale * s, t, p)) == pytest.approx(v, rel=1e-7, abs=1e-12)  # student scale
    assert float(attention_transfer(-s, t, p)) == pytest.approx(v, rel=1e-9, abs=1e-12)  # |f|^p: sign-free
    perm = torch.randperm(s.shape[1], generator=torch.Generator().manual_seed(dims[3]))
    assert float(attention_transfer(s[:, perm], t, p)) == pytest.approx(v, rel=1e-9, abs=1e-12)  # channel order
    # mean over batch and positions of the squared difference of unit vectors: at most 4 / P
    assert v <= 4.0 / s.shape[2] + 1e-12


@settings(max_examples=40, deadline=None)
@given(maps, st.floats(0.01, 100), st.floats(0.01, 100))
def test_sp_properties(dims, cs, ct):
    s, t = _maps(*dims)
    v = float(similarity_preserving(s, t))
    assert v >= 0 and float(similarity_preserving(t, t)) == pytest.approx(0.0, abs=1e-12)
    assert float(similarity_preserving(cs * s, ct * t)) == pytest.approx(v, rel=1e-7, abs=1e-12)  # global scales
    perm = torch.randperm(s.shape[0], generator=torch.Generator().manual_seed(dims[3]))
    assert float(similarity_preserving(s[perm], t[perm])) == pytest.approx(v, rel=1e-9, abs=1e-12)  # batch order
    # feature-dimension order does not matter, nor does the width (t has 2 more channels than s)
    assert float(similarity_preserving(s.flip(1), t)) == pytest.approx(v, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(maps)
def test_gram_and_fitnet_properties(dims):
    s, t = _maps(*dims, ct=dims[1])
    assert float(gram(t, t)) == 0.0 and float(fitnet(t, t)) == 0.0
    assert float(gram(s, t)) >= 0
    # G = F F^T is unchanged by a common orthogonal rotation of the position axis (Peng Liu, arXiv 2112.11447)
    q, _ = torch.linalg.qr(torch.randn(s.shape[2], s.shape[2], dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    assert float(gram(s @ q, t @ q)) == pytest.approx(float(gram(s, t)), rel=1e-9, abs=1e-9)
    assert float(gram(s, t, normalize=True)) == pytest.approx(float(gram(s, t)) / s.shape[2] ** 2, rel=1e-9, abs=1e-12)


def test_gradcheck_and_finite_gradients():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 2, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: attention_transfer(a, t), (s,))
    assert torch.autograd.gradcheck(lambda a: attention_transfer(a, t, 3.0), (s,))
    assert torch.autograd.gradcheck(lambda a: similarity_preserving(a, t), (s,))
    assert torch.autograd.gradcheck(lambda a: fitnet(a, t[:, :2]), (s,))
    assert torch.autograd.gradcheck(lambda a: gram(a, t[:, :2]), (s,))
    long_t = torch.randn(3, 4, 15, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: attention_transfer(a, long_t), (s,))  # through the pooling
    zero = torch.zeros(2, 3, 4, requires_grad=True)  # all-zero maps: the 1e-12 norm floors keep gradients finite
    (attention_transfer(zero, torch.rand(2, 5, 4)) + similarity_preserving(zero, torch.rand(2, 5, 4))).backward()
    assert torch.isfinite(zero.grad).all()


def test_float32_matches_float64():
    a, b = grid((2, 3, 4, 4), 0.13).float(), grid((2, 5, 4, 4), 0.11, 0.2).float()
    assert float(attention_transfer(a, b)) == pytest.approx(0.0002787171844430978, rel=1e-4)
    assert float(similarity_preserving(grid((3, 5), 0.57).float(), grid((3, 6), 0.43, 0.1).float())) == pytest.approx(0.016930, abs=1e-5)
    assert float(gram(grid((2, 3, 4), 0.45).float(), grid((2, 3, 4), 0.33, 0.7).float())) == pytest.approx(2.133394, abs=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fitnet(torch.zeros(2, 3, 4), torch.zeros(2, 5, 4)), r"fitnet: student_feat has shape \(2, 3, 4\) but teacher_feat"),
        (lambda: attention_transfer(torch.zeros(2, 3), torch.zeros(2, 3, 4)), r"at: student_feat must be a feature map"),
        (lambda: attention_transfer(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4)), r"at: student_feat has 2 samples but teacher_feat has 3"),
        (lambda: attention_transfer(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4, 4)), r"same number of temporal/spatial"),
        (lambda: attention_transfer(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), p=0), r"p must be > 0"),
        (lambda: similarity_preserving(torch.zeros(2, 3), torch.zeros(4, 3)), r"sp: student_feat has 2 samples"),
        (lambda: gram(torch.zeros(2, 3, 4), torch.zeros(2, 5, 4)), r"gram: student_feat has 3 channels but teacher_feat has 5"),
        (lambda: FitNet((3, 4), (5,)), r"fitnet: cannot adapt"),
        (lambda: FitNet((3, 4), (5, 4))(torch.zeros(2, 4, 4), torch.zeros(2, 5, 4)), r"student_feat has per-sample shape \(4, 4\) but this loss was built for \(3, 4\)"),
        (lambda: Gram((3,), (3,)), r"gram: needs feature maps"),
        (lambda: Gram((3, 4), (3, 4), normalize="yes"), r"gram: normalize must be true or false"),
    ],
)
def test_errors_name_the_tensors(call, message):
    with pytest.raises(UserInputError, match=message):
        call()


def test_at_reduction_is_the_mean_over_batch_and_positions():
    s, t = _maps(3, 2, 6, 0)
    a_s = torch.nn.functional.normalize(s.pow(2).mean(1), dim=1)
    a_t = torch.nn.functional.normalize(t.pow(2).mean(1), dim=1)
    per_sample = ((a_s - a_t) ** 2).sum(1)  # squared L2 distance of the normalised maps
    assert math.isclose(float(attention_transfer(s, t)), float(per_sample.mean()) / 6, rel_tol=1e-12)
