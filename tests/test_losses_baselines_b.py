"""FT and AB (losses/staged_baselines.py): golden values from tests/reference/ref_baselines_b.py (numpy float64, written
from the formulas without the package; its output is tests/reference/ref_baselines_b_output.txt), and properties:
zero where the loss should vanish, FT's scale invariance, gradcheck in float64, what each FT objective trains, shape
errors naming the tensors, 1-D and 2-D maps."""
from __future__ import annotations

import math

import pytest
import torch

from edgedistill.config import TermConfig
from edgedistill.errors import UserInputError
from edgedistill.losses.staged_baselines import AB, FT, ab_loss, ft_factor_loss
from edgedistill.methods.terms import bind_terms
from edgedistill.registry import LOSSES

# Printed by tests/reference/ref_baselines_b.py (see its output file).
REF = {
    "FT_factor_p1_1d": 0.256235585208787,
    "FT_factor_p2_1d": 0.100227427938149,
    "FT_factor_p1_2d": 0.146918703408043,
    "FT_module_factor_1d": 0.447895640879441,
    "FT_module_reconstruction_1d": 0.558891573860345,
    "FT_module_factor_2d": 0.168048516196483,
    "FT_module_reconstruction_2d": 0.63636798678744,
    "AB_margin1_1d": 67.1904038054787,
    "AB_margin0.5_1d": 42.0594404222982,
    "AB_margin1_2d": 96.0835856226095,
    "AB_module_1d": 30.452588910582,
    "AB_module_2d": 14.4390337695767,
}


def grid(shape, a, b=0.0):
    n = math.prod(shape)
    return torch.sin(torch.arange(n, dtype=torch.float64) * a + b).reshape(shape)


def weight(i, shape):
    return 0.5 * grid(shape, 0.1 + 0.07 * i, 0.3 * i)


def filled(module: torch.nn.Module) -> torch.nn.Module:
    """The reference's weights, in parameter order; float64, evaluation mode (BatchNorm: running mean 0, var 1)."""
    module = module.double().eval()
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.copy_(weight(i, tuple(p.shape)))
    return module


def close(value: torch.Tensor, key: str) -> None:
    assert float(value.detach()) == pytest.approx(REF[key], rel=1e-10, abs=1e-12), key


def test_registered_as_modules():
    assert LOSSES.get("ft") is FT and LOSSES.get("ab") is AB


# ---------------------------------------------------------------- FT


def test_ft_factor_golden_1d_2d_and_p():
    s1, t1 = grid((3, 4, 5), 0.7, 0.3), grid((3, 4, 5), 1.3, -0.2)
    close(ft_factor_loss(s1, t1, 1), "FT_factor_p1_1d")
    close(ft_factor_loss(s1, t1, 2), "FT_factor_p2_1d")
    close(ft_factor_loss(grid((2, 3, 4, 5), 0.45, 0.1), grid((2, 3, 4, 5), 0.9, 0.5), 1), "FT_factor_p1_2d")


def test_ft_factor_is_zero_for_equal_factors_and_ignores_each_samples_scale():
    s, t = grid((3, 4, 5), 0.7, 0.3), grid((3, 4, 5), 1.3, -0.2)
    assert float(ft_factor_loss(s, s.clone())) == 0.0
    scale = torch.tensor([3.5, 0.2, 7.0], dtype=torch.float64).reshape(3, 1, 1)
    assert float(ft_factor_loss(scale * s, t)) == pytest.approx(float(ft_factor_loss(s, t)), rel=1e-12)


def test_ft_factor_gradcheck():
    s = grid((2, 3, 4), 0.7, 0.3).requires_grad_(True)
    t = grid((2, 3, 4), 1.3, -0.2)
    for p in (1, 2):  # (the inputs keep |u_s - u_t| away from 0, where |.| has its kink)
        assert torch.autograd.gradcheck(lambda x, p=p: ft_factor_loss(x, t, p), (s,))


@pytest.mark.parametrize("dims, keys", [
    (1, ((2, 3, 7), (2, 4, 5), "FT_module_factor_1d", "FT_module_reconstruction_1d")),
    (2, ((2, 2, 3, 4), (2, 4, 3, 4), "FT_module_factor_2d", "FT_module_reconstruction_2d")),
])
def test_ft_module_golden(dims, keys):
    s_shape, t_shape, factor_key, rec_key = keys
    if dims == 1:
        s, t = grid(s_shape, 0.5, 0.2), grid(t_shape, 0.8, -0.4)
    else:
        s, t = grid(s_shape, 0.35, 0.6), grid(t_shape, 0.6, 0.0)
    ft = filled(FT(s_shape[1:], t_shape[1:]))
    close(ft(s, t), factor_key)
    close(ft(s, t, objective="reconstruction"), rec_key)


def test_ft_objectives_train_their_own_part_and_the_factor_leaves_the_paraphraser_as_it_was():
    ft = FT((3, 7), (4, 5)).train()
    s, t = torch.randn(4, 3, 7), torch.randn(4, 4, 5)
    before = {k: v.clone() for k, v in ft.paraphraser.state_dict().items()}
    ft(s.requires_grad_(True), t).backward()
    assert all(p.grad is None for p in ft.paraphraser.parameters())  # frozen: no gradient reaches it
    assert all(p.grad is not None for p in ft.translator.parameters()) and s.grad is not None
    assert all(torch.equal(v, before[k]) for k, v in ft.paraphraser.state_dict().items())  # BN statistics too
    assert ft.paraphraser.training  # its mode is given back
    ft.zero_grad(set_to_none=True)
    ft(s, t, objective="reconstruction").backward()
    assert all(p.grad is not None for p in ft.paraphraser.parameters())
    assert all(p.grad is None for p in ft.translator.parameters())
    assert FT.trained_parts("reconstruction") == ("paraphraser",) and FT.trained_parts() == ("translator",)


def test_ft_module_gradcheck_through_the_translator():
    ft = filled(FT((1, 3), (2, 3)))
    s, t = grid((2, 1, 3), 0.5, 0.2).requires_grad_(True), grid((2, 2, 3), 0.8, -0.4)
    assert torch.autograd.gradcheck(lambda x: ft(x, t), (s,), fast_mode=True)


def test_ft_refuses_bad_shapes_and_settings():
    with pytest.raises(UserInputError, match=r"ft: needs feature maps .*student \(8,\) and teacher \(4, 5\)"):
        FT((8,), (4, 5))
    with pytest.raises(UserInputError, match="ft: p must be 1"):
        FT((3, 5), (4, 5), p=3)
    ft = FT((3, 5), (4, 5))
    with pytest.raises(UserInputError, match=r"ft: teacher_feat has per-sample shape \(4, 6\) but this loss was built for \(4, 5\)"):
        ft(torch.randn(2, 3, 5), torch.randn(2, 4, 6))
    with pytest.raises(UserInputError, match="objective"):
        bind_terms([TermConfig(loss="ft", objective="recon")], "classification")


def test_ft_term_splits_constructor_and_forward_settings():
    term = bind_terms([TermConfig(loss="ft", objective="reconstruction", factor_rate=0.25)], "classification")[0]
    assert term.params == {"factor_rate": 0.25} and term.call_params == {"objective": "reconstruction"}
    assert term.describe()["objective"] == "reconstruction"


# ---------------------------------------------------------------- AB


def test_ab_golden_1d_2d_and_margin():
    s, t = 2.0 * grid((3, 4, 6), 0.55, 0.1), grid((3, 4, 6), 1.1, 0.7)
    close(ab_loss(s, t, 1.0), "AB_margin1_1d")
    close(ab_loss(s, t, 0.5), "AB_margin0.5_1d")
    close(ab_loss(2.0 * grid((2, 3, 3, 4), 0.4, 0.2), grid((2, 3, 3, 4), 0.75, -0.3), 1.0), "AB_margin1_2d")


def test_ab_is_zero_beyond_the_margin_on_the_teachers_side_only():
    t = grid((3, 4, 6), 1.1, 0.7)
    right = torch.where(t > 0, 5.0, -5.0).double()
    assert float(ab_loss(right, t, 1.0)) == 0.0
    assert float(ab_loss(-right, t, 1.0)) == pytest.approx(36.0 * t.numel() / 3)  # (5 + 1)^2 per element, / batch
    # A teacher's ReLU output has the same active set as its pre-activation: either tap gives the same loss.
    s = grid((3, 4, 6), 0.55, 0.1)
    assert float(ab_loss(s, torch.relu(t), 1.0)) == float(ab_loss(s, t, 1.0))


def test_ab_gradcheck():
    s = 2.0 * grid((2, 3, 4), 0.55, 0.1) + 0.013  # (no element at +-margin, where the hinge has its kink)
    t = grid((2, 3, 4), 1.1, 0.7)
    assert torch.autograd.gradcheck(lambda x: ab_loss(x, t, 1.0), (s.requires_grad_(True),))


def test_ab_module_golden_1d_2d():
    ab = filled(AB((3, 8), (5, 6), margin=1.0))
    close(ab(grid((2, 3, 8), 0.3, 0.4), grid((2, 5, 6), 0.9, 0.1)), "AB_module_1d")
    ab = filled(AB((3, 4, 4), (5, 2, 4), margin=0.5))
    close(ab(grid((2, 3, 4, 4), 0.3, 0.4), grid((2, 5, 2, 4), 0.9, 0.1)), "AB_module_2d")


def test_ab_refuses_bad_shapes_and_margin():
    with pytest.raises(UserInputError, match="ab: margin must be > 0"):
        AB((3, 8), (5, 8), margin=0.0)
    with pytest.raises(UserInputError, match=r"ab: needs feature maps .*student \(16,\)"):
        AB((16,), (5, 8))
    with pytest.raises(UserInputError, match=r"ab: student_feat has shape \(2, 3\) but teacher_feat has shape \(2, 4\)"):
        ab_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    ab = AB((3, 8), (5, 8))
    with pytest.raises(UserInputError, match=r"ab: student_feat has per-sample shape \(4, 8\) but this loss was built for \(3, 8\)"):
        ab(torch.zeros(2, 4, 8), torch.zeros(2, 5, 8))
