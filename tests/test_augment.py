"""Augmentations (issue 5): generic properties of every registered one (shape, dtype, device, determinism, no NaN, no
in-place change, labels), the properties of the wearable study's augmentations (Jeon et al., IEEE IoT-J 2022, arXiv
2201.00111), MIX-KD's mixing as its official code does it (Choi et al., WACV 2023, arXiv 2211.03946,
https://github.com/hchoi71/MIX-KD: two permutations, the pair example and PMU's with-replacement clean fraction of
tests/reference/ref_asu.py section 4), the typed parameters (one Params model per augmentation, validated when the
recipe's pipeline is built) and the errors."""
import inspect
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedistill.augment import augment_params, clean_mask, mix_pairs
from edgedistill.augment.images import crop, cutout, flip
from edgedistill.augment.mixing import cutmix, mixup, partial_mixup
from edgedistill.augment.pipeline import Augmenter
from edgedistill.augment.timeseries import (jitter, magnitude_warp, mix1, mix2, noise, permutation, removal, rotation,
                                            scaling, shift, time_warp, window_slice)
from edgedistill.config import AugmentConfig
from edgedistill.data.dataset import DataInfo
from edgedistill.errors import UserInputError
from edgedistill.params import Params
from edgedistill.registry import AUGMENTS

FAST = settings(max_examples=25, deadline=None)
ENTRIES = {e.name: e for e in AUGMENTS}
SAMPLE = sorted(n for n, e in ENTRIES.items() if e.meta["kind"] == "sample")
BATCH = sorted(n for n, e in ENTRIES.items() if e.meta["kind"] == "batch")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def data_for(name: str, n: int, seed: int, dtype: torch.dtype = torch.float32, c: int = 3, size: int = 8) -> torch.Tensor:
    """A (n, c, 2·size) series or a (n, c, size, size) image batch, whichever ``name`` takes."""
    shape = (n, c, size, size) if ENTRIES[name].meta["data"] == "2d" else (n, c, 2 * size)
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def soft_labels(n: int, k: int, seed: int, one_hot: bool) -> torch.Tensor:
    g = gen(seed + 1)
    if one_hot:
        return torch.eye(k)[torch.randint(0, k, (n,), generator=g)]
    return torch.softmax(3 * torch.randn(n, k, generator=g), dim=1)


# -- registry ---------------------------------------------------------------------------------------------------
def test_registry_has_every_augmentation_with_metadata_and_defaults():
    want = {"jitter", "noise", "scaling", "rotation", "permutation", "magnitude_warp", "time_warp", "window_slice",
            "shift", "removal", "mix1", "mix2", "flip", "crop", "cutout", "mixup", "partial_mixup", "cutmix"}
    assert want <= set(ENTRIES)
    for name, e in ENTRIES.items():
        assert e.meta["kind"] in ("sample", "batch") and e.meta["data"] in ("1d", "2d", "any"), name
        assert isinstance(e.meta["label_preserving"], bool) and e.doc, name
        assert e.meta["label_preserving"] is (e.meta["kind"] == "sample"), name
        fixed = ("x", "generator") if e.meta["kind"] == "sample" else ("x", "y", "generator")
        params = list(inspect.signature(e.obj).parameters.values())
        assert [p.name for p in params[: len(fixed)]] == list(fixed), name
        assert all(p.default is not inspect.Parameter.empty for p in params[len(fixed):]), name


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_augmentation_declares_its_parameters_once_as_a_params_model(name):
    """The registered model has exactly the function's keywords, with the same defaults, and a doc per field."""
    model = augment_params(name)
    assert isinstance(model, type) and issubclass(model, Params) and model is ENTRIES[name].meta["params"], name
    fixed = 2 if ENTRIES[name].meta["kind"] == "sample" else 3
    keywords = {p.name: p.default for p in list(inspect.signature(ENTRIES[name].obj).parameters.values())[fixed:]}
    assert {k: f.default for k, f in model.model_fields.items()} == keywords
    assert model.parse({}, "augment.student[0]").model_dump() == keywords  # the defaults validate
    assert all(row["doc"] for row in model.fields_doc()), name


def test_augment_params_of_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(UserInputError, match=r"unknown augmentation 'jiter'.*Did you mean 'jitter'"):
        augment_params("jiter")


# -- generic properties -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLE)
@FAST
@given(n=st.integers(1, 4), half=st.integers(4, 10), seed=st.integers(0, 2**31), dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_sample_level_shape_dtype_determinism_no_nan_not_in_place(name, n, half, seed, dtype):
    fn = ENTRIES[name].obj
    x = data_for(name, n, seed, dtype, size=half)
    before = x.clone()
    out = fn(x, gen(seed))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    assert torch.equal(x, before)  # the input is untouched
    assert torch.equal(fn(x, gen(seed)), out)  # same generator state, same result


@pytest.mark.parametrize("name", SAMPLE + BATCH)
def test_another_seed_gives_another_result(name):
    x = data_for(name, 8, 0, c=6, size=16)
    if name in BATCH:
        y = soft_labels(8, 4, 0, one_hot=True)
        assert not torch.equal(ENTRIES[name].obj(x, y, gen(1))[0], ENTRIES[name].obj(x, y, gen(2))[0])
    else:
        assert not torch.equal(ENTRIES[name].obj(x, gen(1)), ENTRIES[name].obj(x, gen(2)))


@pytest.mark.parametrize("name", BATCH)
@FAST
@given(n=st.integers(1, 6), k=st.integers(2, 5), image=st.booleans(), one_hot=st.booleans(),
       alpha=st.floats(0.0, 4.0), seed=st.integers(0, 2**31), dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_batch_level_returns_mixed_probabilities(name, n, k, image, one_hot, alpha, seed, dtype):
    fn = ENTRIES[name].obj
    x = torch.randn(*((n, 2, 6, 5) if image else (n, 2, 9)), generator=gen(seed), dtype=dtype)
    y = soft_labels(n, k, seed, one_hot).to(dtype)
    xs, ys = x.clone(), y.clone()
    xm, ym = fn(x, y, gen(seed), alpha=alpha)
    assert xm.shape == x.shape and xm.dtype == x.dtype and ym.shape == y.shape and ym.dtype == y.dtype
    assert torch.isfinite(xm).all() and torch.isfinite(ym).all() and (ym >= 0).all()
    torch.testing.assert_close(ym.sum(1), torch.ones(n, dtype=dtype))
    assert torch.equal(x, xs) and torch.equal(y, ys)
    again = fn(x, y, gen(seed), alpha=alpha)
    assert torch.equal(again[0], xm) and torch.equal(again[1], ym)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", SAMPLE + BATCH)
def test_same_result_on_the_gpu(name):
    x = data_for(name, 4, 0, c=6)
    if name in BATCH:
        y = soft_labels(4, 3, 0, one_hot=True)
        cpu, gpu = ENTRIES[name].obj(x, y, gen(3)), ENTRIES[name].obj(x.cuda(), y.cuda(), gen(3))
        assert gpu[0].is_cuda and gpu[1].is_cuda
        torch.testing.assert_close(gpu[0].cpu(), cpu[0])
        torch.testing.assert_close(gpu[1].cpu(), cpu[1])
    else:
        gpu = ENTRIES[name].obj(x.cuda(), gen(3))
        assert gpu.is_cuda
        torch.testing.assert_close(gpu.cpu(), ENTRIES[name].obj(x, gen(3)))


# -- the wearable study's augmentations (Jeon et al., arXiv 2201.00111) --------------------------------------------
@FAST
@given(n=st.integers(1, 4), length=st.integers(1, 30), fraction=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_removal_zeroes_exactly_round_fraction_L_contiguous_samples_in_every_channel(n, length, fraction, seed):
    x = torch.rand(n, 3, length, generator=gen(seed)) + 0.5  # no zeros of its own
    gone = removal(x, gen(seed), fraction=fraction) == 0
    k = round(fraction * length)
    assert (gone.sum(2) == k).all()
    assert (gone == gone[:, :1]).all()  # the same segment in every channel
    assert (gone.int().diff(dim=2).abs().sum(2) <= 2).all()  # one run: at most one rise and one fall
    assert torch.equal(torch.where(gone, x, 0 * x) + removal(x, gen(seed), fraction=fraction), x)


def test_removal_mean_fill_uses_the_kept_samples_mean():
    x = torch.randn(5, 3, 20, generator=gen(0))
    zero, mean = removal(x, gen(1), fraction=0.3), removal(x, gen(1), fraction=0.3, fill="mean")
    gone = (zero == 0).expand_as(x)
    kept_mean = torch.where(gone, 0 * x, x).sum(2, keepdim=True) / (~gone).sum(2, keepdim=True)
    torch.testing.assert_close(mean, torch.where(gone, kept_mean.expand_as(x), x))


@FAST
@given(n=st.integers(1, 4), length=st.integers(1, 30), max_shift=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_shift_keeps_length_and_is_a_roll_of_at_most_max_shift(n, length, max_shift, seed):
    x = torch.randn(n, 2, length, generator=gen(seed))
    out = shift(x, gen(seed), max_shift=max_shift)
    assert out.shape == x.shape
    m = round(max_shift * length)
    for i in range(n):
        assert any(torch.equal(out[i], x[i].roll(s, dims=1)) for s in range(-m, m + 1))
    padded = shift(x, gen(seed), max_shift=max_shift, mode="pad")  # same draws: the roll with the wrapped part zeroed
    assert torch.equal(padded, torch.where(padded == 0, 0 * x, out))


@FAST
@given(sigma=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_noise_and_jitter_are_x_plus_sigma_eps_and_the_identity_at_sigma_0(sigma, seed):
    x = torch.randn(3, 3, 12, generator=gen(seed), dtype=torch.float64)
    assert torch.equal(noise(x, gen(seed), sigma=0.0), x) and torch.equal(jitter(x, gen(seed), sigma=0.0), x)
    eps = torch.randn(x.shape, generator=gen(seed), dtype=torch.float64)
    torch.testing.assert_close(noise(x, gen(seed), sigma=sigma), x + sigma * eps)
    assert torch.equal(noise(x, gen(seed), sigma=sigma), jitter(x, gen(seed), sigma=sigma))


@FAST
@given(fraction=st.floats(0, 1), sigma=st.floats(0, 0.5), max_shift=st.floats(0, 1), mode=st.sampled_from(["roll", "pad"]),
       fill=st.sampled_from(["zero", "mean"]), seed=st.integers(0, 2**31))
def test_mix1_and_mix2_are_the_compositions_with_the_same_draws(fraction, sigma, max_shift, mode, fill, seed):
    x = torch.randn(4, 3, 16, generator=gen(seed))
    g = gen(seed)
    assert torch.equal(mix1(x, gen(seed), fraction=fraction, max_shift=max_shift, fill=fill, mode=mode),
                       shift(removal(x, g, fraction=fraction, fill=fill), g, max_shift=max_shift, mode=mode))
    g = gen(seed)
    want = shift(noise(removal(x, g, fraction=fraction, fill=fill), g, sigma=sigma), g, max_shift=max_shift, mode=mode)
    got = mix2(x, gen(seed), fraction=fraction, sigma=sigma, max_shift=max_shift, fill=fill, mode=mode)
    assert torch.equal(got, want)


# -- Um et al. augmentations -----------------------------------------------------------------------------------
@FAST
@given(groups=st.integers(1, 3), length=st.integers(1, 12), max_angle=st.floats(0, 180), seed=st.integers(0, 2**31))
def test_rotation_keeps_the_norm_of_every_3_axis_group_at_every_step(groups, length, max_angle, seed):
    x = torch.randn(3, 3 * groups, length, generator=gen(seed), dtype=torch.float64)
    out = rotation(x, gen(seed), max_angle=max_angle)
    norm = lambda t: t.view(3, groups, 3, length).norm(dim=2)  # noqa: E731
    torch.testing.assert_close(norm(out), norm(x))


def test_rotation_custom_groups_leave_other_channels_and_shared_rotates_groups_alike():
    x = torch.randn(4, 7, 10, generator=gen(0))
    out = rotation(x, gen(0), groups=[[6, 0, 3], [1, 2, 4]])
    assert torch.equal(out[:, 5], x[:, 5]) and not torch.allclose(out[:, 6], x[:, 6])
    twin = torch.cat([x[:, :3], x[:, :3]], dim=1)
    same = rotation(twin, gen(0), shared=True)
    assert torch.equal(same[:, :3], same[:, 3:])
    assert not torch.allclose(rotation(twin, gen(0))[:, :3], rotation(twin, gen(0))[:, 3:])
    torch.testing.assert_close(rotation(x[:, :6], gen(0), max_angle=0.0), x[:, :6])


@FAST
@given(length=st.integers(1, 30), data=st.data(), seed=st.integers(0, 2**31))
def test_permutation_keeps_the_multiset_of_each_channel_and_moves_whole_pieces(length, data, seed):
    segments = data.draw(st.integers(1, length))
    x = torch.randn(3, 2, length, generator=gen(seed))
    out = permutation(x, gen(seed), segments=segments)
    assert torch.equal(out.sort(dim=2).values, x.sort(dim=2).values)
    # one reordering of time per sample, shared by the channels: channel 1 follows channel 0
    order = (out[:, :1].unsqueeze(3) == x[:, :1].unsqueeze(2)).float().argmax(3)  # where each output came from
    assert torch.equal(out[:, 1], x[:, 1].gather(1, order[:, 0]))
    assert torch.equal(permutation(x, gen(seed), segments=1), x)


@pytest.mark.parametrize("interpolation", ["cubic", "linear"])
def test_warps_at_sigma_0_and_window_slice_at_ratio_1_are_the_identity(interpolation):
    x = torch.randn(3, 3, 25, generator=gen(0), dtype=torch.float64)
    torch.testing.assert_close(magnitude_warp(x, gen(0), sigma=0.0, interpolation=interpolation), x)
    torch.testing.assert_close(time_warp(x, gen(0), sigma=0.0, interpolation=interpolation), x)
    assert torch.equal(window_slice(x, gen(0), ratio=1.0), x) and torch.equal(scaling(x, gen(0), sigma=0.0), x)


@FAST
@given(length=st.integers(2, 30), sigma=st.floats(0, 2), ratio=st.floats(0.01, 1), knots=st.integers(0, 6), seed=st.integers(0, 2**31))
def test_time_warp_and_window_slice_interpolate_inside_the_signal(length, sigma, ratio, knots, seed):
    x = torch.randn(3, 2, length, generator=gen(seed), dtype=torch.float64)
    lo, hi = x.min(2, keepdim=True).values - 1e-12, x.max(2, keepdim=True).values + 1e-12
    for out in (time_warp(x, gen(seed), sigma=sigma, knots=knots), window_slice(x, gen(seed), ratio=ratio)):
        assert ((out >= lo) & (out <= hi)).all()
    tw = time_warp(x, gen(seed), sigma=sigma, knots=knots)  # the warp fixes both ends
    torch.testing.assert_close(tw[..., [0, -1]], x[..., [0, -1]])


def test_magnitude_warp_is_a_smooth_positive_curve_near_one_for_small_sigma():
    x = torch.ones(2, 3, 200, dtype=torch.float64)
    w = magnitude_warp(x, gen(0), sigma=0.1, knots=4)
    assert (w > 0.5).all() and (w < 1.5).all() and w.diff(dim=2).abs().max() < 0.05


# -- images -----------------------------------------------------------------------------------------------------
def test_flip_p0_p1_crop_padding_0_and_cutout_size_0_are_exact():
    x = torch.randn(4, 2, 6, 7, generator=gen(0))
    assert torch.equal(flip(x, gen(0), p=0.0), x) and torch.equal(flip(x, gen(0), p=1.0), x.flip(-1))
    assert torch.equal(crop(x, gen(0), padding=0), x) and torch.equal(cutout(x, gen(0), size=0), x)


@FAST
@given(h=st.integers(1, 9), w=st.integers(1, 9), padding=st.integers(0, 3), seed=st.integers(0, 2**31))
def test_crop_is_a_window_of_the_zero_padded_image(h, w, padding, seed):
    x = torch.randn(3, 2, h, w, generator=gen(seed))
    out = crop(x, gen(seed), padding=padding)
    xp = torch.nn.functional.pad(x, (padding,) * 4)
    offsets = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    for i in range(3):
        assert any(torch.equal(out[i], xp[i, :, dy:dy + h, dx:dx + w]) for dy, dx in offsets)


@FAST
@given(h=st.integers(1, 10), w=st.integers(1, 10), size=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_cutout_zeroes_one_clipped_square_of_side_at_most_size(h, w, size, seed):
    x = torch.rand(5, 2, h, w, generator=gen(seed)) + 0.5
    zero = cutout(x, gen(seed), size=size) == 0
    assert (zero == zero[:, :1]).all()
    rows, cols = zero[:, 0].any(2), zero[:, 0].any(1)
    assert torch.equal(zero[:, 0], rows[:, :, None] & cols[:, None, :])  # a rectangle
    assert (rows.sum(1) >= 1).all() and (rows.sum(1) <= size).all() and (cols.sum(1) <= size).all()


def test_cutout_square_is_size_squared_when_it_fits():
    zeros = (cutout(torch.ones(200, 1, 12, 12), gen(0), size=4) == 0).flatten(1).sum(1)
    # whole when the centre row and column are in [2, 10): expected (9/12)² = 0.56 of the squares
    assert zeros.max() == 16 and (zeros == 16).float().mean() > 0.4


# -- mixing (MIX-KD, https://github.com/hchoi71/MIX-KD; values of tests/reference/ref_asu.py section 4) -----------
def test_spec_4_8_pair_example():
    x, y = torch.tensor([[1.0, 2.0], [3.0, -1.0]]), torch.eye(3)[[0, 2]]
    xm, ym = mix_pairs(x, y, torch.tensor([0.25, 0.25]), torch.tensor([0, 1]), torch.tensor([1, 0]))
    torch.testing.assert_close(xm[0], torch.tensor([2.5, -0.25]))
    torch.testing.assert_close(ym[0], torch.tensor([0.25, 0.0, 0.75]))


def rows_as_set(x: torch.Tensor, y: torch.Tensor) -> list:
    return sorted(tuple(r) for r in torch.cat([x.flatten(1), y], dim=1).tolist())


def test_lambda_one_returns_the_inputs_exactly():
    x, y = torch.randn(6, 2, 5, generator=gen(0)), soft_labels(6, 4, 0, one_hot=True)
    ident = torch.arange(6)
    xm, ym = mix_pairs(x, y, torch.ones(6), ident, torch.randperm(6, generator=gen(1)))
    assert torch.equal(xm, x) and torch.equal(ym, y)
    # FMU with alpha = 0 (λ ≡ 1) and PMU with every index clean: the input rows, reordered by rp1, with their targets
    for xm, ym in (mixup(x, y, gen(2), alpha=0.0), partial_mixup(x, y, gen(2), clean_fraction=1.0, with_replacement=False)):
        assert rows_as_set(xm, ym) == rows_as_set(x, y)
    xm, ym = cutmix(x, y, gen(2), alpha=0.0)
    assert torch.equal(xm, x) and torch.equal(ym, y)


def test_pmu_with_replacement_clean_fraction_is_one_minus_one_minus_1_over_B_to_the_k():
    b, part, trials = 64, 0.9, 400
    k = int(b * part)
    p = 1 - (1 - 1 / b) ** k
    assert abs(p - 0.5925) < 5e-5  # tests/reference/ref_asu.py section 4, PMU B=64
    g = gen(0)
    frac = torch.stack([clean_mask(b, part, True, g) for _ in range(trials)]).float().mean().item()
    # The B clean indicators of one batch are negatively associated (balls into bins), so the variance of their
    # sum is at most the binomial B·p·(1-p): the mean over trials has std <= sqrt(p(1-p)/(B·trials)). 5 of those.
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / (b * trials))
    assert all(clean_mask(b, part, False, g).sum() == k for _ in range(20))  # stated intent: exactly k


def test_partial_mixup_keeps_at_least_k_clean_rows_that_are_input_rows():
    b, part = 16, 0.5
    x, y = torch.randn(b, 1, 4, generator=gen(0)), torch.eye(b)  # every sample its own class
    for seed in range(5):
        xm, ym = partial_mixup(x, y, gen(seed), clean_fraction=part, with_replacement=False)
        clean = ym.max(1).values == 1
        assert clean.sum() >= int(b * part)
        # exact for λ = 1; a mixed row with rp1(i) = rp2(i) also has a one-hot target and is x_i up to rounding
        torch.testing.assert_close(xm[clean], x[ym[clean].argmax(1)])


@pytest.mark.parametrize("image", [False, True])
def test_cutmix_target_weight_is_the_pasted_fraction_and_the_region_is_one_box(image):
    n = 6
    shape = (n, 2, 5, 7) if image else (n, 2, 23)
    x = (torch.arange(n, dtype=torch.float64) + 1).view(-1, *[1] * (len(shape) - 1)).expand(shape).clone()
    for seed in range(10):
        xm, ym = cutmix(x, torch.eye(n, dtype=torch.float64), gen(seed), alpha=1.0)
        for j in range(n):  # value j+1 comes from sample j: its share of the pixels is exactly y~[:, j]
            torch.testing.assert_close((xm == j + 1).flatten(1).double().mean(1), ym[:, j])
        pasted = (xm != x)[:, 0]
        if image:
            rows, cols = pasted.any(2), pasted.any(1)
            assert torch.equal(pasted, rows[:, :, None] & cols[:, None, :])
        else:
            assert (pasted.int().diff(dim=1).abs().sum(1) <= 2).all()


# -- errors ---------------------------------------------------------------------------------------------------------
# (augmentation, bad params, message): checked by the Params model when the pipeline is built, naming the recipe key.
BAD = [
    ("jitter", {"sigma": -1}, "Input should be greater than or equal to 0, got -1"),
    ("scaling", {"sigma": "big"}, "Input should be a valid number"), ("scaling", {"sigma": True}, "Input should be a valid number"),
    ("removal", {"fraction": 1.5}, "Input should be less than or equal to 1"),
    ("removal", {"fill": "median"}, "Input should be 'zero' or 'mean', got 'median'"),
    ("shift", {"max_shift": -0.1}, "Input should be greater than or equal to 0"),
    ("shift", {"mode": "wrap"}, "Input should be 'roll' or 'pad'"), ("mix1", {"mode": "wrap"}, "Input should be 'roll' or 'pad'"),
    ("mix2", {"sigma": -1}, "Input should be greater than or equal to 0"),
    ("permutation", {"segments": 0}, "Input should be greater than or equal to 1"),
    ("permutation", {"segments": 2.5}, "Input should be a valid integer"),
    ("magnitude_warp", {"knots": -1}, "Input should be greater than or equal to 0"),
    ("time_warp", {"interpolation": "quadratic"}, "Input should be 'cubic' or 'linear'"),
    ("window_slice", {"ratio": 0}, "Input should be greater than 0"),
    ("rotation", {"groups": [[0, 1]]}, "List should have at least 3 items"), ("rotation", {"groups": []}, "List should have at least 1 item"),
    ("rotation", {"groups": [[0, 1, 2], [2, 3, 4]]}, "channel 2 appears twice"),
    ("rotation", {"groups": [[0, 1, True]]}, "Input should be a valid integer"),
    ("rotation", {"max_angle": 270}, "Input should be less than or equal to 180"),
    ("rotation", {"shared": "yes"}, "Input should be a valid boolean"), ("flip", {"p": 2}, "Input should be less than or equal to 1"),
    ("crop", {"padding": -1}, "Input should be greater than or equal to 0"), ("cutout", {"size": 1.5}, "Input should be a valid integer"),
    ("mixup", {"alpha": -1}, "Input should be greater than or equal to 0"),
    ("partial_mixup", {"clean_fraction": 1.2}, "Input should be less than or equal to 1"),
    ("partial_mixup", {"with_replacement": "False"}, "Input should be a valid boolean"),
    ("jitter", {"sgima": 0.1}, "unknown parameter for augmentation 'jitter'; expected one of: sigma. Did you mean 'sigma'?"),
]
INFO_1D = DataInfo(name="t", task="classification", input_shape=(6, 16), n_outputs=3, classes=["a", "b", "c"],
                   views={"x": (6, 16)}, sizes={"train": 8})
INFO_2D = DataInfo(name="t", task="classification", input_shape=(1, 8, 8), n_outputs=3, classes=["a", "b", "c"],
                   views={"x": (1, 8, 8)}, sizes={"train": 8})


@pytest.mark.parametrize("name, params, message", BAD)
def test_bad_parameters_fail_when_the_pipeline_is_built_naming_the_recipe_key(name, params, message):
    info = INFO_2D if ENTRIES[name].meta["data"] == "2d" else INFO_1D
    if name in BATCH:
        section, key = {"mix": {"name": name, **params}}, "augment.mix"
    else:  # the second step of the student's list: the key names the step's index
        fine = "flip" if info is INFO_2D else "jitter"
        section, key = {"student": [fine, {"name": name, **params}]}, "augment.student[1]"
    field = re.escape(next(iter(params)))
    with pytest.raises(UserInputError, match=rf"^{re.escape(key)}\.{field}(\.\d+)*: (Value error, )?{re.escape(message)}"):
        Augmenter(AugmentConfig(**section), info)
    if name not in BATCH:  # the teacher's own pipeline is checked the same way, under its own key
        with pytest.raises(UserInputError, match=rf"^augment\.teacher\[0\]\.{field}"):
            Augmenter(AugmentConfig(teacher_sees="separate", teacher=[{"name": name, **params}]), info)


@pytest.mark.parametrize("section, key", [({"student": ["jitter", {"name": "noise", "sigma": float("nan")}]}, "augment.student.1.sigma"),
                                          ({"mix": {"name": "cutmix", "alpha": float("inf")}}, "augment.mix.alpha")])
def test_non_finite_augmentation_values_are_refused_when_the_recipe_is_read(section, key):
    from edgedistill.config import load_recipe

    with pytest.raises(UserInputError, match=rf"{re.escape(key)}: expected a finite number"):
        load_recipe({"data": {"name": "synthetic"}, "student": {"model": "cnn1d"}, "augment": section})


def test_the_pipeline_calls_each_step_with_its_validated_parameters():
    """Values are validated once, at build: an int for a float arrives as a float, unset keys as their defaults."""
    a = Augmenter(AugmentConfig(student=[{"name": "removal", "fraction": 1}, "permutation"], mix={"name": "mixup", "alpha": 0}), INFO_1D)
    assert [(s.name, s.params) for s in a.student] == [("removal", {"fraction": 1.0, "fill": "zero"}), ("permutation", {"segments": 4})]
    assert type(a.student[0].params["fraction"]) is float and a.mix.params == {"alpha": 0.0}


def test_data_dependent_limits_are_checked_by_the_function():
    """What depends on the data (segments vs L, groups vs C) is the function's own check, naming the augmentation."""
    with pytest.raises(UserInputError, match=r"augment permutation: segments=99 does not fit a series of length 16"):
        permutation(torch.randn(2, 3, 16), gen(0), segments=99)
    with pytest.raises(UserInputError, match=r"augment rotation: groups \[\[0, 1, 6\]\] name a channel the data does not have"):
        rotation(torch.randn(2, 6, 8), gen(0), groups=[[0, 1, 6]])


def test_rotation_needs_groups_when_channels_are_not_triples():
    with pytest.raises(UserInputError, match="augment rotation: 4 channels is not a multiple of 3"):
        rotation(torch.randn(2, 4, 8), gen(0))


@pytest.mark.parametrize("name", SAMPLE + BATCH)
def test_wrong_rank_or_dtype_is_refused_with_the_expected_shape(name):
    data = ENTRIES[name].meta["data"]
    wrong = {"1d": torch.randn(2, 3, 4, 4), "2d": torch.randn(2, 3, 8), "any": torch.randn(2, 8)}[data]
    expected = {"1d": r"\(N, C, L\)", "2d": r"\(N, C, H, W\)", "any": r"\(N, C, L\) or \(N, C, H, W\)"}[data]
    ints = data_for(name, 2, 0).long()
    for bad in (wrong, ints):
        args = (bad, soft_labels(2, 3, 0, True)) if name in BATCH else (bad,)
        with pytest.raises(UserInputError, match=f"augment {name}: expected a float tensor of shape {expected}"):
            ENTRIES[name].obj(*args, gen(0))
    if name in BATCH:
        for y in (torch.ones(3, 3), torch.ones(2), torch.ones(2, 3, dtype=torch.long)):
            with pytest.raises(UserInputError, match=rf"augment {name}: y must be \(2, K\) float class probabilities"):
                ENTRIES[name].obj(data_for(name, 2, 0), y, gen(0))
