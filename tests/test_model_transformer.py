"""The sensor-patch transformer: shapes, tokens, taps, size, knob errors, and training on the synthetic set."""
from __future__ import annotations

import pytest
import torch

from edgedistill.config import DataConfig
from edgedistill.data import prepare_data
from edgedistill.errors import UserInputError
from edgedistill.experiment.build import dry_run
from edgedistill.models import FeatureTaps, build_model, count_params, module_paths
from edgedistill.models.transformer import PatchEmbed
from edgedistill.registry import MODELS


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: a second thread only spins (10 s of CPU instead of 1.7 s for the training test on a busy
    # 2-core machine). Restored afterwards for the other test files.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registered_as_a_1d_model() -> None:
    entry = MODELS.entry("transformer")
    assert entry.meta["kind"] == "1d" and len(entry.doc) > 20


@pytest.mark.parametrize(("channels", "length"), [(1, 32), (6, 57), (9, 128), (4, 5)])
def test_shapes_and_taps(channels: int, length: int) -> None:
    model = build_model("transformer", channels, 5, (length,), patch=8)
    sensors, patches = -(-channels // min(3, channels)), -(-length // 8)
    with FeatureTaps(model, model.default_taps) as taps:
        out = model(torch.randn(3, channels, length))
    assert out.shape == (3, 5)
    assert set(model.default_taps.values()) <= set(module_paths(model))
    # Channels-first like the conv zoo: (N, d_model, tokens), one token per (sensor, patch).
    assert taps.outputs["feat"].shape == (3, 32, sensors * patches)
    assert taps.outputs["stage1"].shape == (3, 32, sensors * patches)
    assert taps.outputs["emb"].shape == (3, 32)
    torch.testing.assert_close(taps.outputs["emb"], taps.outputs["feat"].mean(-1))  # mean pooling over tokens
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_tokens_are_per_sensor_patches() -> None:
    """A change in one sensor's one patch changes only that token of the embedding."""
    embed = PatchEmbed(in_channels=6, length=32, d_model=8, patch=8, sensor_channels=3)
    x = torch.randn(2, 6, 32)
    y = x.clone()
    y[:, 3:6, 8:16] += 1.0  # sensor 1, patch 1
    changed = (embed(y) - embed(x)).abs().sum(dim=(0, 2)) > 0
    expected = torch.zeros(2 * 4, dtype=torch.bool)
    expected[1 * 4 + 1] = True  # tokens are sensor-major, patch-minor
    assert torch.equal(changed, expected)


def test_size_is_tens_of_thousands_and_knobs_change_it() -> None:
    small = count_params(build_model("transformer", 6, 4, (100,)))
    assert 5_000 < small < 50_000
    assert count_params(build_model("transformer", 6, 4, (100,), d_model=64, depth=3)) > 3 * small
    assert build_model("transformer", 6, 4, (100,), depth=3).default_taps["stage2"] == "blocks.1"
    # Positional embedding sized from the window: longer windows, more time positions.
    assert count_params(build_model("transformer", 6, 4, (200,))) - small == (25 - 13) * 32  # ceil(200 / 8) - ceil(100 / 8) patches


def test_eval_is_deterministic_and_batch_independent() -> None:
    model = build_model("transformer", 3, 4, (40,)).eval()
    x = torch.randn(4, 3, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]), rtol=1e-4, atol=1e-5)


def test_knob_errors_name_the_recipe_key() -> None:
    with pytest.raises(UserInputError, match=r"student\.heads: must divide d_model \(30\)"):
        build_model("transformer", 3, 4, (40,), key="student", d_model=30, heads=4)
    with pytest.raises(UserInputError, match=r"student\.patch: must be positive"):
        build_model("transformer", 3, 4, (40,), key="student", patch=0)
    with pytest.raises(UserInputError, match=r"student\.dropout: must be in \[0, 1\)"):
        build_model("transformer", 3, 4, (40,), key="student", dropout=1.0)
    with pytest.raises(UserInputError, match=r"student\.depht: unknown option.*Did you mean 'depth'"):
        build_model("transformer", 3, 4, (40,), key="student", depht=2)


def test_window_length_other_than_built_for_is_a_clear_error() -> None:
    model = build_model("transformer", 3, 4, (40,))
    with pytest.raises(ValueError, match="built for windows of length 40"):
        model(torch.randn(2, 3, 48))


def test_learns_the_synthetic_wearable_set() -> None:
    splits = prepare_data(DataConfig(name="synthetic", params={"n_subjects": 4, "windows_per_subject": 40,
                                                               "length": 48}, split={"by": "random"}))
    torch.manual_seed(0)
    model = build_model("transformer", 3, splits.info.n_outputs, (48,), patch=8, dropout=0.0)
    dry_run(splits, model, [])  # the toolkit's pre-flight check on a real batch passes
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        for batch in splits.train.batches(16, shuffle=True, generator=gen):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(splits.val.x).argmax(1) == splits.val.y).float().mean()
    assert acc > 0.5  # 4 classes: chance is 0.25
