"""Several processes through Lightning Fabric on CPU (gloo): DDP equals one process on the global batch, FSDP trains and
checkpoints, bad input is refused before anything is written.

The processes are started the way torchrun starts them (LOCAL_RANK, RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment, which Fabric detects), each running this file as a script (``worker`` below)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two CPU processes need two cores (engine.devices is refused above the core count)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int, kill_after: int = 0) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EDGEDISTILL_TEST_KILL_AFTER_EPOCH"}
    if kill_after:  # the training loop's test-only hook: SIGKILL right after that epoch's checkpoint
        env["EDGEDISTILL_TEST_KILL_AFTER_EPOCH"] = str(kill_after)
    return {**env, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
            "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0", "TORCHELASTIC_RUN_ID": "edgedistill-test",
            "LOCAL_WORLD_SIZE": str(world), "GROUP_RANK": "0", "PYTHONPATH": str(HERE)}


def start_ranks(args: list[str], world: int, timeout: int = 120, kill_after: int = 0) -> list[subprocess.CompletedProcess]:
    """``python tests/test_distributed.py ARGS`` as ``world`` ranks of one job; their results, rank 0 first."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, __file__, *args], env=rank_env(r, world, port, kill_after), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(world)]
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def alone(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")}
    return subprocess.run([sys.executable, __file__, *args], env={**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)},
                          capture_output=True, text=True, timeout=120)


def weights(stage: Path, which: str = "last") -> dict:
    from edgedistill.engine import checkpoint as ckpt

    return ckpt.load(stage / "checkpoints" / f"{which}.pt")["networks"]["student"]


# -- the worker (run as a script by the tests) ------------------------------------------------------------------
def worker(out: str, strategy: str, hidden: str, epochs: int, accelerator: str = "cpu") -> None:
    from helpers import toy_splits

    from edgedistill.config import EngineConfig, TrainConfig
    from edgedistill.engine.loop import Stage, Trainer
    from edgedistill.methods.supervised import Supervised
    from edgedistill.registry import MODELS
    import edgedistill.models  # noqa: F401 - registers the zoo

    world = int(os.environ.get("WORLD_SIZE", "1"))
    splits = toy_splits(n=120)
    torch.manual_seed(0)
    net = MODELS.get("gru")(3, 3, (3, 16), hidden=int(hidden))
    method = Supervised(net, splits.info)
    engine = EngineConfig(accelerator=accelerator, devices=world, strategy=strategy, threads=1, progress=False)

    def noise(batch: dict, gen: torch.Generator) -> dict:  # drawn on the global batch: the draws of one process
        return {**batch, "x": batch["x"] + 0.1 * torch.randn(batch["x"].shape, generator=gen).to(batch["x"].device)}

    seen: list[list[int]] = []  # the rows each training step of this rank saw
    step = method.training_step
    method.training_step = lambda batch, s: (seen.append(batch["index"].tolist()), step(batch, s))[1]  # type: ignore[method-assign]
    train = TrainConfig(epochs=epochs, batch_size=8, lr=0.01)
    summary = Trainer(engine).fit(method, splits, Stage("toy", Path(out), 0, train, augment=noise))
    print(json.dumps({"rank": int(os.environ.get("RANK", "0")), "val": summary["val"]["last"], "seen": seen}))


# -- tests ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[Path, list]:
    """The run on one process that the runs on two are compared with: its stage folder and the rows of each step."""
    out = tmp_path_factory.mktemp("one")
    one = alone([str(out), "auto", "32", "2"])
    assert one.returncode == 0, one.stderr[-3000:]
    return out, json.loads(one.stdout.splitlines()[-1])["seen"]


@needs_two_cores
def test_ddp_steps_equal_one_process_on_the_global_batch(tmp_path, one_process):
    """gru (a shipped model without BatchNorm or dropout): per-sample losses, so 2 ranks x 4 rows = 1 process x 8 rows."""
    ranks = start_ranks([str(tmp_path / "two"), "ddp", "32", "2"], world=2)
    assert all(r.returncode == 0 for r in ranks), ranks[0].stderr[-3000:] + ranks[1].stderr[-3000:]
    # Each rank trained on its own half of every global batch, in the order of the run on one process.
    seen = [json.loads(r.stdout.splitlines()[-1])["seen"] for r in ranks] + [one_process[1]]
    assert len(seen[2]) == len(seen[0]) == len(seen[1]) and all(len(rows) == 8 for rows in seen[2])
    assert all(r0 + r1 == whole and len(r0) == 4 for r0, r1, whole in zip(*seen))
    a, b = weights(one_process[0]), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (k, (a[k] - b[k]).abs().max())
    # Rank 1 wrote nothing: the stage's files are rank 0's alone.
    logs = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in logs] == [1, 2]
    one_log = [json.loads(line) for line in (one_process[0] / "metrics.jsonl").read_text().splitlines()]
    two_log = [json.loads(line) for line in logs]
    for x, y in zip(one_log, two_log):  # the logged training loss is the global batch's (mean over ranks)
        assert x["train"]["total"] == pytest.approx(y["train"]["total"], abs=1e-5)
        assert x["val"] == pytest.approx(y["val"], abs=1e-5)


@pytest.mark.slow  # (~25 s: two process pairs)
@needs_two_cores
def test_fsdp_trains_and_checkpoints_and_a_killed_run_resumes_on_one_process(tmp_path, one_process):
    """FSDP over 2 CPU processes (gloo) killed after epoch 1, resumed by one process from its last.pt (weights and
    optimizer state gathered in full): the weights of one process trained straight through, to 1e-6."""
    ranks = start_ranks([str(tmp_path / "fsdp"), "fsdp", "32", "2"], world=2, kill_after=1)
    assert [r.returncode for r in ranks] == [-9, -9], ranks[0].stderr[-3000:] + ranks[1].stderr[-3000:]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines()] == [1]
    resumed = alone([str(tmp_path / "fsdp"), "auto", "32", "2"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = weights(one_process[0]), weights(tmp_path / "fsdp")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), (k, (a[k] - b[k]).abs().max())


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:6])


def test_ddp_learns_used_parameters_once_only_for_a_fixed_loss():
    """``Method.fixed_graph`` (DDP's static_graph instead of a per-step search for unused parameters): the plain loss
    and offline terms that run every step on the student alone; not a term that starts late, nor one with trainable
    parts of its own (a loss module), nor a regime with its own step."""
    from helpers import toy_splits

    from edgedistill.config import TermConfig
    from edgedistill.methods.offline import OfflineDistillation
    from edgedistill.methods.supervised import Supervised
    from edgedistill.registry import MODELS
    import edgedistill.models  # noqa: F401 - registers the zoo

    splits = toy_splits()
    info = splits.info

    def net() -> torch.nn.Module:
        return MODELS.get("cnn1d")(info.input_shape[0], info.n_outputs, info.input_shape[1:], width=4, depth=2)

    def offline(*terms: TermConfig) -> OfflineDistillation:
        return OfflineDistillation(net(), info, net().eval(), list(terms), train=splits.train)

    assert Supervised(net(), info).fixed_graph
    assert offline(TermConfig(loss="ce", weight=0.5), TermConfig(loss="kd", weight=0.5)).fixed_graph
    assert not offline(TermConfig(loss="ce"), TermConfig(loss="kd", start_epoch=2)).fixed_graph
    assert not offline(TermConfig(loss="ce"), TermConfig(loss="fitnet")).fixed_graph  # its regressor trains too


@pytest.mark.parametrize("users", [None, "WARNING"])
def test_ranks_fabric_starts_log_torchs_cpp_warnings_from_error_up_unless_the_user_chose(monkeypatch, users):
    """Rank 0 shows the C++ warnings every rank has; the ones only another rank has are its peer leaving (a SIGTERM
    while the ranks connect: a TCPStore stack trace). A level the user set is theirs, and this process keeps its own."""
    from edgedistill.engine.distributed import _ranks_warn_once

    if users is None:
        monkeypatch.delenv("TORCH_CPP_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TORCH_CPP_LOG_LEVEL", users)
    probe = [sys.executable, "-c", "import os; print(os.environ.get('TORCH_CPP_LOG_LEVEL'))"]
    with _ranks_warn_once():  # (what Fabric's launcher does inside: start the ranks with this environment)
        child = subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()
    assert child == (users or "ERROR")
    assert os.environ.get("TORCH_CPP_LOG_LEVEL") == users
