"""format c: the 1-D student as C99, compiled with the system compiler and checked against PyTorch.

Random-init models are enough for equivalence: the float build must reproduce PyTorch within 1e-4 on every window,
the int8 build must keep its logits close and its top-1 class mostly; what format c cannot express is refused by
name, and a compiler's failure reaches the user with the compiler's own message."""
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from edgedistill.deploy import c_export
from edgedistill.deploy.c_codegen import c_float, c_string, plan_arena
from edgedistill.deploy.c_export import CCompilerError, export_c
from edgedistill.deploy.c_graph import lower
from edgedistill.deploy.c_quant import fixed_point
from edgedistill.deploy.convert import ExportError
from edgedistill.deploy.metadata import ModelMetadata
from edgedistill.deploy.verify import VerificationError
from edgedistill.errors import EnvironmentProblem
from edgedistill.models import build_model
from edgedistill.models.zoo1d import cnn1d, gru, resnet1d

HAS_CC = any(shutil.which(c) for c in ("cc", "gcc", "clang"))
needs_cc = pytest.mark.skipif(not HAS_CC, reason="no C compiler (cc, gcc or clang) on PATH")


def fake_run(model: nn.Module, channels: int, length: int, n_out: int, n: int = 96, norm: str = "per_channel"):
    """What export_c reads of a loaded run: the student, its metadata and the train/test windows."""
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(n, channels, length, generator=g), torch.randn(n, channels, length, generator=g)
    stats = {"mode": norm, "mean": [0.5 + c for c in range(channels)], "std": [2.0] * channels} if norm != "none" else {"mode": "none"}
    meta = ModelMetadata(task="classification", input_shape=[channels, length], normalization=stats,
                         classes=[f"class {i} \"q\"" for i in range(n_out)], model={"name": type(model).__name__})
    for mod in model.modules():  # batch norm with statistics of its own, so folding is really tested
        if isinstance(mod, nn.BatchNorm1d):
            with torch.no_grad():
                mod.running_mean.uniform_(-0.5, 0.5), mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5), mod.bias.uniform_(-0.2, 0.2)
    model.eval()
    splits = SimpleNamespace(train=SimpleNamespace(x=train_x),
                             test=SimpleNamespace(x=test_x, y=torch.randint(0, n_out, (n,), generator=g)))
    return SimpleNamespace(student=model, seed=0, which="best", metadata=lambda: meta, splits=splits)


class EveryLayer(nn.Module):
    """A chain using every layer format c knows, in forms the zoo does not (stride, dilation, groups, functional)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 6, 3, stride=2, padding=1, dilation=2, groups=2)
        self.act1 = nn.ReLU()
        self.avg = nn.AvgPool1d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.conv2 = nn.Conv1d(6, 8, 4, padding="same", bias=False)
        self.bn2 = nn.BatchNorm1d(8)
        self.avg2 = nn.AvgPool1d(2, padding=1)
        self.drop = nn.Dropout(0.3)
        self.amax = nn.AdaptiveMaxPool1d(3)
        self.fc = nn.Linear(24, 10)
        self.bn3 = nn.BatchNorm1d(10)
        self.out = nn.Linear(10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avg(self.act1(self.conv1(x)))
        x = torch.relu(self.avg2(self.bn2(self.conv2(x))))  # a standalone ReLU after a pooling
        x = torch.flatten(self.amax(self.drop(x)), 1)
        return self.out(torch.relu(self.bn3(self.fc(x))))


MODELS = {
    "cnn1d_gap": (lambda: cnn1d(3, 5, (3, 40)), 3, 40, 5),
    "cnn1d_segments_uneven_even_kernel": (lambda: cnn1d(1, 6, (1, 43), width=8, kernel_size=4, pool_every=1,
                                                        head="segments", segments=4), 1, 43, 6),
    "every_layer": (EveryLayer, 2, 29, 4),
}


@needs_cc
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_float_build_matches_pytorch_and_int8_keeps_its_decisions(name, tmp_path):
    make, channels, length, n_out = MODELS[name]
    torch.manual_seed(1)
    run = fake_run(make(), channels, length, n_out)
    result = export_c(run, tmp_path, int8=True, calibration=64, max_int8_drop=None)
    rows = {r["variant"]: r for r in result.rows}
    assert rows["c fp32"]["max_abs_diff"] <= 1e-4 and rows["c fp32"]["agreement"] == 1.0
    reference = torch.no_grad()(run.student)(run.splits.test.x)
    spread = float(reference.std())
    assert rows["c int8"]["max_abs_diff"] < 0.2 * spread, (rows["c int8"], spread)  # close, not merely plausible
    assert rows["c int8"]["agreement"] >= 0.85
    for variant in ("fp32", "int8"):
        folder = result.files[variant].parent
        assert sorted(p.name for p in folder.iterdir()) == ["student.c", "student.h", "test_student.c"]
        source = (folder / "student.c").read_text()
        assert "malloc" not in source and "#include <stdlib.h>" not in source
        fp = result.footprint[variant]
        header = (folder / "student.h").read_text()
        assert f"STUDENT_ARENA_BYTES {fp['ram_bytes']} " in header and f"STUDENT_FLASH_BYTES {fp['flash_bytes']} " in header
    # int8 weights take a quarter of the float weights' bytes (plus per-channel constants)
    assert result.footprint["int8"]["flash_bytes"] < 0.5 * result.footprint["fp32"]["flash_bytes"]
    assert result.footprint["int8"]["ram_bytes"] * 4 == result.footprint["fp32"]["ram_bytes"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_flash_is_the_bytes_of_the_weights_and_ram_the_largest_live_pair():
    model = cnn1d(3, 5, (3, 40), depth=2, width=4)
    run = fake_run(model, 3, 40, 5)
    programs = c_export.build_programs(run, int8=False, calibration=8)
    n_params = sum(p.numel() for p in model.parameters())  # conv weights + BN (folded into a bias) + head
    bn_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    assert programs["fp32"].flash_bytes == 4 * (n_params - bn_params) + 2 * 8 * 3  # BN's 2 vectors -> 1 bias; mean/std doubles
    assert programs["fp32"].arena_bytes == 4 * (4 * 40 + 4 * 40)  # the second conv's input and output (> window + first)


def test_arena_ends_never_overlap():
    layers = lower(cnn1d(2, 3, (2, 50), depth=4, width=6, pool_every=1, head="segments"), (2, 50))
    direct = [False] * (len(layers) - 1) + [True]
    plan = plan_arena(layers, 100, direct)
    for layer, src, dst in zip(layers[:-1], plan.src, plan.dst):
        start = {ptr: (0 if ptr == "arena" else int(ptr.split("+")[1])) for ptr in (src, dst)}
        a, b = sorted([(start[src], layer.in_size), (start[dst], layer.out_size)])
        assert a[0] + a[1] <= b[0] <= plan.arena - b[1]


@pytest.mark.parametrize("make, named", [
    (lambda: gru(3, 4, (3, 20)), "GRU"),
    (lambda: build_model("transformer", 3, 4, (20,)), "TransformerEncoderLayer"),
    (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(72, 4)), "GELU"),
    (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.Linear(18, 4)), "Linear"),
    (lambda: nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3), nn.Flatten(), nn.Linear(60, 4)), "BatchNorm1d"),
])
def test_a_layer_format_c_cannot_express_is_refused_by_name(make, named):
    with pytest.raises(ExportError, match=rf"format c.*\({named}\)"):
        lower(make().eval(), (3, 20))


def test_a_residual_model_is_refused_as_not_a_chain():
    with pytest.raises(ExportError, match="format c.*chain"):
        lower(resnet1d(3, 4, (3, 20), width=4).eval(), (3, 20))


@needs_cc
def test_a_compile_failure_shows_the_compilers_message_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(c_export, "harness_source", lambda *a, **k: "int main(void) { return no_such_symbol_xyz; }\n")
    with pytest.raises(CCompilerError, match="no_such_symbol_xyz") as info:
        export_c(fake_run(cnn1d(3, 5, (3, 40)), 3, 40, 5), tmp_path / "out", int8=False, calibration=8)
    assert isinstance(info.value, EnvironmentProblem) and "compiling the C test harness" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_missing_compiler_is_named_with_how_to_install_one(tmp_path):
    with pytest.raises(CCompilerError, match=r"no C compiler found \(searched 'no-such-cc-xyz'.*apt-get install gcc"):
        export_c(fake_run(cnn1d(3, 5, (3, 40)), 3, 40, 5), tmp_path, int8=False, calibration=8, compiler="no-such-cc-xyz")


def test_no_compile_writes_the_sources_and_says_they_are_unverified(tmp_path):
    result = export_c(fake_run(cnn1d(3, 5, (3, 40)), 3, 40, 5), tmp_path, int8=True, calibration=8,
                      no_compile=True, compiler="no-such-cc-xyz")
    assert [r["variant"] for r in result.rows] == ["pytorch"]
    assert result.files["int8"].is_file() and "not compiled or verified" in result.notes[0]


@needs_cc
def test_failed_verification_writes_nothing(tmp_path):
    with pytest.raises(VerificationError, match="c fp32 output differs from PyTorch"):
        export_c(fake_run(cnn1d(3, 5, (3, 40)), 3, 40, 5), tmp_path / "out", int8=False, calibration=8, max_diff=-1.0)
    assert not (tmp_path / "out").exists()


def test_c_literals_read_back_exactly():
    values = np.random.default_rng(0).standard_normal(200).astype(np.float32) * np.float32(1e-3) ** np.arange(200) % 7
    for v in [*values, np.float32(3.0), np.float32(-0.0), np.float32(1e-38), np.float32(3.4e38)]:
        text = c_float(float(v))
        assert text.endswith("f") and any(ch in text for ch in ".e")
        assert struct.pack("f", float(text[:-1])) == struct.pack("f", float(v))
    assert c_string('a "b"\\ é?') == '"a \\042b\\042\\134 \\303\\251\\077"'


@pytest.mark.parametrize("m", [1e-9, 0.0031, 0.5, 0.999999, 1.0, 7.25])
def test_requantisation_multiplier_is_exact_to_31_bits(m):
    mult, shift = fixed_point(m)
    assert 2 ** 30 <= mult < 2 ** 31 and 1 <= shift <= 62
    assert abs(mult / 2 ** shift - m) <= m * 2 ** -30


def test_a_multiplier_below_every_accumulator_becomes_zero():
    assert fixed_point(1e-30) == (0, 1)


def test_paths_are_in_a_folder_per_variant(tmp_path):
    result = export_c(fake_run(cnn1d(3, 5, (3, 40)), 3, 40, 5), tmp_path, int8=False, calibration=8, no_compile=True,
                      stem="s")
    assert result.files == {"fp32": Path(tmp_path) / "s_c_fp32" / "student.c"}
    assert {p.name for p in result.extra_files} == {"student.h", "test_student.c"}


@needs_cc
def test_regression_student_with_global_normalisation(tmp_path):
    torch.manual_seed(2)
    run = fake_run(nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(2), nn.Flatten(), nn.Linear(8, 2)),
                   2, 12, 2)
    meta = ModelMetadata(task="regression", input_shape=[2, 12], normalization={"mode": "global", "mean": [3.0], "std": [0.5]},
                         target_scale=[[10.0, -1.0], [3.0, 0.5]], output_name="output", model={"name": "chain"})
    run.metadata = lambda: meta
    run.splits.test.y = torch.randn(len(run.splits.test.x), 2)
    result = export_c(run, tmp_path, int8=True, calibration=32, max_int8_drop=None)
    rows = {r["variant"]: r for r in result.rows}
    assert result.metric == "R2" and rows["c fp32"]["agreement"] is None
    assert rows["c fp32"]["max_abs_diff"] <= 1e-4 and abs(rows["c fp32"]["score"] - rows["pytorch"]["score"]) < 1e-4
    assert "student_classes" not in (result.files["fp32"].parent / "student.h").read_text()


@needs_cc
def test_a_trained_run_exports_through_load_run(tmp_path):
    import edgedistill
    from edgedistill.deploy.runs import load_run

    recipe = {"name": "c1d", "data": {"name": "synthetic", "params": {"n_subjects": 4, "windows_per_subject": 10,
                                                                     "length": 24}, "split": {"by": "subject"}},
              "student": {"model": "cnn1d", "width": 4, "depth": 2, "pool_every": 1, "head": "segments", "segments": 3},
              "method": {"name": "supervised"}, "train": {"epochs": 1, "batch_size": 16}, "seeds": [0],
              "baseline": False, "engine": {"progress": False}, "cache_dir": str(tmp_path / "cache")}
    edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    result = export_c(load_run(tmp_path / "run"), tmp_path / "export", int8=True, calibration=16, max_int8_drop=None)
    rows = {r["variant"]: r for r in result.rows}
    assert rows["c fp32"]["max_abs_diff"] <= 1e-4 and rows["c fp32"]["score"] == rows["pytorch"]["score"]
    assert result.files["int8"] == tmp_path / "export" / "student_seed0_best_c_int8" / "student.c"
    assert "(per_channel)" in (result.files["fp32"].parent / "student.h").read_text()


@needs_cc
def test_a_test_split_smaller_than_the_embedded_windows_still_builds(tmp_path):
    run = fake_run(cnn1d(3, 5, (3, 40), depth=1, width=2), 3, 40, 5, n=1, norm="none")
    result = export_c(run, tmp_path, int8=False, calibration=8)
    assert [r["variant"] for r in result.rows] == ["pytorch", "c fp32"] and "embedded windows: 1," in result.notes[0]


@needs_cc
def test_the_exported_student_can_be_called_for_timing(tmp_path):
    from edgedistill.deploy.c_export import single_window_call

    torch.manual_seed(3)
    run = fake_run(cnn1d(3, 5, (3, 40), depth=2, width=4), 3, 40, 5)
    result = export_c(run, tmp_path, int8=True, calibration=16, no_compile=True)
    window = run.splits.test.x[0].numpy()
    expected = torch.no_grad()(run.student)(run.splits.test.x[:1])[0].numpy()
    call = single_window_call(result.files["fp32"], window)
    assert np.abs(call() - expected).max() <= 1e-4
    out8 = single_window_call(result.files["int8"], window)()
    assert out8.shape == expected.shape and np.isfinite(out8).all()
    with pytest.raises(CCompilerError, match="a window of 3 values"):
        single_window_call(result.files["fp32"], np.zeros(3))
