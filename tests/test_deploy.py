"""Ship the student: ONNX export (fp32 + int8) verified against PyTorch, metadata, Predictor, profile, and
the errors (a model that cannot be exported, a folder that is not a run, a failed verification)."""
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import edgedistill  # noqa: E402
from edgedistill.cli import app  # noqa: E402
from edgedistill.deploy import ExportError, Predictor, VerificationError, export, profile, read_metadata, to_onnx  # noqa: E402
from edgedistill.deploy.metadata import ModelMetadata  # noqa: E402
from edgedistill.deploy.runs import load_run  # noqa: E402
from edgedistill.errors import UserInputError  # noqa: E402

RECIPE_1D = {
    "name": "deploy1d",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}, "split": {"by": "subject"}},
    "teacher": {"model": "fcn", "width": 0.25, "train": {"epochs": 2, "batch_size": 16}},
    "student": {"model": "cnn1d", "width": 4, "depth": 2},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 2}]},
    "train": {"epochs": 2, "batch_size": 16},
    "seeds": [0],
    "baseline": False,
    "engine": {"progress": False},
    "report": {"profile": True},  # the run adds the deployment profile to its report
}

RECIPE_2D = {
    "name": "deploy2d",
    "data": {"name": "synthetic_images", "params": {"n": 80, "n_classes": 3, "size": 12}},
    "student": {"model": "cnn2d", "width": 4, "depth": 2},
    "method": {"name": "supervised"},
    "train": {"epochs": 2, "batch_size": 16},
    "seeds": [1],
    "baseline": False,
    "engine": {"progress": False},
}


@pytest.fixture(scope="module")
def run1d(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy1d")
    edgedistill.run({**RECIPE_1D, "cache_dir": str(root / "cache")}, out=root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def exported1d(run1d):
    result = CliRunner().invoke(app, ["export", str(run1d), "--int8", "--calibration", "20"])
    assert result.exit_code == 0, result.output
    return run1d, result.output


def _unnormalise(x: np.ndarray, norm: dict) -> np.ndarray:
    """Raw windows from the normalised ones: what a device would record."""
    mean = np.asarray(norm["mean"], dtype=np.float64)[None, :, None]
    std = np.asarray(norm["std"], dtype=np.float64)[None, :, None]
    return x.astype(np.float64) * std + mean


def test_export_cli_writes_verified_fp32_and_int8_with_metadata(exported1d):
    run_dir, output = exported1d
    fp32 = run_dir / "export" / "student_seed0_best.onnx"
    int8 = run_dir / "export" / "student_seed0_best.int8.onnx"
    assert fp32.is_file() and int8.is_file()
    assert "max |diff| vs PyTorch" in output and "onnx int8" in output
    assert not [p for p in fp32.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers

    run = load_run(run_dir)
    meta = read_metadata(fp32)
    info = run.info
    assert meta.task == "classification" and meta.classes == info.classes
    assert meta.input_shape == list(info.input_shape) and meta.normalization == info.normalization["x"]
    assert meta.seed == 0 and meta.checkpoint == "best" and meta.source_run == str(run_dir.resolve())
    assert meta.model["name"] == "cnn1d" and meta.toolkit_version == edgedistill.__version__
    assert meta.quantization == "none" and "int8" in read_metadata(int8).quantization
    rows = {r["variant"]: r for r in meta.verification["rows"]}
    assert rows["onnx fp32"]["max_abs_diff"] <= 1e-4 and rows["onnx fp32"]["agreement"] == 1.0
    assert rows["onnx int8"]["score_drop_points"] <= 1.0
    # The same metadata through the onnx package (any ONNX reader sees the keys)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    assert json.loads(props["edgedistill.classes"]) == info.classes
    assert ModelMetadata.from_props(meta.to_props()) == meta


def test_predictor_matches_pytorch_on_raw_windows(exported1d):
    run_dir, _ = exported1d
    run = load_run(run_dir)
    x = run.splits.test.x.numpy()
    with torch.no_grad():
        expected = [run.info.classes[i] for i in run.student(torch.from_numpy(x)).argmax(1).tolist()]
    raw = _unnormalise(x, run.info.normalization["x"])
    predictor = Predictor(run_dir / "export" / "student_seed0_best.onnx")
    assert predictor.predict(raw) == expected
    assert predictor.predict(raw[0]) == expected[0]  # one window
    proba = predictor.predict_proba(raw)
    assert proba.shape == (len(x), len(run.info.classes)) and np.allclose(proba.sum(1), 1.0)
    int8 = Predictor(run_dir / "export" / "student_seed0_best.int8.onnx").predict(raw)
    assert np.mean([a == b for a, b in zip(int8, expected)]) >= 0.9
    with pytest.raises(UserInputError, match=r"shape \(3, 32\)"):
        predictor.predict(raw[:, :, :20])


def test_run_report_has_the_deployment_profile_and_profile_reads_onnx_files(exported1d):
    run_dir, _ = exported1d
    report = (run_dir / "report.md").read_text()
    assert "## Deployment profile" in report and "onnxruntime int8" in report and "load average" in report
    prof = json.loads((run_dir / "profile.json").read_text())
    assert [r["variant"] for r in prof["rows"]] == ["pytorch eager", "onnxruntime fp32", "onnxruntime int8"]
    assert all(r["median_us"] > 0 and r["p95_us"] >= r["median_us"] for r in prof["rows"])
    # MACs from the PyTorch hooks and from the ONNX graph agree for a conv student
    from edgedistill.deploy.macs import count_onnx
    import onnx

    fp32 = run_dir / "export" / "student_seed0_best.onnx"
    assert count_onnx(onnx.load(str(fp32)))["total"] == prof["macs"] > 0
    result = CliRunner().invoke(app, ["profile", str(fp32), "--runs", "5", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    assert "median µs" in result.output and "MACs" in result.output
    assert profile(fp32, runs=3, warmup=0)["rows"][0]["macs"] == prof["macs"]


def test_failed_verification_exits_2_and_writes_nothing(run1d, tmp_path):
    out = tmp_path / "sub" / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(run1d), "--out", str(out), "--max-diff=-1"])
    assert result.exit_code == 2, result.output
    assert "fp32 output differs from PyTorch" in result.output and "no file was written" in result.output
    assert not (tmp_path / "sub").exists()
    with pytest.raises(VerificationError, match="int8 loses"):
        export(run1d, tmp_path / "m.onnx", int8=True, calibration=8, max_int8_drop=-100.0)
    assert list(tmp_path.iterdir()) == [], "nothing half-written"


def test_legacy_exporter_is_the_fallback_with_a_warning(run1d, monkeypatch):
    from edgedistill.deploy import convert

    run = load_run(run1d)
    x = run.splits.test.x[:4]

    def broken(*args, **kwargs):
        raise RuntimeError("pretend the dynamo exporter failed")

    monkeypatch.setattr(convert, "_dynamo", broken)
    with pytest.warns(UserWarning, match="used the legacy TorchScript exporter"):
        converted = to_onnx(run.student, x[:2])
    assert converted.exporter == "legacy"
    import onnxruntime as ort

    out = ort.InferenceSession(converted.proto.SerializeToString()).run(None, {"input": x.numpy()})[0]
    assert np.abs(out - run.student(x).detach().numpy()).max() < 1e-4


def test_2d_student_exports_and_predicts(tmp_path):
    edgedistill.run({**RECIPE_2D, "cache_dir": str(tmp_path / "cache")}, out=tmp_path / "run", progress=False)
    result = export(tmp_path / "run", int8=True, calibration=16)
    assert result.fp32.name == "student_seed1_best.onnx" and result.int8.is_file()
    rows = {r["variant"]: r for r in result.verification["rows"]}
    assert rows["onnx fp32"]["max_abs_diff"] <= 1e-4
    run = load_run(tmp_path / "run", seed=1)
    x = run.splits.test.x.numpy()
    norm = run.info.normalization["x"]
    raw = x * np.asarray(norm["std"])[None, :, None, None] + np.asarray(norm["mean"])[None, :, None, None]
    with torch.no_grad():
        expected = [run.info.classes[i] for i in run.student(torch.from_numpy(x)).argmax(1).tolist()]
    assert Predictor(result.fp32).predict(raw) == expected
    assert read_metadata(result.int8).input_shape == [1, 12, 12]


class Gate(nn.Module):
    """Doubles its input when the batch mean is positive: a Python branch on tensor values."""

    def forward(self, x):
        if x.mean() > 0:
            return x * 2
        return x


def test_a_model_that_cannot_be_exported_names_the_layer_and_why():
    model = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.Sequential(nn.ReLU(), Gate()), nn.AdaptiveAvgPool1d(1),
                          nn.Flatten(), nn.Linear(4, 2)).eval()
    with pytest.raises(ExportError) as err:
        to_onnx(model, torch.randn(2, 3, 16))
    message = str(err.value)
    assert "layer '1.1' (Gate)" in message and "data-dependent control flow" in message
    assert "if x.mean() > 0" in message  # the line that has to change


class SingularValues(nn.Module):
    def forward(self, x):
        return torch.linalg.svdvals(x)


def test_an_operator_without_onnx_translation_names_the_layer_and_the_operator():
    model = nn.Sequential(nn.Linear(16, 4), SingularValues(), nn.Linear(3, 2)).eval()
    with pytest.raises(ExportError) as err:
        to_onnx(model, torch.randn(2, 3, 16))
    message = str(err.value)
    assert "layer '1' (SingularValues)" in message and "svd" in message
    assert "the legacy exporter also failed" in message  # the fallback was tried, and said why it failed too


def test_adaptive_pool_that_does_not_divide_is_rewritten_exactly():
    from edgedistill.models import build_model

    model = build_model("cnn1d", 2, 3, (37,), width=4, depth=2, head="segments", segments=4).eval()
    converted = to_onnx(model, torch.randn(2, 2, 37))
    assert converted.rewrites and "AdaptiveAvgPool1d" in converted.rewrites[0]
    import onnxruntime as ort

    x = torch.randn(5, 2, 37)
    out = ort.InferenceSession(converted.proto.SerializeToString()).run(None, {"input": x.numpy()})[0]
    assert np.abs(out - model(x).detach().numpy()).max() < 1e-5
    assert len(converted.proto.graph.node) < 40  # not the exporter's hundreds of Gather/Add nodes


@pytest.mark.parametrize("command", ["export", "profile"])
def test_a_folder_that_is_not_a_run_exits_2(tmp_path, command):
    (tmp_path / "empty").mkdir()
    for target, message in [(tmp_path / "empty", "not an edgedistill run directory"), (tmp_path / "nope", "does not exist")]:
        result = CliRunner().invoke(app, [command, str(target)])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert list((tmp_path / "empty").iterdir()) == []


def test_bad_seed_and_missing_model_file_exit_2(run1d, tmp_path):
    result = CliRunner().invoke(app, ["export", str(run1d), "--seed", "7"])
    assert result.exit_code == 2 and "the run has seeds [0], not 7" in result.output
    result = CliRunner().invoke(app, ["profile", str(tmp_path / "missing.onnx")])
    assert result.exit_code == 2 and "does not exist" in result.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserInputError, match="no edgedistill metadata"):
            model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2)).eval()
            path = tmp_path / "plain.onnx"
            path.write_bytes(to_onnx(model, torch.randn(2, 3, 2), exporter="legacy").proto.SerializeToString())
            Predictor(path)


@pytest.mark.parametrize("name, knobs, shape", [("gru", {"hidden": 8}, (3, 24)), ("transformer", {}, (3, 32))])
def test_macs_from_pytorch_hooks_and_from_the_onnx_graph_agree(name, knobs, shape):
    from edgedistill.deploy.macs import count_onnx, count_torch
    from edgedistill.models import build_model
    from edgedistill.registry import MODELS

    if name not in [e.name for e in MODELS]:
        pytest.skip(f"no '{name}' model registered")
    model = build_model(name, shape[0], 4, shape[1:], **knobs).eval()
    x = torch.randn(2, *shape)
    counted = count_torch(model, x)["total"]
    assert counted > 0 and count_onnx(to_onnx(model, x).proto)["total"] == counted


def test_predictor_returns_regression_values_in_original_units(tmp_path):
    import onnx

    from edgedistill.deploy.metadata import attach

    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 1)).eval()
    meta = ModelMetadata(task="regression", input_shape=[2, 4], output_name="output",
                         normalization={"mode": "global", "mean": [1.0], "std": [2.0]}, target_scale=[[10.0], [3.0]])
    proto = to_onnx(model, torch.randn(2, 2, 4), exporter="legacy", names=("input", "output")).proto
    attach(proto, meta)
    onnx.save_model(proto, str(tmp_path / "reg.onnx"))
    raw = np.random.default_rng(0).normal(size=(5, 2, 4))
    with torch.no_grad():
        expected = model(torch.from_numpy((raw - 1.0) / 2.0).float())[:, 0].numpy() * 3.0 + 10.0
    predictor = Predictor(tmp_path / "reg.onnx")
    assert np.allclose(predictor.predict(raw), expected, atol=1e-5)
    assert np.isclose(predictor.predict(raw[0]), expected[0], atol=1e-5)
    with pytest.raises(UserInputError, match="regression"):
        predictor.predict_proba(raw)

