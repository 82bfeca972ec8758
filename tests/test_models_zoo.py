"""Every registered zoo model: shapes, taps, gradients, sizes, and recipe-facing knob errors."""
from __future__ import annotations

import pytest
import torch

from edgedistill.errors import UserInputError
from edgedistill.models import FeatureTaps, KnobError, build_model, count_params, module_paths
from edgedistill.registry import MODELS

NAMES_1D = [e.name for e in MODELS if e.meta.get("kind") == "1d"]
NAMES_2D = [e.name for e in MODELS if e.meta.get("kind") == "2d"]
# (channels, input sizes) per kind: two channel counts and two sizes, kept small for CPU speed.
CASES = {"1d": ((1, 6), ((32,), (57,))), "2d": ((1, 3), ((8, 8), (12, 10)))}


def _build(name: str, channels: int, size: tuple[int, ...], n_out: int = 5) -> torch.nn.Module:
    return build_model(name, channels, n_out, size)


def test_registry_has_the_documented_zoo() -> None:
    assert set(NAMES_1D) >= {"fcn", "resnet1d", "inceptiontime", "cnn1d", "gru"}
    assert set(NAMES_2D) >= {"cnn2d", "resnet8x4", "resnet32x4", "wrn_16_2", "wrn_40_2"}
    for entry in MODELS:
        assert entry.meta["kind"] in ("1d", "2d")
        assert entry.meta["role"] in ("teacher", "student", "any")
        assert len(entry.doc) > 20, f"{entry.name} needs a one-line doc for `edgedistill list models`"


@pytest.mark.parametrize("name", NAMES_1D + NAMES_2D)
def test_forward_shapes_taps_and_backward(name: str) -> None:
    kind = MODELS.entry(name).meta["kind"]
    channels, sizes = CASES[kind]
    for c in channels:
        for size in sizes:
            model = _build(name, c, size)
            x = torch.randn(2, c, *size)
            taps = FeatureTaps(model, model.default_taps)
            with taps:
                out = model(x)
            assert out.shape == (2, 5)
            assert {"feat", "emb"} <= set(taps.outputs)
            assert any(k.startswith("stage") for k in model.default_taps)
            for tap, feat in taps.outputs.items():
                assert feat.shape[0] == 2, tap
            assert taps.outputs["emb"].dim() == 2
            assert taps.outputs["feat"].dim() == 1 + len(size) + 1  # (N, D, L) or (N, D, H, W)
            assert set(model.default_taps.values()) <= set(module_paths(model))
    # backward once (largest case): every parameter gets a finite gradient
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", NAMES_1D + NAMES_2D)
def test_eval_mode_is_deterministic_and_batch_independent(name: str) -> None:
    kind = MODELS.entry(name).meta["kind"]
    size = CASES[kind][1][0]
    model = _build(name, 2, size).eval()
    x = torch.randn(3, 2, *size)
    with torch.no_grad():
        full = model(x)
        single = model(x[:1])
    torch.testing.assert_close(full[:1], single, rtol=1e-4, atol=1e-5)


def test_param_counts_are_sensible() -> None:
    student = count_params(build_model("cnn1d", 6, 4, (100,), width=16, depth=3))
    teacher = count_params(build_model("resnet1d", 6, 4, (100,)))
    assert student < 50_000
    assert teacher > 10 * student
    assert count_params(build_model("fcn", 6, 4, (100,))) > 10 * student
    assert count_params(build_model("inceptiontime", 6, 4, (100,))) > 10 * student


@pytest.mark.parametrize(
    ("name", "millions"), [("resnet8x4", 1.23), ("resnet32x4", 7.43), ("wrn_16_2", 0.70), ("wrn_40_2", 2.25)]
)
def test_cifar_models_match_published_sizes(name: str, millions: float) -> None:
    # Parameter counts reported for CIFAR-100 in the CRD benchmark; matching them checks the architecture.
    assert count_params(build_model(name, 3, 100, (32, 32))) / 1e6 == pytest.approx(millions, abs=0.02)


def test_knobs_change_the_model() -> None:
    assert count_params(build_model("fcn", 6, 4, (64,), width=0.5)) < count_params(build_model("fcn", 6, 4, (64,)))
    deep = build_model("inceptiontime", 3, 4, (48,), depth=7, filters=8, kernel_size=10)
    assert deep.default_taps["feat"] == "stages.2" and deep.default_taps["stage2"] == "stages.1"
    assert count_params(build_model("resnet1d", 6, 4, (64,), width=16)) < count_params(
        build_model("resnet1d", 6, 4, (64,))
    )


def test_cnn1d_segments_head_keeps_time_layout() -> None:
    model = build_model("cnn1d", 6, 4, (64,), head="segments", segments=4, width=8, pool_every=1)
    with FeatureTaps(model, model.default_taps) as taps:
        assert model(torch.randn(2, 6, 64)).shape == (2, 4)
    assert taps.outputs["emb"].shape == (2, 8 * 4)
    # Pooling every block still leaves a time axis, even on a tiny window.
    assert build_model("cnn1d", 1, 3, (3,), depth=5, pool_every=1)(torch.randn(2, 1, 3)).shape == (2, 3)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_gru_variants(bidirectional: bool, readout: str) -> None:
    model = build_model("gru", 6, 3, (40,), hidden=8, layers=2, bidirectional=bidirectional, readout=readout)
    with FeatureTaps(model, model.default_taps) as taps:
        assert model(torch.randn(2, 6, 40)).shape == (2, 3)
    dim = 16 if bidirectional else 8
    assert taps.outputs["feat"].shape == (2, dim, 40)
    assert taps.outputs["stage1"].shape == (2, dim, 40)
    assert taps.outputs["emb"].shape == (2, dim)


def test_gru_last_readout_is_the_final_hidden_state() -> None:
    model = build_model("gru", 2, 3, (10,), hidden=4).eval()
    x = torch.randn(2, 2, 10)
    with torch.no_grad(), FeatureTaps(model, ["pool"]) as taps:
        model(x)
        _, h_n = model.rnn[0].rnn(x.transpose(1, 2))
    torch.testing.assert_close(taps.outputs["pool"], h_n[-1])


def test_unknown_knob_names_the_recipe_key_and_the_options() -> None:
    with pytest.raises(UserInputError) as err:
        build_model("cnn1d", 6, 4, (64,), key="student", depht=4)
    msg = str(err.value)
    assert msg.startswith("student.depht: unknown option for model 'cnn1d'; expected one of:")
    assert "depth" in msg and "width" in msg and "Did you mean 'depth'" in msg
    with pytest.raises(UserInputError, match=r"^teacher\.width: unknown option for model 'resnet32x4'"):
        build_model("resnet32x4", 3, 10, (32, 32), key="teacher", width=2)


@pytest.mark.parametrize(
    ("knobs", "pattern"),
    [
        ({"width": "wide"}, r"student\.width: Input should be a valid integer, got 'wide'"),
        ({"width": 16.0}, r"student\.width: .*integer"),
        ({"depth": True}, r"student\.depth: .*valid integer, got True"),
        ({"head": "max"}, r"student\.head: Input should be 'gap' or 'segments', got 'max'"),
        ({"width": 0}, r"student\.width: must be positive, got 0 \(model 'cnn1d'\)"),
        ({"pool_every": -1}, r"student\.pool_every: must be >= 0"),
    ],
)
def test_bad_knob_values_are_user_errors(knobs: dict, pattern: str) -> None:
    with pytest.raises(UserInputError, match=pattern):
        build_model("cnn1d", 6, 4, (64,), key="student", **knobs)


def test_other_build_errors_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="unknown model 'cnn1x'.*Did you mean 'cnn1d'"):
        build_model("cnn1x", 6, 4, (64,), key="student")
    with pytest.raises(UserInputError, match=r"teacher\.dropout: must be in \[0, 1\)"):
        build_model("wrn_16_2", 3, 4, (8, 8), key="teacher", dropout=1.5)
    with pytest.raises(UserInputError, match="input_size"):
        build_model("resnet8x4", 3, 4, (32,), key="student")
    with pytest.raises(UserInputError, match="in_channels"):
        build_model("fcn", 0, 4, (32,), key="teacher")
    assert build_model("fcn", 1, 2, [16], width=1) is not None  # int for a float knob and a list size are fine


def test_factories_called_directly_raise_knob_errors() -> None:
    with pytest.raises(KnobError) as err:
        MODELS.get("gru")(6, 4, (32,), readout="first")
    assert err.value.knob == "readout" and isinstance(err.value, UserInputError)
