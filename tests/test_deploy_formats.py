"""Several export formats behind one interface (deploy/formats.py): the registry and its errors, LiteRT (TFLite) and
ExecuTorch files verified in their own runtimes, the verification table beside the files, an operator a format cannot
express, and profile's budget checks."""
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import edgedistill  # noqa: E402
from edgedistill.cli import app  # noqa: E402
from edgedistill.deploy import formats  # noqa: E402
from edgedistill.deploy.profile import check_budgets  # noqa: E402
from edgedistill.errors import UserInputError  # noqa: E402

HAVE_TFLITE = importlib.util.find_spec("litert_torch") is not None and importlib.util.find_spec("ai_edge_litert") is not None
HAVE_EXECUTORCH = importlib.util.find_spec("executorch") is not None
needs_tflite = pytest.mark.skipif(not HAVE_TFLITE, reason="litert-torch / ai-edge-litert not installed (pip install 'edgedistill[tflite]')")
needs_executorch = pytest.mark.skipif(not HAVE_EXECUTORCH, reason="executorch not installed (pip install 'edgedistill[executorch]')")

RECIPE = {
    "name": "formats1d",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}, "split": {"by": "subject"}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "supervised"},
    "train": {"epochs": 2, "batch_size": 16},
    "seeds": [0],
    "baseline": False,
    "engine": {"progress": False},
    "report": {"profile": False},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    edgedistill.run({**RECIPE, "cache_dir": str(root / "cache")}, out=root / "run", progress=False)
    return root / "run"


def test_format_names_are_parsed_and_unknown_ones_named():
    assert formats.parse_formats("onnx, tflite,onnx") == ["onnx", "tflite"]
    with pytest.raises(UserInputError, match="unknown format.*'tfl'.*onnx, tflite, executorch, c"):
        formats.parse_formats("onnx,tfl")
    with pytest.raises(UserInputError, match="expected one or more"):
        formats.parse_formats(" , ")


def test_a_missing_package_names_the_extra_to_install(monkeypatch):
    from edgedistill.deploy import export_executorch, export_tflite

    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import fails as if not installed
    with pytest.raises(UserInputError, match=r"format 'tflite' needs the package 'litert-torch'.*edgedistill\[tflite\]"):
        export_tflite._require()
    monkeypatch.setitem(sys.modules, "executorch.exir", None)
    with pytest.raises(UserInputError, match=r"format 'executorch' needs the package 'executorch'.*edgedistill\[executorch\]"):
        export_executorch._require()


def test_a_backend_module_that_is_absent_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "c", formats.FormatSpec("c", "edgedistill.deploy.no_such_backend", "f", "", ".c", ""))
    with pytest.raises(UserInputError, match="--format c: this edgedistill has no backend module"):
        formats.backend("c")


def test_budgets_say_which_budget_and_measured_against_allowed():
    result = {"rows": [
        {"variant": "pytorch eager", "params": 5000, "median_us": 900.0},
        {"variant": "tflite fp32", "params": 5000, "median_us": 120.0},
        {"variant": "c int8", "params": 5000, "median_us": None, "ram_bytes": 3 * 1024},
    ]}
    assert check_budgets(result, max_params=5000, max_ram_kb=3, max_latency_us=120) == []
    problems = check_budgets(result, max_params=4999, max_ram_kb=2.5, max_latency_us=100)
    assert problems == ["--max-params: the student has 5,000 parameters > 4,999 allowed",
                        "--max-ram-kb: c int8 needs 3.0 KB of RAM > 2.5 KB allowed",
                        "--max-latency-us: tflite fp32 takes 120 µs (median, batch 1, one thread) > 100 µs allowed"]
    with pytest.raises(UserInputError, match="add c to --format"):
        check_budgets({"rows": result["rows"][:2]}, max_ram_kb=1)


def test_profile_budget_exceeded_exits_1_and_within_budget_exits_0(run_dir):
    base = ["profile", str(run_dir), "--runs", "3", "--warmup", "0", "--no-report", "--no-int8"]
    over = CliRunner().invoke(app, [*base, "--max-params", "10", "--max-latency-us", "1e9"])
    assert over.exit_code == 1, over.output
    assert "over budget: --max-params: the student has" in over.output and "> 10 allowed" in over.output
    fine = CliRunner().invoke(app, [*base, "--max-params", "1000000"])
    assert fine.exit_code == 0, fine.output
    assert "within budget: --max-params 1e+06" in fine.output
    refused = CliRunner().invoke(app, [*base, "--max-ram-kb", "4"])
    assert refused.exit_code == 2 and "add c to --format" in refused.output


class _Cumprod(nn.Module):
    def forward(self, x):
        return torch.cumprod(x, -1).mean(-1)


@needs_tflite
@pytest.mark.slow
def test_tflite_export_is_verified_written_with_its_table_and_profiled(run_dir, tmp_path):
    out = tmp_path / "ship" / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "onnx,tflite", "--int8", "--calibration", "16",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    ship = out.parent
    assert {p.name for p in ship.iterdir()} == {
        "model.onnx", "model.int8.onnx", "model.onnx.verification.json", "model.onnx.verification.md",
        "model.tflite", "model.int8.tflite", "model.tflite.verification.json", "model.tflite.verification.md"}
    table = json.loads((ship / "model.tflite.verification.json").read_text())
    rows = {r["variant"]: r for r in table["rows"]}
    assert rows["tflite fp32"]["max_abs_diff"] < 1e-4 and rows["tflite fp32"]["agreement"] == 1.0
    assert rows["tflite int8"]["max_abs_diff"] > 0  # really quantised, not the float model again
    assert table["sizes"]["int8"] > 0 and "litert-torch" in table["backend"]

    from edgedistill.deploy.export_tflite import interpreter_outputs
    from edgedistill.deploy.runs import load_run

    run = load_run(run_dir)
    x = run.splits.test.x.numpy()[:5]
    ours = interpreter_outputs(ship / "model.tflite", x)
    assert np.abs(ours - run.student(torch.from_numpy(x)).detach().numpy()).max() < 1e-4

    prof = CliRunner().invoke(app, ["profile", str(run_dir), "--format", "tflite", "--runs", "3", "--warmup", "0",
                                    "--no-report", "--max-latency-us", "1e9"])
    assert prof.exit_code == 0, prof.output
    assert "tflite fp32" in prof.output and "tflite int8" in prof.output and "within budget" in prof.output


@needs_tflite
def test_tflite_failed_verification_writes_nothing(run_dir, tmp_path):
    out = tmp_path / "sub" / "m.tflite"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "tflite", "--out", str(out), "--max-diff=-1"])
    assert result.exit_code == 2, result.output
    assert "tflite fp32 output differs from PyTorch" in result.output and "no file was written" in result.output
    assert not (tmp_path / "sub").exists()


@needs_tflite
def test_an_operator_tflite_cannot_express_is_named():
    from edgedistill.deploy.convert import ExportError
    from edgedistill.deploy.export_tflite import convert

    with pytest.raises(ExportError, match=r"format 'tflite' cannot express the student \(fp32\): operator\(s\) aten.cumprod"):
        convert(_Cumprod().eval(), torch.randn(1, 3, 16))


@needs_executorch
@pytest.mark.slow
def test_executorch_export_is_verified_in_its_runtime(run_dir, tmp_path):
    result = CliRunner().invoke(app, ["export", str(run_dir), "--format", "executorch", "--int8", "--calibration", "16",
                                      "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "m.executorch.verification.json").read_text())
    rows = {r["variant"]: r for r in table["rows"]}
    assert rows["executorch fp32"]["max_abs_diff"] < 1e-4 and rows["executorch int8"]["max_abs_diff"] > 0
    assert (tmp_path / "m.pte").is_file() and (tmp_path / "m.int8.pte").is_file()
    assert "xnnpack" in table["backend"]


@needs_executorch
@pytest.mark.slow
def test_an_operator_executorch_cannot_express_is_named():
    from edgedistill.deploy.convert import ExportError
    from edgedistill.deploy.export_executorch import program_bytes

    with pytest.raises(ExportError, match=r"format 'executorch' cannot express the student \(fp32\): operator\(s\) aten.cumprod"):
        program_bytes(_Cumprod().eval(), torch.randn(1, 3, 16))


def test_a_run_without_a_trained_student_is_a_clear_error(run_dir, tmp_path):
    import shutil

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run_dir / "config.yaml", unfinished / "config.yaml")  # the run's recipe, no checkpoint yet
    result = CliRunner().invoke(app, ["export", str(unfinished), "--format", "onnx,tflite,executorch"])
    assert result.exit_code == 2, result.output
    assert "no student checkpoint at supervised/seed0/checkpoints/best.pt (is the run finished?" in result.output
    assert sorted(p.name for p in unfinished.iterdir()) == ["config.yaml"]
