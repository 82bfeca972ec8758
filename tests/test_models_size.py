"""Parameter counts and storage sizes, checked against hand-computed values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.models import build_model, count_params, describe, size_kb


def test_linear_counts_and_size() -> None:
    layer = nn.Linear(3, 4)  # 12 weights + 4 biases
    assert count_params(layer) == 16
    assert size_kb(layer) == pytest.approx(16 * 4 / 1024)


def test_trainable_only_skips_frozen() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert count_params(model) == 16 + 10
    assert count_params(model, trainable_only=True) == 10


def test_buffers_are_counted_in_their_own_dtype() -> None:
    bn = nn.BatchNorm1d(4)  # weight+bias, running mean+var (fp32), num_batches_tracked (int64)
    assert count_params(bn) == 8
    assert size_kb(bn) == pytest.approx((8 * 4 + 8 * 4 + 8) / 1024)


def test_half_precision_halves_parameter_bytes() -> None:
    layer = nn.Linear(10, 10)
    assert size_kb(layer.half()) == pytest.approx(size_kb(nn.Linear(10, 10)) / 2)


def test_tied_parameters_count_once() -> None:
    emb = nn.Linear(5, 5, bias=False)
    model = nn.Sequential(emb, emb)
    assert count_params(model) == 25
    assert size_kb(model) == pytest.approx(25 * 4 / 1024)


def test_describe_zoo_model() -> None:
    model = build_model("cnn1d", 6, 4, (100,))
    info = describe(model)
    assert set(info) == {"params", "trainable_params", "size_kb"}  # no "model" key to clobber a caller's
    assert info["params"] == info["trainable_params"] == count_params(model)
    expected_kb = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 1024
    assert info["size_kb"] == pytest.approx(expected_kb, abs=1e-3)
    assert info["size_kb"] > info["params"] * 4 / 1024  # BN buffers are part of what is deployed


def test_lazy_modules_must_be_initialised_first() -> None:
    model = nn.Sequential(nn.LazyLinear(3))
    with pytest.raises(UserInputError, match="lazy"):
        count_params(model)
    model(torch.randn(2, 5))
    assert count_params(model) == 18
