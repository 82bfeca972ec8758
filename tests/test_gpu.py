"""GPU readiness: bf16 autocast honoured, deterministic CUDA training, pinned non-blocking copies, DDP on two GPUs.

The tests marked ``gpu`` need CUDA and skip without it (``benchmarks/gpu.sh`` runs them on a GPU machine; they ran on
one H200 on 2026-12-04). The others check, on the CPU, what the GPU path shares with it: the deterministic flags, and the GPU
benchmark's dry run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgedistill.config import EngineConfig, TrainConfig
from edgedistill.engine.loop import Stage, Trainer, to_device
from edgedistill.methods.supervised import Supervised
from helpers import tiny_net, toy_splits

ROOT = Path(__file__).resolve().parents[1]
no_cuda = "needs a CUDA GPU (torch.cuda.is_available() is False here); benchmarks/gpu.sh runs these on a GPU machine"


def _fit(tmp_path, name: str, engine: EngineConfig, record: list | None = None) -> dict:
    splits = toy_splits()
    torch.manual_seed(0)
    net = tiny_net()
    if record is not None:  # the dtype the last layer computes in, during training
        net[-1].register_forward_hook(lambda m, i, o: record.append(o.dtype) if m.training else None)
    Trainer(engine).fit(Supervised(net, splits.info), splits, Stage(name, tmp_path / name, 0, TrainConfig(epochs=2, batch_size=16)))
    from edgedistill.engine import checkpoint as ckpt

    return ckpt.load(tmp_path / name / "checkpoints" / "last.pt")["networks"]["student"]


def test_deterministic_training_sets_the_cuda_flags(tmp_path, monkeypatch):
    """engine.deterministic also turns cuDNN's autotuner off, its kernels deterministic, and sets cuBLAS's workspace
    (read when CUDA starts); the flags are process-wide, so put back afterwards."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    _fit(tmp_path, "det", EngineConfig(progress=False, threads=1, deterministic=True))
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=no_cuda)
def test_precision_is_honoured_on_cuda(tmp_path, precision, dtype):
    seen: list = []
    _fit(tmp_path, precision, EngineConfig(accelerator="cuda", precision=precision, progress=False), seen)
    assert seen and set(seen) == {dtype}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=no_cuda)
def test_deterministic_cuda_training_repeats_exactly(tmp_path):
    engine = EngineConfig(accelerator="cuda", deterministic=True, progress=False)
    a, b = _fit(tmp_path, "a", engine), _fit(tmp_path, "b", engine)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=no_cuda)
def test_batches_reach_the_gpu_from_pinned_memory():
    batch = {"x": torch.randn(8, 3, 16), "y": torch.arange(8)}
    moved = to_device(batch, torch.device("cuda"))
    torch.cuda.synchronize()
    assert all(v.is_cuda for v in moved.values()) and torch.equal(moved["y"].cpu(), batch["y"])


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (DDP across them)")
def test_ddp_on_two_gpus_equals_one(tmp_path):
    from test_distributed import alone, start_ranks, weights

    ranks = start_ranks([str(tmp_path / "two"), "ddp", "32", "2", "cuda"], world=2)
    assert all(r.returncode == 0 for r in ranks), ranks[0].stderr[-3000:]
    one = alone([str(tmp_path / "one"), "auto", "32", "2", "cuda"])
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:  # (CUDA's reductions differ in order between one and two devices: a looser tolerance than on CPU)
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), k


@pytest.mark.slow  # (~25 s on 2 cores: three arms and two DDP processes)
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the dry run's DDP arm is two CPU processes")
def test_gpu_benchmark_dry_run_runs_its_cpu_path():
    """benchmarks/gpu.sh cannot run here (no GPU): its dry run exercises the same Python entry on the CPU."""
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "|---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["teacher", "kd", "teacher (DDP)"]
    assert all("failed" not in r for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=no_cuda)
@pytest.mark.parametrize("given", [True, False])
def test_a_teacher_on_the_gpu_is_evaluated_and_distilled_with_a_feature_term(tmp_path, given):
    """A given teacher (``teacher.load``) is built on the CPU and evaluated before any stage moves it; a trained one is
    on the GPU when the method is built on the CPU. Both stopped the first GPU runs of benchmarks/cifar100.py (input
    and weights on different devices): the evaluation, then FitNet's shape probe for its regressor."""
    import edgedistill
    from edgedistill.config import DataConfig, ModelConfig
    from edgedistill.data import prepare_data
    from edgedistill.experiment.build import build_network
    from helpers import TINY_RECIPE

    info = prepare_data(DataConfig(**TINY_RECIPE["data"])).info
    teacher = {k: v for k, v in TINY_RECIPE["teacher"].items() if k != "train"}
    torch.save(build_network(ModelConfig(**teacher), info, "teacher", seed=0).state_dict(), tmp_path / "teacher.pt")
    terms = TINY_RECIPE["method"]["terms"] + [{"loss": "fitnet", "weight": 1.0, "student_tap": "feat", "teacher_tap": "feat"}]
    recipe = {**TINY_RECIPE, "teacher": {**teacher, "load": str(tmp_path / "teacher.pt")} if given else TINY_RECIPE["teacher"],
              "method": {"name": "offline", "terms": terms}, "seeds": [0],
              "engine": {"accelerator": "cuda", "progress": False}, "report": {"plots": False, "profile": False}}
    summary = edgedistill.run(recipe, out=tmp_path / "run", progress=False)
    roles = {r["role"]: r for r in summary["rows"]}
    assert {"teacher", "student alone", "method"} <= set(roles)
    assert roles["teacher"]["metrics"]["acc"]["mean"] >= 0 and "detail" in roles["method"]  # (the report's pass, on the GPU)
