"""`edgedistill run` on several processes: bad input refused before anything is written (exit 2, one line), and a
2-process run (Fabric's own launcher starts rank 1 by running the command again) killed mid-stage resumes to the same
result, on 2 processes or on 1."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgedistill.engine.loop import TEST_KILL_AFTER_EPOCH
from helpers import TINY_RECIPE, cli_run, recipe_file
from tests.test_distributed import free_port

#: gru teacher and student (no BatchNorm, no dropout): one process and two compute the same steps to float rounding.
RECIPE = {
    "name": "ddp",
    "data": {"name": "synthetic", "params": {"n_subjects": 5, "windows_per_subject": 12, "length": 32}, "split": {"by": "subject"}},
    "teacher": {"model": "gru", "hidden": 16, "train": {"epochs": 3, "batch_size": 8}},
    "student": {"model": "gru", "hidden": 8},
    "method": {"name": "offline", "terms": [{"loss": "ce", "weight": 0.5}, {"loss": "kd", "weight": 0.5, "temperature": 2}]},
    "train": {"epochs": 3, "batch_size": 8},
    "seeds": [0],
    "baseline": False,
    "report": {"profile": False},
    "engine": {"progress": False, "devices": 2},
}


def _refused(tmp_path, *args) -> str:
    out = tmp_path / "out"
    result = cli_run(recipe_file(tmp_path), "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert not out.exists()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("override, key", [
    ([f"engine.devices={(os.cpu_count() or 1) + 1}"], "engine.devices"),
    (["engine.strategy=deepspeed"], "engine.strategy"),
    (["engine.devices=2", "engine.num_nodes=2"], "engine.num_nodes"),
    (["engine.accelerator=cpu", "engine.precision=16-mixed"], "engine.precision"),
    (["engine.devices=2", "engine.strategy=fsdp"], "engine.strategy"),  # cnn1d width 4: a few hundred parameters
    (["engine.devices=2", "train.batch_size=15"], "train.batch_size"),
    (["engine.devices=2", "method.terms=[{loss: crd}]"], "engine.devices"),
])
def test_bad_input_is_one_line_naming_the_key(tmp_path, override, key):
    if key == "engine.num_nodes" and (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores (engine.devices=2 is refused first)")
    for name in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "LOCAL_RANK"):
        assert name not in os.environ  # (the test would be started as one rank of a cluster job)
    line = _refused(tmp_path, *override)
    assert key in line, line


TORCHRUN = {"TORCHELASTIC_RUN_ID": "t", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
SRUN = {"SLURM_JOB_NAME": "job", "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "0"}


@pytest.mark.parametrize("launched, override, fix", [
    (TORCHRUN, [], "set engine.devices=2 engine.num_nodes=1"),  # each rank would otherwise run the whole run alone
    (SRUN, ["engine.devices=2"], "set engine.devices=2 engine.num_nodes=2"),
])
def test_processes_a_launcher_started_must_be_the_recipes(tmp_path, monkeypatch, launched, override, fix):
    if override and (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores (engine.devices=2 is refused first)")
    for name, value in launched.items():
        monkeypatch.setenv(name, value)
    line = _refused(tmp_path, *override)
    assert line.startswith("error: engine.devices:") and fix in line, line


def test_alone_in_a_slurm_batch_script_is_not_a_rank(tmp_path, monkeypatch):
    """sbatch's script sees SLURM_NTASKS even where no srun started it: one process is then one process."""
    from edgedistill.config import EngineConfig
    from edgedistill.engine import devices

    for name, value in SRUN.items():
        monkeypatch.setenv(name, value)
    devices.check_launched(EngineConfig())
    with pytest.raises(Exception, match="engine.devices: 2 x engine.num_nodes: 1"):
        devices.check_launched(EngineConfig(devices=2))


def test_a_sweep_under_torchrun_is_told_to_start_without_it(monkeypatch):
    """A sweep or tune is one process whatever its recipe says: the fix is not more devices but no torchrun."""
    from edgedistill.config import EngineConfig
    from edgedistill.engine import devices

    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/edgedistill", "sweep", "sweep_example"])
    with pytest.raises(Exception, match="torchrun started 2 processes of `edgedistill sweep`.*start it without torchrun"):
        devices.check_launched(EngineConfig())


def test_jobs_with_several_devices_is_refused(tmp_path):
    line = _refused(tmp_path, "engine.devices=2", "--jobs", "2")
    assert "--jobs" in line and "engine.devices" in line


def test_manual_optimisation_is_refused_naming_the_method():
    from edgedistill.config import load_recipe
    from edgedistill.engine.devices import check_plan
    from edgedistill.errors import UserInputError

    recipe = load_recipe({**TINY_RECIPE, "engine": {"devices": 2}})
    with pytest.raises(UserInputError, match="engine.devices: 2: method 'offline' steps its own optimizers"):
        check_plan(recipe, {"student": 10_000}, {}, manual=True, swa=False, batch_sizes={})
    check_plan(recipe, {"student": 10_000}, {}, manual=False, swa=False, batch_sizes={})  # DDP: nothing to refuse


def test_a_regime_with_backward_passes_of_its_own_is_refused_under_fsdp_only(tmp_path):
    """cgan_kd's warm start trains the student with its own backward passes, which Fabric's FSDP wrapper refuses
    mid-run (it once crashed there): refused before anything is written, naming the key and what does it; without
    the warm start, or under DDP, nothing to refuse."""
    from edgedistill.config import load_recipe
    from edgedistill.engine.devices import check_plan
    from edgedistill.errors import UserInputError

    out = tmp_path / "out"
    refused = cli_run("cgan_kd_regression", "--smoke", "--out", out, "engine.devices=2", "engine.strategy=fsdp")
    assert refused.exit_code == 2 and not out.exists(), refused.output
    assert ("engine.strategy: fsdp, but method 'cgan_kd' trains the student on the labels alone at its first step "
            "(method.params.warm_start)") in refused.output
    ddp = load_recipe({**TINY_RECIPE, "engine": {"devices": 2}})
    check_plan(ddp, {"student": 10_000}, {}, manual=False, swa=False, batch_sizes={}, own_backward="trains alone")
    with pytest.raises(UserInputError, match="engine.strategy: fsdp, but method 'offline' trains alone"):
        fsdp = load_recipe({**TINY_RECIPE, "engine": {"devices": 2, "strategy": "fsdp"}})
        check_plan(fsdp, {"student": 10_000}, {}, manual=False, swa=False, batch_sizes={}, own_backward="trains alone")


# -- a killed run ----------------------------------------------------------------------------------------------
def _run(recipe: Path, out: Path, cache: Path, *extra: str, kill_after: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != TEST_KILL_AFTER_EPOCH}
    env.update(OMP_NUM_THREADS="1", EDGEDISTILL_CACHE=str(cache))
    if kill_after:
        env[TEST_KILL_AFTER_EPOCH] = str(kill_after)  # rank 1 (started with this environment) kills itself there too
    exe = Path(sys.executable).with_name("edgedistill")
    return subprocess.run([str(exe), "run", str(recipe), "--out", str(out), "--no-progress", *extra], env=env,
                          capture_output=True, text=True, timeout=300)


def _same_to_rounding(rows: list, expected: list) -> None:
    """Every reported metric of ``rows`` equals ``expected``'s to float rounding (several processes against one)."""
    for x, y in zip(rows, expected):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k]["mean"] == pytest.approx(y[k]["mean"], rel=1e-4, abs=1e-4), k


def _all_finish(ranks: list[subprocess.Popen]) -> None:
    """Wait for every rank (killed if one hangs past 300 s) and require each to have ended well."""
    try:
        outputs = [p.communicate(timeout=300) for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    for p, (_, err) in zip(ranks, outputs):
        assert p.returncode == 0, err[-3000:]


def _metrics(out: Path) -> list:
    return [r["metrics"] for r in json.loads((out / "summary.json").read_text())["rows"]]


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two CPU processes need two cores")
def test_killed_two_process_run_resumes_on_two_or_on_one(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    straight = _run(recipe, tmp_path / "a", tmp_path / "cache-a")
    assert straight.returncode == 0, straight.stderr[-3000:]

    for out, again in (("b", []), ("c", ["engine.devices=1"])):
        cache = tmp_path / f"cache-{out}"
        killed = _run(recipe, tmp_path / out, cache, kill_after=2)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        partial = list(cache.glob("models/*.partial/metrics.jsonl"))  # the teacher, killed after its epoch 2
        assert len(partial) == 1
        before = partial[0].read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in before] == [1, 2]
        resumed = _run(recipe, tmp_path / out, cache, *again)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        teacher = next(e / "metrics.jsonl" for e in (cache / "models").glob("*") if (e / "key.json").is_file()
                       and json.loads((e / "key.json").read_text())["role"] == "teacher")
        # Resumed from last.pt (epochs 1-2 kept as the killed run logged them, times included), not restarted.
        assert teacher.read_text().splitlines()[:2] == before
        if not again:
            assert _metrics(tmp_path / out) == _metrics(tmp_path / "a")
        else:  # one process on the global batch: the same steps, to float rounding
            _same_to_rounding(_metrics(tmp_path / out), _metrics(tmp_path / "a"))


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two CPU processes need two cores")
def test_torchrun_launch_and_a_refusal_after_the_launch_stops_every_rank(tmp_path):
    """torchrun starts both ranks (Fabric detects it and starts nothing). Then the same --out with another config is
    refused by rank 0 after the other rank was started: every rank exits 2, none waits for ever."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    env = {k: v for k, v in os.environ.items() if k != TEST_KILL_AFTER_EPOCH}
    env.update(OMP_NUM_THREADS="1", EDGEDISTILL_CACHE=str(tmp_path / "cache"))
    exe = str(Path(sys.executable).with_name("edgedistill"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", exe]
    done = subprocess.run([*torchrun, "run", str(recipe), "--out", str(tmp_path / "a"), "--no-progress"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "a" / "summary.json").is_file()
    assert len(list((tmp_path / "cache" / "models").glob("*/key.json"))) == 1  # the teacher, trained once (rank 0)

    again = subprocess.run([exe, "run", str(recipe), "--out", str(tmp_path / "a"), "--no-progress", "train.epochs=4"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2, again.stderr[-3000:]
    assert "--out" in again.stderr or "config" in again.stderr, again.stderr[-3000:]
    assert "Traceback" not in again.stderr


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two CPU processes need two cores")
def test_ranks_started_the_way_srun_starts_them_run_as_one_job(tmp_path):
    """No SLURM here: the two ranks are started with the variables ``srun --nodes=1 --ntasks-per-node=2`` gives its
    tasks (Fabric's SLURMEnvironment reads them and launches nothing). They must form one 2-rank job: the same numbers
    as the run Fabric's own launcher starts, one summary, the teacher trained once."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    launched = _run(recipe, tmp_path / "a", tmp_path / "cache-a")
    assert launched.returncode == 0, launched.stderr[-3000:]

    port = free_port()  # for the rendezvous (srun's jobs derive one from SLURM_JOB_ID)
    base = {k: v for k, v in os.environ.items() if k != TEST_KILL_AFTER_EPOCH}
    base.update(OMP_NUM_THREADS="1", EDGEDISTILL_CACHE=str(tmp_path / "cache-s"), SLURM_JOB_ID="4242",
                SLURM_JOB_NAME="edgedistill-test", SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2", SLURM_NNODES="1",
                SLURM_NODEID="0", SLURM_NODELIST="127.0.0.1", MASTER_PORT=str(port))
    exe = str(Path(sys.executable).with_name("edgedistill"))
    ranks = [subprocess.Popen([exe, "run", str(recipe), "--out", str(tmp_path / "s"), "--no-progress"],
                              env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    _all_finish(ranks)
    assert _metrics(tmp_path / "s") == _metrics(tmp_path / "a")
    assert len(list((tmp_path / "cache-s" / "models").glob("*/key.json"))) == 1  # the teacher, by rank 0 alone


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two CPU processes need two cores")
def test_fsdp_run_trains_its_teacher_and_baseline_like_one_process(tmp_path):
    """A whole run under FSDP on 2 processes: the teacher and the student alone are trained, then read back into
    full-size networks (FSDP shards the module it trains in place; the run once crashed loading the cache entry into
    it), and every number is one process's on the global batch, to float rounding."""
    recipe = tmp_path / "r.yaml"
    big = {**RECIPE, "teacher": {**RECIPE["teacher"], "hidden": 48}, "student": {"model": "gru", "hidden": 32},
           "baseline": True, "train": {"epochs": 2, "batch_size": 8}}
    big["teacher"]["train"] = {"epochs": 2, "batch_size": 8}
    recipe.write_text(yaml.safe_dump(big))
    sharded = _run(recipe, tmp_path / "fsdp", tmp_path / "cache-fsdp", "engine.strategy=fsdp")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    alone = _run(recipe, tmp_path / "one", tmp_path / "cache-one", "engine.devices=1")
    assert alone.returncode == 0, alone.stderr[-3000:]
    rows = _metrics(tmp_path / "fsdp")
    assert len(rows) == 3  # teacher, student alone, distilled
    _same_to_rounding(rows, _metrics(tmp_path / "one"))


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two CPU processes need two cores")
def test_two_machines_without_a_shared_disk_run_as_one_job(tmp_path):
    """Two "machines" on this one (torchrun --nnodes 2, one process each, a static rendezvous on the loopback), each
    with its own working folder and model cache, as machines without a shared disk have. Machine 1 needs only the
    recipe and the data: it writes nothing, and the run reaches the numbers of the one Fabric's launcher starts."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    launched = _run(recipe, tmp_path / "a", tmp_path / "cache-a")
    assert launched.returncode == 0, launched.stderr[-3000:]

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (TEST_KILL_AFTER_EPOCH, "EDGEDISTILL_CACHE")}
    env["OMP_NUM_THREADS"] = "1"
    exe = str(Path(sys.executable).with_name("edgedistill"))
    machines = [tmp_path / f"machine{n}" for n in (0, 1)]
    ranks = []
    for n, home in enumerate(machines):
        home.mkdir()
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(n),
                    "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port)]
        # engine.threads=1: each machine would otherwise take all of its cores, and here both share this one's.
        ranks.append(subprocess.Popen([*torchrun, exe, "run", str(recipe), "--out", "runs/ddp", "--no-progress",
                                       "engine.devices=1", "engine.num_nodes=2", "engine.threads=1"],
                                      cwd=home, env={**env, "EDGEDISTILL_CACHE": str(home / "cache")},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    _all_finish(ranks)
    assert _metrics(machines[0] / "runs" / "ddp") == _metrics(tmp_path / "a")
    assert len(list((machines[0] / "cache" / "models").glob("*/key.json"))) == 1  # the teacher
    assert list(machines[1].iterdir()) == []  # nothing written on the other machine
