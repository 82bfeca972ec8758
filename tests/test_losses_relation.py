"""RKD, PKT and MMD: golden values from tests/reference/ref_others.py (printed in ref_others_output.txt) and
property tests."""
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgedistill.errors import UserInputError
from edgedistill.losses.relation import mmd, pkt, rkd
from edgedistill.registry import LOSSES


def grid(shape, a=0.37, b=0.0):
    """The reference's deterministic inputs: sin(a * arange(prod(shape)) + b) reshaped."""
    return torch.sin(torch.arange(math.prod(shape), dtype=torch.float64) * a + b).reshape(shape)


F_S, F_T = grid((3, 5), 0.57), grid((3, 6), 0.43, 0.1)
X_MMD, Y_MMD = grid((3, 2), 0.9), grid((4, 2), 0.6, 0.4) + 0.5


@pytest.mark.parametrize(
    "value, expected",
    [
        (lambda: rkd(F_S, F_T), 0.540265),  # RKD_total (w_d = 25, w_a = 50)
        (lambda: rkd(F_S, F_T, distance_weight=1.0, angle_weight=0.0), 0.016477),  # RKD dist
        (lambda: rkd(F_S, F_T, distance_weight=0.0, angle_weight=1.0), 0.002567),  # RKD angle
        (lambda: pkt(F_S, F_T), 0.020675),  # PKT_loss
        (lambda: mmd(X_MMD, Y_MMD, sigma=1.0), 0.160306),  # MMD2_sigma1
        (lambda: mmd(X_MMD, X_MMD, sigma=1.0), 0.0),  # MMD2_same
    ],
)
def test_golden(value, expected):
    assert float(value()) == pytest.approx(expected, abs=1e-6)


def test_float32_matches_float64():
    assert float(rkd(F_S.float(), F_T.float())) == pytest.approx(0.540265, abs=1e-5)
    assert float(pkt(F_S.float(), F_T.float())) == pytest.approx(0.020675, abs=1e-5)
    assert float(mmd(X_MMD.float(), Y_MMD.float())) == pytest.approx(0.160306, abs=1e-5)


def test_registry():
    assert LOSSES.get("rkd") is rkd and LOSSES.get("pkt") is pkt
    assert "mmd" not in LOSSES  # its arguments are not teacher/student roles


def separated(e: torch.Tensor) -> bool:
    """Rows far enough apart that the 1e-12 distance floor plays no role."""
    d = torch.cdist(e, e) + torch.eye(len(e), dtype=e.dtype) * 1e3
    return bool(d.min() > 1e-2)


def emb(rows: int, cols: int):
    return st.lists(st.floats(-5, 5), min_size=rows * cols, max_size=rows * cols).map(
        lambda v: torch.tensor(v, dtype=torch.float64).view(rows, cols)
    )


@settings(max_examples=30, deadline=None)
@given(emb(5, 3), emb(5, 4), st.floats(0.1, 10), st.floats(-10, 10), st.permutations(range(5)))
def test_rkd_properties(s, t, scale, shift, perm):
    assume(separated(s) and separated(t))
    value = float(rkd(s, t))
    assert value >= 0.0
    assert float(rkd(s, s)) == pytest.approx(0.0, abs=1e-12)
    assert float(rkd(s * scale, t)) == pytest.approx(value, rel=1e-7, abs=1e-9)
    assert float(rkd(s, t * scale + shift)) == pytest.approx(value, rel=1e-7, abs=1e-9)
    assert float(rkd(s + shift, t)) == pytest.approx(value, rel=1e-7, abs=1e-9)
    p = torch.tensor(perm)
    assert float(rkd(s[p], t[p])) == pytest.approx(value, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(emb(5, 3), emb(5, 4), st.lists(st.floats(0.5, 10), min_size=5, max_size=5), st.permutations(range(5)))
def test_pkt_properties(s, t, row_scales, perm):
    assume(bool(s.norm(dim=1).min() > 0.5) and bool(t.norm(dim=1).min() > 0.5))
    # The code's 1e-7 guards (on the norm, in the log ratio) make the invariances approximate: close to
    # about 1e-7 / |row| relative, and not at all next to antipodal rows, where a kernel entry is ~0.
    cos = torch.nn.functional.normalize(s, dim=1) @ torch.nn.functional.normalize(s, dim=1).T
    assume(bool(cos.min() > -0.99))
    value = float(pkt(s, t))
    assert float(pkt(s, s)) == pytest.approx(0.0, abs=1e-12)
    # cosine kernels: a positive per-row rescaling of either side changes nothing
    scale = torch.tensor(row_scales, dtype=torch.float64)[:, None]
    assert float(pkt(s * scale, t)) == pytest.approx(value, rel=1e-5, abs=1e-7)
    p = torch.tensor(perm)
    assert float(pkt(s[p], t[p])) == pytest.approx(value, rel=1e-9, abs=1e-12)
    # a rotation of the student's space keeps every cosine
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    assert float(pkt(s @ q, t)) == pytest.approx(value, rel=1e-5, abs=1e-7)


@settings(max_examples=30, deadline=None)
@given(emb(3, 2), emb(4, 2), st.floats(0.3, 5))
def test_mmd_properties(x, y, sigma):
    value = float(mmd(x, y, sigma))
    assert value >= -1e-12
    assert float(mmd(y, x, sigma)) == pytest.approx(value, abs=1e-12)
    assert float(mmd(x, x, sigma)) == pytest.approx(0.0, abs=1e-12)
    # the kernel only sees differences: a common shift changes nothing
    assert float(mmd(x + 3.0, y + 3.0, sigma)) == pytest.approx(value, abs=1e-9)


def test_rkd_matches_its_parts_and_is_dimension_agnostic():
    total = rkd(F_S, F_T, 2.0, 3.0)
    parts = 2.0 * rkd(F_S, F_T, 1.0, 0.0) + 3.0 * rkd(F_S, F_T, 0.0, 1.0)
    assert float(total) == pytest.approx(float(parts), abs=1e-12)
    # (N, C, L) embeddings are flattened per sample, as the reference code does with view(N, -1)
    s3 = grid((3, 5, 2), 0.2)
    assert float(rkd(s3, F_T)) == pytest.approx(float(rkd(s3.reshape(3, -1), F_T)), abs=1e-12)


def test_gradients_are_finite_and_pass_gradcheck():
    s = F_S.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: rkd(a, F_T), (s,))
    assert torch.autograd.gradcheck(lambda a: pkt(a, F_T), (s,))
    x = X_MMD.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: mmd(a, Y_MMD, 0.8), (x,))
    # coincident rows: zero distances and zero angle vectors must not produce NaN gradients
    dup = torch.cat([F_S[:2], F_S[:1]]).requires_grad_(True)
    (rkd(dup, F_T) + pkt(dup, F_T) + mmd(dup, dup.detach())).backward()
    assert torch.isfinite(dup.grad).all()


def test_errors_name_the_tensors():
    with pytest.raises(UserInputError, match="student_emb has 3 samples but teacher_emb has 2"):
        rkd(F_S, F_T[:2])
    with pytest.raises(UserInputError, match="at least 2 samples"):
        pkt(F_S[:1], F_T[:1])
    with pytest.raises(UserInputError, match="teacher_emb must be \\(N, D\\) embeddings"):
        rkd(F_S, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(UserInputError, match="x has 2 features per row but y has 3"):
        mmd(X_MMD, torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(UserInputError, match="sigma must be > 0"):
        mmd(X_MMD, Y_MMD, 0.0)
