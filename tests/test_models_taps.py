"""FeatureTaps / resolve / extract on arbitrary modules: correctness, error messages, no hook leaks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgedistill.errors import UserInputError
from edgedistill.models import FeatureTaps, build_model, extract, module_paths, resolve


class LSTMWrapper(nn.Module):
    """A user model whose tapped submodule returns a tuple, like most RNNs."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.LSTM(3, 5, batch_first=True)
        self.unused = nn.Linear(5, 5)
        self.decoder = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.encoder(x)
        return self.decoder(seq[:, -1])


def _hooks(module: nn.Module) -> int:
    return len(module._forward_hooks)


def test_sequential_taps_equal_manual_computation() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(2, 4)
    taps = FeatureTaps(model, {"hidden": "1", "first": "0"})
    with taps:
        out = model(x)
    torch.testing.assert_close(taps.outputs["first"], model[0](x))
    torch.testing.assert_close(taps.outputs["hidden"], torch.relu(model[0](x)))
    torch.testing.assert_close(out, model[2](taps.outputs["hidden"]))


def test_zoo_tap_matches_submodule_output() -> None:
    model = build_model("cnn1d", 3, 4, (32,)).eval()
    x = torch.randn(2, 3, 32)
    out, feats = extract(model, x, {"b1": "blocks.1", "emb": "pool"})
    with torch.no_grad():
        manual = model.blocks[1](model.blocks[0](x))
        torch.testing.assert_close(feats["b1"], manual)
        torch.testing.assert_close(feats["emb"], model.blocks[2](manual).mean(dim=-1))
        torch.testing.assert_close(out, model.head(feats["emb"]))


def test_list_of_paths_uses_paths_as_names_and_tuple_outputs_take_first() -> None:
    model = LSTMWrapper()
    x = torch.randn(2, 7, 3)
    out, feats = extract(model, x, ["encoder", "decoder"])
    assert set(feats) == {"encoder", "decoder"}
    assert feats["encoder"].shape == (2, 7, 5)
    torch.testing.assert_close(feats["decoder"], out)
    torch.testing.assert_close(feats["encoder"], model.encoder(x)[0])


def test_invalid_path_lists_valid_ones_and_suggests() -> None:
    model = build_model("cnn1d", 3, 4, (32,))
    with pytest.raises(UserInputError) as err:
        FeatureTaps(model, {"s": "blocks.9"})
    msg = str(err.value)
    assert msg.startswith("tap 'blocks.9' does not exist in CNN1d; valid paths: ")
    assert "blocks.2" in msg and "pool" in msg and "Did you mean" in msg
    with pytest.raises(UserInputError, match="does not exist in LSTMWrapper"):
        resolve(LSTMWrapper(), "encoder.weight_ih_l0")  # a parameter, not a module


def test_long_path_lists_are_truncated() -> None:
    model = build_model("resnet32x4", 1, 2, (8, 8))
    with pytest.raises(UserInputError) as err:
        resolve(model, "layer3.4.bn3")
    msg = str(err.value)
    assert "more, see module_paths()" in msg and len(msg) < 2000
    assert "layer3.4.bn2" in msg and "layer2" in msg  # children of the valid prefix, and the top levels
    assert "layer1.0.conv1" not in msg


def test_module_paths_and_resolve_agree() -> None:
    model = LSTMWrapper()
    assert module_paths(model) == ["encoder", "unused", "decoder"]
    assert resolve(model, "decoder") is model.decoder
    seq = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
    assert module_paths(seq) == ["0", "0.0"]
    assert resolve(seq, "0.0") is seq[0][0]


def test_no_hook_leak_over_many_steps_and_nesting() -> None:
    model = build_model("cnn1d", 3, 4, (32,))
    target = resolve(model, "blocks.2")
    before = _hooks(target)
    taps = FeatureTaps(model, {"a": "blocks.2", "b": "pool"})
    x = torch.randn(2, 3, 32)
    for _ in range(20):
        with taps:
            model(x)
            assert _hooks(target) == before + 1
        assert _hooks(target) == before
    with taps:
        with taps:  # nested use of the same object keeps hooks until the outer block ends
            model(x)
        assert taps.active
        model(x)
    assert _hooks(target) == before and not taps.active
    taps.attach()
    taps.remove()
    assert _hooks(target) == before


def test_hooks_are_removed_when_forward_raises() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    taps = FeatureTaps(model, ["0"])
    with pytest.raises(RuntimeError), taps:
        model(torch.randn(2, 5))
    assert _hooks(model[0]) == 0


def test_outputs_are_fresh_per_block_and_earlier_references_survive() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    taps = FeatureTaps(model, ["0"])
    with taps:
        model(torch.zeros(1, 4))
    first = taps.outputs
    with taps:
        pass
    assert taps.outputs == {} and "0" in first and taps.missing() == ["0"]


def test_works_under_no_grad_and_detach() -> None:
    model = build_model("fcn", 2, 3, (16,), width=0.1)
    x = torch.randn(2, 2, 16)
    with torch.no_grad():
        _, feats = extract(model, x, ["blocks.1"])
    assert not feats["blocks.1"].requires_grad
    taps = FeatureTaps(model, ["blocks.1"], detach=True)
    with taps:
        out = model(x)
    assert out.requires_grad and not taps.outputs["blocks.1"].requires_grad
    with FeatureTaps(model, ["blocks.1"]) as taps:
        model(x)
    assert taps.outputs["blocks.1"].requires_grad  # gradients flow through a feature loss by default


def test_extract_reports_taps_that_never_fire() -> None:
    with pytest.raises(UserInputError, match="'unused'.*not called by forward"):
        extract(LSTMWrapper(), torch.randn(1, 4, 3), ["encoder", "unused"])


def test_a_string_instead_of_a_list_is_rejected() -> None:
    with pytest.raises(UserInputError, match="list of paths"):
        FeatureTaps(nn.Sequential(nn.Linear(1, 1)), "0")  # type: ignore[arg-type]
