"""patch_swap (Choi, Jeon, Shukla, Turaga, arXiv 2505.14124): the augmentation (its properties and the reference
computation of tests/reference/ref_asu.py section 10, 1-D and 2-D), the same-class partner draw, the hypothesised
ICPS loss (the numbers of the same section), the method's step and errors, and end-to-end runs on series and
images."""
import json

import pytest
import torch

import edgedistill
from edgedistill.config import TermConfig
from edgedistill.augment import ClassRows, patch_grid, patch_swap, random_patch_mask, same_class_partners
from edgedistill.errors import UserInputError
from edgedistill.methods.base import Step
from edgedistill.methods.patch_swap import IntraClassPatchSwap, icps_loss
from tests.helpers import tiny_net, toy_splits

RECIPE = {
    "name": "icps",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "patch_swap", "params": {"patch": 0.25, "swap_prob": 1.0}},
    "train": {"epochs": 1, "batch_size": 16},
    "engine": {"progress": False},
}


# -- augmentation ----------------------------------------------------------------------------------------------
def test_spec_reference_computation_2d():
    xa = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    xb = 100 + xa
    ta, tb = patch_swap(xa, xb, 2, mask=torch.tensor([[1, 0], [0, 1]]))
    want_a = [[100, 101, 2, 3], [104, 105, 6, 7], [8, 9, 110, 111], [12, 13, 114, 115]]
    want_b = [[0, 1, 102, 103], [4, 5, 106, 107], [108, 109, 10, 11], [112, 113, 14, 15]]
    assert ta[0, 0].tolist() == want_a and tb[0, 0].tolist() == want_b


@pytest.mark.parametrize("shape, patch", [((5, 3, 427), 54), ((4, 2, 10, 7), (3, 2)), ((3, 1, 8, 8), 2)])
def test_swaps_conserve_the_sum_keep_shape_dtype_and_m0_m1_are_identity_and_exchange(shape, patch):
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(*shape, generator=g, dtype=torch.float64), torch.randn(*shape, generator=g, dtype=torch.float64)
    ta, tb = patch_swap(xa, xb, patch, generator=g, ratio=0.5)
    assert torch.equal(ta + tb, xa + xb)
    assert ta.shape == xa.shape and ta.dtype == xa.dtype and tb.dtype == xb.dtype
    assert not torch.equal(ta, xa)  # something was swapped
    grid = patch_grid(shape[2:], patch)
    zero, one = torch.zeros(len(xa), *grid), torch.ones(len(xa), *grid)
    assert all(torch.equal(u, v) for u, v in zip(patch_swap(xa, xb, patch, mask=zero), (xa, xb)))
    assert all(torch.equal(u, v) for u, v in zip(patch_swap(xa, xb, patch, mask=one), (xb, xa)))


def test_time_segments_of_length_m_including_a_short_last_one():
    xa, xb = torch.zeros(1, 2, 10), torch.ones(1, 2, 10)
    assert patch_grid((10,), 4) == (3,)  # segments 0-3, 4-7, 8-9
    ta, tb = patch_swap(xa, xb, 4, mask=torch.tensor([[0, 1, 1]]))
    assert ta[0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1] and torch.equal(ta[0, 0], ta[0, 1])  # all channels
    assert torch.equal(tb, 1 - ta)


def test_random_masks_swap_an_exact_fraction_with_probability_p_and_follow_the_seed():
    g = torch.Generator().manual_seed(1)
    m = random_patch_mask(2000, (8,), ratio=0.25, p=0.5, generator=g)
    swapped = m.any(1)
    assert torch.all(m[swapped].sum(1) == 2)  # round(0.25 * 8) patches in every swapped pair
    assert 0.45 < swapped.float().mean().item() < 0.55
    assert not random_patch_mask(50, (4, 4), 0.5, p=0.0, generator=g).any()
    assert torch.all(random_patch_mask(50, (4, 4), 0.5, p=1.0, generator=g).flatten(1).sum(1) == 8)
    xa, xb = torch.randn(6, 1, 12, 12), torch.randn(6, 1, 12, 12)
    run = lambda s: patch_swap(xa, xb, 3, generator=torch.Generator().manual_seed(s))  # noqa: E731
    assert all(torch.equal(u, v) for u, v in zip(run(7), run(7)))
    assert not torch.equal(run(7)[0], run(8)[0])


def test_partners_have_the_same_label_and_are_other_rows_unless_alone():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 1, 0])  # class 2 has one row
    rows = torch.arange(8).repeat(200)
    g = torch.Generator().manual_seed(0)
    partner = same_class_partners(rows, labels, g)
    assert torch.equal(labels[partner], labels[rows])  # labels unchanged by the pairing
    assert torch.all((partner != rows) | (rows == 3)) and torch.all(partner[rows == 3] == 3)
    # every other member of the class is drawn
    assert set(partner[rows == 0].tolist()) == {2, 5, 7}
    assert torch.equal(ClassRows(labels).partners(rows, torch.Generator().manual_seed(0)), partner)


@pytest.mark.parametrize("kwargs, message", [
    (dict(xb=torch.zeros(2, 1, 9)), "same"),
    (dict(patch=9), r"patch size must be in \[1"),
    (dict(mask=torch.ones(2, 3)), "mask must have shape"),
])
def test_augmentation_errors(kwargs, message):
    args = dict(xa=torch.zeros(2, 1, 8), xb=torch.zeros(2, 1, 8), patch=2)
    args.update(kwargs)
    with pytest.raises(UserInputError, match=message):
        patch_swap(args.pop("xa"), args.pop("xb"), args.pop("patch"), **args)


# -- loss --------------------------------------------------------------------------------------------------------
def test_spec_reference_loss_values():
    za = torch.tensor([[2.0, 0.5, -1.0]], dtype=torch.float64)
    zb = torch.tensor([[0.8, 0.6, 0.1]], dtype=torch.float64)
    ce_ab, kl = icps_loss(za, zb, torch.tensor([0]), temperature=4.0)
    assert ce_ab.item() == pytest.approx(1.0808575005, abs=1e-9)
    assert kl.item() == pytest.approx(0.4343184847, abs=1e-9)


def test_the_more_confident_view_teaches_per_sample_and_gets_no_kd_gradient():
    za = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.0]], dtype=torch.float64, requires_grad=True)
    zb = torch.tensor([[0.8, 0.6, 0.1], [1.5, -0.5, 0.3]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0])  # row 0: a is more confident; row 1: b is
    _, kl = icps_loss(za, zb, y, temperature=2.0)
    ga, gb = torch.autograd.grad(kl, (za, zb))
    assert torch.all(ga[0] == 0) and torch.any(gb[0] != 0)  # row 0: a teaches b
    assert torch.all(gb[1] == 0) and torch.any(ga[1] != 0)  # row 1: b teaches a
    _, swapped = icps_loss(zb, za, y, temperature=2.0)
    assert swapped.item() == pytest.approx(kl.item(), abs=1e-12)  # the role follows confidence, not the order
    _, same = icps_loss(za, za.detach().clone(), y)
    assert same.item() == pytest.approx(0.0, abs=1e-12)


# -- method ------------------------------------------------------------------------------------------------------
def test_training_step_pairs_within_class_is_deterministic_per_step_and_trains_the_student():
    splits = toy_splits(n=120, length=16)
    torch.manual_seed(3)
    m = IntraClassPatchSwap(tiny_net(), splits.info, patch=4, swap_prob=1.0)
    m.setup(splits.train, torch.device("cpu"))
    batch = splits.train.batch(torch.arange(16))
    t1 = m.training_step(batch, Step(0, 5, 1, 10))
    t2 = m.training_step(batch, Step(0, 5, 1, 10))
    t3 = m.training_step(batch, Step(0, 6, 1, 10))
    assert set(t1) == {"ce", "icps_kd"}
    assert all(t1[k].item() == t2[k].item() for k in t1) and t1["ce"].item() != t3["ce"].item()
    grads = torch.autograd.grad(sum(t1.values()), list(m.networks["student"].parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert m.patch == (4,)


def test_the_kd_weight_lambda_is_a_recipe_term():
    splits = toy_splits(n=120, length=16)
    batch = splits.train.batch(torch.arange(16))
    out = []
    for terms in ([], [TermConfig(loss="ce"), TermConfig(loss="icps_kd", weight=2.5)]):
        torch.manual_seed(3)
        m = IntraClassPatchSwap(tiny_net(), splits.info, terms, patch=4, swap_prob=1.0)
        m.setup(splits.train, torch.device("cpu"))
        out.append(m.training_step(batch, Step(0, 5, 1, 10)))
    assert out[1]["ce"].item() == out[0]["ce"].item()
    assert out[1]["icps_kd"].item() == pytest.approx(2.5 * out[0]["icps_kd"].item(), rel=1e-6)


def test_default_patch_is_an_eighth_of_each_dimension():
    splits = toy_splits(length=427)
    assert IntraClassPatchSwap(tiny_net(), splits.info).patch == (54,)


@pytest.mark.parametrize("params, message", [
    ({"swap_prob": 2}, r"method.params.swap_prob: .*less than or equal to 1"),
    ({"swap_ratio": True}, r"method.params.swap_ratio: .*valid number"),
    ({"patch": 0}, r"method.params.patch: .*patch size must be in \[1"),
    ({"patch": 1.5}, r"method.params.patch: .*a fraction must be in \(0, 1\]"),
    ({"patch": [0.5, 2.0]}, r"method.params.patch: .*a fraction must be in \(0, 1\]"),
    ({"patch": [2, 2]}, r"method.params.patch: expected a number or 1 numbers"),
    ({"temperature": -1}, r"method.params.temperature"),
    ({"lambda": 1}, r"method.params.lambda: unknown parameter"),
])
def test_bad_params_fail_before_training(tmp_path, params, message):
    with pytest.raises(UserInputError, match=message):
        edgedistill.run({**RECIPE, "method": {"name": "patch_swap", "params": params}}, out=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


def test_teachers_and_regression_are_refused(tmp_path):
    with pytest.raises(UserInputError, match=r"^teacher: method 'patch_swap' uses no pre-trained teacher \(the more "
                                             r"confident view of a pair teaches the other\); remove the 'teacher'"):
        edgedistill.run({**RECIPE, "teacher": {"model": "fcn", "width": 0.25}}, out=tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    data = {**RECIPE["data"], "params": {**RECIPE["data"]["params"], "task": "regression"}}
    with pytest.raises(UserInputError, match=r"data: method 'patch_swap' .* needs a classification dataset"):
        edgedistill.run({**RECIPE, "data": data}, out=tmp_path / "b", progress=False)


def test_end_to_end_on_images(tmp_path):
    recipe = {**RECIPE, "data": {"name": "synthetic_images", "params": {"n": 64, "n_classes": 3, "size": 12}},
              "student": {"model": "cnn2d", "width": 4, "depth": 2}, "method": {"name": "patch_swap", "params": {"patch": 3}}}
    summary = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    assert [r["role"] for r in summary["rows"]] == ["student alone", "method"]
    line = json.loads((tmp_path / "run" / "patch_swap" / "seed0" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line["train"]) == {"ce", "icps_kd", "total"}
    described = json.loads((tmp_path / "run" / "patch_swap" / "seed0" / "summary.json").read_text())["method"]
    assert described["patch"] == 3 and described["patch_sizes"] == [3, 3]  # the recipe's value and the sizes used
